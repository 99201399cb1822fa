use std::path::PathBuf;

/// Everything the harness library can fail with. Each message says what is
/// wrong, where, and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{file}:{line}: {message}")]
    Topology { file: PathBuf, line: usize, message: String },
    // The cause is part of the message, not a `source`: `{:#}` would print it twice.
    #[error("cannot read {path}: {cause}")]
    Read { path: PathBuf, cause: std::io::Error },
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found on PATH or under /usr/lib/postgresql/*/bin; install them with `apt-get install -y postgresql`"
    )]
    PostgresMissing,
    #[error("sandbox `{0}` not found; `sandbox ls` lists the sandboxes on this machine")]
    NoSuchSandbox(String),
    #[error("sandbox `{name}` already exists ({state}); stop it with `sandbox down {name}` or choose another --name")]
    SandboxExists { name: String, state: String },
    #[error("invalid sandbox name `{0}`: use 1-40 characters from a-z, 0-9 and -")]
    BadName(String),
    #[error("sandbox home {path}: {problem}; {fix}")]
    UnsafeHome { path: PathBuf, problem: String, fix: String },
    #[error("{component}: {message}")]
    Component { component: String, message: String },
    #[error("the sandbox's supervisor at {addr} did not answer: {message}")]
    Control { addr: String, message: String },
    #[error("{context}: {cause}")]
    Io { context: String, cause: std::io::Error },
    #[error(
        "cannot reach the Docker engine at {host} ({why}): start it (`systemctl start docker`) or point DOCKER_HOST \
         at one, or use `--backend local`"
    )]
    NoEngine { host: String, why: String },
    #[error(
        "images not on this Docker engine: {}. `sandbox images build` makes the sandbox's own (bank-sandbox/*); add \
         `-f compose/local-images.yaml` to run the broker and PostgreSQL from them, or `docker pull` the others",
        images.join(", ")
    )]
    ImagesMissing { images: Vec<String> },
    #[error("port {port} for {what} is taken ({cause}): stop what listens there, or give another port")]
    PortTaken { port: u16, what: String, cause: std::io::Error },
    /// A component exited, or stayed unhealthy, while the sandbox started.
    #[error(
        "{component}: {why}{}",
        if log.is_empty() { String::new() } else { format!("; its last log lines:\n{}", log.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")) }
    )]
    ComponentFailed { component: String, why: String, log: Vec<String> },
    /// The sandbox is not running (yet, or any longer), or none or several are.
    #[error("{0}")]
    NotRunning(String),
    /// Stopped by `sandbox down` or a signal while starting.
    #[error("{0}")]
    Interrupted(String),
    /// An option, a setting or an argument is wrong; the message says how to fix it.
    #[error("{0}")]
    Usage(String),
    /// A request to the bank or a provider over HTTP failed or was answered badly.
    #[error("{0}")]
    Http(String),
    /// The broker, a Kafka client, or an event that never arrived.
    #[error("{0}")]
    Kafka(String),
    /// The Docker engine or Compose refused or failed an operation.
    #[error("{0}")]
    Docker(String),
    /// An image could not be built.
    #[error("{0}")]
    Image(String),
    /// cargo could not build a binary the sandbox runs.
    #[error("{0}")]
    Build(String),
    /// A private PostgreSQL cluster could not be made or set up.
    #[error("{0}")]
    Postgres(String),
    /// A provider mock: its definition, its admin API.
    #[error("{0}")]
    Provider(String),
    /// A tool the harness runs (python and pip, tmux, rustfmt, schemathesis) failed.
    #[error("{0}")]
    Tool(String),
    /// A check the harness makes failed: a benchmark's run, an audit, generated code.
    #[error("{0}")]
    Check(String),
    /// A task of the harness panicked.
    #[error("{0}")]
    Panicked(String),
}

impl Error {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |cause| Self::Io { context, cause }
    }

    pub fn component(component: &str, message: impl Into<String>) -> Self {
        Self::Component { component: component.to_string(), message: message.into() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
