//! Sandboxes on this machine: each has a name, a directory under the sandbox
//! home, and a record (`sandbox.json`) saying who owns it and how to reach its
//! supervisor. Listing, liveness and pruning work from these records alone.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::{Kind, RunId};
use crate::error::{Error, Result};
use crate::process;

pub const RECORD: &str = "sandbox.json";

/// The directory that holds every sandbox of this user.
#[derive(Debug, Clone)]
pub struct Home {
    pub root: PathBuf,
}

impl Home {
    /// `$SANDBOX_HOME`, else `/tmp/bank-sandbox-<uid>`. (Not the user's home: when
    /// run as root, PostgreSQL runs as an unprivileged user that must reach its
    /// data directory.)
    pub fn from_env() -> Self {
        let root = std::env::var_os("SANDBOX_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join(format!("bank-sandbox-{}", nix::unistd::getuid())));
        Self { root }
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// A detached supervisor's output. Beside the sandbox's directory, not in it,
    /// so that it outlives a failed start long enough for `up --detach` to show
    /// why; a clean exit removes it, and `prune` removes one whose sandbox is gone.
    pub fn log(&self, name: &str) -> PathBuf {
        self.root.join(format!(".{name}.log"))
    }

    /// Supervisor logs whose sandbox directory no longer exists.
    pub fn stale_logs(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.root) else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|e| {
                let file = e.file_name().to_string_lossy().to_string();
                let name = file.strip_prefix('.')?.strip_suffix(".log")?.to_string();
                (!self.dir(&name).exists()).then(|| e.path())
            })
            .collect()
    }

    /// Claim `name`: create its directory, failing if a sandbox already has it.
    pub fn claim(&self, name: &str) -> Result<PathBuf> {
        validate_name(name)?;
        std::fs::create_dir_all(&self.root).map_err(Error::io(format!("cannot create {}", self.root.display())))?;
        let dir = self.dir(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let state = match Record::read(&dir) {
                    Ok(r) if r.owner_alive() => "running".to_string(),
                    Ok(_) => "its owner died; `sandbox prune` removes it".to_string(),
                    Err(_) => "starting, or left half-made; `sandbox prune` removes it".to_string(),
                };
                Err(Error::SandboxExists { name: name.into(), state })
            }
            Err(e) => Err(Error::io(format!("cannot create {}", dir.display()))(e)),
        }
    }

    /// Every sandbox directory with its record (if readable).
    pub fn list(&self) -> Vec<(String, Option<Record>)> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut out: Vec<_> = entries
            .flatten()
            // Hidden entries are caches (the cluster template), not sandboxes.
            .filter(|e| e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                (name, Record::read(&e.path()).ok())
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The sandbox `name`, or the only running one when no name is given.
    pub fn resolve(&self, name: Option<&str>) -> Result<Record> {
        if let Some(name) = name {
            return Record::read(&self.dir(name)).map_err(|_| Error::NoSuchSandbox(name.into()));
        }
        let running: Vec<Record> = self.list().into_iter().filter_map(|(_, r)| r).filter(Record::owner_alive).collect();
        match running.len() {
            1 => Ok(running.into_iter().next().expect("one")),
            0 => Err(Error::Other("no sandbox is running; start one with `sandbox up`".into())),
            _ => Err(Error::Other(format!(
                "several sandboxes are running ({}); name one",
                running.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ")
            ))),
        }
    }
}

pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok { Ok(()) } else { Err(Error::BadName(name.into())) }
}

/// The default name: the user plus a short random id.
pub fn default_name() -> String {
    let user = std::env::var("USER")
        .ok()
        .or_else(|| nix::unistd::User::from_uid(nix::unistd::getuid()).ok().flatten().map(|u| u.name))
        .unwrap_or_else(|| "dev".into());
    let user: String =
        user.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).take(24).collect();
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", user.trim_matches('-'), &id[..6])
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Control {
    pub addr: String,
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildRecord {
    pub component: String,
    pub id: RunId,
    /// A process's start time, to tell it from a recycled pid.
    pub start_time: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    pub dir: PathBuf,
    pub backend: Kind,
    /// The topology and its overrides, in `-f` order.
    pub topology: Vec<PathBuf>,
    /// The supervisor: the process that owns the sandbox.
    pub pid: u32,
    pub pid_start_time: Option<u64>,
    pub created_at: u64,
    pub control: Option<Control>,
    #[serde(default)]
    pub children: Vec<ChildRecord>,
}

impl Record {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(RECORD);
        let text = std::fs::read_to_string(&path).map_err(|cause| Error::Read { path: path.clone(), cause })?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Other(format!("{}: unreadable sandbox record: {e}", path.display())))
    }

    /// Write atomically (rename), readable by this user only: it holds the
    /// control token.
    pub fn write(&self) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = self.dir.join(format!(".{RECORD}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Other(e.to_string()))?;
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(Error::io(format!("cannot write {}", tmp.display())))?;
            f.write_all(text.as_bytes()).map_err(Error::io(format!("cannot write {}", tmp.display())))?;
        }
        std::fs::rename(&tmp, self.dir.join(RECORD))
            .map_err(Error::io(format!("cannot write the record in {}", self.dir.display())))
    }

    pub fn owner_alive(&self) -> bool {
        process::alive(self.pid, self.pid_start_time)
    }
}

/// Remove a sandbox whose owner is gone: its backend sweeps whatever of it
/// survives, then its directory goes. Returns what was swept.
pub async fn remove_dead(dir: &Path) -> Result<Vec<String>> {
    let mut swept = Vec::new();
    if let Ok(record) = Record::read(dir) {
        if record.owner_alive() {
            return Err(Error::Other(format!(
                "sandbox `{}` is running (pid {}); stop it with `sandbox down {}`",
                record.name, record.pid, record.name
            )));
        }
        swept = crate::backend::sweep(&record).await?;
    }
    std::fs::remove_dir_all(dir).map_err(Error::io(format!("cannot remove {}", dir.display())))?;
    Ok(swept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("alice-1a2b3c").is_ok());
        assert!(validate_name("Alice").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name(&default_name()).is_ok());
    }
}
