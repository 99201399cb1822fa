//! Mocked third-party providers (payment scheme, card acquirer, screening
//! vendor): wiremock servers with each provider's API shape, outcomes forced by
//! magic values from `fixtures/providers/`, a journal of what they received and
//! sent, signed webhooks (retried like a real provider), and faults set at run
//! time through an admin API under `/__admin`, scoped to one account or card so
//! that one caller's fault does not touch another's.

pub mod spec;

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wire::payloads::{AcquirerWebhook, Amount, Charge, ChargeStatus, Details, InboundPayment, SchemeWebhook, Sender};
use wire::providers::SchemePaymentStatus;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::error::{Error, Result};
pub use spec::{Kind, Spec};

/// How long a "timeout" fault holds a request: longer than any client waits.
const TIMEOUT_HOLD: Duration = Duration::from_secs(120);
/// A webhook is tried this many times, backing off from 100 ms to at most
/// `WEBHOOK_MAX_BACKOFF` (about 12 s in all, long enough for a restarted
/// service to come back), then kept as undelivered.
const WEBHOOK_ATTEMPTS: u32 = 10;
const WEBHOOK_MAX_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer 503.
    Unavailable,
    /// Answer after `delay_ms`.
    Slow,
    /// Never answer in time.
    Timeout,
    /// Reject (scheme), decline (acquirer) or score high (vendor).
    Reject,
    /// Take the request, decide its outcome, and never send the webhook that
    /// says it (lost on the way): only a status enquiry finds it out.
    LoseWebhook,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    #[serde(default)]
    pub id: u64,
    pub kind: FaultKind,
    /// Only requests whose scope value equals this (an account URL, a card token);
    /// every request when absent.
    #[serde(default)]
    pub scope: Option<String>,
    /// How many requests it applies to; all, until cleared, when absent.
    #[serde(default)]
    pub remaining: Option<u32>,
    #[serde(default)]
    pub delay_ms: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub seq: u64,
    /// Unix milliseconds.
    pub at: u64,
    /// `in`: a request the provider received; `out`: a webhook it sent.
    pub direction: String,
    pub method: String,
    pub path: String,
    pub scope: Option<String>,
    pub trace_id: Option<String>,
    pub body: Value,
    pub status: u16,
    pub fault: Option<FaultKind>,
}

impl JournalEntry {
    /// One line: `#12   in  POST /payments                    202 (fault Slow)`.
    pub fn summary(&self) -> String {
        format!(
            "#{:<4} {:<3} {:<4} {:<28} {}{}",
            self.seq,
            self.direction,
            self.method,
            self.path,
            self.status,
            self.fault.map(|f| format!(" (fault {f:?})")).unwrap_or_default()
        )
    }
}

#[derive(Debug, Default)]
struct Inner {
    journal: Vec<JournalEntry>,
    faults: Vec<Fault>,
    next_fault: u64,
    /// Requests already accepted, by the caller's id: a repeat gets the same answer.
    accepted: Vec<(String, Value)>,
    /// Webhooks every attempt failed for, by the caller's id: sent again when
    /// the caller repeats its request (as a scheme answers a status enquiry).
    undelivered: Vec<(String, Value, Option<String>)>,
    /// (scheme) each payment's status as a status enquiry answers it, by the caller's id.
    statuses: Vec<(String, Value)>,
    next_id: u64,
}

/// Everything a provider knows, shared by its responders.
#[derive(Clone)]
struct Provider {
    spec: Arc<Spec>,
    inner: Arc<Mutex<Inner>>,
    webhook_base: Option<String>,
    secret: Arc<Vec<u8>>,
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
    /// (method, path) -> the schema its request body must match
    /// (`wire::providers`), as the real provider's API would refuse it.
    requests: Arc<Vec<(String, String, jsonschema::Validator)>>,
}

