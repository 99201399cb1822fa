//! The one way to start a sandbox from code and wait for it: `sandbox up` (in
//! the foreground), the e2e runner and the bank-in-a-box image all start
//! theirs through [`Sandbox`], and so can any team's own tests.
//!
//! ```no_run
//! # async fn run() -> harness::Result<()> {
//! use harness::start::{Options, Sandbox};
//! let workspace = std::path::Path::new("/path/to/bank-sandbox");
//! let mut opts = Options::new(workspace, &workspace.join("target/debug/sandbox"));
//! opts.only = vec!["payments".into()]; // and what it depends on
//! let bank = Sandbox::start(opts).await?;
//! let payments = bank.url("payments")?;
//! let db = bank.postgres_url("payments")?;
//! bank.stop().await?; // or drop it: the same teardown
//! # Ok(()) }
//! ```
//!
//! The supervisor runs on a thread and runtime of its own, so the handle works
//! from any caller (a current-thread `#[tokio::test]`, plain `#[test]` code
//! through a runtime of its own) and its drop can wait for the teardown: when
//! the handle drops, the test panics or the process gets Ctrl-C (SIGINT,
//! SIGTERM, SIGHUP), every process, container and directory the sandbox made
//! is removed before it returns.

use std::path::{Path, PathBuf};

use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::backend::Kind;
use crate::control;
use crate::engine::{Phase, State};
use crate::error::{Error, Result};
use crate::providers::AdminClient;
use crate::sandbox::{Control, Home};
use crate::supervisor::{self, Announce, Observer};
use crate::target::Target;

/// What to start, and where. [`Options::new`] fills in this machine's defaults.
#[derive(Debug, Clone)]
pub struct Options {
    /// The sandbox's name [default: `<user>-<short id>`].
    pub name: Option<String>,
    /// What runs the components.
    pub backend: Kind,
    /// The topology and its overrides [default: the backend's, from the workspace].
    pub files: Vec<PathBuf>,
    /// Only these services and what they depend on [default: all].
    pub only: Vec<String>,
    pub home: Home,
    /// The bank-sandbox workspace (the bank's sources and the topology).
    pub workspace: PathBuf,
    /// The `sandbox` binary: it runs the broker and the providers.
    pub sandbox_bin: PathBuf,
    /// The local backend's PostgreSQL superuser password [default: random].
    pub postgres_password: Option<String>,
}

impl Options {
    pub fn new(workspace: &Path, sandbox_bin: &Path) -> Self {
        Self {
            name: None,
            backend: Kind::default(),
            files: Vec::new(),
            only: Vec::new(),
            home: Home::from_env(),
            workspace: workspace.to_path_buf(),
            sandbox_bin: sandbox_bin.to_path_buf(),
            postgres_password: None,
        }
    }
}

/// A sandbox this process started, and its supervisor. Dropping it tears the
/// sandbox down and waits until nothing of it is left.
pub struct Sandbox {
    name: String,
    home: Home,
    control: Control,
    stop: CancellationToken,
    states: watch::Receiver<Option<State>>,
    ended: Option<oneshot::Receiver<Result<()>>>,
    /// What the supervisor said when it ended, once it has.
    outcome: Option<Result<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    target: Option<Target>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("name", &self.name).field("control", &self.control.addr).finish()
    }
}

/// Observes for the caller and keeps the latest state for the handle.
struct Relay<O> {
    states: watch::Sender<Option<State>>,
    observer: O,
}

impl<O: Observer> Observer for Relay<O> {
    fn changed(&mut self, prev: Option<&State>, next: &State) {
        self.observer.changed(prev, next);
        let _ = self.states.send(Some(next.clone()));
    }
}

/// An observer that shows nothing.
#[derive(Debug, Default)]
pub struct Quiet;

impl Observer for Quiet {
    fn changed(&mut self, _prev: Option<&State>, _next: &State) {}
}

impl Sandbox {
    /// Start a sandbox and wait until every component is healthy; a failed
    /// start leaves nothing behind and says which component failed and why.
    pub async fn start(opts: Options) -> Result<Self> {
        Self::start_observed(opts, Quiet).await
    }

