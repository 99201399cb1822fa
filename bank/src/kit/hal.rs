//! HAL (`application/hal+json`) resources. Every resource carries `self` and
//! `discovery` links; links are absolute URLs built from the request's own
//! origin (or the gateway's forwarded headers), so services stay
//! location-transparent.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

pub const HAL_JSON: &str = "application/hal+json";

/// The origin (scheme, host, path prefix) the client used to reach this service.
#[derive(Debug, Clone)]
pub struct BaseUrl(String);

impl BaseUrl {
    pub fn new(base: impl Into<String>) -> Self {
        Self(base.into().trim_end_matches('/').to_string())
    }

    /// `path` must start with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The scheme and host, without the path prefix: `http://127.0.0.1:4000`.
    pub fn origin(&self) -> &str {
        let after_scheme = self.0.find("://").map_or(0, |i| i + 3);
        match self.0[after_scheme..].find('/') {
            Some(i) => &self.0[..after_scheme + i],
            None => &self.0,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for BaseUrl {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.split(',').next().unwrap_or(s).trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let proto = header("x-forwarded-proto").unwrap_or_else(|| "http".into());
        let host = header("x-forwarded-host")
            .or_else(|| header("host"))
            .or_else(|| parts.uri.authority().map(|a| a.to_string()))
            .unwrap_or_else(|| "localhost".into());
        let prefix = header("x-forwarded-prefix").unwrap_or_default();
        Ok(Self::new(format!("{proto}://{host}{}", prefix.trim_end_matches('/'))))
    }
}

/// A HAL resource under construction.
#[derive(Debug)]
pub struct Hal {
    base: BaseUrl,
    body: Map<String, Value>,
    links: Map<String, Value>,
    embedded: Map<String, Value>,
    status: StatusCode,
}

impl Hal {
    /// A resource at `self_path` whose state is `state` (a JSON object).
    pub fn new(base: &BaseUrl, self_path: &str, state: Value) -> Self {
        let body = match state {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            other => {
                let mut map = Map::new();
                map.insert("value".into(), other);
                map
            }
        };
        let mut links = Map::new();
        links.insert("self".into(), json!({ "href": base.url(self_path) }));
        links.insert("discovery".into(), json!({ "href": base.url("/") }));
        Self { base: base.clone(), body, links, embedded: Map::new(), status: StatusCode::OK }
    }

    /// A resource whose state is the typed `state` (the type its route's
    /// document names): a struct, so it serializes to an object.
    pub fn of(base: &BaseUrl, self_path: &str, state: &impl serde::Serialize) -> Self {
        // Plain structs of strings, numbers and ids: serializing cannot fail.
        Self::new(base, self_path, serde_json::to_value(state).unwrap_or(Value::Null))
    }

    /// A link to `path` on this service; a path with `{...}` is a URI template
    /// (RFC 6570), marked `templated` as HAL says.
    pub fn link(mut self, rel: &str, path: &str) -> Self {
        let link = if path.contains('{') {
            json!({ "href": self.base.url(path), "templated": true })
        } else {
            json!({ "href": self.base.url(path) })
        };
        self.links.insert(rel.into(), link);
        self
    }

    /// A link to a resource elsewhere, already absolute.
    pub fn link_url(mut self, rel: &str, url: &str) -> Self {
        self.links.insert(rel.into(), json!({ "href": url }));
        self
    }

    /// A link to a resource that is not HAL, with HAL's `type` hint (its media
    /// type), so a generic HAL client knows not to read it as `application/hal+json`.
    pub fn link_typed(mut self, rel: &str, path: &str, media_type: &str) -> Self {
        self.links.insert(rel.into(), json!({ "href": self.base.url(path), "type": media_type }));
        self
    }

    /// A link that names the HTTP method of the action it advertises.
    pub fn action(mut self, rel: &str, method: &str, path: &str) -> Self {
        self.links.insert(rel.into(), json!({ "href": self.base.url(path), "method": method }));
        self
    }

    pub fn embed(mut self, rel: &str, items: Vec<Value>) -> Self {
        self.embedded.insert(rel.into(), Value::Array(items));
        self
    }

    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn into_value(self) -> Value {
        let mut body = self.body;
        body.insert("_links".into(), Value::Object(self.links));
        if !self.embedded.is_empty() {
            body.insert("_embedded".into(), Value::Object(self.embedded));
        }
        Value::Object(body)
    }

    pub fn status_code(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for Hal {
    fn into_response(self) -> Response {
        let status = self.status;
        hal_response(status, self.into_value())
    }
}

pub fn hal_response(status: StatusCode, body: Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(HAL_JSON));
    response
}

/// Now, to the microsecond, as PostgreSQL keeps a timestamp: a time given to
/// a statement shows the same in an answer made before it and in every read after.
pub fn now() -> time::OffsetDateTime {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1000 * 1000).unwrap_or(now)
}

/// A timestamp as resources show it (RFC 3339).
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
