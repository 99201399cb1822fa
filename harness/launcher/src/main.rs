//! `cargo sandbox ARGS...` (the workspace's cargo alias runs this): when the
//! `sandbox` or the `bank` binary is missing or older than its sources, build
//! both in one cargo invocation, in the open (cargo's progress, and a line
//! saying what is built and why); then run `sandbox ARGS...` in this process's
//! place, so that its exit code, signals and terminal are the caller's.
//!
//! One invocation matters: built one after the other, as `cargo run -p harness`
//! and then `cargo build -p bank`, the two selections resolve dependencies'
//! features differently and a few hundred crates are compiled twice.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

#[path = "../../src/fresh.rs"]
mod fresh;

fn main() -> ExitCode {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let workspace = workspace.canonicalize().unwrap_or(workspace);
    // This binary sits beside the ones it builds: <target>/<profile>/launcher.
    let here = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf));
    let Some(dir) = here else {
        eprintln!("sandbox: cannot tell where the launcher runs from; run `cargo build` and target/debug/sandbox");
        return ExitCode::from(2);
    };
    let sandbox = dir.join("sandbox");
    let why = fresh::stale(&sandbox, &workspace, fresh::SANDBOX_SOURCES)
        .or_else(|| fresh::stale(&dir.join("bank"), &workspace, fresh::BANK_SOURCES));
    if let Some(why) = why
        && let Err(code) = build(&workspace, &dir, &why)
    {
        return code;
    }
    let err = Command::new(&sandbox).args(std::env::args_os().skip(1)).exec();
    eprintln!("sandbox: cannot run {}: {err}", sandbox.display());
    ExitCode::from(127)
}

/// `cargo build` of both binaries, in the profile this launcher was built in.
fn build(workspace: &Path, dir: &Path, why: &str) -> Result<(), ExitCode> {
    let mut args = fresh::build_args(&["sandbox", "bank"]);
    if dir.file_name().is_some_and(|n| n == "release") {
        args.push("--release");
    }
    eprintln!(
        "sandbox: building the sandbox and the bank: {why}\n\
         sandbox: cargo {} (a first build compiles some 500 crates: about four minutes on two cores; later ones seconds)",
        args.join(" ")
    );
    if let Some(missing) = missing_build_tools() {
        eprintln!(
            "sandbox: cannot build: {missing}. librdkafka (the Kafka client) is built from source with cmake; \
             install what it needs with `apt-get install -y cmake libcurl4-openssl-dev`"
        );
        return Err(ExitCode::from(2));
    }
    let cargo = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
    match fresh::as_from_a_shell(&mut Command::new(&cargo)).current_dir(workspace).args(&args).status() {
        Ok(status) if status.success() => {
            // Else sources only touched send every later command through cargo.
            for (bin, sources) in [("sandbox", fresh::SANDBOX_SOURCES), ("bank", fresh::BANK_SOURCES)] {
                let _ = fresh::mark_built(&dir.join(bin), workspace, sources);
            }
            Ok(())
        }
        Ok(status) => {
            eprintln!("sandbox: the build failed (cargo's errors are above); fix them and run the command again");
            Err(ExitCode::from(status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(101)))
        }
        Err(e) => {
            eprintln!("sandbox: cannot run {}: {e}; is cargo on PATH?", cargo.display());
            Err(ExitCode::from(127))
        }
    }
}

/// What librdkafka's cmake build needs and this machine lacks: cmake, and
/// libcurl's headers (its 2.12 sources include curl/curl.h even when built
/// without curl). Checked before cargo starts, rather than failing minutes in.
fn missing_build_tools() -> Option<String> {
    let on_path = |name: &str| {
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(name).is_file()))
    };
    if !on_path("cmake") {
        return Some("`cmake` is not on PATH".into());
    }
    let include_dirs = ["/usr/include", "/usr/local/include"];
    let has_curl = include_dirs.iter().any(|dir| {
        let dir = Path::new(dir);
        // Debian puts it under the architecture's directory (/usr/include/x86_64-linux-gnu).
        dir.join("curl/curl.h").is_file()
            || std::fs::read_dir(dir)
                .is_ok_and(|entries| entries.flatten().any(|e| e.path().join("curl/curl.h").is_file()))
    });
    (!has_curl).then(|| "libcurl's headers (curl/curl.h) are not installed".into())
}
