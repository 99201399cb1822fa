//! Payments end to end in one process: accounts, payments and the gateway on a
//! real PostgreSQL, the payment scheme mock calling back through the gateway.

use std::time::Duration;

use serde_json::{Value, json};

use crate::fixture::Bank;
use crate::helpers::link;

#[tokio::test]
async fn a_settled_payment_moves_the_money_once() {
    let bank = Bank::start().await;
    let alice = bank.customer_with("Alice", 10_000).await;
    let (status, payment) = bank.pay(&alice, 2_500, "12345678", "pay-1").await;
    assert_eq!(status, 202, "{payment}");
    assert_eq!(payment["status"], "reserved");
    assert_eq!(bank.balance(&alice).await, (10_000, 7_500), "reserved at once");
    let done = bank.finished(&payment).await;
    assert_eq!(done["status"], "completed", "{done}");
    // The answer was made before the statement that stored it: what never
    // changes reads back the same, to the microsecond.
    for field in ["id", "amount", "to", "reference", "created_at", "_links"] {
        assert_eq!(done[field], payment[field], "{field}: {payment} then {done}");
    }
    assert_eq!(bank.balance(&alice).await, (7_500, 7_500));
    let id = payment["id"].as_str().unwrap();
    assert_eq!(bank.event_types(id).await, ["payment.created", "payment.submitted", "payment.completed"]);
    let (_, hold) = bank.accounts.get(&link(&done, "hold")).await;
    assert_eq!(hold["status"], "captured");
}

#[tokio::test]
async fn insufficient_funds_is_refused_before_the_scheme_is_called() {
    let bank = Bank::start().await;
    let alice = bank.customer_with("Alice", 1_000).await;
    let (status, problem) = bank.pay(&alice, 2_500, "12345678", "pay-1").await;
    assert_eq!(status, 422);
    assert_eq!(problem["type"], "urn:problem:bank:insufficient-funds");
    assert_eq!(problem["detail"], "insufficient funds: 25.00 GBP requested, 10.00 GBP available");
    assert!(bank.journal(&link(&alice, "self")).await.is_empty(), "the scheme never heard of it");
    assert_eq!(bank.balance(&alice).await, (1_000, 1_000));
}

#[tokio::test]
async fn a_rejected_payment_releases_the_funds_with_the_schemes_reason() {
    let bank = Bank::start().await;
    let alice = bank.customer_with("Alice", 10_000).await;
    let (_, payment) = bank.pay(&alice, 2_500, "99999901", "pay-1").await;
    let done = bank.finished(&payment).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["failure"]["reason"], "AC01");
    assert_eq!(bank.balance(&alice).await, (10_000, 10_000));
    let id = payment["id"].as_str().unwrap();
    assert_eq!(bank.event_types(id).await, ["payment.created", "payment.submitted", "payment.failed"]);
}

