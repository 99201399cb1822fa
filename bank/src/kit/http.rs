//! Request plumbing every service shares: the trace id, request metrics, and
//! extractors that turn bad input into problem+json instead of axum's plain text.

use std::time::Instant;

use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::error::ApiError;
use crate::domain::IdempotencyKey;

pub const TRACE_HEADER: &str = "x-trace-id";
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The id that follows one request through every call, event and log line.
#[derive(Debug, Clone)]
pub struct TraceId(pub String);

impl TraceId {
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Accept a caller's trace id only if it is short and printable: it ends up in
    /// logs and headers.
    fn from_header(value: &HeaderValue) -> Option<Self> {
        let s = value.to_str().ok()?.trim();
        let ok =
            !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(s.to_string()))
    }
}

impl Default for TraceId {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for TraceId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<TraceId>().cloned().unwrap_or_default())
    }
}

/// Where a proxy (the gateway) sent the request: the URL it called, put on its
/// response so that the request's log line names it.
#[derive(Debug, Clone)]
pub struct Upstream(pub String);

/// Middleware: assign (or adopt) the trace id, run the request inside a span that
/// carries it, echo it on the response, and count and time the request.
pub async fn observe(service: &'static str, mut request: Request, next: Next) -> Response {
    let trace = request.headers().get(TRACE_HEADER).and_then(TraceId::from_header).unwrap_or_default();
    request.extensions_mut().insert(trace.clone());
    let method = request.method().clone();
    let route =
        request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let path = request.uri().path().to_string();
    let span = tracing::info_span!("request", service, trace_id = %trace.0, %method, route = %route, %path);
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16().to_string();
    let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
    span.in_scope(|| match response.extensions().get::<Upstream>() {
        Some(Upstream(to)) => tracing::info!(status = %status, elapsed_ms, upstream = %to, "handled"),
        None => tracing::info!(status = %status, elapsed_ms, "handled"),
    });
    let labels =
        [("service", service.to_string()), ("method", method.to_string()), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels[..3]).record(elapsed.as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&trace.0) {
        response.headers_mut().insert(HeaderName::from_static(TRACE_HEADER), v);
    }
    response
}

/// `Json<T>` whose rejections are problem+json and name what was wrong; a
/// control character in any string is refused (422) before `T` sees it.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "send the body as JSON with `Content-Type: application/json`".into(),
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request("bad-body", e.body_text()))?;
        parse_json(&bytes).map(Self)
    }
}

/// `application/json`, or any `application/*+json`, with or without parameters.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A JSON body as `T`: malformed JSON is 400, JSON of the wrong shape 422, a
/// control character in any string or key 422 naming where it is.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let does_not_fit = |e: serde_json::Error| {
        ApiError::unprocessable("invalid-body", format!("the JSON body does not fit this resource: {e}"))
    };
    let malformed =
        |e: serde_json::Error| ApiError::bad_request("malformed-json", format!("the body is not valid JSON: {e}"));
    if may_hold_a_control_character(bytes) {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(malformed)?;
        printable(&value, &mut String::new())?;
        return T::deserialize(value).map_err(does_not_fit);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match T::deserialize(&mut de).and_then(|v| de.end().map(|()| v)) {
        Ok(v) => Ok(v),
        Err(e) if e.is_data() => Err(does_not_fit(e)),
        Err(e) => Err(malformed(e)),
    }
}

/// Whether a JSON text can hold a control character in a string at all: JSON
/// refuses the C0 ones raw, so one is either escaped (a backslash), DEL, or a
/// C1 character (UTF-8 `C2 80`..`C2 9F`). Most bodies have none of these, and
/// are read straight into their type, with no tree built to look through.
fn may_hold_a_control_character(bytes: &[u8]) -> bool {
    bytes.iter().any(|b| *b == b'\\' || *b == 0x7f)
        || bytes.windows(2).any(|w| w[0] == 0xc2 && (0x80..=0x9f).contains(&w[1]))
}

/// The `Idempotency-Key` header, required on every POST that moves money.
impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let value = parts.headers.get(IDEMPOTENCY_HEADER).ok_or_else(|| {
            ApiError::bad_request(
                "missing-idempotency-key",
                "this request moves money: send an `Idempotency-Key` header (any unique string up to 255 characters)",
            )
        })?;
        let text = value.to_str().map_err(|_| {
            ApiError::bad_request("bad-idempotency-key", "the `Idempotency-Key` header must be printable ASCII")
        })?;
        IdempotencyKey::parse(text).map_err(|e| ApiError::bad_request("bad-idempotency-key", e.to_string()))
    }
}

