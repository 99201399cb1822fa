//! The bank in one process for tests: accounts, payments, top-ups and the
//! gateway on a real PostgreSQL, with the payment scheme and card acquirer mocks
//! calling back through the gateway.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, link};

pub const SECRET: &str = "payments-test-secret";

pub struct Bank {
    pub accounts: TestApp,
    pub payments: TestApp,
    pub topups: TestApp,
    pub gateway: TestApp,
    pub scheme: harness::providers::Running,
    pub acquirer: harness::providers::Running,
}

fn listener() -> (std::net::TcpListener, String) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    (l, url)
}

fn provider_spec(name: &str) -> harness::providers::Spec {
    harness::providers::Spec::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../fixtures/providers/{name}.yaml")),
    )
    .unwrap()
}

impl Bank {
    pub async fn start() -> Self {
        Self::start_with(None, None).await
    }

    /// Around an existing accounts service, with payments on an existing
    /// database: a restart.
    pub async fn start_with(accounts: Option<TestApp>, payments_db: Option<String>) -> Self {
        Self::start_configured(accounts, payments_db, &[]).await
    }

    /// With `settings` for payments and top-ups beyond the tests' own (their
    /// calls to a provider time out after 500 ms).
    pub async fn start_configured(
        accounts: Option<TestApp>,
        payments_db: Option<String>,
        settings: &[(&str, String)],
    ) -> Self {
        let accounts = match accounts {
            Some(a) => a,
            None => TestApp::spawn(&bank::accounts::SPEC).await,
        };
        let (scheme_listener, scheme_url) = listener();
        let (acquirer_listener, acquirer_url) = listener();
        let payments = TestApp::spawn_with(
            &bank::payments::SPEC,
            &[
                &[
                    ("ACCOUNTS_URL", accounts.base.clone()),
                    ("SCHEME_URL", scheme_url),
                    ("SCHEME_TIMEOUT_MS", "500".into()),
                    ("WEBHOOK_SECRET", SECRET.into()),
                ],
                settings,
            ]
            .concat(),
            payments_db,
        )
        .await;
        let topups = TestApp::spawn_with(
            &bank::topups::SPEC,
            &[
                &[
                    ("ACCOUNTS_URL", accounts.base.clone()),
                    ("ACQUIRER_URL", acquirer_url),
                    ("ACQUIRER_TIMEOUT_MS", "500".into()),
                    ("WEBHOOK_SECRET", SECRET.into()),
                ],
                settings,
            ]
            .concat(),
            None,
        )
        .await;
        let gateway = TestApp::spawn_with(
            &bank::gateway::SPEC,
            &[
                ("ROUTES", format!("accounts={},payments={},topups={}", accounts.base, payments.base, topups.base)),
                ("WEBHOOKS", "payment-scheme=payments,card-acquirer=topups".into()),
                ("WEBHOOK_SECRET", SECRET.into()),
            ],
            None,
        )
        .await;
        let hooks = Some(gateway.base.clone());
        let scheme = harness::providers::serve(
            provider_spec("payment-scheme"),
            scheme_listener,
            hooks.clone(),
            SECRET.as_bytes(),
        )
        .await
        .unwrap();
        let acquirer =
            harness::providers::serve(provider_spec("card-acquirer"), acquirer_listener, hooks, SECRET.as_bytes())
                .await
                .unwrap();
        Self { accounts, payments, topups, gateway, scheme, acquirer }
    }

    pub async fn customer_with(&self, name: &str, pence: i64) -> Value {
        let (_, customer) = self.accounts.post("/customers", json!({ "name": name }), None).await;
        let (_, account) = self.accounts.post(&link(&customer, "open-account"), json!({}), None).await;
        if pence > 0 {
            let body = json!({ "amount": pence, "currency": "GBP" });
            let (status, _) = self.accounts.post(&link(&account, "credit"), body, Some(&format!("seed-{name}"))).await;
            assert_eq!(status, 201);
        }
        account
    }

    pub async fn pay(&self, from: &Value, pence: i64, account_number: &str, key: &str) -> (u16, Value) {
        let body = json!({
            "from": link(from, "self"),
            "to": { "name": "Bob", "sort_code": "20-00-00", "account_number": account_number },
            "amount": { "amount": pence, "currency": "GBP" },
            "reference": "rent",
        });
        self.payments.post("/payments", body, Some(key)).await
    }

