//! The service kit: what every service gets for free. A service supplies a
//! [`ServiceSpec`] (name, migrations, discovery links, router); the kit adds
//! `/`, `/health`, `/ping`, `/events`, `/metrics`, trace ids, request metrics,
//! problem+json errors and graceful shutdown.

pub mod client;
pub mod consume;
pub mod error;
pub mod events;
pub mod hal;
pub mod http;
pub mod idempotency;
pub mod kafka;
pub mod listing;
pub mod openapi;
pub mod webhooks;
pub mod worker;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::{Extension, Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgPool, Postgres, SqlSafeStr, Transaction};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use error::ApiResult;
use hal::{BaseUrl, Hal};
use openapi::{Document, Routes, get_with};

/// Kit tables every service has (versions below 100 are the kit's).
const KIT_MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "kit event log and idempotency", include_str!("migrations/0001_kit.sql")),
    (2, "kit processed events", include_str!("migrations/0002_processed_events.sql")),
    (3, "kit consumer positions", include_str!("migrations/0003_consumer_positions.sql")),
    (4, "kit event positions", include_str!("migrations/0004_event_positions.sql")),
    (5, "kit sequencer function", include_str!("migrations/0005_sequencer_function.sql")),
    (6, "kit events after a cursor", include_str!("migrations/0006_events_after.sql")),
];

/// What a service is, to the kit.
#[derive(Debug)]
pub struct ServiceSpec {
    pub name: &'static str,
    /// (version >= 100, description, SQL), applied in order after the kit's.
    pub migrations: &'static [(i64, &'static str, &'static str)],
    /// Links the discovery resource advertises: (rel, path).
    pub links: &'static [(&'static str, &'static str)],
    /// Actions it advertises: (rel, path), each a POST that creates something.
    pub actions: &'static [(&'static str, &'static str)],
    /// Its routes, each described as it is added (`kit::openapi`).
    pub router: fn() -> Routes,
    /// Its `/openapi.json`, given the document of its own routes: the same, but
    /// for the gateway, which serves the whole bank's.
    pub document: Documenter,
    /// Start the service's background work (consumers, pollers) once the
    /// database is migrated; an error here (bad config) stops start-up.
    pub start: fn(&Kit) -> anyhow::Result<()>,
}

/// What makes a service's `/openapi.json` from the document of its routes.
pub type Documenter =
    fn(Kit, BaseUrl, Arc<serde_json::Value>) -> futures::future::BoxFuture<'static, ApiResult<serde_json::Value>>;

/// For services whose `/openapi.json` is the document of their own routes.
pub fn own_document(
    _: Kit,
    _: BaseUrl,
    own: Arc<serde_json::Value>,
) -> futures::future::BoxFuture<'static, ApiResult<serde_json::Value>> {
    Box::pin(async move { Ok(own.as_ref().clone()) })
}

/// For services with no background work.
pub fn no_background_work(_: &Kit) -> anyhow::Result<()> {
    Ok(())
}

/// Runtime configuration, from environment variables.
#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    pub database_url: String,
    pub shutdown_timeout: Duration,
    /// Every other setting a service reads (KAFKA_BROKERS, CONNECT_SOURCES, ...):
    /// the process environment in production, explicit values in tests.
    pub vars: BTreeMap<String, String>,
}

impl Config {
    /// A config for tests and embedding: no environment is read.
    pub fn new(http_addr: SocketAddr, database_url: impl Into<String>) -> Self {
        Self {
            http_addr,
            database_url: database_url.into(),
            shutdown_timeout: Duration::from_secs(10),
            vars: BTreeMap::new(),
        }
    }

    pub fn var(mut self, name: &str, value: impl Into<String>) -> Self {
        self.vars.insert(name.to_string(), value.into());
        self
    }

