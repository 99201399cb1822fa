//! The sandbox's parts as testcontainers images, for a team's own tests (and
//! the project's Docker tests): PostgreSQL on the official image's contract,
//! the Kafka-protocol broker, each mocked provider and each bank service, all
//! from the images `sandbox images build` makes (nothing is pulled).
//!
//! Start one with testcontainers' own API:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use testcontainers::runners::AsyncRunner;
//! let pg = harness::containers::postgres(&["accounts"]).start().await?;
//! let url = harness::containers::Postgres::url(&pg, "accounts").await?;
//! # Ok(()) }
//! ```
//!
//! Each constructor gives a request already labelled as the sandbox's, with
//! the process that started it as its owner: testcontainers removes a
//! container when its handle drops, and `sandbox prune` removes what a killed
//! test process left (testcontainers-rs has no reaper of its own).
//!
//! testcontainers talks to the engine through bollard 0.19, which sends no API
//! version on the wire (its `uri.rs` drops the prefix it builds), so this
//! machine's Engine 20.10 (API 1.41) answers it. bollard 0.22 will send the
//! version its explicit constructors name: then connect with the `*_defaults`
//! constructors and `negotiate_version`, as `backend::docker::connect` does.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use testcontainers::core::{ContainerPort, Healthcheck, WaitFor};
use testcontainers::{ContainerAsync, ContainerRequest, Image, ImageExt};

use crate::backend::docker::{LABEL_COMPONENT, LABEL_HOME, LABEL_OWNER, LABEL_SANDBOX};
use crate::images::{REPOSITORY, VERSION};

/// The secret the provider mocks sign their webhooks with, and the bank checks.
pub const WEBHOOK_SECRET: &str = "sandbox-webhook-secret";

/// The port every HTTP part listens on inside its container.
pub const HTTP_PORT: ContainerPort = ContainerPort::Tcp(8080);
/// PostgreSQL's port inside its container.
pub const POSTGRES_PORT: ContainerPort = ContainerPort::Tcp(5432);
/// The broker's port inside its container.
pub const KAFKA_PORT: ContainerPort = ContainerPort::Tcp(9092);

/// Every part's container answers its health check within this, or its start fails.
const STARTUP: Duration = Duration::from_secs(60);

/// The sandbox's labels for what this process starts: the tests' sandbox of
/// this process, under the home `sandbox prune` sweeps, owned by this process.
fn labels() -> [(&'static str, String); 3] {
    [
        (LABEL_SANDBOX, format!("tests-{}", std::process::id())),
        (LABEL_HOME, crate::sandbox::Home::from_env().root.to_string_lossy().to_string()),
        (LABEL_OWNER, crate::backend::docker::owner_of_this_process()),
    ]
}

/// `request` labelled as the sandbox's (see [`labels`]).
fn labelled<I: Image>(request: ContainerRequest<I>, component: &str) -> ContainerRequest<I> {
    labels()
        .into_iter()
        .fold(request.with_label(LABEL_COMPONENT, component.to_string()), |r, (k, v)| r.with_label(k, v))
        .with_startup_timeout(STARTUP)
}

/// A network for a test's containers (`.with_network(network.name())`),
/// labelled as the sandbox's like them, so `sandbox prune` removes it too
/// when the test is killed (a network testcontainers makes itself carries no
/// label). Removed when dropped: declare it before the containers on it, so
/// that they go first.
#[derive(Debug)]
pub struct Network {
    name: String,
}

impl Network {
    /// Make the network `name` (a bridge).
    pub async fn new(name: &str) -> crate::Result<Self> {
        let docker = crate::backend::docker::connect().await?;
        let request = bollard::models::NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            labels: Some(labels().into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
            ..Default::default()
        };
        docker
            .create_network(request)
            .await
            .map_err(|e| crate::Error::Docker(format!("cannot create the network {name}: {e}")))?;
        Ok(Self { name: name.to_string() })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Network {
    /// Removed on a thread of its own (a drop cannot await), waited for.
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        let removed = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(docker) = crate::backend::docker::connect().await {
                    let _ = docker.remove_network(&name).await;
                }
            });
        });
        let _ = removed.join();
    }
}

/// A health check (`Healthcheck::cmd` or `cmd_shell`) run inside the
/// container every quarter second.
fn health(check: Healthcheck) -> Healthcheck {
    check.with_interval(Duration::from_millis(250)).with_timeout(Duration::from_secs(1)).with_retries(240)
}

/// PostgreSQL 15 (`bank-sandbox/postgres:15`), the official image's
/// contract: `POSTGRES_USER`/`POSTGRES_PASSWORD`, and one database per name
/// in `POSTGRES_MULTIPLE_DATABASES`. The password is random: its port is
/// reachable by anything on the machine.
#[derive(Debug, Clone)]
pub struct Postgres {
    env: BTreeMap<String, String>,
}

