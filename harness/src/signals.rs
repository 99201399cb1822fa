//! Signal names as Compose writes them (`SIGTERM`, `TERM`).

use nix::sys::signal::Signal;

/// Resolves on SIGTERM or SIGINT. A command that has nothing to flush ends on
/// it: as PID 1 of a container, a process gets no default action for SIGTERM,
/// so without this `docker stop` would wait out its grace period and kill.
pub async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        // No handler could be installed: the default actions still apply.
        _ => std::future::pending().await,
    }
}

pub fn parse(name: &str) -> Option<Signal> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    full.parse().ok()
}
