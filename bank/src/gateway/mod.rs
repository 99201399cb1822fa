//! The gateway: the single entry point. It routes the app's requests to the
//! services (`/<service>/...`, with forwarded headers so that every link the
//! services build points back through the gateway), serves a discovery resource
//! linking every service, and receives provider webhooks at
//! `/webhooks/{provider}`: a bad or missing signature is 401 and goes no
//! further (the kit's guard, `kit::webhooks`); a good one is logged as an
//! event and routed to its service with its signature, which the service
//! checks again. A service's own webhook routes are never proxied: a provider's
//! word reaches a service only through `/webhooks/{provider}`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use schemars::JsonSchema;
use serde_json::{Value, json};

use crate::kit::error::{ApiError, ApiResult};
use crate::kit::events::{self, NewEvent};
use crate::kit::hal::BaseUrl;
use crate::kit::http::{TRACE_HEADER, TraceId, Upstream};
use crate::kit::openapi::{Document, Routes, post_with};
use crate::kit::{Kit, ServiceSpec};

pub const SPEC: ServiceSpec =
    ServiceSpec { name: "gateway", migrations: &[], links: &[], actions: &[], router, document: bank_document, start };

/// Where the gateway sends things, from its settings.
#[derive(Debug)]
struct Destinations {
    /// service -> base URL
    services: BTreeMap<String, String>,
    /// provider -> service that handles its webhooks
    webhooks: BTreeMap<String, String>,
    http: reqwest::Client,
}

fn pairs(raw: &str, setting: &str) -> anyhow::Result<BTreeMap<String, String>> {
    raw.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').with_context(|| format!("{setting} entry `{p}` is not name=value"))?;
            Ok((k.trim().to_string(), v.trim().trim_end_matches('/').to_string()))
        })
        .collect()
}

