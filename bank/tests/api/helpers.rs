//! One PostgreSQL cluster for every API test running on this machine (a
//! database per test), and a running service on a random port.
//!
//! The test runner may run each test in a process of its own (cargo-nextest
//! does), so the cluster is shared across processes: the first process that
//! needs it makes and starts it, each holds a shared lock on `users` while it
//! runs, and the last to leave (at exit, under the directory's lock) stops it
//! and removes its data. One left by a killed run is joined, or replaced if
//! its server is gone, by the next.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bank::kit::{Application, Config, ServiceSpec};
use harness::postgres;
use nix::fcntl::{Flock, FlockArg};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

struct Cluster {
    port: u16,
    /// This process's share of the cluster, given back at exit.
    lease: Mutex<Option<Flock<File>>>,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// Where the shared cluster lives: its data, and `port`, `pid`, `.lock` and
/// `users` beside it.
fn shared_dir() -> PathBuf {
    std::env::temp_dir().join(format!("bank-api-tests-{}", nix::unistd::geteuid()))
}

fn lock(path: &Path, how: FlockArg) -> Result<Flock<File>, nix::errno::Errno> {
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).unwrap();
    Flock::lock(file, how).map_err(|(_, e)| e)
}

/// The port of the shared cluster if its server still answers there.
fn running(dir: &Path) -> Option<u16> {
    let port: u16 = std::fs::read_to_string(dir.join("port")).ok()?.trim().parse().ok()?;
    std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| port)
}

/// A cluster made and started afresh in `dir`.
fn start(dir: &Path) -> u16 {
    let data = dir.join("data");
    if let Ok(pid) = std::fs::read_to_string(dir.join("pid")) {
        // A server that no longer answers: make sure it is gone.
        if let Ok(pid) = pid.trim().parse::<i32>() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _ = std::fs::remove_dir_all(&data);
    postgres::hand_over(dir).unwrap();
    let bin = postgres::bin_dir().unwrap();
    let out = postgres::initdb(&bin, &data, "test", postgres::Auth::Trust).unwrap().output().unwrap();
    assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut pg = postgres::server(&bin, &data, port, &["max_connections=300"]).unwrap();
    // Its own process group, and no pipe of the test's held open: it outlives
    // the process that started it.
    std::os::unix::process::CommandExt::process_group(&mut pg, 0);
    pg.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = pg.spawn().unwrap();
    std::fs::write(dir.join("pid"), child.id().to_string()).unwrap();
    // Reaped here if it ends while this process lives; by init after that.
    std::thread::spawn(move || child.wait());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "test PostgreSQL did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(dir.join("port"), port.to_string()).unwrap();
    port
}

/// At exit: give back this process's share; the last one out stops the
/// server and removes the cluster.
extern "C" fn leave_cluster() {
    let Some(c) = CLUSTER.get() else { return };
    let dir = shared_dir();
    let Ok(_guard) = lock(&dir.join(".lock"), FlockArg::LockExclusive) else { return };
    drop(c.lease.lock().ok().and_then(|mut l| l.take()));
    if lock(&dir.join("users"), FlockArg::LockExclusiveNonblock).is_ok() {
        if let Some(pid) = std::fs::read_to_string(dir.join("pid")).ok().and_then(|p| p.trim().parse::<i32>().ok()) {
            let pid = nix::unistd::Pid::from_raw(pid);
            // A fast shutdown, then wait for it to be gone before the data goes.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            for _ in 0..500 {
                if nix::sys::signal::kill(pid, None).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        for file in ["port", "pid"] {
            let _ = std::fs::remove_file(dir.join(file));
        }
        let _ = std::fs::remove_dir_all(dir.join("data"));
    }
}

fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let dir = shared_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let guard = lock(&dir.join(".lock"), FlockArg::LockExclusive).unwrap();
        let port = running(&dir).unwrap_or_else(|| start(&dir));
        let lease = lock(&dir.join("users"), FlockArg::LockShared).unwrap();
        drop(guard);
        // SAFETY: registers a plain extern "C" fn; it runs once, at process exit.
        #[allow(unsafe_code)]
        unsafe {
            nix::libc::atexit(leave_cluster);
        }
        Cluster { port, lease: Mutex::new(Some(lease)) }
    })
}

/// A service running on a random port against a fresh database.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    /// The service's own OpenAPI document: every answer `get` and `post`
    /// return is checked against it.
    pub contract: std::sync::Arc<harness::contracts::HttpContract>,
    /// Every path the service serves with a description of its own.
    pub paths: Vec<String>,
    pub database_url: String,
    shutdown: CancellationToken,
    running: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestApp {
    pub async fn spawn(spec: &'static ServiceSpec) -> Self {
        Self::spawn_with(spec, &[], None).await
    }

    /// With extra settings, on a given database (to restart a service on its data).
    pub async fn spawn_with(spec: &'static ServiceSpec, vars: &[(&str, String)], database_url: Option<String>) -> Self {
        let database_url = match database_url {
            Some(url) => url,
            None => fresh_database().await,
        };
        let mut config = Config::new("127.0.0.1:0".parse().unwrap(), database_url.clone());
        config.shutdown_timeout = Duration::from_secs(2);
        for (k, v) in vars {
            config = config.var(k, v.clone());
        }
        let shutdown = CancellationToken::new();
        let app = Application::build(spec, config, shutdown.clone()).await.expect("service builds");
        let base = format!("http://127.0.0.1:{}", app.port());
        let paths = app.paths().to_vec();
        let running = tokio::spawn(app.run());
        let http = reqwest::Client::new();
        let document: Value = http.get(format!("{base}/openapi.json")).send().await.unwrap().json().await.unwrap();
        let contract = harness::contracts::HttpContract::new(&document).expect("the service's document compiles");
        Self {
            base,
            http,
            contract: std::sync::Arc::new(contract),
            paths,
            database_url,
            shutdown,
            running: Some(running),
        }
    }

    /// Stop the service as SIGTERM would, and wait for it to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            let _ = running.await;
        }
    }
}

