//! Outbound and inbound payments, and the payment scheme's faults.

use cucumber::{given, then, when};
use serde_json::json;

use super::{Step, fault, recover};
use crate::api::Payee;
use crate::e2e::params::{Money, Name};
use crate::e2e::world::{BankWorld, Flow, Inbound, PaymentRequest, SETTLE};
use crate::providers::FaultKind;

const SCHEME: &str = "payment-scheme";

fn request(from: &str, payee: Payee, money: Money, key: Option<String>, to_account: Option<String>) -> PaymentRequest {
    PaymentRequest {
        from: from.to_string(),
        payee,
        pence: money.0,
        reference: "e2e".into(),
        key: key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        to_account,
    }
}

fn elsewhere(name: &str, sort_code: &str, account_number: &str) -> Payee {
    Payee { name: name.into(), sort_code: sort_code.into(), account_number: account_number.into() }
}

#[when(expr = "{person} pays {money} to {person}")]
async fn pays_a_customer(w: &mut BankWorld, from: Name, money: Money, to: Name) -> Step {
    let account = w.account(&to.0).await?;
    let payee = Payee {
        name: to.0.clone(),
        sort_code: account["sort_code"].as_str().unwrap_or_default().into(),
        account_number: account["account_number"].as_str().unwrap_or_default().into(),
    };
    let to_account = Some(w.account_url(&to.0)?);
    w.pay(request(&from.0, payee, money, None, to_account)).await.map(|_| ())
}

#[when(expr = "{person} pays {money} to {person} at {word} {word}")]
async fn pays_elsewhere(w: &mut BankWorld, from: Name, money: Money, to: Name, sort: String, number: String) -> Step {
    w.pay(request(&from.0, elsewhere(&to.0, &sort, &number), money, None, None)).await.map(|_| ())
}

#[when(expr = "{person} pays {money} to {person} at {word} {word} {int} times")]
async fn pays_times(
    w: &mut BankWorld,
    from: Name,
    money: Money,
    to: Name,
    sort: String,
    number: String,
    n: u32,
) -> Step {
    for _ in 0..n {
        w.pay(request(&from.0, elsewhere(&to.0, &sort, &number), money, None, None)).await?.ok()?;
    }
    Ok(())
}

#[when(expr = "{person} pays {money} to {person} at {word} {word} with idempotency key {string}")]
async fn pays_with_key(
    w: &mut BankWorld,
    from: Name,
    money: Money,
    to: Name,
    sort: String,
    number: String,
    key: String,
) -> Step {
    // Keys are the caller's: scope the scenario's to it, so runs never collide.
    let key = format!("{key}-{}", uuid::Uuid::new_v4().simple());
    w.pay(request(&from.0, elsewhere(&to.0, &sort, &number), money, Some(key), None)).await.map(|_| ())
}

#[when(expr = "{person} pays {money} to {person} at {word} {word} with the same idempotency key")]
async fn pays_with_same_key(
    w: &mut BankWorld,
    from: Name,
    money: Money,
    to: Name,
    sort: String,
    number: String,
) -> Step {
    let key = w.payment_request.as_ref().map(|r| r.key.clone()).ok_or_else(|| anyhow::anyhow!("no earlier payment"))?;
    w.pay(request(&from.0, elsewhere(&to.0, &sort, &number), money, Some(key), None)).await.map(|_| ())
}

#[when(expr = "{person} sends that payment request again")]
async fn sends_again(w: &mut BankWorld, _who: Name) -> Step {
    let req = w.payment_request.clone().ok_or_else(|| anyhow::anyhow!("no payment request was sent yet"))?;
    w.pay(req).await.map(|_| ())
}

#[then("both answers are the same payment")]
async fn same_payment(w: &mut BankWorld) -> Step {
    let [.., a, b] = w.replies.as_slice() else { anyhow::bail!("fewer than two answers") };
    anyhow::ensure!(a.is_success() && a.body["id"] == b.body["id"], "two answers: {} and {}", a.body, b.body);
    Ok(())
}

#[then("the second answer is marked as a replay")]
async fn replayed(w: &mut BankWorld) -> Step {
    let b = w.replies.last().ok_or_else(|| anyhow::anyhow!("no answer"))?;
    anyhow::ensure!(b.replayed, "the repeated request's answer has no `Idempotent-Replayed: true`");
    Ok(())
}

#[then("the payment is completed")]
async fn completed(w: &mut BankWorld) -> Step {
    w.wait_status(Flow::Payment, "completed").await.map(|_| ())
}

#[then(expr = "the payment fails with reason {word}")]
async fn fails_with(w: &mut BankWorld, reason: String) -> Step {
    let p = w.wait_status(Flow::Payment, "failed").await?;
    if p["failure"]["reason"] != reason.as_str() {
        return Err(w.failed(format!("the payment failed with {}, expected {reason}", p["failure"])).await);
    }
    Ok(())
}