    /// [`Sandbox::start`], with `observer` told of every change of state.
    pub async fn start_observed(opts: Options, observer: impl Observer) -> Result<Self> {
        let mut sandbox = Self::spawn(opts, observer).await?;
        sandbox.ready().await?;
        Ok(sandbox)
    }

    /// Start a sandbox and return as soon as its control API listens, while
    /// its components are still starting (what a dashboard shows).
    /// [`Sandbox::ready`] waits for the rest.
    pub async fn spawn(opts: Options, observer: impl Observer) -> Result<Self> {
        let name = opts.name.clone().unwrap_or_else(crate::sandbox::default_name);
        crate::sandbox::validate_name(&name)?;
        let files = if opts.files.is_empty() {
            crate::default_topology(&opts.workspace, opts.backend)
        } else {
            opts.files.clone()
        };
        let stop = CancellationToken::new();
        let (announce, announced) = Announce::channel();
        let sup = supervisor::Options {
            name: name.clone(),
            home: opts.home.clone(),
            backend: opts.backend,
            topology: files,
            only: opts.only.clone(),
            workspace: opts.workspace.clone(),
            claimed: false,
            stop: stop.clone(),
            sandbox_bin: opts.sandbox_bin.clone(),
            announce,
            postgres_password: opts.postgres_password.clone(),
        };
        let (states_tx, states) = watch::channel(None);
        let relay = Relay { states: states_tx, observer };
        let (ended_tx, ended) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("sandbox-{name}"))
            .enable_all()
            .build()
            .map_err(Error::io("cannot start the sandbox's runtime"))?;
        let thread = std::thread::Builder::new()
            .name(format!("sandbox-{name}"))
            .spawn(move || {
                let outcome = runtime.block_on(supervisor::run(sup, relay));
                let _ = ended_tx.send(outcome);
                runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            })
            .map_err(Error::io("cannot start the sandbox's supervisor thread"))?;
        // The supervisor drops its word unsaid only when it ends.
        let Ok(control) = announced.await else {
            let outcome = ended.await.unwrap_or_else(|_| Err(panicked(&name)));
            join(thread).await;
            return Err(unready(&name, outcome));
        };
        Ok(Self {
            name,
            home: opts.home,
            control,
            stop,
            states,
            ended: Some(ended),
            outcome: None,
            thread: Some(thread),
            target: None,
        })
    }

    /// Wait until every component is healthy. If the start fails the sandbox
    /// is torn down, and the error says which component failed and why.
    pub async fn ready(&mut self) -> Result<&Target> {
        if self.target.is_none() {
            // Failed, or ended before it ran (its observer, which sends the
            // states, goes with it): either way not running.
            let mut states = self.states.clone();
            let phase = states
                .wait_for(|s| s.as_ref().is_some_and(|s| matches!(s.phase, Phase::Running | Phase::Failed)))
                .await
                .ok()
                .and_then(|s| s.as_ref().map(|s| s.phase));
            if phase != Some(Phase::Running) {
                self.stop.cancel();
                self.finished().await;
                return Err(self.take_error());
            }
            let state = self.states.borrow().clone().unwrap_or_else(|| unreachable!("a state was seen"));
            self.target = Some(Target::from_state(&self.name, control::Client::new(&self.control), &state)?);
        }
        Ok(self.target.as_ref().expect("set above"))
    }

    /// Wait until the sandbox stops: `sandbox down`, or a signal to this process.
    pub async fn wait(&mut self) -> Result<()> {
        self.finished().await;
        self.take_outcome()
    }

    /// Tear the sandbox down and wait until nothing of it is left.
    pub async fn stop(mut self) -> Result<()> {
        self.stop.cancel();
        self.finished().await;
        self.take_outcome()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn home(&self) -> &Home {
        &self.home
    }

    /// The supervisor's control API: state, logs, restarts, faults.
    pub fn control(&self) -> control::Client {
        control::Client::new(&self.control)
    }

    /// The sandbox as its clients see it (every component's address); an error
    /// until [`Sandbox::ready`] returned.
    pub fn target(&self) -> Result<&Target> {
        self.target.as_ref().ok_or_else(|| Error::NotRunning(format!("sandbox {} is still starting", self.name)))
    }

    /// A component's main address: `http://127.0.0.1:<port>` for a service or
    /// a provider, `host:port` for the broker.
    pub fn url(&self, component: &str) -> Result<&str> {
        self.target()?.url(component)
    }

    /// The bank's front door.
    pub fn gateway(&self) -> Result<&str> {
        self.url("gateway")
    }

    /// The broker's bootstrap address for clients on this host.
    pub fn kafka_bootstrap(&self) -> Result<&str> {
        self.url("kafka")
    }

    /// The URL of one of the bank's databases (`accounts`, `payments`, ...),
    /// with the superuser's credentials.
    pub fn postgres_url(&self, database: &str) -> Result<String> {
        Ok(format!("{}/{database}", self.url("postgres")?.trim_end_matches('/')))
    }

    /// A mocked provider's `/__admin` client (faults, journal, inbound payments).
    pub fn provider(&self, name: &str) -> Result<AdminClient> {
        self.target()?.provider(name)
    }

    /// The latest state the supervisor published.
    pub fn state(&self) -> Option<State> {
        self.states.borrow().clone()
    }

    async fn finished(&mut self) {
        if let Some(ended) = self.ended.take() {
            self.outcome = Some(ended.await.unwrap_or_else(|_| Err(panicked(&self.name))));
        }
        if let Some(thread) = self.thread.take() {
            join(thread).await;
        }
    }

    fn take_outcome(&mut self) -> Result<()> {
        self.outcome.take().unwrap_or(Ok(()))
    }

    fn take_error(&mut self) -> Error {
        let outcome = self.take_outcome();
        unready(&self.name, outcome)
    }
}

