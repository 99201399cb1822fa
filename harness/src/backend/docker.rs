//! The Docker backend: every component a container on the sandbox's own
//! network, run from the same Compose file as the local backend. Containers,
//! the network and volumes carry the sandbox's labels, so what a killed
//! supervisor leaves is found and removed by label (`prune`, the next `up`)
//! even when the sandbox's directory is gone. Ports are published on
//! 127.0.0.1 only, at ports the sandbox reserves as the local backend does, so
//! readiness is probed from the host by the same fast probes.
//!
//! Through bollard, the Docker API client testcontainers re-exports, for
//! what a whole sandbox needs (its own network, volumes, a sweep by label);
//! single containers for a team's tests are testcontainers images
//! (`crate::containers`). The API version here is the engine's own, read
//! once; released bollard (0.19 to 0.21) drops the versioned prefix it builds
//! (`uri.rs`), so its requests reach this Engine 20.10 (API 1.41) unversioned
//! either way, testcontainers' too. bollard 0.22 will send the version its
//! explicit constructors name: then connect with the `*_defaults`
//! constructors and `negotiate_version`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig, PortBinding,
    VolumeCreateOptions,
};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, ListContainersOptions, ListNetworksOptions, ListVolumesOptions,
    LogsOptions, RemoveContainerOptions, RemoveVolumeOptions, WaitContainerOptions,
};
use futures::StreamExt;
use nix::sys::signal::Signal;
use tokio::sync::OnceCell;

use super::{Backend, Exit, Handle, Plan, ProbeResult, Prober, RunId, Stopper, pg_credentials};
use crate::engine::Endpoint;
use crate::error::{Error, Result};
use crate::logs::LogSink;
use crate::sandbox::{Home, Record};
use crate::topology::{Probe, Service, Topology};

/// The sandbox a Docker object belongs to.
pub const LABEL_SANDBOX: &str = "io.bank-sandbox.sandbox";
/// The sandbox home it was made under (two homes may hold sandboxes of one name).
pub const LABEL_HOME: &str = "io.bank-sandbox.home";
/// The component a container runs.
pub const LABEL_COMPONENT: &str = "io.bank-sandbox.component";
/// The process that started a container outside any sandbox's supervisor (a
/// test, through `containers`): `<pid>:<start time>`, so `prune` can tell
/// when it is gone, and a pid reused since is not taken for it.
pub const LABEL_OWNER: &str = "io.bank-sandbox.owner";

/// This process as [`LABEL_OWNER`] names it.
pub fn owner_of_this_process() -> String {
    let pid = std::process::id();
    format!("{pid}:{}", started_at(pid).unwrap_or_default())
}

/// When process `pid` started (clock ticks after boot), from `/proc`.
fn started_at(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command's closing parenthesis: state is field 3; start time, 22.
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the owner a [`LABEL_OWNER`] names still runs.
fn owner_alive(owner: &str) -> bool {
    let Some((pid, start)) = owner.split_once(':') else { return false };
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else { return false };
    started_at(pid) == Some(start)
}

/// The newest API this client speaks (bollard 0.19's models).
const NEWEST_API: (usize, usize) = (1, 49);

/// A client of the engine at `DOCKER_HOST` (default the local socket), speaking
/// the older of the engine's API version and the client's.
pub async fn connect() -> Result<Docker> {
    let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let server = server_api_version(&host).await.map_err(|e| unreachable(&host, &e))?;
    let version = bollard::ClientVersion {
        major_version: server.0.min(NEWEST_API.0),
        minor_version: if server.0 < NEWEST_API.0 { server.1 } else { server.1.min(NEWEST_API.1) },
    };
    let docker = match host.strip_prefix("unix://") {
        Some(path) => Docker::connect_with_unix(path, 120, &version),
        None => Docker::connect_with_http(&host, 120, &version),
    }
    .map_err(|e| unreachable(&host, &e.to_string()))?;
    docker.ping().await.map_err(|e| unreachable(&host, &e.to_string()))?;
    Ok(docker)
}

fn unreachable(host: &str, why: &str) -> Error {
    Error::NoEngine { host: host.to_string(), why: why.to_string() }
}

/// The engine's API version, from an unversioned `GET /version` (a versioned
/// path newer than the engine's is refused, even for this call).
async fn server_api_version(host: &str) -> std::result::Result<(usize, usize), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = b"GET /version HTTP/1.0\r\nHost: docker\r\n\r\n";
    let mut reply = Vec::new();
    let exchange = async {
        if let Some(path) = host.strip_prefix("unix://") {
            let mut s = tokio::net::UnixStream::connect(path).await?;
            s.write_all(request).await?;
            s.read_to_end(&mut reply).await
        } else {
            let addr = host.trim_start_matches("tcp://").trim_start_matches("http://").trim_end_matches('/');
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            s.write_all(request).await?;
            s.read_to_end(&mut reply).await
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| "no answer within 5 s".to_string())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&reply);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let version: serde_json::Value = serde_json::from_str(body).map_err(|_| format!("not a Docker engine: {text}"))?;
    let api = version["ApiVersion"].as_str().ok_or("the engine did not say its API version")?;
    let (major, minor) = api.split_once('.').ok_or("an API version that is not major.minor")?;
    Ok((major.parse().map_err(|_| "bad API version")?, minor.parse().map_err(|_| "bad API version")?))
}

