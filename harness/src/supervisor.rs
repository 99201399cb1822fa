//! The supervisor owns one running sandbox: it claims the name, runs the engine,
//! serves the control API, keeps the record current, and on `down`, a signal or
//! a failed start tears everything down and removes the sandbox's directory.
//! `up` runs it in the foreground; `up --detach` runs it as a background
//! process (`sandbox supervise`).

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::backend::docker::DockerBackend;
use crate::backend::local::LocalBackend;
use crate::backend::{Backend, Kind, RunId};
use crate::engine::{Engine, Event, State};
use crate::error::{Error, Result};
use crate::sandbox::{ChildRecord, Control, Home, Record};
use crate::topology::Topology;
use crate::{control, process};

#[derive(Debug, Clone)]
pub struct Options {
    pub name: String,
    pub home: Home,
    /// What runs the components.
    pub backend: Kind,
    /// The topology and its overrides, in `-f` order.
    pub topology: Vec<PathBuf>,
    /// Start only these services and what they depend on (all when empty).
    pub only: Vec<String>,
    pub workspace: PathBuf,
    /// The directory was already claimed (by `up --detach`, for this process).
    pub claimed: bool,
    /// The `sandbox` binary (it also runs the broker and the providers).
    pub sandbox_bin: PathBuf,
    /// Cancel to stop the sandbox, as `sandbox down` does (for callers that run
    /// the supervisor in-process, like the e2e runner).
    pub stop: CancellationToken,
    /// Who to tell where the control API listens, once it does.
    pub announce: Announce,
    /// The local backend's PostgreSQL superuser password; random when `None`
    /// (the bank-in-a-box takes its user's, as the official image does).
    pub postgres_password: Option<String>,
}

/// Who is told where a supervisor's control API listens as soon as it does:
/// the starter waiting for it, instead of reading the sandbox's record again
/// and again until it names one.
#[derive(Debug, Clone, Default)]
pub enum Announce {
    #[default]
    Nobody,
    /// A starter in this process (`up` in the foreground).
    Channel(std::sync::Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<Control>>>>),
    /// A starter in another process (`up --detach`), listening on this Unix
    /// socket in a directory private to its user.
    Socket(PathBuf),
}

impl Announce {
    /// An announcement to this process, and where it arrives.
    pub fn channel() -> (Self, tokio::sync::oneshot::Receiver<Control>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (Self::Channel(std::sync::Arc::new(std::sync::Mutex::new(Some(tx)))), rx)
    }

    /// Tell the starter (once): the control API's address and token, as a JSON line.
    async fn tell(&self, control: &Control) -> Result<()> {
        match self {
            Self::Nobody => Ok(()),
            Self::Channel(tx) => {
                if let Some(tx) = tx.lock().ok().and_then(|mut t| t.take()) {
                    let _ = tx.send(control.clone());
                }
                Ok(())
            }
            Self::Socket(path) => {
                use tokio::io::AsyncWriteExt;
                let told = async {
                    let mut socket = tokio::net::UnixStream::connect(path).await?;
                    let mut line = serde_json::to_vec(control).map_err(std::io::Error::other)?;
                    line.push(b'\n');
                    socket.write_all(&line).await?;
                    socket.shutdown().await
                };
                told.await
                    .map_err(Error::io(format!("cannot tell the starter at {} where the sandbox is", path.display())))
            }
        }
    }
}

/// What the caller wants to see while the sandbox runs: called on its own task
/// for each change of state (rapid changes may arrive merged).
pub trait Observer: Send + 'static {
    fn changed(&mut self, prev: Option<&State>, next: &State);
}

/// Run the sandbox until it is told to stop. A topology that does not validate
/// is refused before anything is made.
pub async fn run(opts: Options, observer: impl Observer) -> Result<()> {
    let topology = Topology::load_all(&opts.topology)?.only(&opts.only)?;
    let dir = if opts.claimed { opts.home.dir(&opts.name) } else { opts.home.claim(&opts.name)? };
    let result = run_claimed(&opts, topology, dir.clone(), observer).await;
    if dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&dir)
    {
        tracing::error!("cannot remove {}: {e}", dir.display());
    }
    result
}

