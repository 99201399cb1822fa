//! The bank's invariants, checked after every scenario against what the
//! scenario did: every flow it started reached a final state; money is
//! conserved (each account holds exactly what came in minus what went out, and
//! its postings add up to its balance); no posting was applied twice; every
//! event in each service's log is on Kafka, and every event read from Kafka
//! matches the schema of its type (`crate::contracts`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::Context;
use super::world::{BankWorld, Flow, SETTLE};
use crate::api::{self, pounds};

/// Final statuses of the flows the scenario can start.
fn is_final(kind: Flow, status: &str) -> bool {
    match kind {
        Flow::Payment => matches!(status, "completed" | "failed"),
        Flow::TopUp => matches!(status, "succeeded" | "failed"),
    }
}

/// What the scenario expects of one account.
#[derive(Debug, Default)]
struct Expected {
    credits: Vec<(i64, String)>,
    debits: Vec<(i64, String)>,
}

/// Every broken invariant, each on its own line; empty when all hold.
pub async fn audit(w: &BankWorld) -> Vec<String> {
    let mut problems = Vec::new();
    let api = w.api();
    let mut expected: BTreeMap<String, Expected> = BTreeMap::new();
    for person in w.people.values() {
        if let Some(a) = &person.account
            && let Ok(url) = api::link(a, "self")
        {
            expected.entry(url).or_default();
        }
    }
    for (url, pence) in &w.deposits {
        expected.entry(url.clone()).or_default().credits.push((*pence, "a deposit".into()));
    }

    // 1. Every flow the scenario started ends.
    for s in &w.started {
        let what = format!("{:?} {} ({})", s.kind, s.url, pounds(s.pence));
        let done = api
            .wait_until(&s.url, &format!("{what} to reach a final state"), SETTLE, |r| {
                is_final(s.kind, r["status"].as_str().unwrap_or_default())
            })
            .await;
        let status = match done {
            Ok(r) => r["status"].as_str().unwrap_or_default().to_string(),
            Err(e) => {
                problems.push(format!("unfinished: {e}"));
                continue;
            }
        };
        match (s.kind, status.as_str()) {
            (Flow::Payment, "completed") => {
                expected.entry(s.account.clone()).or_default().debits.push((s.pence, format!("payment {}", s.url)));
                if let Some(to) = &s.to_account {
                    let arrived = w
                        .ctx()
                        .topics
                        .wait_for(&format!("the payment {} to arrive", s.url), SETTLE, |e| {
                            e.event.kind == "payment.received" && e.event.data["from"]["payment_id"] == s.id.as_str()
                        })
                        .await;
                    match arrived {
                        Ok(_) => expected
                            .entry(to.clone())
                            .or_default()
                            .credits
                            .push((s.pence, format!("payment {}", s.url))),
                        Err(e) => problems.push(format!("lost: {e}")),
                    }
                }
            }
            (Flow::TopUp, "succeeded") => {
                expected.entry(s.account.clone()).or_default().credits.push((s.pence, format!("top-up {}", s.url)));
            }
            _ => {}
        }
    }
    for i in &w.inbound {
        let kind = if i.account.is_some() { "payment.received" } else { "payment.returned" };
        let seen = w
            .ctx()
            .topics
            .wait_for(&format!("inbound payment {} to be {kind}", i.scheme_id), SETTLE, |e| {
                e.event.kind == kind && e.event.data["scheme_id"] == i.scheme_id.as_str()
            })
            .await;
        match (seen, &i.account) {
            (Ok(_), Some(account)) => {
                expected.entry(account.clone()).or_default().credits.push((i.pence, format!("inbound {}", i.scheme_id)))
            }
            (Ok(_), None) => {}
            (Err(e), _) => problems.push(format!("unfinished: {e}")),
        }
    }

    // 2. Conservation and single application, account by account.
    for (url, want) in &expected {
        problems.extend(check_account(w, url, want).await);
    }

    // 3. Every event each service logged is on Kafka, and every event read
    // from Kafka so far matches the schema of its type.
    problems.extend(events_on_kafka(w.ctx()).await);
    problems.extend(w.ctx().check_contracts().into_iter().map(|p| format!("broken contract: {p}")));
    problems
}