/// The prefix of every object's name: the sandbox's name after a short hash of
/// its home, so two homes' sandboxes of one name never collide.
fn prefix(home: &Path, sandbox: &str) -> String {
    format!("bsx-{:08x}-{sandbox}", super::fnv1a(home.to_string_lossy().as_bytes()) as u32)
}

fn labels(home: &Path, sandbox: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_SANDBOX.to_string(), sandbox.to_string()),
        (LABEL_HOME.to_string(), home.to_string_lossy().to_string()),
    ])
}

/// A Kafka-protocol broker, which host clients reach through a relay.
fn is_broker(service: &Service) -> bool {
    service.x_sandbox.as_ref().is_some_and(|x| x.run == "kafka")
}

/// Where a PostgreSQL service's cluster lives in its container: a tmpfs at a
/// path no image has (a mount over an image's directory takes that directory's
/// mode, and the image's user could not write it).
const PG_MEMORY: &str = "/run/sandbox-pgdata";

/// The tmpfs mounts of `service` and the settings they need. A sandbox's
/// database is disposable, as on the local backend: a PostgreSQL service
/// (`x-sandbox: { run: postgres }`) keeps its cluster in memory, unless its
/// environment chooses a `PGDATA` of its own. Making the cluster on the
/// container's overlay layer took 3.7-6.9 s to ready here; in memory 2.1-2.5 s.
fn in_memory(service: &Service) -> (HashMap<String, String>, Vec<String>) {
    let postgres = service.x_sandbox.as_ref().is_some_and(|x| x.run == "postgres");
    if !postgres || service.environment.contains_key("PGDATA") {
        return (HashMap::new(), Vec::new());
    }
    (HashMap::from([(PG_MEMORY.to_string(), "mode=1777".to_string())]), vec![format!("PGDATA={PG_MEMORY}/data")])
}

fn is_status(e: &DockerError, code: u16) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code, .. } if *status_code == code)
}

#[derive(Debug)]
pub struct DockerBackend {
    docker: Docker,
    home: PathBuf,
    dir: PathBuf,
    sandbox: String,
    prefix: String,
    /// Relative volume paths resolve against the topology's directory, as Compose's do.
    project_dir: std::sync::OnceLock<PathBuf>,
    network: OnceCell<String>,
    prober: Prober,
    /// The host-side Kafka relay's port, per broker component (see `kafka_proxy`).
    relays: std::sync::Mutex<BTreeMap<String, u16>>,
    /// Stops the relays.
    relaying: tokio_util::sync::CancellationToken,
    /// Containers created while their dependencies came up, by component.
    prepared: std::sync::Mutex<HashMap<String, String>>,
    /// Components with nothing to wait for start one after another, those most
    /// waited on first (see `start_turn`): the components started so far.
    started: tokio::sync::watch::Sender<std::collections::BTreeSet<String>>,
    /// Who goes before whom at start-up: the components with no dependencies,
    /// each with how many wait on it.
    first_starts: std::sync::Mutex<Vec<(String, usize)>>,
}