    pub async fn balance(&self, account: &Value) -> (i64, i64) {
        let (_, a) = self.accounts.get(&link(account, "self")).await;
        (a["balance"]["amount"].as_i64().unwrap(), a["available"]["amount"].as_i64().unwrap())
    }

    /// Poll a payment or top-up until it is final.
    pub async fn finished(&self, resource: &Value) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (_, r) = self.payments.get(&link(resource, "self")).await;
            if ["completed", "failed", "succeeded"].contains(&r["status"].as_str().unwrap_or("")) {
                return r;
            }
            assert!(tokio::time::Instant::now() < deadline, "never finished: {r}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The payment scheme's journal for one scope.
    pub async fn journal(&self, scope: &str) -> Vec<Value> {
        journal(&self.scheme, scope).await
    }

    pub async fn fault(&self, fault: Value) {
        set_fault(&self.scheme, fault).await;
    }

    pub async fn event_types(&self, payment_id: &str) -> Vec<String> {
        event_types(&self.payments, payment_id).await
    }
}

/// A provider's journal entries for one scope.
pub async fn journal(provider: &harness::providers::Running, scope: &str) -> Vec<Value> {
    let url = format!("{}/__admin/journal?scope={}", provider.uri(), urlencode(scope));
    let j: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    j["entries"].as_array().unwrap().clone()
}

pub async fn set_fault(provider: &harness::providers::Running, fault: Value) {
    let r =
        reqwest::Client::new().post(format!("{}/__admin/faults", provider.uri())).json(&fault).send().await.unwrap();
    assert_eq!(r.status(), 201);
}

/// The types of `service`'s events about one aggregate, in order.
pub async fn event_types(service: &TestApp, aggregate: &str) -> Vec<String> {
    let (_, page) = service.get("/events?limit=1000").await;
    page["_embedded"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["aggregate_id"] == aggregate)
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Wait until a provider's journal shows `n` requests that came in.
pub async fn wait_for_requests(provider: &harness::providers::Running, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let url = format!("{}/__admin/journal", provider.uri());
        let j: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        let came_in = j["entries"].as_array().unwrap().iter().filter(|e| e["direction"] == "in").count();
        if came_in >= n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the provider saw {came_in} requests, not {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn clear_faults(provider: &harness::providers::Running) {
    let r = reqwest::Client::new().delete(format!("{}/__admin/faults", provider.uri())).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// While a provider is slow, the service stays up and quick for four seconds
/// and until a slow answer has come back: `/health` 200 and, from then, naming
/// `dependency` degraded; a read of `resource` and a new request (`write`)
/// answered at once (median under 100 ms, none near the 2 s a starved service
/// took).
pub async fn stays_up_while_slow<W, F>(service: &TestApp, dependency: &str, resource: &str, write: W)
where
    W: Fn(usize) -> F,
    F: std::future::Future<Output = u16>,
{
    let mut took = Vec::new();
    let mut degraded = false;
    let until = tokio::time::Instant::now() + Duration::from_millis(4_000);
    let mut i = 0;
    while tokio::time::Instant::now() < until || !degraded {
        assert!(
            tokio::time::Instant::now() < until + Duration::from_secs(10),
            "`{dependency}` never reported degraded"
        );
        let started = tokio::time::Instant::now();
        let health = service.http.get(service.url("/health")).send().await.unwrap();
        took.push(started.elapsed());
        assert_eq!(health.status(), 200, "a slow provider must not take the service down");
        let body: Value = health.json().await.unwrap();
        degraded |= body["checks"][dependency]["status"] == "degraded";
        if degraded {
            assert_eq!(body["status"], "degraded", "{body}");
        }
        let started = tokio::time::Instant::now();
        let (status, _) = service.get(resource).await;
        took.push(started.elapsed());
        assert_eq!(status, 200);
        let started = tokio::time::Instant::now();
        let status = write(i).await;
        took.push(started.elapsed());
        assert!((200..300).contains(&status), "a new request is taken while the provider is slow: {status}");
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    took.sort();
    let (median, max) = (took[took.len() / 2], took[took.len() - 1]);
    assert!(median < Duration::from_millis(100), "median answer {median:?} while the provider is slow: {took:?}");
    assert!(max < Duration::from_secs(1), "slowest answer {max:?} while the provider is slow: {took:?}");
}

/// Settings for a provider that answers in 3 s: calls to it wait up to 5 s.
pub fn patient() -> Vec<(&'static str, String)> {
    vec![("SCHEME_TIMEOUT_MS", "5000".into()), ("ACQUIRER_TIMEOUT_MS", "5000".into())]
}
