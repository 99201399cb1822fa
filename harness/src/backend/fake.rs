//! A backend that runs nothing: components "start", become ready after a given
//! number of probes, or crash, as a test says. For unit-testing the engine.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{Backend, Exit, Handle, Plan, ProbeResult, RunId, Stopper};
use crate::engine::Endpoint;
use crate::error::Result;
use crate::logs::LogSink;
use crate::topology::{Service, Topology};

#[derive(Debug, Default)]
struct Inner {
    ready_after: BTreeMap<String, u32>,
    crash: BTreeMap<String, i32>,
    probes: BTreeMap<String, u32>,
    started: Vec<String>,
    stopped: Vec<String>,
    cleaned: bool,
}

#[derive(Debug, Clone, Default)]
pub struct FakeBackend(Arc<Mutex<Inner>>);

impl FakeBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// `component` reports ready on its `n`th probe.
    pub fn ready_after(self, component: &str, n: u32) -> Self {
        self.0.lock().unwrap().ready_after.insert(component.into(), n);
        self
    }

    /// `component` exits with `code` right after it starts.
    pub fn crash(self, component: &str, code: i32) -> Self {
        self.0.lock().unwrap().crash.insert(component.into(), code);
        self
    }

    /// From now on, `component` exits with `code` right after each start.
    pub fn crash_from_now(&self, component: &str, code: i32) {
        self.0.lock().unwrap().crash.insert(component.into(), code);
    }

    pub fn started(&self) -> Vec<String> {
        self.0.lock().unwrap().started.clone()
    }

    pub fn stopped(&self) -> Vec<String> {
        self.0.lock().unwrap().stopped.clone()
    }

    pub fn cleaned(&self) -> bool {
        self.0.lock().unwrap().cleaned
    }
}

struct FakeStopper {
    name: String,
    backend: FakeBackend,
    tx: tokio::sync::watch::Sender<Option<Option<i32>>>,
}

impl Stopper for FakeStopper {
    fn stop(
        &self,
        signal: Signal,
        _grace: Duration,
        _exit: Exit,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.backend.0.lock().unwrap().stopped.push(self.name.clone());
            // SIGKILL ends a process with no exit code; the stop signal, as a clean exit.
            let code = if signal == Signal::SIGKILL { None } else { Some(0) };
            let _ = self.tx.send(Some(code));
        })
    }
}

impl Backend for FakeBackend {
    async fn plan(&self, topology: &Topology) -> Result<Plan> {
        let mut plan = Plan::default();
        for (i, s) in topology.services.iter().enumerate() {
            let port = 40000 + i as u16;
            plan.endpoints.insert(
                s.name.clone(),
                vec![Endpoint { name: "main".into(), url: format!("fake://{}:{port}", s.name) }],
            );
        }
        Ok(plan)
    }

    async fn start(&self, service: &Service, _plan: &Plan, logs: LogSink) -> Result<Handle> {
        let (tx, exit) = Exit::new();
        let (crash, pid) = {
            let mut inner = self.0.lock().unwrap();
            inner.started.push(service.name.clone());
            (inner.crash.get(&service.name).copied(), 1000 + inner.started.len() as u32)
        };
        logs.line("stdout", format!("{} starting", service.name));
        if let Some(code) = crash {
            logs.line("stderr", format!("{} crashed", service.name));
            let _ = tx.send(Some(Some(code)));
        }
        let stopper = FakeStopper { name: service.name.clone(), backend: self.clone(), tx };
        Ok(Handle::new(RunId::Pid(pid), exit, Box::new(stopper)))
    }

    async fn probe(&self, service: &Service, _plan: &Plan) -> ProbeResult {
        let mut inner = self.0.lock().unwrap();
        let needed = inner.ready_after.get(&service.name).copied().unwrap_or(1);
        let n = inner.probes.entry(service.name.clone()).or_insert(0);
        *n += 1;
        if *n >= needed { ProbeResult::Ready } else { ProbeResult::NotReady(format!("probe {n} of {needed}")) }
    }

    async fn cleanup(&self, _plan: &Plan) -> Result<()> {
        self.0.lock().unwrap().cleaned = true;
        Ok(())
    }
}
