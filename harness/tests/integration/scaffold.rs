//! `sandbox new service`, in copies of the workspace: refusals leave the copy
//! as it was; docs/ONBOARDING.md, line by line, generates a service that
//! formats, lints, passes its API tests, runs healthy in a sandbox and passes
//! its scenario and the whole suite.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::tmux::Tmux;
use super::{Home, status_json, workspace};

/// `to`, afresh: the workspace's tracked (and untracked, not ignored) files,
/// with their times (so that a kept build of the copy stays fresh).
fn copy_workspace(to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    let script = format!(
        "git ls-files -z --cached --others --exclude-standard | xargs -0 -I{{}} cp -p --parents -- {{}} {}",
        to.display()
    );
    let out = Command::new("bash").args(["-c", &script]).current_dir(workspace()).output().unwrap();
    assert!(out.status.success(), "copying the workspace: {}", String::from_utf8_lossy(&out.stderr));
}

/// A copy of the workspace's tracked files, removed on drop.
struct Copy(PathBuf);

impl Copy {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sbx-scaffold-{tag}-{}", std::process::id()));
        copy_workspace(&dir);
        Self(dir)
    }

    /// Every file's bytes, by path.
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let path = e.path();
                if path.is_dir() {
                    if e.file_name() != "target" {
                        walk(root, &path, out);
                    }
                } else {
                    out.insert(path.strip_prefix(root).unwrap().to_path_buf(), std::fs::read(&path).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.0, &self.0, &mut out);
        out
    }

    fn new_service(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_sandbox"))
            .args(["new", "service"])
            .args(args)
            .current_dir(&self.0)
            .output()
            .unwrap()
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The tutorial's copy of the workspace, at one place in this build's target
/// directory with a target directory of its own that is kept between runs:
/// sources are copied with their times, so a warm run compiles again only
/// what the tutorial changes (the bank), not the harness in three profiles.
/// Its first run starts from this build's compiled dependencies (hard links).
/// One run at a time uses it (a lock); the workspace copy goes at the end,
/// the compiled cache stays, as `target/` does.
struct KeptCopy {
    workspace: PathBuf,
    target: PathBuf,
    _one_at_a_time: nix::fcntl::Flock<std::fs::File>,
}

impl KeptCopy {
    fn new() -> Self {
        let built = Path::new(env!("CARGO_BIN_EXE_sandbox")).parent().unwrap().to_path_buf();
        let root = built.parent().unwrap().join("onboarding");
        std::fs::create_dir_all(&root).unwrap();
        let lock = std::fs::File::options().create(true).truncate(false).write(true).open(root.join(".lock")).unwrap();
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e).unwrap();
        let (workspace_copy, target) = (root.join("workspace"), root.join("target"));
        // Seeded the way below (an older seed linked files that are rewritten in place).
        let seeded = target.join(".seeded-v2");
        if !seeded.exists() {
            let _ = std::fs::remove_dir_all(&target);
            // Compiled libraries are linked (rustc replaces them whole, never
            // writes into one), everything cargo or rustc rewrites in place
            // (fingerprints, dep-info, build scripts' output) is copied: a
            // link there let the copy's builds rewrite this build's records,
            // and each then compiled the harness again after the other.
            let debug = target.join("debug");
            let script = format!(
                "set -e; mkdir -p {d}/deps; cp -a {b}/.fingerprint {b}/build {d}/; \
                 find {b}/deps -maxdepth 1 -type f \\( -name '*.rlib' -o -name '*.rmeta' -o -name '*.so' \\) \
                   -exec cp -l -t {d}/deps {{}} +",
                b = built.display(),
                d = debug.display()
            );
            let out = Command::new("bash").args(["-c", &script]).output().unwrap();
            assert!(out.status.success(), "seeding the copy's target: {}", String::from_utf8_lossy(&out.stderr));
            std::fs::write(&seeded, "").unwrap();
        }
        copy_workspace(&workspace_copy);
        Self { workspace: workspace_copy, target, _one_at_a_time: lock }
    }
}

impl Drop for KeptCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.workspace);
    }
}

