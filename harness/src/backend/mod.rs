//! The seam between the engine and what actually runs components. `local` runs
//! child processes on 127.0.0.1; `docker` runs the same topology as containers;
//! `fake` lets engine logic be tested without either.

pub mod docker;
pub mod fake;
pub mod kafka_proxy;
pub mod local;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::engine::Endpoint;
use crate::error::Result;
use crate::logs::LogSink;
use crate::topology::{Probe, Service, Topology};

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
    /// A plan for the sandbox in `dir` with a free 127.0.0.1 port
    /// reserved for each port every service declares, and `extra` more, returned
    /// for the backend's own use.
    pub async fn reserve(dir: &Path, topology: &Topology, extra: usize) -> Result<(Self, Vec<u16>)> {
        let wanted: Vec<(String, u16)> =
            topology.services.iter().flat_map(|s| s.ports.iter().map(|p| (s.name.clone(), *p))).collect();
        let (reserved_in, n) = (dir.to_path_buf(), wanted.len() + extra);
        let mut chosen = tokio::task::spawn_blocking(move || crate::ports::reserve(&reserved_in, n))
            .await
            .map_err(|e| crate::Error::Panicked(format!("port reservation panicked: {e}")))??;
        let extra = chosen.split_off(wanted.len());
        let plan = Self { dir: dir.to_path_buf(), ports: wanted.into_iter().zip(chosen).collect(), ..Self::default() };
        Ok((plan, extra))
    }

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
    /// Ready, and what the component says of itself (its health checks).
    ReadyWith(String),
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

/// Which backend runs a sandbox: chosen by name (`--backend`, `SANDBOX_BACKEND`)
/// and kept in its record, so `status`, `down` and `prune` treat it the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Every component a child process on 127.0.0.1.
    #[default]
    Local,
    /// Every component a container on the sandbox's own Docker network.
    Docker,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Docker => "docker",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What identifies a running component: whatever its backend gives. Never
/// assume a pid; a container has none the harness may signal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunId {
    /// A process of this machine (the local backend).
    Pid(u32),
    /// A container, by its full id (the Docker backend).
    Container(String),
}

impl RunId {
    /// The short form for a table column: the pid, or the container id's first 12 characters.
    pub fn short(&self) -> String {
        match self {
            Self::Pid(p) => p.to_string(),
            Self::Container(id) => id.chars().take(12).collect(),
        }
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pid(p) => write!(f, "pid {p}"),
            Self::Container(_) => write!(f, "container {}", self.short()),
        }
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
    id: RunId,
    exit: Exit,
    stopper: Box<dyn Stopper>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").field("id", &self.id).field("exit", &self.exit.code()).finish()
    }
}

impl Handle {
    pub fn new(id: RunId, exit: Exit, stopper: Box<dyn Stopper>) -> Self {
        Self { id, exit, stopper }
    }

    pub fn id(&self) -> &RunId {
        &self.id
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
    /// Get ready to start one component while its dependencies come up
    /// (the Docker backend creates its container); [`Backend::start`] still
    /// works without it, and does what it left undone.
    fn prepare(&self, _service: &Service, _plan: &Plan) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// Start one component; returns once it is spawned (not ready).
    fn start(&self, service: &Service, plan: &Plan, logs: LogSink) -> impl Future<Output = Result<Handle>> + Send;
    /// One readiness check.
    fn probe(&self, service: &Service, plan: &Plan) -> impl Future<Output = ProbeResult> + Send;
    /// Remove what the backend made for this sandbox (after every component stopped).
    fn cleanup(&self, plan: &Plan) -> impl Future<Output = Result<()>> + Send;
}

/// Remove what survives of a sandbox whose supervisor died, as its backend
/// knows how: returns a line for each thing removed.
pub async fn sweep(record: &crate::sandbox::Record) -> Result<Vec<String>> {
    match record.backend {
        Kind::Local => Ok(local::sweep(record)),
        Kind::Docker => docker::sweep(record).await,
    }
}

/// Readiness checks from the host, shared by the backends: whether a process or
/// a container serves it, every component's ports are on 127.0.0.1.
#[derive(Debug, Clone)]
pub struct Prober {
    http: reqwest::Client,
    /// Ports are published through Docker's port proxy, which accepts a
    /// connection whether or not anything listens in the container.
    proxied: bool,
}

impl Default for Prober {
    fn default() -> Self {
        Self {
            http: reqwest::Client::builder().timeout(Duration::from_secs(1)).build().unwrap_or_default(),
            proxied: false,
        }
    }
}

impl Prober {
    /// One check of `service`'s probe; PostgreSQL is ready once it answers.
    pub async fn probe(&self, service: &Service, plan: &Plan) -> ProbeResult {
        let port_of =
            |port: u16| plan.host_port(&service.name, port).ok_or_else(|| ProbeResult::NotReady("no port".into()));
        match &service.probe {
            Probe::Started => ProbeResult::Ready,
            Probe::Postgres => match service.ports.first().copied().map(port_of) {
                Some(Ok(port)) => {
                    let (user, password) = pg_credentials(service);
                    match self.postgres(&user, &password, port).await {
                        Ok(conn) => {
                            let _ = sqlx::Connection::close(conn).await;
                            ProbeResult::Ready
                        }
                        Err(not_ready) => not_ready,
                    }
                }
                Some(Err(no_port)) => no_port,
                None => ProbeResult::NotReady("no port".into()),
            },
            Probe::Tcp { port } => match port_of(*port) {
                Ok(port) => self.tcp(port).await,
                Err(no_port) => no_port,
            },
            Probe::Http { port, path } => match port_of(*port) {
                Ok(port) => self.http(port, path).await,
                Err(no_port) => no_port,
            },
        }
    }