/// The compiled request schemas of a provider of `kind`.
fn request_validators(kind: Kind) -> Result<Vec<(String, String, jsonschema::Validator)>> {
    let name = kind.name();
    let contracts = wire::providers::contracts();
    let mut out = Vec::new();
    for op in contracts[name]["operations"].as_array().into_iter().flatten() {
        let validator = crate::contracts::compile(&op["request"]).map_err(|e| {
            Error::Provider(format!(
                "{name}: the request schema of {} {} does not compile: {e}",
                op["method"], op["path"]
            ))
        })?;
        out.push((
            op["method"].as_str().unwrap_or_default().into(),
            op["path"].as_str().unwrap_or_default().into(),
            validator,
        ));
    }
    Ok(out)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Provider {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn journal(&self, mut entry: JournalEntry) {
        let mut inner = self.lock();
        entry.seq = inner.journal.len() as u64 + 1;
        inner.journal.push(entry);
    }

    /// The faults that apply to a request in `scope`, used up as they apply.
    fn take_faults(&self, scope: Option<&str>) -> Vec<Fault> {
        let mut inner = self.lock();
        let mut applied = Vec::new();
        for f in inner.faults.iter_mut() {
            if f.scope.as_deref().is_none_or(|s| Some(s) == scope) && f.remaining != Some(0) {
                if let Some(n) = f.remaining.as_mut() {
                    *n -= 1;
                }
                applied.push(f.clone());
            }
        }
        inner.faults.retain(|f| f.remaining != Some(0));
        applied
    }

    fn next_id(&self, prefix: &str) -> String {
        let mut inner = self.lock();
        inner.next_id += 1;
        format!("{prefix}_{:06}", inner.next_id)
    }

    /// Send a signed webhook after the configured delay, retrying failures.
    /// `caller_id` names the request it answers, so that an undelivered one can
    /// be sent again when that request is repeated.
    fn webhook(&self, body: Value, trace_id: Option<String>, caller_id: Option<String>) {
        self.send_webhook(body, trace_id, caller_id, true);
    }

    fn send_webhook(&self, body: Value, trace_id: Option<String>, caller_id: Option<String>, delay: bool) {
        let (Some(base), Some(hook)) = (self.webhook_base.clone(), self.spec.webhook.clone()) else { return };
        let this = self.clone();
        self.runtime.spawn(async move {
            if delay {
                tokio::time::sleep(Duration::from_millis(hook.delay_ms)).await;
            }
            let url = format!("{}{}", base.trim_end_matches('/'), hook.path);
            let bytes = serde_json::to_vec(&body).unwrap_or_default();
            let policy = wire::backoff::Backoff::new(Duration::from_millis(100), WEBHOOK_MAX_BACKOFF);
            for attempt in 1..=WEBHOOK_ATTEMPTS {
                let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
                let mut req = this
                    .http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header(wire::SIGNATURE_HEADER, wire::sign(&this.secret, now, &bytes))
                    .body(bytes.clone());
                if let Some(t) = &trace_id {
                    req = req.header("x-trace-id", t);
                }
                let status = match req.send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                this.journal(JournalEntry {
                    seq: 0,
                    at: now_ms(),
                    direction: "out".into(),
                    method: "POST".into(),
                    path: hook.path.clone(),
                    scope: this.spec.scope_of(&body),
                    trace_id: trace_id.clone(),
                    body: body.clone(),
                    status,
                    fault: None,
                });
                if (200..300).contains(&status) || (400..500).contains(&status) && status != 429 {
                    // Delivered, or refused for good (a bad signature is not retried).
                    return;
                }
                tracing::warn!(%url, status, attempt, "webhook not delivered; retrying");
                tokio::time::sleep(policy.delay(attempt)).await;
            }
            if let Some(id) = caller_id {
                tracing::warn!(%url, %id, "webhook undelivered after {WEBHOOK_ATTEMPTS} attempts; kept for a repeat");
                this.lock().undelivered.push((id, body, trace_id));
            }
        });
    }

    /// A repeated request: send again the webhook that never arrived, if any.
    fn redeliver_for(&self, caller_id: &str) {
        let mut inner = self.lock();
        let Some(i) = inner.undelivered.iter().position(|(id, _, _)| id == caller_id) else { return };
        let (id, body, trace_id) = inner.undelivered.remove(i);
        drop(inner);
        self.send_webhook(body, trace_id, Some(id), false);
    }
}

fn problem(status: u16, detail: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({ "error": detail }))
}