    pub fn from_env() -> anyhow::Result<Self> {
        let http_addr = std::env::var("HTTP_ADDR").unwrap_or_else(|_| "0.0.0.0:8080".into());
        let http_addr = http_addr
            .parse()
            .with_context(|| format!("HTTP_ADDR=`{http_addr}` is not an address like 127.0.0.1:8080"))?;
        let database_url = std::env::var("DATABASE_URL")
            .context("DATABASE_URL is not set: point it at this service's PostgreSQL database")?;
        let shutdown_timeout = match std::env::var("SHUTDOWN_TIMEOUT_SECS") {
            Ok(s) => {
                Duration::from_secs(s.parse().with_context(|| format!("SHUTDOWN_TIMEOUT_SECS=`{s}` is not a number"))?)
            }
            Err(_) => Duration::from_secs(10),
        };
        Ok(Self { http_addr, database_url, shutdown_timeout, vars: std::env::vars().collect() })
    }
}

/// The state of one thing a service depends on, as `/health` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Ok,
    /// Working, but not as it should (a provider slow or failing): the service
    /// still serves, so `/health` stays 200 and says why.
    Degraded(String),
    /// The service cannot do its work without it (its consumer not subscribed,
    /// its producer without topics): `/health` is 503.
    Down(String),
}

/// A service's checks beyond its database, by name.
#[derive(Debug, Clone, Default)]
pub struct Checks(Arc<Mutex<BTreeMap<&'static str, Check>>>);

impl Checks {
    pub fn set(&self, name: &'static str, state: Check) {
        if let Ok(mut checks) = self.0.lock() {
            checks.insert(name, state);
        }
    }

    fn snapshot(&self) -> BTreeMap<&'static str, Check> {
        self.0.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// Shared state of every handler.
#[derive(Debug, Clone)]
pub struct Kit {
    pub service: &'static str,
    pub pool: PgPool,
    pub appended: events::Appended,
    pub shutdown: CancellationToken,
    /// Background work, waited for on shutdown.
    pub tasks: tokio_util::task::TaskTracker,
    links: Arc<Mutex<Vec<(String, String)>>>,
    spec_actions: &'static [(&'static str, &'static str)],
    document: Documenter,
    checks: Checks,
    vars: Arc<BTreeMap<String, String>>,
    /// The service's own state (clients, settings), set once by its start hook.
    own: Arc<OnceLock<Arc<dyn std::any::Any + Send + Sync>>>,
}

impl Kit {
    pub async fn begin(&self) -> ApiResult<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// Advertise one more link on the discovery resource (e.g. the gateway's routes).
    pub fn add_link(&self, rel: &str, path: &str) {
        if let Ok(mut links) = self.links.lock() {
            links.push((rel.to_string(), path.to_string()));
        }
    }

    /// Keep the service's own state (once, from its start hook).
    pub fn set_own<T: Send + Sync + 'static>(&self, value: T) {
        let _ = self.own.set(Arc::new(value));
    }

    /// The service's own state, as its start hook set it.
    pub fn own<T: Send + Sync + 'static>(&self) -> ApiResult<Arc<T>> {
        self.own
            .get()
            .cloned()
            .and_then(|a| a.downcast::<T>().ok())
            .ok_or_else(|| error::ApiError::Unavailable(format!("{} is not configured", self.service)))
    }

    /// An optional setting.
    pub fn vars(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    /// The names of every setting.
    pub fn var_names(&self) -> impl Iterator<Item = &str> {
        self.vars.keys().map(String::as_str)
    }

    /// An optional setting parsed as `T`, or `default` when unset; a value that
    /// does not parse is an error naming the setting.
    pub fn setting<T: std::str::FromStr>(&self, name: &str, default: T) -> anyhow::Result<T> {
        match self.vars.get(name) {
            Some(v) => v.parse().ok().with_context(|| format!("{name}=`{v}` is not a valid value")),
            None => Ok(default),
        }
    }

    /// A setting, or an error naming it and what it is for.
    pub fn require(&self, name: &str, what: &str) -> anyhow::Result<String> {
        self.vars.get(name).cloned().with_context(|| format!("{name} is not set: {what}"))
    }

    /// Record a check beyond the database (a consumer, a producer, a provider).
    pub fn set_check(&self, name: &'static str, state: Check) {
        self.checks.set(name, state);
    }

    /// The service's checks, for a client that reports on the dependency it calls.
    pub fn checks(&self) -> Checks {
        self.checks.clone()
    }

    /// Commit, then wake `/events` long-pollers.
    pub async fn commit(&self, tx: Transaction<'static, Postgres>) -> ApiResult<()> {
        tx.commit().await?;
        self.appended.bump();
        Ok(())
    }
}

/// A pooled connection idle this long is pinged before it is used again.
const PING_IDLE: Duration = Duration::from_secs(1);

/// A bound, migrated service, ready to run.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    kit: Kit,
    /// Every path it serves with a description of its own.
    paths: Vec<String>,
    shutdown_timeout: Duration,
}

