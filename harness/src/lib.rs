//! The harness: everything `bank-sandbox` does, as a library. The topology model
//! (`topology`), the backends that run components (`backend`), the engine that
//! orchestrates them (`engine`), the supervisor that owns a running sandbox and
//! its control API (`supervisor`, `control`), and the embedded broker (`broker`).
//!
//! The `sandbox` binary is a thin client of this library, as the TUI and the e2e
//! runner will be. This crate must not link the bank's code (it runs the `bank`
//! binary) and must not depend on a terminal UI crate.

pub mod api;
pub mod backend;
pub mod bench;
pub mod broker;
pub mod compose;
pub mod containers;
pub mod contracts;
pub mod control;
pub mod e2e;
pub mod engine;
pub mod error;
pub mod files;
pub mod flows;
pub mod fresh;
pub mod fuzz;
pub mod images;
pub mod inabox;
pub mod logs;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod progress;
pub mod providers;
pub mod python;
pub mod sandbox;
pub mod scaffold;
pub mod signals;
pub mod start;
pub mod supervisor;
pub mod target;
pub mod topics;
pub mod topology;

pub use error::{Error, Result};

use std::path::{Path, PathBuf};

/// The topology file, relative to the workspace root.
pub const TOPOLOGY: &str = "compose/bank.yaml";

/// The topology files a backend runs by default: the topology itself, and for
/// the Docker backend the override that runs the broker and PostgreSQL from the
/// images `sandbox images build` makes (no registry is needed).
pub fn default_topology(workspace: &Path, backend: backend::Kind) -> Vec<PathBuf> {
    match backend {
        backend::Kind::Local => vec![workspace.join(TOPOLOGY)],
        backend::Kind::Docker => vec![workspace.join(TOPOLOGY), workspace.join(images::LOCAL_IMAGES)],
    }
}

/// The bank-sandbox workspace: the nearest directory at or above `from` holding
/// `compose/bank.yaml` and a `Cargo.toml`; else the one cargo ran this binary
/// from (`cargo sandbox`, `cargo test` set `CARGO_MANIFEST_DIR`), else the one
/// holding this binary (`target/` inside the workspace).
///
/// Found at run time only: a path compiled in (`env!("CARGO_MANIFEST_DIR")`)
/// made the library's build depend on where the workspace lies, so a copy of
/// it (the tutorial's) compiled the harness again instead of reusing it.
pub fn find_workspace(from: &Path) -> Option<PathBuf> {
    let is_root = |d: &Path| d.join(TOPOLOGY).is_file() && d.join("Cargo.toml").is_file();
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    let exe = std::env::current_exe().ok();
    [Some(from.to_path_buf()), manifest, exe]
        .into_iter()
        .flatten()
        .find_map(|start| start.ancestors().find(|d| is_root(d)).map(Path::to_path_buf))
}
