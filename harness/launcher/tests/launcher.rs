//! `cargo sandbox`'s launcher, run from a directory of its own: the binaries
//! beside it stand in for a build's output.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

/// Held while a test writes an executable and while one spawns a process. A
/// process forked by one test inherits the write descriptor of a file another
/// test is writing at that moment, and exec of that file then fails with "Text
/// file busy" (ETXTBSY) until the fork has exec'd in turn.
static EXEC: Mutex<()> = Mutex::new(());

/// Runs `cmd` to completion: spawned under [`EXEC`], waited on outside it.
fn output(cmd: &mut Command) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = {
        let _guard = EXEC.lock().unwrap_or_else(|e| e.into_inner());
        cmd.spawn().unwrap()
    };
    child.wait_with_output().unwrap()
}

/// A directory holding a copy of the launcher, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("launcher-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let _guard = EXEC.lock().unwrap_or_else(|e| e.into_inner());
        std::fs::copy(env!("CARGO_BIN_EXE_launcher"), dir.join("launcher")).unwrap();
        Self(dir)
    }

    fn script(&self, name: &str, body: &str) {
        let path = self.0.join(name);
        let _guard = EXEC.lock().unwrap_or_else(|e| e.into_inner());
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn launcher(&self) -> Command {
        Command::new(self.0.join("launcher"))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn with_both_binaries_fresh_it_runs_the_sandbox_in_its_place() {
    let dir = Dir::new("fresh");
    // Written now, so newer than every source: nothing to build.
    dir.script("sandbox", "echo \"sandbox got: $*\"; exit 3");
    dir.script("bank", "exit 0");
    let out = output(dir.launcher().args(["status", "--json"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "sandbox got: status --json\n");
    assert_eq!(out.status.code(), Some(3), "the sandbox's exit code is the caller's");
    assert!(out.stderr.is_empty(), "nothing built, nothing said: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn without_cmake_it_says_what_to_install_and_builds_nothing() {
    let dir = Dir::new("no-cmake");
    let out = output(dir.launcher().arg("up").env("PATH", "/nonexistent"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no `sandbox` binary in"), "says why it would build: {stderr}");
    assert!(stderr.contains("`cmake` is not on PATH"), "{stderr}");
    assert!(stderr.contains("apt-get install -y cmake libcurl4-openssl-dev"), "names the fix: {stderr}");
    assert_eq!(names(&dir.0), ["launcher"], "nothing was built or run");
}
