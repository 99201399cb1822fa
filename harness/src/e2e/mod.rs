//! The Gherkin suite's runner: `cargo test --features e2e` and `sandbox test`.
//!
//! It starts one ephemeral sandbox for the run (or attaches to a running one),
//! runs the scenarios under `scenarios/` concurrently against it (those tagged
//! `@serial` alone), audits the bank's invariants after each scenario, writes
//! cucumber's console output and a JUnit report, and tears the sandbox down at
//! the end, failed or not. Steps are thin: they call [`crate::api`],
//! [`crate::topics`], the providers' admin clients and the control API.

mod audit;
mod params;
mod select;
mod steps;
pub mod world;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cucumber::event::ScenarioFinished;
use cucumber::writer::{self, Coloring, Stats as _};
use cucumber::{World as _, WriterExt as _};
use futures::FutureExt as _;

use crate::api::Api;
use crate::contracts::EventContracts;
use crate::engine::State;
use crate::error::{Error, Result};
use crate::providers::AdminClient;
use crate::sandbox::Home;
use crate::target::Target;
use crate::topics::Topics;
pub use world::BankWorld;

/// The providers the scenarios steer, as the topology names them.
pub const PROVIDERS: [&str; 3] = ["payment-scheme", "card-acquirer", "screening-vendor"];

/// What every scenario shares: the sandbox, its API, one Kafka reader.
pub struct Context {
    pub target: Target,
    pub api: Api,
    pub topics: Topics,
    /// (service, URL) of every event log published to Kafka.
    sources: Vec<(String, String)>,
    /// Per event log, the cursor up to which an audit found every event on Kafka.
    audited: Mutex<BTreeMap<String, i64>>,
    /// The schema of every event type, and how many of the events read from
    /// Kafka were checked against theirs.
    contracts: EventContracts,
    checked: Mutex<usize>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("sandbox", &self.target.name).finish_non_exhaustive()
    }
}

impl Context {
    pub async fn connect(target: Target) -> Result<Self> {
        let api = Api::new(target.gateway()?)?.checking_answers().await?;
        let topics = Topics::start(target.brokers()?).await?;
        let mut sources = Vec::new();
        for topic in topics.topics() {
            let service = topic.trim_end_matches(".events");
            sources.push((service.to_string(), target.url(service)?.to_string()));
        }
        let contracts = EventContracts::new().map_err(Error::Check)?;
        Ok(Self { target, api, topics, sources, audited: Mutex::default(), contracts, checked: Mutex::default() })
    }

