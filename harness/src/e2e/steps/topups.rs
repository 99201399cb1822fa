//! Card top-ups and the card acquirer's faults and webhooks.

use cucumber::{given, then, when};

use super::{Step, fault, recover};
use crate::api;
use crate::e2e::params::{Money, Name};
use crate::e2e::world::{BankWorld, Flow, SETTLE, Started};
use crate::providers::FaultKind;

const ACQUIRER: &str = "card-acquirer";

async fn top_up(w: &mut BankWorld, who: &str, money: Money, card: &str) -> Step {
    let account = w.account(who).await?;
    let reply = w.api().top_up(&account, card, money.0, &uuid::Uuid::new_v4().to_string()).await?;
    if reply.is_success() {
        w.track(Started {
            kind: Flow::TopUp,
            url: api::link(&reply.body, "self")?,
            id: reply.body["id"].as_str().unwrap_or_default().to_string(),
            account: api::link(&account, "self")?,
            pence: money.0,
            to_account: None,
        });
    }
    w.last_reply = Some(reply.clone());
    reply.ok()?;
    Ok(())
}

#[when(expr = "{person} tops up {money} with their card")]
async fn with_their_card(w: &mut BankWorld, who: Name, money: Money) -> Step {
    let card = w.person(&who.0)?.card.clone();
    top_up(w, &who.0, money, &card).await
}

#[when(expr = "{person} tops up {money} with card {word}")]
async fn with_card(w: &mut BankWorld, who: Name, money: Money, card: String) -> Step {
    top_up(w, &who.0, money, &card).await
}

#[then("the top-up succeeds")]
async fn succeeds(w: &mut BankWorld) -> Step {
    w.wait_status(Flow::TopUp, "succeeded").await.map(|_| ())
}

#[then(expr = "the top-up fails with reason {word}")]
async fn fails_with(w: &mut BankWorld, reason: String) -> Step {
    let t = w.wait_status(Flow::TopUp, "failed").await?;
    if t["decline_reason"] != reason.as_str() {
        return Err(w.failed(format!("the top-up was declined with {}, expected {reason}", t["decline_reason"])).await);
    }
    Ok(())
}

#[then("the top-up is waiting for the card acquirer")]
async fn waiting(w: &mut BankWorld) -> Step {
    let s = w.last(Flow::TopUp)?.clone();
    let what = format!("top-up {} to be retrying", s.url);
    let r =
        w.api().wait_until(&s.url, &what, SETTLE, |t| t["status"] == "pending" && t["last_error"].is_string()).await;
    w.or_trail(r).await.map(|_| ())
}

#[given(expr = "the card acquirer is unavailable for {person}'s card")]
async fn unavailable(w: &mut BankWorld, who: Name) -> Step {
    let card = w.person(&who.0)?.card.clone();
    fault(w, ACQUIRER, card, FaultKind::Unavailable, None).await
}

#[given(expr = "the card acquirer takes {int} seconds to answer for {person}'s card")]
async fn takes(w: &mut BankWorld, seconds: u64, who: Name) -> Step {
    let card = w.person(&who.0)?.card.clone();
    super::slow(w, ACQUIRER, card, seconds).await
}

#[when(expr = "the card acquirer recovers for {person}'s card")]
async fn recovers(w: &mut BankWorld, who: Name) -> Step {
    let card = w.person(&who.0)?.card.clone();
    recover(w, ACQUIRER, &card).await
}

#[when("the card acquirer delivers that top-up's webhook again")]
async fn redeliver(w: &mut BankWorld) -> Step {
    let s = w.last(Flow::TopUp)?.clone();
    let admin = w.ctx().provider(ACQUIRER)?;
    let hooks = |journal: &[crate::providers::JournalEntry]| {
        journal
            .iter()
            .filter(|e| e.direction == "out" && e.body["charge_id"] == s.id.as_str())
            .map(|e| (e.seq, e.status))
            .collect::<Vec<_>>()
    };
    let first = api::wait_for("the acquirer's webhook for that top-up", SETTLE, || async {
        let delivered = hooks(&admin.journal(None).await?);
        Ok(delivered
            .iter()
            .find(|(_, status)| (200..300).contains(status))
            .map(|(seq, _)| *seq)
            .ok_or("none delivered yet".to_string()))
    })
    .await;
    let seq = w.or_trail(first).await?;
    admin.redeliver(seq).await?;
    let again = api::wait_for("the repeated webhook to be answered", SETTLE, || async {
        let delivered = hooks(&admin.journal(None).await?);
        let ok = delivered.iter().filter(|(_, status)| (200..300).contains(status)).count();
        Ok(if ok >= 2 { Ok(()) } else { Err(format!("deliveries so far: {delivered:?}")) })
    })
    .await;
    w.or_trail(again).await
}

#[when("a webhook from the card acquirer arrives with a bad signature")]
async fn forged(w: &mut BankWorld) -> Step {
    let s = w.last(Flow::TopUp).ok().cloned();
    let body = serde_json::json!({
        "type": "charge.succeeded",
        "charge_id": s.map(|s| s.id).unwrap_or_default(),
        "status": "succeeded",
        "amount": { "amount": 1_000_000, "currency": "GBP" },
    });
    let url = format!("{}/webhooks/card-acquirer", w.api().gateway());
    let bytes = serde_json::to_vec(&body)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    let signature = wire::sign(b"not-the-shared-secret", now, &bytes);
    let resp = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header(wire::SIGNATURE_HEADER, signature)
        .body(bytes)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or_default();
    w.last_reply = Some(api::Reply {
        method: "POST".into(),
        url,
        status,
        body,
        replayed: false,
        content_type: String::new(),
        retry_after: None,
    });
    Ok(())
}

#[then(regex = r"^the (gateway|payments service) refuses it with (\d+)$")]
async fn refuses(w: &mut BankWorld, who: String, status: u16) -> Step {
    let r = w.reply()?;
    anyhow::ensure!(r.status == status, "the {who} answered {} {}", r.status, r.body);
    anyhow::ensure!(
        r.body["type"].as_str().is_some_and(|t| t.starts_with("urn:problem:")),
        "not a problem: {}",
        r.body
    );
    Ok(())
}