#[then("the payment is refused for insufficient funds")]
async fn refused_for_funds(w: &mut BankWorld) -> Step {
    let r = w.reply()?;
    anyhow::ensure!(
        r.status == 422 && r.problem() == Some("insufficient-funds"),
        "expected 422 insufficient-funds, got {} {}",
        r.status,
        r.body
    );
    Ok(())
}

#[then("the payment is waiting for the scheme")]
async fn waiting_for_scheme(w: &mut BankWorld) -> Step {
    let s = w.last(Flow::Payment)?.clone();
    let what = format!("payment {} to be retrying", s.url);
    let r = w
        .api()
        .wait_until(&s.url, &what, SETTLE, |p| p["status"] == "reserved" && p["attempts"].as_i64().unwrap_or(0) >= 1)
        .await;
    w.or_trail(r).await.map(|_| ())
}

#[given(expr = "the payment scheme is unavailable for {person}'s payments")]
async fn scheme_unavailable(w: &mut BankWorld, who: Name) -> Step {
    let scope = w.account_url(&who.0)?;
    fault(w, SCHEME, scope, FaultKind::Unavailable, None).await
}

#[given(expr = "the payment scheme times out once for {person}'s payments")]
async fn scheme_times_out(w: &mut BankWorld, who: Name) -> Step {
    let scope = w.account_url(&who.0)?;
    fault(w, SCHEME, scope, FaultKind::Timeout, Some(1)).await
}

#[given(expr = "the payment scheme loses its webhooks for {person}'s payments")]
async fn scheme_loses_webhooks(w: &mut BankWorld, who: Name) -> Step {
    let scope = w.account_url(&who.0)?;
    fault(w, SCHEME, scope, FaultKind::LoseWebhook, None).await
}

#[given(expr = "the payment scheme answers {person}'s payments slowly")]
async fn scheme_slow(w: &mut BankWorld, who: Name) -> Step {
    let scope = w.account_url(&who.0)?;
    fault(w, SCHEME, scope, FaultKind::Slow, None).await
}

#[given(expr = "the payment scheme takes {int} seconds to answer {person}'s payments")]
async fn scheme_takes(w: &mut BankWorld, seconds: u64, who: Name) -> Step {
    let scope = w.account_url(&who.0)?;
    super::slow(w, SCHEME, scope, seconds).await
}

#[then("every payment is completed")]
async fn all_completed(w: &mut BankWorld) -> Step {
    let payments: Vec<String> = w.started.iter().filter(|s| s.kind == Flow::Payment).map(|s| s.url.clone()).collect();
    for url in payments {
        let what = format!("payment {url} to be completed");
        let r = w.api().wait_until(&url, &what, SETTLE, |p| p["status"] == "completed").await;
        w.or_trail(r).await?;
    }
    Ok(())
}

#[when(expr = "the payment scheme recovers for {person}'s payments")]
async fn scheme_recovers(w: &mut BankWorld, who: Name) -> Step {
    let scope = w.account_url(&who.0)?;
    recover(w, SCHEME, &scope).await
}

/// The payment is in the scheme's hands: its submission reached the scheme
/// (which settles it, however slowly it answers), so what happens next happens
/// mid-payment, not before the payment left the bank.
#[when("the payment scheme has received that payment")]
async fn scheme_received(w: &mut BankWorld) -> Step {
    let s = w.last(Flow::Payment)?.clone();
    let scheme = w.ctx().provider(SCHEME)?;
    let what = format!("the payment scheme to receive payment {}", s.id);
    let received = crate::api::wait_for(&what, SETTLE, || async {
        let journal = scheme.journal(Some(&s.account)).await?;
        let seen = journal.iter().any(|e| {
            e.direction == "in" && e.path == "/payments" && e.body["payment_id"] == s.id.as_str() && e.status < 300
        });
        Ok(if seen { Ok(()) } else { Err(format!("{} requests from that account", journal.len())) })
    })
    .await;
    w.or_trail(received).await?;
    Ok(())
}

/// Reconciliation: the scheme's journal shows the status enquiry
/// (`GET /payments/{id}`), and no webhook for the payment.
#[then("the payments service asked the scheme what became of that payment")]
async fn asked_the_scheme(w: &mut BankWorld) -> Step {
    let s = w.last(Flow::Payment)?.clone();
    let journal = w.ctx().provider(SCHEME)?.journal(None).await?;
    let path = format!("/payments/{}", s.id);
    let asked = journal.iter().filter(|e| e.direction == "in" && e.method == "GET" && e.path == path).count();
    let hooks = journal.iter().filter(|e| e.direction == "out" && e.body["payment_id"] == s.id.as_str()).count();
    if asked == 0 || hooks > 0 {
        return Err(w
            .failed(format!("the scheme saw {asked} status enquiries for payment {} and sent {hooks} webhooks", s.id))
            .await);
    }
    Ok(())
}

