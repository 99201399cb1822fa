//! Python tools the project runs (schemathesis for `sandbox fuzz`, Python's
//! testcontainers for the bank-in-a-box's example): each in a virtual
//! environment of its own under the user's cache, outside any clone, made
//! from PyPI with pinned versions when missing or different.

use std::path::PathBuf;
use std::process::Command;

use crate::error::{Error, Result};

/// The file in an environment listing what was installed into it.
const INSTALLED: &str = "bank-sandbox-installed";

/// The virtual environment `name` (under `$XDG_CACHE_HOME/bank-sandbox`, or
/// `~/.cache/bank-sandbox`) holding exactly `packages` (pip requirements,
/// pinned), made when missing; its directory.
pub fn environment(name: &str, packages: &[&str]) -> Result<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .ok_or_else(|| Error::Tool("neither XDG_CACHE_HOME nor HOME is set: say where caches go".into()))?;
    let venv = cache.join("bank-sandbox").join(name);
    let wanted = packages.join("\n");
    if std::fs::read_to_string(venv.join(INSTALLED)).is_ok_and(|had| had == wanted) {
        return Ok(venv);
    }
    eprintln!("installing {} into {}", packages.join(" "), venv.display());
    let _ = std::fs::remove_dir_all(&venv);
    std::fs::create_dir_all(venv.parent().unwrap_or(&venv)).map_err(Error::io("cannot create the Python cache"))?;
    let made = Command::new("python3").arg("-m").arg("venv").arg(&venv).status();
    if !made.is_ok_and(|s| s.success()) {
        return Err(Error::Tool(format!(
            "cannot make a Python virtual environment at {}: install python3 with venv (`apt-get install -y python3-venv`)",
            venv.display()
        )));
    }
    let pip = Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(packages)
        .status();
    if !pip.is_ok_and(|s| s.success()) {
        let _ = std::fs::remove_dir_all(&venv);
        return Err(Error::Tool(format!(
            "cannot install {} from PyPI (pip failed above); check the network and try again",
            packages.join(" ")
        )));
    }
    std::fs::write(venv.join(INSTALLED), wanted).map_err(Error::io("cannot mark the Python environment as made"))?;
    Ok(venv)
}
