//! `sandbox`: the bank on a laptop. Parses arguments and calls the harness library.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use harness::backend::Kind;
use harness::engine::{Phase, State};
use harness::sandbox::{Home, Record};
use harness::start::Sandbox;
use harness::{control, progress, sandbox, supervisor};

/// Print to stdout. A reader that went away (`sandbox status | head -1`) ends
/// the command quietly with success, as any Unix tool does, instead of the
/// panic `println!` gives.
macro_rules! out {
    ($($arg:tt)*) => { write_out(format_args!($($arg)*), false) };
}

/// [`out!`] with a newline.
macro_rules! outln {
    () => { write_out(format_args!(""), true) };
    ($($arg:tt)*) => { write_out(format_args!($($arg)*), true) };
}

fn write_out(args: std::fmt::Arguments, newline: bool) {
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| if newline { out.write_all(b"\n") } else { Ok(()) });
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

mod tui;

#[derive(Debug, Parser)]
#[command(name = "sandbox", version, about = "The whole bank on your machine: private, ephemeral, up in seconds.")]
struct Cli {
    /// Where sandboxes keep their state [default: $SANDBOX_HOME or /tmp/bank-sandbox-<uid>]
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum BenchWhat {
    /// `up` and `down` times and the whole sandbox's memory.
    Up {
        /// Warm runs to measure.
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// A new engineer's first minutes: `cargo sandbox up --detach` in a fresh clone
    /// of this workspace, empty target directory, to every component healthy.
    Clone,
    /// The README's test command (or another), warm: wall time and the whole
    /// machine's CPU per run, and whether it passed.
    Tests {
        /// Warm runs to measure, after a first one that builds what is stale.
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// The command to measure, run by bash in the workspace.
        #[arg(long, default_value = "cargo nextest run --workspace --features e2e")]
        command: String,
    },
    /// The Gherkin suite against a fresh sandbox, start to teardown, and scenarios/s.
    E2e {
        /// Whole runs to measure; every one runs, and a failed one is counted.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// What runs the sandboxes.
        #[arg(long, value_enum, default_value_t)]
        backend: harness::backend::Kind,
    },
    /// Image builds (cold, warm, after a bank change), image sizes, and plain
    /// `docker-compose up -d` to every container healthy on the images built here.
    Images {
        /// `docker-compose up` runs to measure.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// The Docker backend, plain `docker-compose` and the local backend side by side on
    /// the same files and images: time to all healthy, `down`, memory, the Gherkin suite.
    Backends {
        /// Runs of each to measure.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Starting the whole bank from code to every component healthy, and removing it:
    /// the library's start on each backend, the bank-in-a-box, `up --backend docker`.
    Start {
        /// Runs of each to measure.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// The dashboard's CPU and memory, idle and under a stream of log lines, and key-to-redraw time.
    Tui {
        /// Log lines a second to drive through the sandbox while measuring.
        #[arg(long, default_value_t = 2000)]
        rate: u32,
        /// How long each measurement lasts.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Payment and alert latency, sustained payments/s, and an audit of postings.
    Flows {
        /// Sequential payments for the latency figures.
        #[arg(long, default_value_t = 200)]
        payments: usize,
        /// Concurrent payers for the throughput figure.
        #[arg(long, default_value_t = 16)]
        workers: usize,
        /// How long to send payments for the throughput figure.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Pace the payers to this many payments a second together, so the
        /// latency is measured at a given load; by default each sends its next
        /// payment as soon as the last is accepted (the bank's capacity).
        #[arg(long, value_parser = positive_rate)]
        rate: Option<f64>,
    },
}

/// A `--rate`: a positive number of payments a second.
fn positive_rate(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("`{s}` is not a rate: give payments a second, a number above 0 (e.g. 150)")),
    }
}

#[derive(Debug, Subcommand)]
enum ImagesWhat {
    /// Build every image the topology needs (base, postgres, bank, sandbox) from this
    /// workspace and Debian's packages; an image whose inputs did not change is skipped.
    Build,
    /// Remove the images `build` made.
    Rm,
}

#[derive(Debug, Subcommand)]
enum ContractsWhat {
    /// Every event type on Kafka: its topic, its Rust type and its payload's JSON Schema
    /// (2020-12), as one JSON document. Each service serves its own at
    /// `/contracts/events`; the gateway serves all of them.
    Events {
        /// Only the events of this topic, e.g. payments.events.
        #[arg(long)]
        topic: Option<String>,
    },
    /// The providers' APIs as the bank uses them (the scheme, the acquirer, the screening
    /// vendor): each operation's request and answer schemas, and the webhooks they send.
    /// The sandbox's provider mocks refuse a request that does not match (400, naming it).
    Providers,
}

#[derive(Debug, Subcommand)]
enum BoxWhat {
    /// Run the whole bank behind the box's fixed ports until stopped.
    Run {
        /// PostgreSQL's superuser password (required, as the official image requires it).
        #[arg(long, env = "POSTGRES_PASSWORD", hide_env_values = true)]
        postgres_password: Option<String>,
        /// What Kafka clients are told until `box advertise` [default: <hostname>:9092]
        #[arg(long, env = "KAFKA_ADVERTISED")]
        advertise: Option<String>,
        /// The workspace the box runs (its topology and fixtures).
        #[arg(long, env = "SANDBOX_WORKSPACE", default_value = harness::inabox::WORKSPACE)]
        workspace: PathBuf,
    },
    /// Make PostgreSQL's cluster template in the box's home (when the image is built),
    /// so that its first start copies it instead of running initdb.
    Prepare,
    /// Exit 0 while every component is healthy.
    Health,
    /// Tell Kafka clients the broker is at HOST:PORT (the host's port mapped to 9092).
    Advertise { to: String },
}

#[derive(Debug, Subcommand)]
enum NewWhat {
    /// A service of the bank from the service template, wired into the `bank` binary,
    /// compose/bank.yaml (database, gateway route, connector source), the API tests and
    /// the scenarios. Nothing is written unless all of it can be.
    Service {
        /// Its name: a Rust module and a DNS label (a-z, 0-9), e.g. roundups
        name: String,
        /// An event it consumes, e.g. payments.events:payment.completed (repeatable)
        #[arg(long, value_name = "TOPIC:EVENT_TYPE")]
        consumes: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bring the bank up. In the foreground Ctrl-C tears it down; with --detach it
    /// keeps running until `sandbox down`.
    Up {
        /// Sandbox name [default: <user>-<short id>]
        #[arg(long)]
        name: Option<String>,
        /// Return once every component is healthy and leave the sandbox running.
        #[arg(short, long)]
        detach: bool,
        /// The topology; repeat to add Compose override files, e.g.
        /// `-f compose/bank.yaml -f compose/local-images.yaml` [default: compose/bank.yaml in this
        /// workspace; with `--backend docker`, compose/local-images.yaml too]
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Vec<PathBuf>,
        /// What runs the components.
        #[arg(long, env = "SANDBOX_BACKEND", value_enum, default_value_t)]
        backend: Kind,
    },
    /// Stop a sandbox and remove everything it made.
    Down {
        /// The sandbox [default: the only one running]
        name: Option<String>,
    },
    /// Show a sandbox's components: status, pid, restarts, URL.
    Status {
        name: Option<String>,
        /// Print the state as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List every sandbox on this machine.
    Ls,
    /// Print a component's log (`all` for every component, interleaved).
    Logs {
        component: String,
        /// Keep printing new lines until interrupted.
        #[arg(short, long)]
        follow: bool,
        /// How many past lines to print first.
        #[arg(long, default_value_t = 200)]
        tail: usize,
        /// The sandbox [default: the only one running]
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove sandboxes whose owner process died, with whatever they left running.
    Prune,
    /// Restart a component (gracefully); returns once it is healthy again.
    Restart {
        component: String,
        /// The sandbox [default: the only one running]
        #[arg(long)]
        name: Option<String>,
    },
    /// Kill a component as a crash would; its restart policy (`restart:`) or `restart` brings it back.
    Kill {
        component: String,
        /// The sandbox [default: the only one running]
        #[arg(long)]
        name: Option<String>,
    },
    /// Stop a component gracefully; it stays down (its restart policy does not answer
    /// a stop) until `restart`.
    Stop {
        component: String,
        /// The sandbox [default: the only one running]
        #[arg(long)]
        name: Option<String>,
    },
    /// Open the dashboard on a running sandbox (quitting leaves it running).
    Tui {
        /// The sandbox [default: the only one running]
        name: Option<String>,
    },
    /// Run the Gherkin scenarios against a running sandbox.
    Test {
        /// Feature files to run [default: every file under scenarios/]
        features: Vec<PathBuf>,
        /// A tag expression, e.g. `@payments and not @serial`.
        #[arg(short, long)]
        tags: Option<String>,
        /// Run the i-th of n slices of the suite, e.g. 2/4.
        #[arg(long)]
        shard: Option<harness::e2e::Shard>,
        /// Scenarios in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Where the JUnit report goes [default: target/cucumber/junit.xml]
        #[arg(long)]
        junit: Option<PathBuf>,
        /// The sandbox [default: the only one running]
        #[arg(long)]
        name: Option<String>,
    },
    /// Container images for the Docker backend and plain Compose, made on this machine.
    Images {
        #[command(subcommand)]
        what: ImagesWhat,
    },
    /// The bank's published contracts: `contracts events` prints every event type on
    /// Kafka with its topic and the JSON Schema of its payload.
    Contracts {
        #[command(subcommand)]
        what: ContractsWhat,
    },
    /// Fuzz the bank's HTTP contract: schemathesis (pinned, installed into a virtual
    /// environment when missing) against a fresh sandbox through the gateway's OpenAPI
    /// document, then an audit of the books and of what refused requests changed.
    /// Fails on a 5xx, an undocumented status, an answer off its schema, a broken
    /// invariant or a refusal that changed something.
    Fuzz {
        /// Test cases per operation and phase, at most.
        #[arg(long, default_value_t = 50)]
        examples: u32,
        /// Fewer requests than this, and the run fails: too little was tried.
        #[arg(long, default_value_t = 2000)]
        min_requests: u64,
        /// Schemathesis' random seed, to repeat a run.
        #[arg(long)]
        seed: Option<u64>,
        /// What runs the sandbox.
        #[arg(long, env = "SANDBOX_BACKEND", value_enum, default_value_t)]
        backend: Kind,
    },
    /// Generate something new in the workspace from its template: `new service NAME`.
    New {
        #[command(subcommand)]
        what: NewWhat,
    },
    /// Measure the sandbox and the bank (prints Markdown for docs/PERFORMANCE.md).
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// (internal) Own a detached sandbox: what `up --detach` runs in the background.
    #[command(hide = true)]
    Supervise {
        #[arg(long)]
        name: String,
        #[arg(long, required = true)]
        file: Vec<PathBuf>,
        /// Only these services and what they depend on.
        #[arg(long)]
        only: Vec<String>,
        /// The local backend's PostgreSQL password [default: random].
        #[arg(long, env = "SANDBOX_POSTGRES_PASSWORD", hide_env_values = true)]
        postgres_password: Option<String>,
        #[arg(long)]
        workspace: PathBuf,
        #[arg(long, value_enum)]
        backend: Kind,
        /// The starter's Unix socket: where to say, once, where the control API listens.
        #[arg(long)]
        announce: Option<PathBuf>,
    },
    /// (internal) Run a mocked provider from its definition.
    #[command(hide = true)]
    Provider {
        #[arg(long)]
        spec: PathBuf,
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
    /// (internal) Run the embedded Kafka-protocol broker.
    #[command(hide = true)]
    Broker {
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// host:port clients are told to connect to [default: the listen address]
        #[arg(long)]
        advertise: Option<String>,
    },
    /// (internal) The bank-in-a-box image: its entrypoint (`box run`), its health
    /// check (`box health`) and its starter's word on the host's Kafka port
    /// (`box advertise HOST:PORT`).
    #[command(hide = true, name = "box")]
    InABox {
        #[command(subcommand)]
        what: BoxWhat,
    },
    /// (internal) A container's healthcheck: exit 0 when an http:// URL answers 2xx
    /// or a tcp:// address accepts a connection.
    #[command(hide = true)]
    Probe { url: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // Not eprintln!: with stderr on a full disk, it would panic.
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let home = cli.home.map(|root| Home { root }).unwrap_or_else(Home::from_env);
    // Nothing is read from, or written to, a home another user could write in;
    // the contracts are printed from the binary alone, so any home will do.
    if !matches!(cli.command, Command::Contracts { .. }) {
        home.check()?;
    }
    match cli.command {
        Command::Up { name, detach, file, backend } => {
            let workspace = workspace()?;
            let file = if file.is_empty() { harness::default_topology(&workspace, backend) } else { file };
            let name = name.unwrap_or_else(sandbox::default_name);
            sandbox::validate_name(&name)?;
            if detach {
                up_detached(home, name, file, workspace, backend).await
            } else {
                up_foreground(home, name, file, workspace, backend).await
            }
        }
        Command::Down { name } => down(&home, name.as_deref()).await,
        Command::Tui { name } => {
            let record = home.resolve(name.as_deref())?;
            tui::run(live_client(&record)?, &record.name, false, &home).await?;
            outln!("sandbox {} is still running; `sandbox down {}` stops it", record.name, record.name);
            Ok(ExitCode::SUCCESS)
        }
        Command::Restart { component, name } => {
            let record = home.resolve(name.as_deref())?;
            let c = live_client(&record)?.restart(&component).await?;
            outln!(
                "{component} restarted: {} ({})",
                c.status.label(),
                c.id.as_ref().map_or("not running".into(), ToString::to_string)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Stop { component, name } => {
            let record = home.resolve(name.as_deref())?;
            let c = live_client(&record)?.stop(&component).await?;
            outln!("{component} stopped: {}; `sandbox restart {component}` starts it again", c.status.label());
            Ok(ExitCode::SUCCESS)
        }
        Command::Kill { component, name } => {
            let record = home.resolve(name.as_deref())?;
            let c = live_client(&record)?.kill(&component).await?;
            outln!(
                "{component} killed: {}; its restart policy, if it has one, starts it again, else `sandbox restart {component}`",
                c.status.label()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { features, tags, shard, concurrency, junit, name } => {
            let workspace = workspace()?;
            let record = home.resolve(name.as_deref())?;
            let mut opts = harness::e2e::Options::new(&workspace, &std::env::current_exe()?);
            opts.home = home;
            opts.sandbox = Some(record.name);
            opts.features = features;
            opts.tags = tags;
            opts.shard = shard;
            opts.concurrency = concurrency;
            if let Some(j) = junit {
                opts.junit = j;
            }
            let summary = harness::e2e::run(opts).await?;
            eprintln!("{summary}");
            Ok(if summary.failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Status { name, json } => {
            let record = home.resolve(name.as_deref())?;
            let state = live_client(&record)?.state().await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&state)?);
            } else {
                out!("{}", progress::table(&state));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls => {
            outln!("{:<28} {:<8} {:<8} {:<8} DIR", "NAME", "STATE", "BACKEND", "PID");
            for (name, record) in home.list() {
                match record {
                    Some(r) => {
                        let state = if r.owner_alive() { "running" } else { "dead" };
                        outln!("{:<28} {:<8} {:<8} {:<8} {}", name, state, r.backend, r.pid, r.dir.display());
                    }
                    None => {
                        outln!("{:<28} {:<8} {:<8} {:<8} {}", name, "unknown", "-", "-", home.dir(&name).display())
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Logs { component, follow, tail, name } => {
            let record = home.resolve(name.as_deref())?;
            let client = live_client(&record)?;
            let which = (component != "all").then_some(component.as_str());
            let mut lines = Box::pin(client.logs(which, follow, tail).await?);
            let mut out = std::io::stdout().lock();
            while let Some(line) = lines.next().await {
                let line = line?;
                let written = if which.is_some() {
                    writeln!(out, "{}", line.text)
                } else {
                    writeln!(out, "{:<12} | {}", line.component, line.text)
                };
                if written.is_err() {
                    break; // stdout closed (e.g. piped into head)
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Prune => {
            let mut removed = 0;
            for (name, record) in home.list() {
                let dead = record.as_ref().is_none_or(|r| !r.owner_alive());
                // A directory without a record may be a sandbox still starting: leave
                // it unless it is old enough that its start must have failed.
                let stale_unrecorded = record.is_none() && age(&home.dir(&name)) > Duration::from_secs(120);
                if (record.is_some() && dead) || stale_unrecorded {
                    let killed = sandbox::remove_dead(&home.dir(&name)).await?;
                    outln!(
                        "removed {name}{}",
                        if killed.is_empty() { String::new() } else { format!(" ({})", killed.join(", ")) }
                    );
                    removed += 1;
                }
            }
            // Containers, networks and volumes of Docker sandboxes whose directory
            // is gone too (found by label); nothing to do without an engine.
            if let Ok(docker) = harness::backend::docker::connect().await {
                for object in harness::backend::docker::sweep_orphans(&docker, &home, None).await? {
                    outln!("removed {object}");
                    removed += 1;
                }
            }
            for log in home.stale_logs() {
                if std::fs::remove_file(&log).is_ok() {
                    outln!("removed {}", log.display());
                    removed += 1;
                }
            }
            if removed == 0 {
                outln!("nothing to prune");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::New { what: NewWhat::Service { name, consumes } } => {
            let workspace = workspace()?;
            let plan = harness::scaffold::plan(&workspace, &name, &consumes)?;
            plan.apply(&workspace)?;
            for change in &plan.changes {
                let verb = if change.before.is_some() { "changed" } else { "created" };
                outln!("{verb:<8} {}", change.path.display());
            }
            outln!(
                "\nservice `{name}` is part of the bank. Next:\n  cargo test -p bank --test api {name}      # its API tests\n  \
                 cargo sandbox up                         # the whole bank, {name} in it\n  \
                 cargo sandbox test scenarios/{name}.feature   # its scenario, against the running sandbox\n\
                 docs/ONBOARDING.md walks through the rest."
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Contracts { what: ContractsWhat::Events { topic } } => {
            let doc = wire::payloads::contracts(topic.as_deref());
            if let Some(t) = &topic
                && doc["events"].as_array().is_none_or(Vec::is_empty)
            {
                let mut topics: Vec<&str> = wire::payloads::CATALOGUE.iter().map(|p| p.topic).collect();
                topics.dedup();
                anyhow::bail!("no events are published to `{t}`; the topics are: {}", topics.join(", "));
            }
            outln!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Contracts { what: ContractsWhat::Providers } => {
            outln!("{}", serde_json::to_string_pretty(&wire::providers::contracts())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Images { what } => {
            let workspace = workspace()?;
            let opts = harness::images::Options::new(&workspace, &home.root);
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                match what {
                    ImagesWhat::Build => {
                        let report = harness::images::build(&opts, &mut |line| eprintln!("{line}"))?;
                        out!("{}", report.table());
                        outln!("{} image(s) built in {:.1}s", report.built().len(), report.took.as_secs_f64());
                    }
                    ImagesWhat::Rm => {
                        let removed = harness::images::remove_all(&opts)?;
                        if removed.is_empty() {
                            outln!("no images to remove");
                        }
                        for tag in removed {
                            outln!("removed {tag}");
                        }
                    }
                }
                Ok(())
            })
            .await??;
            Ok(ExitCode::SUCCESS)
        }
        Command::Fuzz { examples, min_requests, seed, backend } => {
            let exe = std::env::current_exe().context("cannot find the sandbox binary itself")?;
            let workspace = workspace()?;
            let options = harness::fuzz::Options { backend, examples, seed, min_requests };
            let outcome = tokio::task::spawn_blocking(move || harness::fuzz::run(&exe, &workspace, &options)).await??;
            out!("{}", outcome.summary());
            Ok(if outcome.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Bench { what } => {
            let exe = std::env::current_exe().context("cannot find the sandbox binary itself")?;
            let workspace = workspace()?;
            // The flows bench runs its own runtime: leave this one's thread.
            let table = tokio::task::spawn_blocking(move || match what {
                BenchWhat::Up { runs } => harness::bench::run(&exe, &workspace, runs),
                BenchWhat::Flows { payments, workers, seconds, rate } => {
                    let load = harness::flows::Load { payments, workers, seconds, rate };
                    harness::bench::flows(&exe, &workspace, load)
                }
                BenchWhat::Clone => harness::bench::clone(&workspace),
                BenchWhat::E2e { runs, backend } => harness::bench::e2e(&exe, &workspace, runs, backend),
                BenchWhat::Tests { runs, command } => harness::bench::tests(&workspace, runs, &command),
                BenchWhat::Tui { rate, seconds } => harness::bench::tui(&exe, &workspace, rate, seconds),
                BenchWhat::Images { runs } => harness::bench::images(&workspace, &home, runs),
                BenchWhat::Backends { runs } => harness::bench::backends(&exe, &workspace, &home, runs),
                BenchWhat::Start { runs } => harness::bench::start(&exe, &workspace, &home, runs),
            })
            .await??;
            out!("{table}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Supervise { name, file, only, postgres_password, workspace, backend, announce } => {
            init_logging();
            let log = home.log(&name);
            let opts = supervisor::Options {
                name,
                home,
                backend,
                topology: file,
                workspace,
                claimed: true,
                stop: Default::default(),
                sandbox_bin: std::env::current_exe()?,
                announce: announce.map_or(supervisor::Announce::Nobody, supervisor::Announce::Socket),
                only,
                postgres_password,
            };
            supervisor::run(opts, Printer { lenient: true, ..Printer::default() }).await?;
            // A clean exit leaves nothing; after a failure the log stays for
            // `up --detach` (or `prune`) to read and remove.
            let _ = std::fs::remove_file(log);
            Ok(ExitCode::SUCCESS)
        }
        Command::Provider { spec, listen } => {
            init_logging();
            tokio::select! {
                served = harness::providers::run(&spec, listen) => served?,
                () = harness::signals::terminated() => {}
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Broker { listen, advertise } => {
            tokio::select! {
                served = harness::broker::run(listen, advertise.as_deref()) => served?,
                () = harness::signals::terminated() => {}
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::InABox { what } => in_a_box(home, what).await,
        Command::Probe { url } => Ok(match wire::probe::probe(&url) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("probe: {e}");
                ExitCode::FAILURE
            }
        }),
    }
}

async fn in_a_box(home: Home, what: BoxWhat) -> anyhow::Result<ExitCode> {
    match what {
        BoxWhat::Run { postgres_password, advertise, workspace } => {
            let Some(postgres_password) = postgres_password.filter(|p| !p.is_empty()) else {
                bail!(
                    "POSTGRES_PASSWORD is not set: give the box one (`-e POSTGRES_PASSWORD=...`); its PostgreSQL \
                     port is open to whatever reaches the container"
                );
            };
            let advertise = match advertise {
                Some(a) => {
                    harness::inabox::parse_advertised(&a).map_err(|e| anyhow::anyhow!("KAFKA_ADVERTISED: {e}"))?
                }
                None => (harness::inabox::hostname(), harness::inabox::KAFKA_PORT),
            };
            init_logging();
            let opts = harness::inabox::Options {
                home,
                workspace,
                sandbox_bin: std::env::current_exe()?,
                postgres_password,
                advertise,
            };
            outln!("starting the bank-in-a-box");
            harness::inabox::run(opts, Printer::default()).await?;
            outln!("the bank-in-a-box stopped");
            Ok(ExitCode::SUCCESS)
        }
        BoxWhat::Prepare => {
            home.ensure()?;
            let made =
                harness::backend::local::prepare_cluster_template(&home.root, harness::inabox::POSTGRES_USER).await?;
            outln!("cluster template ready at {}", made.display());
            Ok(ExitCode::SUCCESS)
        }
        BoxWhat::Health => {
            let answer = harness::inabox::ask(&home, "health").await?;
            outln!("{answer}");
            Ok(if answer == "healthy" { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        BoxWhat::Advertise { to } => {
            harness::inabox::parse_advertised(&to).map_err(|e| anyhow::anyhow!(e))?;
            let answer = harness::inabox::ask(&home, &format!("advertise {to}")).await?;
            if answer != "ok" {
                bail!("the bank-in-a-box refused: {answer}");
            }
            outln!("kafka is advertised as {to}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn workspace() -> anyhow::Result<PathBuf> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    harness::find_workspace(&cwd).context(
        "not inside the bank-sandbox workspace (no compose/bank.yaml above this directory); run from the repository or pass -f",
    )
}

fn age(path: &std::path::Path) -> Duration {
    std::fs::metadata(path).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).unwrap_or_default()
}

fn init_logging() {
    // A log line that cannot be written (the disk full) is lost, not fatal:
    // tracing's own report of it would panic writing to the same stderr.
    let _ =
        tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).log_internal_errors(false).try_init();
}

fn live_client(record: &Record) -> anyhow::Result<control::Client> {
    if !record.owner_alive() {
        bail!(
            "sandbox `{}` is not running (its owner, pid {}, died); `sandbox prune` removes it",
            record.name,
            record.pid
        );
    }
    Ok(control::Client::for_record(record)?)
}

/// Prints start-up progress, then the component table once all are healthy.
#[derive(Default)]
struct Printer {
    announced: bool,
    /// Writes that fail are dropped, not fatal: a detached supervisor whose
    /// log's disk is full keeps the bank running (it reports, it does not exit).
    lenient: bool,
}

impl supervisor::Observer for Printer {
    fn changed(&mut self, prev: Option<&State>, next: &State) {
        let mut text = String::new();
        for line in progress::transitions(prev, next) {
            text.push_str(&format!("  {line}\n"));
        }
        if next.phase == Phase::Running && !self.announced {
            self.announced = true;
            text.push_str(&progress::table(next));
        }
        if self.lenient {
            let mut stdout = std::io::stdout().lock();
            if stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).is_err() {
                tracing::warn!("cannot write the sandbox's progress to its log; it runs on");
            }
        } else {
            out!("{text}");
            let _ = std::io::stdout().flush();
        }
    }
}

async fn up_foreground(
    home: Home,
    name: String,
    file: Vec<PathBuf>,
    workspace: PathBuf,
    backend: Kind,
) -> anyhow::Result<ExitCode> {
    let opts = start_options(home.clone(), &name, file, &workspace, backend).await?;
    if !std::io::stdout().is_terminal() {
        // No terminal: plain progress lines instead of the dashboard.
        outln!("starting sandbox {name} (Ctrl-C stops it and removes everything)");
        Sandbox::spawn(opts, Printer::default()).await?.wait().await?;
        outln!("sandbox {name} stopped and removed");
        return Ok(ExitCode::SUCCESS);
    }
    // The dashboard talks to the supervisor through its control API, as
    // `sandbox tui` would, from the moment it listens.
    let sandbox = Sandbox::spawn(opts, harness::start::Quiet).await?;
    let shown = tui::run(sandbox.control(), &name, true, &home).await;
    let stopped = sandbox.stop().await;
    shown?;
    stopped?;
    outln!("sandbox {name} stopped and removed");
    Ok(ExitCode::SUCCESS)
}

/// What `up` starts, once the topology and the backend are checked: a bad
/// topology or an unrunnable backend is refused before anything is made.
async fn start_options(
    home: Home,
    name: &str,
    file: Vec<PathBuf>,
    workspace: &std::path::Path,
    backend: Kind,
) -> anyhow::Result<harness::start::Options> {
    let topology = harness::topology::Topology::load_all(&file)?;
    refuse_unrunnable(backend, &topology).await?;
    let mut opts = harness::start::Options::new(workspace, &std::env::current_exe()?);
    opts.name = Some(name.to_string());
    opts.backend = backend;
    opts.files = file;
    opts.home = home;
    Ok(opts)
}

/// Refuse, before anything is made, what `backend` cannot run: a service the
/// local backend has no way to run, or no Docker engine to run containers on.
async fn refuse_unrunnable(backend: Kind, topology: &harness::topology::Topology) -> anyhow::Result<()> {
    match backend {
        Kind::Local => harness::backend::local::check(topology)?,
        Kind::Docker => drop(harness::backend::docker::connect().await?),
    }
    Ok(())
}

async fn up_detached(
    home: Home,
    name: String,
    file: Vec<PathBuf>,
    workspace: PathBuf,
    backend: Kind,
) -> anyhow::Result<ExitCode> {
    let opts = start_options(home, &name, file, &workspace, backend).await?;
    if std::io::stdout().is_terminal() {
        outln!("starting sandbox {name} in the background");
    }
    harness::start::detached(opts, |prev, state| {
        for line in progress::transitions(prev, state) {
            outln!("  {line}");
        }
        if state.phase == Phase::Running {
            out!("{}", progress::table(state));
        }
    })
    .await?;
    outln!("stop it with: sandbox down {name}");
    Ok(ExitCode::SUCCESS)
}

async fn down(home: &Home, name: Option<&str>) -> anyhow::Result<ExitCode> {
    let record = match name {
        Some(n) => Record::read(&home.dir(n)).map_err(|_| harness::Error::NoSuchSandbox(n.into()))?,
        None => home.resolve(None)?,
    };
    if !record.owner_alive() {
        let killed = sandbox::remove_dead(&record.dir).await?;
        outln!(
            "sandbox {} was not running; removed what it left{}",
            record.name,
            if killed.is_empty() { String::new() } else { format!(" ({})", killed.join(", ")) }
        );
        return Ok(ExitCode::SUCCESS);
    }
    control::Client::for_record(&record)?.down().await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while record.owner_alive() || record.dir.exists() {
        if tokio::time::Instant::now() > deadline {
            bail!(
                "sandbox {} did not stop within 60s; `sandbox prune` removes it once its owner (pid {}) is gone",
                record.name,
                record.pid
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    outln!("sandbox {} stopped and removed", record.name);
    Ok(ExitCode::SUCCESS)
}
