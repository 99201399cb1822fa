//! A tmux server of a test's own, shared by the test binaries that drive the
//! dashboard in a real pseudo-terminal (`#[path]`-included: each binary its copy).

use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A tmux server of its own, killed on drop: the TUI runs in its pseudo-terminal.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// `name` tells apart the servers of one test binary.
    pub fn new(name: &str) -> Self {
        Self { socket: format!("sbx-{name}-{}", std::process::id()) }
    }

    /// A session `tui` of `width` x `height` running `command` in `dir`.
    pub fn start(&self, dir: &std::path::Path, width: u16, height: u16, command: &str) {
        let (w, h) = (width.to_string(), height.to_string());
        let out =
            self.run(&["new-session", "-d", "-s", "tui", "-x", &w, "-y", &h, "-c", &dir.to_string_lossy(), command]);
        assert!(out.status.success(), "tmux: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn keys(&self, keys: &str) {
        self.run(&["send-keys", "-t", "tui", keys]);
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux").args(["-L", &self.socket]).args(args).output().expect("tmux")
    }

    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "tui"]).stdout).to_string()
    }

    pub fn wait_for(&self, text: &str) {
        self.wait_for_within(text, Duration::from_secs(60));
    }

    /// `wait_for` with a deadline of the caller's (a screen that follows a build).
    pub fn wait_for_within(&self, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return;
            }
            assert!(Instant::now() < deadline, "the screen never showed `{text}`:\n{screen}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}
