//! The provider mocks over real HTTP: API shapes, magic values, signed
//! webhooks, the journal, and faults scoped to one caller.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use harness::providers::{self, Spec};
use serde_json::{Value, json};

const SECRET: &[u8] = b"test-secret";

/// Webhooks received, each with whether its signature verified.
#[derive(Clone, Default)]
struct Hooks(Arc<Mutex<Vec<(Value, bool)>>>);

impl Hooks {
    async fn wait_for(&self, n: usize) -> Vec<(Value, bool)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.0.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(Instant::now() < deadline, "expected {n} webhooks, got {got:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn receiver() -> (String, Hooks) {
    let hooks = Hooks::default();
    let h = hooks.clone();
    let app = axum::Router::new().route(
        "/{*path}",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let h = h.clone();
            async move {
                let sig = headers.get(wire::SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
                let ok = wire::verify(SECRET, sig, &body, now).is_ok();
                h.0.lock().unwrap().push((serde_json::from_slice(&body).unwrap(), ok));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hooks)
}

async fn provider(name: &str, webhooks: Option<String>) -> providers::Running {
    let spec =
        Spec::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../fixtures/providers/{name}.yaml"))).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    providers::serve(spec, listener, webhooks, SECRET).await.unwrap()
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn payment(id: &str, debtor: &str, creditor_account: &str) -> Value {
    json!({
        "payment_id": id,
        "debtor_account": debtor,
        "creditor": { "name": "Bob", "sort_code": "20-00-00", "account_number": creditor_account },
        "amount": { "amount": 2500, "currency": "GBP" },
        "reference": "rent",
    })
}

#[tokio::test]
async fn the_scheme_accepts_then_calls_back_signed_with_the_outcome() {
    let (hooks_url, hooks) = receiver().await;
    let scheme = provider("payment-scheme", Some(hooks_url)).await;
    let (status, accepted) = post(&format!("{}/payments", scheme.uri()), payment("p1", "acc-a", "12345678")).await;
    assert_eq!(status, 202);
    assert_eq!(accepted["status"], "accepted");
    let (status, _) = post(&format!("{}/payments", scheme.uri()), payment("p2", "acc-a", "99999901")).await;
    assert_eq!(status, 202);
    let got = hooks.wait_for(2).await;
    let by_id = |id: &str| got.iter().find(|(h, _)| h["payment_id"] == id).cloned().unwrap();
    let (settled, signed) = by_id("p1");
    assert!(signed, "webhooks carry a valid signature");
    assert_eq!(settled["type"], "payment.settled");
    assert_eq!(settled["scheme_id"], accepted["scheme_id"]);
    let (rejected, _) = by_id("p2");
    assert_eq!((rejected["type"].as_str(), rejected["reason"].as_str()), (Some("payment.rejected"), Some("AC01")));
    // Its answer and its webhooks are what its published contract says.
    let scheme_api = &wire::providers::contracts()["payment-scheme"];
    conforms(&scheme_api["operations"][0]["answer"]["schema"], &accepted);
    for (hook, _) in &got {
        conforms(&scheme_api["webhook"], hook);
    }
}

/// `value` matches `schema`, or the test fails naming every mismatch.
fn conforms(schema: &Value, value: &Value) {
    let broken = harness::contracts::mismatches(&harness::contracts::compile(schema).unwrap(), value);
    assert!(broken.is_empty(), "{value} does not match its contract: {}", broken.join("; "));
}

#[tokio::test]
async fn a_repeated_payment_is_answered_the_same_and_sent_once() {
    let (hooks_url, hooks) = receiver().await;
    let scheme = provider("payment-scheme", Some(hooks_url)).await;
    let (_, first) = post(&format!("{}/payments", scheme.uri()), payment("same", "acc-a", "12345678")).await;
    let (_, again) = post(&format!("{}/payments", scheme.uri()), payment("same", "acc-a", "12345678")).await;
    assert_eq!(first, again);
    hooks.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hooks.0.lock().unwrap().len(), 1, "one payment, one webhook");
}

#[tokio::test]
async fn bad_requests_name_the_missing_field() {
    let scheme = provider("payment-scheme", None).await;
    let (status, body) = post(&format!("{}/payments", scheme.uri()), json!({ "payment_id": "x" })).await;
    assert_eq!(status, 400);
    let error = body["error"].as_str().unwrap();
    assert!(error.starts_with("the request does not match the payment-scheme API's POST /payments"), "{error}");
    for field in ["debtor_account", "creditor", "amount", "reference"] {
        assert!(error.contains(&format!("\"{field}\" is a required property")), "{error}");
    }
    // Each field is held to its type and rule, as the bank's calls are.
    let mut wrong = payment("p1", "acc-a", "1234");
    wrong["amount"]["currency"] = json!("pounds");
    wrong["colour"] = json!("red");
    let (status, body) = post(&format!("{}/payments", scheme.uri()), wrong).await;
    assert_eq!(status, 400);
    let error = body["error"].as_str().unwrap();
    for at in ["/creditor/account_number", "/amount/currency", "colour"] {
        assert!(error.contains(at), "{at} in {error}");
    }
    let acquirer = provider("card-acquirer", None).await;
    let (status, body) =
        post(&format!("{}/charges", acquirer.uri()), json!({ "charge_id": "c1", "card_token": "tok_ok" })).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("\"amount\" is a required property"), "{body}");
}

#[tokio::test]
async fn faults_touch_only_their_scope_and_run_out() {
    let scheme = provider("payment-scheme", None).await;
    let admin = format!("{}/__admin/faults", scheme.uri());
    let (status, _) = post(&admin, json!({ "kind": "unavailable", "scope": "acc-a", "remaining": 2 })).await;
    assert_eq!(status, 201);
    let pay =
        |id: &str, debtor: &str| post_owned(format!("{}/payments", scheme.uri()), payment(id, debtor, "12345678"));
    assert_eq!(pay("a1", "acc-a").await.0, 503);
    assert_eq!(pay("b1", "acc-b").await.0, 202, "another account is untouched");
    assert_eq!(pay("a2", "acc-a").await.0, 503);
    assert_eq!(pay("a3", "acc-a").await.0, 202, "the fault ran out after two");
    // A fault until cleared, then cleared.
    post(&admin, json!({ "kind": "unavailable", "scope": "acc-c" })).await;
    assert_eq!(pay("c1", "acc-c").await.0, 503);
    let cleared = reqwest::Client::new().delete(format!("{admin}?scope=acc-c")).send().await.unwrap();
    assert_eq!(cleared.json::<Value>().await.unwrap()["cleared"], 1);
    assert_eq!(pay("c2", "acc-c").await.0, 202);
    let journal: Value =
        reqwest::get(format!("{}/__admin/journal?scope=acc-a", scheme.uri())).await.unwrap().json().await.unwrap();
    let statuses: Vec<u64> =
        journal["entries"].as_array().unwrap().iter().map(|e| e["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [503, 503, 202], "the journal keeps what each caller sent and got");
    let (status, body) = post(&admin, json!({ "kind": "explode" })).await;
    assert_eq!(status, 400, "{body}");
}

async fn post_owned(url: String, body: Value) -> (u16, Value) {
    post(&url, body).await
}

#[tokio::test]
async fn slow_and_reject_faults_change_timing_and_outcome() {
    let (hooks_url, hooks) = receiver().await;
    let scheme = provider("payment-scheme", Some(hooks_url)).await;
    let admin = format!("{}/__admin/faults", scheme.uri());
    post(&admin, json!({ "kind": "slow", "scope": "acc-s", "delay_ms": 300, "remaining": 1 })).await;
    post(&admin, json!({ "kind": "reject", "scope": "acc-r", "reason": "AM04", "remaining": 1 })).await;
    let started = Instant::now();
    post(&format!("{}/payments", scheme.uri()), payment("s1", "acc-s", "12345678")).await;
    assert!(started.elapsed() >= Duration::from_millis(300), "held for the delay");
    post(&format!("{}/payments", scheme.uri()), payment("r1", "acc-r", "12345678")).await;
    let got = hooks.wait_for(2).await;
    let rejected = got.iter().find(|(h, _)| h["payment_id"] == "r1").unwrap();
    assert_eq!(rejected.0["reason"], "AM04");
}

#[tokio::test]
async fn the_acquirer_declines_magic_tokens_and_the_vendor_scores_large_amounts_high() {
    let (hooks_url, hooks) = receiver().await;
    let acquirer = provider("card-acquirer", Some(hooks_url)).await;
    let charge = |id: &str, token: &str| json!({ "charge_id": id, "card_token": token, "amount": { "amount": 1000, "currency": "GBP" }, "reference": "top-up" });
    let (status, ok) = post(&format!("{}/charges", acquirer.uri()), charge("c1", "tok_visa")).await;
    assert_eq!((status, ok["status"].as_str()), (201, Some("succeeded")));
    let (_, declined) = post(&format!("{}/charges", acquirer.uri()), charge("c2", "tok_declined")).await;
    assert_eq!((declined["status"].as_str(), declined["reason"].as_str()), (Some("declined"), Some("do_not_honour")));
    let got = hooks.wait_for(2).await;
    assert!(got.iter().any(|(h, _)| h["type"] == "charge.declined" && h["charge_id"] == "c2"));
    // What the acquirer answers and calls back with is its published contract.
    let acquirer_api = &wire::providers::contracts()["card-acquirer"];
    for answer in [&ok, &declined] {
        conforms(&acquirer_api["operations"][0]["answer"]["schema"], answer);
    }
    for (hook, _) in &got {
        conforms(&acquirer_api["webhook"], hook);
    }

    let vendor = provider("screening-vendor", None).await;
    let screen = |amount: i64| {
        json!({
            "transaction_id": "t", "account": "a", "amount": { "amount": amount, "currency": "GBP" },
            "counterparty": null, "kind": "card top-up",
        })
    };
    let (_, low) = post(&format!("{}/screenings", vendor.uri()), screen(1_000)).await;
    let (_, high) = post(&format!("{}/screenings", vendor.uri()), screen(1_500_000)).await;
    assert!(low["score"].as_u64().unwrap() < 50 && high["score"].as_u64().unwrap() >= 90, "{low} {high}");
    let vendor_api = &wire::providers::contracts()["screening-vendor"]["operations"][0]["answer"]["schema"];
    conforms(vendor_api, &low);
    conforms(vendor_api, &high);
}

#[tokio::test]
async fn the_scheme_delivers_inbound_payments_on_request() {
    let (hooks_url, hooks) = receiver().await;
    let scheme = provider("payment-scheme", Some(hooks_url)).await;
    let (status, _) = post(
        &format!("{}/__admin/inbound-payments", scheme.uri()),
        json!({
            "to": { "sort_code": "04-00-04", "account_number": "10000001" },
            "from": { "name": "Carol", "sort_code": "20-00-00", "account_number": "55555555" },
            "amount": { "amount": 5000, "currency": "GBP" },
            "reference": "gift",
        }),
    )
    .await;
    assert_eq!(status, 202);
    let got = hooks.wait_for(1).await;
    assert_eq!(got[0].0["type"], "payment.received");
    assert!(got[0].1);
    conforms(&wire::providers::contracts()["payment-scheme"]["webhook"], &got[0].0);
}
