//! A private PostgreSQL cluster from the machine's server binaries: how the
//! local backend runs a sandbox's PostgreSQL and how the bank's API tests run
//! theirs. Both make a cluster with the same `initdb` and run it with the same
//! disposable settings (no fsync, no full-page writes: a sandbox's data lives
//! as long as the sandbox), as an unprivileged user when started as root.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// The settings of a disposable cluster on 127.0.0.1, no Unix socket.
pub const DISPOSABLE: &[&str] = &[
    "listen_addresses=127.0.0.1",
    "unix_socket_directories=",
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    // Parallel queries' shared memory as files in the data directory, not in
    // /dev/shm: a server killed with SIGKILL (a crash test, `prune` of a dead
    // sandbox) cannot clean up after itself, and its directory goes anyway.
    "dynamic_shared_memory_type=mmap",
];

/// How clients prove who they are.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// Anyone on 127.0.0.1 is let in (tests).
    Trust,
    /// Over TCP, the superuser's password from this file (as the official
    /// image sets it up). The Unix socket is trusted: its directory is its
    /// owner's alone (0700), which is the check there, as peer authentication
    /// would be; a password on it cost every service's connection a SCRAM
    /// exchange (~0.1 s on `up`, docs/PERFORMANCE.md).
    Password(&'a Path),
}

/// The directory holding `initdb` and `postgres`: on PATH, or the newest under
/// `/usr/lib/postgresql/*/bin`.
pub fn bin_dir() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    bin_dir_in(&path, Path::new("/usr/lib/postgresql"))
}

/// Whether the server whose binaries are in `bin` has the loadable library
/// `name` (a contrib module such as pg_stat_statements) in its library directory.
pub fn has_library(bin: &Path, name: &str) -> bool {
    // `bin` may hold symlinks (/usr/local/bin): the library directory is beside the real one.
    let real = bin.join("postgres").canonicalize().unwrap_or_else(|_| bin.join("postgres"));
    real.parent().and_then(Path::parent).is_some_and(|root| root.join("lib").join(format!("{name}.so")).is_file())
}

fn bin_dir_in(path: &[PathBuf], versioned_root: &Path) -> Result<PathBuf> {
    let on_path = path.iter().find(|d| d.join("initdb").is_file() && d.join("postgres").is_file());
    if let Some(dir) = on_path {
        return Ok(dir.clone());
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(versioned_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file()).then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d).ok_or(Error::PostgresMissing)
}

/// PostgreSQL refuses to run as root: then it runs as `postgres` (or `nobody`).
pub fn unprivileged_user() -> Result<Option<(nix::unistd::Uid, nix::unistd::Gid)>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Ok(Some(user)) = nix::unistd::User::from_name(name) {
            return Ok(Some((user.uid, user.gid)));
        }
    }
    Err(Error::Postgres(
        "running as root, and neither a `postgres` nor a `nobody` user exists to run PostgreSQL as".into(),
    ))
}

/// Hand `path` to the user PostgreSQL runs as (when that is not us).
pub fn hand_over(path: &Path) -> Result<()> {
    if let Some((uid, gid)) = unprivileged_user()? {
        nix::unistd::chown(path, Some(uid), Some(gid))
            .map_err(|e| Error::Postgres(format!("cannot hand {} to the postgres user: {e}", path.display())))?;
    }
    Ok(())
}

/// `initdb` for a new cluster in `data` with superuser `user`: UTF-8, C
/// locale, no sync, 1 MB WAL segments (a sandbox writes little, and a small
/// cluster copies fast).
pub fn initdb(bin: &Path, data: &Path, user: &str, auth: Auth) -> Result<Command> {
    let mut cmd = Command::new(bin.join("initdb"));
    cmd.arg("-D").arg(data).args([
        "-U",
        user,
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
        "--no-instructions",
        "--wal-segsize=1",
    ]);
    match auth {
        Auth::Trust => cmd.args(["-A", "trust"]),
        Auth::Password(file) => {
            cmd.args(["--auth-host=scram-sha-256", "--auth-local=trust"]).arg(format!("--pwfile={}", file.display()))
        }
    };
    as_unprivileged(&mut cmd)?;
    Ok(cmd)
}

/// The server on the cluster in `data`, listening on 127.0.0.1:`port`, with
/// the [`DISPOSABLE`] settings and then `settings`.
pub fn server(bin: &Path, data: &Path, port: u16, settings: &[&str]) -> Result<Command> {
    let mut cmd = Command::new(bin.join("postgres"));
    cmd.arg("-D").arg(data).arg("-p").arg(port.to_string());
    for setting in DISPOSABLE.iter().chain(settings) {
        cmd.arg("-c").arg(setting);
    }
    as_unprivileged(&mut cmd)?;
    Ok(cmd)
}

/// Run `cmd` as PostgreSQL's user when we are root.
pub fn as_unprivileged(cmd: &mut Command) -> Result<()> {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = unprivileged_user()? {
        cmd.uid(uid.as_raw()).gid(gid.as_raw());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_postgres_names_the_install_command() {
        let empty = std::env::temp_dir().join(format!("no-pg-{}", std::process::id()));
        let err = bin_dir_in(std::slice::from_ref(&empty), &empty).unwrap_err().to_string();
        assert!(err.contains("apt-get install -y postgresql"), "{err}");
    }

    #[test]
    fn the_newest_versioned_postgres_wins() {
        let root = std::env::temp_dir().join(format!("pg-versions-{}", std::process::id()));
        for v in ["13", "15", "9"] {
            let bin = root.join(v).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("initdb"), "").unwrap();
            std::fs::write(bin.join("postgres"), "").unwrap();
        }
        let found = bin_dir_in(&[], &root);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(found.unwrap(), root.join("15").join("bin"));
    }

    #[test]
    fn a_library_is_found_beside_the_real_binaries_even_through_a_symlink() {
        let root = std::env::temp_dir().join(format!("pg-lib-{}", std::process::id()));
        let (bin, lib, linked) = (root.join("15/bin"), root.join("15/lib"), root.join("local/bin"));
        for dir in [&bin, &lib, &linked] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(bin.join("postgres"), "").unwrap();
        std::fs::write(lib.join("pg_stat_statements.so"), "").unwrap();
        std::os::unix::fs::symlink(bin.join("postgres"), linked.join("postgres")).unwrap();
        let found = [has_library(&bin, "pg_stat_statements"), has_library(&linked, "pg_stat_statements")];
        let missing = has_library(&bin, "no_such_module");
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(found, [true, true]);
        assert!(!missing);
    }
}