    /// For ports behind Docker's port proxy: a connection is not enough, the
    /// proxy must also reach a listener inside (it closes at once when none is).
    pub fn proxied() -> Self {
        Self { proxied: true, ..Self::default() }
    }

    pub async fn tcp(&self, port: u16) -> ProbeResult {
        let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
        match tokio::time::timeout(Duration::from_millis(500), connect).await {
            Ok(Ok(stream)) if self.proxied => {
                // A server waits for the client to speak (or greets it); the
                // proxy with nothing behind it hangs up.
                let mut byte = [0u8; 1];
                match tokio::time::timeout(Duration::from_millis(100), stream.peek(&mut byte)).await {
                    Ok(Ok(0) | Err(_)) => ProbeResult::NotReady(format!(
                        "127.0.0.1:{port}: the port is published, but nothing listens in the container yet"
                    )),
                    Ok(Ok(_)) | Err(_) => ProbeResult::Ready,
                }
            }
            Ok(Ok(_)) => ProbeResult::Ready,
            Ok(Err(e)) => ProbeResult::NotReady(format!("127.0.0.1:{port}: {e}")),
            Err(_) => ProbeResult::NotReady(format!("127.0.0.1:{port}: connect timed out")),
        }
    }

    pub async fn http(&self, port: u16, path: &str) -> ProbeResult {
        match self.http.get(format!("http://127.0.0.1:{port}{path}")).send().await {
            Ok(r) if r.status().is_success() => {
                let body = r.text().await.unwrap_or_default();
                health_summary(&body).map_or(ProbeResult::Ready, ProbeResult::ReadyWith)
            }
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                ProbeResult::NotReady(format!("GET {path}: {status} {}", body.chars().take(200).collect::<String>()))
            }
            Err(e) if e.is_connect() => ProbeResult::NotReady(format!("GET {path}: not listening yet")),
            Err(e) => ProbeResult::NotReady(format!("GET {path}: {e}")),
        }
    }

    /// A connection to the server's `postgres` database as its superuser.
    pub async fn postgres(
        &self,
        user: &str,
        password: &str,
        port: u16,
    ) -> std::result::Result<sqlx::PgConnection, ProbeResult> {
        let options = sqlx::postgres::PgConnectOptions::new()
            .host("127.0.0.1")
            .port(port)
            .username(user)
            .password(password)
            .database("postgres");
        let connect = <sqlx::PgConnection as sqlx::Connection>::connect_with(&options);
        match tokio::time::timeout(Duration::from_secs(1), connect).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(ProbeResult::NotReady(format!("not accepting connections: {e}"))),
            Err(_) => Err(ProbeResult::NotReady("connection timed out".into())),
        }
    }
}

/// A stable 64-bit hash (FNV-1a) for names and cache keys: std's hasher may
/// change between releases.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// A PostgreSQL service's superuser and password, as the official image takes them.
pub fn pg_credentials(service: &Service) -> (String, String) {
    let user = service.environment.get("POSTGRES_USER").cloned().unwrap_or_else(|| "postgres".into());
    let password = service.environment.get("POSTGRES_PASSWORD").cloned().unwrap_or_else(|| "postgres".into());
    (user, password)
}

/// One line of what a `/health` answer in the bank's shape (`status`, and
/// `checks` by name, each with a `status` and maybe a `reason`) says: the checks
/// that are not ok with their reasons, or the names of those that are.
/// `None` for any other answer.
pub fn health_summary(body: &str) -> Option<String> {
    let health: serde_json::Value = serde_json::from_str(body).ok()?;
    let checks = health["checks"].as_object()?;
    let status = health["status"].as_str().unwrap_or("ok");
    let troubled: Vec<String> = checks
        .iter()
        .filter(|(_, c)| c["status"] != "ok")
        .map(|(name, c)| {
            let state = c["status"].as_str().unwrap_or("unknown");
            match c["reason"].as_str() {
                Some(reason) => format!("{name} {state} ({reason})"),
                None => format!("{name} {state}"),
            }
        })
        .collect();
    if troubled.is_empty() {
        Some(format!("{status}: {}", checks.keys().cloned().collect::<Vec<_>>().join(", ")))
    } else {
        Some(format!("{status}: {}", troubled.join("; ")))
    }
}
