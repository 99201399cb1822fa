//! The bank's trust boundaries, tried as an attacker would: each test sends
//! what a hostile or careless client sends and checks both the refusal and
//! that nothing changed (balances, holds, payments, top-ups, events).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use crate::fixture::{Bank, SECRET};
use crate::helpers::{TestApp, link};

/// Everything a test could have changed: the account's balance and
/// availability, and how many events each service has written.
async fn footprint(bank: &Bank, account: &Value) -> (i64, i64, usize, usize, usize, usize) {
    let (balance, available) = bank.balance(account).await;
    let events = |app: &TestApp| {
        let url = app.url("/events?limit=1000");
        async move {
            let page: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
            page["_embedded"]["events"].as_array().map_or(0, Vec::len)
        }
    };
    (
        balance,
        available,
        events(&bank.accounts).await,
        events(&bank.payments).await,
        events(&bank.topups).await,
        events(&bank.gateway).await,
    )
}

fn inbound_for(account: &Value, pence: i64) -> String {
    json!({
        "type": "payment.received",
        "scheme_id": format!("forged-{}", uuid::Uuid::new_v4().simple()),
        "to": { "name": "Alice", "sort_code": account["sort_code"], "account_number": account["account_number"] },
        "from": { "name": "Mallory", "sort_code": "20-00-00", "account_number": "66666666" },
        "amount": { "amount": pence, "currency": "GBP" },
    })
    .to_string()
}

async fn post_raw(url: &str, body: &str, signature: Option<String>) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(url).header("content-type", "application/json").body(body.to_string());
    if let Some(s) = signature {
        req = req.header(wire::SIGNATURE_HEADER, s);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = r.json().await.unwrap_or(Value::Null);
    if status >= 400 {
        assert_eq!(content_type, "application/problem+json", "{status} {body}");
    }
    (status, body)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test]
async fn an_unsigned_inbound_payment_moves_no_money_through_the_proxy_or_at_the_service() {
    let bank = Bank::start().await;
    let alice = bank.customer_with("Alice", 10_000).await;
    let before = footprint(&bank, &alice).await;
    let body = inbound_for(&alice, 777_777);
    let hook = "/webhooks/payment-scheme";
    // Through the gateway's generic proxy, to the service's own webhook route.
    let (status, problem) = post_raw(&format!("{}/payments{hook}", bank.gateway.base), &body, None).await;
    assert_eq!(status, 404, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("does not proxy a service's webhook routes"), "{problem}");
    let encoded = format!("{}/payments/%77ebhooks/payment-scheme", bank.gateway.base);
    assert_ne!(post_raw(&encoded, &body, None).await.0, 200, "an escaped letter does not open the route");
    // At the gateway's own webhook route and straight at the service's port:
    // unsigned, signed with another secret, stale, and a good signature of
    // another body (a replay with the body changed).
    let direct = format!("{}{hook}", bank.payments.base);
    let edge = format!("{}{hook}", bank.gateway.base);
    let other_body = inbound_for(&alice, 1);
    let forgeries = [
        None,
        Some(wire::sign(b"not-the-secret", now(), body.as_bytes())),
        Some(wire::sign(SECRET.as_bytes(), now() - 3_600, body.as_bytes())),
        Some(wire::sign(SECRET.as_bytes(), now(), other_body.as_bytes())),
        Some("t=1,v1=zz".to_string()),
    ];
    for url in [&direct, &edge] {
        for signature in &forgeries {
            let (status, problem) = post_raw(url, &body, signature.clone()).await;
            assert_eq!(status, 401, "{url} with {signature:?}: {problem}");
            assert_eq!(problem["type"], "urn:problem:bank:unauthorized");
        }
    }
    // The card acquirer's route on top-ups, straight at its port.
    let charge = json!({ "type": "charge.succeeded", "charge_id": uuid::Uuid::new_v4(), "acquirer_id": "ch_forged",
                         "status": "succeeded", "amount": { "amount": 777_777, "currency": "GBP" }, "card_token": "tok_visa" });
    let (status, _) =
        post_raw(&format!("{}/webhooks/card-acquirer", bank.topups.base), &charge.to_string(), None).await;
    assert_eq!(status, 401);
    let (status, _) =
        post_raw(&format!("{}/topups/webhooks/card-acquirer", bank.gateway.base), &charge.to_string(), None).await;
    assert_eq!(status, 404);
    assert_eq!(footprint(&bank, &alice).await, before, "nothing recorded, no money moved");
    // The same body, signed as the scheme signs, is believed at the service itself.
    let signed = Some(wire::sign(SECRET.as_bytes(), now(), body.as_bytes()));
    let (status, answer) = post_raw(&direct, &body, signed).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(bank.balance(&alice).await.0, 10_000 + 777_777);
}