#[test]
fn a_refused_generation_leaves_the_workspace_untouched() {
    let copy = Copy::new("refusals");
    let before = copy.snapshot();
    let refusals: &[(&[&str], &str)] = &[
        (&["Round-Ups"], "invalid service name `Round-Ups`"),
        (&["kit"], "`kit` is reserved"),
        (&["payments"], "`payments` is already a service"),
        (&["roundups", "--consumes", "cards.events:card.frozen"], "unknown topic `cards.events`"),
        (&["roundups", "--consumes", "payments.events:payment.lost"], "its event types are: payment.created"),
        (&["roundups", "--consumes", "payments.events"], "is not TOPIC:EVENT_TYPE"),
    ];
    for (args, says) in refusals {
        let out = copy.new_service(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(says), "{args:?} says: {stderr}");
        assert!(copy.snapshot() == before, "{args:?} changed the workspace");
    }
    // A file in the way: refused before anything is written.
    std::fs::write(copy.0.join("scenarios/pots.feature"), "Feature: in the way\n").unwrap();
    let out = copy.new_service(&["pots"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("scenarios/pots.feature already exists"));
    std::fs::remove_file(copy.0.join("scenarios/pots.feature")).unwrap();
    assert!(copy.snapshot() == before, "the refusal changed the workspace");
    // Accepted once, then the name is taken.
    let out = copy.new_service(&["pots"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let after = copy.snapshot();
    let changed: Vec<String> = after
        .iter()
        .filter(|(path, bytes)| before.get(*path) != Some(bytes))
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert_eq!(
        changed,
        [
            "bank/src/lib.rs",
            "bank/src/pots/migrations/0100_pots.sql",
            "bank/src/pots/mod.rs",
            "bank/tests/api/main.rs",
            "bank/tests/api/pots.rs",
            "bank/wire/src/payloads.rs",
            "compose/bank.yaml",
            "scenarios/pots.feature"
        ]
    );
    let compose = String::from_utf8_lossy(&after[Path::new("compose/bank.yaml")]).to_string();
    for wired in
        [",pots\n", ",pots=http://pots:8080\n      WEBHOOKS", ",pots=http://pots:8080\n    ports", "\n  pots:\n"]
    {
        assert!(compose.contains(wired), "compose/bank.yaml lacks {wired:?}");
    }
    let out = copy.new_service(&["pots"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("`pots` is already a service"));
    assert!(copy.snapshot() == after, "the second refusal changed the workspace");
}

/// A step of the tutorial: shell lines run in order, or the dashboard.
enum Step {
    Shell(Vec<String>),
    Dashboard(String),
}

/// docs/ONBOARDING.md's shell blocks in order: each line a command, a here
/// document with its body, and `sandbox tui` a step of its own (it needs a
/// terminal).
fn tutorial_steps(doc: &str) -> Vec<Step> {
    let mut steps = vec![Step::Shell(Vec::new())];
    for block in doc.split("```sh\n").skip(1) {
        // Blank lines separate commands, but a here document keeps its own.
        let mut lines = block.split("```").next().unwrap().lines();
        while let Some(line) = lines.next() {
            if line.trim().is_empty() {
                continue;
            }
            let mut command = line.to_string();
            if let Some((_, tag)) = line.split_once("<<'") {
                let tag = tag.trim_end_matches('\'');
                for body in lines.by_ref() {
                    command.push('\n');
                    command.push_str(body);
                    if body == tag {
                        break;
                    }
                }
            }
            if line.contains(" tui ") {
                steps.push(Step::Dashboard(command));
                steps.push(Step::Shell(Vec::new()));
            } else if let Some(Step::Shell(commands)) = steps.last_mut() {
                commands.push(command);
            }
        }
    }
    steps
}

/// docs/ONBOARDING.md's shell blocks, every line, in a copy of the workspace
/// (a [`KeptCopy`]: its first run compiles the workspace's own crates again,
/// a warm one only the bank). The
/// dashboard runs in tmux, where the test does what the tutorial says to look
/// at: round-ups in Services, its event in Events, and `r` on it after an edit
/// rebuilding the bank and restarting it.
#[test]
fn onboarding_runs_line_by_line_in_a_copy_of_the_workspace() {
    let home = Home::new();
    let copy = KeptCopy::new();
    let target = copy.target.clone();
    let doc = std::fs::read_to_string(workspace().join("docs/ONBOARDING.md")).unwrap();
    let steps = tutorial_steps(&doc);
    let (mut stdout, mut stderr, mut ran) = (String::new(), String::new(), Vec::new());
    for step in &steps {
        match step {
            Step::Shell(commands) => {
                let mut script = String::from("set -euo pipefail\n");
                for command in commands {
                    let shown = command.lines().next().unwrap_or_default().replace('\'', "'\\''");
                    script.push_str(&format!("echo '+ {shown}' >&2\n{command}\n"));
                    ran.push(command.clone());
                }
                // As a reader types them in a shell: not with this test's
                // own package in cargo's variables.
                let out = harness::fresh::as_from_a_shell(&mut Command::new("bash"))
                    .args(["-c", &script])
                    .current_dir(&copy.workspace)
                    .env("CARGO_TARGET_DIR", &target)
                    .env("SANDBOX_HOME", &home.root)
                    .env_remove("SANDBOX_E2E_BACKEND")
                    .output()
                    .unwrap();
                stdout.push_str(&String::from_utf8_lossy(&out.stdout));
                stderr.push_str(&String::from_utf8_lossy(&out.stderr));
                assert!(out.status.success(), "the tutorial failed:\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
            }
            Step::Dashboard(command) => {
                dashboard(&copy.workspace, &target, &home, command);
                ran.push(command.clone());
            }
        }
    }
    assert!(ran.iter().any(|l| l.contains("new service roundups")), "the tutorial generates a service: {ran:?}");
    assert!(ran.iter().any(|l| l.starts_with("git apply")), "the tutorial changes the service: {ran:?}");
    let status = stdout.lines().find(|l| l.starts_with("roundups")).unwrap_or_default();
    assert!(status.contains("healthy"), "`sandbox status` shows roundups healthy: {stdout}");
    assert!(stdout.contains("roundups restarted: healthy"), "`sandbox restart roundups`: {stdout}");
    let runs: Vec<&str> = stderr.lines().filter(|l| l.starts_with("e2e: ")).collect();
    assert!(
        matches!(runs[..], [generated, changed, all]
            if generated.starts_with("e2e: 1 scenarios passed")
                && changed.starts_with("e2e: 2 scenarios passed")
                && all.contains(" scenarios passed")),
        "its scenario against the sandbox as generated, then with the change, then the whole suite: {runs:?}"
    );
    assert!(home.dirs().is_empty(), "the tutorial's `down` left {:?}", home.dirs());
}

/// The dashboard, as the tutorial has the reader use it: round-ups healthy in
/// Services, its event in Events, that event's trace in Follow; then an edit (a newer source file) and `r`
/// on round-ups: the bank is rebuilt and round-ups is healthy again; `q`
/// leaves the sandbox running.
fn dashboard(copy: &Path, target: &Path, home: &Home, command: &str) {
    let tmux = Tmux::new("onboarding");
    let line = format!(
        "CARGO_TARGET_DIR={} SANDBOX_HOME={} {command}; echo exited-$?; sleep 60",
        target.display(),
        home.root.display()
    );
    tmux.start(copy, 160, 45, &line);
    tmux.wait_for_within("roundups", Duration::from_secs(300));
    tmux.wait_for("healthy");
    tmux.keys("3");
    tmux.wait_for("roundups.recorded");
    // Only round-ups' events, then Enter on the newest: Follow shows its trace,
    // the payment from payments to round-ups.
    tmux.keys("/");
    tmux.keys("roundups.recorded");
    tmux.keys("Enter");
    tmux.keys("Enter");
    tmux.wait_for("sightings");
    let screen = tmux.screen();
    assert!(screen.contains("Follow `") && screen.contains("roundups"), "the trace reaches round-ups:\n{screen}");
    tmux.keys("1");
    let state = status_json(home, "onboarding");
    let names: Vec<&str> = state["components"].as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).collect();
    let index = names.iter().position(|n| *n == "roundups").expect("roundups is a component");
    let source = copy.join("bank/src/roundups/mod.rs");
    let file = std::fs::File::options().append(true).open(&source).unwrap();
    file.set_modified(std::time::SystemTime::now()).unwrap();
    for _ in 0..index {
        tmux.keys("j");
    }
    tmux.keys("r");
    tmux.wait_for("restarting roundups");
    tmux.wait_for_within("roundups: healthy", Duration::from_secs(600));
    let logs = home.ok(&["logs", "roundups", "--name", "onboarding"]);
    assert!(
        logs.contains("bank/src/roundups/mod.rs changed since `bank` was built"),
        "the restart rebuilt the bank first: {logs}"
    );
    tmux.keys("q");
    tmux.wait_for("exited-0");
    assert!(tmux.screen().contains("sandbox onboarding is still running"), "{}", tmux.screen());
}