impl DockerBackend {
    /// A backend for the sandbox `sandbox` whose directory is `dir` (under `home`).
    pub async fn new(home: &Path, dir: &Path, sandbox: &str) -> Result<Self> {
        Ok(Self {
            docker: connect().await?,
            home: home.to_path_buf(),
            dir: dir.to_path_buf(),
            sandbox: sandbox.to_string(),
            prefix: prefix(home, sandbox),
            project_dir: std::sync::OnceLock::new(),
            network: OnceCell::new(),
            prober: Prober::proxied(),
            relays: std::sync::Mutex::default(),
            relaying: tokio_util::sync::CancellationToken::new(),
            prepared: std::sync::Mutex::default(),
            started: tokio::sync::watch::Sender::new(Default::default()),
            first_starts: std::sync::Mutex::default(),
        })
    }

    fn labels(&self) -> HashMap<String, String> {
        labels(&self.home, &self.sandbox)
    }

    /// The sandbox's own network, made on first use.
    async fn network(&self) -> Result<&String> {
        self.network
            .get_or_try_init(|| async {
                let request = NetworkCreateRequest {
                    name: self.prefix.clone(),
                    driver: Some("bridge".into()),
                    labels: Some(self.labels()),
                    ..Default::default()
                };
                self.docker
                    .create_network(request)
                    .await
                    .map_err(|e| Error::Docker(format!("cannot create the network {}: {e}", self.prefix)))?;
                Ok(self.prefix.clone())
            })
            .await
    }

    /// `src:dst[:mode]` with a host path resolved, or a named volume made (labelled) first.
    async fn bind(&self, service: &Service, volume: &str) -> Result<String> {
        let (src, rest) = volume.split_once(':').ok_or_else(|| {
            Error::component(&service.name, format!("volume `{volume}` is not `source:target[:mode]`"))
        })?;
        if src.starts_with('.') || src.starts_with('/') {
            let base = self.project_dir.get().cloned().unwrap_or_default();
            let path = base.join(src);
            let path = path.canonicalize().map_err(|e| {
                Error::component(&service.name, format!("volume source {} does not exist: {e}", path.display()))
            })?;
            return Ok(format!("{}:{rest}", path.display()));
        }
        let name = format!("{}-{src}", self.prefix);
        let options =
            VolumeCreateOptions { name: Some(name.clone()), labels: Some(self.labels()), ..Default::default() };
        self.docker
            .create_volume(options)
            .await
            .map_err(|e| Error::component(&service.name, format!("cannot create volume {name}: {e}")))?;
        Ok(format!("{name}:{rest}"))
    }