/// A stranger's HAL server that agrees to everything: every request counted,
/// answered 201 with links back to itself.
async fn stranger() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (counted, me) = (hits.clone(), base.clone());
    let app = axum::Router::new().fallback(move || {
        let (hits, me) = (counted.clone(), me.clone());
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            let hal = json!({ "currency": "GBP", "status": "held", "_links": {
                "self": { "href": format!("{me}/holds/1") }, "place-hold": { "href": format!("{me}/holds") },
                "capture": { "href": format!("{me}/capture") }, "credit": { "href": format!("{me}/credit") } } });
            (axum::http::StatusCode::CREATED, axum::Json(hal))
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, hits)
}

#[tokio::test]
async fn an_account_that_is_not_this_banks_is_refused_and_never_called() {
    let bank = Bank::start().await;
    let alice = bank.customer_with("Alice", 10_000).await;
    let (evil, hits) = stranger().await;
    let alice_id = alice["id"].as_str().unwrap();
    let before = footprint(&bank, &alice).await;
    for from in [
        format!("{evil}/accounts/{alice_id}"),
        format!("{evil}/accounts/accounts/{alice_id}"),
        "file:///etc/passwd".to_string(),
        format!("{}/metrics", bank.accounts.base),
        format!("{}/metrics", bank.payments.base),
        format!("{}/accounts/{alice_id}/../../metrics", bank.accounts.base),
        format!("{}/accounts/{alice_id}?x=1", bank.accounts.base),
        format!("{}@127.0.0.2/accounts/{alice_id}", bank.accounts.base),
    ] {
        let body = json!({ "from": from, "to": { "name": "Bob", "sort_code": "20-00-00", "account_number": "12345678" },
                           "amount": { "amount": 2_500, "currency": "GBP" }, "reference": "rent" });
        let (status, problem) = bank.payments.post("/payments", body, Some(&uuid::Uuid::new_v4().to_string())).await;
        assert_eq!(status, 422, "{from}: {problem}");
        assert_eq!(problem["type"], "urn:problem:bank:invalid-account", "{from}: {problem}");
        assert!(problem["detail"].as_str().unwrap().starts_with("`from` must be the URL of an account of this bank"));
        let body =
            json!({ "account": from, "card_token": "tok_visa", "amount": { "amount": 2_500, "currency": "GBP" } });
        let (status, problem) = bank.topups.post("/topups", body, Some(&uuid::Uuid::new_v4().to_string())).await;
        assert_eq!(status, 422, "{from}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().starts_with("`account` must be the URL of an account of this bank")
        );
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the stranger's server was never called");
    let (_, payments) = bank.payments.get("/payments").await;
    assert_eq!(payments["_embedded"]["payments"].as_array().map_or(0, Vec::len), 0, "{payments}");
    let (_, topups) = bank.topups.get("/topups").await;
    assert_eq!(topups["_embedded"]["topups"].as_array().map_or(0, Vec::len), 0, "{topups}");
    assert_eq!(footprint(&bank, &alice).await, before);
    // Through the gateway, the gateway's own form of the account is the bank's.
    let through = format!("{}/accounts/accounts/{alice_id}", bank.gateway.base);
    let body = json!({ "from": through, "to": { "name": "Bob", "sort_code": "20-00-00", "account_number": "12345678" },
                       "amount": { "amount": 2_500, "currency": "GBP" }, "reference": "rent" });
    let (status, payment) = bank.gateway.post("/payments/payments", body, Some("through-the-gateway")).await;
    assert_eq!(status, 202, "{payment}");
    assert_eq!(bank.finished(&payment).await["status"], "completed");
}

#[tokio::test]
async fn nothing_a_client_sends_gets_a_5xx_and_a_refusal_changes_nothing() {
    let bank = Bank::start().await;
    let alice = bank.customer_with("Alice", 10_000).await;
    let before = footprint(&bank, &alice).await;
    let pay = |reference: Value, amount: Value| {
        json!({ "from": link(&alice, "self"), "to": { "name": "Bob", "sort_code": "20-00-00", "account_number": "12345678" },
                "amount": { "amount": amount, "currency": "GBP" }, "reference": reference })
    };
    let cases = [
        (pay(json!("a\u{0}b"), json!(100)), "invalid-text", "`reference` holds a control character (U+0000)"),
        (pay(json!("line\nbreak"), json!(100)), "invalid-text", "`reference` holds a control character (U+000A)"),
        (pay(json!("rent"), json!(1_000_000_000_001_i64)), "invalid-amount", "at most 1000000000000"),
        (pay(json!("rent"), json!(9_223_372_036_854_775_808_u64)), "invalid-body", "does not fit"),
        (pay(json!("rent"), json!(2.5)), "invalid-body", "does not fit"),
        (pay(json!("x".repeat(19)), json!(100)), "invalid-reference", "at most 18 characters"),
    ];
    for (body, kind, says) in cases {
        let (status, problem) = bank.payments.post("/payments", body.clone(), Some("k")).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(problem["type"], format!("urn:problem:bank:{kind}"), "{body}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains(says), "{body}: {problem}");
    }
    // An escape sequence in a name, a NUL in a reference, an over-long name.
    let (status, problem) = bank.accounts.post("/customers", json!({ "name": "Eve\u{1b}[2J" }), None).await;
    assert_eq!((status, problem["type"].as_str().unwrap()), (422, "urn:problem:bank:invalid-text"), "{problem}");
    let (status, problem) = bank
        .accounts
        .post(&link(&alice, "credit"), json!({ "amount": 1, "currency": "GBP", "reference": "\u{0}" }), Some("c"))
        .await;
    assert_eq!(status, 422, "{problem}");
    let (status, problem) = bank.accounts.post("/customers", json!({ "name": "x".repeat(201) }), None).await;
    assert_eq!(status, 422, "{problem}");
    // A NUL where no body is parsed: in a query PostgreSQL would refuse.
    for url in
        [format!("{}/payments?account=%00", bank.payments.base), format!("{}/topups?account=a%00b", bank.topups.base)]
    {
        let r = reqwest::get(&url).await.unwrap();
        assert!(r.status().is_client_error(), "{url}: {}", r.status());
    }
    // Encoded steps out of a service's path through the gateway.
    // (Sent byte for byte: an HTTP client would resolve the dots itself.)
    for path in
        ["/accounts/..%2f..%2fmetrics", "/accounts/%2e%2e/metrics", "/accounts/x%5c..%5cmetrics", "/accounts/%2E%2e"]
    {
        let answer = raw_get(&bank.gateway.base, path).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains("urn:problem:bank:bad-path"), "{path}: {answer}");
    }
    assert_eq!(footprint(&bank, &alice).await, before, "no refusal changed anything");
}

/// `GET path` with the path exactly as given; the whole answer.
async fn raw_get(base: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://")).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}
