//! Killing and restarting the bank's components mid-flow.

use cucumber::when;

use super::Step;
use crate::e2e::world::BankWorld;

#[when(regex = r"^the ([a-z-]+?)(?: service)? is killed$")]
async fn killed(w: &mut BankWorld, component: String) -> Step {
    w.ctx().target.control.kill(&component).await?;
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
