//! HTTP-level tests of the service kit and the accounts service, against a real
//! PostgreSQL.

mod connector;
mod fixture;
mod helpers;
mod monitoring;
mod openapi;
mod payments;
mod topups;
mod trust;

use std::time::Duration;

use bank::accounts::SPEC;
use helpers::{TestApp, link};
use serde_json::{Value, json};

async fn customer_with_account(app: &TestApp, name: &str) -> Value {
    let (status, customer) = app.post("/customers", json!({ "name": name }), None).await;
    assert_eq!(status, 201, "{customer}");
    let (status, account) = app.post(&link(&customer, "open-account"), json!({}), None).await;
    assert_eq!(status, 201, "{account}");
    account
}

async fn balance(app: &TestApp, account: &Value) -> (i64, i64) {
    let (_, a) = app.get(&link(account, "self")).await;
    (a["balance"]["amount"].as_i64().unwrap(), a["available"]["amount"].as_i64().unwrap())
}

async fn credit(app: &TestApp, account: &Value, amount: i64, key: &str) -> (u16, Value) {
    app.post(&link(account, "credit"), json!({ "amount": amount, "currency": "GBP", "reference": "top up" }), Some(key))
        .await
}

#[tokio::test]
async fn health_ping_and_discovery_answer() {
    let app = TestApp::spawn(&SPEC).await;
    let (status, health) = app.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["checks"]["database"]["status"], "ok");
    let (status, pong) = app.get("/ping").await;
    assert_eq!((status, pong), (200, Value::String("pong".into())));
    let (status, root) = app.get("/").await;
    assert_eq!(status, 200);
    assert_eq!(root["service"], "accounts");
    for rel in ["self", "discovery", "health", "events", "metrics", "customers", "find-account"] {
        assert!(link(&root, rel).starts_with(&app.base), "{rel} is an absolute URL into the service");
    }
    assert_eq!(root["_links"]["find-account"]["templated"], true, "a URI template says so");
    // Links to what is not HAL say what it is, as HAL's `type` hint.
    assert_eq!(root["_links"]["health"]["type"], "application/json");
    assert_eq!(root["_links"]["metrics"]["type"], "text/plain; version=0.0.4");
    let metrics = app.http.get(link(&root, "metrics")).send().await.unwrap();
    assert_eq!(metrics.headers()["content-type"], "text/plain; version=0.0.4");
    let (status, customers) = app.get(&link(&root, "customers")).await;
    assert_eq!(status, 200, "every plain link answers GET: {customers}");
}

/// A service publishes the schemas of the events it emits, linked from its
/// discovery resource, and an event it appended matches its schema.
#[tokio::test]
async fn the_service_publishes_the_contracts_of_its_events() {
    let app = TestApp::spawn(&SPEC).await;
    let (_, root) = app.get("/").await;
    assert_eq!(root["_links"]["event-contracts"]["type"], "application/json");
    let (status, contracts) = app.get(&link(&root, "event-contracts")).await;
    assert_eq!(status, 200, "{contracts}");
    let events = contracts["events"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["customer.created", "account.opened", "account.credited", "hold.placed", "hold.captured", "hold.released"]
    );
    assert!(events.iter().all(|e| e["topic"] == "accounts.events"));
    // What the service appends for a new customer is what its contract says.
    let (status, _) = app.post("/customers", json!({ "name": "Alice" }), None).await;
    assert_eq!(status, 201);
    let (_, page) = app.get("/events").await;
    let created = page["_embedded"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "customer.created")
        .cloned()
        .unwrap();
    let schema = &events[0]["schema"];
    let validator = harness::contracts::compile(schema).unwrap();
    let broken = harness::contracts::mismatches(&validator, &created["data"]);
    assert!(broken.is_empty(), "{created} against {schema}: {broken:?}");
    let renamed = json!({ "customer": created["data"]["customer"], "full_name": "Alice" });
    assert!(!harness::contracts::mismatches(&validator, &renamed).is_empty());
}

