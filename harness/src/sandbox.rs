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

    /// Make the home if it is missing (private: 0700), and refuse one that is
    /// not private to this user: another user's, one that group or others can
    /// write, or a symbolic link. Whoever else could write in it could plant
    /// a cluster template, a record or a link that this user's writes follow.
    pub fn ensure(&self) -> Result<()> {
        if let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(Error::io(format!("cannot create {}", parent.display())))?;
        }
        match private_dir(&self.root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(format!("cannot create the sandbox home {}", self.root.display()))(e)),
        }
        self.check()
    }

    /// Refuse a home that is not private to this user (see [`Home::ensure`]);
    /// one that is missing is fine (nothing in it to trust). A home of this
    /// user's that others can read, but not write, is made private.
    pub fn check(&self) -> Result<()> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let unsafe_home =
            |problem: String, fix: &str| Error::UnsafeHome { path: self.root.clone(), problem, fix: fix.to_string() };
        let meta = match std::fs::symlink_metadata(&self.root) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("cannot inspect the sandbox home {}", self.root.display()))(e)),
        };
        if meta.file_type().is_symlink() {
            return Err(unsafe_home("is a symbolic link".into(), "point SANDBOX_HOME at a real directory of your own"));
        }
        if !meta.is_dir() {
            return Err(unsafe_home(
                "is not a directory".into(),
                "remove it, or set SANDBOX_HOME to a directory of your own",
            ));
        }
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != me {
            return Err(unsafe_home(
                format!(
                    "belongs to uid {}, not to you (uid {me}): whoever made it can read and plant your sandboxes' files",
                    meta.uid()
                ),
                "remove it (as its owner or root), or set SANDBOX_HOME to a directory of your own",
            ));
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(unsafe_home(
                format!("can be written by its group or by others (mode {mode:04o})"),
                &format!(
                    "make it private with `chmod 700 {}`, or set SANDBOX_HOME to a private directory",
                    self.root.display()
                ),
            ));
        }
        let wanted = private_mode();
        if mode != wanted {
            std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(wanted))
                .map_err(Error::io(format!("cannot make {} private", self.root.display())))?;
        }
        share_with_postgres(&self.root).map_err(Error::io(format!("cannot make {} private", self.root.display())))
    }

    /// Claim `name`: create its directory, failing if a sandbox already has it.
    pub fn claim(&self, name: &str) -> Result<PathBuf> {
        validate_name(name)?;
        self.ensure()?;
        let dir = self.dir(name);
        match private_dir(&dir) {
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
            0 => Err(Error::NotRunning("no sandbox is running; start one with `sandbox up`".into())),
            _ => Err(Error::Usage(format!(
                "several sandboxes are running ({}); name one",
                running.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ")
            ))),
        }
    }
}

/// The mode of the home and of each sandbox's directory: the owner's alone;
/// when run as root, PostgreSQL runs as its own user and must pass through
/// them to reach its data and socket, so that user's group may enter (not
/// read, not write).
fn private_mode() -> u32 {
    if crate::postgres::unprivileged_user().ok().flatten().is_some() { 0o710 } else { 0o700 }
}

/// Create `path` private to its owner (see [`private_mode`]); an existing
/// one is an `AlreadyExists` error and is left as it is.
fn private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().mode(0o700).create(path)?;
    // The mode given at creation is cut by the umask; set it exactly.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(private_mode()))?;
    share_with_postgres(path)
}

/// When run as root: the directory's group becomes PostgreSQL's user's, so
/// that it may pass through (mode 0710).
fn share_with_postgres(path: &Path) -> std::io::Result<()> {
    if let Ok(Some((_, gid))) = crate::postgres::unprivileged_user() {
        nix::unistd::chown(path, None, Some(gid)).map_err(std::io::Error::from)?;
    }
    Ok(())
}

/// Open `path` for writing, readable by its owner alone, without following a
/// symbolic link at its place (one there is an error, not a redirection).
pub fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    crate::files::create_no_follow(path, 0o600)
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
    /// The local backend's PostgreSQL superuser password, made at random for
    /// this sandbox (the record is readable by its owner alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_password: Option<String>,
}