    /// How many of the events read from Kafka were checked against their contracts.
    pub fn events_checked(&self) -> usize {
        *self.checked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many of the answers the bank gave were checked against its OpenAPI document.
    pub fn answers_checked(&self) -> usize {
        self.api.answers_checked()
    }

    /// Every event read from Kafka since the last call, checked against the
    /// schema of its type, and every answer the bank gave, checked against
    /// its OpenAPI document: a line for each one that breaks its contract.
    pub fn check_contracts(&self) -> Vec<String> {
        let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        let (seen, now) = self.topics.since(*checked);
        *checked = now;
        let events = seen.iter().filter_map(|s| self.contracts.check(&s.topic, &s.event).err());
        events.chain(self.api.broken_answers()).collect()
    }

    fn audited(&self, source: &str) -> i64 {
        self.audited.lock().unwrap_or_else(|e| e.into_inner()).get(source).copied().unwrap_or(0)
    }

    fn set_audited(&self, source: &str, cursor: i64) {
        let mut audited = self.audited.lock().unwrap_or_else(|e| e.into_inner());
        let at = audited.entry(source.to_string()).or_default();
        *at = (*at).max(cursor);
    }

    pub fn provider(&self, name: &str) -> Result<AdminClient> {
        self.target.provider(name)
    }

    pub fn providers(&self) -> Vec<(String, AdminClient)> {
        PROVIDERS.iter().filter_map(|p| self.provider(p).ok().map(|c| (p.to_string(), c))).collect()
    }
}

/// `i/n`: run the `i`-th of `n` slices of the suite (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("shard `{s}` is not i/n with 1 <= i <= n (e.g. 2/4)");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (i.trim().parse::<u32>().map_err(|_| bad())?, n.trim().parse::<u32>().map_err(|_| bad())?);
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl Shard {
    /// Whether this shard runs the scenario: by a stable hash of where it is,
    /// so every runner agrees without talking to the others.
    pub fn takes(&self, feature: &str, scenario: &str) -> bool {
        // FNV-1a: stable across processes and builds, unlike std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in feature.bytes().chain([0]).chain(scenario.bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        (h % u64::from(self.count)) as u32 == self.index - 1
    }
}

/// Where the suite runs and which part of it.
#[derive(Debug, Clone)]
pub struct Options {
    pub workspace: PathBuf,
    pub home: Home,
    /// Attach to this running sandbox instead of starting one.
    pub sandbox: Option<String>,
    /// Feature files to run; all of `scenarios/` when empty.
    pub features: Vec<PathBuf>,
    /// A tag expression (`@payments and not @serial`).
    pub tags: Option<String>,
    /// Only scenarios whose name contains this.
    pub name: Option<String>,
    pub shard: Option<Shard>,
    /// Where the JUnit report goes.
    pub junit: PathBuf,
    /// Scenarios in flight at once.
    pub concurrency: usize,
    /// The `sandbox` binary, for a sandbox this run starts.
    pub sandbox_bin: PathBuf,
    /// What runs the sandbox this run starts.
    pub backend: crate::backend::Kind,
    /// Cucumber's report of each scenario goes to stderr instead of stdout,
    /// for a caller whose stdout is its own (a bench's tables).
    pub report_to_stderr: bool,
}

impl Options {
    pub fn new(workspace: &Path, sandbox_bin: &Path) -> Self {
        Self {
            sandbox_bin: sandbox_bin.to_path_buf(),
            workspace: workspace.to_path_buf(),
            home: Home::from_env(),
            sandbox: None,
            features: Vec::new(),
            tags: None,
            name: None,
            shard: None,
            junit: workspace.join("target/cucumber/junit.xml"),
            concurrency: 16,
            backend: crate::backend::Kind::Local,
            report_to_stderr: false,
        }
    }
}

/// How the run went, for the caller's exit code and the benchmark.
#[derive(Debug, Clone)]
pub struct Summary {
    pub scenarios: usize,
    pub failed: bool,
    pub start_up: Duration,
    pub running: Duration,
    pub teardown: Duration,
    /// Events read from Kafka during the run, each checked against the
    /// schema of its type.
    pub events_checked: usize,
    /// The bank's answers during the run, each checked against its OpenAPI document.
    pub answers_checked: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = self.scenarios as f64 / self.running.as_secs_f64().max(0.001);
        write!(
            f,
            "e2e: {} scenarios {} in {:.1} s (start-up {:.1} s, scenarios {:.1} s at {rate:.1}/s, teardown {:.1} s); \
             {} events and {} answers checked against their contracts",
            self.scenarios,
            if self.failed { "FAILED" } else { "passed" },
            (self.start_up + self.running + self.teardown).as_secs_f64(),
            self.start_up.as_secs_f64(),
            self.running.as_secs_f64(),
            self.teardown.as_secs_f64(),
            self.events_checked,
            self.answers_checked,
        )
    }
}

/// Run the suite. `Err` only when it could not run at all (no sandbox, bad
/// options); failing scenarios give `Ok` with `failed` set.
pub async fn run(opts: Options) -> Result<Summary> {
    let tags = opts
        .tags
        .as_deref()
        .map(|t| {
            t.parse::<cucumber::gherkin::tagexpr::TagOperation>().map_err(|e| {
                Error::Usage(format!("--tags `{t}` is not a tag expression ({e}); e.g. `@payments and not @serial`"))
            })
        })
        .transpose()?;
    let scenarios = opts.workspace.join("scenarios");
    let root = std::fs::canonicalize(&scenarios).map_err(Error::io(format!("{}", scenarios.display())))?;
    let mut selection = select::Selection { name: opts.name.clone(), shard: opts.shard, tags, ..Default::default() };
    for f in &opts.features {
        let path = std::fs::canonicalize(f).ok().filter(|p| p.starts_with(&root) && p.is_file()).ok_or_else(|| {
            Error::Usage(format!("{} is not a feature file under {}", f.display(), scenarios.display()))
        })?;
        selection.features.push(path);
    }

    // A failed run's logs (below) are this run's or none: not an earlier run's.
    let kept_logs = opts.junit.with_file_name("sandbox.log");
    let _ = std::fs::remove_file(&kept_logs);
    let started = Instant::now();
    let (target, owned) = match &opts.sandbox {
        Some(name) => (Target::attach(&opts.home, Some(name)).await?, None),
        None => {
            let owned = Ephemeral::start(&opts).await?;
            (owned.target.clone(), Some(owned))
        }
    };
    let outcome = match Context::connect(target.clone()).await {
        Ok(ctx) => {
            let start_up = started.elapsed();
            let running = Instant::now();
            let ctx = Arc::new(ctx);
            let (scenarios, failed) = run_cucumber(ctx.clone(), &opts, &scenarios, selection).await;
            Ok((start_up, running.elapsed(), scenarios, failed, (ctx.events_checked(), ctx.answers_checked())))
        }
        Err(e) => Err(e),
    };
    // A sandbox of the run's own goes with the run: what its components said
    // is kept first when a scenario failed, for the cause.
    if owned.is_some() && outcome.as_ref().is_ok_and(|o| o.3) {
        keep_logs(&target, &kept_logs).await;
    }
    let stopping = Instant::now();
    let stopped = match owned {
        Some(o) => o.stop().await,
        None => Ok(()),
    };
    let (start_up, running, scenarios, failed, (events_checked, answers_checked)) = outcome?;
    stopped?;
    Ok(Summary { scenarios, failed, start_up, running, teardown: stopping.elapsed(), events_checked, answers_checked })
}

