//! The bank's topology: `compose/bank.yaml`, read as the Compose format every
//! engineer knows, into a typed, validated model. What only the sandbox needs
//! lives under `x-sandbox` keys, which Compose ignores.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// A service's `x-sandbox` block: what only the sandbox needs to know of it.
/// How the local backend runs it is the local backend's business
/// (`backend::local`); a service without the block runs on the Docker backend
/// as Compose would run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandboxed {
    /// How the local backend runs it: postgres, kafka, bank, provider or process.
    pub run: String,
    /// The HTTP path that answers 2xx once the service is ready.
    pub health: Option<String>,
    /// (provider) its definition file, resolved against the topology's directory.
    pub provider: Option<PathBuf>,
    /// (process) the command line the local backend runs.
    pub command: Vec<String>,
}

/// The values `x-sandbox.run` takes.
pub const RUNS: &[&str] = &["postgres", "kafka", "bank", "provider", "process"];

/// How readiness is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A query answered by the server.
    Postgres,
    /// The port accepts connections (the broker has no ready signal).
    Tcp { port: u16 },
    /// `GET path` on `port` answers 2xx.
    Http { port: u16, path: String },
    /// Ready once it runs: it declares no port to check.
    Started,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Started,
    Healthy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub service: String,
    pub condition: Condition,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    /// The file and line of the service's key (the last file that names it).
    pub file: PathBuf,
    pub line: usize,
    pub image: Option<String>,
    pub command: Vec<String>,
    pub environment: BTreeMap<String, String>,
    pub depends_on: Vec<Dependency>,
    /// Container ports the service listens on.
    pub ports: Vec<u16>,
    /// Compose `volumes`, as written (`./dir:/path:ro`, `name:/path`).
    pub volumes: Vec<String>,
    pub x_sandbox: Option<Sandboxed>,
    pub probe: Probe,
    pub stop_signal: String,
    pub stop_grace: Duration,
    /// Compose's `restart:`, honoured by the engine on every backend.
    pub restart: Restart,
}

/// Compose's `restart:`: whether a component that exits without being asked
/// to (a crash, `sandbox kill`) is started again. A stop the sandbox asked
/// for (`down`, `restart`) is never answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    #[default]
    No,
    /// After a non-zero exit or a signal; at most `max` times when given.
    OnFailure {
        max: Option<u32>,
    },
    Always,
    /// As `always` here: a component the sandbox stopped is never started by policy.
    UnlessStopped,
}

