//! The local backend: every component a child process on 127.0.0.1, no Docker.
//! PostgreSQL is a private cluster made with the machine's server binaries; the
//! Kafka-protocol broker is this binary's `broker` command (tansu, embedded);
//! bank services are the workspace's `bank` binary, built when stale.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use sqlx::Connection;
use tokio::process::Command;
use tokio::sync::{Mutex, OnceCell};

use super::{Backend, Handle, Plan, ProbeResult, fnv1a, pg_credentials};
use crate::engine::{Endpoint, UrlParts};
use crate::error::{Error, Result};
use crate::fresh;
use crate::logs::LogSink;
use crate::postgres;
use crate::topology::{Probe, Service, Topology};

/// How the local backend runs a component, from its `x-sandbox` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// A private PostgreSQL cluster holding the databases its
    /// `POSTGRES_MULTIPLE_DATABASES` lists.
    Postgres,
    /// The embedded Kafka-protocol broker.
    Kafka,
    /// This workspace's `bank` binary, with the service's `command` as arguments.
    Bank,
    /// A mocked third-party provider from its definition file.
    Provider { spec: PathBuf },
    /// Any program: `x-sandbox.command`, run in the topology file's directory.
    Process { command: Vec<String> },
}

/// Refuse a topology with a service this backend cannot run, before anything is made.
pub fn check(topology: &Topology) -> Result<()> {
    topology.services.iter().try_for_each(|s| run_of(s).map(drop))
}

/// How the local backend runs `service`, or why it cannot.
pub fn run_of(service: &Service) -> Result<Run> {
    let refuse = |what: String| Error::Topology {
        file: service.file.clone(),
        line: service.line,
        message: format!("service `{}` {what}", service.name),
    };
    let Some(x) = &service.x_sandbox else {
        return Err(refuse(
            "has no `x-sandbox:` block, so the local backend cannot run it: add `x-sandbox: { run: process, command: [...] }` \
             with the command line that runs it on this machine, or use `--backend docker`"
                .into(),
        ));
    };
    match x.run.as_str() {
        "postgres" => Ok(Run::Postgres),
        "kafka" => Ok(Run::Kafka),
        "bank" if service.command.is_empty() => Err(refuse(
            "runs the bank binary but has no `command` naming the bank service (e.g. [\"accounts\"])".into(),
        )),
        "bank" => Ok(Run::Bank),
        "provider" => x
            .provider
            .clone()
            .map(|spec| Run::Provider { spec })
            .ok_or_else(|| refuse("runs a provider but names no `x-sandbox.provider:` definition file".into())),
        "process" if x.command.is_empty() => {
            Err(refuse("has `run: process` but no `x-sandbox.command:` saying what to run".into()))
        }
        "process" => Ok(Run::Process { command: x.command.clone() }),
        other => Err(refuse(format!("has an unknown `x-sandbox.run: {other}`"))),
    }
}
use crate::process;

#[derive(Debug)]
pub struct LocalBackend {
    sandbox_bin: PathBuf,
    home: PathBuf,
    dir: PathBuf,
    workspace: PathBuf,
    /// Held while checking (and, when stale, building) the bank binary, so the
    /// services starting together build it once.
    bank_build: tokio::sync::Mutex<()>,
    pg_bins: OnceCell<PathBuf>,
    /// Clusters whose databases exist already.
    databases_made: Mutex<BTreeSet<String>>,
    prober: super::Prober,
    /// This sandbox's PostgreSQL superuser password (random, kept in its
    /// record): the topology's documented one would let anyone on the
    /// machine in.
    pg_password: String,
}

impl LocalBackend {
    /// A backend for the sandbox whose directory is `dir` (under `home`), running
    /// the bank from the cargo workspace at `workspace`.
    /// `sandbox_bin` is the `sandbox` binary, which also runs the broker and
    /// the providers (`sandbox broker`, `sandbox provider`).
    pub fn new(home: &Path, dir: &Path, workspace: &Path, sandbox_bin: &Path, pg_password: String) -> Self {
        Self {
            sandbox_bin: sandbox_bin.to_path_buf(),
            home: home.to_path_buf(),
            dir: dir.to_path_buf(),
            workspace: workspace.to_path_buf(),
            bank_build: tokio::sync::Mutex::new(()),
            pg_bins: OnceCell::new(),
            databases_made: Mutex::default(),
            prober: super::Prober::default(),
            pg_password,
        }
    }

    async fn postgres_bin_dir(&self) -> Result<&PathBuf> {
        self.pg_bins.get_or_try_init(|| async { postgres::bin_dir() }).await
    }

