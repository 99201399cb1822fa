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
    let admin = w.ctx().provider(provider)?;
    let f = Fault { id: 0, kind, scope: Some(scope.clone()), remaining, delay_ms: Some(1500), reason: None };
    admin.add_fault(&f).await?;
    w.faults.push((provider.to_string(), scope));
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