    /// Start the host-side relay of a broker component, once (it outlives the
    /// broker's restarts: its clients reconnect through it).
    async fn relay(&self, service: &Service, plan: &Plan) -> Result<()> {
        let Some(port) = self.relays.lock().expect("relays").remove(&service.name) else { return Ok(()) };
        let published = service.ports.first().and_then(|p| plan.host_port(&service.name, *p));
        let published = published.ok_or_else(|| Error::component(&service.name, "a broker needs a port"))?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| {
            Error::component(&service.name, format!("cannot listen on 127.0.0.1:{port} for host clients: {e}"))
        })?;
        let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], published));
        let advertised = super::kafka_proxy::advertise("127.0.0.1", port);
        super::kafka_proxy::spawn(listener, upstream, advertised, self.relaying.clone());
        Ok(())
    }

    /// Wait for this component's turn to start. The engine starts a
    /// container in about a quarter of a second and, on two cores, hardly two
    /// at once, so when five ask together the last waits a second; the one the
    /// whole bank waits on (PostgreSQL, whose initialisation then overlaps the
    /// others' starts) goes first. Only among the components with no
    /// dependencies: the rest start as their dependencies allow.
    async fn start_turn(&self, name: &str) {
        let before: Vec<String> = {
            let first = self.first_starts.lock().expect("first starts");
            let Some(mine) = first.iter().find(|(n, _)| n == name).map(|(_, d)| *d) else { return };
            first.iter().filter(|(n, d)| *d > mine && n != name).map(|(n, _)| n.clone()).collect()
        };
        let mut started = self.started.subscribe();
        let _ = started.wait_for(|s| before.iter().all(|b| s.contains(b))).await;
    }

    /// Its container, created (not started); a crashed predecessor's removed first.
    async fn create(&self, service: &Service, plan: &Plan) -> Result<String> {
        let network = self.network().await?.clone();
        let name = self.container_name(&service.name);
        // A crashed predecessor keeps the name until it is removed.
        remove_container(&self.docker, &name).await;
        let mut binds = Vec::new();
        for v in &service.volumes {
            binds.push(self.bind(service, v).await?);
        }
        let mut port_bindings = HashMap::new();
        let mut exposed = HashMap::new();
        for port in &service.ports {
            let host = plan
                .host_port(&service.name, *port)
                .ok_or_else(|| Error::component(&service.name, format!("no host port was planned for port {port}")))?;
            let key = format!("{port}/tcp");
            exposed.insert(key.clone(), HashMap::new());
            port_bindings.insert(
                key,
                Some(vec![PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(host.to_string()) }]),
            );
        }
        let mut labels = self.labels();
        labels.insert(LABEL_COMPONENT.into(), service.name.clone());
        let (tmpfs, memory_env) = in_memory(service);
        let mut env: Vec<String> =
            plan.env.get(&service.name).into_iter().flatten().map(|(k, v)| format!("{k}={v}")).collect();
        env.extend(memory_env);
        let body = ContainerCreateBody {
            image: service.image.clone(),
            cmd: (!service.command.is_empty()).then(|| service.command.clone()),
            env: Some(env),
            hostname: Some(service.name.clone()),
            labels: Some(labels),
            exposed_ports: Some(exposed),
            stop_signal: Some(service.stop_signal.clone()),
            host_config: Some(HostConfig {
                port_bindings: Some(port_bindings),
                binds: Some(binds),
                tmpfs: Some(tmpfs),
                network_mode: Some(network.clone()),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network,
                    EndpointSettings { aliases: Some(vec![service.name.clone()]), ..Default::default() },
                )])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions { name: Some(name), ..Default::default() };
        let created = self.docker.create_container(Some(options), body).await.map_err(|e| {
            if is_status(&e, 404) {
                Error::component(
                    &service.name,
                    format!(
                        "image {} is not on this engine: `sandbox images build`",
                        service.image.as_deref().unwrap_or("?")
                    ),
                )
            } else {
                Error::component(&service.name, format!("cannot create its container: {e}"))
            }
        })?;
        Ok(created.id)
    }

    fn container_name(&self, service: &str) -> String {
        format!("{}-{service}", self.prefix)
    }
}