    /// The bank binary, rebuilt first when its sources are newer: checked on
    /// every start, so restarting a service picks up an edit or a rebuild.
    async fn bank_binary(&self, logs: &LogSink) -> Result<PathBuf> {
        let _one_at_a_time = self.bank_build.lock().await;
        build_bank(&self.workspace, logs).await
    }

    async fn start_postgres(&self, service: &Service, plan: &Plan, logs: LogSink) -> Result<Handle> {
        let bin = self.postgres_bin_dir().await?.clone();
        let port = first_port(service, plan)?;
        let (user, _) = pg_credentials(service);
        let root = self.dir.join(format!("pg-{}", service.name));
        let data = root.join("data");
        std::fs::create_dir_all(&root).map_err(Error::io(format!("cannot create {}", root.display())))?;
        // It holds the cluster's Unix socket: its owner's alone.
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(Error::io(format!("cannot make {} private", root.display())))?;
        postgres::hand_over(&root).map_err(|e| Error::component(&service.name, e.to_string()))?;
        if !data.join("PG_VERSION").exists() {
            let template = self.cluster_template(&bin, &user, &logs).await?;
            let place = cluster_place(&root).map_err(|e| Error::component(&service.name, e.to_string()))?;
            copy_dir(&template, &place)
                .await
                .map_err(|e| Error::component(&service.name, format!("cannot copy the cluster template: {e}")))?;
            set_password(&bin, &place, &user, &self.pg_password)
                .await
                .map_err(|e| Error::component(&service.name, e.to_string()))?;
        }
        // A sandbox's database is disposable: trade durability for speed and memory.
        let mut settings =
            vec!["shared_buffers=16MB", "max_connections=200", "max_wal_size=256MB", "log_min_messages=warning"];
        // Where the server has it (Debian's packages do), per-statement timings:
        // `sandbox bench flows` reads them to say where PostgreSQL's time goes.
        if postgres::has_library(&bin, "pg_stat_statements") {
            settings.push("shared_preload_libraries=pg_stat_statements");
        }
        let socket =
            socket_dir(&self.dir, &service.name, port).map(|d| format!("unix_socket_directories={}", d.display()));
        settings.extend(socket.as_deref());
        let cmd = postgres::server(&bin, &data, port, &settings)?;
        process::spawn(&service.name, Command::from(cmd), logs)
    }

    /// A freshly initialised cluster for (server version, user), made once per
    /// sandbox home and copied for each sandbox: `initdb` takes over a second,
    /// a copy a tenth of that. Its superuser's password is a random one no one
    /// keeps: each copy is given its sandbox's own before it first starts.
    async fn cluster_template(&self, bin: &Path, user: &str, logs: &LogSink) -> Result<PathBuf> {
        let version = bin.parent().and_then(|p| p.file_name()).map_or("pg".into(), |v| v.to_string_lossy().to_string());
        // The key names how the template was made: change that and bump the
        // suffix, or old homes keep an old template (v2 took the topology's
        // password and trusted its socket; v3 had a password on it too).
        let key = format!("{version}-{user}-v4");
        let template = self.home.join(format!(".pg-template-{key}"));
        if template.join("PG_VERSION").exists() {
            return Ok(template);
        }
        // Made beside the final path and renamed into place, so a concurrent or
        // interrupted sandbox never copies a half-made template.
        let scratch = self.dir.join("pg-template");
        let data = scratch.join("data");
        std::fs::create_dir_all(&scratch).map_err(Error::io(format!("cannot create {}", scratch.display())))?;
        postgres::hand_over(&scratch)?;
        let pwfile = scratch.join("pwfile");
        {
            use std::io::Write;
            let mut f = crate::sandbox::open_private(&pwfile).map_err(Error::io("cannot write the password file"))?;
            f.write_all(crate::control::random_token().as_bytes())
                .map_err(Error::io("cannot write the password file"))?;
        }
        postgres::hand_over(&pwfile)?;
        let mut initdb = Command::from(postgres::initdb(bin, &data, user, postgres::Auth::Password(&pwfile))?);
        process::tie_to_parent(&mut initdb);
        let out = initdb.output().await.map_err(|e| Error::Postgres(format!("cannot run initdb: {e}")))?;
        for line in String::from_utf8_lossy(&out.stdout).lines().chain(String::from_utf8_lossy(&out.stderr).lines()) {
            logs.line("initdb", line.to_string());
        }
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(Error::Postgres(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
        }
        match std::fs::rename(&data, &template) {
            Ok(()) => {}
            // Another sandbox made it first: use theirs.
            Err(_) if template.join("PG_VERSION").exists() => {}
            Err(e) => {
                return Err(Error::io(format!("cannot keep the cluster template at {}", template.display()))(e));
            }
        }
        let _ = std::fs::remove_dir_all(&scratch);
        Ok(template)
    }

    async fn start_broker(&self, service: &Service, plan: &Plan, logs: LogSink) -> Result<Handle> {
        let port = first_port(service, plan)?;
        let mut cmd = Command::new(&self.sandbox_bin);
        cmd.args(["broker", "--listen", &format!("127.0.0.1:{port}")]);
        process::spawn(&service.name, cmd, logs)
    }

    async fn start_provider(&self, service: &Service, spec: &Path, plan: &Plan, logs: LogSink) -> Result<Handle> {
        let port = first_port(service, plan)?;
        let mut cmd = Command::new(&self.sandbox_bin);
        cmd.arg("provider").arg("--spec").arg(spec).args(["--listen", &format!("127.0.0.1:{port}")]);
        cmd.envs(plan.env.get(&service.name).into_iter().flatten());
        process::spawn(&service.name, cmd, logs)
    }

    async fn start_bank(&self, service: &Service, plan: &Plan, logs: LogSink) -> Result<Handle> {
        let bin = self.bank_binary(&logs).await?;
        let mut cmd = Command::new(bin);
        cmd.args(&service.command);
        cmd.envs(plan.env.get(&service.name).into_iter().flatten());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info,sqlx=warn");
        }
        process::spawn(&service.name, cmd, logs)
    }

