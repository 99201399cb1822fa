//! Free ports on 127.0.0.1, chosen under a machine-wide lock and recorded in the
//! sandbox's directory, so two sandboxes starting at the same moment never pick
//! the same port.
//!
//! Ports are chosen below the kernel's ephemeral range
//! (`net.ipv4.ip_local_port_range`): a port from that range can be taken as the
//! source port of an outgoing connection between the moment it is reserved and
//! the moment its component binds it, seconds later (seen: `payments` failing
//! with "address in use" while the services before it opened connections).

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

const PORTS_FILE: &str = "ports";

/// Reserve `n` free ports for the sandbox in `dir` (under `home`).
pub fn reserve(home: &Path, dir: &Path, n: usize) -> Result<Vec<u16>> {
    std::fs::create_dir_all(home).map_err(Error::io(format!("cannot create {}", home.display())))?;
    let lock_path = home.join(".ports.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(Error::io(format!("cannot open {}", lock_path.display())))?;
    let _lock = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::Other(format!("cannot lock {}: {e}", lock_path.display())))?;
    let taken = taken_ports(home);
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
            return Err(Error::Other(format!("no {n} free ports on 127.0.0.1 between {low} and {high}")));
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
    let text = chosen.iter().map(u16::to_string).collect::<Vec<_>>().join("\n");
    std::fs::write(dir.join(PORTS_FILE), text).map_err(Error::io(format!("cannot write {}", dir.display())))?;
    Ok(chosen)
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

/// Ports other sandboxes under `home` have reserved.
fn taken_ports(home: &Path) -> BTreeSet<u16> {
    let Ok(entries) = std::fs::read_dir(home) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join(PORTS_FILE)).ok())
        .flat_map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect::<Vec<u16>>())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_and_never_shared() {
        let home = std::env::temp_dir().join(format!("ports-test-{}", std::process::id()));
        let (a, b) = (home.join("a"), home.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let first = reserve(&home, &a, 20).unwrap();
        let second = reserve(&home, &b, 20).unwrap();
        std::fs::remove_dir_all(&home).unwrap();
        let (_, ephemeral) = listen_range();
        assert!(first.iter().chain(&second).all(|p| *p < ephemeral), "{first:?} {second:?}");
        let all: BTreeSet<u16> = first.iter().chain(&second).copied().collect();
        assert_eq!(all.len(), 40, "no port twice, within or across sandboxes");
    }
}
