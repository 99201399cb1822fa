//! Plain progress lines: how `up` reports start-up without a TUI. Prints one line
//! per change of a component's status, so the same function serves a
//! foreground `up` (watching the engine) and `up --detach` (polling the API).

use std::fmt::Write as _;

use crate::engine::{Component, Endpoint, State, Status};

/// Lines describing how `next` differs from `prev`.
pub fn transitions(prev: Option<&State>, next: &State) -> Vec<String> {
    let width = name_width(next);
    next.components
        .iter()
        .filter(|c| prev.and_then(|p| p.component(&c.name)).is_none_or(|old| old.status != c.status))
        .filter(|c| c.status != Status::Waiting)
        .map(|c| describe(c, width))
        .collect()
}

/// Wide enough for the longest component name.
fn name_width(state: &State) -> usize {
    state.components.iter().map(|c| c.name.len()).max().unwrap_or(0).max("COMPONENT".len())
}

fn describe(c: &Component, width: usize) -> String {
    let detail = match &c.status {
        Status::Healthy => c.ready_ms.map(|ms| format!("in {ms} ms")).unwrap_or_default(),
        Status::Starting => c.id.as_ref().map(ToString::to_string).unwrap_or_default(),
        Status::Exited { code } => code.map_or("killed by a signal".into(), |c| format!("code {c}")),
        Status::Failed { reason } => reason.clone(),
        _ => String::new(),
    };
    format!("{:<width$} {:<9} {detail}", c.name, c.status.label()).trim_end().to_string()
}

/// A table of components: what `status` prints and `up` prints once healthy.
pub fn table(state: &State) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "sandbox {} ({})", state.sandbox, format!("{:?}", state.phase).to_lowercase());
    let width = name_width(state);
    let _ = writeln!(out, "{:<width$} {:<9} {:<12} {:<8} URL", "COMPONENT", "STATUS", "ID", "RESTARTS");
    for c in &state.components {
        let url = c.endpoints.first().map_or(String::new(), Endpoint::shown);
        let id = c.id.as_ref().map_or("-".into(), |i| i.short());
        let _ = writeln!(out, "{:<width$} {:<9} {:<12} {:<8} {url}", c.name, c.status.label(), id, c.restarts);
    }
    out
}
