//! Calling other services and providers: JSON over HTTP carrying the trace id
//! and (for money) an idempotency key, with the answer read as HAL.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::http::{IDEMPOTENCY_HEADER, TRACE_HEADER, TraceId};

/// What came back, or why nothing did.
#[derive(Debug)]
pub enum Reply {
    /// Any HTTP answer, with its JSON body (`Null` when it had none).
    Answered(u16, Value),
    /// No answer: refused, timed out, broken off.
    Unreachable(String),
}

impl Reply {
    /// The body when the answer has `status`; otherwise (another status, or no
    /// answer) a 503 naming `what` was called, so the caller's caller retries.
    pub fn expect_status(self, status: u16, what: &str) -> ApiResult<Value> {
        match self {
            Self::Answered(s, body) if s == status => Ok(body),
            Self::Answered(s, body) => Err(ApiError::Unavailable(format!("{what} answered {s}: {body}"))),
            Self::Unreachable(e) => Err(ApiError::Unavailable(format!("{what} did not answer: {e}"))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
}

impl Client {
    pub fn new(timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self { http: reqwest::Client::builder().timeout(timeout).build()? })
    }

    pub async fn call(
        &self,
        method: Method,
        url: &str,
        trace: &TraceId,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut req = self.http.request(method, url).header(TRACE_HEADER, &trace.0);
        if let Some(k) = key {
            req = req.header(IDEMPOTENCY_HEADER, k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.bytes().await {
                    Ok(bytes) => Reply::Answered(status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)),
                    Err(e) => Reply::Unreachable(format!("{url}: answer broken off: {e}")),
                }
            }
            Err(e) if e.is_timeout() => Reply::Unreachable(format!("{url}: timed out")),
            Err(e) => Reply::Unreachable(format!("{url}: {}", e.without_url())),
        }
    }

    pub async fn get(&self, url: &str, trace: &TraceId) -> Reply {
        self.call(Method::GET, url, trace, None, None).await
    }

    pub async fn post(&self, url: &str, trace: &TraceId, key: &str, body: &Value) -> Reply {
        self.call(Method::POST, url, trace, Some(key), Some(body)).await
    }
}

/// The href of link `rel` in a HAL resource.
pub fn link(resource: &Value, rel: &str) -> Option<String> {
    resource["_links"][rel]["href"].as_str().map(String::from)
}

/// Whether an answer means the request itself was refused and repeating it can
/// never succeed (bad request, conflict, unprocessable). Anything else (404 from
/// a route not there yet, 408, 429, 5xx) is worth retrying: money movements are
/// not failed for a fault in the plumbing.
pub fn refused(status: u16) -> bool {
    matches!(status, 400 | 409 | 422)
}
