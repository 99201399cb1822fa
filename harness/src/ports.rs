//! Free ports on 127.0.0.1, chosen under a machine-wide lock and recorded in a
//! machine-wide registry, so two sandboxes starting at the same moment never
//! pick the same port, whatever home each one lives in (tests run many homes
//! at once; two engineers on one machine have one home each).
//!
//! A sandbox's entry in the registry names its directory and holds its ports
//! until the sandbox releases them (`release`, when its backend cleans up) or
//! its directory is gone (a sandbox removed by prune, a home deleted), whichever
//! comes first: an entry whose directory no longer exists is dropped by the next
//! reservation.
//!
//! Ports are chosen below the kernel's ephemeral range
//! (`net.ipv4.ip_local_port_range`): a port from that range can be taken as the
//! source port of an outgoing connection between the moment it is reserved and
//! the moment its component binds it, seconds later (seen: `payments` failing
//! with "address in use" while the services before it opened connections).

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

/// The registry: one directory per machine, writable by every user, sticky as
/// the temporary directory is (each user removes only their own entries).
fn registry() -> PathBuf {
    std::env::temp_dir().join("bank-sandbox-ports")
}

/// The registry's entry for the sandbox in `dir`.
fn entry(registry: &Path, dir: &Path) -> PathBuf {
    registry.join(format!("{:016x}", crate::backend::fnv1a(dir.as_os_str().as_encoded_bytes())))
}

/// Hold the registry's lock until the returned guard drops.
fn lock(registry: &Path) -> Result<Flock<std::fs::File>> {
    if !registry.exists() {
        std::fs::create_dir_all(registry).map_err(Error::io(format!("cannot create {}", registry.display())))?;
        // Every user's sandboxes share it; a racing user may have set it already.
        let _ = std::fs::set_permissions(registry, std::fs::Permissions::from_mode(0o1777));
    }
    check_registry(registry)?;
    let path = registry.join(".lock");
    // Never through a link another user planted in the shared directory.
    let open = |create: bool| {
        let mut options = std::fs::OpenOptions::new();
        options.read(true).custom_flags(nix::libc::O_NOFOLLOW);
        if create {
            options.create(true).truncate(false).write(true).mode(0o666);
        }
        options.open(&path)
    };
    let file = open(true).or_else(|_| open(false)).map_err(Error::io(format!("cannot open {}", path.display())))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::Docker(format!("cannot lock {}: {e}", path.display())))
}

/// Reserve `n` free ports for the sandbox in `dir`.
pub fn reserve(dir: &Path, n: usize) -> Result<Vec<u16>> {
    let registry = registry();
    let _lock = lock(&registry)?;
    let taken = taken_ports(&registry, dir);
    let (low, high) = listen_range();
    let span = u32::from(high - low);
    // Start somewhere different each time, then walk the range.
    let mut next = (uuid::Uuid::new_v4().as_u128() % u128::from(span)) as u32;
    let mut chosen = Vec::new();
    // Hold every listener until all are chosen, so none is handed out twice.
    let mut held = Vec::new();
    let mut tried = 0;
    while chosen.len() < n {
        if tried >= span {
            return Err(Error::Usage(format!("no {n} free ports on 127.0.0.1 between {low} and {high}")));
        }
        let port = low + (next % span) as u16;
        next += 1;
        tried += 1;
        if taken.contains(&port) {
            continue;
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(listener);
            chosen.push(port);
        }
    }
    let ports = chosen.iter().map(u16::to_string).collect::<Vec<_>>().join("\n");
    let path = entry(&registry, dir);
    write_entry(&path, &format!("{}\n{ports}\n", dir.display()))
        .map_err(Error::io(format!("cannot write {}", path.display())))?;
    Ok(chosen)
}

/// Write an entry of the shared registry: never through a symbolic link
/// (another user could plant one at an entry's predictable name to have this
/// write land on a file of yours), readable by all, writable by its owner.
fn write_entry(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    crate::files::create_no_follow(path, 0o644)?.write_all(text.as_bytes())
}

/// The registry must be a real directory that only its owner (or root) can
/// empty of others' entries: ours, root's, or sticky as the temporary
/// directory is.
fn check_registry(registry: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::symlink_metadata(registry).map_err(Error::io(format!("cannot inspect {}", registry.display())))?;
    let me = nix::unistd::geteuid().as_raw();
    let sticky = meta.mode() & 0o1000 != 0;
    if meta.file_type().is_symlink() || !meta.is_dir() || !(meta.uid() == me || meta.uid() == 0 || sticky) {
        return Err(Error::Usage(format!(
            "the port registry {} is not a directory the sandboxes can trust (a link, or another user's without \
             the sticky bit); remove it (as its owner or root) and try again",
            registry.display()
        )));
    }
    Ok(())
}

/// Give back the ports of the sandbox in `dir` (its components have stopped).
pub fn release(dir: &Path) {
    let registry = registry();
    if let Ok(_lock) = lock(&registry) {
        let _ = std::fs::remove_file(entry(&registry, dir));
    }
}

/// Where listening ports are chosen: from 10000 up to the start of the kernel's
/// ephemeral range (or the conventional range's start when it cannot be read).
fn listen_range() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32768);
    if ephemeral_low > 11000 { (10000, ephemeral_low) } else { (1024, ephemeral_low.max(2048)) }
}

/// Ports other live sandboxes hold (the sandbox in `dir` reserves afresh);
/// entries whose sandbox directory is gone are dropped on the way.
fn taken_ports(registry: &Path, dir: &Path) -> BTreeSet<u16> {
    let Ok(entries) = std::fs::read_dir(registry) else {
        return BTreeSet::new();
    };
    let mine = entry(registry, dir);
    let mut taken = BTreeSet::new();
    for path in entries.flatten().map(|e| e.path()) {
        if path == mine || path.file_name().is_some_and(|n| n == ".lock") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let mut lines = text.lines();
        let owner = lines.next().map(PathBuf::from);
        if !owner.is_some_and(|o| o.is_dir()) {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        taken.extend(lines.filter_map(|l| l.trim().parse::<u16>().ok()));
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_not_written_through_a_planted_link() {
        let dir = std::env::temp_dir().join(format!("ports-link-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("entry")).unwrap();
        let written = write_entry(&dir.join("entry"), "/some/sandbox\n41000\n");
        let kept = std::fs::read_to_string(&victim).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(written.is_err());
        assert_eq!(kept, "precious");
    }

    #[test]
    fn ports_are_below_the_ephemeral_range_and_never_shared_across_homes() {
        let root = std::env::temp_dir().join(format!("ports-test-{}", std::process::id()));
        // Two homes: the registry is machine-wide, not per home.
        let (a, b) = (root.join("home-1/a"), root.join("home-2/b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let first = reserve(&a, 20).unwrap();
        let second = reserve(&b, 20).unwrap();
        let (_, ephemeral) = listen_range();
        assert!(first.iter().chain(&second).all(|p| *p < ephemeral), "{first:?} {second:?}");
        let all: BTreeSet<u16> = first.iter().chain(&second).copied().collect();
        assert_eq!(all.len(), 40, "no port twice, within or across sandboxes");
        // Released or gone, a sandbox's ports are free again and its entry is removed.
        release(&a);
        std::fs::remove_dir_all(&root).unwrap();
        let registry = registry();
        assert!(!entry(&registry, &a).exists());
        assert!(taken_ports(&registry, Path::new("/")).is_disjoint(&second.iter().copied().collect()));
        assert!(!entry(&registry, &b).exists(), "the entry of a removed sandbox is dropped");
    }
}