/// The provider's own API.
struct Api(Provider);

impl Respond for Api {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let p = &self.0;
        let path = request.url.path().to_string();
        let trace_id = request.headers.get("x-trace-id").and_then(|v| v.to_str().ok()).map(String::from);
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let scope = p.spec.scope_of(&body);
        let faults = p.take_faults(scope.as_deref());
        let fault_kind = faults.first().map(|f| f.kind);
        let record = |status: u16, fault: Option<FaultKind>| {
            p.journal(JournalEntry {
                seq: 0,
                at: now_ms(),
                direction: "in".into(),
                method: request.method.to_string(),
                path: path.clone(),
                scope: scope.clone(),
                trace_id: trace_id.clone(),
                body: body.clone(),
                status,
                fault,
            });
        };
        if let Some(f) = faults.iter().find(|f| f.kind == FaultKind::Unavailable) {
            record(503, Some(f.kind));
            return problem(503, "service unavailable (fault injected)");
        }
        if let Some(f) = faults.iter().find(|f| f.kind == FaultKind::Timeout) {
            record(0, Some(f.kind));
            return ResponseTemplate::new(504).set_delay(TIMEOUT_HOLD);
        }
        let delay = faults
            .iter()
            .filter(|f| f.kind == FaultKind::Slow)
            .map(|f| Duration::from_millis(f.delay_ms.unwrap_or(1000)))
            .max()
            .unwrap_or_default();
        let reject = faults.iter().find(|f| f.kind == FaultKind::Reject);
        let lose_webhook = faults.iter().any(|f| f.kind == FaultKind::LoseWebhook);
        // A body that is not what the operation takes is refused before
        // anything happens, naming each field and its rule.
        let method = request.method.as_str();
        if let Some((_, _, validator)) = p.requests.iter().find(|(m, pth, _)| m == method && *pth == path) {
            let broken = crate::contracts::mismatches(validator, &body);
            if !broken.is_empty() {
                record(400, fault_kind);
                return ResponseTemplate::new(400).set_body_json(json!({
                    "error": format!("the request does not match the {} API's {method} {path}: {}", p.spec.name, broken.join("; ")),
                }));
            }
        }
        let (status, response) = match (p.spec.kind, request.method.as_str(), path.as_str()) {
            (Kind::PaymentScheme, "POST", "/payments") => {
                scheme_payment(p, &body, reject, lose_webhook, trace_id.clone())
            }
            (Kind::PaymentScheme, "POST", "/returns") => {
                match required(&body, "/scheme_id").and(required(&body, "/reason")) {
                    Ok(_) => (202, json!({ "scheme_id": body["scheme_id"], "status": "returned" })),
                    Err(e) => e,
                }
            }
            (Kind::PaymentScheme, "GET", status) if status.starts_with("/payments/") => {
                let id = &status["/payments/".len()..];
                match p.lock().statuses.iter().find(|(k, _)| k == id) {
                    Some((_, answer)) => (200, answer.clone()),
                    None => (404, json!({ "error": format!("no payment `{id}` was sent to the scheme") })),
                }
            }
            (Kind::CardAcquirer, "POST", "/charges") => acquirer_charge(p, &body, reject, trace_id.clone()),
            (Kind::ScreeningVendor, "POST", "/screenings") => vendor_screening(p, &body, reject),
            _ => (404, json!({ "error": format!("{} {path} is not part of the {} API", request.method, p.spec.name) })),
        };
        record(status, fault_kind);
        ResponseTemplate::new(status).set_body_json(response).set_delay(delay)
    }
}

/// A field of the request as `T`, or a 400 naming it.
fn read<T: serde::de::DeserializeOwned>(body: &Value, field: &str) -> std::result::Result<T, (u16, Value)> {
    serde_json::from_value(body[field].clone()).map_err(|e| (400, json!({ "error": format!("field {field}: {e}") })))
}

