//! Step definitions, by family. Each is a line or three over the harness
//! library; what they wait for, they wait for with a deadline.

mod accounts;
mod alerts;
mod discovery;
mod events;
mod payments;
mod resilience;
mod topups;

use super::world::BankWorld;
use crate::providers::{Fault, FaultKind};

/// Steps fail with a message and, where it helps, the scenario's trail.
type Step = anyhow::Result<()>;

/// Set a fault on a provider for one scope (an account, a card), remembered so
/// that it is cleared when the scenario ends, passed or failed.
async fn fault(w: &mut BankWorld, provider: &str, scope: String, kind: FaultKind, remaining: Option<u32>) -> Step {
    add_fault(w, provider, Fault { id: 0, kind, scope: Some(scope), remaining, delay_ms: Some(1500), reason: None })
        .await
}

/// A provider that answers every request in one scope `seconds` late, until
/// the scenario ends.
async fn slow(w: &mut BankWorld, provider: &str, scope: String, seconds: u64) -> Step {
    let f = Fault {
        id: 0,
        kind: FaultKind::Slow,
        scope: Some(scope),
        remaining: None,
        delay_ms: Some(seconds * 1000),
        reason: None,
    };
    add_fault(w, provider, f).await
}

async fn add_fault(w: &mut BankWorld, provider: &str, f: Fault) -> Step {
    w.ctx().provider(provider)?.add_fault(&f).await?;
    w.faults.push((provider.to_string(), f.scope.unwrap_or_default()));
    Ok(())
}

/// While a provider is slow, a service that calls it answers its `/health`
/// with 200 and at once, each time over a few seconds.
#[cucumber::then(expr = "the {word} service stays healthy and answers at once")]
async fn stays_healthy(w: &mut BankWorld, service: String) -> Step {
    let url = format!("{}/{service}/health", w.api().gateway());
    let mut slowest = std::time::Duration::ZERO;
    for _ in 0..15 {
        let started = std::time::Instant::now();
        let reply = w.api().send("GET", &url, None, None).await?;
        slowest = slowest.max(started.elapsed());
        if reply.status != 200 {
            return Err(w.failed(format!("{service}'s /health answered {}: {}", reply.status, reply.body)).await);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    if slowest > std::time::Duration::from_secs(1) {
        return Err(w.failed(format!("{service}'s /health took {slowest:?} to answer")).await);
    }
    Ok(())
}

async fn recover(w: &mut BankWorld, provider: &str, scope: &str) -> Step {
    w.ctx().provider(provider)?.clear_faults(scope).await?;
    w.faults.retain(|(p, s)| !(p == provider && s == scope));
    Ok(())
}

/// After every scenario: clear its faults and bring back what it killed, so the
/// next scenario finds the bank whole. Returns what could not be undone.
pub async fn clean_up(w: &mut BankWorld) -> Vec<String> {
    let mut problems = Vec::new();
    for (provider, scope) in std::mem::take(&mut w.faults) {
        if let Err(e) = async { w.ctx().provider(&provider)?.clear_faults(&scope).await }.await {
            problems.push(format!("cannot clear the {provider} fault for {scope}: {e}"));
        }
    }
    for component in std::mem::take(&mut w.killed) {
        if let Err(e) = w.ctx().target.control.restart(&component).await {
            problems.push(format!("cannot start {component} again: {e}"));
        }
    }
    problems
}