async fn run_claimed(opts: &Options, topology: Topology, dir: PathBuf, observer: impl Observer) -> Result<()> {
    let (listener, addr) = control::bind().await?;
    let pid = std::process::id();
    let record = Record {
        name: opts.name.clone(),
        dir: dir.clone(),
        backend: opts.backend,
        topology: opts.topology.clone(),
        pid,
        pid_start_time: process::start_time(pid),
        created_at: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        control: Some(Control { addr: addr.to_string(), token: control::random_token() }),
        children: Vec::new(),
        // The local backend's clusters take this sandbox's own password (a
        // container backend keeps the topology's documented credentials).
        postgres_password: (opts.backend == Kind::Local)
            .then(|| opts.postgres_password.clone().unwrap_or_else(control::random_token)),
    };
    record.write()?;
    if let Some(control) = &record.control {
        opts.announce.tell(control).await?;
    }
    match opts.backend {
        Kind::Local => {
            let password = record.postgres_password.clone().unwrap_or_else(control::random_token);
            let backend = LocalBackend::new(&opts.home.root, &dir, &opts.workspace, &opts.sandbox_bin, password);
            run_engine(opts, backend, topology, record, listener, observer).await
        }
        Kind::Docker => {
            let backend = DockerBackend::new(&opts.home.root, &dir, &opts.name).await?;
            run_engine(opts, backend, topology, record, listener, observer).await
        }
    }
}

/// Run the sandbox on `backend` until it is told to stop, then tear it down.
async fn run_engine<B: Backend>(
    opts: &Options,
    backend: B,
    topology: Topology,
    mut record: Record,
    listener: tokio::net::TcpListener,
    observer: impl Observer,
) -> Result<()> {
    let engine = std::sync::Arc::new(Engine::new(backend, topology, &opts.name).await?);
    let down = opts.stop.clone();
    let shutdown = CancellationToken::new();
    let token = record.control.as_ref().map(|c| c.token.clone()).unwrap_or_default();
    let served = control::Served { bus: engine.bus().clone(), steer: engine.clone(), down: down.clone(), token };
    control::serve(listener, served, shutdown.clone());
    spawn_record_keeper(engine.bus(), record.clone());
    let observed = spawn_observer(engine.bus(), observer);
    let signals = signal_token()?;

    let started = tokio::select! {
        r = engine.start() => r,
        () = down.cancelled() => Err(Error::Interrupted("stopped by `sandbox down` while starting".into())),
        () = signals.cancelled() => Err(Error::Interrupted("interrupted while starting".into())),
    };
    if started.is_ok() {
        tokio::select! {
            () = down.cancelled() => tracing::info!("down requested"),
            () = signals.cancelled() => tracing::info!("signal received"),
        }
    }
    let stopped = engine.stop().await;
    // Keep the record's children until they are gone, then stop answering.
    record.children.clear();
    shutdown.cancel();
    drop(engine);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), observed).await;
    started.and(stopped)
}

fn spawn_observer(bus: &crate::engine::Bus, mut observer: impl Observer) -> tokio::task::JoinHandle<()> {
    let mut rx = bus.watch();
    tokio::spawn(async move {
        let mut prev: Option<State> = None;
        loop {
            let next = rx.borrow_and_update().clone();
            observer.changed(prev.as_ref(), &next);
            let done = next.phase == crate::engine::Phase::Stopped;
            prev = Some(next);
            if done || rx.changed().await.is_err() {
                break;
            }
        }
    })
}

/// Keep `sandbox.json` listing what runs each component (a pid, a container),
/// so that `prune` can find it if this supervisor dies.
fn spawn_record_keeper(bus: &crate::engine::Bus, mut record: Record) {
    let mut events = bus.subscribe();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            if let Event::Spawned { component, id, .. } = event {
                let start_time = match &id {
                    RunId::Pid(pid) => process::start_time(*pid),
                    RunId::Container(_) => None,
                };
                record.children.retain(|c| c.component != component);
                record.children.push(ChildRecord { component, id, start_time });
                if let Err(e) = record.write() {
                    tracing::warn!("cannot update the sandbox record: {e}");
                }
            }
        }
    });
}

fn signal_token() -> Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let mut streams = Vec::new();
    for kind in [SignalKind::interrupt(), SignalKind::terminate(), SignalKind::hangup()] {
        streams.push(signal(kind).map_err(Error::io("cannot install signal handlers"))?);
    }
    let t = token.clone();
    tokio::spawn(async move {
        let waits = streams.iter_mut().map(|s| Box::pin(s.recv()));
        futures::future::select_all(waits).await;
        t.cancel();
    });
    Ok(token)
}
