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
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use serde_json::Value;

use crate::kit::error::{ApiError, ApiResult};
use crate::kit::events::{self, NewEvent};
use crate::kit::http::{TRACE_HEADER, TraceId, Upstream};
use crate::kit::{Kit, ServiceSpec};

pub const SPEC: ServiceSpec = ServiceSpec { name: "gateway", migrations: &[], links: &[], actions: &[], router, start };

/// Where the gateway sends things, from its settings.
#[derive(Debug)]
struct Routes {
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
    kit.set_own(Routes { services, webhooks, http });
    Ok(())
}

fn router() -> Router<Kit> {
    Router::new()
        .route("/webhooks/{provider}", post(webhook))
        .route("/{service}", any(proxy_root))
        .route("/{service}/", any(proxy_root))
        .route("/{service}/{*rest}", any(proxy))
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
    let routes = kit.own::<Routes>()?;
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
    Path(provider): Path<String>,
    headers: HeaderMap,
    trace: TraceId,
    body: Bytes,
) -> ApiResult<Response> {
    let routes = kit.own::<Routes>()?;
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
