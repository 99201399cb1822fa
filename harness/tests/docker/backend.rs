//! `sandbox up --backend docker`: the bank as containers on a network of its
//! own, driven through the CLI as an engineer would, and nothing labelled with
//! the sandbox left behind by `down` or, after a kill -9, by `prune`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use harness::sandbox::Record;

use crate::{Scratch, pay_through_the_gateway, repository, this_runs_files, workspace};

#[path = "../common/tmux.rs"]
mod tmux;
use tmux::Tmux;

/// A sandbox home of its own, and the Compose files that run this run's images.
struct Bench {
    scratch: Scratch,
    files: Vec<PathBuf>,
}

impl Bench {
    fn new(what: &str) -> Self {
        let scratch = Scratch::new(what);
        Self { files: this_runs_files(&scratch), scratch }
    }

    fn home(&self) -> PathBuf {
        self.scratch.0.join("home")
    }

    fn sandbox(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sandbox"))
            .arg("--home")
            .arg(self.home())
            .args(args)
            .current_dir(workspace())
            .output()
            .expect("run sandbox")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.sandbox(args);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "sandbox {args:?} failed:\n{text}");
        text
    }

    /// `up --detach --backend <backend>` with this run's files.
    fn up(&self, name: &str, backend: &str) -> String {
        let mut args = vec!["up", "--detach", "--backend", backend, "--name", name];
        for f in &self.files {
            args.extend(["-f", f.to_str().unwrap()]);
        }
        self.ok(&args)
    }

    fn status(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["status", name, "--json"])).unwrap()
    }

    fn record(&self, name: &str) -> Record {
        Record::read(&self.home().join(name)).unwrap()
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        // Whatever a failed test left: its sandboxes go, then anything labelled with its home.
        if let Ok(entries) = std::fs::read_dir(self.home()) {
            for e in entries.flatten().filter(|e| e.path().is_dir()) {
                let name = e.file_name().to_string_lossy().to_string();
                if !name.starts_with('.') {
                    let _ = self.sandbox(&["down", &name]);
                }
            }
        }
        let _ = self.sandbox(&["prune"]);
        for (kind, id) in labelled(&self.home(), None) {
            let _ = Command::new("docker").args([kind.as_str(), "rm", "-f", &id]).output();
        }
    }
}

/// Every container, network and volume labelled with `home` (and `sandbox`), as (kind, id).
fn labelled(home: &Path, sandbox: Option<&str>) -> Vec<(String, String)> {
    let mut filters = vec!["--filter".to_string(), format!("label=io.bank-sandbox.home={}", home.display())];
    if let Some(s) = sandbox {
        filters.extend(["--filter".into(), format!("label=io.bank-sandbox.sandbox={s}")]);
    }
    let mut found = Vec::new();
    for (kind, list) in [("container", vec!["ps", "-aq"]), ("network", vec!["ls", "-q"]), ("volume", vec!["ls", "-q"])]
    {
        let mut cmd = Command::new("docker");
        if kind != "container" {
            cmd.arg(kind);
        }
        let out = cmd.args(&list).args(&filters).output().unwrap();
        assert!(out.status.success(), "docker {kind} list: {}", String::from_utf8_lossy(&out.stderr));
        found.extend(String::from_utf8_lossy(&out.stdout).lines().map(|id| (kind.to_string(), id.to_string())));
    }
    found
}

fn components(state: &serde_json::Value) -> &Vec<serde_json::Value> {
    state["components"].as_array().unwrap()
}

fn url(state: &serde_json::Value, component: &str) -> String {
    let c = components(state).iter().find(|c| c["name"] == component).unwrap();
    c["endpoints"][0]["url"].as_str().unwrap().to_string()
}

