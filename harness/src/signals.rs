//! Signal names as Compose writes them (`SIGTERM`, `TERM`).

use nix::sys::signal::Signal;

pub fn parse(name: &str) -> Option<Signal> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    full.parse().ok()
}