/// The service's database backends, stopped (SIGSTOP) as a stalled server
/// would be, and started again when dropped (also when the test fails).
struct Stalled(Vec<nix::unistd::Pid>);

impl Drop for Stalled {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = nix::sys::signal::kill(*pid, nix::sys::signal::Signal::SIGCONT);
        }
    }
}

#[tokio::test]
async fn a_database_that_stops_answering_makes_health_degraded_not_down() {
    let app = TestApp::spawn(&SPEC).await;
    assert_eq!(app.get("/health").await.0, 200);
    let db = app.database_url.rsplit('/').next().unwrap().to_string();
    let admin = sqlx::PgPool::connect(&app.database_url.replace(&format!("/{db}"), "/postgres")).await.unwrap();
    let pids: Vec<i32> = sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = $1")
        .bind(&db)
        .fetch_all(&admin)
        .await
        .unwrap();
    assert!(!pids.is_empty(), "the service holds connections to {db}");
    let stalled = Stalled(pids.into_iter().map(nix::unistd::Pid::from_raw).collect());
    for pid in &stalled.0 {
        nix::sys::signal::kill(*pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    }

    // Busy is not dead: 200, and the check says what is wrong.
    let started = std::time::Instant::now();
    let (status, health) = app.get("/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["checks"]["database"]["status"], "degraded", "{health}");
    assert!(health["checks"]["database"]["reason"].as_str().unwrap().contains("did not answer within 1s"), "{health}");
    assert!(started.elapsed() < Duration::from_secs(3), "health answers in about its timeout");

    drop(stalled);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, health) = app.get("/health").await;
        if status == 200 && health["status"] == "ok" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still not ok once the database answers: {health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    admin.close().await;
}

/// The outbox gap: an event whose transaction commits after a later-written
/// one is already read must still reach a reader paging by cursor, after it.
#[tokio::test]
async fn an_event_committed_late_is_not_skipped_by_a_reader() {
    let app = TestApp::spawn(&SPEC).await;
    let pool = sqlx::PgPool::connect(&app.database_url).await.unwrap();
    // A writer (another instance, say) appends first but commits last.
    let mut late = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (id, type, aggregate_id, trace_id, data) VALUES ($1, 'test.late', 'late', 'trace', '{}')",
    )
    .bind(uuid::Uuid::now_v7())
    .execute(&mut *late)
    .await
    .unwrap();
    let (status, _) = app.post("/customers", json!({ "name": "Early" }), None).await;
    assert_eq!(status, 201);
    let kinds = |page: &Value| -> Vec<String> {
        page["_embedded"]["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().into()).collect()
    };
    let (_, first) = app.get("/events?after=0").await;
    assert_eq!(kinds(&first), ["customer.created"], "only what committed: {first}");
    let cursor = first["cursor"].as_i64().unwrap();

    late.commit().await.unwrap();
    let (_, next) = app.get(&format!("/events?after={cursor}")).await;
    assert_eq!(kinds(&next), ["test.late"], "the late event comes after the cursor: {next}");
    assert!(next["cursor"].as_i64().unwrap() > cursor);
    let (_, all) = app.get("/events?after=0").await;
    assert_eq!(kinds(&all), ["customer.created", "test.late"], "in the order readers saw them: {all}");
    pool.close().await;
}

#[tokio::test]
async fn resources_are_hal_and_link_to_each_other() {
    let app = TestApp::spawn(&SPEC).await;
    let resp = app.http.post(app.url("/customers")).json(&json!({ "name": "Alice" })).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/hal+json");
    assert!(resp.headers().contains_key("x-trace-id"));
    let customer: Value = resp.json().await.unwrap();
    assert_eq!(link(&customer, "discovery"), format!("{}/", app.base));
    let (_, account) = app.post(&link(&customer, "open-account"), json!({}), None).await;
    assert_eq!(account["sort_code"], "04-00-04");
    assert_eq!(account["account_number"].as_str().unwrap().len(), 8);
    assert_eq!(account["balance"], json!({ "amount": 0, "currency": "GBP" }));
    assert_eq!(link(&account, "customer"), link(&customer, "self"));
    let (_, listed) = app.get(&link(&customer, "accounts")).await;
    assert_eq!(listed["_embedded"]["accounts"][0]["id"], account["id"]);
    // Found by its bank details, as an inbound payment would.
    let query = format!("/accounts?sort_code=04-00-04&account_number={}", account["account_number"].as_str().unwrap());
    let (status, found) = app.get(&query).await;
    assert_eq!(status, 200);
    assert_eq!(found["count"], 1);
}

#[tokio::test]
async fn a_credit_moves_money_once_per_idempotency_key() {
    let app = TestApp::spawn(&SPEC).await;
    let account = customer_with_account(&app, "Alice").await;
    let (status, first) = credit(&app, &account, 10_000, "credit-1").await;
    assert_eq!(status, 201, "{first}");
    let resp = app
        .http
        .post(link(&account, "credit"))
        .header("Idempotency-Key", "credit-1")
        .json(&json!({ "amount": 10_000, "currency": "GBP", "reference": "top up" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["idempotent-replayed"], "true");
    let replay: Value = resp.json().await.unwrap();
    assert_eq!(replay["id"], first["id"], "the repeat returns the first answer");
    assert_eq!(balance(&app, &account).await, (10_000, 10_000), "and moves nothing");
    let (_, txs) = app.get(&link(&account, "transactions")).await;
    assert_eq!(txs["count"], 1);
}

#[tokio::test]
async fn concurrent_repeats_of_one_key_credit_once() {
    let app = TestApp::spawn(&SPEC).await;
    let account = customer_with_account(&app, "Alice").await;
    let attempts = (0..8).map(|_| credit(&app, &account, 500, "same-key"));
    let results = futures::future::join_all(attempts).await;
    assert!(results.iter().all(|(s, _)| *s == 201), "{results:?}");
    let ids: std::collections::BTreeSet<String> = results.iter().map(|(_, b)| b["id"].to_string()).collect();
    assert_eq!(ids.len(), 1, "every repeat got the same answer");
    assert_eq!(balance(&app, &account).await.0, 500);
}

#[tokio::test]
async fn reusing_a_key_for_a_different_request_is_refused() {
    let app = TestApp::spawn(&SPEC).await;
    let account = customer_with_account(&app, "Alice").await;
    credit(&app, &account, 100, "k").await;
    let (status, problem) = credit(&app, &account, 200, "k").await;
    assert_eq!(status, 422);
    assert_eq!(problem["type"], "urn:problem:bank:idempotency-key-reused");
    assert_eq!(balance(&app, &account).await.0, 100);
}

#[tokio::test]
async fn bad_input_is_a_problem_and_changes_nothing() {
    let app = TestApp::spawn(&SPEC).await;
    let account = customer_with_account(&app, "Alice").await;
    let url = link(&account, "credit");
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({ "amount": 0, "currency": "GBP" }), 422, "invalid-amount"),
        (json!({ "amount": -100, "currency": "GBP" }), 422, "invalid-amount"),
        (json!({ "amount": 100, "currency": "XYZ" }), 422, "invalid-amount"),
        (json!({ "amount": 100, "currency": "EUR" }), 422, "currency-mismatch"),
        (json!({ "amount": 1.5, "currency": "GBP" }), 422, "invalid-body"),
        (json!({ "amount": 100 }), 422, "invalid-body"),
    ];
    for (i, (body, status, kind)) in cases.into_iter().enumerate() {
        let resp = app.http.post(&url).header("Idempotency-Key", format!("bad-{i}")).json(&body).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{body}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let problem: Value = resp.json().await.unwrap();
        assert_eq!(problem["type"], format!("urn:problem:bank:{kind}"), "{body}: {problem}");
        assert!(problem["detail"].as_str().unwrap().len() > 10, "the detail explains: {problem}");
    }
    // Malformed JSON, a missing key, an unknown account.
    let resp = app
        .http
        .post(&url)
        .header("Idempotency-Key", "m")
        .header("content-type", "application/json")
        .body("{\"amount\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let (status, problem) = app.post(&url, json!({ "amount": 100, "currency": "GBP" }), None).await;
    assert_eq!((status, problem["type"].as_str()), (400, Some("urn:problem:bank:missing-idempotency-key")));
    let unknown = format!("{}/accounts/{}/credits", app.base, uuid::Uuid::new_v4());
    let (status, problem) = app.post(&unknown, json!({ "amount": 100, "currency": "GBP" }), Some("u")).await;
    assert_eq!(status, 404, "{problem}");
    let (status, _) = app.get("/accounts/not-a-uuid").await;
    assert_eq!(status, 404);
    assert_eq!(balance(&app, &account).await, (0, 0), "nothing moved");
    let (_, events) = app.get("/events").await;
    let types: Vec<&str> =
        events["_embedded"]["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["customer.created", "account.opened"], "no event for refused requests");
}

#[tokio::test]
async fn holds_reserve_capture_and_release() {
    let app = TestApp::spawn(&SPEC).await;
    let account = customer_with_account(&app, "Alice").await;
    credit(&app, &account, 10_000, "c").await;
    let body = json!({ "amount": 2_500, "currency": "GBP", "reference": "to Bob" });
    let (status, hold) = app.post(&link(&account, "place-hold"), body.clone(), Some("h1")).await;
    assert_eq!(status, 201, "{hold}");
    assert_eq!(hold["status"], "held");
    assert_eq!(balance(&app, &account).await, (10_000, 7_500));
    let (status, captured) = app.post(&link(&hold, "capture"), json!(null), Some("cap1")).await;
    assert_eq!(status, 200, "{captured}");
    assert_eq!(captured["status"], "captured");
    assert!(captured["_links"].get("release").is_none(), "a settled hold advertises no actions");
    assert_eq!(balance(&app, &account).await, (7_500, 7_500));
    // Capturing again under a new key is a conflict, and moves nothing.
    let (status, problem) = app.post(&link(&hold, "capture"), json!(null), Some("cap2")).await;
    assert_eq!((status, problem["type"].as_str()), (409, Some("urn:problem:bank:hold-settled")));
    let (_, hold2) = app.post(&link(&account, "place-hold"), body, Some("h2")).await;
    let (status, released) = app.post(&link(&hold2, "release"), json!(null), Some("rel")).await;
    assert_eq!((status, released["status"].as_str()), (200, Some("released")));
    assert_eq!(balance(&app, &account).await, (7_500, 7_500));
}

#[tokio::test]
async fn a_hold_beyond_the_available_balance_is_refused() {
    let app = TestApp::spawn(&SPEC).await;
    let account = customer_with_account(&app, "Alice").await;
    credit(&app, &account, 1_000, "c").await;
    let (status, problem) =
        app.post(&link(&account, "place-hold"), json!({ "amount": 1_001, "currency": "GBP" }), Some("h")).await;
    assert_eq!(status, 422);
    assert_eq!(problem["type"], "urn:problem:bank:insufficient-funds");
    assert_eq!(problem["detail"], "insufficient funds: 10.01 GBP requested, 10.00 GBP available");
    assert_eq!(balance(&app, &account).await, (1_000, 1_000));
}

#[tokio::test]
async fn concurrent_holds_never_overdraw() {
    let app = TestApp::spawn(&SPEC).await;
    let account = customer_with_account(&app, "Alice").await;
    credit(&app, &account, 1_000, "c").await;
    let url = link(&account, "place-hold");
    let keys: Vec<String> = (0..10).map(|i| format!("hold-{i}")).collect();
    let attempts = keys.iter().map(|k| app.post(&url, json!({ "amount": 300, "currency": "GBP" }), Some(k)));
    let results = futures::future::join_all(attempts).await;
    let placed = results.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(placed, 3, "only three holds of 3.00 fit in 10.00");
    assert_eq!(balance(&app, &account).await, (1_000, 100));
}

#[tokio::test]
async fn concurrent_repeats_of_a_capture_all_get_its_answer() {
    // The repeats find the hold captured (their own work would be a 409
    // conflict) and the key taken: each replays the first answer instead.
    let app = TestApp::spawn(&SPEC).await;
    let account = customer_with_account(&app, "Alice").await;
    credit(&app, &account, 10_000, "c").await;
    let (_, hold) =
        app.post(&link(&account, "place-hold"), json!({ "amount": 2_500, "currency": "GBP" }), Some("h")).await;
    let capture = link(&hold, "capture");
    let attempts = (0..8).map(|_| app.post(&capture, json!(null), Some("cap")));
    let results = futures::future::join_all(attempts).await;
    assert!(results.iter().all(|(s, b)| *s == 200 && b["status"] == "captured"), "{results:?}");
    assert_eq!(balance(&app, &account).await, (7_500, 7_500), "debited once");
    let (_, txs) = app.get(&link(&account, "transactions")).await;
    assert_eq!(txs["count"], 2, "the credit and one debit");
}

#[tokio::test]
async fn concurrent_repeats_of_a_hold_place_it_once() {
    // A hold and its answer are one statement: the repeats fail on the key
    // (having waited for the first) or find the funds reserved, and replay.
    let app = TestApp::spawn(&SPEC).await;
    let account = customer_with_account(&app, "Alice").await;
    credit(&app, &account, 1_000, "c").await;
    let url = link(&account, "place-hold");
    let attempts = (0..8).map(|_| app.post(&url, json!({ "amount": 600, "currency": "GBP" }), Some("same-hold")));
    let results = futures::future::join_all(attempts).await;
    assert!(results.iter().all(|(s, _)| *s == 201), "{results:?}");
    let ids: std::collections::BTreeSet<String> = results.iter().map(|(_, b)| b["id"].to_string()).collect();
    assert_eq!(ids.len(), 1, "every repeat got the first hold");
    assert_eq!(balance(&app, &account).await, (1_000, 400), "reserved once");
    let (_, holds) = app.get(&link(&account, "holds")).await;
    assert_eq!(holds["count"], 1);
}

#[tokio::test]
async fn a_holds_answers_are_what_it_reads_and_its_capture_event_tells_the_balance_after() {
    // The answers are made before the statement that stores them: they must
    // read back the same, to the microsecond.
    let app = TestApp::spawn(&SPEC).await;
    let account = customer_with_account(&app, "Alice").await;
    credit(&app, &account, 10_000, "c").await;
    let (_, placed) =
        app.post(&link(&account, "place-hold"), json!({ "amount": 2_500, "currency": "GBP" }), Some("h")).await;
    let (_, read) = app.get(&link(&placed, "self")).await;
    assert_eq!(read, placed);
    let (_, captured) = app.post(&link(&placed, "capture"), json!(null), Some("cap")).await;
    let (_, read) = app.get(&link(&placed, "self")).await;
    assert_eq!(read, captured);
    assert_ne!(captured["updated_at"], placed["updated_at"]);
    let (_, txs) = app.get(&link(&account, "transactions")).await;
    let debit = &txs["_embedded"]["transactions"].as_array().unwrap().iter().find(|t| t["kind"] == "debit").unwrap();
    assert_eq!(debit["balance_after"], json!({ "amount": 7_500, "currency": "GBP" }));
    let (_, events) = app.get("/events").await;
    let event =
        events["_embedded"]["events"].as_array().unwrap().iter().find(|e| e["type"] == "hold.captured").unwrap();
    assert_eq!(event["data"]["balance_after"], debit["balance_after"], "{event}");
    assert_eq!(event["data"]["transaction"], debit["id"], "{event}");
}

#[tokio::test]
async fn a_hold_in_another_currency_is_refused_and_changes_nothing() {
    let app = TestApp::spawn(&SPEC).await;
    let account = customer_with_account(&app, "Alice").await;
    credit(&app, &account, 10_000, "c").await;
    let (status, problem) =
        app.post(&link(&account, "place-hold"), json!({ "amount": 100, "currency": "EUR" }), Some("h")).await;
    assert_eq!((status, problem["type"].as_str()), (422, Some("urn:problem:bank:currency-mismatch")), "{problem}");
    assert_eq!(balance(&app, &account).await, (10_000, 10_000));
    let (_, holds) = app.get(&link(&account, "holds")).await;
    assert_eq!(holds["count"], 0);
}

#[tokio::test]
async fn the_event_log_pages_by_cursor_and_long_polls() {
    let app = TestApp::spawn(&SPEC).await;
    let account = customer_with_account(&app, "Alice").await;
    let (_, page) = app.get("/events?limit=1").await;
    assert_eq!(page["count"], 1);
    let first = &page["_embedded"]["events"][0];
    assert_eq!(first["type"], "customer.created");
    for field in ["id", "aggregate_id", "occurred_at", "trace_id", "data"] {
        assert!(!first[field].is_null(), "envelope has {field}");
    }
    let (_, next) = app.get(&link(&page, "next")).await;
    assert_eq!(next["_embedded"]["events"][0]["type"], "account.opened");
    // A reader waiting at the end sees the next event as soon as it is written.
    let cursor = next["cursor"].as_i64().unwrap();
    let waiting = {
        let http = app.http.clone();
        let url = app.url(&format!("/events?after={cursor}&wait=10"));
        tokio::spawn(async move { http.get(url).send().await.unwrap().json::<Value>().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "the long poll waits while there is nothing new");
    credit(&app, &account, 100, "c").await;
    let got = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("woken by the append").unwrap();
    assert_eq!(got["_embedded"]["events"][0]["type"], "account.credited");
    let (status, _) = app.get("/events?limit=0").await;
    assert_eq!(status, 400);
    let (status, _) = app.get("/events?after=abc").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn the_trace_id_travels_from_request_to_event() {
    let app = TestApp::spawn(&SPEC).await;
    let resp = app
        .http
        .post(app.url("/customers"))
        .header("x-trace-id", "trace-abc-123")
        .json(&json!({ "name": "Trace" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-trace-id"], "trace-abc-123");
    let (_, events) = app.get("/events").await;
    assert_eq!(events["_embedded"]["events"][0]["trace_id"], "trace-abc-123");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let app = TestApp::spawn(&SPEC).await;
    app.get("/ping").await;
    app.get("/customers/nope").await;
    let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        text.contains("http_requests_total{service=\"accounts\",method=\"GET\",route=\"/ping\",status=\"200\"}"),
        "{text}"
    );
    assert!(text.contains("route=\"/customers/{id}\",status=\"404\""), "{text}");
    assert!(text.contains("http_request_duration_seconds"), "{text}");
}

#[tokio::test]
async fn health_is_503_with_a_reason_when_the_database_is_gone() {
    let app = TestApp::spawn(&SPEC).await;
    let db = app.database_url.rsplit('/').next().unwrap().to_string();
    let admin = app.database_url.replace(&format!("/{db}"), "/postgres");
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {db} WITH (FORCE)"))).execute(&pool).await.unwrap();
    let (status, health) = app.get("/health").await;
    assert_eq!(status, 503);
    assert_eq!(health["status"], "down");
    assert!(health["checks"]["database"]["reason"].as_str().unwrap().contains("database"), "{health}");
}
