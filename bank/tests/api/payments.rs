//! Payments end to end in one process: accounts, payments and the gateway on a
//! real PostgreSQL, the payment scheme mock calling back through the gateway.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, link};

const SECRET: &str = "payments-test-secret";

struct Bank {
    accounts: TestApp,
    payments: TestApp,
    gateway: TestApp,
    scheme: harness::providers::Running,
}

impl Bank {
    async fn start() -> Self {
        Self::start_with(None, None).await
    }

    /// Around an existing accounts service, with payments on an existing
    /// database: a restart.
    async fn start_with(accounts: Option<TestApp>, payments_db: Option<String>) -> Self {
        let accounts = match accounts {
            Some(a) => a,
            None => TestApp::spawn(&bank::accounts::SPEC).await,
        };
        let scheme_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let scheme_url = format!("http://{}", scheme_listener.local_addr().unwrap());
        let payments = TestApp::spawn_with(
            &bank::payments::SPEC,
            &[("ACCOUNTS_URL", accounts.base.clone()), ("SCHEME_URL", scheme_url), ("SCHEME_TIMEOUT_MS", "500".into())],
            payments_db,
        )
        .await;
        let gateway = TestApp::spawn_with(
            &bank::gateway::SPEC,
            &[
                ("ROUTES", format!("accounts={},payments={}", accounts.base, payments.base)),
                ("WEBHOOKS", "payment-scheme=payments".into()),
                ("WEBHOOK_SECRET", SECRET.into()),
            ],
            None,
        )
        .await;
        let spec = harness::providers::Spec::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/providers/payment-scheme.yaml"),
        )
        .unwrap();
        let scheme = harness::providers::serve(spec, scheme_listener, Some(gateway.base.clone()), SECRET.as_bytes())
            .await
            .unwrap();
        Self { accounts, payments, gateway, scheme }
    }

    async fn customer_with(&self, name: &str, pence: i64) -> Value {
        let (_, customer) = self.accounts.post("/customers", json!({ "name": name }), None).await;
        let (_, account) = self.accounts.post(&link(&customer, "open-account"), json!({}), None).await;
        if pence > 0 {
            let body = json!({ "amount": pence, "currency": "GBP" });
            let (status, _) = self.accounts.post(&link(&account, "credit"), body, Some(&format!("seed-{name}"))).await;
            assert_eq!(status, 201);
        }
        account
    }

    async fn pay(&self, from: &Value, pence: i64, account_number: &str, key: &str) -> (u16, Value) {
        let body = json!({
            "from": link(from, "self"),
            "to": { "name": "Bob", "sort_code": "20-00-00", "account_number": account_number },
            "amount": { "amount": pence, "currency": "GBP" },
            "reference": "rent",
        });
        self.payments.post("/payments", body, Some(key)).await
    }

    async fn balance(&self, account: &Value) -> (i64, i64) {
        let (_, a) = self.accounts.get(&link(account, "self")).await;
        (a["balance"]["amount"].as_i64().unwrap(), a["available"]["amount"].as_i64().unwrap())
    }

    /// Poll the payment until it is `completed` or `failed`.
    async fn finished(&self, payment: &Value) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (_, p) = self.payments.get(&link(payment, "self")).await;
            if p["status"] == "completed" || p["status"] == "failed" {
                return p;
            }
            assert!(tokio::time::Instant::now() < deadline, "payment never finished: {p}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn journal(&self, scope: &str) -> Vec<Value> {
        let url = format!("{}/__admin/journal?scope={}", self.scheme.uri(), urlencode(scope));
        let j: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        j["entries"].as_array().unwrap().clone()
    }

    async fn fault(&self, fault: Value) {
        let r = reqwest::Client::new()
            .post(format!("{}/__admin/faults", self.scheme.uri()))
            .json(&fault)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }

    async fn event_types(&self, payment_id: &str) -> Vec<String> {
        let (_, page) = self.payments.get("/events?limit=1000").await;
        page["_embedded"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["aggregate_id"] == payment_id)
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

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
    assert_eq!(done["attempts"], 4, "three refusals, then accepted");
    let statuses: Vec<u64> = bank
        .journal(&scope)
        .await
        .iter()
        .filter(|e| e["direction"] == "in")
        .map(|e| e["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [503, 503, 503, 202]);
    assert_eq!(bank.balance(&alice).await, (7_500, 7_500));
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
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1], "the retry carries the same id, so the scheme cannot pay twice");
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
    let Bank { accounts, payments, gateway, scheme } = bank;
    payments.stop().await;
    drop((gateway, scheme));
    // Back up on the same data, with the scheme healthy again.
    let restarted = Bank::start_with(Some(accounts), Some(db)).await;
    let done = restarted.finished(&json!({ "_links": { "self": { "href": format!("{}/payments/{}", restarted.payments.base, payment["id"].as_str().unwrap()) } } })).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(restarted.balance(&alice).await, (7_500, 7_500), "debited once");
    let accepted = restarted.journal(&scope).await.iter().filter(|e| e["direction"] == "in").count();
    assert_eq!(accepted, 1, "sent to the scheme once after the restart");
}