fn container_of(state: &serde_json::Value, component: &str) -> Option<String> {
    let c = components(state).iter().find(|c| c["name"] == component).unwrap();
    c["id"]["container"].as_str().map(String::from)
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn up_status_logs_kill_restart_pay_and_down_leaves_nothing() {
    let bench = Bench::new("backend-life");
    let out = bench.up("life", "docker");
    assert!(out.contains("gateway"), "{out}");
    let state = bench.status("life");
    for c in components(&state) {
        assert_eq!(c["status"]["state"], "healthy", "{c}");
        assert!(c["id"]["container"].is_string(), "a container, not a pid: {c}");
    }
    assert_eq!(bench.record("life").backend, harness::backend::Kind::Docker);
    let table = bench.ok(&["status", "life"]);
    assert!(table.contains("ID") && table.contains("accounts"), "{table}");
    // Each container's output reaches `sandbox logs`.
    let logs = bench.ok(&["logs", "accounts", "--name", "life", "--tail", "50"]);
    assert!(!logs.trim().is_empty(), "accounts logged nothing");

    // Kill one as a crash would: its restart policy (`unless-stopped`) runs
    // a new container; then `restart` runs another.
    let before = container_of(&state, "accounts").unwrap();
    let killed = bench.ok(&["kill", "accounts", "--name", "life"]);
    assert!(killed.contains("accounts killed"), "{killed}");
    let gone = Command::new("docker").args(["ps", "-q", "--no-trunc", "--filter", &format!("id={before}")]).output();
    assert!(String::from_utf8_lossy(&gone.unwrap().stdout).trim().is_empty(), "the killed container still runs");
    wait_until("accounts is back by its restart policy", || {
        let state = bench.status("life");
        let c = components(&state).iter().find(|c| c["name"] == "accounts").unwrap().clone();
        c["status"]["state"] == "healthy"
            && c["restarts"] == 1
            && container_of(&state, "accounts") != Some(before.clone())
    });
    let state = bench.status("life");
    let before = container_of(&state, "accounts").unwrap();
    bench.ok(&["restart", "accounts", "--name", "life"]);
    let state = bench.status("life");
    let after = container_of(&state, "accounts").unwrap();
    assert_ne!(before, after, "a restart runs a new container");

    // Money moves: the app's URLs (through the gateway's published port) reach
    // services inside the network, and the events reach a Kafka reader on the host.
    let gateway = url(&state, "gateway");
    let brokers = url(&state, "kafka");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let paid: harness::Result<(serde_json::Value, harness::topics::Seen)> = rt.block_on(async {
        let reader = harness::topics::Topics::start(&brokers).await?;
        let account = pay_through_the_gateway(&gateway, "docker").await?;
        let event = reader
            .wait_for("payment.completed on Kafka", Duration::from_secs(30), |e| e.event.kind == "payment.completed")
            .await?;
        Ok((account, event))
    });
    let (account, _event) = match paid {
        Ok(x) => x,
        Err(e) => panic!("{e}\n{}", bench.ok(&["logs", "all", "--name", "life", "--tail", "40"])),
    };
    assert_eq!(account["balance"]["amount"], 7_500, "{account}");

    let home = bench.home();
    assert!(!labelled(&home, Some("life")).is_empty(), "the sandbox's objects are labelled");
    let out = bench.ok(&["down", "life"]);
    assert!(out.contains("stopped and removed"), "{out}");
    assert_eq!(labelled(&home, Some("life")), Vec::<(String, String)>::new(), "left after down");
    assert!(!home.join("life").exists());
}

pub fn docker_and_local_side_by_side_and_a_killed_supervisor_is_swept() {
    let bench = Bench::new("backend-side");
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| bench.up("one", "docker"));
        let b = s.spawn(|| bench.up("two", "docker"));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a.contains("gateway") && b.contains("gateway"));
    bench.up("here", "local");
    let ports = |name: &str| -> Vec<String> {
        components(&bench.status(name)).iter().map(|c| c["endpoints"][0]["url"].as_str().unwrap().to_string()).collect()
    };
    let (one, two, here) = (ports("one"), ports("two"), ports("here"));
    assert!(one.iter().all(|u| !two.contains(u) && !here.contains(u)), "shared addresses: {one:?} {two:?} {here:?}");

    // kill -9 of a Docker sandbox's supervisor: its containers outlive it
    // (nothing ties them to the process) until `prune` sweeps them by label.
    let record = bench.record("one");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(record.pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_until("the supervisor is gone", || !record.owner_alive());
    let home = bench.home();
    assert!(!labelled(&home, Some("one")).is_empty(), "a killed supervisor leaves its containers");
    let out = bench.ok(&["prune"]);
    assert!(out.contains("removed one"), "{out}");
    assert_eq!(labelled(&home, Some("one")), Vec::<(String, String)>::new(), "left after prune");
    for other in ["two", "here"] {
        assert_eq!(bench.status(other)["phase"], "running", "pruning one leaves {other} running");
    }
    // Without a prune, the next `up` on the Docker backend in this home sweeps
    // what a killed supervisor left, and leaves the live ones be.
    let record = bench.record("two");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(record.pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_until("the supervisor is gone", || !record.owner_alive());
    assert!(!labelled(&home, Some("two")).is_empty());
    bench.up("three", "docker");
    assert_eq!(labelled(&home, Some("two")), Vec::<(String, String)>::new(), "left after the next up");
    assert_eq!(bench.status("here")["phase"], "running");
    assert!(bench.ok(&["prune"]).contains("removed two"), "its directory goes with prune");
    bench.ok(&["down", "three"]);
    bench.ok(&["down", "here"]);
    assert_eq!(labelled(&home, None), Vec::<(String, String)>::new());
}

pub fn errors_name_the_missing_image_and_change_nothing() {
    let bench = Bench::new("backend-errors");
    let bad = bench.scratch.0.join("missing.yaml");
    std::fs::write(&bad, "services:\n  accounts:\n    image: bank-sandbox-nothing/bank:0\n").unwrap();
    let mut args = vec!["up", "--detach", "--backend", "docker", "--name", "bad"];
    let files: Vec<String> = bench.files.iter().chain([&bad]).map(|f| f.to_string_lossy().to_string()).collect();
    for f in &files {
        args.extend(["-f", f.as_str()]);
    }
    let out = bench.sandbox(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("bank-sandbox-nothing/bank:0") && stderr.contains("sandbox images build"), "{stderr}");
    assert!(!bench.home().join("bad").exists());
    assert_eq!(labelled(&bench.home(), None), Vec::<(String, String)>::new());
}

/// Any Compose service runs on the Docker backend, not only the bank's: one with
/// no `x-sandbox` block runs as Compose would run it (ready once its port
/// accepts connections), and one that exits while starting fails the start
/// with its last lines. Nothing is left either way.
pub fn any_compose_service_runs_and_one_that_exits_shows_why() {
    let bench = Bench::new("backend-any");
    let repo = &repository().repository;
    let file = bench.scratch.0.join("any.yaml");
    let any = format!(
        "services:\n  relay:\n    image: {repo}/sandbox:0.1.0\n    command: [\"broker\", \"--listen\", \"0.0.0.0:9099\"]\n    ports: [\"127.0.0.1::9099\"]\n"
    );
    std::fs::write(&file, &any).unwrap();
    let up = |name: &str| {
        bench.sandbox(&["up", "--detach", "--backend", "docker", "--name", name, "-f", file.to_str().unwrap()])
    };
    let out = up("any");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let state = bench.status("any");
    assert_eq!(components(&state)[0]["status"]["state"], "healthy", "{state}");
    assert!(container_of(&state, "relay").is_some(), "{state}");
    let port: u16 = url(&state, "relay").rsplit(':').next().unwrap().parse().unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(), "published on 127.0.0.1:{port}");
    bench.ok(&["down", "any"]);
    assert_eq!(labelled(&bench.home(), None), Vec::<(String, String)>::new(), "left after down");

    // The bank's accounts service with no database to go to exits at once.
    std::fs::write(
        &file,
        format!("{any}  accounts:\n    image: {repo}/bank:0.1.0\n    command: [\"accounts\"]\n    ports: [\"127.0.0.1::8080\"]\n"),
    )
    .unwrap();
    let out = up("exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("accounts") && stderr.contains("before becoming healthy"), "{stderr}");
    assert!(stderr.contains("DATABASE_URL is not set"), "its last lines are quoted: {stderr}");
    assert!(!bench.home().join("exits").exists());
    assert_eq!(labelled(&bench.home(), None), Vec::<(String, String)>::new(), "left after a failed start");

    // A container that cannot even be made (its volume's source is missing),
    // one that others wait on: the others, started after it, hear of it too.
    std::fs::write(
        &file,
        format!(
            "{any}  store:\n    image: {repo}/sandbox:0.1.0\n    command: [\"broker\", \"--listen\", \"0.0.0.0:9098\"]\n    \
             volumes: [\"./no-such-dir:/data:ro\"]\n  app:\n    image: {repo}/sandbox:0.1.0\n    \
             command: [\"broker\", \"--listen\", \"0.0.0.0:9097\"]\n    depends_on: [store]\n"
        ),
    )
    .unwrap();
    let out = up("unmade");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("store") && stderr.contains("no-such-dir") && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert!(!bench.home().join("unmade").exists());
    assert_eq!(labelled(&bench.home(), None), Vec::<(String, String)>::new(), "left after a container not made");
}

/// The dashboard on a Docker sandbox (`sandbox up --backend docker` in a
/// terminal): its containers in Services, their output in Logs, the bank's
/// events (read through the broker's host relay) in Events; `q` removes it all.
pub fn the_dashboard_shows_a_docker_sandbox_and_quitting_leaves_nothing() {
    let bench = Bench::new("backend-tui");
    let tmux = Tmux::new("docker-tui");
    let files: Vec<String> = bench.files.iter().map(|f| format!("-f {}", f.display())).collect();
    let command = format!(
        "{} --home {} up --backend docker --name dash {}; echo exited-$?; sleep 30",
        env!("CARGO_BIN_EXE_sandbox"),
        bench.home().display(),
        files.join(" ")
    );
    tmux.start(&workspace(), 120, 40, &command);
    tmux.wait_for("dash running");
    let state = bench.status("dash");
    let accounts: String = container_of(&state, "accounts").unwrap().chars().take(12).collect();
    tmux.wait_for(&accounts);
    tmux.keys("2");
    tmux.wait_for("Logs: all");
    // The services' first lines, from inside their containers (0.0.0.0).
    tmux.keys("/");
    tmux.keys("listening");
    tmux.keys("Enter");
    tmux.wait_for("addr=0.0.0.0:8080");
    // The accounts feature, run from the dashboard, makes events to show.
    tmux.keys("7");
    tmux.keys("Enter");
    tmux.wait_for("Run: passed");
    tmux.keys("3");
    tmux.wait_for("account.opened");
    tmux.keys("q");
    tmux.wait_for("exited-0");
    assert!(tmux.screen().contains("sandbox dash stopped and removed"), "{}", tmux.screen());
    assert_eq!(labelled(&bench.home(), Some("dash")), Vec::<(String, String)>::new(), "left after quitting");
}