impl Backend for DockerBackend {
    async fn plan(&self, topology: &Topology) -> Result<Plan> {
        let _ = self.project_dir.set(topology.file.parent().unwrap_or(Path::new(".")).to_path_buf());
        // What a killed run of this name (or of any dead sandbox of this home) left.
        sweep_orphans(&self.docker, &Home { root: self.home.clone() }, Some(&self.sandbox)).await?;
        // Each image once, however many services run it.
        let mut images = std::collections::BTreeSet::new();
        for s in &topology.services {
            images.insert(s.image.as_deref().ok_or_else(|| Error::Topology {
                file: s.file.clone(),
                line: s.line,
                message: format!("service `{}` has no `image:`, which the Docker backend runs", s.name),
            })?);
        }
        let mut missing = Vec::new();
        for image in images {
            match self.docker.inspect_image(image).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => missing.push(image),
                Err(e) => return Err(Error::Docker(format!("cannot inspect image {image}: {e}"))),
            }
        }
        if !missing.is_empty() {
            return Err(Error::ImagesMissing { images: missing.into_iter().map(String::from).collect() });
        }
        // One more port per broker, for its host-side relay.
        let brokers: Vec<&str> = topology.services.iter().filter(|s| is_broker(s)).map(|s| s.name.as_str()).collect();
        let (mut plan, relays) = Plan::reserve(&self.dir, topology, brokers.len()).await?;
        let relays: BTreeMap<String, u16> = brokers.iter().map(|b| b.to_string()).zip(relays).collect();
        for s in &topology.services {
            // Inside the network, Compose's names resolve as written.
            plan.env.insert(s.name.clone(), s.environment.clone());
            let port = s.ports.first().and_then(|p| plan.host_port(&s.name, *p));
            let endpoint = port.map(|port| {
                if s.probe == Probe::Postgres {
                    let (user, password) = pg_credentials(s);
                    Endpoint { name: "postgres".into(), url: format!("postgres://{user}:{password}@127.0.0.1:{port}") }
                } else if let Some(relay) = relays.get(&s.name) {
                    // Host clients go through the relay, which names itself as the broker.
                    Endpoint { name: "bootstrap".into(), url: format!("127.0.0.1:{relay}") }
                } else {
                    Endpoint { name: "http".into(), url: format!("http://127.0.0.1:{port}") }
                }
            });
            plan.endpoints.insert(s.name.clone(), endpoint.into_iter().collect());
        }
        *self.relays.lock().expect("relays") = relays;
        let dependents = topology.dependents();
        *self.first_starts.lock().expect("first starts") = topology
            .services
            .iter()
            .filter(|s| s.depends_on.is_empty())
            .map(|s| (s.name.clone(), dependents.get(&s.name).copied().unwrap_or(0)))
            .collect();
        Ok(plan)
    }

    async fn prepare(&self, service: &Service, plan: &Plan) {
        // A failure here is met again, and reported, by `start`.
        if let Ok(id) = self.create(service, plan).await {
            self.prepared.lock().expect("prepared").insert(service.name.clone(), id);
        }
    }

    async fn start(&self, service: &Service, plan: &Plan, logs: LogSink) -> Result<Handle> {
        // Its turn is over however this ends, a failure to create included:
        // the components waiting for it then go on (and hear of the failure).
        let turn = TurnOver(&self.started, &service.name);
        let prepared = self.prepared.lock().expect("prepared").remove(&service.name);
        let id = match prepared {
            Some(id) => id,
            None => self.create(service, plan).await?,
        };
        self.start_turn(&service.name).await;
        let started = self.docker.start_container(&id, None::<bollard::query_parameters::StartContainerOptions>).await;
        drop(turn);
        if let Err(e) = started {
            remove_container(&self.docker, &id).await;
            let text = e.to_string();
            let why = if text.contains("port is already allocated") || text.contains("address already in use") {
                let ports: Vec<String> = service
                    .ports
                    .iter()
                    .filter_map(|p| plan.host_port(&service.name, *p))
                    .map(|p| format!("127.0.0.1:{p}"))
                    .collect();
                format!(
                    "its port {} was taken by another program after the sandbox chose it; `sandbox up` again picks others ({text})",
                    ports.join(", ")
                )
            } else {
                format!("cannot start its container: {text}")
            };
            return Err(Error::component(&service.name, why));
        }
        let logged = follow_logs(&self.docker, &id, logs);
        let (tx, exit) = Exit::new();
        let docker = self.docker.clone();
        let waited = id.clone();
        tokio::spawn(async move {
            let code = wait_exit(&docker, &waited).await;
            // Its last lines are in the store before its exit is reported (a
            // start-up failure quotes them).
            let _ = tokio::time::timeout(Duration::from_secs(2), logged).await;
            let _ = tx.send(Some(code));
        });
        self.relay(service, plan).await?;
        let stopper = ContainerStopper { docker: self.docker.clone(), id: id.clone() };
        Ok(Handle::new(RunId::Container(id), exit, Box::new(stopper)))
    }

    async fn probe(&self, service: &Service, plan: &Plan) -> ProbeResult {
        self.prober.probe(service, plan).await
    }

    async fn cleanup(&self, _plan: &Plan) -> Result<()> {
        self.relaying.cancel();
        let removed = remove_labelled(&self.docker, &self.home, &self.sandbox).await;
        crate::ports::release(&self.dir);
        removed.map(drop)
    }
}

/// Marks a component's turn to start as over when dropped (see `start_turn`).
struct TurnOver<'a>(&'a tokio::sync::watch::Sender<std::collections::BTreeSet<String>>, &'a str);

impl Drop for TurnOver<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|s| {
            s.insert(self.1.to_string());
        });
    }
}

