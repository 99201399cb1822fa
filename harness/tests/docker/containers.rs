//! The sandbox's parts as testcontainers images (`harness::containers`),
//! started with testcontainers' own API from this run's images, as a team's
//! test would: only what it needs, on a network of its own; and what a
//! killed test process left is removed by `sandbox prune`.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::containers::{self, Postgres};
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::producer::{FutureProducer, FutureRecord};
use testcontainers::ImageExt;
use testcontainers::runners::AsyncRunner;

use super::{progress, repository};

/// This run's image of `kind` (`postgres`, `bank`, `sandbox`), built first
/// (or, when developing these tests, one of `$SANDBOX_TEST_IMAGES`, e.g.
/// `bank-sandbox`, already built).
fn image(kind: &str) -> String {
    if let Ok(repository) = std::env::var("SANDBOX_TEST_IMAGES") {
        return format!("{repository}/{kind}");
    }
    let repo = repository();
    harness::images::build(repo, &mut progress).unwrap();
    format!("{}/{kind}", repo.repository)
}

/// The labels of container `id`, as the engine has them.
fn labels(id: &str) -> serde_json::Value {
    let out = Command::new("docker").args(["inspect", "--format", "{{json .Config.Labels}}", id]).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// A container or network of this id or name is there.
fn exists(id: &str) -> bool {
    Command::new("docker").args(["inspect", id]).output().unwrap().status.success()
}

fn network_exists(name: &str) -> bool {
    Command::new("docker").args(["network", "inspect", name]).output().unwrap().status.success()
}

/// PostgreSQL reached from the host, a bank service on a network with it,
/// a provider mock, and the broker producing and consuming for a host
/// client: each started with testcontainers, labelled as the sandbox's, and
/// removed when the test lets go of it.
pub fn a_team_starts_only_what_it_needs() {
    let (postgres, bank, sandbox) = (image("postgres"), image("bank"), image("sandbox"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Declared first: dropped after the containers on it.
        let net = containers::Network::new(&format!("sbx-tc-{}", std::process::id())).await.unwrap();
        let network = net.name().to_string();
        let pg_name = format!("{network}-postgres");
        let pg = containers::postgres(&["accounts"])
            .with_name(&postgres)
            .with_network(&network)
            .with_container_name(&pg_name)
            .start()
            .await
            .unwrap();
        let url = Postgres::url(&pg, "accounts").await.unwrap();
        let pool = sqlx::PgPool::connect(&url).await.expect("the database is reachable from the host");
        let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await.unwrap();
        assert_eq!(one, 1);
        pool.close().await;
        let owner = labels(pg.id());
        assert_eq!(owner["io.bank-sandbox.sandbox"], format!("tests-{}", std::process::id()), "{owner}");
        assert!(owner["io.bank-sandbox.owner"].as_str().unwrap().starts_with(&format!("{}:", std::process::id())));

        let database = format!("postgres://bank:{}@{pg_name}:5432/accounts", pg.image().password());
        let accounts = containers::service("accounts", [("DATABASE_URL", database)])
            .with_name(&bank)
            .with_network(&network)
            .start()
            .await
            .unwrap();
        let base = containers::http_url(&accounts).await.unwrap();
        let created = reqwest::Client::new()
            .post(format!("{base}/customers"))
            .json(&serde_json::json!({ "name": "Ada" }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201, "the service works on its own database");

        let scheme = containers::provider("payment-scheme", None).with_name(&sandbox).start().await.unwrap();
        let admin = format!("{}/__admin/health", containers::http_url(&scheme).await.unwrap());
        assert_eq!(reqwest::get(&admin).await.unwrap().status(), 200);

        let (broker, bootstrap) = containers::broker_for_the_host().unwrap();
        let broker = broker.with_name(&sandbox).start().await.unwrap();
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", &bootstrap);
        let admin: AdminClient<DefaultClientContext> = config.create().unwrap();
        let topic = NewTopic::new("tests.events", 1, TopicReplication::Fixed(1));
        let made = admin.create_topics(&[topic], &AdminOptions::new()).await.unwrap();
        assert!(made.iter().all(|r| r.is_ok()), "{made:?}");
        let producer: FutureProducer = config.create().unwrap();
        producer
            .send(FutureRecord::to("tests.events").key("k").payload("hello"), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("a host client produces through the advertised address");
        let consumer = harness::topics::consumer(&bootstrap, "tests", Duration::from_millis(100)).unwrap();
        consumer.subscribe(&["tests.events"]).unwrap();
        let read = tokio::time::timeout(Duration::from_secs(20), consumer.recv()).await.unwrap().unwrap();
        assert_eq!(read.payload(), Some(&b"hello"[..]), "and consumes what it produced");

        let ids: Vec<String> = [pg.id(), accounts.id(), scheme.id(), broker.id()].map(String::from).to_vec();
        for container in [accounts.rm().await, scheme.rm().await, broker.rm().await, pg.rm().await] {
            container.unwrap();
        }
        assert!(ids.iter().all(|id| !exists(id)), "every container is removed with its handle");
        drop(net);
        assert!(!network_exists(&network), "the network is removed with its handle");
    });
}

/// The child of [`prune_removes_what_a_killed_test_process_left`]: a test
/// process that starts a container, says which, and waits to be killed.
pub fn child(image: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let net = containers::Network::new(&format!("sbx-tc-child-{}", std::process::id())).await.unwrap();
        let scheme = containers::provider("payment-scheme", None)
            .with_name(image)
            .with_network(net.name())
            .start()
            .await
            .unwrap();
        println!("started {} {}", scheme.id(), net.name());
        tokio::time::sleep(Duration::from_secs(600)).await;
    });
}

/// testcontainers-rs has no reaper: a test process killed with its
/// containers running leaves them. Their labels name the process; `sandbox
/// prune` leaves them while it lives and removes them once it is gone.
pub fn prune_removes_what_a_killed_test_process_left() {
    let sandbox = image("sandbox");
    let mut run = PruneRun::new();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("SANDBOX_CONTAINERS_CHILD", &sandbox)
        .env("SANDBOX_HOME", &run.home)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let said = child.stdout.take().unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    run.child = Some(child);
    let mut line = String::new();
    std::io::BufReader::new(said).read_line(&mut line).unwrap();
    let started = line.trim().strip_prefix("started ").unwrap_or_else(|| panic!("the child said: {line}"));
    let (id, network) = started.split_once(' ').map(|(i, n)| (i.to_string(), n.to_string())).unwrap();
    run.prune();
    assert!(exists(&id) && exists(&network), "a live test's container and network are left alone");
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    run.child.as_mut().map(|c| c.wait().unwrap());
    assert!(exists(&id) && exists(&network), "killed with -9, the test removed nothing");
    let said = run.prune();
    assert!(!exists(&id), "prune removed the container: {said}");
    assert!(!network_exists(&network), "prune removed the network: {said}");
    assert!(said.contains(&format!("network {network}")), "{said}");
}

/// The prune test's home and child: whatever happens in the test, the child
/// is killed, what it left pruned and the home removed.
struct PruneRun {
    home: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl PruneRun {
    fn new() -> Self {
        let home = std::env::temp_dir().join(format!("sbx-tc-home-{}", std::process::id()));
        std::fs::create_dir_all(&home).unwrap();
        Self { home, child: None }
    }

    /// `sandbox prune` on the home: what it said.
    fn prune(&self) -> String {
        let out =
            Command::new(env!("CARGO_BIN_EXE_sandbox")).arg("--home").arg(&self.home).arg("prune").output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for PruneRun {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new(env!("CARGO_BIN_EXE_sandbox")).arg("--home").arg(&self.home).arg("prune").output();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}
