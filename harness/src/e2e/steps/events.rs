//! What the bank publishes on Kafka.

use cucumber::then;

use super::Step;
use crate::e2e::params::Name;
use crate::e2e::world::{BankWorld, Flow, SETTLE};
use crate::topics::Seen;

async fn published(w: &BankWorld, what: &str, matches: impl Fn(&Seen) -> bool) -> Step {
    let r = w.ctx().topics.wait_for(what, SETTLE, matches).await;
    w.or_trail(r).await.map(|_| ())
}

#[then(expr = "a `{word}` event for that payment is published")]
async fn for_payment(w: &mut BankWorld, kind: String) -> Step {
    let s = w.last(Flow::Payment)?.clone();
    published(w, &format!("{kind} for payment {}", s.url), |e| {
        e.event.kind == kind
            && (e.event.data["payment_id"] == s.id.as_str() || e.event.data["payment"] == s.url.as_str())
    })
    .await
}

/// Nothing publishes it for a second: whatever publishes it is down (a
/// stopped connector, which no restart policy brings back).
#[then(expr = "no `{word}` event for that payment is published while the {word} is down")]
async fn none_for_payment(w: &mut BankWorld, kind: String, component: String) -> Step {
    let s = w.last(Flow::Payment)?.clone();
    let seen = w
        .ctx()
        .topics
        .wait_for(&format!("{kind} for payment {}", s.url), std::time::Duration::from_secs(1), |e| {
            e.event.kind == kind
                && (e.event.data["payment_id"] == s.id.as_str() || e.event.data["payment"] == s.url.as_str())
        })
        .await;
    if seen.is_ok() {
        return Err(w
            .failed(format!("{kind} for payment {} was published while the {component} was down", s.url))
            .await);
    }
    Ok(())
}

#[then(expr = "a `{word}` event for that top-up is published")]
async fn for_topup(w: &mut BankWorld, kind: String) -> Step {
    let s = w.last(Flow::TopUp)?.clone();
    published(w, &format!("{kind} for top-up {}", s.url), |e| {
        e.event.kind == kind && e.event.data["topup_id"] == s.id.as_str()
    })
    .await
}

#[then(expr = "a `{word}` event for {person}'s account is published")]
async fn for_account(w: &mut BankWorld, kind: String, who: Name) -> Step {
    // Services name an account by the URL they reach it at; its id is the same everywhere.
    let url = w.account_url(&who.0)?;
    let id = url.rsplit('/').next().unwrap_or_default().to_string();
    published(w, &format!("{kind} for {url}"), |e| {
        e.event.kind == kind && e.event.data["account"].as_str().is_some_and(|a| a.ends_with(&format!("/{id}")))
    })
    .await
}

#[then(expr = "a `{word}` event for it is published")]
async fn for_inbound(w: &mut BankWorld, kind: String) -> Step {
    let id = w.inbound.last().map(|i| i.scheme_id.clone()).ok_or_else(|| anyhow::anyhow!("no inbound payment"))?;
    published(w, &format!("{kind} for inbound {id}"), |e| {
        e.event.kind == kind && e.event.data["scheme_id"] == id.as_str()
    })
    .await
}

/// A generated service's records about `subject`, through the gateway.
fn records_url(w: &BankWorld, service: &str, subject: &str) -> String {
    format!("{}/{service}/records?subject={subject}", w.api().gateway())
}

/// A service made by `sandbox new service` keeps a record of each event it
/// consumes (`/records?subject=<the event's aggregate id>`): through the
/// gateway, until a record from an event of `kind` is there, and then only one.
async fn recorded(w: &BankWorld, service: &str, kind: &str, subject: &str) -> Step {
    let url = records_url(w, service, subject);
    let of_kind = |page: &serde_json::Value| {
        page["_embedded"]["records"].as_array().into_iter().flatten().filter(|r| r["source"] == kind).count()
    };
    let what = format!("`{service}` to record the `{kind}` event about {subject}");
    let page = w.or_trail(w.api().wait_until(&url, &what, SETTLE, |p| of_kind(p) > 0).await).await?;
    match of_kind(&page) {
        1 => Ok(()),
        n => Err(w.failed(format!("`{service}` recorded the `{kind}` event about {subject} {n} times: {page}")).await),
    }
}

/// The record a generated service keeps of the last payment: once there is
/// one, its `data.<field>` must be `value` (a number).
#[then(expr = "the `{word}` service's record of that payment has a `{word}` of {int}")]
async fn recorded_value(w: &mut BankWorld, service: String, field: String, value: i64) -> Step {
    let id = w.last(Flow::Payment)?.id.clone();
    let url = records_url(w, &service, &id);
    let what = format!("`{service}` to keep a record of payment {id}");
    let page = w.or_trail(w.api().wait_until(&url, &what, SETTLE, |p| p["count"].as_i64() > Some(0)).await).await?;
    let data = &page["_embedded"]["records"][0]["data"];
    if data[&field] == value {
        Ok(())
    } else {
        Err(w
            .failed(format!("`{service}`'s record of payment {id} has `{field}` {}, not {value}: {data}", data[&field]))
            .await)
    }
}

#[then(expr = "the `{word}` service records the `{word}` event for that payment")]
async fn recorded_for_payment(w: &mut BankWorld, service: String, kind: String) -> Step {
    let id = w.last(Flow::Payment)?.id.clone();
    recorded(w, &service, &kind, &id).await
}

#[then(expr = "the `{word}` service records the `{word}` event for that top-up")]
async fn recorded_for_topup(w: &mut BankWorld, service: String, kind: String) -> Step {
    let id = w.last(Flow::TopUp)?.id.clone();
    recorded(w, &service, &kind, &id).await
}
