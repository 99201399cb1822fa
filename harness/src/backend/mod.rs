//! The seam between the engine and what actually runs components. `local` runs
//! child processes on 127.0.0.1; a Docker backend (later) runs the same topology
//! as containers; `fake` lets engine logic be tested without either.

pub mod fake;
pub mod local;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::watch;

use crate::engine::Endpoint;
use crate::error::Result;
use crate::logs::LogSink;
use crate::topology::{Service, Topology};

/// What a backend decided before starting anything: where each component's
/// ports are published and the environment each one gets.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub dir: PathBuf,
    /// (component, container port) -> host port on 127.0.0.1.
    pub ports: BTreeMap<(String, u16), u16>,
    pub env: BTreeMap<String, BTreeMap<String, String>>,
    pub endpoints: BTreeMap<String, Vec<Endpoint>>,
}

impl Plan {
    pub fn endpoints(&self, component: &str) -> Vec<Endpoint> {
        self.endpoints.get(component).cloned().unwrap_or_default()
    }

    pub fn host_port(&self, component: &str, container_port: u16) -> Option<u16> {
        self.ports.get(&(component.to_string(), container_port)).copied()
    }

    /// The first endpoint's URL of a component (its main address).
    pub fn url(&self, component: &str) -> Option<String> {
        self.endpoints.get(component).and_then(|e| e.first()).map(|e| e.url.clone())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    Ready,
    NotReady(String),
}

/// A component's exit, observable by many: `code()` is `None` while it runs,
/// `Some(None)` after death by signal, `Some(Some(c))` after exit code `c`.
#[derive(Debug, Clone)]
pub struct Exit(watch::Receiver<Option<Option<i32>>>);

impl Exit {
    pub fn new() -> (watch::Sender<Option<Option<i32>>>, Self) {
        let (tx, rx) = watch::channel(None);
        (tx, Self(rx))
    }

    pub fn code(&self) -> Option<Option<i32>> {
        *self.0.borrow()
    }

    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|c| c.is_some()).await;
    }
}

/// How a running component is stopped.
pub trait Stopper: Send + Sync {
    /// Send `signal`, wait up to `grace` for the exit, then kill.
    fn stop(
        &self,
        signal: Signal,
        grace: Duration,
        exit: Exit,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// A started component.
pub struct Handle {
    pid: Option<u32>,
    exit: Exit,
    stopper: Box<dyn Stopper>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").field("pid", &self.pid).field("exit", &self.exit.code()).finish()
    }
}

impl Handle {
    pub fn new(pid: Option<u32>, exit: Exit, stopper: Box<dyn Stopper>) -> Self {
        Self { pid, exit, stopper }
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    pub fn exited(&self) -> Exit {
        self.exit.clone()
    }

    pub async fn stop(&self, signal: Signal, grace: Duration) {
        if self.exit.code().is_none() {
            self.stopper.stop(signal, grace, self.exit.clone()).await;
        }
    }
}

pub trait Backend: Send + Sync + 'static {
    /// Allocate ports and compute every component's wiring. Changes nothing
    /// outside the sandbox's own state.
    fn plan(&self, topology: &Topology) -> impl Future<Output = Result<Plan>> + Send;
    /// Start one component; returns once it is spawned (not ready).
    fn start(&self, service: &Service, plan: &Plan, logs: LogSink) -> impl Future<Output = Result<Handle>> + Send;
    /// One readiness check.
    fn probe(&self, service: &Service, plan: &Plan) -> impl Future<Output = ProbeResult> + Send;
    /// Remove what the backend made for this sandbox (after every component stopped).
    fn cleanup(&self, plan: &Plan) -> impl Future<Output = Result<()>> + Send;
}
