//! Suspicious-transaction alerts, the screening vendor's faults, closing alerts.

use cucumber::{given, then, when};
use serde_json::{Value, json};

use super::{Step, fault, recover};
use crate::api::{self, Api};
use crate::e2e::params::Name;
use crate::e2e::world::{BankWorld, Flow, SETTLE};
use crate::providers::FaultKind;

const VENDOR: &str = "screening-vendor";

/// How monitoring names a transaction: a payment by its URL, a top-up by id.
fn transaction_of(w: &BankWorld, kind: Flow) -> anyhow::Result<String> {
    let s = w.last(kind)?;
    Ok(match kind {
        Flow::Payment => s.url.clone(),
        Flow::TopUp => format!("topup/{}", s.id),
    })
}

async fn alert_for(w: &mut BankWorld, query: &[(&str, &str)], reason: Option<&str>) -> Step {
    let what = format!("an alert for {query:?}{}", reason.map(|r| format!(" with reason `{r}`")).unwrap_or_default());
    let api: &Api = w.api();
    let r = api::wait_for(&what, SETTLE, || async {
        let alerts = api.alerts(query).await?;
        let found = alerts.iter().find(|a| {
            reason.is_none_or(|r| {
                a["reasons"].as_array().is_some_and(|rs| rs.iter().any(|x| x.as_str().is_some_and(|x| x.contains(r))))
            })
        });
        Ok(found.cloned().ok_or_else(|| format!("{} alerts: {}", alerts.len(), Value::Array(alerts.clone()))))
    })
    .await;
    w.alert = Some(w.or_trail(r).await?);
    Ok(())
}

#[then("a suspicious-transaction alert is raised for that payment")]
async fn for_payment(w: &mut BankWorld) -> Step {
    let t = transaction_of(w, Flow::Payment)?;
    alert_for(w, &[("transaction", &t)], None).await
}

#[then("a suspicious-transaction alert is raised for that top-up")]
async fn for_topup(w: &mut BankWorld) -> Step {
    let t = transaction_of(w, Flow::TopUp)?;
    alert_for(w, &[("transaction", &t)], None).await
}

#[then(expr = "a suspicious-transaction alert is raised for {person}'s account with the reason {string}")]
async fn for_account(w: &mut BankWorld, who: Name, reason: String) -> Step {
    let account = w.account_url(&who.0)?;
    alert_for(w, &[("account", &account)], Some(&reason)).await
}

#[then(expr = "the alert gives the reason {string}")]
async fn gives_reason(w: &mut BankWorld, reason: String) -> Step {
    let alert = w.alert.clone().ok_or_else(|| anyhow::anyhow!("no alert was found yet"))?;
    let reasons = alert["reasons"].as_array().cloned().unwrap_or_default();
    if !reasons.iter().any(|r| r.as_str().is_some_and(|r| r.contains(&reason))) {
        return Err(w.failed(format!("the alert's reasons {reasons:?} do not mention `{reason}`")).await);
    }
    Ok(())
}

#[then("the payment is screened without an alert")]
async fn screened_clean(w: &mut BankWorld) -> Step {
    let t = transaction_of(w, Flow::Payment)?;
    let seen = w
        .ctx()
        .topics
        .wait_for(&format!("the screening of {t}"), SETTLE, |s| {
            s.event.kind == "transaction.screened" && s.event.data["transaction"] == t.as_str()
        })
        .await;
    let seen = w.or_trail(seen).await?;
    let alerts = w.api().alerts(&[("transaction", &t)]).await?;
    if !seen.event.data["alert_id"].is_null() || !alerts.is_empty() {
        return Err(w.failed(format!("an ordinary payment raised an alert: {alerts:?}")).await);
    }
    Ok(())
}

#[given(expr = "the screening vendor is unavailable for {person}'s account")]
async fn vendor_down(w: &mut BankWorld, who: Name) -> Step {
    let scope = w.account_url(&who.0)?;
    fault(w, VENDOR, scope, FaultKind::Unavailable, None).await
}

#[when(expr = "the screening vendor recovers for {person}'s account")]
async fn vendor_recovers(w: &mut BankWorld, who: Name) -> Step {
    let scope = w.account_url(&who.0)?;
    recover(w, VENDOR, &scope).await
}

#[then("no alert is raised for that payment while the vendor is down")]
async fn none_while_down(w: &mut BankWorld) -> Step {
    let t = transaction_of(w, Flow::Payment)?;
    let admin = w.ctx().provider(VENDOR)?;
    // The vendor refused at least one screening of it: monitoring tried, and waits.
    let refused = api::wait_for("the vendor to refuse a screening of that payment", SETTLE, || async {
        let journal = admin.journal(None).await?;
        let n = journal.iter().filter(|e| e.body["transaction_id"] == t.as_str() && e.status == 503).count();
        Ok(if n > 0 { Ok(()) } else { Err(format!("{} journal entries, none refused for it", journal.len())) })
    })
    .await;
    w.or_trail(refused).await?;
    let alerts = w.api().alerts(&[("transaction", &t)]).await?;
    anyhow::ensure!(alerts.is_empty(), "an alert was raised without the vendor: {alerts:?}");
    Ok(())
}

#[when(expr = "the analyst closes the alert as {string}")]
async fn closes(w: &mut BankWorld, outcome: String) -> Step {
    let alert = w.alert.clone().ok_or_else(|| anyhow::anyhow!("no alert was found yet"))?;
    let reply = w.api().send("POST", &api::link(&alert, "close")?, Some(&json!({ "outcome": outcome })), None).await?;
    w.last_reply = Some(reply.clone());
    reply.ok()?;
    Ok(())
}

#[then(expr = "the alert is closed with outcome {string}")]
async fn is_closed(w: &mut BankWorld, outcome: String) -> Step {
    let alert = w.alert.clone().ok_or_else(|| anyhow::anyhow!("no alert"))?;
    let now = w.api().get(&api::link(&alert, "self")?).await?;
    anyhow::ensure!(now["status"] == "closed" && now["outcome"] == outcome.as_str(), "the alert is {now}");
    anyhow::ensure!(api::link(&now, "close").is_err(), "a closed alert still offers `close`");
    Ok(())
}

#[then(expr = "closing the alert again is refused with `{word}`")]
async fn close_again(w: &mut BankWorld, problem: String) -> Step {
    let alert = w.alert.clone().ok_or_else(|| anyhow::anyhow!("no alert"))?;
    // The action the client was offered while the alert was open.
    let close = api::link(&alert, "close")?;
    let reply = w.api().send("POST", &close, Some(&json!({ "outcome": "again" })), None).await?;
    anyhow::ensure!(
        reply.status == 409 && reply.problem() == Some(problem.as_str()),
        "got {} {}",
        reply.status,
        reply.body
    );
    Ok(())
}