async fn run_cucumber(
    ctx: Arc<Context>,
    opts: &Options,
    scenarios: &Path,
    selection: select::Selection,
) -> (usize, bool) {
    if let Some(dir) = opts.junit.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let junit = match std::fs::File::create(&opts.junit) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot write the JUnit report to {}: {e}", opts.junit.display());
            return (0, true);
        }
    };
    let finished = Arc::new(AtomicUsize::new(0));
    let counted = finished.clone();
    let before_ctx = ctx.clone();
    // The whole selection, tags included, is the filter below: given a tag
    // expression, cucumber would apply it instead of the filter, and a shard
    // or a name would be ignored.
    let cli: cucumber::cli::Opts<_, _, _, cucumber::cli::Empty> = cucumber::cli::Opts {
        re_filter: None,
        tags_filter: None,
        parser: Default::default(),
        runner: Default::default(),
        writer: Default::default(),
        custom: Default::default(),
    };
    let console: Box<dyn std::io::Write> =
        if opts.report_to_stderr { Box::new(std::io::stderr()) } else { Box::new(std::io::stdout()) };
    let writer = writer::Basic::raw(console, Coloring::Auto, 0)
        .summarized()
        .tee::<BankWorld, _>(writer::JUnit::for_tee(junit, 0))
        .normalized();
    let after_ctx = ctx.clone();
    let result = BankWorld::cucumber()
        .with_writer(writer)
        .fail_on_skipped()
        .max_concurrent_scenarios(opts.concurrency.max(1))
        .before(move |_, _, _, world| {
            world.attach(before_ctx.clone());
            async {}.boxed_local()
        })
        .after(move |_, _, _, finished, world| {
            counted.fetch_add(1, Ordering::Relaxed);
            let passed = matches!(finished, ScenarioFinished::StepPassed);
            async move {
                let Some(world) = world else { return };
                let cleanup = steps::clean_up(world).await;
                if passed {
                    let mut problems = audit::audit(world).await;
                    problems.extend(cleanup);
                    if !problems.is_empty() {
                        let trail = world.trail().await;
                        panic!(
                            "the bank's invariants do not hold after this scenario:\n  {}\n{trail}",
                            problems.join("\n  ")
                        );
                    }
                } else if !cleanup.is_empty() {
                    eprintln!("cleaning up after a failed scenario: {}", cleanup.join("; "));
                }
            }
            .boxed_local()
        })
        .with_cli(cli)
        .filter_run(scenarios.to_path_buf(), move |feature, rule, scenario| selection.takes(feature, rule, scenario))
        .await;
    // What arrived after the last scenario's audit is held to its contract too.
    let broken = after_ctx.check_contracts();
    for b in &broken {
        eprintln!("an event breaks its contract: {b}");
    }
    let failed =
        result.execution_has_failed() || result.parsing_errors() > 0 || result.hook_errors() > 0 || !broken.is_empty();
    (finished.load(Ordering::Relaxed), failed)
}