#[tokio::test]
async fn a_scheme_outage_delays_the_payment_but_it_is_sent_once() {
    let bank = Bank::start().await;
    let alice = bank.customer_with("Alice", 10_000).await;
    let scope = link(&alice, "self");
    bank.fault(json!({ "kind": "unavailable", "scope": scope, "remaining": 3 })).await;
    let (_, payment) = bank.pay(&alice, 2_500, "12345678", "pay-1").await;
    let done = bank.finished(&payment).await;
    assert_eq!(done["status"], "completed");
    assert!(done["attempts"].as_u64().unwrap() >= 4, "three refusals, then accepted: {done}");
    let statuses: Vec<u64> = bank
        .journal(&scope)
        .await
        .iter()
        .filter(|e| e["direction"] == "in")
        .map(|e| e["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses[..3], [503, 503, 503], "{statuses:?}");
    assert!(
        statuses[3..].iter().all(|s| *s == 202),
        "then accepted (repeats only after a client timeout): {statuses:?}"
    );
    assert_eq!(bank.balance(&alice).await, (7_500, 7_500));
}

/// A payment kept from before the hold's links were (no `hold_capture`): its
/// hold is read first and then captured, once.
#[tokio::test]
async fn a_payment_without_kept_hold_links_reads_its_hold_to_settle_it() {
    let bank = Bank::start().await;
    let alice = bank.customer_with("Alice", 10_000).await;
    // The scheme refuses for a while, so that the payment waits in `reserved`.
    bank.fault(json!({ "kind": "unavailable", "scope": link(&alice, "self"), "remaining": 3 })).await;
    let (_, payment) = bank.pay(&alice, 2_500, "12345678", "pay-1").await;
    let db = sqlx::PgPool::connect(&bank.payments.database_url).await.unwrap();
    let kept = sqlx::query("UPDATE payments SET hold_capture = NULL, hold_release = NULL WHERE id = $1::uuid")
        .bind(payment["id"].as_str().unwrap())
        .execute(&db)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(kept, 1);
    let done = bank.finished(&payment).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(bank.balance(&alice).await, (7_500, 7_500), "debited once");
    let (_, hold) = bank.accounts.get(&link(&done, "hold")).await;
    assert_eq!(hold["status"], "captured");
    db.close().await;
}

#[tokio::test]
async fn a_scheme_that_times_out_is_retried_under_the_same_payment_id() {
    let bank = Bank::start().await;
    let alice = bank.customer_with("Alice", 10_000).await;
    let scope = link(&alice, "self");
    bank.fault(json!({ "kind": "timeout", "scope": scope, "remaining": 1 })).await;
    let (_, payment) = bank.pay(&alice, 2_500, "12345678", "pay-1").await;
    let done = bank.finished(&payment).await;
    assert_eq!(done["status"], "completed");
    let ids: Vec<Value> = bank
        .journal(&scope)
        .await
        .iter()
        .filter(|e| e["direction"] == "in")
        .map(|e| e["body"]["payment_id"].clone())
        .collect();
    assert!(ids.len() >= 2, "timed out once, then retried: {ids:?}");
    assert!(ids.iter().all(|id| *id == ids[0]), "every retry carries the same id, so the scheme cannot pay twice");
    assert_eq!(bank.balance(&alice).await, (7_500, 7_500));
}

#[tokio::test]
async fn a_repeated_request_returns_the_first_payment_and_moves_nothing() {
    let bank = Bank::start().await;
    let alice = bank.customer_with("Alice", 10_000).await;
    let (_, first) = bank.pay(&alice, 2_500, "12345678", "same").await;
    let (status, again) = bank.pay(&alice, 2_500, "12345678", "same").await;
    assert_eq!(status, 202);
    assert_eq!(first["id"], again["id"]);
    bank.finished(&first).await;
    assert_eq!(bank.balance(&alice).await, (7_500, 7_500));
    let (_, holds) = bank.accounts.get(&link(&alice, "holds")).await;
    assert_eq!(holds["count"], 1);
}

#[tokio::test]
async fn concurrent_repeats_of_a_payment_make_it_once() {
    let bank = Bank::start().await;
    let alice = bank.customer_with("Alice", 10_000).await;
    let attempts = (0..8).map(|_| bank.pay(&alice, 2_500, "12345678", "same"));
    let results = futures::future::join_all(attempts).await;
    assert!(results.iter().all(|(s, _)| *s == 202), "{results:?}");
    let ids: std::collections::BTreeSet<String> = results.iter().map(|(_, b)| b["id"].to_string()).collect();
    assert_eq!(ids.len(), 1, "every repeat got the first payment");
    bank.finished(&results[0].1).await;
    assert_eq!(bank.balance(&alice).await, (7_500, 7_500), "debited once");
    let (_, holds) = bank.accounts.get(&link(&alice, "holds")).await;
    assert_eq!(holds["count"], 1);
}

#[tokio::test]
async fn bad_payment_requests_are_refused_and_change_nothing() {
    let bank = Bank::start().await;
    let alice = bank.customer_with("Alice", 10_000).await;
    let (status, problem) = bank.pay(&alice, 0, "12345678", "k1").await;
    assert_eq!((status, problem["type"].as_str()), (422, Some("urn:problem:bank:invalid-amount")));
    let (status, problem) = bank.pay(&alice, 100, "1234", "k2").await;
    assert_eq!((status, problem["type"].as_str()), (422, Some("urn:problem:bank:invalid-account-number")));
    let body = json!({ "from": format!("{}/accounts/{}", bank.accounts.base, uuid::Uuid::new_v4()), "to": { "name": "Bob", "sort_code": "200000", "account_number": "12345678" }, "amount": { "amount": 100, "currency": "GBP" } });
    let (status, problem) = bank.payments.post("/payments", body, Some("k3")).await;
    assert_eq!((status, problem["type"].as_str()), (422, Some("urn:problem:bank:unknown-account")));
    assert_eq!(bank.balance(&alice).await, (10_000, 10_000));
}

#[tokio::test]
async fn inbound_payments_credit_the_account_or_go_back() {
    let bank = Bank::start().await;
    let alice = bank.customer_with("Alice", 0).await;
    let (_, a) = bank.accounts.get(&link(&alice, "self")).await;
    let inbound = |account_number: &str| {
        json!({
            "to": { "sort_code": "04-00-04", "account_number": account_number },
            "from": { "name": "Carol", "sort_code": "20-00-00", "account_number": "55555555" },
            "amount": { "amount": 5_000, "currency": "GBP" },
            "reference": "gift",
        })
    };
    let http = reqwest::Client::new();
    let url = format!("{}/__admin/inbound-payments", bank.scheme.uri());
    http.post(&url).json(&inbound(a["account_number"].as_str().unwrap())).send().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while bank.balance(&alice).await.0 != 5_000 {
        assert!(tokio::time::Instant::now() < deadline, "never credited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    http.post(&url).json(&inbound("00000000")).send().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, page) = bank.payments.get("/events?limit=1000").await;
        let types: Vec<&str> =
            page["_embedded"]["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
        if types.contains(&"payment.returned") {
            assert_eq!(types.iter().filter(|t| **t == "payment.received").count(), 1);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never returned: {types:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let journal: Value =
        reqwest::get(format!("{}/__admin/journal", bank.scheme.uri())).await.unwrap().json().await.unwrap();
    assert!(journal["entries"].as_array().unwrap().iter().any(|e| e["path"] == "/returns"), "returned to the scheme");
    assert_eq!(bank.balance(&alice).await.0, 5_000, "credited once");
}

#[tokio::test]
async fn the_gateway_refuses_a_webhook_with_a_bad_signature() {
    let bank = Bank::start().await;
    let alice = bank.customer_with("Alice", 10_000).await;
    let (_, payment) = bank.pay(&alice, 2_500, "99999901", "pay-1").await;
    bank.finished(&payment).await;
    // A forged "settled" for the failed payment: unsigned, then signed with the wrong secret.
    let body = json!({ "type": "payment.settled", "payment_id": payment["id"], "scheme_id": "x" }).to_string();
    let url = format!("{}/webhooks/payment-scheme", bank.gateway.base);
    let http = reqwest::Client::new();
    let r = http.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let forged = wire::sign(b"wrong", now, body.as_bytes());
    let r = http.post(&url).header(wire::SIGNATURE_HEADER, forged).body(body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["type"], "urn:problem:bank:unauthorized");
    let (_, p) = bank.payments.get(&link(&payment, "self")).await;
    assert_eq!(p["status"], "failed", "nothing happened");
    assert_eq!(bank.balance(&alice).await, (10_000, 10_000));
}

#[tokio::test]
async fn the_gateway_routes_requests_and_links_point_back_through_it() {
    let bank = Bank::start().await;
    let (status, root) = bank.gateway.get("/").await;
    assert_eq!(status, 200);
    let accounts_root = link(&root, "accounts");
    assert_eq!(accounts_root, format!("{}/accounts/", bank.gateway.base));
    let (_, discovery) = bank.gateway.get(&accounts_root).await;
    assert_eq!(discovery["service"], "accounts");
    let customers = link(&discovery, "customers");
    assert!(customers.starts_with(&format!("{}/accounts/", bank.gateway.base)), "{customers}");
    let (status, customer) = bank.gateway.post(&customers, json!({ "name": "Dave" }), None).await;
    assert_eq!(status, 201);
    assert!(link(&customer, "self").starts_with(&format!("{}/accounts/customers/", bank.gateway.base)));
    let (status, problem) = bank.gateway.get("/ledger/").await;
    assert_eq!(status, 404);
    assert!(problem["detail"].as_str().unwrap().contains("the gateway routes accounts, payments"), "{problem}");
}

#[tokio::test]
async fn a_payments_restart_mid_payment_finishes_it_exactly_once() {
    let bank = Bank::start().await;
    let alice = bank.customer_with("Alice", 10_000).await;
    let scope = link(&alice, "self");
    // The scheme is down: the payment waits, reserved.
    bank.fault(json!({ "kind": "unavailable", "scope": scope })).await;
    let (_, payment) = bank.pay(&alice, 2_500, "12345678", "pay-1").await;
    let db = bank.payments.database_url.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while bank.journal(&scope).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the submitter never tried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before: Vec<u64> = bank.journal(&scope).await.iter().map(|e| e["status"].as_u64().unwrap()).collect();
    assert!(before.iter().all(|s| *s == 503), "only refused so far: {before:?}");
    let Bank { accounts, payments, topups, gateway, scheme, acquirer } = bank;
    payments.stop().await;
    drop((topups, gateway, scheme, acquirer));
    // Back up on the same data, with the scheme healthy again.
    let restarted = Bank::start_with(Some(accounts), Some(db)).await;
    let done = restarted.finished(&json!({ "_links": { "self": { "href": format!("{}/payments/{}", restarted.payments.base, payment["id"].as_str().unwrap()) } } })).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(restarted.balance(&alice).await, (7_500, 7_500), "debited once");
    // Retries after a client-side timeout may repeat the request, always under
    // the payment's one id: the scheme accepts one payment.
    let ids: std::collections::BTreeSet<String> = restarted
        .journal(&scope)
        .await
        .iter()
        .filter(|e| e["direction"] == "in")
        .map(|e| e["body"]["payment_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1, "one payment reached the scheme: {ids:?}");
}

#[tokio::test]
async fn a_slow_scheme_never_starves_the_payments_service() {
    // Calls to the scheme may take 5 s: its 3 s answers are waited for.
    let bank = Bank::start_configured(None, None, &crate::fixture::patient()).await;
    let alice = bank.customer_with("Alice", 1_000_000).await;
    bank.fault(json!({ "kind": "slow", "delay_ms": 3_000 })).await;
    let mut payments = Vec::new();
    for i in 0..30 {
        let (status, payment) = bank.pay(&alice, 100, "12345678", &format!("slow-{i}")).await;
        assert_eq!(status, 202, "{payment}");
        payments.push(payment);
    }
    crate::fixture::wait_for_requests(&bank.scheme, 8).await;
    let first = payments[0]["id"].as_str().unwrap().to_string();
    let pay_more = |i: usize| {
        let (bank, alice) = (&bank, &alice);
        async move { bank.pay(alice, 100, "12345678", &format!("while-slow-{i}")).await.0 }
    };
    crate::fixture::stays_up_while_slow(&bank.payments, "payment-scheme", &format!("/payments/{first}"), pay_more)
        .await;
    crate::fixture::clear_faults(&bank.scheme).await;
    let (_, page) = bank.payments.get("/payments?limit=500").await;
    let all = page["_embedded"]["payments"].as_array().unwrap().clone();
    assert!(all.len() > 30, "the payments made while the scheme was slow are there too");
    for payment in &all {
        let done = bank.finished(payment).await;
        assert_eq!(done["status"], "completed", "{done}");
        let id = done["id"].as_str().unwrap();
        assert_eq!(bank.event_types(id).await, ["payment.created", "payment.submitted", "payment.completed"]);
    }
    let paid = 100 * all.len() as i64;
    assert_eq!(bank.balance(&alice).await, (1_000_000 - paid, 1_000_000 - paid), "each payment debited once");
}

#[tokio::test]
async fn a_payments_service_stopped_mid_call_finishes_the_payment_once_after_restart() {
    // Calls to the scheme wait up to 5 s; a submitter's claim lasts 4 s.
    let settings = [crate::fixture::patient(), vec![("LEASE_MS", "4000".into())]].concat();
    let bank = Bank::start_configured(None, None, &settings).await;
    let alice = bank.customer_with("Alice", 10_000).await;
    // The scheme holds the call without taking the payment.
    bank.fault(json!({ "kind": "timeout", "remaining": 1 })).await;
    let (_, payment) = bank.pay(&alice, 2_500, "12345678", "pay-1").await;
    // Claimed, and the call to the scheme under way...
    crate::fixture::wait_for_requests(&bank.scheme, 1).await;
    let db = bank.payments.database_url.clone();
    let Bank { accounts, payments, topups, gateway, scheme, acquirer } = bank;
    // ...when the service goes: its shutdown gives up on the call after 2 s and
    // closes its database, so no outcome is ever recorded for this claim.
    payments.stop().await;
    drop((topups, gateway, scheme, acquirer));
    let restarted = Bank::start_configured(Some(accounts), Some(db), &settings).await;
    let url = format!("{}/payments/{}", restarted.payments.base, payment["id"].as_str().unwrap());
    let (_, before) = restarted.payments.get(&url).await;
    assert_eq!(before["status"], "reserved", "the outcome was not recorded: {before}");
    let done = restarted.finished(&json!({ "_links": { "self": { "href": url } } })).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(restarted.balance(&alice).await, (7_500, 7_500), "debited once");
    let id = payment["id"].as_str().unwrap();
    assert_eq!(restarted.event_types(id).await, ["payment.created", "payment.submitted", "payment.completed"]);
    assert!(done["attempts"].as_u64().unwrap() >= 2, "claimed again once the first claim ran out: {done}");
}

/// The scheme settles a payment but its webhook is lost (never sent): after
/// `RECONCILE_AFTER_MS` the payments service asks the scheme
/// (`GET /payments/{id}`) and finishes it from the answer, once, with the same
/// events a webhook gives; a rejection the same way releases the funds.
#[tokio::test]
async fn a_payment_whose_webhook_was_lost_is_reconciled_with_the_scheme() {
    let settings = [("RECONCILE_AFTER_MS", "300".to_string())];
    let bank = Bank::start_configured(None, None, &settings).await;
    let alice = bank.customer_with("Alice", 10_000).await;
    let scope = link(&alice, "self");
    crate::fixture::set_fault(&bank.scheme, json!({ "kind": "lose_webhook", "scope": scope, "remaining": 2 })).await;
    let (_, settled) = bank.pay(&alice, 2_500, "12345678", "pay-1").await;
    let (_, rejected) = bank.pay(&alice, 1_000, "99999901", "pay-2").await;
    let (settled, rejected) = (bank.finished(&settled).await, bank.finished(&rejected).await);
    assert_eq!(settled["status"], "completed", "{settled}");
    assert_eq!((rejected["status"].as_str(), rejected["failure"]["reason"].as_str()), (Some("failed"), Some("AC01")));
    assert_eq!(bank.balance(&alice).await, (7_500, 7_500), "captured once, the rejected one released");
    let id = settled["id"].as_str().unwrap();
    assert_eq!(bank.event_types(id).await, ["payment.created", "payment.submitted", "payment.completed"]);
    let journal = bank.journal(&scope).await;
    assert!(journal.iter().all(|e| e["direction"] != "out"), "no webhook was sent for them: {journal:?}");
    let metrics = bank.payments.http.get(format!("{}/metrics", bank.payments.base)).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains("payments_reconciled_total{outcome=\"settled\"} 1"), "{metrics}");
    assert!(metrics.contains("payments_reconciled_total{outcome=\"rejected\"} 1"), "{metrics}");
    // Its `/health` says the scheme's webhooks are not arriving (still 200: it works).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let health = loop {
        let (status, health) = bank.payments.get(&format!("{}/health", bank.payments.base)).await;
        assert_eq!(status, 200, "{health}");
        if health["checks"]["scheme-webhooks"]["status"] == "degraded" || tokio::time::Instant::now() > deadline {
            break health;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reason = health["checks"]["scheme-webhooks"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("2 payment(s) finished by asking the scheme"), "{health}");
}