/// Wait for the supervisor's thread, whose runtime is shutting down by now:
/// a short wait, off the caller's runtime.
async fn join(thread: std::thread::JoinHandle<()>) {
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
}

fn panicked(name: &str) -> Error {
    Error::Panicked(format!("the supervisor of sandbox {name} panicked; `sandbox prune` removes what it left"))
}

/// Why a sandbox that ended did not run: its supervisor's error, if it gave one.
fn unready(name: &str, outcome: Result<()>) -> Error {
    match outcome {
        Err(e) => e,
        Ok(()) => Error::NotRunning(format!("sandbox {name} stopped before every component was healthy")),
    }
}

impl Drop for Sandbox {
    /// Tear down and wait: blocks this thread (the supervisor runs on its
    /// own), so a test's sandbox is gone when the test's handle is.
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Start a sandbox in the background, as `sandbox up --detach` does: a
/// supervisor process of its own (`sandbox supervise`, in its own process
/// group) keeps it running after this process ends, until `sandbox down`.
/// Returns once every component is healthy; `progress` sees each state on the
/// way. A failed start leaves nothing behind, and its error is the
/// supervisor's own last words.
pub async fn detached(opts: Options, mut progress: impl FnMut(Option<&State>, &State)) -> Result<Target> {
    use futures::StreamExt;
    let name = opts.name.clone().unwrap_or_else(crate::sandbox::default_name);
    crate::sandbox::validate_name(&name)?;
    let files =
        if opts.files.is_empty() { crate::default_topology(&opts.workspace, opts.backend) } else { opts.files.clone() };
    let home = &opts.home;
    let dir = home.claim(&name)?;
    // The supervisor says on this socket, once, when its control API listens.
    let announce = match Announcement::listen() {
        Ok(a) => a,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let mut child = match spawn_supervisor(&opts, &name, &files, &announce.path) {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let log = home.log(&name);
    let failed = |status: std::io::Result<std::process::ExitStatus>| failed_to_start(&name, &dir, &log, status);
    // Wait for the supervisor to say its control API listens (or to end),
    // then follow the state it pushes.
    let control = tokio::select! {
        told = announce.heard() => told?,
        status = child.wait() => return Err(failed(status)),
    };
    drop(announce);
    let client = control::Client::new(&control);
    let mut prev: Option<State> = None;
    // The stream fails or ends early when the supervisor stops before serving it.
    if let Ok(states) = client.states().await {
        let mut states = std::pin::pin!(states);
        while let Some(Ok(state)) = states.next().await {
            progress(prev.as_ref(), &state);
            match state.phase {
                Phase::Running => return Target::from_state(&name, client, &state),
                Phase::Failed | Phase::Stopping | Phase::Stopped => break,
                Phase::Starting => {}
            }
            prev = Some(state);
        }
    }
    // It failed: the supervisor tears down and removes the directory itself;
    // its log says why.
    Err(failed(child.wait().await))
}

/// The supervisor ended before the sandbox ran: its error (all its log when it
/// printed none), then nothing of it is left.
fn failed_to_start(name: &str, dir: &Path, log: &Path, status: std::io::Result<std::process::ExitStatus>) -> Error {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    // `main` prints the error last, from a line starting "error:" to the end.
    let why = text.rfind("\nerror:").map_or(text.as_str(), |i| &text[i + 1..]).trim_end().to_string();
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_file(log);
    let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
    Error::NotRunning(format!("sandbox {name} failed to start ({status}):\n{why}"))
}

/// Where a detached supervisor says its control API listens: a Unix socket
/// in a directory of its own, private to this user (0700), removed with it.
struct Announcement {
    dir: PathBuf,
    path: PathBuf,
    listener: tokio::net::UnixListener,
}

impl Announcement {
    fn listen() -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(format!("sbx-announce-{}", uuid::Uuid::new_v4().simple()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(Error::io(format!("cannot create {}", dir.display())))?;
        let path = dir.join("s");
        match tokio::net::UnixListener::bind(&path) {
            Ok(listener) => Ok(Self { dir, path, listener }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(Error::io(format!("cannot listen on {}", path.display()))(e))
            }
        }
    }

    /// The supervisor's word: where its control API listens.
    async fn heard(&self) -> Result<Control> {
        use tokio::io::AsyncReadExt;
        let context = "cannot hear the sandbox's supervisor";
        let (mut socket, _) = self.listener.accept().await.map_err(Error::io(context))?;
        let mut line = String::new();
        socket.read_to_string(&mut line).await.map_err(Error::io(context))?;
        serde_json::from_str(line.trim())
            .map_err(|e| Error::Check(format!("the supervisor's announcement is not its control address: {e}")))
    }
}

impl Drop for Announcement {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn_supervisor(opts: &Options, name: &str, files: &[PathBuf], announce: &Path) -> Result<tokio::process::Child> {
    use std::os::unix::process::CommandExt;
    let home = &opts.home;
    home.ensure()?;
    let log = crate::sandbox::open_private(&home.log(name)).map_err(Error::io("cannot create the supervisor's log"))?;
    let mut cmd = std::process::Command::new(&opts.sandbox_bin);
    cmd.arg("--home")
        .arg(&home.root)
        .args(["supervise", "--name", name])
        .args(files.iter().flat_map(|f| [std::ffi::OsStr::new("--file"), f.as_os_str()]))
        .args(opts.only.iter().flat_map(|s| ["--only", s.as_str()]))
        .arg("--workspace")
        .arg(&opts.workspace)
        .args(["--backend", opts.backend.name()])
        .arg("--announce")
        .arg(announce)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(Error::io("cannot share the supervisor's log"))?)
        .stderr(log)
        // Its own process group: a Ctrl-C in this terminal must not reach it.
        .process_group(0);
    // In its environment, not on its command line (which `ps` shows anyone).
    if let Some(password) = &opts.postgres_password {
        cmd.env("SANDBOX_POSTGRES_PASSWORD", password);
    }
    // It outlives this process: dropping the handle must not kill it.
    tokio::process::Command::from(cmd)
        .kill_on_drop(false)
        .spawn()
        .map_err(Error::io(format!("cannot start {}", opts.sandbox_bin.display())))
}
