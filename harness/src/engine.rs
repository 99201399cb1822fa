//! The orchestrator: one [`State`], [`Event`]s that change it through the pure
//! [`reduce`], and subscribers (progress printer, control API, later the TUI)
//! that read it. Start-up follows the dependency graph, in parallel where it can,
//! gated on readiness polled every few tens of milliseconds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, Exit, Handle, Plan, ProbeResult, RunId};
use crate::error::{Error, Result};
use crate::logs::{LogLine, LogStore};
use crate::topology::{Condition, Probe, Service, Topology};

/// How often readiness is polled while a component starts.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(25);
/// How long a component may take to become healthy.
/// How often a healthy service's health checks are read for its detail.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
pub const START_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Status {
    /// Waiting for its dependencies.
    Waiting,
    /// Process spawned, not ready yet.
    Starting,
    Healthy,
    Stopping,
    Stopped,
    /// Exited on its own.
    Exited {
        code: Option<i32>,
    },
    Failed {
        reason: String,
    },
}

impl Status {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Exited { .. } => "exited",
            Self::Failed { .. } => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub name: String,
    pub url: String,
}

impl Endpoint {
    /// The URL as a table or a log shows it: a password in it masked
    /// (`postgres://bank:***@...`); `status --json` gives the whole URL to
    /// the sandbox's owner.
    pub fn shown(&self) -> String {
        match UrlParts::of(&self.url) {
            Some(UrlParts { scheme, user, password: Some(_), host, tail }) => {
                format!("{scheme}://{}:***@{host}{tail}", user.unwrap_or_default())
            }
            _ => self.url.clone(),
        }
    }
}

/// A URL's parts around its authority, as written (no decoding):
/// `<scheme>://[<user>[:<password>]@]<host>[<tail>]`, the tail starting at
/// the first `/` or `?` after the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlParts<'a> {
    pub scheme: &'a str,
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
    /// `host:port`, or the host alone.
    pub host: &'a str,
    pub tail: &'a str,
}

impl<'a> UrlParts<'a> {
    pub fn of(url: &'a str) -> Option<Self> {
        let (scheme, rest) = url.split_once("://")?;
        let authority = rest.split(['/', '?']).next().unwrap_or(rest);
        let tail = &rest[authority.len()..];
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, authority),
        };
        let (user, password) = match userinfo.map(|u| u.split_once(':')) {
            Some(Some((user, password))) => (Some(user), Some(password)),
            Some(None) => (userinfo, None),
            None => (None, None),
        };
        Some(Self { scheme, user, password, host, tail })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    pub name: String,
    pub status: Status,
    /// What the backend runs it as (a pid, a container), while it runs.
    pub id: Option<RunId>,
    pub endpoints: Vec<Endpoint>,
    pub restarts: u32,
    /// Unix seconds when the current process started.
    pub started_at: Option<u64>,
    /// Milliseconds from spawn to healthy, for the current process.
    pub ready_ms: Option<u64>,
    /// What the last probe said: while starting, why it is not ready yet;
    /// once healthy, what its health checks say (a provider degraded, say).
    pub last_probe: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Starting,
    Running,
    Failed,
    Stopping,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub sandbox: String,
    pub phase: Phase,
    /// In the topology's file order.
    pub components: Vec<Component>,
}

impl State {
    pub fn new(sandbox: &str, topology: &Topology) -> Self {
        let components = topology
            .services
            .iter()
            .map(|s| Component {
                name: s.name.clone(),
                status: Status::Waiting,
                id: None,
                endpoints: Vec::new(),
                restarts: 0,
                started_at: None,
                ready_ms: None,
                last_probe: None,
            })
            .collect();
        Self { sandbox: sandbox.to_string(), phase: Phase::Starting, components }
    }

    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    fn component_mut(&mut self, name: &str) -> Option<&mut Component> {
        self.components.iter_mut().find(|c| c.name == name)
    }

    pub fn all_healthy(&self) -> bool {
        self.components.iter().all(|c| c.status == Status::Healthy)
    }
}