/// A body the provider sends, as JSON (its journal keeps JSON).
fn to_json(body: &impl Serialize) -> Value {
    serde_json::to_value(body).unwrap_or_default()
}

fn required<'a>(body: &'a Value, pointer: &str) -> std::result::Result<&'a Value, (u16, Value)> {
    body.pointer(pointer).filter(|v| !v.is_null()).ok_or_else(|| {
        (400, json!({ "error": format!("missing field {}", pointer.trim_start_matches('/').replace('/', ".")) }))
    })
}

/// The caller's id for the request (what repeats are recognised by), once every
/// field the provider needs is present.
fn caller_id(body: &Value, id: &str, fields: &[&str]) -> std::result::Result<String, (u16, Value)> {
    let id = required(body, id)?.as_str().unwrap_or_default().to_string();
    for f in fields {
        required(body, f)?;
    }
    Ok(id)
}

/// A repeat of an accepted request (same caller id) gets the first answer, and
/// nothing is sent twice.
fn accepted_before(p: &Provider, id: &str) -> Option<Value> {
    let first = p.lock().accepted.iter().find(|(k, _)| k == id).map(|(_, v)| v.clone());
    if first.is_some() {
        p.redeliver_for(id);
    }
    first
}

fn scheme_payment(
    p: &Provider,
    body: &Value,
    reject: Option<&Fault>,
    lose_webhook: bool,
    trace_id: Option<String>,
) -> (u16, Value) {
    let checked = caller_id(
        body,
        "/payment_id",
        &["/creditor/sort_code", "/creditor/account_number", "/amount/amount", "/amount/currency"],
    );
    let id = match checked {
        Ok(id) => id,
        Err(e) => return e,
    };
    if let Some(first) = accepted_before(p, &id) {
        return (202, first);
    }
    let (amount, creditor): (Amount, Details) = match (read(body, "amount"), read(body, "creditor")) {
        (Ok(amount), Ok(creditor)) => (amount, creditor),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let scheme_id = p.next_id("fps");
    let answer = json!({ "scheme_id": scheme_id, "payment_id": id, "status": "accepted" });
    p.lock().accepted.push((id.clone(), answer.clone()));
    let outcome = match reject {
        Some(f) => {
            json!({ "result": "rejected", "reason": f.reason.clone().unwrap_or_else(|| "AB05".into()), "description": "rejected (fault injected)" })
        }
        None => p.spec.outcome(body),
    };
    let settled = outcome["result"] == "settled";
    let (payment_id, debtor_account) = (id.clone(), body["debtor_account"].as_str().map(String::from));
    let hook = if settled {
        SchemeWebhook::Settled { scheme_id: scheme_id.clone(), payment_id, debtor_account, amount: amount.clone() }
    } else {
        SchemeWebhook::Rejected {
            scheme_id: scheme_id.clone(),
            payment_id,
            debtor_account,
            amount: amount.clone(),
            reason: outcome["reason"].as_str().unwrap_or("AB05").to_string(),
            description: outcome["description"].as_str().unwrap_or("rejected").to_string(),
        }
    };
    // A status enquiry says what the webhook says.
    let (reason, description) = match &hook {
        SchemeWebhook::Rejected { reason, description, .. } => (Some(reason.clone()), Some(description.clone())),
        _ => (None, None),
    };
    let status = SchemePaymentStatus {
        payment_id: id.clone(),
        scheme_id,
        status: if settled { "settled" } else { "rejected" }.into(),
        reason,
        description,
    };
    p.lock().statuses.push((id.clone(), to_json(&status)));
    if lose_webhook {
        tracing::info!(payment_id = %id, "webhook lost (fault injected): only a status enquiry finds the outcome");
    } else {
        p.webhook(to_json(&hook), trace_id.clone(), Some(id.clone()));
    }
    if settled && p.spec.is_inbound(&body["creditor"]["sort_code"]) {
        // A payment between two customers of the bank comes back to it.
        let mut from = serde_json::Map::new();
        from.insert("payment_id".into(), json!(id));
        from.insert("debtor_account".into(), body["debtor_account"].clone());
        let inbound = SchemeWebhook::Received(InboundPayment {
            scheme_id: p.next_id("fps"),
            to: creditor,
            from: Sender { name: "Faster Payment".into(), more: from },
            amount,
            reference: body["reference"].as_str().unwrap_or_default().to_string(),
        });
        p.webhook(to_json(&inbound), trace_id, Some(format!("{id}/inbound")));
    }
    (202, answer)
}

fn acquirer_charge(p: &Provider, body: &Value, reject: Option<&Fault>, trace_id: Option<String>) -> (u16, Value) {
    let checked = caller_id(body, "/charge_id", &["/card_token", "/amount/amount", "/amount/currency"]);
    let id = match checked {
        Ok(id) => id,
        Err(e) => return e,
    };
    if let Some(first) = accepted_before(p, &id) {
        return (201, first);
    }
    let outcome = match reject {
        Some(f) => {
            json!({ "result": "declined", "reason": f.reason.clone().unwrap_or_else(|| "do_not_honour".into()) })
        }
        None => p.spec.outcome(body),
    };
    let amount: Amount = match read(body, "amount") {
        Ok(amount) => amount,
        Err(e) => return e,
    };
    let succeeded = outcome["result"] == "succeeded";
    let charge = Charge {
        acquirer_id: p.next_id("ch"),
        charge_id: id.clone(),
        status: if succeeded { ChargeStatus::Succeeded } else { ChargeStatus::Declined },
        amount,
        card_token: body["card_token"].as_str().unwrap_or_default().to_string(),
        reason: (!succeeded).then(|| outcome["reason"].as_str().unwrap_or("declined").to_string()),
    };
    let answer = to_json(&charge);
    p.lock().accepted.push((id.clone(), answer.clone()));
    p.webhook(to_json(&AcquirerWebhook::of(charge)), trace_id, Some(id));
    (201, answer)
}

fn vendor_screening(p: &Provider, body: &Value, reject: Option<&Fault>) -> (u16, Value) {
    let id = match required(body, "/transaction_id") {
        Ok(v) => v.clone(),
        Err(e) => return e,
    };
    let outcome = match reject {
        Some(f) => {
            json!({ "score": 99, "reasons": [f.reason.clone().unwrap_or_else(|| "high risk (fault injected)".into())] })
        }
        None => p.spec.outcome(body),
    };
    (200, json!({ "transaction_id": id, "score": outcome["score"], "reasons": outcome["reasons"] }))
}

/// `/__admin`: the journal, faults, and (scheme) inbound payments.
struct Admin(Provider);

#[derive(Debug, Deserialize)]
struct Inbound {
    to: Details,
    from: Sender,
    amount: Amount,
    #[serde(default)]
    reference: Option<String>,
}

impl Respond for Admin {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let p = &self.0;
        let path = request.url.path().trim_start_matches("/__admin");
        let scope = request.url.query_pairs().find(|(k, _)| k == "scope").map(|(_, v)| v.to_string());
        match (request.method.as_str(), path) {
            ("GET", "/health") => {
                ResponseTemplate::new(200).set_body_json(json!({ "status": "ok", "provider": p.spec.name }))
            }
            ("GET", "/journal") => {
                let inner = p.lock();
                let entries: Vec<&JournalEntry> =
                    inner.journal.iter().filter(|e| scope.is_none() || e.scope == scope).collect();
                ResponseTemplate::new(200).set_body_json(json!({ "provider": p.spec.name, "entries": entries }))
            }
            ("POST", redeliver) if redeliver.starts_with("/journal/") && redeliver.ends_with("/redeliver") => {
                let seq = redeliver.trim_start_matches("/journal/").trim_end_matches("/redeliver");
                let entry = seq
                    .parse::<u64>()
                    .ok()
                    .and_then(|n| p.lock().journal.iter().find(|e| e.seq == n && e.direction == "out").cloned());
                match entry {
                    Some(e) => {
                        p.send_webhook(e.body.clone(), e.trace_id.clone(), None, false);
                        ResponseTemplate::new(202).set_body_json(json!({ "redelivering": e.seq, "path": e.path }))
                    }
                    None => problem(
                        404,
                        &format!(
                            "no webhook `{seq}` in the journal; redeliver the `seq` of an entry with direction `out`"
                        ),
                    ),
                }
            }
            ("GET", "/faults") => ResponseTemplate::new(200).set_body_json(json!({ "faults": p.lock().faults })),
            ("POST", "/faults") => match serde_json::from_slice::<Fault>(&request.body) {
                Ok(mut fault) => {
                    if fault.remaining == Some(0) {
                        return problem(400, "`remaining` must be at least 1 (or absent for until cleared)");
                    }
                    let mut inner = p.lock();
                    inner.next_fault += 1;
                    fault.id = inner.next_fault;
                    inner.faults.push(fault.clone());
                    ResponseTemplate::new(201).set_body_json(fault)
                }
                Err(e) => problem(
                    400,
                    &format!(
                        "not a fault: {e}; expected {{\"kind\": \"unavailable|slow|timeout|reject|lose_webhook\", \"scope\"?, \"remaining\"?, \"delay_ms\"?, \"reason\"?}}"
                    ),
                ),
            },
            ("DELETE", "/faults") => {
                let mut inner = p.lock();
                let before = inner.faults.len();
                inner.faults.retain(|f| scope.is_some() && f.scope != scope);
                ResponseTemplate::new(200).set_body_json(json!({ "cleared": before - inner.faults.len() }))
            }
            ("POST", "/inbound-payments") if p.spec.kind == Kind::PaymentScheme => {
                match serde_json::from_slice::<Inbound>(&request.body) {
                    Ok(inbound) => {
                        let scheme_id = p.next_id("fps");
                        let hook = SchemeWebhook::Received(InboundPayment {
                            scheme_id: scheme_id.clone(),
                            to: inbound.to,
                            from: inbound.from,
                            amount: inbound.amount,
                            reference: inbound.reference.unwrap_or_default(),
                        });
                        p.webhook(to_json(&hook), None, None);
                        ResponseTemplate::new(202).set_body_json(json!({ "scheme_id": scheme_id }))
                    }
                    Err(e) => {
                        problem(400, &format!("not an inbound payment: {e}; expected {{to, from, amount, reference?}}"))
                    }
                }
            }
            _ => problem(404, &format!("no admin endpoint {} {path}", request.method)),
        }
    }
}

