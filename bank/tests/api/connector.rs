//! The connector against a real broker: every event of a service's log reaches
//! `<service>.events`, in order, keyed by aggregate id, and a restart loses none.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::{TestApp, broker, link, read_topic};

async fn events_of(app: &TestApp) -> Vec<Value> {
    let (_, page) = app.get("/events?limit=1000").await;
    page["_embedded"]["events"].as_array().unwrap().clone()
}

async fn some_activity(accounts: &TestApp, n: usize) {
    for i in 0..n {
        let (_, customer) = accounts.post("/customers", json!({ "name": format!("C{i}") }), None).await;
        let (_, account) = accounts.post(&link(&customer, "open-account"), json!({}), None).await;
        let body = json!({ "amount": 100, "currency": "GBP" });
        accounts.post(&link(&account, "credit"), body, Some(&format!("k{i}"))).await;
    }
}

fn connector_vars(accounts: &TestApp, brokers: &str, topic_prefix: &str) -> Vec<(&'static str, String)> {
    vec![("CONNECT_SOURCES", format!("{topic_prefix}={}", accounts.base)), ("KAFKA_BROKERS", brokers.to_string())]
}

#[tokio::test]
async fn every_event_reaches_its_topic_in_order_with_key_and_headers() {
    let brokers = broker();
    let accounts = TestApp::spawn(&bank::accounts::SPEC).await;
    some_activity(&accounts, 2).await;
    // A source name unique to this test, so its topic is too.
    let source = format!("accounts-{}", uuid::Uuid::new_v4().simple());
    let connector =
        TestApp::spawn_with(&bank::connector::SPEC, &connector_vars(&accounts, &brokers, &source), None).await;
    let logged = events_of(&accounts).await;
    assert_eq!(logged.len(), 6);
    let topic = format!("{source}.events");
    let seen = read_topic(&brokers, &topic, |m| m.len() >= 6).await;
    let ids: Vec<&Value> = seen.iter().map(|m| &m.payload["id"]).collect();
    let expected: Vec<&Value> = logged.iter().map(|e| &e["id"]).collect();
    assert_eq!(ids, expected, "published in log order");
    for (m, e) in seen.iter().zip(&logged) {
        assert_eq!(m.key, e["aggregate_id"].as_str().unwrap());
        assert_eq!(m.headers["event_id"], e["id"].as_str().unwrap());
        assert_eq!(m.headers["event_type"], e["type"].as_str().unwrap());
        assert_eq!(m.headers["trace_id"], e["trace_id"].as_str().unwrap());
    }
    // Events written later arrive too (the connector long-polls the log).
    some_activity(&accounts, 1).await;
    read_topic(&brokers, &topic, |m| m.len() >= 9).await;
    let (_, health) = connector.get("/health").await;
    assert_eq!(health["checks"]["kafka"]["status"], "ok", "{health}");
    let (_, sources) = connector.get("/sources").await;
    assert_eq!(sources["_embedded"]["sources"][0]["lag"], 0, "{sources}");
}

#[tokio::test]
async fn a_restarted_connector_resumes_without_losing_events() {
    let brokers = broker();
    let accounts = TestApp::spawn(&bank::accounts::SPEC).await;
    let source = format!("accounts-{}", uuid::Uuid::new_v4().simple());
    let vars = connector_vars(&accounts, &brokers, &source);
    let topic = format!("{source}.events");
    some_activity(&accounts, 2).await;
    let first = TestApp::spawn_with(&bank::connector::SPEC, &vars, None).await;
    read_topic(&brokers, &topic, |m| m.len() >= 6).await;
    let db = first.database_url.clone();
    first.stop().await;
    // Written while no connector runs.
    some_activity(&accounts, 2).await;
    let _second = TestApp::spawn_with(&bank::connector::SPEC, &vars, Some(db)).await;
    let logged: BTreeSet<String> =
        events_of(&accounts).await.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    let seen = read_topic(&brokers, &topic, |m| {
        let ids: BTreeSet<String> = m.iter().map(|m| m.payload["id"].as_str().unwrap_or("").to_string()).collect();
        logged.is_subset(&ids)
    })
    .await;
    // At-least-once: nothing lost; a redelivered tail is allowed but bounded by one page.
    assert!(seen.len() >= logged.len() && seen.len() <= logged.len() + 100, "{} for {}", seen.len(), logged.len());
}

#[tokio::test]
async fn a_connector_without_its_settings_refuses_to_start_and_says_which() {
    let config = bank::kit::Config::new("127.0.0.1:0".parse().unwrap(), crate::helpers::fresh_database().await);
    let err = bank::kit::Application::build(&bank::connector::SPEC, config, Default::default()).await.unwrap_err();
    assert!(format!("{err:#}").contains("CONNECT_SOURCES is not set"), "{err:#}");
}
