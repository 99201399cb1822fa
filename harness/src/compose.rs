//! The bank under plain Compose (`docker-compose`, as Debian ships it, or Compose
//! v2's `docker compose`), for those who do not run the harness, and for the tests
//! and benchmarks that prove `compose/bank.yaml` runs there unchanged.
//!
//! Compose 1.29 has no `--wait`; `wait_healthy` does what Compose v2's does: poll
//! the engine every 500 ms until every service's container is running and
//! healthy, and fail at once, with its last log lines, if one exits or turns
//! unhealthy.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::images::Docker;

/// How often the engine is asked, as Compose v2's `up --wait` asks.
pub const POLL: Duration = Duration::from_millis(500);

/// One Compose project: a name and its files, in `-f` order.
#[derive(Debug)]
pub struct Project {
    pub name: String,
    pub files: Vec<PathBuf>,
    /// The Compose command line: `docker-compose`, or `docker compose`.
    compose: Vec<String>,
    /// Set once `up` ran, so that dropping the project takes it down.
    up: bool,
}

impl Project {
    pub fn new(name: &str, files: &[PathBuf]) -> Self {
        Self { name: name.to_string(), files: files.to_vec(), compose: compose_command(), up: false }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.compose[0]);
        cmd.args(&self.compose[1..]).arg("-p").arg(&self.name);
        for f in &self.files {
            cmd.arg("-f").arg(f);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.command().args(args).output().map_err(Error::io(format!(
            "cannot run `{}`; install it (`apt-get install -y docker-compose`)",
            self.compose.join(" ")
        )))?;
        if !out.status.success() {
            return Err(Error::Docker(format!(
                "`{} {}` failed: {}",
                self.compose.join(" "),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `up -d`: create and start every service (Compose itself waits for the
    /// dependencies that are declared `service_healthy`).
    pub fn up(&mut self) -> Result<()> {
        self.up = true;
        self.run(&["up", "-d"]).map(drop)
    }

    pub fn services(&self) -> Result<Vec<String>> {
        Ok(self.run(&["config", "--services"])?.lines().map(str::to_string).filter(|s| !s.is_empty()).collect())
    }

    /// Poll until every service's container is running and (where it has a
    /// healthcheck) healthy; the time it took.
    pub fn wait_healthy(&self, within: Duration) -> Result<Duration> {
        let started = Instant::now();
        let services = self.services()?;
        loop {
            let states = self.states()?;
            let mut pending = Vec::new();
            for svc in &services {
                match states.iter().find(|s| &s.service == svc) {
                    None => pending.push(format!("{svc}: no container yet")),
                    Some(s) if s.status == "exited" || s.status == "dead" || s.health == "unhealthy" => {
                        return Err(Error::Docker(format!(
                            "{svc} {} while the bank was starting; its last lines:\n{}",
                            if s.health == "unhealthy" { "turned unhealthy" } else { "exited" },
                            self.logs(svc, 20)
                        )));
                    }
                    Some(s) if s.status == "running" && (s.health.is_empty() || s.health == "healthy") => {}
                    Some(s) => pending.push(format!("{svc}: {} {}", s.status, s.health)),
                }
            }
            if pending.is_empty() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > within {
                return Err(Error::Docker(format!(
                    "project {} not healthy within {}s: {}",
                    self.name,
                    within.as_secs(),
                    pending.join("; ")
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Each container of the project: its service, status and health.
    fn states(&self) -> Result<Vec<ContainerState>> {
        let ids = docker(&["ps", "-aq", "--filter", &format!("label=com.docker.compose.project={}", self.name)])?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec![
            "inspect",
            "--format",
            "{{index .Config.Labels \"com.docker.compose.service\"}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
        ];
        args.extend(ids);
        // A container removed between the two calls makes inspect fail: ask again next time.
        let Ok(out) = docker(&args) else { return Ok(Vec::new()) };
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some(ContainerState {
                    service: w.next()?.to_string(),
                    status: w.next()?.to_string(),
                    health: w.next().unwrap_or_default().to_string(),
                })
            })
            .collect())
    }

    /// The host address a service's container port is published on (`127.0.0.1:49153`).
    pub fn port(&self, service: &str, port: u16) -> Result<String> {
        let out = self.run(&["port", service, &port.to_string()])?;
        let addr = out.trim().to_string();
        if addr.is_empty() || addr.ends_with(":0") {
            return Err(Error::Docker(format!("{service} publishes no port {port}")));
        }
        Ok(addr)
    }

    pub fn logs(&self, service: &str, tail: usize) -> String {
        self.run(&["logs", "--no-color", "--tail", &tail.to_string(), service]).unwrap_or_else(|e| e.to_string())
    }

    /// `down -v`: every container, network and volume of the project.
    pub fn down(&mut self) -> Result<()> {
        self.up = false;
        self.run(&["down", "-v", "--remove-orphans", "--timeout", "10"]).map(drop)
    }

    /// What the engine still holds of the project: containers, networks, volumes.
    pub fn leftovers(&self) -> Result<Vec<String>> {
        let filter = format!("label=com.docker.compose.project={}", self.name);
        let mut left = Vec::new();
        for (what, args) in [
            ("container", vec!["ps", "-aq", "--filter", &filter]),
            ("network", vec!["network", "ls", "-q", "--filter", &filter]),
            ("volume", vec!["volume", "ls", "-q", "--filter", &filter]),
        ] {
            left.extend(docker(&args)?.split_whitespace().map(|id| format!("{what} {id}")));
        }
        Ok(left)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if self.up {
            let _ = self.down();
        }
    }
}

struct ContainerState {
    service: String,
    status: String,
    health: String,
}

/// `docker-compose` where it is installed (Debian's 1.29), else Compose v2's plugin.
fn compose_command() -> Vec<String> {
    let v1 = Command::new("docker-compose").arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if v1.is_ok_and(|s| s.success()) { vec!["docker-compose".into()] } else { vec!["docker".into(), "compose".into()] }
}

fn docker(args: &[&str]) -> Result<String> {
    Docker::cli().output(args)
}
