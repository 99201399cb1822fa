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