impl Record {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(RECORD);
        let text = std::fs::read_to_string(&path).map_err(|cause| Error::Read { path: path.clone(), cause })?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Usage(format!("{}: unreadable sandbox record: {e}", path.display())))
    }

    /// Write atomically (rename), readable by this user only: it holds the
    /// control token and the database password. Neither the scratch file nor
    /// the record is reached through a symbolic link (the rename replaces a
    /// link at the record's place, it does not follow it).
    pub fn write(&self) -> Result<()> {
        let tmp = self.dir.join(format!(".{RECORD}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Check(e.to_string()))?;
        {
            use std::io::Write;
            let mut f = open_private(&tmp).map_err(Error::io(format!("cannot write {}", tmp.display())))?;
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
            return Err(Error::Usage(format!(
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

    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn scratch(what: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sbx-home-{what}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_new_home_is_private_to_its_owner() {
        let parent = scratch("new");
        let home = Home { root: parent.join("home") };
        let dir = home.claim("alice").unwrap();
        let modes: Vec<u32> =
            [&home.root, &dir].iter().map(|p| std::fs::metadata(p).unwrap().mode() & 0o7777).collect();
        std::fs::remove_dir_all(&parent).unwrap();
        // Root's sandboxes let PostgreSQL's user pass through (0710), no one else.
        assert!(modes.iter().all(|m| *m == private_mode() && m & 0o077 & !0o010 == 0), "{modes:?}");
    }

    #[test]
    fn a_home_others_can_write_or_that_is_a_link_is_refused_and_nothing_is_made() {
        let parent = scratch("shared");
        let open = parent.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = Home { root: open.clone() }.claim("alice").unwrap_err().to_string();
        assert!(err.contains("can be written by its group or by others (mode 0777)"), "{err}");
        assert!(err.contains(&format!("chmod 700 {}", open.display())), "{err}");
        assert!(!open.join("alice").exists(), "nothing made in it");
        let link = parent.join("link");
        std::os::unix::fs::symlink(parent.join("elsewhere"), &link).unwrap();
        std::fs::create_dir(parent.join("elsewhere")).unwrap();
        let err = Home { root: link }.claim("alice").unwrap_err().to_string();
        assert!(err.contains("is a symbolic link"), "{err}");
        assert!(!parent.join("elsewhere/alice").exists());
        std::fs::remove_dir_all(&parent).unwrap();
    }

    #[test]
    fn a_home_another_user_made_is_refused() {
        // Only root can make a directory that belongs to someone else.
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let parent = scratch("theirs");
        let theirs = parent.join("home");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).unwrap();
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        nix::unistd::chown(&theirs, Some(nobody.uid), None).unwrap();
        let err = Home { root: theirs.clone() }.claim("alice").unwrap_err().to_string();
        let made = theirs.join("alice").exists();
        std::fs::remove_dir_all(&parent).unwrap();
        assert!(err.contains(&format!("belongs to uid {}, not to you", nobody.uid)), "{err}");
        assert!(err.contains("set SANDBOX_HOME to a directory of your own"), "{err}");
        assert!(!made);
    }

    #[test]
    fn a_record_is_not_written_through_a_planted_link() {
        let dir = scratch("record");
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(format!(".{RECORD}.tmp"))).unwrap();
        let record = Record {
            name: "alice".into(),
            dir: dir.clone(),
            backend: Kind::Local,
            topology: Vec::new(),
            pid: 1,
            pid_start_time: None,
            created_at: 0,
            control: None,
            children: Vec::new(),
            postgres_password: Some("s3cret".into()),
        };
        let written = record.write();
        let kept = std::fs::read_to_string(&victim).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(written.is_err(), "a link at the scratch file's place is an error");
        assert_eq!(kept, "precious");
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("alice-1a2b3c").is_ok());
        assert!(validate_name("Alice").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name(&default_name()).is_ok());
    }
}