pub async fn fresh_database() -> String {
    {
        let c = cluster();
        let db = format!("t_{}", uuid::Uuid::new_v4().simple());
        let admin = format!("postgres://test@127.0.0.1:{}/postgres", c.port);
        let mut ready = None;
        for _ in 0..200 {
            if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
                ready = Some(pool);
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let pool = ready.expect("test PostgreSQL accepts connections");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}"))).execute(&pool).await.unwrap();
        pool.close().await;
        format!("postgres://test@127.0.0.1:{}/{db}", c.port)
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") { path.to_string() } else { format!("{}{path}", self.base) }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        self.keeps_its_contract("GET", path, read(r).await)
    }

    pub async fn post(&self, path: &str, body: Value, key: Option<&str>) -> (u16, Value) {
        let mut req = self.http.post(self.url(path)).json(&body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        self.keeps_its_contract("POST", path, read(req.send().await.unwrap()).await)
    }

    /// The answer, after checking it against the service's document: a
    /// status it does not list or a body off its schema fails the test.
    pub fn keeps_its_contract(&self, method: &str, path: &str, answer: (u16, Value)) -> (u16, Value) {
        let url = self.url(path);
        if let Some(path) = url.strip_prefix(&self.base) {
            let (status, body) = &answer;
            if let Err(broken) = self.contract.check(method, path, *status, body) {
                panic!("{broken}");
            }
        }
        answer
    }
}

async fn read(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The href of link `rel` in a HAL resource.
pub fn link(resource: &Value, rel: &str) -> String {
    resource["_links"][rel]["href"].as_str().unwrap_or_else(|| panic!("no `{rel}` link in {resource}")).to_string()
}

/// A Kafka-protocol broker (tansu, in memory) on a free port, for this test
/// binary; it dies with the process.
pub fn broker() -> String {
    static BROKER: OnceLock<String> = OnceLock::new();
    BROKER
        .get_or_init(|| {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let addr = format!("127.0.0.1:{port}");
            let listen = addr.parse().unwrap();
            // Its own runtime on its own thread: the tests' runtimes come and go.
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
                rt.block_on(harness::broker::run(listen, None)).expect("test broker runs");
            });
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(&addr).is_err() {
                assert!(std::time::Instant::now() < deadline, "test broker did not start");
                std::thread::sleep(Duration::from_millis(10));
            }
            addr
        })
        .clone()
}

/// Publish `event` to `topic` on the test broker (the topic created first if
/// need be), keyed by its aggregate as the connector keys it.
pub async fn publish(topic: &str, event: &wire::Envelope) {
    use rdkafka::producer::FutureRecord;
    let brokers = broker();
    bank::kit::kafka::ensure_topics(&brokers, &[topic.to_string()]).await.unwrap();
    let producer = bank::kit::kafka::producer(&brokers).unwrap();
    let payload = serde_json::to_vec(event).unwrap();
    producer
        .send(FutureRecord::to(topic).key(&event.aggregate_id).payload(&payload), Duration::from_secs(10))
        .await
        .unwrap();
}

/// Read `topic` from the beginning until `done` says enough, or panic at the deadline.
pub async fn read_topic(brokers: &str, topic: &str, done: impl Fn(&[Message]) -> bool) -> Vec<Message> {
    use rdkafka::Message as _;
    use rdkafka::consumer::Consumer;
    use rdkafka::message::Headers;
    let consumer = bank::kit::kafka::consumer(brokers, &format!("test-{}", uuid::Uuid::new_v4())).unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done(&seen) {
        let msg = match tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out reading {topic}; saw {} messages", seen.len()))
        {
            Ok(msg) => msg,
            // The connector may not have created the topic yet.
            Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            )) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Err(e) => panic!("reading {topic}: {e}"),
        };
        let headers = msg
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).to_string()))
                    .collect()
            })
            .unwrap_or_default();
        seen.push(Message {
            key: msg.key().map(|k| String::from_utf8_lossy(k).to_string()).unwrap_or_default(),
            payload: serde_json::from_slice(msg.payload().unwrap_or_default()).unwrap_or(Value::Null),
            headers,
        });
    }
    seen
}

#[derive(Debug, Clone)]
pub struct Message {
    pub key: String,
    pub payload: Value,
    pub headers: std::collections::BTreeMap<String, String>,
}
