//! Child processes of a sandbox: each in its own process group (so a terminal's
//! Ctrl-C reaches only the supervisor, which tears down in order), killed by the
//! kernel if the supervisor dies (so a crashed supervisor leaves no orphans),
//! with stdout/stderr forwarded line by line to the log store.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Command;

use crate::backend::{Exit, Handle, RunId, Stopper};
use crate::error::{Error, Result};
use crate::logs::LogSink;

/// Make `cmd` die with its parent and lead its own process group.
pub fn tie_to_parent(cmd: &mut Command) {
    cmd.process_group(0).kill_on_drop(false);
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe functions (prctl, getppid, _exit).
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            // The parent may have died between fork and prctl.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                nix::libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Spawn `cmd` as a sandbox component.
pub fn spawn(component: &str, mut cmd: Command, logs: LogSink) -> Result<Handle> {
    tie_to_parent(&mut cmd);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let program = format!("{:?}", cmd.as_std().get_program());
    let mut child = cmd.spawn().map_err(|e| Error::component(component, format!("cannot start {program}: {e}")))?;
    let pid = child.id().ok_or_else(|| Error::component(component, format!("{program} exited as it started")))?;
    if let Some(out) = child.stdout.take() {
        logs.forward("stdout", out);
    }
    if let Some(err) = child.stderr.take() {
        logs.forward("stderr", err);
    }
    let (tx, exit) = Exit::new();
    tokio::spawn(async move {
        let status = child.wait().await;
        let code = status.ok().and_then(|s| s.code());
        let _ = tx.send(Some(code));
    });
    Ok(Handle::new(RunId::Pid(pid), exit, Box::new(GroupStopper { pid })))
}

struct GroupStopper {
    pid: u32,
}

impl Stopper for GroupStopper {
    fn stop(
        &self,
        signal: Signal,
        grace: Duration,
        exit: Exit,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let pid = self.pid;
            let group = Pid::from_raw(pid as i32);
            let _ = killpg(group, signal);
            if tokio::time::timeout(grace, exit.wait()).await.is_err() {
                tracing::warn!(pid, "did not stop within {grace:?} of {signal}; killing");
                let _ = killpg(group, Signal::SIGKILL);
                exit.wait().await;
            }
            // Whatever the leader left in its group goes too.
            let _ = killpg(group, Signal::SIGKILL);
        })
    }
}

/// Process start time (clock ticks since boot), to tell a live process from a
/// recycled pid; `None` for no process or a zombie (dead, not yet reaped: an
/// orphan's zombie may linger when the machine's init does not reap).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after the last ')'.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // Field 22 overall is the 20th after the state.
    fields.nth(18)?.parse().ok()
}

/// Whether `pid` is still the process that started at `started`.
pub fn alive(pid: u32, started: Option<u64>) -> bool {
    match (start_time(pid), started) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_recycled_pid_is_not() {
        let me = std::process::id();
        let started = start_time(me);
        assert!(started.is_some());
        assert!(alive(me, started));
        assert!(!alive(me, started.map(|t| t + 1)), "same pid, other start time: another process");
    }

    #[test]
    fn a_zombie_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped yet: a zombie once it exits.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while start_time(pid).is_some() {
            assert!(std::time::Instant::now() < deadline, "child never became a zombie");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!alive(pid, None));
        child.wait().unwrap();
    }
}