/// Something that happened to the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Planned {
        component: String,
        endpoints: Vec<Endpoint>,
    },
    Spawned {
        component: String,
        id: RunId,
        at: u64,
    },
    Probed {
        component: String,
        result: String,
    },
    Healthy {
        component: String,
        after_ms: u64,
    },
    /// `id` names what exited, so a late report about a replaced process or
    /// container does not mark its successor dead.
    Exited {
        component: String,
        id: RunId,
        code: Option<i32>,
    },
    Failed {
        component: String,
        reason: String,
    },
    Stopping {
        component: String,
    },
    Stopped {
        component: String,
    },
    Restarting {
        component: String,
    },
    PhaseChanged {
        phase: Phase,
    },
}

/// The one place state changes.
pub fn reduce(state: &mut State, event: &Event) {
    if let Event::PhaseChanged { phase } = event {
        state.phase = *phase;
        return;
    }
    let name = match event {
        Event::Planned { component, .. }
        | Event::Spawned { component, .. }
        | Event::Probed { component, .. }
        | Event::Healthy { component, .. }
        | Event::Exited { component, .. }
        | Event::Failed { component, .. }
        | Event::Stopping { component }
        | Event::Stopped { component }
        | Event::Restarting { component } => component.clone(),
        Event::PhaseChanged { .. } => unreachable!("handled above"),
    };
    let Some(c) = state.component_mut(&name) else {
        return;
    };
    match event {
        Event::Planned { endpoints, .. } => c.endpoints = endpoints.clone(),
        Event::Spawned { id, at, .. } => {
            c.status = Status::Starting;
            c.id = Some(id.clone());
            c.started_at = Some(*at);
            c.ready_ms = None;
        }
        Event::Probed { result, .. } => c.last_probe = (!result.is_empty()).then(|| result.clone()),
        Event::Healthy { after_ms, .. } => {
            c.status = Status::Healthy;
            c.ready_ms = Some(*after_ms);
            c.last_probe = None;
        }
        Event::Exited { id, .. } if c.id.as_ref() != Some(id) => {}
        Event::Exited { code, .. } => {
            // An exit we asked for is a stop, not a crash.
            c.status = if c.status == Status::Stopping { Status::Stopped } else { Status::Exited { code: *code } };
            c.id = None;
        }
        Event::Failed { reason, .. } => c.status = Status::Failed { reason: reason.clone() },
        Event::Stopping { .. } => {
            if c.id.is_some() {
                c.status = Status::Stopping;
            } else if matches!(c.status, Status::Waiting | Status::Starting) {
                c.status = Status::Stopped;
            }
        }
        Event::Stopped { .. } => {
            if !matches!(c.status, Status::Failed { .. } | Status::Exited { .. }) {
                c.status = Status::Stopped;
            }
            c.id = None;
        }
        Event::Restarting { .. } => {
            c.restarts += 1;
            c.status = Status::Waiting;
        }
        Event::PhaseChanged { .. } => {}
    }
}

/// The engine's outputs: the current state, and every event as it happens.
#[derive(Debug, Clone)]
pub struct Bus {
    state: Arc<watch::Sender<State>>,
    events: broadcast::Sender<Event>,
    pub logs: LogStore,
}

impl Bus {
    pub fn new(initial: State) -> Self {
        Self { state: Arc::new(watch::Sender::new(initial)), events: broadcast::channel(1024).0, logs: LogStore::new() }
    }

    pub fn send(&self, event: Event) {
        self.state.send_modify(|s| reduce(s, &event));
        let _ = self.events.send(event);
    }

    pub fn state(&self) -> State {
        self.state.borrow().clone()
    }

