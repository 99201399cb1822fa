//! A running sandbox as its clients see it: its components' addresses, its
//! control API, its providers' admin APIs. Found by name through the sandbox's
//! record, so the e2e runner, `sandbox test` and the TUI reach a sandbox they
//! started and one somebody else started in the same way.

use std::collections::BTreeMap;

use crate::control;
use crate::engine::{Phase, State};
use crate::error::{Error, Result};
use crate::providers::AdminClient;
use crate::sandbox::Home;

#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub control: control::Client,
    /// Component -> its main address (`http://127.0.0.1:port`, or `host:port`
    /// for the broker).
    urls: BTreeMap<String, String>,
}

impl Target {
    /// The running sandbox `name` (or the only one) under `home`.
    pub async fn attach(home: &Home, name: Option<&str>) -> Result<Self> {
        let record = home.resolve(name)?;
        let control = control::Client::for_record(&record)?;
        let state = control.state().await?;
        Self::from_state(&record.name, control, &state)
    }

    pub fn from_state(name: &str, control: control::Client, state: &State) -> Result<Self> {
        if state.phase != Phase::Running {
            return Err(Error::NotRunning(format!(
                "sandbox `{name}` is {:?}, not running; see `sandbox status {name}`",
                state.phase
            )));
        }
        let urls = state
            .components
            .iter()
            .filter_map(|c| c.endpoints.first().map(|e| (c.name.clone(), e.url.clone())))
            .collect();
        Ok(Self { name: name.to_string(), control, urls })
    }

    pub fn url(&self, component: &str) -> Result<&str> {
        self.urls.get(component).map(String::as_str).ok_or_else(|| {
            Error::NotRunning(format!(
                "sandbox `{}` has no component `{component}`; it has: {}",
                self.name,
                self.urls.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// The bank's front door.
    pub fn gateway(&self) -> Result<&str> {
        self.url("gateway")
    }

    /// The broker's bootstrap address.
    pub fn brokers(&self) -> Result<&str> {
        self.url("kafka")
    }

    pub fn provider(&self, name: &str) -> Result<AdminClient> {
        Ok(AdminClient::new(name, self.url(name)?))
    }
}