impl Application {
    pub async fn build(spec: &ServiceSpec, config: Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let options: PgConnectOptions = config
            .database_url
            .parse()
            .with_context(|| format!("DATABASE_URL for {} is not a PostgreSQL URL", spec.name))?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            // sqlx pings every connection it hands out: a round trip per
            // statement or transaction, a fifth of the bank's round trips
            // under load. Only a connection idle for a while is checked (the
            // server may have closed it); one in steady use proved itself.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IDLE {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await
            .with_context(|| format!("{}: cannot connect to its database", spec.name))?;
        migrator(spec).run(&pool).await.with_context(|| format!("{}: migrations failed", spec.name))?;
        let listener = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("{}: cannot listen on {} (is the port in use?)", spec.name, config.http_addr))?;
        // Install the recorder before the first request is counted.
        prometheus();
        let kit = Kit {
            service: spec.name,
            pool,
            appended: events::Appended::new(),
            shutdown,
            tasks: tokio_util::task::TaskTracker::new(),
            links: Arc::new(Mutex::new(spec.links.iter().map(|(r, p)| (r.to_string(), p.to_string())).collect())),
            spec_actions: spec.actions,
            document: spec.document,
            checks: Checks::default(),
            vars: Arc::new(config.vars.clone()),
            own: Arc::default(),
        };
        (spec.start)(&kit).with_context(|| format!("{}: cannot start", spec.name))?;
        let service = spec.name;
        let secret: Option<Arc<[u8]>> = config.vars.get("WEBHOOK_SECRET").map(|s| Arc::from(s.as_bytes()));
        let mut api = aide::openapi::OpenApi::default();
        let routes = Routes::new()
            .api_route(
                "/",
                get_with(discovery, |op| {
                    op.id("discovery")
                        .summary("The service's front page: links to everything it serves and the actions it takes")
                        .answers::<openapi::Resource<Discovery>>(200, "The service's name and links")
                }),
            )
            .api_route(
                "/health",
                get_with(health, |op| {
                    op.id("health")
                        .summary("Whether the service and what it depends on work")
                        .answers_as::<HealthReport>(200, "application/json", "Up (`ok`), or up but `degraded`")
                        .answers_as::<HealthReport>(
                            503,
                            "application/json",
                            "Down: a check it cannot work without failed",
                        )
                }),
            )
            .api_route(
                "/ping",
                get_with(ping, |op| {
                    op.id("ping").summary("Answers `pong` when the process serves").answers_as::<String>(
                        200,
                        "text/plain",
                        "`pong`",
                    )
                }),
            )
            .api_route(
                "/metrics",
                get_with(metrics_text, |op| {
                    op.id("metrics")
                        .summary("Request counts and latencies, in Prometheus' text format")
                        .answers_as::<String>(200, METRICS_TYPE, "Prometheus' text exposition format")
                }),
            )
            .api_route(
                "/contracts/events",
                get_with(event_contracts, |op| {
                    op.id("eventContracts")
                        .summary("The JSON Schema of every event this service publishes (the gateway: every service's)")
                        .answers_as::<serde_json::Value>(200, "application/json", "Each event type's schema and topic")
                }),
            )
            .api_route(
                "/openapi.json",
                get_with(openapi_document, |op| {
                    op.id("openapi")
                        .summary("This document: the service's HTTP contract (the gateway: the whole bank's)")
                        .answers_as::<serde_json::Value>(200, "application/json", "An OpenAPI 3.1 document")
                        .refuses(502, "The gateway could not read a service's document")
                }),
            )
            .merge(events::router())
            .merge((spec.router)());
        let paths = routes.paths().to_vec();
        let router = routes
            .finish(&mut api, &format!("bank-sandbox: {}", spec.name))
            .fallback(|| async { error::ApiError::not_found("resource") })
            .with_state(kit.clone())
            .layer(Extension(Arc::new(serde_json::to_value(&api).context("the OpenAPI document")?)))
            // Inside `observe`, so that a refused webhook is logged with its trace id.
            .layer(axum::middleware::from_fn(move |req, next| webhooks::guard(secret.clone(), req, next)))
            .layer(axum::middleware::from_fn(move |req, next| http::observe(service, req, next)));
        Ok(Self { listener, router, kit, paths, shutdown_timeout: config.shutdown_timeout })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn kit(&self) -> &Kit {
        &self.kit
    }