/// A running provider; stops when dropped.
pub struct Running {
    pub server: MockServer,
}

impl Running {
    pub fn uri(&self) -> String {
        self.server.uri()
    }
}

/// Serve `spec` on `listener`. Webhooks go to `webhook_base` + the spec's path,
/// signed with `secret`.
pub async fn serve(spec: Spec, listener: TcpListener, webhook_base: Option<String>, secret: &[u8]) -> Result<Running> {
    let spec_kind = spec.kind;
    let provider = Provider {
        spec: Arc::new(spec),
        inner: Arc::default(),
        webhook_base,
        secret: Arc::new(secret.to_vec()),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Error::Provider(format!("cannot build the webhook client: {e}")))?,
        runtime: tokio::runtime::Handle::current(),
        requests: Arc::new(request_validators(spec_kind)?),
    };
    let server = MockServer::builder().listener(listener).start().await;
    Mock::given(wiremock::matchers::path_regex("^/__admin/"))
        .respond_with(Admin(provider.clone()))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(any()).respond_with(Api(provider)).with_priority(10).mount(&server).await;
    Ok(Running { server })
}

/// The `sandbox provider` command: serve until killed.
pub async fn run(spec_path: &std::path::Path, listen: std::net::SocketAddr) -> Result<()> {
    let spec = Spec::load(spec_path)?;
    let listener = TcpListener::bind(listen).map_err(|cause| match cause.kind() {
        std::io::ErrorKind::AddrInUse => {
            Error::PortTaken { port: listen.port(), what: format!("the {} mock", spec.name), cause }
        }
        _ => Error::io(format!("{}: cannot listen on {listen}", spec.name))(cause),
    })?;
    let webhook_base = std::env::var("WEBHOOK_BASE_URL").ok();
    let secret = std::env::var("WEBHOOK_SECRET").unwrap_or_default();
    if webhook_base.is_some() && secret.is_empty() {
        return Err(Error::Provider(format!("{}: WEBHOOK_SECRET is not set; webhooks must be signed", spec.name)));
    }
    let name = spec.name.clone();
    let _running = serve(spec, listener, webhook_base, secret.as_bytes()).await?;
    eprintln!("{name} listening on {listen}");
    std::future::pending::<()>().await;
    Ok(())
}

