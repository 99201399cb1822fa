//! The bank: the system under test that `bank-sandbox` runs.
//!
//! `kit` is the service template every service is built from (health, discovery,
//! event log, metrics, problem+json errors, idempotency, trace ids, graceful
//! shutdown); `domain` holds the value types that cannot hold a bad value; each
//! service is a module with its own router and migrations.
//!
//! This crate must not depend on the harness: the harness runs the `bank` binary.

pub mod accounts;
pub mod connector;
pub mod domain;
pub mod gateway;
pub mod kit;
pub mod monitoring;
pub mod payments;
pub mod topups;

/// Every service this binary can run.
pub const SERVICES: &[&kit::ServiceSpec] =
    &[&accounts::SPEC, &connector::SPEC, &gateway::SPEC, &payments::SPEC, &topups::SPEC, &monitoring::SPEC];

/// The service `bank <name>` runs.
pub fn service(name: &str) -> Option<&'static kit::ServiceSpec> {
    SERVICES.iter().copied().find(|s| s.name == name)
}
