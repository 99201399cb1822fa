//! `sandbox new service`, in copies of the workspace: refusals leave the copy
//! as it was; docs/ONBOARDING.md, line by line, generates a service that
//! formats, lints, passes its API tests, runs healthy in a sandbox and passes
//! its scenario and the whole suite.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Home, workspace};

/// A copy of the workspace's tracked files, removed on drop.
struct Copy(PathBuf);

impl Copy {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sbx-scaffold-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let script = format!(
            "git ls-files -z --cached --others --exclude-standard | xargs -0 -I{{}} cp --parents -- {{}} {}",
            dir.display()
        );
        let out = Command::new("bash").args(["-c", &script]).current_dir(workspace()).output().unwrap();
        assert!(out.status.success(), "copying the workspace: {}", String::from_utf8_lossy(&out.stderr));
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

/// docs/ONBOARDING.md's shell blocks, every line, in a copy of the workspace
/// whose target directory starts from this build's compiled dependencies
/// (hard links, so only the workspace's own crates are compiled again).
#[test]
fn onboarding_runs_line_by_line_in_a_copy_of_the_workspace() {
    let home = Home::new();
    let copy = Copy::new("onboarding");
    let built = Path::new(env!("CARGO_BIN_EXE_sandbox")).parent().unwrap().to_path_buf();
    let target = copy.0.join("target");
    std::fs::create_dir_all(target.join("debug")).unwrap();
    for dir in ["deps", "build", ".fingerprint"] {
        let out = Command::new("cp").arg("-al").arg(built.join(dir)).arg(target.join("debug")).output().unwrap();
        assert!(out.status.success(), "linking {dir}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let doc = std::fs::read_to_string(workspace().join("docs/ONBOARDING.md")).unwrap();
    let mut script = String::from("set -euo pipefail\n");
    let mut lines = Vec::new();
    for block in doc.split("```sh\n").skip(1) {
        for line in block.split("```").next().unwrap().lines().filter(|l| !l.trim().is_empty()) {
            script.push_str(&format!("echo '+ {line}' >&2\n{line}\n"));
            lines.push(line.to_string());
        }
    }
    assert!(lines.iter().any(|l| l.contains("new service roundups")), "the tutorial generates a service: {lines:?}");
    let out = Command::new("bash")
        .args(["-c", &script])
        .current_dir(&copy.0)
        .env("CARGO_TARGET_DIR", &target)
        .env("SANDBOX_HOME", &home.root)
        .env_remove("SANDBOX_E2E_BACKEND")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the tutorial failed:\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    let status = stdout.lines().find(|l| l.starts_with("roundups")).unwrap_or_default();
    assert!(status.contains("healthy"), "`sandbox status` shows roundups healthy: {stdout}");
    let runs: Vec<&str> = stderr.lines().filter(|l| l.starts_with("e2e: ")).collect();
    assert!(
        matches!(runs[..], [one, all] if one.starts_with("e2e: 1 scenarios passed") && all.contains(" scenarios passed")),
        "its scenario against the sandbox, then the whole suite: {runs:?}"
    );
    assert!(home.dirs().is_empty(), "the tutorial's `down` left {:?}", home.dirs());
}