/// A client of a provider's `/__admin` API: what the e2e steps, the TUI and a
/// developer's scripts use to steer a running provider.
#[derive(Debug, Clone)]
pub struct AdminClient {
    name: String,
    base: String,
    http: reqwest::Client,
}

impl AdminClient {
    pub fn new(name: &str, base: &str) -> Self {
        Self {
            name: name.into(),
            base: format!("{}/__admin", base.trim_end_matches('/')),
            http: reqwest::Client::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    async fn call(&self, req: reqwest::RequestBuilder, what: &str) -> Result<Value> {
        let resp = req
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| Error::Provider(format!("{}: cannot {what}: {e}", self.name)))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(body)
        } else {
            Err(Error::Provider(format!("{}: cannot {what}: {status} {body}", self.name)))
        }
    }

    /// Add a fault; returns it with its id.
    pub async fn add_fault(&self, fault: &Fault) -> Result<Fault> {
        let body = self.call(self.http.post(format!("{}/faults", self.base)).json(fault), "add a fault").await?;
        serde_json::from_value(body).map_err(|e| Error::Provider(format!("{}: odd fault answer: {e}", self.name)))
    }

    /// Clear the faults scoped to `scope`.
    pub async fn clear_faults(&self, scope: &str) -> Result<()> {
        let req = self.http.delete(format!("{}/faults", self.base)).query(&[("scope", scope)]);
        self.call(req, "clear faults").await.map(|_| ())
    }

