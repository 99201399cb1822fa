//! Files the harness writes where a link could be planted (the shared port
//! registry, a sandbox home): created or truncated at their own place, never
//! through a symbolic link, which is an error instead.

use std::path::Path;

/// Open `path` for writing (created with `mode` if missing, truncated if
/// not), refusing a symbolic link at its place.
pub fn create_no_follow(path: &Path, mode: u32) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
}
