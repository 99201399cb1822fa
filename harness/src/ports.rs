//! Free ports on 127.0.0.1, chosen under a machine-wide lock and recorded in the
//! sandbox's directory, so two sandboxes starting at the same moment never pick
//! the same port.

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
    let mut chosen = Vec::new();
    // Hold every listener until all are chosen so the kernel cannot hand one out twice.
    let mut held = Vec::new();
    let mut attempts = 0;
    while chosen.len() < n {
        attempts += 1;
        if attempts > 1000 {
            return Err(Error::Other("cannot find free ports on 127.0.0.1".into()));
        }
        let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(Error::io("cannot bind 127.0.0.1:0"))?;
        let port = listener.local_addr().map_err(Error::io("local_addr"))?.port();
        held.push(listener);
        if !taken.contains(&port) && !chosen.contains(&port) {
            chosen.push(port);
        }
    }
    let text = chosen.iter().map(u16::to_string).collect::<Vec<_>>().join("\n");
    std::fs::write(dir.join(PORTS_FILE), text).map_err(Error::io(format!("cannot write {}", dir.display())))?;
    Ok(chosen)
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