    /// Any program, in the directory of the file that defines it, with the
    /// service's environment rewritten for 127.0.0.1.
    fn start_process(&self, service: &Service, command: &[String], plan: &Plan, logs: LogSink) -> Result<Handle> {
        let mut cmd = Command::new(&command[0]);
        cmd.args(&command[1..]);
        if let Some(dir) = service.file.parent().filter(|d| !d.as_os_str().is_empty()) {
            cmd.current_dir(dir);
        }
        cmd.envs(plan.env.get(&service.name).into_iter().flatten());
        process::spawn(&service.name, cmd, logs)
    }

    /// Ready once the server answers and the databases its service lists exist:
    /// the local backend creates them here, as the image's init scripts do in a container.
    async fn probe_postgres(&self, service: &Service, plan: &Plan) -> ProbeResult {
        let Ok(port) = first_port(service, plan) else {
            return ProbeResult::NotReady("no port".into());
        };
        let (user, _) = pg_credentials(service);
        let mut conn = match self.prober.postgres(&user, &self.pg_password, port).await {
            Ok(c) => c,
            Err(not_ready) => return not_ready,
        };
        let databases = crate::topology::databases_of(&service.environment);
        let mut made = self.databases_made.lock().await;
        if !made.contains(&service.name) {
            for db in &databases {
                let exists: Option<i32> = match sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                    .bind(db)
                    .fetch_optional(&mut conn)
                    .await
                {
                    Ok(v) => v,
                    Err(e) => {
                        return ProbeResult::NotReady(format!("cannot list databases: {e}"));
                    }
                };
                if exists.is_none() {
                    // FILE_COPY: copying the small template's files beats writing it
                    // all through the WAL (PostgreSQL 15's default). (Baking the
                    // databases into the cluster template was measured slower: the
                    // larger copy cost more than the creation it saved.)
                    let sql = format!("CREATE DATABASE \"{}\" STRATEGY = FILE_COPY", db.replace('"', "\"\""));
                    if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await {
                        return ProbeResult::NotReady(format!("cannot create database {db}: {e}"));
                    }
                }
            }
            made.insert(service.name.clone());
        }
        let _ = conn.close().await;
        ProbeResult::Ready
    }
}

/// Kill the process groups of a dead supervisor's components that still run
/// (a child dies with its supervisor, but one may linger while it exits).
pub fn sweep(record: &crate::sandbox::Record) -> Vec<String> {
    let mut killed = Vec::new();
    for child in &record.children {
        let super::RunId::Pid(pid) = child.id else { continue };
        if process::alive(pid, child.start_time) {
            let group = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            killed.push(format!("killed {} (pid {pid})", child.component));
        }
    }
    killed.extend(forget_clusters(&record.dir));
    killed.extend(sweep_memory());
    killed
}

