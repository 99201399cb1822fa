//! The scenario's world: the people it created, what it started (payments,
//! top-ups, inbound payments, deposits) and the faults it set, so that steps
//! can say "that payment" and the audit knows what to check.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use super::Context;
use crate::api::{self, Api, Reply, pounds};
use crate::error::Result;

/// How long a flow may take to reach the state a step waits for. Generous:
/// a step that waits never fails because the machine was slow, only because
/// the state never came.
pub const SETTLE: Duration = Duration::from_secs(20);

/// A customer the scenario created, by the name the scenario gave.
#[derive(Debug, Clone)]
pub struct Person {
    pub customer: Value,
    /// Their current account, once opened.
    pub account: Option<Value>,
    /// A card token of their own, so card faults scoped to it touch no one else.
    pub card: String,
}

impl Person {
    pub fn new(name: &str, customer: Value, account: Option<Value>) -> Self {
        let card = format!("tok_{}_{}", name.to_lowercase(), &uuid::Uuid::new_v4().simple().to_string()[..12]);
        Self { customer, account, card }
    }
}

/// Something the scenario started whose end the audit waits for.
#[derive(Debug, Clone)]
pub struct Started {
    pub kind: Flow,
    pub url: String,
    pub id: String,
    pub account: String,
    pub pence: i64,
    /// (payments) The scenario's account it pays, when the payee is one.
    pub to_account: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Payment,
    TopUp,
}

/// A payment request as a step sent it.
#[derive(Debug, Clone)]
pub struct PaymentRequest {
    pub from: String,
    pub payee: api::Payee,
    pub pence: i64,
    pub reference: String,
    pub key: String,
    pub to_account: Option<String>,
}

/// A payment sent to one of the scenario's accounts from another bank.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub scheme_id: String,
    /// The account it should reach; `None` when sent to details nobody has.
    pub account: Option<String>,
    pub pence: i64,
}

#[derive(cucumber::World)]
#[world(init = Self::empty)]
pub struct BankWorld {
    ctx: Option<Arc<Context>>,
    pub people: BTreeMap<String, Person>,
    /// Money put into accounts from outside the flows: (account URL, pence).
    pub deposits: Vec<(String, i64)>,
    pub started: Vec<Started>,
    pub inbound: Vec<Inbound>,
    /// The last answer to a request a step made.
    pub last_reply: Option<Reply>,
    /// The replies to a repeated request, in order.
    pub replies: Vec<Reply>,
    /// The last payment request sent, to send again.
    pub payment_request: Option<PaymentRequest>,
    /// The resource the explorer steps are looking at.
    pub here: Option<Value>,
    pub alert: Option<Value>,
    /// (provider, scope) of every fault set, cleared after the scenario.
    pub faults: Vec<(String, String)>,
    /// Components this scenario killed and has not started again.
    pub killed: Vec<String>,
    /// Each killed component's restarts when it was killed.
    pub restarts_at_kill: BTreeMap<String, u32>,
}