/// The container's output, line by line, into the log store, from its first
/// line; the task ends when the container stops.
fn follow_logs(docker: &Docker, id: &str, logs: LogSink) -> tokio::task::JoinHandle<()> {
    let options = LogsOptions { follow: true, stdout: true, stderr: true, ..Default::default() };
    let mut stream = docker.logs(id, Some(options));
    tokio::spawn(async move {
        let mut partial: BTreeMap<&'static str, String> = BTreeMap::new();
        while let Some(Ok(chunk)) = stream.next().await {
            let (name, bytes) = match chunk {
                LogOutput::StdOut { message } | LogOutput::Console { message } => ("stdout", message),
                LogOutput::StdErr { message } => ("stderr", message),
                LogOutput::StdIn { .. } => continue,
            };
            let buf = partial.entry(name).or_default();
            buf.push_str(&String::from_utf8_lossy(&bytes));
            while let Some(i) = buf.find('\n') {
                let line: String = buf.drain(..=i).collect();
                logs.line(name, line.trim_end_matches(['\n', '\r']).to_string());
            }
        }
        for (name, rest) in partial {
            if !rest.is_empty() {
                logs.line(name, rest);
            }
        }
    })
}

/// The container's exit code once it exits (`None` if it is gone without one).
async fn wait_exit(docker: &Docker, id: &str) -> Option<i32> {
    let options = WaitContainerOptions { condition: "not-running".into() };
    match docker.wait_container(id, Some(options)).next().await {
        Some(Ok(r)) => i32::try_from(r.status_code).ok(),
        Some(Err(DockerError::DockerContainerWaitError { code, .. })) => i32::try_from(code).ok(),
        _ => docker
            .inspect_container(id, None::<bollard::query_parameters::InspectContainerOptions>)
            .await
            .ok()
            .and_then(|c| c.state?.exit_code)
            .map(|c| c as i32),
    }
}

async fn remove_container(docker: &Docker, id: &str) {
    let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
    let _ = docker.remove_container(id, Some(options)).await;
}

struct ContainerStopper {
    docker: Docker,
    id: String,
}

impl Stopper for ContainerStopper {
    fn stop(
        &self,
        signal: Signal,
        grace: Duration,
        exit: Exit,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let kill = |signal: Signal| KillContainerOptions { signal: signal.as_str().into() };
            let _ = self.docker.kill_container(&self.id, Some(kill(signal))).await;
            if tokio::time::timeout(grace, exit.wait()).await.is_err() {
                tracing::warn!(container = %self.id, "did not stop within {grace:?} of {signal}; killing");
                let _ = self.docker.kill_container(&self.id, Some(kill(Signal::SIGKILL))).await;
                // A container that will not die (the engine is gone) must not hang the stop.
                let _ = tokio::time::timeout(Duration::from_secs(10), exit.wait()).await;
            }
            remove_container(&self.docker, &self.id).await;
        })
    }
}

fn label_filter(home: &Path, sandbox: Option<&str>) -> HashMap<String, Vec<String>> {
    let mut filters = vec![format!("{LABEL_HOME}={}", home.to_string_lossy())];
    if let Some(s) = sandbox {
        filters.push(format!("{LABEL_SANDBOX}={s}"));
    }
    HashMap::from([("label".to_string(), filters)])
}

/// Remove every container, network and volume labelled with `sandbox` of
/// `home`; returns a line for each.
async fn remove_labelled(docker: &Docker, home: &Path, sandbox: &str) -> Result<Vec<String>> {
    let filters = label_filter(home, Some(sandbox));
    let fail = |what: &str, e: DockerError| Error::Docker(format!("cannot list {what} of sandbox {sandbox}: {e}"));
    let mut removed = Vec::new();
    let options = ListContainersOptions { all: true, filters: Some(filters.clone()), ..Default::default() };
    for c in docker.list_containers(Some(options)).await.map_err(|e| fail("containers", e))? {
        if let Some(id) = c.id {
            remove_container(docker, &id).await;
            let name = c.names.and_then(|n| n.first().cloned()).unwrap_or_else(|| id.chars().take(12).collect());
            removed.push(format!("container {}", name.trim_start_matches('/')));
        }
    }
    let options = ListNetworksOptions { filters: Some(filters.clone()) };
    for n in docker.list_networks(Some(options)).await.map_err(|e| fail("networks", e))? {
        if let Some(name) = n.name
            && docker.remove_network(&name).await.is_ok()
        {
            removed.push(format!("network {name}"));
        }
    }
    let options = ListVolumesOptions { filters: Some(filters) };
    let volumes = docker.list_volumes(Some(options)).await.map_err(|e| fail("volumes", e))?;
    for v in volumes.volumes.unwrap_or_default() {
        if docker.remove_volume(&v.name, Some(RemoveVolumeOptions { force: true })).await.is_ok() {
            removed.push(format!("volume {}", v.name));
        }
    }
    Ok(removed)
}