    /// Every path it serves with a description of its own (its document must have each).
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// Serve until `shutdown` is cancelled, then drain in-flight requests for at
    /// most the configured timeout.
    pub async fn run(self) -> anyhow::Result<()> {
        let shutdown = self.kit.shutdown.clone();
        tracing::info!(service = self.kit.service, addr = %self.listener.local_addr()?, "listening");
        let serve = axum::serve(self.listener, self.router).with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let serve = tokio::spawn(async move { serve.await });
        shutdown.cancelled().await;
        match tokio::time::timeout(self.shutdown_timeout, serve).await {
            Ok(joined) => joined??,
            Err(_) => {
                tracing::warn!("in-flight requests did not finish within the shutdown timeout")
            }
        }
        self.kit.tasks.close();
        if tokio::time::timeout(self.shutdown_timeout, self.kit.tasks.wait()).await.is_err() {
            tracing::warn!("background work did not finish within the shutdown timeout");
        }
        self.kit.pool.close().await;
        tracing::info!(service = self.kit.service, "stopped");
        Ok(())
    }
}

fn migrator(spec: &ServiceSpec) -> Migrator {
    let migrations = KIT_MIGRATIONS
        .iter()
        .chain(spec.migrations)
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                (*description).into(),
                MigrationType::Simple,
                AssertSqlSafe(*sql).into_sql_str(),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
}

/// What every document says of the bank's HTTP conventions.
pub(crate) const DOCUMENT_DESCRIPTION: &str = "Resources are HAL (`application/hal+json`): follow their `_links`. \
    Every refusal is problem+json (RFC 9457). Amounts are whole minor units (pence) with an ISO 4217 currency. \
    A POST that moves money takes an `Idempotency-Key` header.";

/// The discovery resource's state.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct Discovery {
    /// The service's name.
    service: String,
}

async fn discovery(State(kit): State<Kit>, base: BaseUrl) -> Hal {
    let state = Discovery { service: kit.service.to_string() };
    let mut hal = Hal::of(&base, "/", &state)
        .link_typed("health", "/health", "application/json")
        .link("events", "/events")
        .link_typed("event-contracts", "/contracts/events", "application/json")
        .link_typed("openapi", "/openapi.json", "application/json")
        .link_typed("metrics", "/metrics", METRICS_TYPE);
    for (rel, path) in kit.spec_actions {
        hal = hal.action(rel, "POST", path);
    }
    let links = kit.links.lock().map(|l| l.clone()).unwrap_or_default();
    for (rel, path) in &links {
        hal = hal.link(rel, path);
    }
    hal
}

/// The JSON Schemas of the events this service publishes (`wire::payloads`);
/// the gateway, the bank's front door, serves every service's.
async fn event_contracts(State(kit): State<Kit>) -> Json<serde_json::Value> {
    let topic = (kit.service != "gateway").then(|| format!("{}.events", kit.service));
    Json(wire::payloads::contracts(topic.as_deref()))
}

