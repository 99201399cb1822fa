//! What the `sandbox` and `bank` binaries are built from, how they are built,
//! and whether a built binary is newer than its sources.
//!
//! Shared by the harness and the `cargo sandbox` launcher (`harness/launcher`,
//! which includes this file as a module of its own): std only.

use std::path::{Path, PathBuf};

/// What the `bank` binary is built from, relative to the workspace: its sources
/// and the manifests (not its tests: editing them does not relink the binary).
pub const BANK_SOURCES: &[&str] =
    &["Cargo.toml", "Cargo.lock", "bank/Cargo.toml", "bank/src", "bank/wire/Cargo.toml", "bank/wire/src"];
/// What the `sandbox` binary is built from (its Dockerfiles are compiled into it).
pub const SANDBOX_SOURCES: &[&str] = &[
    "Cargo.toml",
    "Cargo.lock",
    "harness/Cargo.toml",
    "harness/src",
    "harness/images",
    "bank/wire/Cargo.toml",
    "bank/wire/src",
];

/// The packages every build of the sandbox's binaries selects. One selection
/// means one resolution of features: built alone, `-p bank` would compile a
/// few hundred dependencies a second time with other features (minutes on a
/// cold target directory), so even a build of one binary names both packages.
pub const PACKAGES: &[&str] = &["-p", "harness", "-p", "bank"];

/// Take away from `cmd` what cargo tells a process it runs (`cargo run`,
/// `cargo sandbox`, a test) about that process's own package, so that a cargo
/// started by it builds as one started from a shell does. Build scripts read
/// some of these and cargo reruns them when the value changes: ring's tracks
/// `CARGO_MANIFEST_DIR`, so a build from `cargo sandbox` (the launcher's
/// directory) after a `cargo build` (none) ran ring's build script again and
/// compiled rustls, reqwest and everything above them again, each time one
/// followed the other.
pub fn as_from_a_shell(cmd: &mut std::process::Command) -> &mut std::process::Command {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let own = [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
        ]
        .contains(&name.as_ref())
            || ["CARGO_PKG_", "CARGO_BIN_EXE_"].iter().any(|p| name.starts_with(p));
        if own {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd
}

/// `cargo build` of the binaries named (`sandbox`, `bank`) with the one
/// selection of packages: the launcher builds both, a rebuild only what is stale.
pub fn build_args<'a>(bins: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["build"];
    args.extend_from_slice(PACKAGES);
    for bin in bins {
        args.extend_from_slice(&["--bin", bin]);
    }
    args
}

/// Why `bin` must be (re)built before it is used: it does not exist, or a
/// file it is built from is newer. `None` when it is fresh.
pub fn stale(bin: &Path, workspace: &Path, sources: &[&str]) -> Option<String> {
    let name = bin.file_name().map_or_else(|| bin.display().to_string(), |n| n.to_string_lossy().into_owned());
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return Some(format!("no `{name}` binary in {} yet", bin.parent().unwrap_or(bin).display()));
    };
    let files = match files_under(workspace, sources) {
        Ok(files) => files,
        Err(e) => return Some(e.to_string()),
    };
    files.iter().find(|f| std::fs::metadata(f).and_then(|m| m.modified()).is_ok_and(|t| t > built)).map(|f| {
        let rel = f.strip_prefix(workspace).unwrap_or(f);
        format!("{} changed since `{name}` was built", rel.display())
    })
}

/// After a successful build of `bin`: cargo leaves a binary it judged up to
/// date as it was, so one whose sources were only touched (a checkout, a
/// comment in Cargo.toml) would look stale to every later check and send it
/// through cargo again. Such a binary is marked as built now.
pub fn mark_built(bin: &Path, workspace: &Path, sources: &[&str]) -> std::io::Result<()> {
    if stale(bin, workspace, sources).is_none() {
        return Ok(());
    }
    // Read-only: a binary some process runs cannot be opened for writing.
    std::fs::File::open(bin)?.set_modified(std::time::SystemTime::now())
}

/// Every file under `entries` (files or directories relative to `root`),
/// sorted; an entry that does not exist is an error naming the workspace.
pub fn files_under(root: &Path, entries: &[&str]) -> std::io::Result<Vec<PathBuf>> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        if p.is_dir() {
            let dir = std::fs::read_dir(p)
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot read {}: {e}", p.display())))?;
            for e in dir.flatten() {
                walk(&e.path(), out)?;
            }
        } else if p.is_file() {
            out.push(p.to_path_buf());
        }
        Ok(())
    }
    let mut out = Vec::new();
    for e in entries {
        let p = root.join(e);
        if !p.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} does not exist: is {} the bank-sandbox workspace?", p.display(), root.display()),
            ));
        }
        walk(&p, &mut out)?;
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_is_stale_when_missing_or_older_than_a_source() {
        let root = std::env::temp_dir().join(format!("fresh-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("src/deep")).unwrap();
        std::fs::write(root.join("src/deep/a.rs"), "").unwrap();
        let bin = root.join("bin");

        let why = stale(&bin, &root, &["src"]).unwrap();
        assert!(why.starts_with("no `bin` binary in"), "{why}");

        std::fs::write(&bin, "").unwrap();
        let file = std::fs::File::options().write(true).open(root.join("src/deep/a.rs")).unwrap();
        file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(stale(&bin, &root, &["src"]).unwrap(), "src/deep/a.rs changed since `bin` was built");

        file.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(stale(&bin, &root, &["src"]), None);

        // Touched after the build, and cargo found nothing to do: marked built.
        std::fs::File::open(&bin)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(9))
            .unwrap();
        file.set_modified(std::time::SystemTime::now()).unwrap();
        assert!(stale(&bin, &root, &["src"]).is_some());
        mark_built(&bin, &root, &["src"]).unwrap();
        assert_eq!(stale(&bin, &root, &["src"]), None);

        let why = stale(&bin, &root, &["src", "missing"]).unwrap();
        assert!(why.contains("missing does not exist: is") && why.contains("the bank-sandbox workspace?"), "{why}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_cargo_started_from_a_test_or_cargo_sandbox_sees_no_package_of_its_own() {
        // cargo tells every test it runs its package's directory and name.
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some() && std::env::var_os("CARGO_PKG_NAME").is_some());
        let out = as_from_a_shell(&mut std::process::Command::new("env")).output().unwrap();
        let env = String::from_utf8_lossy(&out.stdout);
        let names: Vec<&str> = env.lines().filter_map(|l| l.split_once('=').map(|(n, _)| n)).collect();
        assert!(!names.iter().any(|n| *n == "CARGO_MANIFEST_DIR" || n.starts_with("CARGO_PKG_")), "{names:?}");
        assert!(names.contains(&"PATH"), "the rest of the environment is kept: {names:?}");
    }

    #[test]
    fn every_build_selects_both_packages() {
        assert_eq!(build_args(&["bank"]), ["build", "-p", "harness", "-p", "bank", "--bin", "bank"]);
        assert_eq!(
            build_args(&["sandbox", "bank"]),
            ["build", "-p", "harness", "-p", "bank", "--bin", "sandbox", "--bin", "bank"]
        );
    }
}