impl Postgres {
    pub const USER: &'static str = "bank";

    pub fn password(&self) -> &str {
        self.env.get("POSTGRES_PASSWORD").map(String::as_str).unwrap_or_default()
    }

    /// The URL of `database` from the host, through the mapped port.
    pub async fn url(
        container: &ContainerAsync<Postgres>,
        database: &str,
    ) -> testcontainers::core::error::Result<String> {
        let port = container.get_host_port_ipv4(POSTGRES_PORT).await?;
        let host = container.get_host().await?;
        Ok(format!("postgres://{}:{}@{host}:{port}/{database}", Self::USER, container.image().password()))
    }
}

/// The init script of the bank's Compose file: `POSTGRES_MULTIPLE_DATABASES`.
const CREATE_DATABASES: &[u8] = include_bytes!("../../compose/postgres-init/create-databases.sh");

/// PostgreSQL with a database for each of `databases`.
pub fn postgres(databases: &[&str]) -> ContainerRequest<Postgres> {
    let env = BTreeMap::from([
        ("POSTGRES_USER".to_string(), Postgres::USER.to_string()),
        ("POSTGRES_PASSWORD".to_string(), uuid::Uuid::new_v4().simple().to_string()),
        ("POSTGRES_MULTIPLE_DATABASES".to_string(), databases.join(",")),
        ("POSTGRES_INITDB_ARGS".to_string(), "--no-sync --wal-segsize=1".to_string()),
        ("TZ".to_string(), "UTC".to_string()),
    ]);
    labelled(ContainerRequest::from(Postgres { env }), "postgres")
        // What the official image does not: one database per name (the
        // script Compose mounts, copied in before the container starts).
        .with_copy_to("/docker-entrypoint-initdb.d/create-databases.sh", CREATE_DATABASES.to_vec())
        .with_health_check(health(Healthcheck::cmd_shell("pg_isready -h 127.0.0.1 -U bank")))
}

impl Image for Postgres {
    fn name(&self) -> &str {
        "bank-sandbox/postgres"
    }

    fn tag(&self) -> &str {
        "15"
    }

    fn ready_conditions(&self) -> Vec<WaitFor> {
        vec![WaitFor::healthcheck()]
    }

    fn env_vars(&self) -> impl IntoIterator<Item = (impl Into<Cow<'_, str>>, impl Into<Cow<'_, str>>)> {
        self.env.iter()
    }

    fn cmd(&self) -> impl IntoIterator<Item = impl Into<Cow<'_, str>>> {
        ["postgres", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    }

    fn expose_ports(&self) -> &[ContainerPort] {
        &[POSTGRES_PORT]
    }
}

/// One of the project's own parts: the embedded Kafka-protocol broker and
/// the provider mocks (`bank-sandbox/sandbox`), a bank service
/// (`bank-sandbox/bank`), the whole bank in one container
/// (`bank-sandbox/bank-in-a-box`); what it runs, its settings and its ports,
/// ready when its container's health check passes.
#[derive(Debug, Clone)]
pub struct Part {
    name: String,
    cmd: Vec<String>,
    env: BTreeMap<String, String>,
    ports: Vec<ContainerPort>,
}

impl Part {
    fn new(kind: &str, cmd: Vec<String>, env: BTreeMap<String, String>, port: ContainerPort) -> Self {
        Self { name: format!("{REPOSITORY}/{kind}"), cmd, env, ports: vec![port] }
    }

    /// One of its settings (its environment).
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.env.get(key).map(String::as_str)
    }
}

impl Image for Part {
    fn name(&self) -> &str {
        &self.name
    }

    fn tag(&self) -> &str {
        VERSION
    }

    fn ready_conditions(&self) -> Vec<WaitFor> {
        vec![WaitFor::healthcheck()]
    }

    fn env_vars(&self) -> impl IntoIterator<Item = (impl Into<Cow<'_, str>>, impl Into<Cow<'_, str>>)> {
        self.env.iter()
    }

    fn cmd(&self) -> impl IntoIterator<Item = impl Into<Cow<'_, str>>> {
        self.cmd.iter()
    }

    fn expose_ports(&self) -> &[ContainerPort] {
        &self.ports
    }
}

