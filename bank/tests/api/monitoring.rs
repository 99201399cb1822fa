//! Monitoring against a real broker and the screening vendor mock: events in,
//! suspicious-transaction alerts out, each transaction screened once.

use std::time::Duration;

use serde_json::{Value, json};
use wire::payloads::{Amount, Details, Payload, PaymentCreated};

use crate::fixture::{journal, set_fault};
use crate::helpers::{TestApp, broker, link};

struct Monitor {
    app: TestApp,
    vendor: harness::providers::Running,
    topic: String,
}

impl Monitor {
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// With `settings` beyond the test's own.
    async fn start_with(settings: &[(&str, String)]) -> Self {
        Self::start_on(settings, None, &uuid::Uuid::new_v4().simple().to_string()).await
    }

    /// On `database_url` (a restart on its data), reading the topics named by `unique`.
    async fn start_on(settings: &[(&str, String)], database_url: Option<String>, unique: &str) -> Self {
        let brokers = broker();
        let spec = harness::providers::Spec::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/providers/screening-vendor.yaml"),
        )
        .unwrap();
        let vendor = harness::providers::serve(spec, std::net::TcpListener::bind("127.0.0.1:0").unwrap(), None, b"")
            .await
            .unwrap();
        let topic = format!("payments-{unique}.events");
        let app = TestApp::spawn_with(
            &bank::monitoring::SPEC,
            &[
                &[
                    ("KAFKA_BROKERS", brokers.clone()),
                    ("SCREENING_URL", vendor.uri()),
                    ("PAYMENTS_TOPIC", topic.clone()),
                    ("TOPUPS_TOPIC", format!("topups-{unique}.events")),
                    ("CONSUMER_GROUP", format!("monitoring-{unique}")),
                ],
                settings,
            ]
            .concat(),
            database_url,
        )
        .await;
        Self { app, vendor, topic }
    }

    /// Publish a `payment.created` as the connector would; returns the payment URL.
    async fn payment(&self, account: &str, to_account: &str, pence: i64, name: &str) -> String {
        let payment = format!("http://payments.test/payments/{}", uuid::Uuid::new_v4());
        let data = json!({
            "payment": payment,
            "debtor_account": account,
            "to": { "name": name, "sort_code": "20-00-00", "account_number": to_account },
            "amount": { "amount": pence, "currency": "GBP" },
            "reference": "test",
        });
        self.publish(wire::Envelope {
            id: uuid::Uuid::now_v7(),
            kind: "payment.created".into(),
            aggregate_id: payment.clone(),
            occurred_at: time::OffsetDateTime::now_utc(),
            trace_id: "trace-monitoring-test".into(),
            data,
        })
        .await;
        payment
    }

    async fn publish(&self, envelope: wire::Envelope) {
        crate::helpers::publish(&self.topic, &envelope).await;
    }

    /// A `payment.created` envelope for a large payment (it raises an alert).
    fn large_payment() -> (String, wire::Envelope) {
        let payment = format!("http://payments.test/payments/{}", uuid::Uuid::new_v4());
        let data = PaymentCreated {
            payment: payment.clone(),
            debtor_account: account(),
            to: Details { name: "Bob".into(), sort_code: "20-00-00".into(), account_number: "12345678".into() },
            amount: Amount { amount: 900_000, currency: "GBP".into() },
            reference: String::new(),
        };
        let envelope = wire::Envelope {
            id: uuid::Uuid::now_v7(),
            kind: PaymentCreated::TYPE.into(),
            aggregate_id: payment.clone(),
            occurred_at: time::OffsetDateTime::now_utc(),
            trace_id: "trace-monitoring-test".into(),
            data: serde_json::to_value(data).unwrap(),
        };
        (payment, envelope)
    }

    async fn alerts_for(&self, transaction: &str) -> Vec<Value> {
        let (_, page) = self.app.get(&format!("/alerts?transaction={}", crate::fixture::urlencode(transaction))).await;
        page["_embedded"]["alerts"].as_array().cloned().unwrap_or_default()
    }

    /// Wait until `transaction` has an alert.
    async fn alert(&self, transaction: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(a) = self.alerts_for(transaction).await.first() {
                return a.clone();
            }
            assert!(tokio::time::Instant::now() < deadline, "no alert for {transaction}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn account() -> String {
    format!("http://accounts.test/accounts/{}", uuid::Uuid::new_v4())
}

fn reasons(alert: &Value) -> String {
    alert["reasons"].to_string()
}

#[tokio::test]
async fn a_large_payment_raises_an_alert_and_a_small_one_does_not() {
    let m = Monitor::start().await;
    let alice = account();
    let small = m.payment(&alice, "11111111", 2_500, "Bob").await;
    let large = m.payment(&alice, "11111111", 600_000, "Bob").await;
    let alert = m.alert(&large).await;
    assert!(reasons(&alert).contains("large amount: £6000.00 is at or over £5000.00"), "{alert}");
    assert_eq!(alert["status"], "open");
    // One partition, in order: the small one was screened before the large one.
    assert!(m.alerts_for(&small).await.is_empty());
    let (_, health) = m.app.get("/health").await;
    assert_eq!(health["checks"]["consumer"]["status"], "ok");
}

#[tokio::test]
async fn velocity_and_new_payee_rules_raise_alerts() {
    let m = Monitor::start().await;
    let alice = account();
    m.payment(&alice, "22222221", 1_000, "P1").await;
    m.payment(&alice, "22222222", 1_000, "P2").await;
    let third = m.payment(&alice, "22222223", 1_000, "P3").await;
    assert!(reasons(&m.alert(&third).await).contains("velocity: 3 payments from this account within 60 s"));
    let bob = account();
    let first = m.payment(&bob, "33333333", 150_000, "Carol").await;
    assert!(reasons(&m.alert(&first).await).contains("new payee: first payment to this payee is £1500.00"));
    let again = m.payment(&bob, "33333333", 150_000, "Carol").await;
    let marker = m.payment(&bob, "33333339", 700_000, "Dan").await;
    m.alert(&marker).await;
    assert!(m.alerts_for(&again).await.is_empty(), "a known payee is not new");
}

#[tokio::test]
async fn a_high_vendor_score_raises_an_alert() {
    let m = Monitor::start().await;
    let payment = m.payment(&account(), "44444444", 1_000, "Sanctioned").await;
    let alert = m.alert(&payment).await;
    assert!(reasons(&alert).contains("screening vendor scored the transaction 97"), "{alert}");
}

#[tokio::test]
async fn a_vendor_outage_delays_screening_but_skips_nothing() {
    let m = Monitor::start().await;
    let alice = account();
    set_fault(&m.vendor, json!({ "kind": "unavailable", "scope": alice, "remaining": 3 })).await;
    let large = m.payment(&alice, "55555555", 900_000, "Bob").await;
    m.alert(&large).await;
    let statuses: Vec<u64> = journal(&m.vendor, &alice).await.iter().map(|e| e["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses[..3], [503, 503, 503]);
    assert_eq!(statuses.last(), Some(&200));
}

#[tokio::test]
async fn a_redelivered_event_is_screened_once() {
    let m = Monitor::start().await;
    let alice = account();
    let payment = format!("http://payments.test/payments/{}", uuid::Uuid::new_v4());
    let envelope = wire::Envelope {
        id: uuid::Uuid::now_v7(),
        kind: PaymentCreated::TYPE.into(),
        aggregate_id: payment.clone(),
        occurred_at: time::OffsetDateTime::now_utc(),
        trace_id: "t".into(),
        data: serde_json::to_value(PaymentCreated {
            payment: payment.clone(),
            debtor_account: alice.clone(),
            to: Details { name: "Bob".into(), sort_code: "20-00-00".into(), account_number: "66666666".into() },
            amount: Amount { amount: 800_000, currency: "GBP".into() },
            reference: String::new(),
        })
        .unwrap(),
    };
    m.publish(envelope.clone()).await;
    m.publish(envelope).await;
    let marker = m.payment(&alice, "66666660", 900_000, "Dan").await;
    m.alert(&marker).await;
    assert_eq!(m.alerts_for(&payment).await.len(), 1);
}

#[tokio::test]
async fn a_consumer_resuming_inside_a_batch_acts_on_the_rest_of_it() {
    // The embedded broker serves a fetch from the first batch starting at or
    // after the offset asked for: a consumer resuming at offset 5 of a batch
    // of ten would skip 5 to 9 unless it asks from earlier and skips instead.
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let first = Monitor::start_on(&[], None, &unique).await;
    let (database_url, topic) = (first.app.database_url.clone(), first.topic.clone());
    first.app.stop().await;
    let payments: Vec<(String, wire::Envelope)> = (0..10).map(|_| Monitor::large_payment()).collect();
    // All ten in one produce batch (offsets 0 to 9).
    let producer: rdkafka::producer::FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", broker()).set("linger.ms", "200").create().unwrap();
    let sends = payments.iter().map(|(_, e)| {
        let payload = serde_json::to_vec(e).unwrap();
        let producer = producer.clone();
        let (topic, key) = (topic.clone(), e.aggregate_id.clone());
        async move {
            let record = rdkafka::producer::FutureRecord::to(&topic).key(&key).payload(&payload);
            producer.send(record, Duration::from_secs(10)).await.map(|d| d.offset).unwrap()
        }
    });
    let offsets = futures::future::join_all(sends).await;
    assert_eq!(offsets, (0..10).collect::<Vec<i64>>());
    // As if the service had acted on the first five and stopped.
    let db = sqlx::PgPool::connect(&database_url).await.unwrap();
    sqlx::query("INSERT INTO consumer_positions (topic, partition, next_offset) VALUES ($1, 0, 5)")
        .bind(&topic)
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    let m = Monitor::start_on(&[], Some(database_url), &unique).await;
    let (marker, envelope) = Monitor::large_payment();
    m.publish(envelope).await;
    m.alert(&marker).await;
    for (i, (payment, _)) in payments.iter().enumerate() {
        let alerts = m.alerts_for(payment).await.len();
        assert_eq!(alerts, usize::from(i >= 5), "payment {i}: acted on from the stored position on, not before");
    }
}

#[tokio::test]
async fn an_alert_is_closed_with_an_outcome_once() {
    let m = Monitor::start().await;
    let payment = m.payment(&account(), "77777777", 900_000, "Bob").await;
    let alert = m.alert(&payment).await;
    let (status, closed) = m.app.post(&link(&alert, "close"), json!({ "outcome": "false_positive" }), None).await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!((closed["status"].as_str(), closed["outcome"].as_str()), (Some("closed"), Some("false_positive")));
    let (status, problem) = m.app.post(&link(&alert, "close"), json!({ "outcome": "confirmed_fraud" }), None).await;
    assert_eq!((status, problem["type"].as_str()), (409, Some("urn:problem:bank:alert-closed")));
    let (_, open) = m.app.get("/alerts?status=open").await;
    assert_eq!(open["count"], 0);
}

#[tokio::test]
async fn a_slow_vendor_never_starves_the_monitoring_service() {
    // Calls to the vendor may take 5 s: its 3 s answers are waited for.
    let m = Monitor::start_with(&[("SCREENING_TIMEOUT_MS", "5000".into())]).await;
    let alice = account();
    // Alerts to close (the service's writes) while the vendor is slow.
    let mut closes = Vec::new();
    for i in 0..60 {
        let payment = m.payment(&alice, &format!("{:08}", 50_000_000 + i), 600_000, "Mallory").await;
        closes.push(link(&m.alert(&payment).await, "close"));
    }
    set_fault(&m.vendor, json!({ "kind": "slow", "delay_ms": 3_000 })).await;
    let mut pending = Vec::new();
    for i in 0..30 {
        pending.push(m.payment(&alice, &format!("{:08}", 60_000_000 + i), 600_000, "Trudy").await);
    }
    crate::fixture::wait_for_requests(&m.vendor, 61).await;
    let close = |i: usize| {
        let (app, url) = (&m.app, closes[i].clone());
        async move { app.post(&url, json!({ "outcome": "false_positive" }), None).await.0 }
    };
    crate::fixture::stays_up_while_slow(&m.app, "screening-vendor", "/alerts", close).await;
    crate::fixture::clear_faults(&m.vendor).await;
    for payment in &pending {
        m.alert(payment).await;
        assert_eq!(m.alerts_for(payment).await.len(), 1, "{payment} screened once");
    }
}