fn start(kit: &Kit) -> anyhow::Result<()> {
    let services = pairs(&kit.require("ROUTES", "list the services to route to, as name=url,name=url")?, "ROUTES")?;
    let webhooks = pairs(
        &kit.require("WEBHOOKS", "say which service handles each provider's webhooks, as provider=service")?,
        "WEBHOOKS",
    )?;
    for (provider, service) in &webhooks {
        anyhow::ensure!(
            services.contains_key(service),
            "WEBHOOKS routes {provider} to `{service}`, which is not in ROUTES"
        );
    }
    // Checked by the kit's guard on /webhooks/*; required here so that a
    // gateway without it does not start.
    kit.require("WEBHOOK_SECRET", "the secret providers sign their webhooks with")?;
    for service in services.keys() {
        kit.add_link(service, &format!("/{service}/"));
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("cannot build the HTTP client")?;
    kit.set_own(Destinations { services, webhooks, http });
    Ok(())
}

fn router() -> Routes {
    Routes::new()
        .api_route(
            "/webhooks/{provider}",
            post_with(webhook, |op| {
                op.id("webhook")
                    .summary("A provider's webhook: checked, recorded as an event, and passed to the service that handles it")
                    .signed_webhook("The service's answer is passed back as it is.")
                    .answers_as::<Value>(200, "application/json", "The service processed it (or had already)")
                    .refuses(400, "The body is not JSON")
                    .refuses(404, "No service takes this provider's webhooks, or the webhook names something the service does not know")
                    .refuses(422, "The service refused what the webhook says")
                    .refuses(503, "The service did not take it; the provider will deliver again")
            }),
        )
        // Every service's routes, under its name: described by the bank's
        // document (`bank_document`), made from the services' own.
        .described_by_the_services("/{service}", any(proxy_root))
        .described_by_the_services("/{service}/", any(proxy_root))
        .described_by_the_services("/{service}/{*rest}", any(proxy))
}

async fn proxy_root(
    State(kit): State<Kit>,
    Path(service): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    trace: TraceId,
    body: Bytes,
) -> ApiResult<Response> {
    forward(&kit, &service, "", Request { method, uri, headers, body }, trace).await
}

async fn proxy(
    State(kit): State<Kit>,
    Path((service, rest)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    trace: TraceId,
    body: Bytes,
) -> ApiResult<Response> {
    forward(&kit, &service, &rest, Request { method, uri, headers, body }, trace).await
}

/// Headers that describe one hop, not the message.
const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"];

/// The parts of an incoming request the gateway passes on.
struct Request {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

async fn forward(kit: &Kit, service: &str, rest: &str, request: Request, trace: TraceId) -> ApiResult<Response> {
    let Request { method, uri, headers, body } = request;
    let routes = kit.own::<Destinations>()?;
    // The path as the client sent it, not as decoded: an encoded `/` or `..`
    // must not become a step out of the service's path on the way through.
    let rest = raw_rest(uri.path()).unwrap_or(rest);
    check_path(service, rest)?;
    let base = routes.services.get(service).ok_or_else(|| {
        ApiError::not_found(format!(
            "service `{service}` (the gateway routes {})",
            routes.services.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })?;
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let url = format!("{base}/{rest}{query}");
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost").to_string();
    let mut req = routes.http.request(method, &url).body(body);
    for (name, value) in &headers {
        if !HOP_BY_HOP.contains(&name.as_str()) && !name.as_str().starts_with("x-forwarded-") && name != TRACE_HEADER {
            req = req.header(name, value);
        }
    }
    req = req
        .header("x-forwarded-host", host)
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-prefix", format!("/{service}"))
        .header(TRACE_HEADER, &trace.0);
    let upstream = req
        .send()
        .await
        .map_err(|e| ApiError::BadGateway(format!("service `{service}` did not answer: {}", e.without_url())))?;
    let status = StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut out_headers = HeaderMap::new();
    for (name, value) in upstream.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) && name.as_str() != TRACE_HEADER {
            out_headers.insert(name.clone(), value.clone());
        }
    }
    let bytes = upstream
        .bytes()
        .await
        .map_err(|e| ApiError::BadGateway(format!("service `{service}` broke off its answer: {e}")))?;
    let mut response = (status, out_headers, bytes).into_response();
    response.extensions_mut().insert(Upstream(format!("{service} {url}")));
    Ok(response)
}

/// What follows `/{service}/` in the raw (still percent-encoded) path.
fn raw_rest(path: &str) -> Option<&str> {
    path.strip_prefix('/')?.split_once('/').map(|(_, rest)| rest)
}

/// Refuse a proxied path that steps out of its place: a segment that is, or
/// decodes to, `.` or `..`, or that hides a `/`, `\` or NUL in an escape; and
/// any path under the service's webhook routes.
fn check_path(service: &str, rest: &str) -> ApiResult<()> {
    for segment in rest.split('/') {
        let lower = segment.to_ascii_lowercase();
        let dots = lower.replace("%2e", ".");
        if dots == "." || dots == ".." || ["%2f", "%5c", "%00", "\\"].iter().any(|bad| lower.contains(bad)) {
            return Err(ApiError::bad_request(
                "bad-path",
                format!(
                    "the path `/{service}/{rest}` has the segment `{segment}`: a path through the gateway may not \
                     hold `.` or `..` segments or escaped `/`, `\\` or NUL characters"
                ),
            ));
        }
    }
    if crate::kit::webhooks::is_webhook_path(&format!("/{rest}")) {
        return Err(ApiError::not_found(format!(
            "`/{service}/{rest}`: the gateway does not proxy a service's webhook routes; providers post to \
             /webhooks/{{provider}}"
        )));
    }
    Ok(())
}

/// A provider's webhook (its signature verified by the kit's guard before
/// this runs): recorded, then routed to its service with the signature, which
/// the service verifies again.
async fn webhook(
    axum::extract::State(kit): State<Kit>,
    Path(Provider { provider }): Path<Provider>,
    headers: HeaderMap,
    trace: TraceId,
    body: Bytes,
) -> ApiResult<Response> {
    let routes = kit.own::<Destinations>()?;
    let service = routes.webhooks.get(&provider).ok_or_else(|| {
        ApiError::not_found(format!(
            "webhook endpoint for provider `{provider}` (known: {})",
            routes.webhooks.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })?;
    let payload: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("malformed-json", format!("the webhook body is not JSON: {e}")))?;
    let kind = payload["type"].as_str().unwrap_or("unknown").to_string();
    let received = wire::payloads::WebhookReceived { provider: provider.clone(), kind, body: payload };
    events::append_alone(&kit, &trace, NewEvent::of(provider.clone(), &received)?).await?;
    let base = routes.services.get(service).cloned().unwrap_or_default();
    let url = format!("{base}/webhooks/{provider}");
    let upstream = routes
        .http
        .post(&url)
        .header(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(TRACE_HEADER, &trace.0);
    let upstream = match headers.get(wire::SIGNATURE_HEADER) {
        Some(signature) => upstream.header(wire::SIGNATURE_HEADER, signature),
        None => upstream,
    };
    let upstream = upstream
        .body(body)
        .send()
        .await
        // The provider retries on 5xx: nothing is lost while the service is down.
        .map_err(|e| ApiError::Unavailable(format!("`{service}` did not take the webhook: {}", e.without_url())))?;
    let status = StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let bytes = upstream.bytes().await.unwrap_or_default();
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response();
    response.extensions_mut().insert(Upstream(format!("{service} {url}")));
    Ok(response)
}

/// The provider in a webhook's path.
#[derive(Debug, serde::Deserialize, JsonSchema)]
struct Provider {
    /// The provider's name, as the gateway's `WEBHOOKS` setting knows it (`payment-scheme`, `card-acquirer`, ...).
    provider: String,
}

/// The bank's OpenAPI document: the gateway's own routes, and every service's
/// as seen through the gateway (under `/<service>`, its operations tagged and
/// their ids prefixed with its name). A service's webhook routes are left
/// out: the gateway does not proxy them (providers post to `/webhooks/{provider}`).
fn bank_document(
    kit: Kit,
    _: BaseUrl,
    own: std::sync::Arc<Value>,
) -> futures::future::BoxFuture<'static, ApiResult<Value>> {
    Box::pin(async move {
        let routes = kit.own::<Destinations>()?;
        let reads = routes.services.iter().map(|(service, url)| {
            let routes = routes.clone();
            async move {
                let read = async {
                    let answer = routes.http.get(format!("{url}/openapi.json")).send().await?.error_for_status()?;
                    answer.json::<Value>().await
                };
                read.await.map(|doc| (service.clone(), doc)).map_err(|e| {
                    ApiError::BadGateway(format!("cannot read `{service}`'s OpenAPI document: {}", e.without_url()))
                })
            }
        });
        let documents = futures::future::try_join_all(reads).await?;
        let mut bank = own.as_ref().clone();
        bank["info"]["title"] = json!("bank-sandbox: the bank, through its gateway");
        for (service, document) in documents {
            merge(&mut bank, &service, document);
        }
        link_flows(&mut bank);
        Ok(bank)
    })
}

/// Add `service`'s document to the bank's: its paths under `/<service>`, its
/// schemas beside the others' (renamed `<service>.<name>` where another
/// service's schema of that name differs).
fn merge(bank: &mut Value, service: &str, document: Value) {
    let problem = json!({ "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } });
    let schemas = document["components"]["schemas"].as_object().cloned().unwrap_or_default();
    let mut text = document["paths"].to_string();
    let mut renamed = serde_json::Map::new();
    for (name, schema) in schemas {
        let known = &bank["components"]["schemas"][&name];
        if known.is_null() || *known == schema {
            renamed.insert(name, schema);
        } else {
            let new = format!("{service}.{name}");
            let from = format!("\"#/components/schemas/{name}\"");
            let to = format!("\"#/components/schemas/{new}\"");
            text = text.replace(&from, &to);
            renamed.insert(new, schema);
        }
    }
    // References between the renamed schemas follow them.
    let mut schemas_text = Value::Object(renamed).to_string();
    for name in document["components"]["schemas"].as_object().into_iter().flat_map(|m| m.keys()) {
        let new = format!("{service}.{name}");
        if schemas_text.contains(&format!("\"{new}\":")) {
            schemas_text = schemas_text
                .replace(&format!("\"#/components/schemas/{name}\""), &format!("\"#/components/schemas/{new}\""));
        }
    }
    let paths: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap_or_default();
    let schemas: serde_json::Map<String, Value> = serde_json::from_str(&schemas_text).unwrap_or_default();
    for (name, schema) in schemas {
        bank["components"]["schemas"][name] = schema;
    }
    for (path, mut item) in paths {
        if crate::kit::webhooks::is_webhook_path(&path) {
            continue;
        }
        for operation in item.as_object_mut().into_iter().flat_map(|m| m.values_mut()) {
            if let Some(id) = operation.get("operationId").and_then(Value::as_str) {
                operation["operationId"] = json!(format!("{service}.{id}"));
            }
            // Links name operations of the same service.
            let responses = operation.get_mut("responses").and_then(Value::as_object_mut);
            for response in responses.into_iter().flat_map(|r| r.values_mut()) {
                let links = response.get_mut("links").and_then(Value::as_object_mut);
                for link in links.into_iter().flat_map(|l| l.values_mut()) {
                    if let Some(id) = link.get("operationId").and_then(Value::as_str) {
                        link["operationId"] = json!(format!("{service}.{id}"));
                    }
                }
            }
            operation["tags"] = json!([service]);
            // What the gateway itself may answer, before or instead of the service.
            for (status, why) in GATEWAY_REFUSALS {
                add_refusal(operation, status, why, &problem);
            }
        }
        bank["paths"][format!("/{service}{path}")] = item;
    }
}

/// What the gateway answers for any service's operation, on its own account.
const GATEWAY_REFUSALS: [(&str, &str); 2] = [
    ("400", "The gateway refuses a path holding `.` or `..` segments or escaped `/`, `\\` or NUL characters"),
    ("502", "The service did not answer the gateway, or broke off its answer"),
];

/// List `status` among `operation`'s answers (a problem), or add `why` to the
/// reasons it already lists.
fn add_refusal(operation: &mut Value, status: &str, why: &str, problem: &Value) {
    let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) else { return };
    match responses.get_mut(status) {
        Some(known) => {
            let description = known["description"].as_str().unwrap_or_default().to_string();
            known["description"] = json!(format!("{description}; {why}"));
        }
        None => {
            responses.insert(status.into(), json!({ "description": why, "content": problem }));
        }
    }
}

/// Where money goes from an account, across services: after an answer of
/// the first operation, the second can follow with the account's URL (from
/// the answer) in its body's field. OpenAPI links a client, or a stateful
/// fuzzer, follows from an account to paying from it or topping it up.
const FLOWS: &[(&str, &str, &str, &str, &str)] = &[
    ("accounts.openAccount", "201", "payments.createPayment", "from", "$response.body#/_links/self/href"),
    ("accounts.openAccount", "201", "topups.createTopup", "account", "$response.body#/_links/self/href"),
    ("accounts.creditAccount", "201", "payments.createPayment", "from", "$response.body#/_links/account/href"),
    ("accounts.getAccount", "200", "payments.createPayment", "from", "$response.body#/_links/self/href"),
];

/// Add [`FLOWS`]' links to the bank's document, where both operations are in it.
fn link_flows(bank: &mut Value) {
    let mut operations: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (path, item) in bank["paths"].as_object().into_iter().flatten() {
        for (method, operation) in item.as_object().into_iter().flatten() {
            if let Some(id) = operation["operationId"].as_str() {
                operations.insert(id.to_string(), (path.clone(), method.clone()));
            }
        }
    }
    for (from, status, to, field, expression) in FLOWS {
        let (Some((path, method)), true) = (operations.get(*from), operations.contains_key(*to)) else { continue };
        let Some(response) = bank["paths"][path][method]["responses"].get_mut(*status) else { continue };
        let Some(answer) = response.as_object_mut() else { continue };
        let links = answer.entry("links").or_insert_with(|| json!({}));
        links[*to] = json!({ "operationId": to, "requestBody": { *field: expression } });
    }
}