    /// What the provider received and sent, for one scope or all.
    pub async fn journal(&self, scope: Option<&str>) -> Result<Vec<JournalEntry>> {
        let mut req = self.http.get(format!("{}/journal", self.base));
        if let Some(s) = scope {
            req = req.query(&[("scope", s)]);
        }
        let body = self.call(req, "read the journal").await?;
        serde_json::from_value(body["entries"].clone())
            .map_err(|e| Error::Provider(format!("{}: odd journal: {e}", self.name)))
    }

    /// (scheme) A payment from another bank to `to`; returns its scheme id.
    pub async fn send_inbound(&self, to: Value, from: Value, pence: i64, reference: &str) -> Result<String> {
        let body =
            json!({ "to": to, "from": from, "amount": { "amount": pence, "currency": "GBP" }, "reference": reference });
        let answer =
            self.call(self.http.post(format!("{}/inbound-payments", self.base)).json(&body), "send a payment").await?;
        Ok(answer["scheme_id"].as_str().unwrap_or_default().to_string())
    }

    /// Send a journalled webhook again, as a provider retrying it would.
    pub async fn redeliver(&self, seq: u64) -> Result<()> {
        let url = format!("{}/journal/{seq}/redeliver", self.base);
        self.call(self.http.post(url), "redeliver a webhook").await.map(|_| ())
    }
}

impl AdminClient {
    /// The faults in force.
    pub async fn faults(&self) -> Result<Vec<Fault>> {
        let body = self.call(self.http.get(format!("{}/faults", self.base)), "read its faults").await?;
        serde_json::from_value(body["faults"].clone())
            .map_err(|e| Error::Provider(format!("{}: odd faults: {e}", self.name)))
    }

    /// Clear every fault, whatever its scope.
    pub async fn clear_all_faults(&self) -> Result<()> {
        self.call(self.http.delete(format!("{}/faults", self.base)), "clear faults").await.map(|_| ())
    }
}
