//! The Gherkin suite (`scenarios/*.feature`) against a fresh sandbox:
//! `cargo test --features e2e`. Arguments after `--`: a scenario-name filter,
//! `--tags EXPR`, `--shard i/n`, `--sandbox NAME` (use a running sandbox),
//! `--concurrency N`; the same from `SANDBOX_E2E_*` environment variables.

use std::process::ExitCode;

fn main() -> ExitCode {
    // The broker and the providers run as `sandbox broker|provider`.
    harness::e2e::main(std::path::Path::new(env!("CARGO_BIN_EXE_sandbox")))
}