/// An optional `Idempotency-Key`, for POSTs that create things but move no money.
#[derive(Debug)]
pub struct MaybeIdempotencyKey(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeIdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if parts.headers.contains_key(IDEMPOTENCY_HEADER) {
            IdempotencyKey::from_request_parts(parts, state).await.map(|k| Self(Some(k)))
        } else {
            Ok(Self(None))
        }
    }
}

/// `Query<T>` whose rejections are problem+json.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // No parameter of the bank takes a control character (a NUL cannot
        // even be stored): refused here, naming it, before any handler sees it.
        let query = parts.uri.query().unwrap_or_default();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if name.chars().chain(value.chars()).any(char::is_control) {
                return Err(ApiError::bad_request(
                    "bad-query",
                    format!(
                        "the query parameter `{}` holds a control character: parameters take printable text only",
                        name.escape_debug()
                    ),
                ));
            }
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| ApiError::bad_request("bad-query", e.body_text()))
    }
}

/// A JSON body that may be absent (an empty body means `None`); a body that is
/// present must be valid JSON of the right shape.
#[derive(Debug)]
pub struct OptionalJson<T>(pub Option<T>);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request("bad-body", e.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        parse_json(&bytes).map(|v| Self(Some(v)))
    }
}

/// Refuse a body with a control character (NUL, a line break, ESC, ...) in any
/// of its strings or keys: no field of the bank takes one, PostgreSQL cannot
/// store a NUL, and one in a log line or terminal misleads whoever reads it.
/// `path` is where `value` sits (`to.name`, `items[2]`), for the message.
fn printable(value: &serde_json::Value, path: &mut String) -> Result<(), ApiError> {
    use serde_json::Value;
    let refuse = |path: &str, text: &str| {
        let (at, c) = text.chars().enumerate().find(|(_, c)| c.is_control()).unwrap_or((0, '\0'));
        let field = if path.is_empty() { "the body" } else { path };
        ApiError::unprocessable(
            "invalid-text",
            format!(
                "`{field}` holds a control character (U+{:04X}) at character {at}: text fields take printable \
                 characters only",
                u32::from(c)
            ),
        )
    };
    match value {
        Value::String(text) if text.chars().any(char::is_control) => Err(refuse(path, text)),
        Value::Array(items) => items.iter().enumerate().try_for_each(|(i, item)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let checked = printable(item, path);
            path.truncate(len);
            checked
        }),
        Value::Object(fields) => fields.iter().try_for_each(|(key, item)| {
            if key.chars().any(char::is_control) {
                return Err(refuse(path, key));
            }
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
            let checked = printable(item, path);
            path.truncate(len);
            checked
        }),
        _ => Ok(()),
    }
}

/// The id in a resource path. A malformed id names nothing that exists: that is
/// "not found" (naming `what`), not "bad request".
pub fn parse_id(raw: &str, what: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw).map_err(|_| ApiError::not_found(format!("{what} `{raw}`")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Named {
        name: String,
    }

    fn refusal(body: &str) -> String {
        match parse_json::<Named>(body.as_bytes()) {
            Ok(v) => panic!("{body} was taken as {:?}", v.name),
            Err(e) => format!("{} {e}", e.status().as_u16()),
        }
    }

    #[test]
    fn control_characters_are_refused_however_they_are_written() {
        // Escaped (NUL, line break), raw DEL, raw C1 (U+0085, NEL), in a key.
        for (body, says) in [
            (r#"{"name":"a\u0000b"}"#, "`name` holds a control character (U+0000) at character 1"),
            (r#"{"name":"a\nb"}"#, "(U+000A)"),
            ("{\"name\":\"a\u{7f}b\"}", "(U+007F)"),
            ("{\"name\":\"a\u{85}b\"}", "(U+0085)"),
            (r#"{"name":"ok","x\u001b":1}"#, "control character (U+001B)"),
        ] {
            let refused = refusal(body);
            assert!(refused.starts_with("422 ") && refused.contains(says), "{body}: {refused}");
        }
    }

    #[test]
    fn other_bodies_are_read_as_before() {
        assert!(parse_json::<Named>(br#"{"name":"Zo\u00eb \"Z\" \u20ac"}"#).is_ok(), "escapes of printable text");
        assert!(parse_json::<Named>("{\"name\":\"Zoë €\"}".as_bytes()).is_ok());
        assert!(refusal(r#"{"name":1}"#).starts_with("422 "), "the wrong shape");
        assert!(refusal(r#"{"name":"#).starts_with("400 "), "not JSON");
        assert!(refusal(r#"{"name":"a\q"}"#).starts_with("400 "), "a bad escape");
    }
}