    pub fn watch(&self) -> watch::Receiver<State> {
        self.state.subscribe()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub fn log(&self, line: LogLine) {
        self.logs.push(line);
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Drives one sandbox's components through a backend.
pub struct Engine<B: Backend> {
    parts: Parts<B>,
}

/// What the engine's tasks share with it (a component's start, its exit's answer).
impl<B: Backend> std::ops::Deref for Engine<B> {
    type Target = Parts<B>;

    fn deref(&self) -> &Parts<B> {
        &self.parts
    }
}

/// What the restart policies did, and one lock per component held while it
/// is stopped or started (by a command or by its policy), so that the two
/// never start it twice.
#[derive(Debug, Clone, Default)]
struct Policy {
    restarted: Arc<std::sync::Mutex<BTreeMap<String, Restarted>>>,
    steering: Arc<std::sync::Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// A component's restarts by its policy.
#[derive(Debug, Clone, Copy)]
struct Restarted {
    /// In all (what `on-failure:N` counts).
    total: u32,
    /// In a row, each within [`RESTART_RESET`] of the one before (what the backoff counts).
    streak: u32,
    at: tokio::time::Instant,
}

/// The first restart by policy waits this long, each one in a row twice as long ...
const RESTART_BACKOFF: Duration = Duration::from_millis(500);
/// ... up to this.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A component that ran this long since its last restart starts a new streak.
const RESTART_RESET: Duration = Duration::from_secs(10);

impl Policy {
    fn steering(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.steering.lock().unwrap_or_else(|e| e.into_inner()).entry(name.to_string()).or_default().clone()
    }

    /// The wait before the next restart of `name`, and how many it had in all.
    fn next(&self, name: &str) -> (Duration, u32) {
        let restarted = self.restarted.lock().unwrap_or_else(|e| e.into_inner());
        match restarted.get(name) {
            None => (RESTART_BACKOFF, 0),
            Some(r) if r.at.elapsed() >= RESTART_RESET => (RESTART_BACKOFF, r.total),
            Some(r) => (RESTART_BACKOFF.saturating_mul(1 << r.streak.min(10)).min(RESTART_BACKOFF_MAX), r.total),
        }
    }

    fn count(&self, name: &str) {
        let mut restarted = self.restarted.lock().unwrap_or_else(|e| e.into_inner());
        let now = tokio::time::Instant::now();
        let r = restarted.entry(name.to_string()).or_insert(Restarted { total: 0, streak: 0, at: now });
        r.streak = if r.total > 0 && r.at.elapsed() < RESTART_RESET { r.streak + 1 } else { 1 };
        r.total += 1;
        r.at = now;
    }
}

impl<B: Backend> Engine<B> {
    pub async fn new(backend: B, topology: Topology, sandbox: &str) -> Result<Self> {
        let bus = Bus::new(State::new(sandbox, &topology));
        let plan = backend.plan(&topology).await?;
        for s in &topology.services {
            bus.send(Event::Planned { component: s.name.clone(), endpoints: plan.endpoints(&s.name) });
        }
        Ok(Self {
            parts: Parts {
                backend: Arc::new(backend),
                topology: Arc::new(topology),
                plan: Arc::new(plan),
                bus,
                handles: Arc::default(),
                cancel: CancellationToken::new(),
                policy: Policy::default(),
            },
        })
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Start every component in dependency order; returns when all are healthy,
    /// or with the first failure (the caller then tears down).
    pub async fn start(&self) -> Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for s in &self.topology.services {
            let this = self.clone_parts();
            let name = s.name.clone();
            tasks.spawn(async move { this.start_one(&name).await });
        }
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let result = joined.unwrap_or_else(|e| Err(Error::Panicked(format!("start task panicked: {e}"))));
            if let Err(e) = result
                && first_error.is_none()
            {
                first_error = Some(e);
                // Siblings waiting on the failed one give up at once.
                self.cancel.cancel();
            }
        }
        match first_error {
            None => {
                self.bus.send(Event::PhaseChanged { phase: Phase::Running });
                Ok(())
            }
            Some(e) => {
                self.bus.send(Event::PhaseChanged { phase: Phase::Failed });
                Err(e)
            }
        }
    }

    fn clone_parts(&self) -> Parts<B> {
        self.parts.clone()
    }

    /// Kill one component at once (SIGKILL, no grace), as a crash would: it is
    /// reported as exited, and its restart policy (Compose's `restart:`) may
    /// start it again; else it stays down until [`Engine::restart`].
    pub async fn kill(&self, name: &str) -> Result<()> {
        self.topology.service(name).ok_or_else(|| self.unknown(name))?;
        let steering = self.policy.steering(name);
        let _steering = steering.lock().await;
        // Its handle stays: the exit is a crash, for its policy to answer.
        let handles = self.handles.lock().await;
        let Some(handle) = handles.get(name).filter(|h| h.exited().code().is_none()) else {
            return Err(Error::component(name, "is not running; start it with restart"));
        };
        handle.stop(nix::sys::signal::Signal::SIGKILL, Duration::ZERO).await;
        Ok(())
    }

    /// Stop one component gracefully (its stop signal, then its grace period);
    /// it stays down until [`Engine::restart`].
    pub async fn stop_one(&self, name: &str) -> Result<()> {
        let steering = self.policy.steering(name);
        let _steering = steering.lock().await;
        self.stop_one_steered(name).await
    }

    /// [`Engine::stop_one`], its component's lock held by the caller.
    async fn stop_one_steered(&self, name: &str) -> Result<()> {
        let service = self.topology.service(name).ok_or_else(|| self.unknown(name))?;
        let handle = self.handles.lock().await.remove(name);
        if let Some(handle) = handle {
            self.bus.send(Event::Stopping { component: name.into() });
            let signal = crate::signals::parse(&service.stop_signal).unwrap_or(nix::sys::signal::Signal::SIGTERM);
            handle.stop(signal, service.stop_grace).await;
            self.bus.send(Event::Stopped { component: name.into() });
        }
        Ok(())
    }

    /// Stop one component (gracefully, if it runs) and start it again; returns
    /// when it is healthy, or with the reason it is not.
    pub async fn restart(&self, name: &str) -> Result<()> {
        if self.cancel.is_cancelled() {
            return Err(Error::component(name, "cannot restart: the sandbox is stopping"));
        }
        let steering = self.policy.steering(name);
        let _steering = steering.lock().await;
        self.stop_one_steered(name).await?;
        self.bus.send(Event::Restarting { component: name.into() });
        self.clone_parts().start_one(name).await
    }

    fn unknown(&self, name: &str) -> Error {
        let names: Vec<&str> = self.topology.services.iter().map(|s| s.name.as_str()).collect();
        Error::component(name, format!("is not in the topology; components: {}", names.join(", ")))
    }

    /// Stop every component, dependents first, then remove what the backend made.
    pub async fn stop(&self) -> Result<()> {
        self.cancel.cancel();
        self.bus.send(Event::PhaseChanged { phase: Phase::Stopping });
        let mut order = self.topology.start_order();
        order.reverse();
        for s in order {
            self.bus.send(Event::Stopping { component: s.name.clone() });
            let handle = self.handles.lock().await.remove(&s.name);
            if let Some(handle) = handle {
                let signal = crate::signals::parse(&s.stop_signal).unwrap_or(nix::sys::signal::Signal::SIGTERM);
                handle.stop(signal, s.stop_grace).await;
            }
            self.bus.send(Event::Stopped { component: s.name.clone() });
        }
        let cleaned = self.backend.cleanup(&self.plan).await;
        self.bus.send(Event::PhaseChanged { phase: Phase::Stopped });
        cleaned
    }
}

pub struct Parts<B: Backend> {
    backend: Arc<B>,
    topology: Arc<Topology>,
    plan: Arc<Plan>,
    bus: Bus,
    handles: Arc<tokio::sync::Mutex<BTreeMap<String, Handle>>>,
    cancel: CancellationToken,
    policy: Policy,
}

impl<B: Backend> Clone for Parts<B> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            topology: self.topology.clone(),
            plan: self.plan.clone(),
            bus: self.bus.clone(),
            handles: self.handles.clone(),
            cancel: self.cancel.clone(),
            policy: self.policy.clone(),
        }
    }
}