#[then("the payment scheme settled that payment once")]
async fn settled_once(w: &mut BankWorld) -> Step {
    let s = w.last(Flow::Payment)?.clone();
    let journal = w.ctx().provider(SCHEME)?.journal(Some(&s.account)).await?;
    let mut scheme_ids: Vec<String> = journal
        .iter()
        .filter(|e| {
            e.direction == "out" && e.body["type"] == "payment.settled" && e.body["payment_id"] == s.id.as_str()
        })
        .filter_map(|e| e.body["scheme_id"].as_str().map(String::from))
        .collect();
    scheme_ids.dedup();
    if scheme_ids.len() != 1 {
        return Err(w
            .failed(format!("the scheme settled payment {} as {scheme_ids:?}, expected exactly once", s.id))
            .await);
    }
    Ok(())
}

#[when(expr = "{person} at another bank sends {money} to {person}")]
async fn inbound_to(w: &mut BankWorld, from: Name, money: Money, to: Name) -> Step {
    let account = w.account(&to.0).await?;
    let details = json!({
        "name": to.0,
        "sort_code": account["sort_code"],
        "account_number": account["account_number"],
    });
    let url = w.account_url(&to.0)?;
    send_inbound(w, &from.0, details, money, Some(url)).await
}

#[when(expr = "{person} at another bank sends {money} to account {word} {word}")]
async fn inbound_nowhere(w: &mut BankWorld, from: Name, money: Money, sort: String, number: String) -> Step {
    let details = json!({ "name": "Nobody", "sort_code": sort, "account_number": number });
    send_inbound(w, &from.0, details, money, None).await
}

async fn send_inbound(
    w: &mut BankWorld,
    from: &str,
    to: serde_json::Value,
    money: Money,
    account: Option<String>,
) -> Step {
    let payer = json!({ "name": from, "sort_code": "20-00-00", "account_number": "55779911" });
    let scheme_id = w.ctx().provider(SCHEME)?.send_inbound(to, payer, money.0, "e2e").await?;
    w.inbound.push(Inbound { scheme_id, account, pence: money.0 });
    Ok(())
}

#[then(expr = "the payment scheme receives a return for it with reason {word}")]
async fn returned(w: &mut BankWorld, reason: String) -> Step {
    let scheme_id =
        w.inbound.last().map(|i| i.scheme_id.clone()).ok_or_else(|| anyhow::anyhow!("no inbound payment"))?;
    let admin = w.ctx().provider(SCHEME)?;
    let what = format!("a return of {scheme_id} with {reason}");
    let r = crate::api::wait_for(&what, SETTLE, || async {
        let journal = admin.journal(None).await?;
        let found = journal.iter().any(|e| {
            e.direction == "in"
                && e.path == "/returns"
                && e.body["scheme_id"] == scheme_id.as_str()
                && e.body["reason"] == reason.as_str()
        });
        Ok(if found { Ok(()) } else { Err(format!("{} journal entries, no such return", journal.len())) })
    })
    .await;
    w.or_trail(r).await
}

/// The scheme's `payment.received` for `who`'s account, as a forger would
/// post it: no signature.
async fn unsigned_inbound(w: &mut BankWorld, who: &str, money: Money, url: String) -> Step {
    let account = w.account(who).await?;
    let body = json!({
        "type": "payment.received",
        "scheme_id": format!("forged-{}", uuid::Uuid::new_v4().simple()),
        "to": { "name": who, "sort_code": account["sort_code"], "account_number": account["account_number"] },
        "from": { "name": "Mallory", "sort_code": "20-00-00", "account_number": "66666666" },
        "amount": { "amount": money.0, "currency": "GBP" },
    });
    w.last_reply = Some(w.api().send("POST", &url, Some(&body), None).await?);
    Ok(())
}

#[when(expr = "an unsigned inbound payment of {money} for {person} is posted straight to the payments service")]
async fn unsigned_at_the_service(w: &mut BankWorld, money: Money, who: Name) -> Step {
    let url = format!("{}/webhooks/{SCHEME}", w.ctx().target.url("payments")?);
    unsigned_inbound(w, &who.0, money, url).await
}

#[when(expr = "an unsigned inbound payment of {money} for {person} is posted through the gateway's proxy")]
async fn unsigned_through_the_proxy(w: &mut BankWorld, money: Money, who: Name) -> Step {
    let url = format!("{}/payments/webhooks/{SCHEME}", w.api().gateway());
    unsigned_inbound(w, &who.0, money, url).await
}
