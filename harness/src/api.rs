//! A client of the bank's public API, as an app or an engineer uses it: it enters
//! at the gateway and finds everything else by following HAL links, never by
//! building URLs. The e2e steps, the benchmarks and the TUI's explorer use it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::error::{Error, Result};

/// How soon a waiting caller looks again: at first, then at most (the wait
/// doubles in between). Most waits end within the first few looks; a fixed
/// 20 ms had sixteen scenarios waiting on slow providers send requests through
/// the bank all the while (the Gherkin suite's CPU: 29.6-33.3 s with it,
/// 25.1-27.9 s without, docs/PERFORMANCE.md).
const POLL: Duration = Duration::from_millis(10);
const POLL_MAX: Duration = Duration::from_millis(100);

/// One HTTP answer, whatever its status: a step may expect a refusal.
#[derive(Debug, Clone)]
pub struct Reply {
    pub method: String,
    pub url: String,
    pub status: u16,
    pub body: Value,
    /// `Idempotent-Replayed: true` on the answer.
    pub replayed: bool,
    pub content_type: String,
    /// `Retry-After` in seconds, when the answer has one.
    pub retry_after: Option<Duration>,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The answer as a resource, or an error naming the call and what it got.
    pub fn ok(self) -> Result<Value> {
        if self.is_success() {
            Ok(self.body)
        } else {
            Err(Error::Http(format!("{} {} answered {}: {}", self.method, self.url, self.status, self.body)))
        }
    }

    /// The last segment of a problem's `type` (`urn:problem:bank:insufficient-funds`
    /// gives `insufficient-funds`).
    pub fn problem(&self) -> Option<&str> {
        self.body["type"].as_str().and_then(|t| t.rsplit(':').next())
    }
}

/// The `href` of a resource's link `rel`.
pub fn link(resource: &Value, rel: &str) -> Result<String> {
    resource["_links"][rel]["href"].as_str().map(String::from).ok_or_else(|| {
        let rels: Vec<&String> = resource["_links"].as_object().map(|m| m.keys().collect()).unwrap_or_default();
        Error::Http(format!("the resource has no `{rel}` link (it has: {rels:?}): {resource}"))
    })
}

/// Every link of a resource: (rel, href, method), the method GET unless the
/// link names another (an action).
pub fn links(resource: &Value) -> Vec<(String, String, String)> {
    let Some(links) = resource["_links"].as_object() else { return Vec::new() };
    links
        .iter()
        .filter_map(|(rel, l)| {
            let href = l["href"].as_str()?.to_string();
            Some((rel.clone(), href, l["method"].as_str().unwrap_or("GET").to_string()))
        })
        .collect()
}

/// The links of a resource that a client may GET as they are: (rel, href),
/// without the actions and the URI templates.
pub fn readable_links(resource: &Value) -> Vec<(String, String)> {
    links(resource)
        .into_iter()
        .filter(|(rel, _, method)| method == "GET" && resource["_links"][rel.as_str()]["templated"] != true)
        .map(|(rel, href, _)| (rel, href))
        .collect()
}

/// Pence as the bank writes money: `£1,234.05`.
pub fn pounds(pence: i64) -> String {
    let sign = if pence < 0 { "-" } else { "" };
    let p = pence.unsigned_abs();
    let whole = (p / 100).to_string();
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}£{grouped}.{:02}", p % 100)
}

/// A payee: a name and UK bank details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payee {
    pub name: String,
    pub sort_code: String,
    pub account_number: String,
}

/// How many times [`Api::get`] asks again after a busy 503.
pub const BUSY_RETRIES: u32 = 3;

#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    gateway: String,
    answers: std::sync::Arc<Answers>,
}

/// The answers an [`Api`] got through the gateway, checked against the bank's
/// OpenAPI document when it has one: how many, and each that broke it.
#[derive(Debug, Default)]
struct Answers {
    contract: Option<crate::contracts::HttpContract>,
    checked: std::sync::atomic::AtomicUsize,
    broken: std::sync::Mutex<Vec<String>>,
}

impl Api {
    pub fn new(gateway: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| Error::Http(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self { http, gateway: gateway.trim_end_matches('/').to_string(), answers: Default::default() })
    }

