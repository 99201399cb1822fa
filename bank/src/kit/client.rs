//! Calling other services and providers: JSON over HTTP carrying the trace id
//! and (for money) an idempotency key, with the answer read as HAL.
//!
//! Only the bank's own addresses and the partners it is configured for are
//! called: a URL under a base URL the service was given (`<NAME>_URL`), or a
//! URL written through the gateway for a service whose base is known (called
//! at that base). Anything else, whatever stored it or sent it, is not
//! called, and no redirect is followed.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::http::{IDEMPOTENCY_HEADER, TRACE_HEADER, TraceId};
use super::{Check, Checks, Kit};

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
    /// Bank services this one knows the address of (`<SERVICE>_URL`): name, base URL.
    direct: Arc<Vec<(String, String)>>,
    /// Every HTTP base URL the service was configured with (`<NAME>_URL`):
    /// the bank's services and the providers it calls.
    known: Arc<Vec<String>>,
    /// Where each call's outcome is reported, and as what dependency.
    watch: Option<(Checks, &'static str)>,
    /// An answer slower than this makes the dependency degraded.
    slow: Duration,
}

impl Client {
    /// A client of the addresses in `kit`'s settings.
    pub fn new(kit: &Kit, timeout: Duration) -> anyhow::Result<Self> {
        let direct = crate::SERVICES
            .iter()
            .filter_map(|s| {
                let base = kit.vars(&format!("{}_URL", s.name.to_uppercase()))?;
                Some((s.name.to_string(), base.trim_end_matches('/').to_string()))
            })
            .collect();
        let known = kit
            .var_names()
            .filter(|name| name.ends_with("_URL"))
            .filter_map(|name| kit.vars(name))
            .filter(|url| url.starts_with("http://") || url.starts_with("https://"))
            .map(|url| url.trim_end_matches('/').to_string())
            .collect();
        Ok(Self {
            // A redirect would be a call to wherever the answer points.
            http: reqwest::Client::builder().timeout(timeout).redirect(reqwest::redirect::Policy::none()).build()?,
            direct: Arc::new(direct),
            known: Arc::new(known),
            watch: None,
            slow: timeout / 2,
        })
    }

    /// Report every call's outcome as the check `dependency` of the service's
    /// `/health`: degraded while it fails, times out or answers slowly (over half
    /// the timeout), ok again at its next good answer.
    pub fn watched(self, checks: Checks, dependency: &'static str) -> Self {
        checks.set(dependency, Check::Ok);
        Self { watch: Some((checks, dependency)), ..self }
    }

    pub async fn call(
        &self,
        method: Method,
        url: &str,
        trace: &TraceId,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut req = match through_gateway(&self.direct, url) {
            None if !under_any(&self.known, url) => {
                return Reply::Unreachable(format!(
                    "{}: not an address of this bank or of a provider it is configured for, so not called",
                    url.chars().take(200).collect::<String>()
                ));
            }
            None => self.http.request(method, url),
            Some(d) => self
                .http
                .request(method, &d.url)
                .header("x-forwarded-host", d.host)
                .header("x-forwarded-proto", d.proto)
                .header("x-forwarded-prefix", d.prefix),
        };
        req = req.header(TRACE_HEADER, &trace.0);
        if let Some(k) = key {
            req = req.header(IDEMPOTENCY_HEADER, k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let started = std::time::Instant::now();
        let reply = self.send(req, url).await;
        if let Some((checks, dependency)) = &self.watch {
            let took = started.elapsed();
            let state = match &reply {
                Reply::Unreachable(e) => Check::Degraded(e.clone()),
                Reply::Answered(status, _) if *status >= 500 => Check::Degraded(format!("answered {status}")),
                Reply::Answered(..) if took > self.slow => {
                    Check::Degraded(format!("slow: answered in {} ms", took.as_millis()))
                }
                Reply::Answered(..) => Check::Ok,
            };
            checks.set(dependency, state);
        }
        reply
    }

    async fn send(&self, req: reqwest::RequestBuilder, url: &str) -> Reply {
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

/// Whether `url` is one of `bases` or under one (`<base>/...`, `<base>?...`).
fn under_any(bases: &[String], url: &str) -> bool {
    bases
        .iter()
        .any(|base| url.strip_prefix(base.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?'])))
}

/// A call to a URL written through the gateway, made to the service directly.
#[derive(Debug, PartialEq, Eq)]
struct Direct {
    url: String,
    host: String,
    proto: String,
    prefix: String,
}

/// Resources name each other by full URL, and a client writes the URLs it saw
/// through the gateway's public address (`<public>/<service>/<rest>`). Where this
/// service knows `<service>`'s own address, such a URL is called there directly,
/// with the forwarded headers the gateway would have added, so the answer (and
/// every link in it) is the one the gateway would have given. It also works
/// where the public address cannot be reached from here: inside a container
/// network, the port the host published is not.
fn through_gateway(direct: &[(String, String)], url: &str) -> Option<Direct> {
    // Every call out goes through here: no allocation for a URL that is already direct.
    let at_base = |base: &str| url.strip_prefix(base).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    if direct.iter().any(|(_, base)| at_base(base)) {
        return None;
    }
    let parsed = reqwest::Url::parse(url).ok()?;
    let (service, rest) = parsed.path().trim_start_matches('/').split_once('/')?;
    let (_, base) = direct.iter().find(|(name, _)| name == service)?;
    let query = parsed.query().map(|q| format!("?{q}")).unwrap_or_default();
    let host = match parsed.port() {
        Some(p) => format!("{}:{p}", parsed.host_str()?),
        None => parsed.host_str()?.to_string(),
    };
    Some(Direct {
        url: format!("{base}/{rest}{query}"),
        host,
        proto: parsed.scheme().to_string(),
        prefix: format!("/{service}"),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn direct() -> Vec<(String, String)> {
        vec![("accounts".into(), "http://accounts:8080".into())]
    }

    #[test]
    fn a_url_through_the_gateway_goes_to_the_service_as_the_gateway_would_send_it() {
        let d = through_gateway(&direct(), "http://127.0.0.1:41234/accounts/accounts/7?x=1").unwrap();
        assert_eq!(
            d,
            Direct {
                url: "http://accounts:8080/accounts/7?x=1".into(),
                host: "127.0.0.1:41234".into(),
                proto: "http".into(),
                prefix: "/accounts".into(),
            }
        );
    }

    #[test]
    fn only_known_bases_are_called() {
        let known = vec!["http://accounts:8080".to_string(), "http://payment-scheme:8080".to_string()];
        assert!(under_any(&known, "http://accounts:8080/accounts/7"));
        assert!(under_any(&known, "http://payment-scheme:8080"));
        assert!(under_any(&known, "http://payment-scheme:8080?x"));
        for stranger in [
            "http://accounts:8080.evil.example/accounts/7",
            "http://accounts:8080@evil.example/",
            "http://accounts:80800/",
            "http://evil.example/accounts/7",
            "file:///etc/passwd",
        ] {
            assert!(!under_any(&known, stranger), "{stranger}");
        }
    }

    #[test]
    fn other_urls_are_called_as_written() {
        // The service's own address, a service not known here, a provider.
        assert_eq!(through_gateway(&direct(), "http://accounts:8080/accounts/7"), None);
        assert_eq!(through_gateway(&direct(), "http://127.0.0.1:41234/payments/payments/1"), None);
        assert_eq!(through_gateway(&direct(), "http://payment-scheme:8080/payments"), None);
        assert_eq!(through_gateway(&[], "http://127.0.0.1:41234/accounts/accounts/7"), None);
    }
}