impl<B: Backend> Parts<B> {
    /// Wait for each of `service`'s dependencies' conditions.
    async fn wait_for_dependencies(&self, service: &Service) -> Result<()> {
        let name = service.name.as_str();
        let mut state = self.bus.watch();
        for dep in &service.depends_on {
            loop {
                let status = state.borrow_and_update().component(&dep.service).map(|c| c.status.clone());
                let met = matches!(
                    (dep.condition, &status),
                    (_, Some(Status::Healthy)) | (Condition::Started, Some(Status::Starting))
                );
                if met {
                    break;
                }
                if let Some(Status::Failed { .. } | Status::Exited { .. }) = status {
                    let reason = format!("not started: its dependency `{}` failed", dep.service);
                    self.bus.send(Event::Failed { component: name.into(), reason: reason.clone() });
                    return Err(Error::component(name, reason));
                }
                tokio::select! {
                    changed = state.changed() => if changed.is_err() { return Err(Error::component(name, "engine stopped")) },
                    () = self.cancel.cancelled() => {
                        self.bus.send(Event::Stopped { component: name.into() });
                        return Err(Error::component(name, "start-up cancelled"));
                    }
                }
            }
        }
        Ok(())
    }

    async fn start_one(&self, name: &str) -> Result<()> {
        let service = self.topology.service(name).ok_or_else(|| Error::component(name, "not in the topology"))?;
        // Prepared while its dependencies come up (off the critical path).
        let prepared = {
            let (backend, service, plan) = (self.backend.clone(), service.clone(), self.plan.clone());
            tokio::spawn(async move { backend.prepare(&service, &plan).await })
        };
        // Its dependencies' conditions; what was prepared is finished either
        // way, so nothing it makes outlives a failed start (the clean-up).
        let waited = self.wait_for_dependencies(service).await;
        let _ = prepared.await;
        waited?;
        let started = tokio::time::Instant::now();
        let handle = match self.backend.start(service, &self.plan, self.bus.logs.sink(name)).await {
            Ok(h) => h,
            Err(e) => {
                self.bus.send(Event::Failed { component: name.into(), reason: e.to_string() });
                return Err(e);
            }
        };
        let id = handle.id().clone();
        self.bus.send(Event::Spawned { component: name.into(), id: id.clone(), at: now_secs() });
        let exit = handle.exited();
        self.handles.lock().await.insert(name.to_string(), handle);
        self.watch_exit(name, id, exit.clone());
        // Poll readiness until healthy, exited, cancelled or out of time: the
        // clock starts once it runs (a first build of its binary can take minutes).
        let deadline = tokio::time::Instant::now() + START_DEADLINE;
        let mut last = String::new();
        loop {
            if let Some(code) = exit.code() {
                let why = format!(
                    "exited with {} before becoming healthy",
                    code.map_or("a signal".into(), |c| format!("code {c}"))
                );
                return Err(self.failed(name, why));
            }
            match self.backend.probe(service, &self.plan).await {
                ProbeResult::Ready | ProbeResult::ReadyWith(_) => {
                    let after_ms = started.elapsed().as_millis() as u64;
                    self.bus.send(Event::Healthy { component: name.into(), after_ms });
                    if matches!(service.probe, Probe::Http { .. }) {
                        self.watch_health(service.clone(), exit);
                    }
                    return Ok(());
                }
                ProbeResult::NotReady(why) => {
                    if why != last {
                        self.bus.send(Event::Probed { component: name.into(), result: why.clone() });
                        last = why;
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let why = format!("not healthy after {}s; last probe: {last}", START_DEADLINE.as_secs());
                return Err(self.failed(name, why));
            }
            tokio::select! {
                () = tokio::time::sleep(PROBE_INTERVAL) => {}
                () = exit.wait() => {}
                () = self.cancel.cancelled() => return Err(Error::component(name, "start-up cancelled")),
            }
        }
    }

    /// A component that failed to start, with its last log lines: told to the
    /// bus (the dashboard, `up`'s progress) and returned to the starter.
    fn failed(&self, name: &str, why: String) -> Error {
        let log: Vec<String> = self.bus.logs.tail(name, 15).into_iter().map(|l| l.text).collect();
        let error = Error::ComponentFailed { component: name.into(), why, log };
        let reason = error.to_string();
        let reason = reason.strip_prefix(&format!("{name}: ")).unwrap_or(&reason).to_string();
        self.bus.send(Event::Failed { component: name.into(), reason });
        error
    }

    /// Once healthy, what a service says of itself (its health checks: a
    /// provider it calls degraded, say) is probed each [`HEALTH_INTERVAL`] and
    /// kept as its detail while it changes, until the process exits.
    fn watch_health(&self, service: Service, exit: Exit) {
        let (backend, plan, bus) = (self.backend.clone(), self.plan.clone(), self.bus.clone());
        tokio::spawn(async move {
            let mut last = String::new();
            loop {
                let detail = match backend.probe(&service, &plan).await {
                    ProbeResult::Ready => String::new(),
                    ProbeResult::ReadyWith(detail) => detail,
                    ProbeResult::NotReady(why) => format!("failing its probe: {why}"),
                };
                if exit.code().is_some() {
                    return;
                }
                if detail != last {
                    bus.send(Event::Probed { component: service.name.clone(), result: detail.clone() });
                    last = detail;
                }
                tokio::select! {
                    () = tokio::time::sleep(HEALTH_INTERVAL) => {}
                    () = exit.wait() => return,
                }
            }
        });
    }

    /// Report the component's exit when it happens, whoever caused it.
    fn watch_exit(&self, name: &str, id: RunId, exit: Exit) {
        let parts = self.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            exit.wait().await;
            let code = exit.code().flatten();
            parts.bus.send(Event::Exited { component: name.clone(), id: id.clone(), code });
            parts.answer_exit(&name, &id, code).await;
        });
    }