impl Restart {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "no" => Self::No,
            "always" => Self::Always,
            "unless-stopped" => Self::UnlessStopped,
            "on-failure" => Self::OnFailure { max: None },
            other => Self::OnFailure { max: Some(other.strip_prefix("on-failure:")?.parse().ok()?) },
        })
    }

    /// Whether an exit with `code` (`None`: killed by a signal), after
    /// `restarted` restarts by this policy, is answered with a start.
    pub fn restarts_after(self, code: Option<i32>, restarted: u32) -> bool {
        match self {
            Self::No => false,
            Self::Always | Self::UnlessStopped => true,
            Self::OnFailure { max } => code != Some(0) && max.is_none_or(|max| restarted < max),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Topology {
    /// The first file: the topology itself.
    pub file: PathBuf,
    /// Every file, in `-f` order (the first, then its overrides).
    pub files: Vec<PathBuf>,
    pub name: String,
    /// In file order.
    pub services: Vec<Service>,
}

impl Topology {
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_all(std::slice::from_ref(&path.to_path_buf()))
    }

    /// One topology from several files, merged as Compose merges `-f a -f b`:
    /// later files override earlier ones (e.g. `compose/local-images.yaml`).
    pub fn load_all(paths: &[PathBuf]) -> Result<Self> {
        let sources = paths
            .iter()
            .map(|path| {
                let text = std::fs::read_to_string(path).map_err(|cause| Error::Read { path: path.clone(), cause })?;
                Ok((path.clone(), text))
            })
            .collect::<Result<Vec<_>>>()?;
        Self::parse_all(&sources)
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The topology cut down to `names` and everything they depend on
    /// (directly or through others), in file order: what a team's test that
    /// needs a few services starts. An unknown name is refused, naming the
    /// services there are.
    pub fn only(mut self, names: &[String]) -> Result<Self> {
        if names.is_empty() {
            return Ok(self);
        }
        let mut keep = BTreeSet::new();
        let mut todo: Vec<&str> = Vec::new();
        for name in names {
            if self.service(name).is_none() {
                let known: Vec<&str> = self.services.iter().map(|s| s.name.as_str()).collect();
                return Err(Error::Topology {
                    file: self.file.clone(),
                    line: 1,
                    message: format!("no service `{name}` to start; the services are: {}", known.join(", ")),
                });
            }
            todo.push(name);
        }
        while let Some(name) = todo.pop() {
            if keep.insert(name.to_string()) {
                todo.extend(self.service(name).iter().flat_map(|s| s.depends_on.iter().map(|d| d.service.as_str())));
            }
        }
        self.services.retain(|s| keep.contains(&s.name));
        Ok(self)
    }

    /// Services in an order where each comes after what it depends on.
    pub fn start_order(&self) -> Vec<&Service> {
        let mut done = BTreeSet::new();
        let mut order = Vec::new();
        while order.len() < self.services.len() {
            for s in &self.services {
                if !done.contains(&s.name) && s.depends_on.iter().all(|d| done.contains(&d.service)) {
                    done.insert(s.name.clone());
                    order.push(s);
                }
            }
        }
        order
    }

    /// How many components wait, directly or through others, on each one: a
    /// start-up's critical path runs through the ones with the most.
    pub fn dependents(&self) -> BTreeMap<String, usize> {
        let mut waiting: BTreeMap<String, BTreeSet<&str>> =
            self.services.iter().map(|s| (s.name.clone(), BTreeSet::new())).collect();
        // Dependencies first, so each one's set is complete when a dependent reads it.
        for s in self.start_order().into_iter().rev() {
            let mine = waiting.get(&s.name).cloned().unwrap_or_default();
            for d in &s.depends_on {
                if let Some(theirs) = waiting.get_mut(&d.service) {
                    theirs.insert(&s.name);
                    theirs.extend(mine.iter().copied());
                }
            }
        }
        waiting.into_iter().map(|(name, set)| (name, set.len())).collect()
    }

    pub fn parse(file: &Path, text: &str) -> Result<Self> {
        Self::parse_all(&[(file.to_path_buf(), text.to_string())])
    }

    /// Files in `-f` order; the first is the topology's own file (relative paths
    /// in it, such as provider definitions, are resolved against its directory).
    pub fn parse_all(sources: &[(PathBuf, String)]) -> Result<Self> {
        let Some((file, _)) = sources.first() else {
            return Err(Error::Usage("no topology file given".into()));
        };
        let file = file.as_path();
        let lines = Lines { files: sources.iter().map(|(f, t)| (f.as_path(), LineIndex::new(t))).collect() };
        let err = |(file, line): Loc, message: String| Error::Topology { file, line, message };
        let mut merged = serde_yaml::Value::Null;
        for (path, text) in sources {
            // Each file on its own first, so that a bad one is named with its line.
            let value: serde_yaml::Value =
                serde_yaml::from_str::<RawFile>(text).and_then(|_| serde_yaml::from_str(text)).map_err(|e| {
                    err((path.clone(), e.location().map_or(1, |l| l.line())), format!("not a valid Compose file: {e}"))
                })?;
            merge(&mut merged, value);
        }
        let raw: RawFile = serde_yaml::from_value(merged)
            .map_err(|e| err(lines.top(), format!("the merged files are not a valid Compose file: {e}")))?;
        let name = raw.name.unwrap_or_else(|| "bank".into());
        if raw.services.is_empty() {
            return Err(err(lines.top(), "no services: the topology needs a `services:` map".into()));
        }
        let mut services = Vec::new();
        for (svc_name, raw_svc) in raw.services {
            let line = lines.find(&["services", &svc_name]).unwrap_or_else(|| lines.top());
            let at = |keys: &[&str]| {
                let mut path = vec!["services", svc_name.as_str()];
                path.extend_from_slice(keys);
                lines.find(&path).unwrap_or_else(|| line.clone())
            };
            let ports = raw_svc
                .ports
                .iter()
                .map(|p| p.container_port())
                .collect::<std::result::Result<Vec<u16>, String>>()
                .map_err(|m| err(at(&["ports"]), format!("service `{svc_name}`: {m}")))?;
            let mut seen = BTreeSet::new();
            for p in &ports {
                if !seen.insert(*p) {
                    return Err(err(at(&["ports"]), format!("service `{svc_name}` declares port {p} twice")));
                }
            }
            let environment = raw_svc.environment.map(|e| e.into_map()).unwrap_or_default();
            let x_sandbox = match raw_svc.x_sandbox {
                None => None,
                Some(x) => {
                    if !RUNS.contains(&x.run.as_str()) {
                        return Err(err(
                            at(&["x-sandbox", "run"]),
                            format!(
                                "service `{svc_name}`: unknown `x-sandbox.run: {}`; use {}",
                                x.run,
                                RUNS.join(", ")
                            ),
                        ));
                    }
                    let provider = match (&x.provider, x.run.as_str()) {
                        (Some(rel), _) => {
                            let spec = file.parent().unwrap_or(Path::new(".")).join(rel);
                            if !spec.is_file() {
                                return Err(err(
                                    at(&["x-sandbox", "provider"]),
                                    format!(
                                        "service `{svc_name}`: provider definition {} does not exist",
                                        spec.display()
                                    ),
                                ));
                            }
                            Some(spec)
                        }
                        (None, "provider") => {
                            return Err(err(
                                at(&["x-sandbox", "run"]),
                                format!(
                                    "service `{svc_name}` runs a provider but names no `x-sandbox.provider:` definition file"
                                ),
                            ));
                        }
                        (None, _) => None,
                    };
                    if let Some(path) = x.health.as_ref().filter(|p| !p.starts_with('/')) {
                        return Err(err(
                            at(&["x-sandbox", "health"]),
                            format!("service `{svc_name}`: health endpoint `{path}` must be a path starting with /"),
                        ));
                    }
                    let command = x.command.map(StringOrList::into_vec).unwrap_or_default();
                    Some(Sandboxed { run: x.run, health: x.health, provider, command })
                }
            };
            let first_port = ports.first().copied();
            let run = x_sandbox.as_ref().map(|x| x.run.as_str());
            let health = x_sandbox.as_ref().and_then(|x| x.health.clone());
            let probe = match (run, health, first_port) {
                (Some("postgres"), _, _) => Probe::Postgres,
                (Some("provider"), _, Some(port)) => Probe::Http { port, path: "/__admin/health".into() },
                (Some("bank" | "process") | None, Some(path), Some(port)) => Probe::Http { port, path },
                (Some("bank"), None, _) => {
                    return Err(err(
                        line.clone(),
                        format!(
                            "service `{svc_name}` has no health endpoint: add `x-sandbox: {{ health: /health }}` so the sandbox knows when it is ready"
                        ),
                    ));
                }
                (Some("kafka" | "process") | None, None, Some(port)) => Probe::Tcp { port },
                (Some("process") | None, _, None) => Probe::Started,
                (_, _, None) => {
                    return Err(err(
                        line.clone(),
                        format!("service `{svc_name}` declares no port: add `ports: [\"<port>\"]`"),
                    ));
                }
                (Some(_), _, Some(port)) => Probe::Tcp { port },
            };
            let depends_on = raw_svc
                .depends_on
                .map(|d| d.into_list())
                .unwrap_or_default()
                .into_iter()
                .map(|(service, condition)| {
                    let condition = match condition.as_deref() {
                        None | Some("service_started") => Condition::Started,
                        Some("service_healthy") => Condition::Healthy,
                        Some(other) => {
                            return Err(err(
                                at(&["depends_on", &service]),
                                format!("service `{svc_name}`: unsupported condition `{other}` on `{service}`; use service_started or service_healthy"),
                            ));
                        }
                    };
                    Ok(Dependency { service, condition })
                })
                .collect::<Result<Vec<_>>>()?;
            let stop_grace = match &raw_svc.stop_grace_period {
                None => Duration::from_secs(10),
                Some(s) => parse_duration(s).ok_or_else(|| {
                    err(
                        at(&["stop_grace_period"]),
                        format!("service `{svc_name}`: `stop_grace_period: {s}` is not a duration like 10s or 500ms"),
                    )
                })?,
            };
            let stop_signal = raw_svc.stop_signal.unwrap_or_else(|| "SIGTERM".into());
            if crate::signals::parse(&stop_signal).is_none() {
                return Err(err(
                    at(&["stop_signal"]),
                    format!("service `{svc_name}`: unknown stop_signal `{stop_signal}`"),
                ));
            }
            let restart = match &raw_svc.restart {
                None | Some(serde_yaml::Value::Bool(false)) => Restart::No,
                Some(value) => value.as_str().and_then(Restart::parse).ok_or_else(|| {
                    err(
                        at(&["restart"]),
                        format!(
                            "service `{svc_name}`: `restart: {}` is not a restart policy; use no, always, unless-stopped, on-failure or on-failure:N",
                            serde_yaml::to_string(value).unwrap_or_default().trim()
                        ),
                    )
                })?,
            };
            services.push(Service {
                name: svc_name.clone(),
                file: line.0,
                line: line.1,
                image: raw_svc.image,
                command: raw_svc.command.map(|c| c.into_vec()).unwrap_or_default(),
                environment,
                depends_on,
                ports,
                volumes: raw_svc.volumes,
                x_sandbox,
                probe,
                stop_signal,
                stop_grace,
                restart,
            });
        }
        let files = sources.iter().map(|(f, _)| f.clone()).collect();
        let topology = Topology { file: file.to_path_buf(), files, name, services };
        topology.validate(&lines)?;
        Ok(topology)
    }

    fn validate(&self, lines: &Lines) -> Result<()> {
        let err = |(file, line): Loc, message: String| Error::Topology { file, line, message };
        let names: BTreeSet<&str> = self.services.iter().map(|s| s.name.as_str()).collect();
        for s in &self.services {
            for d in &s.depends_on {
                if !names.contains(d.service.as_str()) {
                    let line = lines.find(&["services", &s.name, "depends_on", &d.service]).unwrap_or_else(|| s.loc());
                    return Err(err(
                        line,
                        format!(
                            "service `{}` depends on `{}`, which is not a service in this file (services: {})",
                            s.name,
                            d.service,
                            names.iter().copied().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
        }
        if let Some(cycle) = self.find_cycle() {
            let first = self.service(&cycle[0]).map_or_else(|| lines.top(), |s| s.loc());
            return Err(err(first, format!("dependency cycle: {}", cycle.join(" -> "))));
        }
        // Databases a service's DATABASE_URL names must be ones the cluster creates.
        let clusters: HashMap<&str, Vec<String>> = self
            .services
            .iter()
            .filter(|s| {
                s.environment.contains_key(DATABASES) || s.x_sandbox.as_ref().is_some_and(|x| x.run == "postgres")
            })
            .map(|s| (s.name.as_str(), databases_of(&s.environment)))
            .collect();
        for s in &self.services {
            for (key, value) in &s.environment {
                for (pg, dbs) in &clusters {
                    if let Some(db) = database_in_url(value, pg)
                        && !dbs.contains(&db)
                    {
                        let line = lines.find(&["services", &s.name, "environment", key]).unwrap_or_else(|| s.loc());
                        return Err(err(
                            line,
                            format!(
                                "service `{}`: {key} names database `{db}`, which `{pg}` does not create; add it to `{pg}`'s `{DATABASES}`",
                                s.name
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// A dependency cycle as a path of names ending where it began.
    fn find_cycle(&self) -> Option<Vec<String>> {
        fn visit<'a>(
            t: &'a Topology,
            name: &'a str,
            stack: &mut Vec<&'a str>,
            done: &mut BTreeSet<&'a str>,
        ) -> Option<Vec<String>> {
            if let Some(pos) = stack.iter().position(|n| *n == name) {
                let mut cycle: Vec<String> = stack[pos..].iter().map(|s| s.to_string()).collect();
                cycle.push(name.to_string());
                return Some(cycle);
            }
            if done.contains(name) {
                return None;
            }
            stack.push(name);
            for d in t.service(name).map(|s| s.depends_on.as_slice()).unwrap_or_default() {
                if let Some(c) = visit(t, &d.service, stack, done) {
                    return Some(c);
                }
            }
            stack.pop();
            done.insert(name);
            None
        }
        let mut done = BTreeSet::new();
        self.services.iter().find_map(|s| visit(self, &s.name, &mut Vec::new(), &mut done))
    }
}

/// The environment variable that lists a PostgreSQL service's databases, one per
/// bank service. Compose's init script (`compose/postgres-init/`) creates them
/// in a container; the local backend creates them in its private cluster.
pub const DATABASES: &str = "POSTGRES_MULTIPLE_DATABASES";

pub fn databases_of(environment: &BTreeMap<String, String>) -> Vec<String> {
    environment
        .get(DATABASES)
        .map(|list| list.split(',').map(str::trim).filter(|d| !d.is_empty()).map(String::from).collect())
        .unwrap_or_default()
}

/// `postgres://u:p@<host>:<port>/<db>` where host is `pg`: the database name.
fn database_in_url(value: &str, pg: &str) -> Option<String> {
    let rest = value.strip_prefix("postgres://").or_else(|| value.strip_prefix("postgresql://"))?;
    let after_at = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let (hostport, path) = after_at.split_once('/')?;
    let host = hostport.split(':').next()?;
    (host == pg).then(|| path.split('?').next().unwrap_or(path).to_string()).filter(|d| !d.is_empty())
}

pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

// ---- the Compose file as written ----

#[derive(Debug, Deserialize)]
struct RawFile {
    name: Option<String>,
    #[serde(default)]
    services: indexmap_lite::OrderedMap<RawService>,
}

#[derive(Debug, Deserialize)]
struct RawService {
    image: Option<String>,
    command: Option<StringOrList>,
    environment: Option<Environment>,
    depends_on: Option<DependsOn>,
    #[serde(default)]
    ports: Vec<PortSpec>,
    #[serde(default)]
    volumes: Vec<String>,
    stop_signal: Option<String>,
    stop_grace_period: Option<String>,
    /// A string; YAML 1.1 readers (Compose's) take an unquoted `no` as false.
    restart: Option<serde_yaml::Value>,
    #[serde(rename = "x-sandbox")]
    x_sandbox: Option<XSandbox>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct XSandbox {
    run: String,
    health: Option<String>,
    /// (provider) its definition, relative to the topology file.
    provider: Option<String>,
    /// (process) the command line the local backend runs.
    command: Option<StringOrList>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    String(String),
    List(Vec<String>),
}

impl StringOrList {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::String(s) => s.split_whitespace().map(String::from).collect(),
            Self::List(l) => l,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Environment {
    Map(BTreeMap<String, serde_yaml::Value>),
    List(Vec<String>),
}

impl Environment {
    fn into_map(self) -> BTreeMap<String, String> {
        match self {
            Self::Map(m) => m
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        serde_yaml::Value::String(s) => s,
                        serde_yaml::Value::Null => String::new(),
                        other => serde_yaml::to_string(&other).unwrap_or_default().trim().to_string(),
                    };
                    (k, v)
                })
                .collect(),
            Self::List(l) => l
                .into_iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (kv, String::new()),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DependsOn {
    List(Vec<String>),
    Map(indexmap_lite::OrderedMap<DependsOnEntry>),
}

#[derive(Debug, Deserialize)]
struct DependsOnEntry {
    condition: Option<String>,
}

impl DependsOn {
    fn into_list(self) -> Vec<(String, Option<String>)> {
        match self {
            Self::List(l) => l.into_iter().map(|s| (s, None)).collect(),
            Self::Map(m) => m.into_iter().map(|(k, v)| (k, v.condition)).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PortSpec {
    Short(String),
    Number(u16),
    Long { target: u16 },
}

impl PortSpec {
    /// The container side of `"[ip:][host:]container[/proto]"`.
    fn container_port(&self) -> std::result::Result<u16, String> {
        match self {
            Self::Number(n) => Ok(*n),
            Self::Long { target } => Ok(*target),
            Self::Short(s) => {
                let last = s.rsplit(':').next().unwrap_or(s);
                let last = last.split('/').next().unwrap_or(last);
                last.parse().map_err(|_| format!("port `{s}` is not of the form \"[host:]container\""))
            }
        }
    }
}

/// A map that keeps the file's order (services start and print in that order).
mod indexmap_lite {
    use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
    use std::fmt;
    use std::marker::PhantomData;

    #[derive(Debug)]
    pub struct OrderedMap<V>(Vec<(String, V)>);

    impl<V> Default for OrderedMap<V> {
        fn default() -> Self {
            Self(Vec::new())
        }
    }

    impl<V> OrderedMap<V> {
        pub fn is_empty(&self) -> bool {
            self.0.is_empty()
        }
    }

    impl<V> IntoIterator for OrderedMap<V> {
        type Item = (String, V);
        type IntoIter = std::vec::IntoIter<(String, V)>;
        fn into_iter(self) -> Self::IntoIter {
            self.0.into_iter()
        }
    }

    impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V2<V>(PhantomData<V>);
            impl<'de, V: Deserialize<'de>> Visitor<'de> for V2<V> {
                type Value = OrderedMap<V>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a map")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                    let mut out: Vec<(String, V)> = Vec::new();
                    while let Some((k, v)) = map.next_entry::<String, V>()? {
                        if out.iter().any(|(existing, _)| *existing == k) {
                            return Err(serde::de::Error::custom(format!("`{k}` appears twice")));
                        }
                        out.push((k, v));
                    }
                    Ok(OrderedMap(out))
                }
            }
            d.deserialize_map(V2(PhantomData))
        }
    }
}

impl Service {
    fn loc(&self) -> Loc {
        (self.file.clone(), self.line)
    }
}

/// Compose's merge of `-f` files: mappings merge key by key (recursively), `ports`
/// and `volumes` add up, anything else the later file says replaces the earlier.
fn merge(base: &mut serde_yaml::Value, over: serde_yaml::Value) {
    use serde_yaml::Value;
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                let adds_up = matches!(k.as_str(), Some("ports" | "volumes"));
                match b.get_mut(&k) {
                    Some(Value::Sequence(existing)) if adds_up => {
                        if let Value::Sequence(more) = v {
                            for item in more {
                                if !existing.contains(&item) {
                                    existing.push(item);
                                }
                            }
                        }
                    }
                    Some(existing) => merge(existing, normalise(&k, v)),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// `environment: [K=V]` as a mapping, so a list in one file merges with a map in another.
fn normalise(key: &serde_yaml::Value, value: serde_yaml::Value) -> serde_yaml::Value {
    use serde_yaml::Value;
    match (key.as_str(), value) {
        (Some("environment"), Value::Sequence(items)) => Value::Mapping(
            items
                .into_iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (Value::from(k), Value::from(v)),
                    None => (Value::from(kv.as_str()), Value::Null),
                })
                .collect(),
        ),
        (_, v) => v,
    }
}

/// Where something is: a file and a 1-based line.
type Loc = (PathBuf, usize);

/// The line indexes of every file; a key is found in the last file that has it.
struct Lines<'a> {
    files: Vec<(&'a Path, LineIndex<'a>)>,
}

impl Lines<'_> {
    fn find(&self, path: &[&str]) -> Option<Loc> {
        self.files.iter().rev().find_map(|(f, idx)| idx.find(path).map(|line| (f.to_path_buf(), line)))
    }

    /// The first line of the topology file.
    fn top(&self) -> Loc {
        (self.files.first().map_or_else(PathBuf::new, |(f, _)| f.to_path_buf()), 1)
    }
}

/// Finds the line of a key path in block-style YAML, for error messages.
struct LineIndex<'a> {
    lines: Vec<&'a str>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        Self { lines: text.lines().collect() }
    }

    /// 1-based line of `path` (each element a mapping key; a list item `- key`
    /// also matches), searching each key inside the block of the previous one.
    fn find(&self, path: &[&str]) -> Option<usize> {
        let mut start = 0;
        let mut parent_indent: isize = -1;
        let mut found = None;
        for key in path {
            let mut hit = None;
            for (i, line) in self.lines.iter().enumerate().skip(start) {
                let trimmed = line.trim_start();
                if trimmed.is_empty() || trimmed.starts_with('#') {
                    continue;
                }
                let indent = (line.len() - trimmed.len()) as isize;
                if i > start && indent <= parent_indent {
                    break;
                }
                let item = trimmed.strip_prefix("- ").unwrap_or(trimmed);
                let k = item.split(':').next().unwrap_or("").trim().trim_matches(|c| c == '"' || c == '\'');
                if k == *key && (item.contains(':') || trimmed.starts_with("- ")) {
                    hit = Some((i, indent));
                    break;
                }
            }
            let (i, indent) = hit?;
            found = Some(i + 1);
            start = i + 1;
            parent_indent = indent;
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Topology> {
        Topology::parse(Path::new("compose/test.yaml"), text)
    }

    const GOOD: &str = r#"
services:
  postgres:
    image: postgres:15
    ports: ["5432"]
    environment:
      POSTGRES_MULTIPLE_DATABASES: accounts
    x-sandbox:
      run: postgres
  kafka:
    image: apache/kafka:3.9.0
    ports: ["9092"]
    x-sandbox: { run: kafka }
  accounts:
    image: bank-sandbox/bank
    command: ["accounts"]
    environment:
      DATABASE_URL: postgres://bank:bank@postgres:5432/accounts
    ports: ["8080"]
    depends_on:
      postgres: { condition: service_healthy }
    x-sandbox:
      run: bank
      health: /health
"#;

    fn message(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_good_file_parses_in_file_order() {
        let t = parse(GOOD).unwrap();
        let names: Vec<_> = t.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["postgres", "kafka", "accounts"]);
        let accounts = t.service("accounts").unwrap();
        assert_eq!(accounts.probe, Probe::Http { port: 8080, path: "/health".into() });
        assert_eq!(accounts.depends_on, vec![Dependency { service: "postgres".into(), condition: Condition::Healthy }]);
        assert_eq!(accounts.line, 14);
    }

    #[test]
    fn malformed_yaml_names_file_and_line() {
        let m = message("services:\n  a:\n    image: [unclosed\n");
        assert!(m.starts_with("compose/test.yaml:"), "{m}");
        assert!(m.contains("not a valid Compose file"), "{m}");
    }

    #[test]
    fn unknown_dependency_names_file_line_and_service() {
        let text = GOOD.replace("postgres: { condition: service_healthy }", "ledger: { condition: service_healthy }");
        assert_eq!(
            message(&text),
            "compose/test.yaml:21: service `accounts` depends on `ledger`, which is not a service in this file (services: accounts, kafka, postgres)"
        );
    }

    #[test]
    fn a_cycle_is_named_in_full() {
        let text = GOOD
            .replace("    x-sandbox: { run: kafka }", "    depends_on: [accounts]\n    x-sandbox: { run: kafka }")
            .replace("postgres: { condition: service_healthy }", "kafka: { condition: service_started }");
        assert_eq!(message(&text), "compose/test.yaml:10: dependency cycle: kafka -> accounts -> kafka");
    }

    #[test]
    fn a_bank_service_without_health_is_refused() {
        let text = GOOD.replace("      health: /health\n", "");
        let m = message(&text);
        assert!(m.starts_with("compose/test.yaml:14: service `accounts` has no health endpoint"), "{m}");
    }

    #[test]
    fn a_database_the_cluster_does_not_create_is_refused() {
        let text = GOOD.replace("postgres:5432/accounts", "postgres:5432/ledger");
        assert_eq!(
            message(&text),
            "compose/test.yaml:18: service `accounts`: DATABASE_URL names database `ledger`, which `postgres` does not create; add it to `postgres`'s `POSTGRES_MULTIPLE_DATABASES`"
        );
    }

    #[test]
    fn a_port_declared_twice_is_refused() {
        let text = GOOD.replace("ports: [\"8080\"]", "ports: [\"8080\", \"127.0.0.1::8080\"]");
        assert_eq!(message(&text), "compose/test.yaml:19: service `accounts` declares port 8080 twice");
    }

    #[test]
    fn a_service_without_x_sandbox_is_probed_on_its_first_port() {
        let text = GOOD.replace("    x-sandbox: { run: kafka }\n", "");
        let t = parse(&text).unwrap();
        let kafka = t.service("kafka").unwrap();
        assert_eq!((kafka.x_sandbox.as_ref(), &kafka.probe), (None, &Probe::Tcp { port: 9092 }));
    }

    #[test]
    fn an_unknown_run_names_the_choices() {
        let m = message(&GOOD.replace("{ run: kafka }", "{ run: kafak }"));
        assert_eq!(
            m,
            "compose/test.yaml:10: service `kafka`: unknown `x-sandbox.run: kafak`; use postgres, kafka, bank, provider, process"
        );
    }

    #[test]
    fn a_provider_must_name_a_definition_that_exists() {
        let text = format!(
            "{GOOD}  scheme:\n    ports: [\"8080\"]\n    x-sandbox:\n      run: provider\n      provider: ../fixtures/providers/nope.yaml\n"
        );
        let m = message(&text);
        assert!(m.starts_with("compose/test.yaml:29: service `scheme`: provider definition"), "{m}");
        assert!(m.ends_with("nope.yaml does not exist"), "{m}");
    }

    #[test]
    fn start_order_respects_dependencies() {
        let t = parse(GOOD).unwrap();
        let order: Vec<_> = t.start_order().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(order, ["postgres", "kafka", "accounts"]);
    }

    #[test]
    fn the_bank_waits_most_on_postgresql() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose/bank.yaml");
        let t = Topology::parse(&file, &std::fs::read_to_string(&file).unwrap()).unwrap();
        let d = t.dependents();
        // Every bank service waits on PostgreSQL; monitoring and the connector on the broker.
        assert_eq!((d["postgres"], d["kafka"], d["payment-scheme"], d["payments"]), (6, 2, 1, 0));

        // Through others too: PostgreSQL <- accounts <- gateway.
        let chained = format!(
            "{GOOD}  gateway:\n    image: bank-sandbox/bank\n    command: [\"gateway\"]\n    ports: [\"8080\"]\n    \
             depends_on:\n      accounts: {{ condition: service_healthy }}\n    x-sandbox:\n      run: bank\n      health: /health\n"
        );
        let d = parse(&chained).unwrap().dependents();
        assert_eq!((d["postgres"], d["accounts"], d["gateway"], d["kafka"]), (2, 1, 0, 0));
    }

    fn parse_pair(over: &str) -> Result<Topology> {
        Topology::parse_all(&[
            (PathBuf::from("compose/test.yaml"), GOOD.to_string()),
            (PathBuf::from("compose/local.yaml"), over.to_string()),
        ])
    }

    #[test]
    fn an_override_file_merges_as_compose_merges() {
        let over = "services:\n  accounts:\n    image: local/bank:1\n    command: [\"payments\"]\n    environment: [\"EXTRA=1\"]\n    ports: [\"9090\"]\n";
        let t = parse_pair(over).unwrap();
        let accounts = t.service("accounts").unwrap();
        assert_eq!(accounts.image.as_deref(), Some("local/bank:1"));
        assert_eq!(accounts.command, ["payments"]);
        assert_eq!(accounts.environment["EXTRA"], "1");
        assert_eq!(accounts.environment["DATABASE_URL"], "postgres://bank:bank@postgres:5432/accounts");
        assert_eq!(accounts.ports, [8080, 9090]);
        assert_eq!(t.files, [PathBuf::from("compose/test.yaml"), PathBuf::from("compose/local.yaml")]);
        // Untouched services keep the first file's values and order.
        let names: Vec<_> = t.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["postgres", "kafka", "accounts"]);
    }

    #[test]
    fn an_error_in_an_override_names_the_override_and_its_line() {
        let m = parse_pair("services:\n  accounts:\n    stop_signal: SIGNOPE\n").unwrap_err().to_string();
        assert_eq!(m, "compose/local.yaml:3: service `accounts`: unknown stop_signal `SIGNOPE`");
        let m = parse_pair("services:\n  accounts:\n    ports: {\n").unwrap_err().to_string();
        assert!(m.starts_with("compose/local.yaml:"), "{m}");
    }

    #[test]
    fn durations_parse_like_compose() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("soon"), None);
    }
}
