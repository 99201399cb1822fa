//! Killing and restarting the bank's components mid-flow.

use cucumber::{then, when};

use super::Step;
use crate::e2e::world::BankWorld;

#[when(regex = r"^the ([a-z-]+?)(?: service)? is killed$")]
async fn killed(w: &mut BankWorld, component: String) -> Step {
    let state = w.ctx().target.control.state().await?;
    let restarts = state.component(&component).map_or(0, |c| c.restarts);
    w.ctx().target.control.kill(&component).await?;
    w.restarts_at_kill.insert(component.clone(), restarts);
    w.killed.push(component);
    Ok(())
}

/// A graceful stop, which no restart policy answers: down until started again.
#[when(regex = r"^the ([a-z-]+?)(?: service)? is stopped$")]
async fn stopped(w: &mut BankWorld, component: String) -> Step {
    w.ctx().target.control.stop(&component).await?;
    w.killed.push(component);
    Ok(())
}

#[when(regex = r"^the ([a-z-]+?)(?: service)? is started again$")]
async fn started_again(w: &mut BankWorld, component: String) -> Step {
    w.ctx().target.control.restart(&component).await?;
    w.killed.retain(|c| *c != component);
    Ok(())
}

#[when(regex = r"^the ([a-z-]+?)(?: service)? is restarted$")]
async fn restarted(w: &mut BankWorld, component: String) -> Step {
    w.ctx().target.control.restart(&component).await?;
    Ok(())
}

/// Its restart policy (`restart:` in compose/bank.yaml) started it again:
/// one more restart than when it was killed, and healthy.
#[then(regex = r"^the ([a-z-]+?)(?: service)? is back by its restart policy$")]
async fn back_by_policy(w: &mut BankWorld, component: String) -> Step {
    let before = *w
        .restarts_at_kill
        .get(&component)
        .ok_or_else(|| anyhow::anyhow!("{component} was not killed in this scenario"))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let state = w.ctx().target.control.state().await?;
        let c = state.component(&component).ok_or_else(|| anyhow::anyhow!("no component {component}"))?;
        if c.restarts > before && c.status == crate::engine::Status::Healthy {
            w.killed.retain(|k| *k != component);
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("{component} is {} 30 s after it was killed ({} restarts)", c.status.label(), c.restarts);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