    /// A component exited: if nobody asked it to (its handle is still the
    /// one that ran) and its restart policy says so, start it again after a
    /// backoff. A failed start exits again, and is answered the same way.
    async fn answer_exit(&self, name: &str, id: &RunId, code: Option<i32>) {
        let Some(service) = self.topology.service(name) else { return };
        let crashed = async { self.handles.lock().await.get(name).is_some_and(|h| h.id() == id) };
        if self.cancel.is_cancelled() || !crashed.await {
            return;
        }
        let (wait, restarted) = self.policy.next(name);
        if !service.restart.restarts_after(code, restarted) {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = self.cancel.cancelled() => return,
        }
        let steering = self.policy.steering(name);
        let _steering = steering.lock().await;
        // Restarted or stopped by someone meanwhile: theirs to answer.
        {
            let mut handles = self.handles.lock().await;
            if self.cancel.is_cancelled() || !handles.get(name).is_some_and(|h| h.id() == id) {
                return;
            }
            handles.remove(name);
        }
        self.policy.count(name);
        tracing::info!(component = name, after_ms = wait.as_millis() as u64, "restarting by its restart policy");
        self.bus.send(Event::Restarting { component: name.into() });
        if let Err(e) = self.start_one(name).await {
            tracing::warn!(component = name, "its restart by policy failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fake::FakeBackend;
    use crate::topology::Restart;
    use std::path::Path;

    fn topology() -> Topology {
        Topology::parse(
            Path::new("t.yaml"),
            r#"
services:
  db:
    ports: ["5432"]
    environment: { POSTGRES_MULTIPLE_DATABASES: a }
    x-sandbox: { run: postgres }
  broker:
    ports: ["9092"]
    x-sandbox: { run: kafka }
  a:
    command: [a]
    ports: ["8080"]
    environment: { DATABASE_URL: "postgres://u:p@db:5432/a" }
    depends_on: { db: { condition: service_healthy }, broker: { condition: service_started } }
    x-sandbox: { run: bank, health: /health }
"#,
        )
        .unwrap()
    }

    #[test]
    fn reduce_tracks_a_component_through_its_life() {
        let mut s = State::new("t", &topology());
        reduce(&mut s, &Event::Spawned { component: "db".into(), id: RunId::Pid(7), at: 1 });
        assert_eq!(s.component("db").unwrap().status, Status::Starting);
        reduce(&mut s, &Event::Healthy { component: "db".into(), after_ms: 40 });
        assert_eq!(s.component("db").unwrap().status, Status::Healthy);
        reduce(&mut s, &Event::Stopping { component: "db".into() });
        reduce(&mut s, &Event::Exited { component: "db".into(), id: RunId::Pid(7), code: Some(0) });
        assert_eq!(s.component("db").unwrap().status, Status::Stopped, "an exit we asked for is a stop");
    }

    #[test]
    fn an_unrequested_exit_is_a_crash() {
        let mut s = State::new("t", &topology());
        reduce(&mut s, &Event::Spawned { component: "a".into(), id: RunId::Pid(9), at: 1 });
        reduce(&mut s, &Event::Exited { component: "a".into(), id: RunId::Pid(9), code: Some(101) });
        assert_eq!(s.component("a").unwrap().status, Status::Exited { code: Some(101) });
    }

    #[test]
    fn a_late_exit_of_a_replaced_process_does_not_touch_its_successor() {
        let mut s = State::new("t", &topology());
        reduce(&mut s, &Event::Spawned { component: "a".into(), id: RunId::Pid(9), at: 1 });
        reduce(&mut s, &Event::Restarting { component: "a".into() });
        reduce(&mut s, &Event::Spawned { component: "a".into(), id: RunId::Pid(10), at: 2 });
        reduce(&mut s, &Event::Healthy { component: "a".into(), after_ms: 5 });
        reduce(&mut s, &Event::Exited { component: "a".into(), id: RunId::Pid(9), code: None });
        let a = s.component("a").unwrap();
        assert_eq!((a.status.clone(), a.id.clone(), a.restarts), (Status::Healthy, Some(RunId::Pid(10)), 1));
    }

    #[tokio::test]
    async fn components_start_after_their_dependencies_are_ready() {
        let backend = FakeBackend::new().ready_after("db", 3);
        let engine = Engine::new(backend.clone(), topology(), "t").await.unwrap();
        engine.start().await.unwrap();
        let log = backend.started();
        let pos = |n: &str| log.iter().position(|x| x == n).unwrap();
        assert!(pos("a") > pos("db") && pos("a") > pos("broker"), "{log:?}");
        assert!(engine.bus().state().all_healthy());
        engine.stop().await.unwrap();
        assert_eq!(backend.stopped(), ["a", "broker", "db"], "dependents stop first");
        assert_eq!(engine.bus().state().phase, Phase::Stopped);
    }

    /// The test topology with `restart:` on its service `a`.
    fn with_restart(policy: &str) -> Topology {
        Topology::parse(
            Path::new("t.yaml"),
            &format!("services:\n  a:\n    command: [a]\n    ports: [\"8080\"]\n    restart: {policy}\n    x-sandbox: {{ run: bank, health: /health }}\n"),
        )
        .unwrap()
    }

    async fn settled(engine: &Engine<FakeBackend>, what: impl Fn(&Component) -> bool) -> Component {
        let mut watch = engine.bus().watch();
        let seen = tokio::time::timeout(Duration::from_secs(20), watch.wait_for(|s| what(s.component("a").unwrap())));
        seen.await.expect("in time").unwrap().component("a").cloned().unwrap()
    }

    #[tokio::test]
    async fn a_crash_is_answered_by_the_restart_policy_within_its_limit() {
        let backend = FakeBackend::new();
        let engine = Engine::new(backend.clone(), with_restart("on-failure:2"), "t").await.unwrap();
        engine.start().await.unwrap();
        // From now on it dies at every start, code 1: two restarts, then it stays down.
        backend.crash_from_now("a", 1);
        engine.kill("a").await.unwrap();
        let a = settled(&engine, |c| c.restarts == 2 && matches!(c.status, Status::Exited { .. })).await;
        assert_eq!(a.status, Status::Exited { code: Some(1) });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(backend.started().len(), 3, "the first start and two by policy: {:?}", backend.started());
        engine.stop().await.unwrap();
    }

    #[tokio::test]
    async fn always_restarts_a_killed_component_but_never_one_the_sandbox_stopped() {
        let backend = FakeBackend::new();
        let engine = Engine::new(backend.clone(), with_restart("always"), "t").await.unwrap();
        engine.start().await.unwrap();
        engine.kill("a").await.unwrap();
        let a = settled(&engine, |c| c.restarts == 1 && c.status == Status::Healthy).await;
        assert_eq!(a.id, Some(RunId::Pid(1002)));
        engine.stop_one("a").await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let a = engine.bus().state().component("a").cloned().unwrap();
        assert_eq!((a.status, a.restarts), (Status::Stopped, 1), "a stop is not a crash");
        assert_eq!(backend.started().len(), 2);
        engine.stop().await.unwrap();
    }

    #[tokio::test]
    async fn no_policy_leaves_a_crash_down_and_on_failure_ignores_a_clean_exit() {
        for policy in ["no", "\"no\"", "on-failure"] {
            let backend = FakeBackend::new();
            let engine = Engine::new(backend.clone(), with_restart(policy), "t").await.unwrap();
            engine.start().await.unwrap();
            backend.crash_from_now("a", 0);
            let killed = policy != "on-failure";
            if killed {
                engine.kill("a").await.unwrap();
            } else {
                // A clean exit (code 0) of its own: restarted once by hand, it exits 0 at once.
                let _ = engine.restart("a").await;
            }
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let a = engine.bus().state().component("a").cloned().unwrap();
            assert!(matches!(a.status, Status::Exited { .. }), "{policy}: {:?}", a.status);
            assert_eq!(backend.started().len(), if killed { 1 } else { 2 }, "{policy}: {:?}", backend.started());
            engine.stop().await.unwrap();
        }
    }

    #[test]
    fn a_restart_policy_compose_does_not_know_is_refused_where_it_is_written() {
        let err = Topology::parse(Path::new("t.yaml"), "services:\n  a:\n    command: [a]\n    restart: sometimes\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t.yaml:4:"), "{err}");
        assert!(err.contains("`restart: sometimes` is not a restart policy") && err.contains("on-failure:N"), "{err}");
        for (text, policy) in [
            ("no", Restart::No),
            ("always", Restart::Always),
            ("unless-stopped", Restart::UnlessStopped),
            ("on-failure", Restart::OnFailure { max: None }),
            ("on-failure:3", Restart::OnFailure { max: Some(3) }),
        ] {
            assert_eq!(Restart::parse(text), Some(policy), "{text}");
        }
        assert_eq!(Restart::parse("on-failure:x"), None);
    }

    #[tokio::test]
    async fn a_killed_component_stays_down_until_restarted() {
        let backend = FakeBackend::new();
        let engine = Engine::new(backend.clone(), topology(), "t").await.unwrap();
        engine.start().await.unwrap();
        let mut watch = engine.bus().watch();
        engine.kill("a").await.unwrap();
        watch.wait_for(|s| matches!(s.component("a").unwrap().status, Status::Exited { .. })).await.unwrap();
        let again = engine.kill("a").await.unwrap_err().to_string();
        assert!(again.contains("is not running"), "{again}");
        engine.restart("a").await.unwrap();
        let a = engine.bus().state().component("a").cloned().unwrap();
        assert_eq!((a.status, a.restarts), (Status::Healthy, 1));
        assert_eq!(backend.started().iter().filter(|n| *n == "a").count(), 2);
        let unknown = engine.restart("nope").await.unwrap_err().to_string();
        assert!(unknown.contains("components: db, broker, a"), "{unknown}");
        engine.stop().await.unwrap();
    }

    #[tokio::test]
    async fn a_crashing_dependency_fails_its_dependents_with_the_reason() {
        let backend = FakeBackend::new().crash("db", 3);
        let engine = Engine::new(backend.clone(), topology(), "t").await.unwrap();
        let err = engine.start().await.unwrap_err().to_string();
        assert!(err.contains("exited with code 3 before becoming healthy"), "{err}");
        let state = engine.bus().state();
        assert!(matches!(state.component("a").unwrap().status, Status::Failed { .. }));
        assert!(!backend.started().contains(&"a".to_string()), "a must not start");
        assert_eq!(state.phase, Phase::Failed);
        engine.stop().await.unwrap();
        assert!(backend.cleaned());
    }
}