/// Where clusters live when the machine has room in memory (a sandbox's data
/// is disposable): on this machine's ext4 six `CREATE DATABASE`s took 1.4 s,
/// on tmpfs 0.13 s.
const MEMORY: &str = "/dev/shm";
/// Below this much free in memory, clusters stay on disk (a container's
/// /dev/shm is often 64 MB; a cluster with the bank's databases is ~90 MB).
const MEMORY_NEEDED: u64 = 512 << 20;
const MEMORY_PREFIX: &str = "bank-sandbox-pg-";

/// The data directory for a new cluster at `root` (`<sandbox>/pg-<name>`): in
/// memory when there is room, `root/data` then a link to it, and the directory
/// in memory names `root` in its `owner` file, so a sweep finds the clusters
/// whose sandbox is gone. Otherwise `root/data` itself.
fn cluster_place(root: &Path) -> Result<PathBuf> {
    cluster_place_needing(root, MEMORY_NEEDED)
}

/// [`cluster_place`], in memory only when `needed` bytes are free there.
fn cluster_place_needing(root: &Path, needed: u64) -> Result<PathBuf> {
    let data = root.join("data");
    if data.is_symlink() {
        // Its cluster is gone (memory cleared by a reboot): start afresh.
        forget_cluster(&data);
    }
    let free = nix::sys::statvfs::statvfs(MEMORY).map(|s| s.blocks_available() * s.fragment_size());
    if free.is_err() || free.is_ok_and(|free| free < needed) {
        return Ok(data);
    }
    let memory = memory_dir(root);
    let made = (|| {
        use std::io::Write;
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::remove_dir_all(&memory);
        // Made afresh, private, here and now: one another user made first
        // (its name is predictable) is an error, never used.
        std::fs::DirBuilder::new().mode(0o700).create(&memory)?;
        crate::sandbox::open_private(&memory.join("owner"))?.write_all(root.to_string_lossy().as_bytes())?;
        std::os::unix::fs::symlink(memory.join("data"), &data)
    })();
    made.map_err(Error::io(format!("cannot make {} for the cluster", memory.display())))?;
    postgres::hand_over(&memory)?;
    Ok(memory.join("data"))
}

/// Where the cluster of `root` goes when it goes in memory.
fn memory_dir(root: &Path) -> PathBuf {
    Path::new(MEMORY).join(format!("{MEMORY_PREFIX}{:016x}", fnv1a(root.to_string_lossy().as_bytes())))
}

/// Remove the cluster in memory that `data` links to, if it does.
fn forget_cluster(data: &Path) -> Option<String> {
    let target = std::fs::read_link(data).ok()?;
    let _ = std::fs::remove_file(data);
    let memory = target.parent()?;
    let ours = memory.starts_with(MEMORY)
        && memory.file_name().is_some_and(|n| n.to_string_lossy().starts_with(MEMORY_PREFIX));
    (ours && std::fs::remove_dir_all(memory).is_ok()).then(|| format!("removed {}", memory.display()))
}

/// Remove the clusters in memory of the sandbox at `dir`.
fn forget_clusters(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("pg-"))
        .filter_map(|e| forget_cluster(&e.path().join("data")))
        .collect()
}

/// Remove the clusters in memory whose sandbox directory is gone (a sandbox
/// removed by hand, or its directory lost with its record).
fn sweep_memory() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(MEMORY) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(MEMORY_PREFIX))
        .filter(|e| std::fs::read_to_string(e.path().join("owner")).is_ok_and(|owner| !Path::new(&owner).exists()))
        .filter_map(|e| std::fs::remove_dir_all(e.path()).ok().map(|()| format!("removed {}", e.path().display())))
        .collect()
}