/// The service's OpenAPI document (the gateway's: the bank's).
async fn openapi_document(
    State(kit): State<Kit>,
    base: BaseUrl,
    Extension(own): Extension<Arc<serde_json::Value>>,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json((kit.document)(kit.clone(), base, own).await?))
}

async fn ping() -> &'static str {
    "pong"
}

/// What `/health` answers.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct HealthReport {
    service: String,
    status: Status,
    /// Each dependency by name (`database`, a consumer, a provider).
    checks: BTreeMap<String, HealthCheck>,
}

#[derive(serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Degraded,
    Down,
}

#[derive(serde::Serialize, schemars::JsonSchema)]
struct HealthCheck {
    status: Status,
    /// Why it is not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

async fn health(State(kit): State<Kit>) -> axum::response::Response {
    let db = tokio::time::timeout(Duration::from_secs(1), sqlx::query("SELECT 1").execute(&kit.pool)).await;
    let database = match db {
        Ok(Ok(_)) => Check::Ok,
        Ok(Err(e)) => Check::Down(format!("database query failed: {e}")),
        // Slow (its pool busy, the machine loaded) is degraded, not dead: a
        // 503 would have the supervisor and the gateway treat a busy service
        // as gone. A database that refuses or errs is down.
        Err(_) => Check::Degraded("database did not answer within 1s".into()),
    };
    let mut all = kit.checks.snapshot();
    all.insert("database", database);
    let checks = all
        .iter()
        .map(|(name, state)| {
            let check = match state {
                Check::Ok => HealthCheck { status: Status::Ok, reason: None },
                Check::Degraded(reason) => HealthCheck { status: Status::Degraded, reason: Some(reason.clone()) },
                Check::Down(reason) => HealthCheck { status: Status::Down, reason: Some(reason.clone()) },
            };
            (name.to_string(), check)
        })
        .collect();
    let (code, status) = if all.values().any(|c| matches!(c, Check::Down(_))) {
        (StatusCode::SERVICE_UNAVAILABLE, Status::Down)
    } else if all.values().any(|c| matches!(c, Check::Degraded(_))) {
        (StatusCode::OK, Status::Degraded)
    } else {
        (StatusCode::OK, Status::Ok)
    };
    (code, Json(HealthReport { service: kit.service.to_string(), status, checks })).into_response()
}

/// Prometheus' text format.
const METRICS_TYPE: &str = "text/plain; version=0.0.4";

async fn metrics_text() -> axum::response::Response {
    ([(header::CONTENT_TYPE, METRICS_TYPE)], prometheus().render()).into_response()
}

/// The process-wide Prometheus recorder (installed once; every label carries the
/// service name, so several services in one test process do not collide).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a test harness): then ours
        // renders nothing, which the metrics test would show.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// JSON logs on stdout, one object a line, with the span stack (service, trace id).
///
/// Lines are written to stdout by a thread of their own, in batches: whatever
/// was logged while the last batch was written goes out in one write, so a
/// busy service makes a few writes a second instead of one per line (each a
/// system call on the request's thread and a wake-up of whatever reads the
/// other end: the sandbox's supervisor, Docker's log driver). Nothing is
/// dropped: a full queue makes the logging thread wait. Keep the guard until
/// the process ends; dropping it writes what is left.
#[must_use = "dropping the guard stops logging; keep it until the process ends"]
pub fn init_logging() -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let (stdout, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("log-writer")
        .finish(std::io::BufWriter::with_capacity(LOG_BATCH, std::io::stdout()));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_span_list(true)
        .with_target(false)
        .with_writer(stdout)
        .try_init();
    guard
}

/// Bytes of log lines written to stdout at most at once.
const LOG_BATCH: usize = 64 * 1024;

/// A token cancelled on SIGTERM or SIGINT.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        t.cancel();
    });
    token
}
