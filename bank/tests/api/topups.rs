//! Card top-ups end to end: the acquirer mock charges, its webhook confirms
//! through the gateway, and the account is credited exactly once.

use serde_json::{Value, json};
use wire::payloads::{AcquirerWebhook, Amount, Charge, ChargeStatus};

use crate::fixture::{Bank, event_types, journal, set_fault};
use crate::helpers::link;

async fn top_up(bank: &Bank, account: &Value, pence: i64, token: &str, key: &str) -> (u16, Value) {
    let body = json!({ "account": link(account, "self"), "card_token": token, "amount": { "amount": pence, "currency": "GBP" } });
    bank.topups.post("/topups", body, Some(key)).await
}

#[tokio::test]
async fn a_successful_top_up_credits_the_account_once() {
    let bank = Bank::start().await;
    let alice = bank.customer_with("Alice", 0).await;
    let (status, topup) = top_up(&bank, &alice, 5_000, "tok_visa", "t1").await;
    assert_eq!(status, 202, "{topup}");
    let done = bank.finished(&topup).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(bank.balance(&alice).await, (5_000, 5_000));
    let id = topup["id"].as_str().unwrap();
    assert_eq!(event_types(&bank.topups, id).await, ["topup.created", "topup.succeeded"]);
    // The acquirer's webhook arrived too (or will): it changes nothing.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !journal(&bank.acquirer, "tok_visa").await.iter().any(|e| e["direction"] == "out" && e["status"] == 200) {
        assert!(tokio::time::Instant::now() < deadline, "the webhook was never taken");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(bank.balance(&alice).await, (5_000, 5_000), "credited once");
}

#[tokio::test]
async fn a_declined_card_credits_nothing_and_says_why() {
    let bank = Bank::start().await;
    let alice = bank.customer_with("Alice", 0).await;
    let (_, topup) = top_up(&bank, &alice, 5_000, "tok_declined", "t1").await;
    let done = bank.finished(&topup).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["decline_reason"], "do_not_honour");
    assert_eq!(bank.balance(&alice).await, (0, 0));
    assert_eq!(event_types(&bank.topups, topup["id"].as_str().unwrap()).await, ["topup.created", "topup.failed"]);
}

#[tokio::test]
async fn a_duplicate_webhook_changes_nothing() {
    let bank = Bank::start().await;
    let alice = bank.customer_with("Alice", 0).await;
    let (_, topup) = top_up(&bank, &alice, 5_000, "tok_visa", "t1").await;
    bank.finished(&topup).await;
    // The same confirmation again, properly signed, through the gateway.
    let body = serde_json::to_string(&AcquirerWebhook::of(Charge {
        acquirer_id: "ch_x".into(),
        charge_id: topup["id"].as_str().unwrap().into(),
        status: ChargeStatus::Succeeded,
        amount: Amount { amount: 5_000, currency: "GBP".into() },
        card_token: "tok_visa".into(),
        reason: None,
    }))
    .unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let signature = wire::sign(crate::fixture::SECRET.as_bytes(), now, body.as_bytes());
    let r = reqwest::Client::new()
        .post(format!("{}/webhooks/card-acquirer", bank.gateway.base))
        .header(wire::SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["duplicate"], true);
    assert_eq!(bank.balance(&alice).await, (5_000, 5_000));
}

#[tokio::test]
async fn an_acquirer_outage_delays_the_top_up_without_charging_twice() {
    let bank = Bank::start().await;
    let alice = bank.customer_with("Alice", 0).await;
    set_fault(&bank.acquirer, json!({ "kind": "unavailable", "scope": "tok_outage", "remaining": 2 })).await;
    let (_, topup) = top_up(&bank, &alice, 5_000, "tok_outage", "t1").await;
    let done = bank.finished(&topup).await;
    assert_eq!(done["status"], "succeeded");
    assert!(done["attempts"].as_u64().unwrap() >= 3, "{done}");
    let statuses: Vec<u64> = journal(&bank.acquirer, "tok_outage")
        .await
        .iter()
        .filter(|e| e["direction"] == "in")
        .map(|e| e["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses[..2], [503, 503], "{statuses:?}");
    assert!(statuses[2..].iter().all(|s| *s == 201), "{statuses:?}");
    assert_eq!(bank.balance(&alice).await, (5_000, 5_000));
}

#[tokio::test]
async fn bad_top_ups_are_refused() {
    let bank = Bank::start().await;
    let alice = bank.customer_with("Alice", 0).await;
    let (status, problem) = top_up(&bank, &alice, -5, "tok_visa", "t1").await;
    assert_eq!((status, problem["type"].as_str()), (422, Some("urn:problem:bank:invalid-amount")));
    let body = json!({ "account": link(&alice, "self"), "card_token": "tok_visa", "amount": { "amount": 100, "currency": "EUR" } });
    let (status, problem) = bank.topups.post("/topups", body, Some("t2")).await;
    assert_eq!((status, problem["type"].as_str()), (422, Some("urn:problem:bank:currency-mismatch")));
    let body = json!({ "account": link(&alice, "self"), "card_token": "tok_visa", "amount": { "amount": 100, "currency": "GBP" } });
    let (status, _) = bank.topups.post("/topups", body, None).await;
    assert_eq!(status, 400, "no idempotency key");
    assert!(journal(&bank.acquirer, "tok_visa").await.is_empty(), "nothing was charged");
}

#[tokio::test]
async fn a_slow_acquirer_never_starves_the_topups_service() {
    // Calls to the acquirer may take 5 s: its 3 s answers are waited for.
    let bank = Bank::start_configured(None, None, &crate::fixture::patient()).await;
    let alice = bank.customer_with("Alice", 0).await;
    set_fault(&bank.acquirer, json!({ "kind": "slow", "delay_ms": 3_000 })).await;
    let mut topups = Vec::new();
    for i in 0..30 {
        let (status, topup) = top_up(&bank, &alice, 100, "tok_visa", &format!("slow-{i}")).await;
        assert_eq!(status, 202, "{topup}");
        topups.push(topup);
    }
    crate::fixture::wait_for_requests(&bank.acquirer, 4).await;
    let first = topups[0]["id"].as_str().unwrap().to_string();
    let top_up_more = |i: usize| {
        let (bank, alice) = (&bank, &alice);
        async move { top_up(bank, alice, 100, "tok_visa", &format!("while-slow-{i}")).await.0 }
    };
    crate::fixture::stays_up_while_slow(&bank.topups, "card-acquirer", &format!("/topups/{first}"), top_up_more).await;
    crate::fixture::clear_faults(&bank.acquirer).await;
    let (_, page) = bank.topups.get("/topups?limit=500").await;
    let all = page["_embedded"]["topups"].as_array().unwrap().clone();
    assert!(all.len() > 30, "the top-ups made while the acquirer was slow are there too");
    for topup in &all {
        let done = bank.finished(topup).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        let id = done["id"].as_str().unwrap();
        assert_eq!(event_types(&bank.topups, id).await, ["topup.created", "topup.succeeded"]);
    }
    let paid = 100 * all.len() as i64;
    assert_eq!(bank.balance(&alice).await, (paid, paid), "each top-up credited once");
}