/// Remove what the Docker backend made for sandboxes of `home` whose supervisor
/// is gone (no record, or its owner dead), and for `also` whatever its state:
/// a killed run leaves its objects behind, labelled. Returns a line per object.
pub async fn sweep_orphans(docker: &Docker, home: &Home, also: Option<&str>) -> Result<Vec<String>> {
    let options =
        ListContainersOptions { all: true, filters: Some(label_filter(&home.root, None)), ..Default::default() };
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| Error::Docker(format!("cannot list the sandbox's containers: {e}")))?;
    // Containers a test started (`containers`): their owner process decides.
    let mut owned: BTreeMap<String, bool> = BTreeMap::new();
    for labels in containers.iter().filter_map(|c| c.labels.as_ref()) {
        if let (Some(sandbox), Some(owner)) = (labels.get(LABEL_SANDBOX), labels.get(LABEL_OWNER)) {
            *owned.entry(sandbox.clone()).or_default() |= owner_alive(owner);
        }
    }
    let mut sandboxes: std::collections::BTreeSet<String> =
        containers.into_iter().filter_map(|c| c.labels?.get(LABEL_SANDBOX).cloned()).collect();
    let options = ListNetworksOptions { filters: Some(label_filter(&home.root, None)) };
    let networks = docker
        .list_networks(Some(options))
        .await
        .map_err(|e| Error::Docker(format!("cannot list the sandbox's networks: {e}")))?;
    for labels in networks.iter().filter_map(|n| n.labels.as_ref()) {
        // A test's network (`containers::Network`) is its owner's too.
        if let (Some(sandbox), Some(owner)) = (labels.get(LABEL_SANDBOX), labels.get(LABEL_OWNER)) {
            *owned.entry(sandbox.clone()).or_default() |= owner_alive(owner);
        }
    }
    sandboxes.extend(networks.into_iter().filter_map(|n| n.labels?.get(LABEL_SANDBOX).cloned()));
    let mut removed = Vec::new();
    for sandbox in sandboxes {
        // `also` is the caller's own sandbox, about to be made: nothing of it runs yet.
        let live = match owned.get(&sandbox) {
            Some(alive) => *alive,
            None => Record::read(&home.dir(&sandbox)).is_ok_and(|r| r.owner_alive()),
        };
        if Some(sandbox.as_str()) == also || !live {
            removed.extend(remove_labelled(docker, &home.root, &sandbox).await?);
        }
    }
    Ok(removed)
}

/// Remove what a dead supervisor's Docker sandbox left (by label; its
/// directory need not exist).
pub async fn sweep(record: &Record) -> Result<Vec<String>> {
    let home = record.dir.parent().unwrap_or(Path::new("/")).to_path_buf();
    let docker = connect().await?;
    remove_labelled(&docker, &home, &record.name).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(yaml: &str) -> Service {
        let text = format!("services:\n  svc:\n    image: example/x:1\n{yaml}");
        Topology::parse(Path::new("compose/t.yaml"), &text).unwrap().services.remove(0)
    }

    #[test]
    fn a_postgres_service_keeps_its_cluster_in_memory_unless_it_chooses_pgdata() {
        let (tmpfs, env) = in_memory(&service("    x-sandbox: { run: postgres }\n"));
        assert_eq!(tmpfs, HashMap::from([(PG_MEMORY.to_string(), "mode=1777".to_string())]));
        assert_eq!(env, [format!("PGDATA={PG_MEMORY}/data")]);
        let chosen = service("    environment: { PGDATA: /data/pg }\n    x-sandbox: { run: postgres }\n");
        assert_eq!(in_memory(&chosen), (HashMap::new(), Vec::new()), "its own PGDATA is left alone");
        assert_eq!(in_memory(&service("    ports: [\"8080\"]\n")), (HashMap::new(), Vec::new()));
    }

    #[test]
    fn names_differ_by_home_and_fit_docker() {
        let a = prefix(Path::new("/tmp/a"), "dev-1");
        let b = prefix(Path::new("/tmp/b"), "dev-1");
        assert_ne!(a, b);
        assert!(a.starts_with("bsx-") && a.ends_with("-dev-1"), "{a}");
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'), "{a}");
    }
}