/// The embedded Kafka-protocol broker (`sandbox broker`), telling clients to
/// connect to `advertise` (`host:port`): the host's mapped port for clients
/// on the host ([`broker_for_the_host`]), or `<alias>:9092` for containers on
/// a shared network. It creates no topic by itself (no auto-create, as the
/// sandbox's rule for Kafka says): make them with an admin client first.
pub fn broker(advertise: &str) -> ContainerRequest<Part> {
    let cmd = ["broker", "--listen", "0.0.0.0:9092", "--advertise", advertise].map(String::from).to_vec();
    labelled(ContainerRequest::from(Part::new("sandbox", cmd, BTreeMap::new(), KAFKA_PORT)), "kafka")
        .with_health_check(health(Healthcheck::cmd(["sandbox", "probe", "tcp://127.0.0.1:9092"])))
}

/// The broker for clients on this host: a free port of the host mapped to
/// it and advertised, so what a client is told to connect to is what reaches
/// it. Returns the request and the bootstrap address (`127.0.0.1:<port>`).
pub fn broker_for_the_host() -> std::io::Result<(ContainerRequest<Part>, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let bootstrap = format!("127.0.0.1:{port}");
    Ok((broker(&bootstrap).with_mapped_port(port, KAFKA_PORT), bootstrap))
}

/// A mocked third party (`sandbox provider` with its definition from
/// `fixtures/providers/`), steered at `/__admin` like the sandbox's: the mock of `provider` (`payment-scheme`, `card-acquirer`,
/// `screening-vendor`), posting its webhooks to `webhooks` (a base URL the
/// container can reach) when given, signed with [`WEBHOOK_SECRET`].
pub fn provider(provider: &str, webhooks: Option<&str>) -> ContainerRequest<Part> {
    let spec = format!("/fixtures/providers/{provider}.yaml");
    let cmd = ["provider", "--spec", &spec, "--listen", "0.0.0.0:8080"].map(String::from).to_vec();
    let mut env = BTreeMap::from([("WEBHOOK_SECRET".to_string(), WEBHOOK_SECRET.to_string())]);
    if let Some(base) = webhooks {
        env.insert("WEBHOOK_BASE_URL".into(), base.to_string());
    }
    labelled(ContainerRequest::from(Part::new("sandbox", cmd, env, HTTP_PORT)), provider)
        .with_health_check(health(Healthcheck::cmd(["sandbox", "probe", "http://127.0.0.1:8080/__admin/health"])))
}

/// A service of the bank (`bank <service>`) with the settings it reads
/// (`DATABASE_URL`, `ACCOUNTS_URL`, `KAFKA_BROKERS`, ...; its own `HTTP_ADDR`
/// is set), ready when its `/health` answers 200.
pub fn service<'a>(service: &str, settings: impl IntoIterator<Item = (&'a str, String)>) -> ContainerRequest<Part> {
    let mut env: BTreeMap<String, String> = settings.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    env.insert("HTTP_ADDR".into(), "0.0.0.0:8080".into());
    let image = Part::new("bank", vec![service.to_string()], env, HTTP_PORT);
    labelled(ContainerRequest::from(image), service).with_health_check(health(Healthcheck::cmd([
        "bank",
        "probe",
        "http://127.0.0.1:8080/health",
    ])))
}

/// The base URL of a container's HTTP port from the host.
pub async fn http_url<I: Image>(container: &ContainerAsync<I>) -> testcontainers::core::error::Result<String> {
    let port = container.get_host_port_ipv4(HTTP_PORT).await?;
    let host = container.get_host().await?;
    Ok(format!("http://{host}:{port}"))
}

/// The whole bank in one container (`bank-sandbox/bank-in-a-box`, see
/// [`crate::inabox`]): its gateway, Kafka, PostgreSQL and provider mocks
/// on fixed ports inside it, ready when every component is healthy.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let bank = harness::containers::BankInABox::default().start().await?;
/// let gateway = bank.gateway().await?; // http://localhost:<port>
/// let kafka = bank.kafka_bootstrap().await?; // localhost:<port>, advertised as such
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct BankInABox {
    image: Part,
}

/// The repository the bank-in-a-box is taken from: `$SANDBOX_IMAGES`, else
/// `bank-sandbox` (where `sandbox images build` tags it).
pub const IMAGES_ENV: &str = "SANDBOX_IMAGES";

impl Default for BankInABox {
    /// `bank-sandbox/bank-in-a-box` at this version (another repository from
    /// `$SANDBOX_IMAGES`), with a random PostgreSQL password: its ports are
    /// reachable by anything on the machine.
    fn default() -> Self {
        let repository = std::env::var(IMAGES_ENV).unwrap_or_else(|_| REPOSITORY.to_string());
        let password = uuid::Uuid::new_v4().simple().to_string();
        let image = Part {
            name: format!("{repository}/bank-in-a-box"),
            cmd: Vec::new(),
            env: BTreeMap::from([(PASSWORD.to_string(), password)]),
            ports: BOX_PORTS.to_vec(),
        };
        Self { image }
    }
}

