//! The `sandbox` CLI end to end: real PostgreSQL, the real broker, the real
//! bank. Every test uses its own sandbox home and removes it, even on failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use harness::sandbox::Record;

#[path = "scaffold.rs"]
mod scaffold;
#[path = "../common/tmux.rs"]
mod tmux;
use tmux::Tmux;

/// A sandbox home of its own, torn down on drop (also when the test panics).
struct Home {
    root: PathBuf,
}

impl Home {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let root =
            std::env::temp_dir().join(format!("sbx-cli-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
        std::fs::create_dir_all(&root).unwrap();
        Self { root }
    }

    fn sandbox(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sandbox"))
            .arg("--home")
            .arg(&self.root)
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

    /// Run with stdout a pipe whose reader is already gone (`sandbox ... | head`
    /// after head has quit): every write fails with EPIPE.
    fn piped_to_no_reader(&self, args: &[&str]) -> Output {
        let (read, write) = nix::unistd::pipe().unwrap();
        drop(read);
        Command::new(env!("CARGO_BIN_EXE_sandbox"))
            .arg("--home")
            .arg(&self.root)
            .args(args)
            .current_dir(workspace())
            .stdout(std::process::Stdio::from(write))
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run sandbox")
    }

    fn record(&self, name: &str) -> Record {
        Record::read(&self.root.join(name)).expect("sandbox record")
    }

    /// The clusters the local backend keeps in memory for this home's sandboxes
    /// (their `owner` file names the sandbox's directory).
    fn clusters_in_memory(&self) -> Vec<PathBuf> {
        let ours = format!("{}/", self.root.display());
        std::fs::read_dir("/dev/shm")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| std::fs::read_to_string(e.path().join("owner")).is_ok_and(|o| o.starts_with(&ours)))
            .map(|e| e.path())
            .collect()
    }

    /// Supervisor logs (`.<name>.log`) left in the home.
    fn logs(&self) -> Vec<String> {
        std::fs::read_dir(&self.root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with('.') && n.ends_with(".log"))
            .collect()
    }

    fn dirs(&self) -> Vec<String> {
        std::fs::read_dir(&self.root)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().to_string())
            // `.pg-template-*` is the home's cluster cache, not a sandbox.
            .filter(|n| !n.starts_with('.'))
            .collect()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        for name in self.dirs() {
            let _ = self.sandbox(&["down", &name]);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pids(record: &Record) -> Vec<u32> {
    let mut pids: Vec<u32> = record
        .children
        .iter()
        .filter_map(|c| match c.id {
            harness::backend::RunId::Pid(pid) => Some(pid),
            harness::backend::RunId::Container(_) => None,
        })
        .collect();
    pids.push(record.pid);
    pids
}

fn running(pid: u32) -> bool {
    // A zombie is dead for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

fn ports(state: &serde_json::Value) -> Vec<u16> {
    state["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let url = c["endpoints"][0]["url"].as_str().unwrap();
            url.rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap()
        })
        .collect()
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn status_json(home: &Home, name: &str) -> serde_json::Value {
    serde_json::from_str(&home.ok(&["status", name, "--json"])).unwrap()
}

#[test]
fn up_detach_status_logs_down_leaves_nothing() {
    let home = Home::new();
    let out = home.ok(&["up", "--detach", "--name", "one"]);
    assert!(out.contains("accounts"), "{out}");
    let state = status_json(&home, "one");
    for c in state["components"].as_array().unwrap() {
        assert_eq!(c["status"]["state"], "healthy", "{c}");
    }
    assert_eq!(home.clusters_in_memory().len(), 1, "PostgreSQL's cluster is in memory on this machine");
    let table = home.ok(&["status", "one"]);
    assert!(table.contains("postgres") && table.contains("kafka") && table.contains("accounts"), "{table}");
    // The cluster is this sandbox's alone: its own password, given whole to
    // its owner by `status --json` and kept in the record, masked in the table.
    let postgres = state["components"].as_array().unwrap().iter().find(|c| c["name"] == "postgres").unwrap();
    let server = postgres["endpoints"][0]["url"].as_str().unwrap().to_string();
    let password = home.record("one").postgres_password.expect("the record keeps the cluster's password");
    assert!(password.len() >= 32 && server.contains(&format!(":{password}@")), "{server}");
    assert!(table.contains("postgres://bank:***@127.0.0.1:") && !table.contains(&password), "{table}");
    let public = server.replace(&password, "bank");
    let connect = |url: String| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{url}/accounts")).await.map(drop)
        })
    };
    let refused = connect(public).expect_err("the topology's public password lets no one in").to_string();
    assert!(refused.contains("password authentication failed"), "{refused}");
    connect(server.clone()).expect("the sandbox's own password does");
    {
        use std::os::unix::fs::MetadataExt;
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(home.root.clone()) & 0o027, 0, "the home: no one else reads or writes");
        assert_eq!(mode(home.root.join("one")) & 0o027, 0, "nor the sandbox's directory");
        assert_eq!(mode(home.root.join("one/pg-postgres")), 0o700, "the cluster's socket directory");
        assert_eq!(mode(home.root.join("one/sandbox.json")), 0o600, "the record");
    }
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::process::CommandExt;
        let port = server.rsplit(':').next().unwrap();
        let socket = home.root.join(format!("one/pg-postgres/.s.PGSQL.{port}"));
        assert!(socket.exists(), "the cluster listens on {}", socket.display());
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        let reached = Command::new("sh")
            .args(["-c", &format!("test -S {}", socket.display())])
            .uid(nobody.uid.as_raw())
            .gid(nobody.gid.as_raw())
            .status()
            .unwrap();
        assert!(!reached.success(), "another user cannot reach the cluster's socket");
    }
    let accounts = state["components"].as_array().unwrap().iter().find(|c| c["name"] == "accounts").unwrap();
    let url = accounts["endpoints"][0]["url"].as_str().unwrap();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    assert!(listening(port), "accounts answers at {url}");
    let logs = home.ok(&["logs", "accounts", "--name", "one"]);
    assert!(logs.contains("listening"), "{logs}");
    // The gateway's log line names the path it served and where it sent it.
    let gateway = state["components"].as_array().unwrap().iter().find(|c| c["name"] == "gateway").unwrap();
    let port: u16 = gateway["endpoints"][0]["url"].as_str().unwrap().rsplit(':').next().unwrap().parse().unwrap();
    let mut http = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(
        &mut http,
        b"GET /accounts/customers HTTP/1.1\r\nHost: bank\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    std::io::Read::read_to_end(&mut http, &mut Vec::new()).unwrap();
    let routed = format!("\"upstream\":\"accounts {url}/customers\"");
    wait_until("the gateway logs the request", || {
        let logs = home.ok(&["logs", "gateway", "--name", "one"]);
        logs.lines().any(|l| l.contains("\"path\":\"/accounts/customers\"") && l.contains(&routed))
    });
    // Into a pipe whose reader has gone, every command ends quietly, as a CLI does.
    let commands: [&[&str]; 8] = [
        &["status", "one"],
        &["status", "one", "--json"],
        &["ls"],
        &["logs", "accounts", "--name", "one"],
        &["--help"],
        &["status", "--help"],
        &["logs", "--help"],
        &["up", "--help"],
    ];
    for args in commands {
        let out = home.piped_to_no_reader(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "sandbox {args:?} into a closed pipe: {:?} {stderr}",
            out.status
        );
    }
    let ls = home.ok(&["ls"]);
    assert!(ls.contains("one") && ls.contains("running"), "{ls}");

    // `kill` is a crash, which accounts' restart policy (unless-stopped)
    // answers; `stop` is an intent, which it does not.
    let component = |name: &str| {
        status_json(&home, "one")["components"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone()
    };
    let killed = home.ok(&["kill", "accounts", "--name", "one"]);
    assert!(killed.contains("its restart policy"), "{killed}");
    wait_until("accounts is back by its policy", || {
        let c = component("accounts");
        c["status"]["state"] == "healthy" && c["restarts"] == 1
    });
    let stopped = home.ok(&["stop", "accounts", "--name", "one"]);
    assert!(stopped.contains("accounts stopped"), "{stopped}");
    std::thread::sleep(Duration::from_millis(1500));
    let c = component("accounts");
    assert_eq!((c["status"]["state"].as_str(), c["restarts"].as_u64()), (Some("stopped"), Some(1)), "{c}");
    home.ok(&["restart", "accounts", "--name", "one"]);
    assert_eq!(component("accounts")["status"]["state"], "healthy");
    let state = status_json(&home, "one");

    let record = home.record("one");
    let all_ports = ports(&state);
    let components = state["components"].as_array().unwrap().len();
    assert_eq!(record.children.len(), components, "every component's process is recorded: {record:?}");
    let out = home.ok(&["down", "one"]);
    assert!(out.contains("stopped and removed"), "{out}");
    for pid in pids(&record) {
        assert!(!running(pid), "pid {pid} survived `down`");
    }
    for port in all_ports {
        assert!(!listening(port), "port {port} still open after `down`");
    }
    assert!(home.dirs().is_empty(), "directories left: {:?}", home.dirs());
    assert!(home.clusters_in_memory().is_empty(), "`down` removes the cluster in memory");
    assert!(home.logs().is_empty(), "supervisor logs left: {:?}", home.logs());
}

#[test]
fn two_sandboxes_run_side_by_side() {
    let home = Home::new();
    // The right one from the topology and its Compose override, as plain Compose takes them.
    let (bank, local) = (workspace().join(harness::TOPOLOGY), workspace().join(harness::images::LOCAL_IMAGES));
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| home.sandbox(&["up", "--detach", "--name", "left"]));
        let b = s.spawn(|| {
            home.sandbox(&[
                "up",
                "--detach",
                "--name",
                "right",
                "-f",
                bank.to_str().unwrap(),
                "-f",
                local.to_str().unwrap(),
            ])
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    assert_eq!(home.record("right").topology, [bank.clone(), local.clone()]);
    let left = ports(&status_json(&home, "left"));
    let right = ports(&status_json(&home, "right"));
    assert!(left.iter().all(|p| !right.contains(p)), "shared ports: {left:?} {right:?}");
    // Without a name, a command must not guess between two sandboxes.
    let out = home.sandbox(&["status"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("several sandboxes are running"));
    home.ok(&["down", "left"]);
    assert_eq!(status_json(&home, "right")["phase"], "running", "stopping one leaves the other");
    home.ok(&["down", "right"]);
    assert!(home.dirs().is_empty());
}

#[test]
fn a_killed_supervisor_leaves_a_sandbox_that_prune_removes() {
    let home = Home::new();
    home.ok(&["up", "--detach", "--name", "orphan"]);
    let record = home.record("orphan");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(record.pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_until("the supervisor is gone", || !running(record.pid));
    let ls = home.ok(&["ls"]);
    assert!(ls.contains("orphan") && ls.contains("dead"), "{ls}");
    let out = home.ok(&["prune"]);
    assert!(out.contains("removed orphan"), "{out}");
    for pid in pids(&record) {
        wait_until(&format!("pid {pid} is gone"), || !running(pid));
    }
    assert!(home.dirs().is_empty());
    assert!(home.clusters_in_memory().is_empty(), "prune removes the cluster in memory too");
    assert!(home.logs().is_empty(), "the dead supervisor's log goes too: {:?}", home.logs());
    assert!(home.ok(&["prune"]).contains("nothing to prune"));
}

#[test]
fn a_bad_topology_is_refused_before_anything_is_made() {
    let home = Home::new();
    let bad = home.root.join("bad.yaml");
    let fixtures = workspace().join("fixtures");
    let text = std::fs::read_to_string(workspace().join("compose/bank.yaml"))
        .unwrap()
        .replace("../fixtures", fixtures.to_str().unwrap());
    std::fs::write(
        &bad,
        text.replace("postgres:\n        condition: service_healthy", "ledger:\n        condition: service_healthy"),
    )
    .unwrap();
    let out = home.sandbox(&["up", "--detach", "--name", "bad", "-f", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml:") && stderr.contains("depends on `ledger`"), "{stderr}");
    assert!(home.dirs().is_empty(), "nothing was made: {:?}", home.dirs());
}

#[test]
fn any_program_runs_locally_with_run_process_and_a_service_without_x_sandbox_is_refused() {
    let home = Home::new();
    let file = home.root.join("web.yaml");
    let web = r#"
services:
  web:
    image: python:3.11
    environment: { ADDR: "0.0.0.0:8000" }
    ports: ["8000"]
    x-sandbox:
      run: process
      command: ["sh", "-c", "exec python3 -m http.server --bind 127.0.0.1 ${ADDR##*:}"]
"#;
    std::fs::write(&file, format!("{web}  ledger:\n    image: example/ledger:1\n    ports: [\"9000\"]\n")).unwrap();
    let out = home.sandbox(&["up", "--detach", "--name", "web", "-f", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("service `ledger` has no `x-sandbox:` block") && stderr.contains("run: process"),
        "{stderr}"
    );
    assert!(home.dirs().is_empty() && home.logs().is_empty(), "nothing was made: {:?}", home.dirs());

    std::fs::write(&file, web).unwrap();
    home.ok(&["up", "--detach", "--name", "web", "-f", file.to_str().unwrap()]);
    let state = status_json(&home, "web");
    assert_eq!(state["components"][0]["status"]["state"], "healthy", "{state}");
    let port = ports(&state)[0];
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(&mut conn, b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut conn, &mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
    let pids = pids(&home.record("web"));
    home.ok(&["down", "web"]);
    assert!(pids.iter().all(|p| !running(*p)), "every process is gone");
    assert!(!listening(port));
}

#[test]
fn the_docker_backend_without_an_engine_says_how_to_start_one_and_makes_nothing() {
    let home = Home::new();
    let out = Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .env("DOCKER_HOST", format!("unix://{}/no-docker.sock", home.root.display()))
        .arg("--home")
        .arg(&home.root)
        .args(["up", "--detach", "--backend", "docker", "--name", "nodock"])
        .current_dir(workspace())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot reach the Docker engine") && stderr.contains("no-docker.sock"), "{stderr}");
    assert!(stderr.contains("systemctl start docker") && stderr.contains("--backend local"), "{stderr}");
    assert!(home.dirs().is_empty() && home.logs().is_empty(), "nothing was made: {:?}", home.dirs());
}

#[test]
fn a_home_others_can_write_is_refused_and_nothing_is_made_in_it() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new();
    std::fs::set_permissions(&home.root, std::fs::Permissions::from_mode(0o777)).unwrap();
    for args in [&["up", "--detach", "--name", "open"][..], &["ls"][..]] {
        let out = home.sandbox(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert!(stderr.contains("can be written by its group or by others (mode 0777)"), "{stderr}");
        assert!(stderr.contains("chmod 700"), "{stderr}");
    }
    assert_eq!(std::fs::read_dir(&home.root).unwrap().count(), 0, "nothing was made in it");
    std::fs::set_permissions(&home.root, std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn a_name_in_use_is_refused() {
    let home = Home::new();
    home.ok(&["up", "--detach", "--name", "taken"]);
    let out = home.sandbox(&["up", "--detach", "--name", "taken"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sandbox `taken` already exists (running)"));
    assert_eq!(status_json(&home, "taken")["phase"], "running", "the running one is untouched");
    home.ok(&["down", "taken"]);
}

/// The published contracts print as JSON a tool can read; an unknown topic
/// is refused naming the ones there are.
#[test]
fn contracts_print_the_events_and_the_providers_apis() {
    let home = Home::new();
    let events: serde_json::Value =
        serde_json::from_str(&home.ok(&["contracts", "events", "--topic", "topups.events"])).unwrap();
    let types: Vec<&str> = events["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["topup.created", "topup.succeeded", "topup.failed"]);
    assert_eq!(events["events"][1]["schema"]["$schema"], "https://json-schema.org/draft/2020-12/schema");
    let out = home.sandbox(&["contracts", "events", "--topic", "cards.events"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no events are published to `cards.events`") && stderr.contains("payments.events"),
        "{stderr}"
    );
    // They read nothing from the home: one others can write in does not matter.
    std::fs::set_permissions(&home.root, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let providers: serde_json::Value = serde_json::from_str(&home.ok(&["contracts", "providers"])).unwrap();
    let scheme = &providers["payment-scheme"]["operations"][0];
    assert_eq!((scheme["method"].as_str(), scheme["path"].as_str()), (Some("POST"), Some("/payments")));
    assert!(scheme["request"]["required"].as_array().unwrap().contains(&serde_json::json!("creditor")));
}

/// The README's command table and `sandbox --help` must describe the same
/// commands, so neither drifts from the other.
/// The README's tour, every line of it, against a real sandbox, so the README
/// cannot drift: `cargo sandbox` is this build's binary in the test's home; the
/// line that follows the logs forever runs for three seconds, and the
/// dashboard for three seconds in a pseudo-terminal.
#[test]
fn the_readme_tour_runs_line_by_line() {
    let home = Home::new();
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let tour = readme.split("### A tour").nth(1).expect("the README has a tour");
    let block = tour.split("```sh\n").nth(1).and_then(|b| b.split("```").next()).expect("the tour is a sh block");
    let sandbox = format!("{} --home {}", env!("CARGO_BIN_EXE_sandbox"), home.root.display());
    let mut script = String::from("set -euo pipefail\n");
    let mut lines = 0;
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        // The comment after a command (two spaces, then `#`) explains it.
        let command = line.split("  #").next().unwrap().trim().replace("cargo sandbox", &sandbox);
        if command.contains(" tui ") {
            script.push_str(&format!("timeout 3 script -qec '{command}' /dev/null >/dev/null || [ $? = 124 ]\n"));
        } else if command.contains(" -f") {
            script.push_str(&format!("(timeout 3 {command} || [ $? = 124 ]) > \"$TOUR/followed\"\n"));
        } else {
            script.push_str(&command);
            script.push('\n');
        }
        lines += 1;
    }
    assert!(lines >= 5, "the tour has {lines} lines:\n{block}");
    let out = Command::new("bash")
        .args(["-c", &script])
        .env("TOUR", &home.root)
        .current_dir(workspace())
        .output()
        .expect("run bash");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the tour failed:\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(stdout.contains("\"_links\"") && stdout.contains("/accounts/"), "the gateway's links: {stdout}");
    let followed = std::fs::read_to_string(home.root.join("followed")).unwrap_or_default();
    assert!(followed.lines().count() > 5, "`logs all -f` showed: {followed}");
    assert!(stderr.contains("scenarios passed"), "the payments scenarios ran: {stderr}");
    assert!(home.dirs().is_empty(), "the tour's `down` left {:?}", home.dirs());
}

#[test]
fn the_readme_documents_every_command_and_only_real_ones() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let documented: std::collections::BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `sandbox "))
        .filter_map(|rest| rest.split([' ', '`']).next())
        .map(String::from)
        .collect();
    let help = Command::new(env!("CARGO_BIN_EXE_sandbox")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    let offered: std::collections::BTreeSet<String> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        // A command starts two spaces in; its wrapped description, further.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect();
    assert_eq!(documented, offered, "README table vs `sandbox --help`");
    for command in &documented {
        let out = Command::new(env!("CARGO_BIN_EXE_sandbox")).args([command.as_str(), "--help"]).output().unwrap();
        assert!(out.status.success(), "sandbox {command} --help");
    }
}

/// `sandbox up` in the foreground: progress, then the table; Ctrl-C (SIGINT)
/// tears everything down and exits cleanly.
#[test]
fn ctrl_c_stops_a_foreground_sandbox_and_removes_it() {
    use std::io::{BufRead, BufReader};
    let home = Home::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .arg("--home")
        .arg(&home.root)
        .args(["up", "--name", "fg"])
        .current_dir(workspace())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    // The table's header comes once every component is healthy.
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.starts_with("COMPONENT");
        seen.push(line);
        if done {
            break;
        }
    }
    assert!(seen.iter().any(|l| l.contains("healthy")), "progress lines: {seen:?}");
    let record = home.record("fg");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status}; output after Ctrl-C: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("sandbox fg stopped and removed")), "{rest:?}");
    for pid in pids(&record) {
        wait_until(&format!("pid {pid} is gone"), || !running(pid));
    }
    assert!(home.dirs().is_empty());
}

/// `sandbox up` in a terminal is the dashboard: it brings the sandbox up, every
/// pane shows, and `q` tears everything down and restores the terminal.
#[test]
fn the_dashboard_runs_in_a_terminal_and_quitting_leaves_nothing() {
    let home = Home::new();
    let tmux = Tmux::new("tui");
    let command = format!(
        "{} --home {} up --name tui; echo exited-$?; sleep 30",
        env!("CARGO_BIN_EXE_sandbox"),
        home.root.display()
    );
    tmux.start(&workspace(), 100, 30, &command);
    tmux.wait_for("tui running");
    tmux.wait_for("gateway");
    let record = home.record("tui");
    for (key, title) in [
        ("2", "Logs: all"),
        ("3", "TOPIC@OFFSET"),
        ("4", "payment-scheme"),
        ("5", "Links"),
        ("6", "Type / and an id"),
        ("7", "Features"),
        ("?", "Keys"),
    ] {
        tmux.keys(key);
        tmux.wait_for(title);
    }
    tmux.keys("Escape");
    // Run the first feature (accounts) against this sandbox from the dashboard.
    tmux.keys("7");
    tmux.keys("Enter");
    tmux.wait_for("Run: passed");
    tmux.keys("q");
    tmux.wait_for("exited-0");
    assert!(tmux.screen().contains("sandbox tui stopped and removed"), "{}", tmux.screen());
    for pid in pids(&record) {
        wait_until(&format!("pid {pid} is gone"), || !running(pid));
    }
    assert!(home.dirs().is_empty(), "left behind: {:?}", home.dirs());
}

/// The README's Rust example of the bank-in-a-box is the one the Docker suite
/// runs, word for word, and its Python example names this version's image.
#[test]
fn the_readme_bank_in_a_box_examples_are_the_ones_run() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let tests = std::fs::read_to_string(workspace().join("harness/tests/docker/in_a_box.rs")).unwrap();
    let example = tests
        .split("// README example: Rust (begin)\n")
        .nth(1)
        .and_then(|t| t.split("// README example: Rust (end)").next())
        .expect("the test file marks the example");
    let section = readme.split("### Use the bank from your own tests").nth(1).expect("the README's section");
    assert!(
        section.contains(&format!("```rust\n{}```", example.trim_end().to_string() + "\n")),
        "the README's Rust example is not harness/tests/docker/in_a_box.rs' (copy it over)"
    );
    let image = format!("bank-sandbox/bank-in-a-box:{}", harness::images::VERSION);
    assert!(section.contains(&format!("\"BANK_IN_A_BOX_IMAGE\", \"{image}\"")), "the Python example names {image}");
}

/// The library's start (`harness::start::Sandbox`), as a team's test uses
/// it: only the service it needs and what that depends on, every endpoint
/// from the handle, a typed error for a service there is not, and the
/// sandbox gone (processes, directory) when the handle drops, a panicking
/// test's included.
#[test]
fn the_library_starts_only_what_is_asked_and_a_dropped_handle_leaves_nothing() {
    use harness::start::{Options, Sandbox};
    let home = Home::new();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let options = |only: &[&str]| {
        let mut opts = Options::new(&workspace(), Path::new(env!("CARGO_BIN_EXE_sandbox")));
        opts.home = harness::sandbox::Home { root: home.root.clone() };
        opts.name = Some("library".into());
        opts.only = only.iter().map(|s| s.to_string()).collect();
        opts
    };

    let err = rt.block_on(Sandbox::start(options(&["nonesuch"]))).unwrap_err();
    assert!(matches!(err, harness::Error::Topology { .. }), "{err:?}");
    assert!(err.to_string().contains("no service `nonesuch`") && err.to_string().contains("accounts"), "{err}");
    assert!(home.dirs().is_empty(), "a refused start made {:?}", home.dirs());

    // A component that dies while starting: the error says which, why, and its last words.
    let file = home.root.join("exits.yaml");
    std::fs::write(
        &file,
        "services:\n  accounts:\n    command: [\"accounts\"]\n    ports: [\"127.0.0.1::8080\"]\n    x-sandbox:\n      run: bank\n      health: /health\n",
    )
    .unwrap();
    let mut exits = options(&[]);
    exits.files = vec![file];
    match rt.block_on(Sandbox::start(exits)).unwrap_err() {
        harness::Error::ComponentFailed { component, why, log } => {
            assert_eq!(component, "accounts");
            assert!(why.contains("before becoming healthy"), "{why}");
            assert!(log.iter().any(|l| l.contains("DATABASE_URL is not set")), "{log:?}");
        }
        other => panic!("not a failed component: {other:?}"),
    }
    assert!(home.dirs().is_empty(), "a failed start left {:?}", home.dirs());

    let record;
    {
        let bank = rt.block_on(Sandbox::start(options(&["accounts"]))).unwrap();
        let state = bank.state().unwrap();
        let running: Vec<&str> = state.components.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(running, ["postgres", "accounts"], "accounts and what it depends on (its database)");
        let accounts = bank.url("accounts").unwrap().to_string();
        let created: serde_json::Value = rt.block_on(async {
            let answer = reqwest::Client::new()
                .post(format!("{accounts}/customers"))
                .json(&serde_json::json!({ "name": "Ada" }))
                .send()
                .await
                .unwrap();
            answer.json().await.unwrap()
        });
        assert_eq!(created["name"], "Ada", "{created}");
        let url = bank.postgres_url("accounts").unwrap();
        let customers: i64 = rt.block_on(async {
            let pool = sqlx::PgPool::connect(&url).await.expect("the database from the handle's URL");
            sqlx::query_scalar("SELECT count(*) FROM customers").fetch_one(&pool).await.unwrap()
        });
        assert_eq!(customers, 1);
        assert!(bank.gateway().is_err(), "the gateway was not asked for");
        record = home.record("library");
        // A test that panics while holding the handle: the unwind drops it.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _held = bank;
            panic!("a failing test");
        }));
        assert!(panicked.is_err());
    }
    assert!(home.dirs().is_empty(), "the dropped sandbox left {:?}", home.dirs());
    for pid in pids(&record) {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists() || pid == std::process::id(),
            "process {pid} outlived the handle"
        );
    }
}

/// A port another program holds is refused by name, with what to do.
#[test]
fn a_provider_on_a_taken_port_says_which_and_what_to_do() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let home = Home::new();
    let spec = workspace().join("fixtures/providers/payment-scheme.yaml");
    let out = home.sandbox(&["provider", "--spec", spec.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("port {port} for the payment-scheme mock is taken")), "{stderr}");
    assert!(stderr.contains("stop what listens there"), "{stderr}");
}

/// A detached supervisor whose log cannot be written (its disk full:
/// `/dev/full` as its output) keeps the bank running and stops on `down`.
#[test]
fn a_supervisor_whose_log_is_on_a_full_disk_keeps_the_bank_running() {
    let home = Home::new();
    let sandbox_home = harness::sandbox::Home { root: home.root.clone() };
    sandbox_home.claim("full").unwrap();
    let full = std::fs::File::options().write(true).open("/dev/full").unwrap();
    let topology = workspace().join(harness::TOPOLOGY);
    let mut supervisor = Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .arg("--home")
        .arg(&home.root)
        .args(["supervise", "--name", "full", "--backend", "local", "--file"])
        .arg(&topology)
        .arg("--workspace")
        .arg(workspace())
        .stdout(full.try_clone().unwrap())
        .stderr(full)
        .spawn()
        .unwrap();
    wait_until("the sandbox runs", || {
        let out = home.sandbox(&["status", "full", "--json"]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"phase\": \"running\"")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(supervisor.try_wait().unwrap().is_none(), "the supervisor exited on a write error");
    home.ok(&["down", "full"]);
    assert!(supervisor.wait().unwrap().success());
    assert!(home.dirs().is_empty(), "down left {:?}", home.dirs());
}