impl std::fmt::Debug for BankWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BankWorld")
            .field("people", &self.people.keys().collect::<Vec<_>>())
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl BankWorld {
    fn empty() -> Self {
        Self {
            ctx: None,
            people: BTreeMap::new(),
            deposits: Vec::new(),
            started: Vec::new(),
            inbound: Vec::new(),
            last_reply: None,
            replies: Vec::new(),
            payment_request: None,
            here: None,
            alert: None,
            faults: Vec::new(),
            killed: Vec::new(),
            restarts_at_kill: BTreeMap::new(),
        }
    }

    pub(super) fn attach(&mut self, ctx: Arc<Context>) {
        self.ctx = Some(ctx);
    }

    pub fn ctx(&self) -> &Context {
        self.ctx.as_deref().expect("the runner's before-hook attaches the context to every world")
    }

    pub fn api(&self) -> &Api {
        &self.ctx().api
    }

    pub fn person(&self, name: &str) -> anyhow::Result<&Person> {
        self.people.get(name).ok_or_else(|| {
            anyhow::anyhow!("this scenario has no customer called {name}; start with `Given {name} has £10.00`")
        })
    }

    /// A person's account resource, as it is now.
    pub async fn account(&self, name: &str) -> anyhow::Result<Value> {
        let person = self.person(name)?;
        let account = person
            .account
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("{name} has no account; `Given {name} has £10.00` opens one"))?;
        Ok(self.api().get(&api::link(account, "self")?).await?)
    }

    pub fn account_url(&self, name: &str) -> anyhow::Result<String> {
        let account = self.person(name)?.account.as_ref().ok_or_else(|| anyhow::anyhow!("{name} has no account"))?;
        Ok(api::link(account, "self")?)
    }

    /// The last payment or top-up the scenario started.
    pub fn last(&self, kind: Flow) -> anyhow::Result<&Started> {
        self.started.iter().rev().find(|s| s.kind == kind).ok_or_else(|| {
            anyhow::anyhow!(
                "no {} was started in this scenario",
                if kind == Flow::Payment { "payment" } else { "top-up" }
            )
        })
    }

    pub fn reply(&self) -> anyhow::Result<&Reply> {
        self.last_reply.as_ref().ok_or_else(|| anyhow::anyhow!("no request was made yet"))
    }

    /// A new customer with a GBP account.
    pub async fn open(&mut self, name: &str) -> anyhow::Result<Value> {
        let customer = self.api().new_customer(name).await?;
        let account = self.api().open_account(&customer, None).await?.ok()?;
        self.people.insert(name.into(), Person::new(name, customer, Some(account.clone())));
        Ok(account)
    }

    /// Deposit into a person's account; a refusal is kept as the last reply.
    pub async fn deposit(&mut self, name: &str, pence: i64) -> anyhow::Result<()> {
        let account = self.account(name).await?;
        let reference = format!("deposit {}", uuid::Uuid::new_v4().simple());
        let reply = self.api().deposit(&account, pence, &reference, &uuid::Uuid::new_v4().to_string()).await?;
        if reply.is_success() {
            self.deposits.push((api::link(&account, "self")?, pence));
        }
        self.last_reply = Some(reply);
        Ok(())
    }

    /// Remember a payment or top-up the bank accepted.
    pub fn track(&mut self, started: Started) {
        if !self.started.iter().any(|s| s.url == started.url) {
            self.started.push(started);
        }
    }

    /// Send a payment request; an accepted payment is tracked for the audit.
    pub async fn pay(&mut self, req: PaymentRequest) -> anyhow::Result<Reply> {
        let from = self.account(&req.from).await?;
        let reply = self.api().pay(&from, &req.payee, req.pence, &req.reference, &req.key).await?;
        if reply.is_success() {
            self.track(Started {
                kind: Flow::Payment,
                url: api::link(&reply.body, "self")?,
                id: reply.body["id"].as_str().unwrap_or_default().to_string(),
                account: api::link(&from, "self")?,
                pence: req.pence,
                to_account: req.to_account.clone(),
            });
        }
        self.payment_request = Some(req);
        self.last_reply = Some(reply.clone());
        self.replies.push(reply.clone());
        Ok(reply)
    }

    /// Wait for a flow the scenario started to reach `status`; the error
    /// carries the trail.
    pub async fn wait_status(&self, kind: Flow, status: &str) -> anyhow::Result<Value> {
        let s = self.last(kind)?;
        let what = format!("{:?} {} to be {status}", kind, s.url);
        let r = self.api().wait_until(&s.url, &what, SETTLE, |r| r["status"] == status).await;
        self.or_trail(r).await
    }

    /// Turn a library error into a step failure that carries the trail.
    pub async fn or_trail<T>(&self, r: Result<T>) -> anyhow::Result<T> {
        match r {
            Ok(v) => Ok(v),
            Err(e) => Err(self.failed(e).await),
        }
    }

    /// A step failure: what went wrong, then the trail that explains it.
    pub async fn failed(&self, what: impl std::fmt::Display) -> anyhow::Error {
        anyhow::anyhow!("{what}\n{}", self.trail().await)
    }

    /// The involved accounts (balances, postings, holds), the events that
    /// mention them or what the scenario started, the provider traffic scoped
    /// to them, and the log lines that carry those events' trace ids.
    pub async fn trail(&self) -> String {
        let mut out = String::from("---- trail ----\n");
        let mut needles: Vec<String> = Vec::new();
        for (name, person) in &self.people {
            let Some(account) = &person.account else { continue };
            let Ok(url) = api::link(account, "self") else { continue };
            needles.push(url.clone());
            needles.push(person.card.clone());
            match self.api().get(&url).await {
                Ok(a) => {
                    let _ = writeln!(
                        out,
                        "{name}: {url}\n  balance {} available {} held {}",
                        a["balance"]["amount"].as_i64().map_or("?".into(), pounds),
                        a["available"]["amount"].as_i64().map_or("?".into(), pounds),
                        a["held"]["amount"].as_i64().map_or("?".into(), pounds),
                    );
                    if let Ok(postings) = self.api().transactions(&a).await {
                        for t in postings {
                            let _ = writeln!(
                                out,
                                "  {:<6} {:>12}  balance after {:>12}  {}",
                                t["kind"].as_str().unwrap_or("?"),
                                t["amount"]["amount"].as_i64().map_or("?".into(), pounds),
                                t["balance_after"]["amount"].as_i64().map_or("?".into(), pounds),
                                t["reference"].as_str().unwrap_or(""),
                            );
                        }
                    }
                }
                Err(e) => {
                    let _ = writeln!(out, "{name}: {url}: cannot read the account: {e}");
                }
            }
        }
        for s in &self.started {
            needles.push(s.url.clone());
            needles.push(s.id.clone());
            let now = self.api().get(&s.url).await.map(|v| v["status"].as_str().unwrap_or("?").to_string());
            let _ =
                writeln!(out, "{:?} {} {}: {}", s.kind, pounds(s.pence), s.url, now.unwrap_or_else(|e| e.to_string()));
        }
        needles.extend(self.inbound.iter().map(|i| i.scheme_id.clone()));
        needles.retain(|n| !n.is_empty());
        let events = self.ctx().topics.find(|s| {
            let data = s.event.data.to_string();
            needles.iter().any(|n| data.contains(n.as_str()) || s.event.aggregate_id == *n)
        });
        let _ = writeln!(out, "events on Kafka mentioning them ({}):", events.len());
        let mut traces: Vec<String> = Vec::new();
        for s in events.iter().rev().take(40).rev() {
            let _ = writeln!(
                out,
                "  {}@{} {} {} trace {}",
                s.topic, s.offset, s.event.kind, s.event.aggregate_id, s.event.trace_id
            );
            if !traces.contains(&s.event.trace_id) {
                traces.push(s.event.trace_id.clone());
            }
        }
        for (provider, admin) in self.ctx().providers() {
            let Ok(journal) = admin.journal(None).await else { continue };
            let mine: Vec<_> = journal
                .iter()
                .filter(|e| {
                    let body = e.body.to_string();
                    needles.iter().any(|n| body.contains(n.as_str()))
                })
                .collect();
            if !mine.is_empty() {
                let _ = writeln!(out, "{provider} traffic:");
                for e in mine.iter().rev().take(20).rev() {
                    let _ = writeln!(out, "  {}", e.summary());
                }
            }
        }
        let lines = self.log_lines(&traces).await;
        let _ = writeln!(out, "log lines with their trace ids ({}):", lines.len());
        for l in lines.iter().rev().take(40).rev() {
            let _ = writeln!(out, "  {l}");
        }
        out
    }

    async fn log_lines(&self, traces: &[String]) -> Vec<String> {
        if traces.is_empty() {
            return Vec::new();
        }
        let Ok(stream) = self.ctx().target.control.logs(None, false, 5000).await else { return Vec::new() };
        stream
            .filter_map(|l| async move { l.ok() })
            .filter(|l| futures::future::ready(traces.iter().any(|t| l.text.contains(t.as_str()))))
            .map(|l| format!("{}: {}", l.component, l.text))
            .collect()
            .await
    }
}