impl Backend for LocalBackend {
    async fn plan(&self, topology: &Topology) -> Result<Plan> {
        // What a sandbox removed by hand left in memory.
        sweep_memory();
        // Refuse what this backend cannot run before anything is reserved.
        let runs =
            topology.services.iter().map(|s| Ok((s.name.clone(), run_of(s)?))).collect::<Result<BTreeMap<_, _>>>()?;
        let (mut plan, _) = Plan::reserve(&self.dir, topology, 0).await?;
        // The clusters by TCP port: a URL naming one takes the sandbox's
        // password, and goes through the cluster's Unix socket when it has one.
        let clusters: BTreeMap<u16, &str> = topology
            .services
            .iter()
            .filter(|s| matches!(runs[&s.name], Run::Postgres))
            .filter_map(|s| Some((s.ports.first().and_then(|p| plan.host_port(&s.name, *p))?, s.name.as_str())))
            .collect();
        let sockets: BTreeMap<u16, PathBuf> =
            clusters.iter().filter_map(|(port, name)| Some((*port, socket_dir(&self.dir, name, *port)?))).collect();
        let clusters: BTreeSet<u16> = clusters.into_keys().collect();
        for s in &topology.services {
            let env = s
                .environment
                .iter()
                .map(|(k, v)| {
                    let local = rewrite(v, &s.name, &plan.ports);
                    (k.clone(), through_socket(&with_password(&local, &clusters, &self.pg_password), &sockets))
                })
                .collect();
            plan.env.insert(s.name.clone(), env);
            let port = s.ports.first().and_then(|p| plan.host_port(&s.name, *p));
            let endpoint = port.map(|port| match &runs[&s.name] {
                Run::Postgres => {
                    let (user, _) = pg_credentials(s);
                    let password = &self.pg_password;
                    Endpoint { name: "postgres".into(), url: format!("postgres://{user}:{password}@127.0.0.1:{port}") }
                }
                Run::Kafka => Endpoint { name: "bootstrap".into(), url: format!("127.0.0.1:{port}") },
                Run::Bank | Run::Provider { .. } | Run::Process { .. } => {
                    Endpoint { name: "http".into(), url: format!("http://127.0.0.1:{port}") }
                }
            });
            plan.endpoints.insert(s.name.clone(), endpoint.into_iter().collect());
        }
        Ok(plan)
    }

    async fn start(&self, service: &Service, plan: &Plan, logs: LogSink) -> Result<Handle> {
        match run_of(service)? {
            Run::Postgres => self.start_postgres(service, plan, logs).await,
            Run::Kafka => self.start_broker(service, plan, logs).await,
            Run::Bank => self.start_bank(service, plan, logs).await,
            Run::Provider { spec } => self.start_provider(service, &spec, plan, logs).await,
            Run::Process { command } => self.start_process(service, &command, plan, logs),
        }
    }

    async fn probe(&self, service: &Service, plan: &Plan) -> ProbeResult {
        match &service.probe {
            Probe::Postgres => self.probe_postgres(service, plan).await,
            _ => self.prober.probe(service, plan).await,
        }
    }

    async fn cleanup(&self, _plan: &Plan) -> Result<()> {
        forget_clusters(&self.dir);
        let entries = std::fs::read_dir(&self.dir).map_err(Error::io(format!("cannot read {}", self.dir.display())))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with("pg-") {
                let path = entry.path();
                let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
                removed.map_err(Error::io(format!("cannot remove {}", path.display())))?;
            }
        }
        crate::ports::release(&self.dir);
        Ok(())
    }
}

/// `cp -a`: keeps the owner (the postgres user) and modes PostgreSQL insists on.
async fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    let out = Command::new("cp").arg("-a").arg(from).arg(to).output().await?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()))
    }
}

fn first_port(service: &Service, plan: &Plan) -> Result<u16> {
    service
        .ports
        .first()
        .and_then(|p| plan.host_port(&service.name, *p))
        .ok_or_else(|| Error::component(&service.name, "no port was planned for it"))
}

/// Where the cluster of the postgres service `name` listening on `port` keeps
/// its Unix socket (`<sandbox>/pg-<name>`, the directory that holds its data),
/// or `None` when that path is too long for a socket's address (108 bytes on
/// Linux) or holds a character a URL would need to escape: its clients then
/// use TCP.
fn socket_dir(sandbox: &Path, name: &str, port: u16) -> Option<PathBuf> {
    let dir = sandbox.join(format!("pg-{name}"));
    let file = format!("/.s.PGSQL.{port}");
    let plain = dir.to_str()?.chars().all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c));
    (plain && dir.as_os_str().len() + file.len() < 108).then_some(dir)
}

/// Give the copy of the template at `data` its sandbox's password, before its
/// server first starts: PostgreSQL's single-user mode, no network, ~0.05 s.
async fn set_password(bin: &Path, data: &Path, user: &str, password: &str) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = std::process::Command::new(bin.join("postgres"));
    cmd.arg("--single").arg("-D").arg(data);
    for setting in postgres::DISPOSABLE.iter().filter(|s| !s.starts_with("listen_addresses")) {
        cmd.arg("-c").arg(setting);
    }
    cmd.args(["-c", "log_min_messages=warning", "postgres"]);
    postgres::as_unprivileged(&mut cmd)?;
    let mut cmd = Command::from(cmd);
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    process::tie_to_parent(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| Error::Postgres(format!("cannot run postgres --single: {e}")))?;
    // Both are made by this program (a name from the topology, a random hex
    // token); quoted all the same.
    let statement =
        format!("ALTER ROLE \"{}\" PASSWORD '{}';\n", user.replace('"', "\"\""), password.replace('\'', "''"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(statement.as_bytes()).await.map_err(Error::io("cannot talk to postgres --single"))?;
    }
    let out = child.wait_with_output().await.map_err(Error::io("cannot run postgres --single"))?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() || said.contains("ERROR") {
        return Err(Error::Postgres(format!("cannot set the cluster's password: {}", said.trim())));
    }
    Ok(())
}

