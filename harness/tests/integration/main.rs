//! The harness's integration tests: one binary, a module per area.

mod cli;
mod providers;