async fn check_account(w: &BankWorld, url: &str, want: &Expected) -> Vec<String> {
    let api = w.api();
    let mut problems = Vec::new();
    // Credits from another service (an inbound payment) may land a moment after
    // the event that announced them: wait for the balance, then check the rest.
    let expected_balance: i64 =
        want.credits.iter().map(|(p, _)| p).sum::<i64>() - want.debits.iter().map(|(p, _)| p).sum::<i64>();
    let account = match api
        .wait_until(url, &format!("{url} to hold {}", pounds(expected_balance)), SETTLE, |a| {
            a["balance"]["amount"].as_i64() == Some(expected_balance) && a["held"]["amount"].as_i64() == Some(0)
        })
        .await
    {
        Ok(a) => a,
        Err(e) => {
            let flows: Vec<String> = want
                .credits
                .iter()
                .map(|(p, why)| format!("+{} {why}", pounds(*p)))
                .chain(want.debits.iter().map(|(p, why)| format!("-{} {why}", pounds(*p))))
                .collect();
            problems
                .push(format!("money not conserved: {e}; expected from the scenario's flows: [{}]", flows.join(", ")));
            match api.get(url).await {
                Ok(a) => a,
                Err(_) => return problems,
            }
        }
    };
    let postings = match api.transactions(&account).await {
        Ok(p) => p,
        Err(e) => return vec![format!("cannot read the postings of {url}: {e}")],
    };
    let mut running = 0i64;
    let mut credits = 0usize;
    let mut debits = 0usize;
    let mut holds_debited: BTreeMap<String, usize> = BTreeMap::new();
    for t in &postings {
        let amount = t["amount"]["amount"].as_i64().unwrap_or(0);
        match t["kind"].as_str() {
            Some("credit") => {
                running += amount;
                credits += 1;
            }
            Some("debit") => {
                running -= amount;
                debits += 1;
                match api::link(t, "hold") {
                    Ok(h) => *holds_debited.entry(h).or_default() += 1,
                    Err(_) => problems.push(format!("{url}: debit {} has no hold", t["id"])),
                }
            }
            other => problems.push(format!("{url}: a posting of unknown kind {other:?}")),
        }
        if t["balance_after"]["amount"].as_i64() != Some(running) {
            problems.push(format!(
                "{url}: posting {} says the balance became {}, the postings before it add up to {}",
                t["id"],
                t["balance_after"]["amount"],
                pounds(running)
            ));
        }
    }
    if account["balance"]["amount"].as_i64() != Some(running) {
        problems.push(format!(
            "money not conserved: {url} shows a balance of {}, its postings add up to {}",
            account["balance"]["amount"],
            pounds(running)
        ));
    }
    for (hold, n) in holds_debited.iter().filter(|(_, n)| **n > 1) {
        problems.push(format!("applied twice: hold {hold} was captured by {n} debits"));
    }
    if credits != want.credits.len() {
        problems.push(format!(
            "{url}: {credits} credit postings, but the scenario made {} credits ({}); a posting was {}",
            want.credits.len(),
            want.credits.iter().map(|(_, why)| why.as_str()).collect::<Vec<_>>().join(", "),
            if credits > want.credits.len() { "applied twice" } else { "lost" }
        ));
    }
    if debits != want.debits.len() {
        problems.push(format!(
            "{url}: {debits} debit postings, but {} payments from it completed; a posting was {}",
            want.debits.len(),
            if debits > want.debits.len() { "applied twice" } else { "lost" }
        ));
    }
    problems
}

/// Every event in each service's log, up to its head now, read back from Kafka.
/// Only what no earlier audit covered is checked.
async fn events_on_kafka(ctx: &Context) -> Vec<String> {
    let mut problems = Vec::new();
    for (service, url) in &ctx.sources {
        let mut after = ctx.audited(service);
        loop {
            let page = match ctx.api.get(&format!("{url}/events?after={after}&limit=1000")).await {
                Ok(p) => p,
                Err(e) => {
                    problems.push(format!("cannot read {service}'s event log: {e}"));
                    break;
                }
            };
            let events: Vec<Value> = page["_embedded"]["events"].as_array().cloned().unwrap_or_default();
            if events.is_empty() {
                break;
            }
            for e in &events {
                let Some(id) = e["id"].as_str().and_then(|s| uuid::Uuid::parse_str(s).ok()) else { continue };
                let what = format!("{service} event #{} {} ({id})", e["seq"], e["type"].as_str().unwrap_or("?"));
                if !ctx.topics.contains(id)
                    && let Err(err) =
                        ctx.topics.wait_for(&what, SETTLE.min(Duration::from_secs(15)), |s| s.event.id == id).await
                {
                    problems.push(format!("missing from Kafka: {err}"));
                    return problems;
                }
            }
            after = page["cursor"].as_i64().unwrap_or(after);
            ctx.set_audited(service, after);
        }
    }
    problems
}