/// Write every log line the sandbox still holds to `path` (oldest first, one
/// `time component stream | text` line each) and print its errors, so that a
/// failed run's cause outlives its sandbox.
async fn keep_logs(target: &Target, path: &Path) {
    use futures::StreamExt as _;
    let lines: Vec<crate::logs::LogLine> = match target.control.logs(None, false, usize::MAX).await {
        Ok(stream) => stream.filter_map(|l| async move { l.ok() }).collect().await,
        Err(e) => {
            eprintln!("cannot read the sandbox's logs to keep them: {e}");
            return;
        }
    };
    let first = lines.first().map_or(0, |l| l.at);
    let mut text = String::new();
    let mut errors = Vec::new();
    for l in &lines {
        let at = format!("+{:.3}s", l.at.saturating_sub(first) as f64 / 1000.0);
        text.push_str(&format!("{at} {} {} | {}\n", l.component, l.stream, l.text));
        if crate::logs::level_of(&l.text) == 3 {
            errors.push(format!("{at} {}: {}", l.component, crate::logs::render_log(&l.text)));
        }
    }
    let written = crate::files::create_no_follow(path, 0o600)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
    if let Err(e) = written {
        eprintln!("cannot keep the sandbox's logs in {}: {e}", path.display());
        return;
    }
    eprintln!(
        "the run failed: the sandbox's last {} log lines are kept in {} ({} errors{})",
        lines.len(),
        path.display(),
        errors.len(),
        if errors.is_empty() { "" } else { ", below" }
    );
    for e in errors.iter().take(40) {
        eprintln!("  {e}");
    }
}

/// A sandbox started for this run only, stopped (and its directory removed)
/// when the run ends, whatever happened.
struct Ephemeral {
    target: Target,
    sandbox: crate::start::Sandbox,
}

/// Start-up progress on stderr, as `sandbox up` shows it.
struct Forward;

impl crate::supervisor::Observer for Forward {
    fn changed(&mut self, prev: Option<&State>, next: &State) {
        for line in crate::progress::transitions(prev, next) {
            eprintln!("  {line}");
        }
    }
}

impl Ephemeral {
    async fn start(opts: &Options) -> Result<Self> {
        let name = format!("e2e-{}", std::process::id());
        eprintln!("starting sandbox {name} for the e2e run");
        let mut start = crate::start::Options::new(&opts.workspace, &opts.sandbox_bin);
        start.name = Some(name);
        start.home = opts.home.clone();
        start.backend = opts.backend;
        let sandbox = crate::start::Sandbox::start_observed(start, Forward).await?;
        Ok(Self { target: sandbox.target()?.clone(), sandbox })
    }

