//! Every service's OpenAPI document: made from its routes, served at
//! `/openapi.json` and linked from its front page, and true to what the
//! service answers. (Every answer `TestApp::get` and `post` return in every
//! test is checked against the service's document too.)

use serde_json::{Value, json};

use crate::fixture::Bank;
use crate::helpers::{TestApp, link};

/// Each documented operation, called with ids that name nothing and an empty
/// body: each answers, with a status its document lists and a body its
/// schema allows, and none falls through to "no such route" (404 for a
/// path, 405 for a method).
async fn every_operation_is_served_as_documented(app: &TestApp, document: &Value) {
    let operations = app.contract.operations();
    assert!(operations.len() >= 7, "{operations:?}");
    for operation in operations {
        let (method, template) = operation.split_once(' ').unwrap();
        let path: String = template
            .split('/')
            .map(|s| if s.starts_with('{') { uuid::Uuid::now_v7().to_string() } else { s.to_string() })
            .collect::<Vec<_>>()
            .join("/");
        let request = match method {
            "GET" => app.http.get(app.url(&path)),
            "POST" => app.http.post(app.url(&path)).json(&json!({})).header("Idempotency-Key", "probe"),
            other => panic!("{other} {template}: a method the bank does not use"),
        };
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        assert_ne!(status, 405, "{operation}: documented, but the method is not routed");
        assert!(
            !(status == 404 && body["detail"] == "resource not found"),
            "{operation}: documented, but no route serves the path"
        );
        app.keeps_its_contract(method, &path, (status, body));
    }
    assert_eq!(document["openapi"], "3.1.0");
}

#[tokio::test]
async fn every_service_serves_its_document_and_keeps_to_it() {
    let bank = Bank::start().await;
    for app in [&bank.accounts, &bank.payments, &bank.topups] {
        let (status, root) = app.get("/").await;
        assert_eq!(status, 200);
        assert_eq!(root["_links"]["openapi"]["type"], "application/json", "{root}");
        let (status, document) = app.get(&link(&root, "openapi")).await;
        assert_eq!(status, 200, "{document}");
        for path in ["/", "/health", "/events", "/openapi.json", "/contracts/events", "/metrics"] {
            assert!(document["paths"][path].is_object(), "{}: the kit's {path} is documented", root["service"]);
        }
        // Every route the service serves is in its document.
        assert!(app.paths.len() >= 8, "{:?}", app.paths);
        for path in &app.paths {
            let described = document["paths"][path].as_object().is_some_and(|item| !item.is_empty());
            assert!(described, "{}: {path} is served but its document describes no operation there", root["service"]);
        }
        assert_eq!(document["paths"].as_object().unwrap().len(), app.paths.len(), "{}", root["service"]);
        every_operation_is_served_as_documented(app, &document).await;
    }
    // What a route takes and gives, from its types: limits, formats, headers.
    let (_, accounts) = bank.accounts.get("/openapi.json").await;
    let hold = &accounts["paths"]["/accounts/{id}/holds"]["post"];
    let key = hold["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "Idempotency-Key").unwrap();
    assert_eq!((key["in"].as_str(), key["required"].as_bool()), (Some("header"), Some(true)));
    let statuses: Vec<&String> = hold["responses"].as_object().unwrap().keys().collect();
    assert_eq!(statuses, ["201", "400", "404", "409", "415", "422", "503"]);
    let (_, payments) = bank.payments.get("/openapi.json").await;
    let schemas = &payments["components"]["schemas"];
    assert_eq!(schemas["Party"]["properties"]["sort_code"]["pattern"], "^[0-9]{2}-?[0-9]{2}-?[0-9]{2}$");
    assert_eq!(schemas["NewPayment"]["properties"]["reference"]["maxLength"], 18);
    assert_eq!(schemas["MoneyInput"]["properties"]["amount"]["minimum"], 1);
    assert_eq!(schemas["Problem"]["properties"]["status"]["minimum"], 400);
}

/// The gateway's document is the bank's: every service's operations under
/// its prefix (its webhook routes left out: the gateway does not proxy
/// them), and the gateway's own.
#[tokio::test]
async fn the_gateway_serves_the_whole_banks_document() {
    let bank = Bank::start().await;
    let (status, document) = bank.gateway.get("/openapi.json").await;
    assert_eq!(status, 200, "{document}");
    let paths = document["paths"].as_object().unwrap();
    for service in [&bank.accounts, &bank.payments, &bank.topups] {
        let (_, theirs) = service.get("/openapi.json").await;
        let (_, root) = service.get("/").await;
        let name = root["service"].as_str().unwrap();
        for (path, item) in theirs["paths"].as_object().unwrap() {
            let through = format!("/{name}{path}");
            if path.starts_with("/webhooks/") {
                assert!(!paths.contains_key(&through), "{through}: the gateway does not proxy webhooks");
                continue;
            }
            let methods: Vec<&String> = item.as_object().unwrap().keys().collect();
            let seen: Vec<&String> = paths[&through].as_object().unwrap().keys().collect();
            assert_eq!(methods, seen, "{through}");
        }
    }
    assert!(paths["/webhooks/{provider}"]["post"].is_object());
    let mut ids: Vec<&str> = paths
        .values()
        .flat_map(|i| i.as_object().unwrap().values())
        .map(|o| o["operationId"].as_str().unwrap())
        .collect();
    let all = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all, "operation ids are unique across the bank");
    // Through the gateway, as a client of the bank sees it.
    let (status, customer) = bank.gateway.post("/accounts/customers", json!({ "name": "Ada" }), None).await;
    assert_eq!(status, 201, "{customer}");
    every_operation_is_served_as_documented(&bank.gateway, &document).await;
}