    /// The same client, checking every answer it gets through the gateway
    /// against the bank's document (the gateway's `/openapi.json`): a status
    /// the document does not list, or a body off its schema, is kept for
    /// [`Api::broken_answers`].
    pub async fn checking_answers(self) -> Result<Self> {
        let document = self.get(&format!("{}/openapi.json", self.gateway)).await?;
        let contract = crate::contracts::HttpContract::new(&document)
            .map_err(|e| Error::Http(format!("the bank's OpenAPI document: {e}")))?;
        let answers = Answers { contract: Some(contract), ..Default::default() };
        Ok(Self { answers: std::sync::Arc::new(answers), ..self })
    }

    /// How many answers were checked against the bank's document.
    pub fn answers_checked(&self) -> usize {
        self.answers.checked.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Each answer since the last call that broke the bank's document.
    pub fn broken_answers(&self) -> Vec<String> {
        std::mem::take(&mut *self.answers.broken.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    /// Any request; an answer of any status is `Ok`, only a failure to get one is `Err`.
    pub async fn send(&self, method: &str, url: &str, body: Option<&Value>, key: Option<&str>) -> Result<Reply> {
        let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| Error::Http(e.to_string()))?;
        let mut req = self.http.request(m, url);
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| Error::Http(format!("{method} {url}: no answer: {e}")))?;
        let status = resp.status().as_u16();
        let replayed = resp.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = resp.bytes().await.map_err(|e| Error::Http(format!("{method} {url}: {e}")))?;
        let body =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        if let (Some(contract), Some(path)) = (&self.answers.contract, url.strip_prefix(&self.gateway)) {
            self.answers.checked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Err(broken) = contract.check(method, path, status, &body) {
                self.answers.broken.lock().unwrap_or_else(|e| e.into_inner()).push(broken);
            }
        }
        Ok(Reply { method: method.into(), url: url.into(), status, body, replayed, content_type, retry_after })
    }

    /// A GET that must succeed. A 503 that says when to come back
    /// (`Retry-After`: the service is busy, not broken) is asked again, up to
    /// [`BUSY_RETRIES`] times, as a well-behaved client does.
    pub async fn get(&self, url: &str) -> Result<Value> {
        let mut retries = 0;
        loop {
            let reply = self.send("GET", url, None, None).await?;
            match reply.retry_after {
                Some(wait) if reply.status == 503 && retries < BUSY_RETRIES => {
                    retries += 1;
                    tokio::time::sleep(wait.min(Duration::from_secs(2))).await;
                }
                _ => return reply.ok(),
            }
        }
    }

    /// A POST that must succeed.
    pub async fn post(&self, url: &str, body: &Value, key: Option<&str>) -> Result<Value> {
        self.send("POST", url, Some(body), key).await?.ok()
    }

    /// The gateway's discovery resource: the bank's front door.
    pub async fn front_door(&self) -> Result<Value> {
        self.get(&format!("{}/", self.gateway)).await
    }

    /// A service's discovery resource, found from the front door.
    pub async fn service(&self, name: &str) -> Result<Value> {
        let root = self.front_door().await?;
        self.get(&link(&root, name)?).await
    }

    /// A new customer. Returns the customer resource.
    pub async fn new_customer(&self, name: &str) -> Result<Value> {
        let accounts = self.service("accounts").await?;
        self.post(&link(&accounts, "customers")?, &json!({ "name": name }), None).await
    }

    /// Ask for an account for `customer` (a customer resource); the reply may be a refusal.
    pub async fn open_account(&self, customer: &Value, currency: Option<&str>) -> Result<Reply> {
        let body = currency.map_or_else(|| json!({}), |c| json!({ "currency": c }));
        self.send("POST", &link(customer, "open-account")?, Some(&body), None).await
    }

    /// Credit an account (a deposit from outside the bank's flows).
    pub async fn deposit(&self, account: &Value, pence: i64, reference: &str, key: &str) -> Result<Reply> {
        let body = json!({ "amount": pence, "currency": "GBP", "reference": reference });
        self.send("POST", &link(account, "credit")?, Some(&body), Some(key)).await
    }

    /// Every posting on an account, oldest first, following the `next` pages.
    pub async fn transactions(&self, account: &Value) -> Result<Vec<Value>> {
        let mut url = link(account, "transactions")?;
        let mut all = Vec::new();
        loop {
            let page = self.get(&url).await?;
            let items = page["_embedded"]["transactions"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                return Ok(all);
            }
            all.extend(items);
            url = link(&page, "next")?;
        }
    }

    /// Pay `payee` from `from` (an account resource); the reply may be a refusal.
    pub async fn pay(&self, from: &Value, payee: &Payee, pence: i64, reference: &str, key: &str) -> Result<Reply> {
        let payments = self.service("payments").await?;
        let body = json!({
            "from": link(from, "self")?,
            "to": { "name": payee.name, "sort_code": payee.sort_code, "account_number": payee.account_number },
            "amount": { "amount": pence, "currency": "GBP" },
            "reference": reference,
        });
        self.send("POST", &link(&payments, "payments")?, Some(&body), Some(key)).await
    }

    /// Top `account` up from a card; the reply may be a refusal.
    pub async fn top_up(&self, account: &Value, card_token: &str, pence: i64, key: &str) -> Result<Reply> {
        let topups = self.service("topups").await?;
        let body = json!({
            "account": link(account, "self")?,
            "card_token": card_token,
            "amount": { "amount": pence, "currency": "GBP" },
        });
        self.send("POST", &link(&topups, "topups")?, Some(&body), Some(key)).await
    }

    /// Alerts matching `query` (`transaction`, `account`, `status`).
    pub async fn alerts(&self, query: &[(&str, &str)]) -> Result<Vec<Value>> {
        let monitoring = self.service("monitoring").await?;
        let mut url = url::Url::parse(&link(&monitoring, "alerts")?).map_err(|e| Error::Http(e.to_string()))?;
        url.query_pairs_mut().extend_pairs(query);
        let page = self.get(url.as_str()).await?;
        Ok(page["_embedded"]["alerts"].as_array().cloned().unwrap_or_default())
    }

    /// GET `url` until `done` holds for it; on the deadline, an error that says
    /// what was awaited and what the resource last said.
    pub async fn wait_until(
        &self,
        url: &str,
        what: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        wait_for(what, within, || async {
            let r = self.get(url).await?;
            Ok(if done(&r) { Ok(r) } else { Err(r.to_string()) })
        })
        .await
    }
}

/// Call `probe` every few milliseconds until it gives `Ok(Ok(v))`; `Ok(Err(last))`
/// means not yet (with what was seen), `Err` means stop now. On the deadline, the
/// error names `what` and the last thing seen.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<std::result::Result<T, String>>>,
{
    let deadline = Instant::now() + within;
    let mut last: String;
    let mut pause = POLL;
    loop {
        match probe().await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(seen)) => last = seen,
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= deadline {
            return Err(Error::Http(format!("{what}: not within {} s; last seen: {last}", within.as_secs_f32())));
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(POLL_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pounds_are_written_as_the_bank_writes_them() {
        assert_eq!(pounds(0), "£0.00");
        assert_eq!(pounds(5), "£0.05");
        assert_eq!(pounds(123_456_789), "£1,234,567.89");
        assert_eq!(pounds(-2_500), "-£25.00");
    }

    /// A busy service (503 with Retry-After) is asked again; a 503 without
    /// one, or a service still busy after the retries, is the error it was.
    #[tokio::test]
    async fn a_get_waits_out_a_busy_service_but_not_a_broken_one() {
        use wiremock::matchers::{method, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        let busy = ResponseTemplate::new(503).insert_header("retry-after", "0");
        Mock::given(method("GET")).and(path("/busy")).respond_with(busy.clone()).up_to_n_times(2).mount(&server).await;
        Mock::given(method("GET"))
            .and(path("/busy"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "ok": true })))
            .mount(&server)
            .await;
        Mock::given(method("GET")).and(path("/down")).respond_with(ResponseTemplate::new(503)).mount(&server).await;
        Mock::given(method("GET")).and(path("/always-busy")).respond_with(busy).mount(&server).await;
        let api = Api::new(&server.uri()).unwrap();

        assert_eq!(api.get(&format!("{}/busy", server.uri())).await.unwrap(), json!({ "ok": true }));
        assert!(api.get(&format!("{}/down", server.uri())).await.is_err());
        assert!(api.get(&format!("{}/always-busy", server.uri())).await.is_err());
        let asked = |p: &'static str| {
            let server = &server;
            async move { server.received_requests().await.unwrap().iter().filter(|r| r.url.path() == p).count() }
        };
        assert_eq!(asked("/busy").await, 3);
        assert_eq!(asked("/down").await, 1);
        assert_eq!(asked("/always-busy").await, 1 + BUSY_RETRIES as usize);
    }

    #[test]
    fn actions_are_not_readable_links() {
        let r = json!({ "_links": {
            "self": { "href": "http://x/a" },
            "credit": { "href": "http://x/a/credits", "method": "POST" },
        }});
        assert_eq!(readable_links(&r), vec![("self".to_string(), "http://x/a".to_string())]);
    }
}