    async fn stop(self) -> Result<()> {
        self.sandbox.stop().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every step of every scenario (outlines expanded) has exactly one
    /// definition: caught here in a second, not after a sandbox started.
    #[test]
    fn every_step_in_the_scenarios_has_exactly_one_definition() {
        use cucumber::gherkin::{Feature, GherkinEnv, Step};
        let steps = BankWorld::collection();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut problems = Vec::new();
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "feature") {
                continue;
            }
            let feature = Feature::parse_path(&path, GherkinEnv::default()).unwrap();
            let background: Vec<Step> = feature.background.iter().flat_map(|b| b.steps.clone()).collect();
            for scenario in &feature.scenarios {
                // One run per example row, with its values in place of `<name>`.
                let mut rows: Vec<Vec<(String, String)>> = Vec::new();
                for examples in &scenario.examples {
                    let table = examples.table.as_ref().unwrap();
                    let header = &table.rows[0];
                    rows.extend(
                        table.rows[1..].iter().map(|r| header.iter().cloned().zip(r.iter().cloned()).collect()),
                    );
                }
                if rows.is_empty() {
                    rows.push(Vec::new());
                }
                for row in &rows {
                    for step in background.iter().chain(&scenario.steps) {
                        let mut step = step.clone();
                        for (k, v) in row {
                            step.value = step.value.replace(&format!("<{k}>"), v);
                        }
                        checked += 1;
                        match steps.find(&step) {
                            Ok(Some(_)) => {}
                            Ok(None) => {
                                problems.push(format!("{}: undefined: {} {}", path.display(), step.keyword, step.value))
                            }
                            Err(e) => problems.push(format!("{}: ambiguous: {}: {e}", path.display(), step.value)),
                        }
                    }
                }
            }
        }
        assert!(checked > 100, "only {checked} steps found under {}", dir.display());
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn shards_split_the_suite_without_overlap_or_gaps() {
        let shards: Vec<Shard> = (1..=3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        for n in 0..60 {
            let name = format!("scenario {n}");
            let takers = shards.iter().filter(|s| s.takes("Payments", &name)).count();
            assert_eq!(takers, 1, "{name} must run on exactly one shard");
        }
        assert!("0/3".parse::<Shard>().is_err());
        assert!("4/3".parse::<Shard>().is_err());
        assert!("two".parse::<Shard>().is_err());
    }
}

/// The test target's arguments (`cargo test --features e2e -- ...`).
#[derive(Debug, clap::Parser)]
#[command(name = "e2e", about = "The bank's Gherkin scenarios against a fresh sandbox (or a running one)")]
pub struct Args {
    /// Only scenarios whose name contains this (as libtest's filter).
    pub filter: Option<String>,
    /// A tag expression, e.g. `@payments and not @serial`.
    #[arg(long, env = "SANDBOX_E2E_TAGS")]
    pub tags: Option<String>,
    /// Run the i-th of n slices of the suite, e.g. 2/4.
    #[arg(long, env = "SANDBOX_E2E_SHARD")]
    pub shard: Option<Shard>,
    /// Run against this running sandbox instead of starting one.
    #[arg(long, env = "SANDBOX_E2E_SANDBOX")]
    pub sandbox: Option<String>,
    /// The backend of the sandbox the run starts.
    #[arg(long, env = "SANDBOX_E2E_BACKEND", value_enum, default_value_t)]
    pub backend: crate::backend::Kind,
    /// Scenarios in flight at once.
    #[arg(long, env = "SANDBOX_E2E_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Where the JUnit report goes [default: target/cucumber/junit.xml].
    #[arg(long, env = "SANDBOX_E2E_JUNIT")]
    pub junit: Option<PathBuf>,
    // libtest's flags, which `cargo test -- ...` hands every test binary:
    // accepted so that one command line serves the whole workspace.
    #[arg(long, hide = true)]
    nocapture: bool,
    #[arg(long, hide = true)]
    test_threads: Option<usize>,
    #[arg(long, short = 'q', hide = true)]
    quiet: bool,
    #[arg(long, hide = true)]
    color: Option<String>,
    // cargo-nextest runs the one test this binary is as `<name> --exact`.
    #[arg(long, hide = true)]
    exact: bool,
}

/// The name the suite has as one test of a runner (cargo-nextest): it runs
/// every selected scenario against one sandbox, which is what makes it fast.
pub const TEST_NAME: &str = "scenarios";

/// cargo-nextest's listing of a custom test binary that is one test, `name`
/// (its "custom test harnesses" rules): when `args` ask for it (`--list
/// --format terse [--ignored]`), it is printed and `true` returned. The one
/// test is then run as `<name> --exact`.
pub fn answered_listing(args: &[String], name: &str) -> bool {
    let flag = |f: &str| args.iter().any(|a| a == f);
    if !flag("--list") {
        return false;
    }
    if !flag("--ignored") {
        println!("{name}: test");
    }
    true
}

/// The test target's `main`: run the suite, print where the time went, and
/// exit non-zero when a scenario failed or the suite could not run.
pub fn main(sandbox_bin: &Path) -> std::process::ExitCode {
    use clap::Parser as _;
    if answered_listing(&std::env::args().collect::<Vec<_>>(), TEST_NAME) {
        return std::process::ExitCode::SUCCESS;
    }
    let mut args = Args::parse();
    if args.exact && args.filter.as_deref() == Some(TEST_NAME) {
        args.filter = None;
    }
    let Some(workspace) = std::env::current_dir().ok().and_then(|d| crate::find_workspace(&d)) else {
        eprintln!("e2e: not inside the bank-sandbox workspace (no compose/bank.yaml above this directory)");
        return std::process::ExitCode::FAILURE;
    };
    let mut opts = Options::new(&workspace, sandbox_bin);
    opts.backend = args.backend;
    opts.sandbox = args.sandbox;
    opts.tags = args.tags;
    opts.name = args.filter;
    opts.shard = args.shard;
    opts.concurrency = args.concurrency;
    if let Some(j) = args.junit {
        opts.junit = j;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("e2e: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let junit = opts.junit.clone();
    match runtime.block_on(run(opts)) {
        Ok(summary) => {
            eprintln!("{summary}\nJUnit report: {}", junit.display());
            if summary.failed { std::process::ExitCode::FAILURE } else { std::process::ExitCode::SUCCESS }
        }
        Err(e) => {
            eprintln!("e2e: the suite could not run: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