/// The setting that holds the box's PostgreSQL password.
const PASSWORD: &str = "POSTGRES_PASSWORD";

/// The ports the bank-in-a-box opens.
const BOX_PORTS: [ContainerPort; 6] = [
    ContainerPort::Tcp(crate::inabox::GATEWAY_PORT),
    ContainerPort::Tcp(crate::inabox::PROVIDER_PORTS[0].1),
    ContainerPort::Tcp(crate::inabox::PROVIDER_PORTS[1].1),
    ContainerPort::Tcp(crate::inabox::PROVIDER_PORTS[2].1),
    ContainerPort::Tcp(crate::inabox::KAFKA_PORT),
    ContainerPort::Tcp(crate::inabox::POSTGRES_PORT),
];

impl BankInABox {
    pub fn password(&self) -> &str {
        self.image.setting(PASSWORD).unwrap_or_default()
    }

    /// The request, labelled as the sandbox's, for testcontainers' own API (a
    /// network, more settings); [`BankInABox::start`] is the short way.
    pub fn request(self) -> ContainerRequest<Part> {
        labelled(ContainerRequest::from(self.image), "bank-in-a-box")
            .with_health_check(health(Healthcheck::cmd(["sandbox", "box", "health"])))
            // Room for PostgreSQL's cluster in memory: in the engine's default
            // 64 MB it goes to disk, and the box is healthy in 3.7 s, not 1.3 s.
            .with_shm_size(crate::inabox::SHM_SIZE)
    }

    /// Start it, wait until every component is healthy, and tell its broker
    /// the host's port mapped to Kafka's, so a client on this host can
    /// produce and consume through it.
    pub async fn start(self) -> testcontainers::core::error::Result<RunningBank> {
        use testcontainers::runners::AsyncRunner;
        let container = self.request().start().await?;
        let bank = RunningBank { container };
        let to = bank.kafka_bootstrap().await?;
        let mut told = bank
            .container
            .exec(testcontainers::core::ExecCommand::new(["sandbox", "box", "advertise", to.as_str()]))
            .await?;
        let out = told.stdout_to_vec().await?;
        if told.exit_code().await? != Some(0) {
            let err = String::from_utf8_lossy(&told.stderr_to_vec().await?).to_string();
            return Err(testcontainers::TestcontainersError::other(format!(
                "the bank-in-a-box did not take Kafka's address {to}: {err}{}",
                String::from_utf8_lossy(&out)
            )));
        }
        Ok(bank)
    }
}

/// A started bank-in-a-box: its addresses from this host. Removed when dropped.
#[derive(Debug)]
pub struct RunningBank {
    pub container: ContainerAsync<Part>,
}

impl RunningBank {
    async fn address(&self, port: u16) -> testcontainers::core::error::Result<String> {
        let host = self.container.get_host().await?;
        let port = self.container.get_host_port_ipv4(ContainerPort::Tcp(port)).await?;
        Ok(format!("{host}:{port}"))
    }

    /// The bank's front door, `http://host:port`.
    pub async fn gateway(&self) -> testcontainers::core::error::Result<String> {
        Ok(format!("http://{}", self.address(crate::inabox::GATEWAY_PORT).await?))
    }

    /// A provider mock's base URL (its `/__admin` is there): `payment-scheme`,
    /// `card-acquirer` or `screening-vendor`.
    pub async fn provider(&self, name: &str) -> testcontainers::core::error::Result<String> {
        let port =
            crate::inabox::PROVIDER_PORTS.iter().find(|(n, _)| *n == name).map(|(_, p)| *p).ok_or_else(|| {
                testcontainers::TestcontainersError::other(format!(
                    "no provider `{name}`; they are: {}",
                    crate::inabox::PROVIDER_PORTS.map(|(n, _)| n).join(", ")
                ))
            })?;
        Ok(format!("http://{}", self.address(port).await?))
    }

    /// Kafka's bootstrap address for a client on this host.
    pub async fn kafka_bootstrap(&self) -> testcontainers::core::error::Result<String> {
        self.address(crate::inabox::KAFKA_PORT).await
    }

    /// The URL of one of the bank's databases (`accounts`, `payments`, ...).
    pub async fn postgres_url(&self, database: &str) -> testcontainers::core::error::Result<String> {
        let at = self.address(crate::inabox::POSTGRES_PORT).await?;
        let password = self.container.image().setting(PASSWORD).unwrap_or_default();
        Ok(format!("postgres://{}:{password}@{at}/{database}", crate::inabox::POSTGRES_USER))
    }
}