/// A PostgreSQL URL (`postgres://` or `postgresql://`) naming a port on
/// 127.0.0.1: its parts and that port.
fn local_postgres_url(value: &str) -> Option<(UrlParts<'_>, u16)> {
    let parts = UrlParts::of(value).filter(|p| p.scheme == "postgres" || p.scheme == "postgresql")?;
    let port = parts.host.strip_prefix("127.0.0.1:")?.parse().ok()?;
    Some((parts, port))
}

/// A PostgreSQL URL naming `127.0.0.1:<port>` of one of `clusters` (their
/// TCP ports) with credentials `user:<anything>@` gets `password` instead:
/// the topology's documented password is Compose's, a sandbox's cluster has
/// its own. Any other value is left as it is.
fn with_password(value: &str, clusters: &BTreeSet<u16>, password: &str) -> String {
    match local_postgres_url(value) {
        Some((UrlParts { scheme, user: Some(user), host, tail, .. }, port)) if clusters.contains(&port) => {
            format!("{scheme}://{user}:{password}@{host}{tail}")
        }
        _ => value.to_string(),
    }
}

/// A PostgreSQL URL naming `127.0.0.1:<port>` of a cluster in `sockets`
/// gains libpq's `host=<socket directory>`: the same server, user and
/// database over its Unix socket, which costs a round trip a third less CPU
/// than loopback TCP (docs/PERFORMANCE.md). Any other value is left as it is.
fn through_socket(value: &str, sockets: &BTreeMap<u16, PathBuf>) -> String {
    let socket = local_postgres_url(value).and_then(|(_, port)| sockets.get(&port)).and_then(|d| d.to_str());
    match socket {
        Some(dir) if !value.contains("host=") => {
            let joiner = if value.contains('?') { '&' } else { '?' };
            format!("{value}{joiner}host={dir}")
        }
        _ => value.to_string(),
    }
}

/// Rewrite Compose addresses for processes on 127.0.0.1: `<service>:<port>`
/// becomes `127.0.0.1:<host port>`, and the service's own `0.0.0.0:<port>`
/// listen address becomes its host port.
pub fn rewrite(value: &str, own: &str, ports: &BTreeMap<(String, u16), u16>) -> String {
    let mut out = value.to_string();
    for ((svc, container), host) in ports {
        if svc == own {
            out = replace_address(&out, &format!("0.0.0.0:{container}"), &format!("127.0.0.1:{host}"));
        }
        out = replace_address(&out, &format!("{svc}:{container}"), &format!("127.0.0.1:{host}"));
    }
    out
}

/// Replace `from` where it stands as a whole host:port (not inside a longer name
/// or number).
fn replace_address(text: &str, from: &str, to: &str) -> String {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(from) {
        let before_ok = rest[..i].chars().next_back().is_none_or(|c| !is_name(c));
        let after_ok = rest[i + from.len()..].chars().next().is_none_or(|c| !c.is_ascii_digit());
        out.push_str(&rest[..i]);
        out.push_str(if before_ok && after_ok { to } else { from });
        rest = &rest[i + from.len()..];
    }
    out.push_str(rest);
    out
}

/// Make `home`'s cluster template for the superuser `user` now, so that a
/// sandbox's first PostgreSQL start copies it instead of running initdb
/// (~1.5 s): what the bank-in-a-box image does when it is built.
pub async fn prepare_cluster_template(home: &Path, user: &str) -> Result<PathBuf> {
    let scratch = home.join(format!(".prepare-{}", std::process::id()));
    let backend = LocalBackend::new(home, &scratch, home, home, String::new());
    let bin = postgres::bin_dir()?;
    let logs = crate::logs::LogStore::new().sink("postgres");
    let made = backend.cluster_template(&bin, user, &logs).await;
    let _ = std::fs::remove_dir_all(&scratch);
    made
}

