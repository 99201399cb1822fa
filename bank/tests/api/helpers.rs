//! A private PostgreSQL cluster for this test binary (one database per test), and
//! a running service on a random port. The cluster's directory is removed when
//! the binary exits; one left by a killed run is removed by the next.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bank::kit::{Application, Config, ServiceSpec};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

struct Cluster {
    port: u16,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

const ROOT_PREFIX: &str = "bank-api-tests-";

fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries are needed: apt-get install -y postgresql")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no /usr/lib/postgresql/*/bin/initdb: apt-get install -y postgresql")
}

fn as_pg_user(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    if nix::unistd::geteuid().is_root() {
        let user = nix::unistd::User::from_name("postgres")
            .ok()
            .flatten()
            .expect("a postgres user to run PostgreSQL as");
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
}

fn remove_stale_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(pid) = name
            .strip_prefix(ROOT_PREFIX)
            .and_then(|p| p.parse::<i32>().ok())
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

extern "C" fn stop_cluster() {
    if let Some(c) = CLUSTER.get() {
        if let Some(mut child) = c.child.lock().ok().and_then(|mut g| g.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&c.dir);
    }
}

fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        remove_stale_clusters();
        let dir = std::env::temp_dir().join(format!("{ROOT_PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("data");
        if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .unwrap();
            nix::unistd::chown(&dir, Some(user.uid), Some(user.gid)).unwrap();
        }
        let bin = pg_bin();
        let mut initdb = Command::new(bin.join("initdb"));
        initdb.arg("-D").arg(&data).args([
            "-U",
            "test",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        as_pg_user(&mut initdb);
        let out = initdb.output().unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut pg = Command::new(bin.join("postgres"));
        pg.arg("-D").arg(&data).arg("-p").arg(port.to_string());
        for s in [
            "listen_addresses=127.0.0.1",
            "unix_socket_directories=",
            "fsync=off",
            "max_connections=300",
        ] {
            pg.arg("-c").arg(s);
        }
        pg.stdout(Stdio::null()).stderr(Stdio::null());
        as_pg_user(&mut pg);
        let child = pg.spawn().unwrap();
        // SAFETY: registers a plain extern "C" fn; it runs once, at process exit.
        #[allow(unsafe_code)]
        unsafe {
            nix::libc::atexit(stop_cluster);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "test PostgreSQL did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Cluster {
            port,
            dir,
            child: Mutex::new(Some(child)),
        }
    })
}

/// A service running on a random port against a fresh database.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub database_url: String,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestApp {
    pub async fn spawn(spec: &'static ServiceSpec) -> Self {
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
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let database_url = format!("postgres://test@127.0.0.1:{}/{db}", c.port);
        let config = Config {
            http_addr: "127.0.0.1:0".parse().unwrap(),
            database_url: database_url.clone(),
            shutdown_timeout: Duration::from_secs(2),
        };
        let shutdown = CancellationToken::new();
        let app = Application::build(spec, config, shutdown.clone())
            .await
            .expect("service builds");
        let base = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run());
        Self {
            base,
            http: reqwest::Client::new(),
            database_url,
            shutdown,
        }
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        read(r).await
    }

    pub async fn post(&self, path: &str, body: Value, key: Option<&str>) -> (u16, Value) {
        let mut req = self.http.post(self.url(path)).json(&body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        read(req.send().await.unwrap()).await
    }
}

async fn read(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The href of link `rel` in a HAL resource.
pub fn link(resource: &Value, rel: &str) -> String {
    resource["_links"][rel]["href"]
        .as_str()
        .unwrap_or_else(|| panic!("no `{rel}` link in {resource}"))
        .to_string()
}