/// The `bank` binary: `$SANDBOX_BANK_BIN`, or the workspace's, rebuilt with cargo
/// when any of its sources is newer than it (with the package selection of
/// `cargo sandbox`, so that nothing else is rebuilt).
async fn build_bank(workspace: &Path, logs: &LogSink) -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("SANDBOX_BANK_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(Error::Usage(format!("SANDBOX_BANK_BIN={} is not a file", bin.display())))
        };
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from);
    let bin = target.join("debug").join("bank");
    let Some(why) = fresh::stale(&bin, workspace, fresh::BANK_SOURCES) else { return Ok(bin) };
    let mut args = fresh::build_args(&["bank"]);
    args.push("--quiet");
    logs.line("build", format!("cargo {} in {} ({why})", args.join(" "), workspace.display()));
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    fresh::as_from_a_shell(cmd.as_std_mut());
    cmd.current_dir(workspace).args(&args);
    process::tie_to_parent(&mut cmd);
    let out = cmd.output().await.map_err(|e| Error::Build(format!("cannot run cargo to build the bank: {e}")))?;
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        logs.line("build", line.to_string());
    }
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(Error::Build(format!("building the bank failed (cargo {}):\n{}", args.join(" "), tail.join("\n"))));
    }
    // Else every start of every bank service would run cargo again (~0.3 s
    // each, one at a time).
    fresh::mark_built(&bin, workspace, fresh::BANK_SOURCES)
        .map_err(Error::io(format!("cannot mark {} as built", bin.display())))?;
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(yaml: &str) -> Service {
        let text = format!("services:\n  svc:\n{yaml}");
        Topology::parse(Path::new("compose/t.yaml"), &text).unwrap().services.remove(0)
    }

    #[test]
    fn a_cluster_in_memory_is_swept_once_its_sandbox_is_gone() {
        if std::fs::metadata(MEMORY).is_err() {
            return;
        }
        let sandbox = std::env::temp_dir().join(format!("sbx-memory-{}", std::process::id()));
        std::fs::create_dir_all(sandbox.join("pg-postgres")).unwrap();
        let root = sandbox.join("pg-postgres");
        let place = cluster_place(&root).unwrap();
        if place == root.join("data") {
            // No room in memory here: the cluster stays on disk.
            std::fs::remove_dir_all(&sandbox).unwrap();
            return;
        }
        std::fs::create_dir_all(&place).unwrap();
        std::fs::write(place.join("PG_VERSION"), "15").unwrap();
        assert!(root.join("data").join("PG_VERSION").exists(), "root/data leads to the cluster");
        let memory = place.parent().unwrap().to_path_buf();
        sweep_memory();
        assert!(memory.exists(), "its sandbox is there: kept");
        std::fs::remove_dir_all(&sandbox).unwrap();
        let swept = sweep_memory();
        assert!(!memory.exists() && swept.iter().any(|s| s.contains(&*memory.to_string_lossy())), "{swept:?}");
    }

    #[test]
    fn a_cluster_stays_on_disk_when_memory_is_short_and_a_lost_one_is_forgotten() {
        let sandbox = std::env::temp_dir().join(format!("sbx-disk-{}", std::process::id()));
        let root = sandbox.join("pg-postgres");
        std::fs::create_dir_all(&root).unwrap();
        // Its cluster in memory is gone (a reboot cleared it): the link dangles.
        std::os::unix::fs::symlink(sandbox.join("gone/data"), root.join("data")).unwrap();
        let place = cluster_place_needing(&root, u64::MAX).unwrap();
        assert_eq!(place, root.join("data"), "no room in memory: the cluster goes in the sandbox's directory");
        assert!(!place.is_symlink() && !place.exists(), "the dangling link is gone; initdb or the copy makes it");
        assert!(!memory_dir(&root).exists(), "nothing made in memory");
        std::fs::remove_dir_all(&sandbox).unwrap();
    }

    #[test]
    fn a_service_without_x_sandbox_is_refused_naming_what_to_add() {
        let err = run_of(&service("    image: example/ledger:1\n    ports: [\"8080\"]\n")).unwrap_err().to_string();
        assert!(err.starts_with("compose/t.yaml:2: service `svc` has no `x-sandbox:` block"), "{err}");
        assert!(err.contains("run: process, command:") && err.contains("--backend docker"), "{err}");
    }

    #[test]
    fn run_process_runs_its_command_and_needs_one() {
        let ok = service("    x-sandbox: { run: process, command: [\"python3\", \"-m\", \"http.server\"] }\n");
        assert_eq!(
            run_of(&ok).unwrap(),
            Run::Process { command: vec!["python3".into(), "-m".into(), "http.server".into()] }
        );
        assert_eq!(ok.probe, Probe::Started, "no port: ready once it runs");
        let err = run_of(&service("    x-sandbox: { run: process }\n")).unwrap_err().to_string();
        assert!(err.contains("has `run: process` but no `x-sandbox.command:`"), "{err}");
    }

    #[test]
    fn a_bank_service_needs_a_command() {
        let svc = service("    ports: [\"8080\"]\n    x-sandbox: { run: bank, health: /health }\n");
        let err = run_of(&svc).unwrap_err().to_string();
        assert!(err.contains("runs the bank binary but has no `command`"), "{err}");
    }

    #[test]
    fn local_postgres_urls_go_through_the_clusters_socket() {
        let dir = socket_dir(Path::new("/tmp/bank-sandbox-0/dev"), "postgres", 41001).unwrap();
        assert_eq!(dir, Path::new("/tmp/bank-sandbox-0/dev/pg-postgres"));
        let sockets = BTreeMap::from([(41001, dir)]);
        let via = |v: &str| through_socket(v, &sockets);
        assert_eq!(
            via("postgres://bank:bank@127.0.0.1:41001/accounts"),
            "postgres://bank:bank@127.0.0.1:41001/accounts?host=/tmp/bank-sandbox-0/dev/pg-postgres"
        );
        assert_eq!(
            via("postgresql://127.0.0.1:41001/a?sslmode=disable"),
            "postgresql://127.0.0.1:41001/a?sslmode=disable&host=/tmp/bank-sandbox-0/dev/pg-postgres"
        );
        // Another server, another port, a URL that names its host already, not a URL.
        for same in [
            "postgres://bank:bank@db.example:41001/accounts",
            "postgres://bank:bank@127.0.0.1:41002/accounts",
            "postgres://u@127.0.0.1:41001/a?host=/elsewhere",
            "http://127.0.0.1:41001/",
            "127.0.0.1:41001",
        ] {
            assert_eq!(via(same), same);
        }
        // A path a socket's address cannot hold, or a URL would have to escape: TCP.
        assert_eq!(socket_dir(&Path::new("/tmp").join("x".repeat(90)), "postgres", 41001), None);
        assert_eq!(socket_dir(Path::new("/home/a b/sandbox"), "postgres", 41001), None);
    }

    #[test]
    fn urls_of_a_sandboxs_clusters_take_its_password() {
        let clusters = BTreeSet::from([41001]);
        let with = |v: &str| with_password(v, &clusters, "s3cret");
        assert_eq!(
            with("postgres://bank:bank@127.0.0.1:41001/accounts"),
            "postgres://bank:s3cret@127.0.0.1:41001/accounts"
        );
        assert_eq!(with("postgresql://bank@127.0.0.1:41001"), "postgresql://bank:s3cret@127.0.0.1:41001");
        // Another server, not a URL of PostgreSQL's, no credentials: as they are.
        for same in [
            "postgres://bank:bank@127.0.0.1:41002/accounts",
            "postgres://bank:bank@db.example:41001/accounts",
            "http://bank:bank@127.0.0.1:41001/",
            "postgres://127.0.0.1:41001/a",
            "bank:bank@127.0.0.1:41001",
        ] {
            assert_eq!(with(same), same);
        }
    }

    #[test]
    fn compose_addresses_become_local_ports() {
        let mut ports = BTreeMap::new();
        ports.insert(("postgres".to_string(), 5432), 41001);
        ports.insert(("accounts".to_string(), 8080), 41002);
        ports.insert(("kafka".to_string(), 9092), 41003);
        assert_eq!(
            rewrite("postgres://bank:bank@postgres:5432/accounts", "accounts", &ports),
            "postgres://bank:bank@127.0.0.1:41001/accounts"
        );
        assert_eq!(rewrite("0.0.0.0:8080", "accounts", &ports), "127.0.0.1:41002");
        assert_eq!(rewrite("kafka:9092", "accounts", &ports), "127.0.0.1:41003");
        // Not a whole address: left alone.
        assert_eq!(rewrite("my-postgres:5432", "accounts", &ports), "my-postgres:5432");
        assert_eq!(rewrite("postgres:54321", "accounts", &ports), "postgres:54321");
        // Another service's listen address is not ours to rewrite.
        assert_eq!(rewrite("0.0.0.0:5432", "accounts", &ports), "0.0.0.0:5432");
    }
}
