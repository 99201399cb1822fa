//! `sandbox bench`: how long `sandbox up --detach` takes to reach all-healthy
//! (with the bank rebuilt first, then warm), how long `down` takes, and the whole
//! sandbox's memory (every process it runs, summed). It drives this very binary,
//! the build a developer runs, and prints a Markdown table for docs/PERFORMANCE.md.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::sandbox::Record;

pub(crate) struct Bench {
    pub(crate) exe: PathBuf,
    pub(crate) home: PathBuf,
    pub(crate) workspace: PathBuf,
}

impl Bench {
    pub(crate) fn sandbox(&self, args: &[&str]) -> Result<Duration> {
        let started = Instant::now();
        let out = Command::new(&self.exe)
            .arg("--home")
            .arg(&self.home)
            .args(args)
            .current_dir(&self.workspace)
            .output()
            .map_err(Error::io("cannot run the sandbox binary"))?;
        if !out.status.success() {
            return Err(Error::Check(format!("sandbox {args:?} failed: {}", String::from_utf8_lossy(&out.stderr))));
        }
        Ok(started.elapsed())
    }
}

/// Memory (kB) of every process in the sandbox: the supervisor and all its
/// descendants (PostgreSQL's backends included; they leave their parent's
/// process group). Proportional set size, so pages shared between PostgreSQL's
/// processes count once.
fn sandbox_memory_kb(home: &Path, name: &str) -> Result<u64> {
    let record = Record::read(&home.join(name))?;
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").map_err(Error::io("cannot read /proc"))?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid: u32 = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        parents.push((pid, ppid));
    }
    let mut tree = vec![record.pid];
    let mut grew = true;
    while grew {
        grew = false;
        for (pid, ppid) in &parents {
            if tree.contains(ppid) && !tree.contains(pid) {
                tree.push(*pid);
                grew = true;
            }
        }
    }
    let total = tree
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum();
    Ok(total)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `p50 s (min-max)` of `runs` (sorted here), in seconds to `decimals` places.
fn spread(runs: &mut [Duration], decimals: usize) -> String {
    runs.sort();
    let secs = |d: Duration| format!("{:.*}", decimals, d.as_secs_f64());
    format!("{} s ({}-{})", secs(percentile(runs, 0.5)), secs(runs[0]), secs(runs[runs.len() - 1]))
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Run the benchmark with `runs` warm runs; sandboxes live under a temporary
/// home that is removed afterwards, whatever happens.
pub fn run(exe: &Path, workspace: &Path, runs: usize) -> Result<String> {
    let home = std::env::temp_dir().join(format!("sbx-bench-{}", std::process::id()));
    std::fs::create_dir_all(&home).map_err(Error::io("cannot create the bench home"))?;
    let bench = Bench { exe: exe.to_path_buf(), home: home.clone(), workspace: workspace.to_path_buf() };
    let result = measure(&bench, runs.max(1));
    for (name, _) in (crate::sandbox::Home { root: home.clone() }).list() {
        let _ = bench.sandbox(&["down", &name]);
    }
    let _ = std::fs::remove_dir_all(&home);
    result
}

fn measure(bench: &Bench, runs: usize) -> Result<String> {
    // First run after a change to the bank: `up` rebuilds it with cargo.
    let lib = bench.workspace.join("bank/src/lib.rs");
    let text = std::fs::read(&lib).map_err(Error::io("cannot read bank/src/lib.rs"))?;
    std::fs::write(&lib, &text).map_err(Error::io("cannot touch bank/src/lib.rs"))?;
    let rebuild = bench.sandbox(&["up", "--detach", "--name", "bench-rebuild"])?;
    let mem_idle = sandbox_memory_kb(&bench.home, "bench-rebuild")?;
    bench.sandbox(&["down", "bench-rebuild"])?;

    let mut ups = Vec::new();
    let mut downs = Vec::new();
    let mut mem = Vec::new();
    for i in 0..runs {
        let name = format!("bench-{i}");
        ups.push(bench.sandbox(&["up", "--detach", "--name", &name])?);
        mem.push(sandbox_memory_kb(&bench.home, &name)?);
        downs.push(bench.sandbox(&["down", &name])?);
    }
    ups.sort();
    downs.sort();
    let mut out = String::new();
    out.push_str("| measure | value |\n|---|---|\n");
    out.push_str(&format!("| `up --detach` to all healthy, bank rebuilt first | {} |\n", ms(rebuild)));
    out.push_str(&format!("| `up --detach` to all healthy, warm, p50 of {runs} | {} |\n", ms(percentile(&ups, 0.5))));
    out.push_str(&format!("| `up --detach` to all healthy, warm, max | {} |\n", ms(ups[ups.len() - 1])));
    out.push_str(&format!("| `down` to all removed, p50 | {} |\n", ms(percentile(&downs, 0.5))));
    out.push_str(&format!("| `down` to all removed, max | {} |\n", ms(downs[downs.len() - 1])));
    out.push_str(&format!("| memory (PSS) of the whole sandbox, idle after `up` | {} MB |\n", mem_idle / 1024));
    out.push_str(&format!(
        "| memory (PSS) of the whole sandbox, max over warm runs | {} MB |\n",
        mem.iter().max().copied().unwrap_or(0) / 1024
    ));
    Ok(out)
}

/// Start a sandbox under a temporary home, measure its money flows, remove it.
pub fn flows(exe: &Path, workspace: &Path, load: crate::flows::Load) -> Result<String> {
    let home = std::env::temp_dir().join(format!("sbx-bench-flows-{}", std::process::id()));
    std::fs::create_dir_all(&home).map_err(Error::io("cannot create the bench home"))?;
    let bench = Bench { exe: exe.to_path_buf(), home: home.clone(), workspace: workspace.to_path_buf() };
    let result = (|| {
        bench.sandbox(&["up", "--detach", "--name", "bench-flows"])?;
        let record = Record::read(&home.join("bench-flows"))?;
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(Error::io("runtime"))?;
        rt.block_on(async {
            let state = crate::control::Client::for_record(&record)?.state().await?;
            let url = |name: &str| {
                state
                    .component(name)
                    .and_then(|c| c.endpoints.first())
                    .map(|e| e.url.clone())
                    .ok_or_else(|| Error::Check(format!("the sandbox has no `{name}` component")))
            };
            let table = crate::flows::measure(
                &url("gateway")?,
                &url("kafka")?,
                &url("payment-scheme")?,
                &url("postgres")?,
                load,
            )
            .await?;
            let statements = statements(&url("postgres")?)
                .await
                .unwrap_or_else(|e| format!("(no statement timings: {e}; the server needs pg_stat_statements)\n"));
            Ok(format!("{table}\n{statements}"))
        })
    })();
    let _ = bench.sandbox(&["down", "bench-flows"]);
    let _ = std::fs::remove_dir_all(&home);
    result
}

/// Where PostgreSQL's time went over the whole bench, from pg_stat_statements
/// (which the local backend preloads): the statements that took the most, of
/// every database, with their share of all statements' time.
async fn statements(server: &str) -> Result<String> {
    use sqlx::Row;
    let fail = |e: sqlx::Error| Error::Postgres(e.to_string());
    let mut conn = crate::flows::statements_view(server).await.map_err(fail)?;
    let total: f64 = sqlx::query_scalar("SELECT coalesce(sum(total_exec_time), 0) FROM pg_stat_statements")
        .fetch_one(&mut conn)
        .await
        .map_err(fail)?;
    let rows = sqlx::query(
        "SELECT d.datname, s.calls, s.total_exec_time, s.mean_exec_time, \
                left(regexp_replace(s.query, '\\s+', ' ', 'g'), 100) AS query \
         FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid \
         ORDER BY s.total_exec_time DESC LIMIT 12",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(fail)?;
    let mut out = format!(
        "PostgreSQL, all phases: {:.1} s in statements; the twelve that took the most\n\n\
         | database | statement | calls | total, ms | mean, ms | share |\n|---|---|---|---|---|---|\n",
        total / 1000.0
    );
    for row in rows {
        let get = |e: sqlx::Error| Error::Postgres(format!("pg_stat_statements: {e}"));
        let (db, calls, ms, mean, query): (String, i64, f64, f64, String) = (
            row.try_get(0).map_err(get)?,
            row.try_get(1).map_err(get)?,
            row.try_get(2).map_err(get)?,
            row.try_get(3).map_err(get)?,
            row.try_get(4).map_err(get)?,
        );
        let share = if total > 0.0 { ms / total * 100.0 } else { 0.0 };
        out.push_str(&format!(
            "| {db} | `{}` | {calls} | {ms:.0} | {mean:.2} | {share:.1} % |\n",
            query.replace('|', "\\|")
        ));
    }
    Ok(out)
}

/// The whole Gherkin suite, `runs` times, each against a fresh sandbox (on
/// `backend`) as the test target runs it: wall time and its parts,
/// scenarios/s, and how many runs failed (a flake check: every run runs; the
/// bench fails when any did, after reporting them all).
pub fn e2e(exe: &Path, workspace: &Path, runs: usize, backend: crate::backend::Kind) -> Result<String> {
    let home = std::env::temp_dir().join(format!("sbx-bench-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&home).map_err(Error::io("cannot create the bench home"))?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(Error::io("runtime"))?;
    let mut summaries = Vec::new();
    let result = (|| {
        for run in 1..=runs.max(1) {
            let mut opts = crate::e2e::Options::new(workspace, exe);
            opts.home = crate::sandbox::Home { root: home.clone() };
            opts.backend = backend;
            opts.report_to_stderr = true;
            let summary = rt.block_on(crate::e2e::run(opts))?;
            eprintln!("bench e2e: run {run}: {summary}");
            summaries.push(summary);
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&home);
    result?;
    let failed: Vec<String> = summaries.iter().filter(|s| s.failed).map(|s| s.to_string()).collect();
    let passed: Vec<&crate::e2e::Summary> = summaries.iter().filter(|s| !s.failed).collect();
    if passed.is_empty() {
        return Err(Error::Check(format!("every run failed:\n{}", failed.join("\n"))));
    }
    let col = |f: &dyn Fn(&crate::e2e::Summary) -> f64| {
        let mut v: Vec<f64> = passed.iter().map(|s| f(s)).collect();
        v.sort_by(f64::total_cmp);
        format!("{:.2} | {:.2} | {:.2}", v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let mut out = format!(
        "| e2e suite, {backend} backend, {} runs, {} scenarios each | median | min | max |\n|---|---|---|---|\n",
        summaries.len(),
        passed[0].scenarios
    );
    out.push_str(&format!("| whole run, s | {} |\n", col(&|s| (s.start_up + s.running + s.teardown).as_secs_f64())));
    out.push_str(&format!("| start-up (sandbox, Kafka reader), s | {} |\n", col(&|s| s.start_up.as_secs_f64())));
    out.push_str(&format!("| scenarios, s | {} |\n", col(&|s| s.running.as_secs_f64())));
    out.push_str(&format!("| teardown, s | {} |\n", col(&|s| s.teardown.as_secs_f64())));
    out.push_str(&format!(
        "| scenarios per second | {} |\n",
        col(&|s| s.scenarios as f64 / s.running.as_secs_f64().max(0.001))
    ));
    out.push_str(&format!("\nruns that failed: {} of {}\n", failed.len(), summaries.len()));
    if !failed.is_empty() {
        return Err(Error::Check(format!("{out}{}", failed.join("\n"))));
    }
    Ok(out)
}

/// The README's test command (or `command`), `runs` times, warm: the first
/// run builds what is stale and is reported apart; each run's wall time and
/// the whole machine's busy CPU over it (every process: the tests, the
/// sandboxes and containers they start, Docker's daemon), and whether it
/// passed. A run that fails is reported, not hidden: its time means little.
pub fn tests(workspace: &Path, runs: usize, command: &str) -> Result<String> {
    let mut rows = Vec::new();
    for i in 0..=runs {
        let busy = crate::flows::cpu_busy().unwrap_or(0.0);
        let started = Instant::now();
        let status = crate::fresh::as_from_a_shell(&mut Command::new("bash"))
            .args(["-c", command])
            .current_dir(workspace)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map_err(Error::io(format!("cannot run `{command}`")))?;
        let wall = started.elapsed();
        let cpu = (crate::flows::cpu_busy().unwrap_or(0.0) - busy) / 1000.0;
        rows.push((i, wall, cpu, status.success()));
    }
    let mut out = format!("`{command}`\n\n| run | wall | machine CPU | cores busy | passed |\n|---|---|---|---|---|\n");
    for (i, wall, cpu, ok) in &rows {
        let run = if *i == 0 { "first (builds what is stale)".to_string() } else { format!("warm {i}") };
        out.push_str(&format!(
            "| {run} | {:.0} s | {cpu:.0} s | {:.2} | {} |\n",
            wall.as_secs_f64(),
            cpu / wall.as_secs_f64().max(0.001),
            if *ok { "yes" } else { "no" }
        ));
    }
    let mut warm: Vec<Duration> = rows.iter().skip(1).map(|r| r.1).collect();
    warm.sort();
    if !warm.is_empty() {
        out.push_str(&format!(
            "\nwarm wall time, median of {}: {:.0} s\n",
            warm.len(),
            percentile(&warm, 0.5).as_secs_f64()
        ));
    }
    Ok(out)
}

/// CPU time (user + system) a process has used so far.
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(Error::io("cannot read the TUI's stat"))?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<u64> = rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based).
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    // Linux reports in USER_HZ, 100 on every platform it runs on.
    Ok(Duration::from_millis(ticks * 10))
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:")).map(|v| v.trim().trim_end_matches("kB").trim().to_string())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The dashboard's own cost: `sandbox tui` in tmux's pseudo-terminal on a
/// detached sandbox, idle, then while the sandbox logs `rate` lines a second
/// (requests to a service's `/ping`, one log line each), for `seconds` each;
/// and the time from a key press to the screen showing the pane it asked for.
pub fn tui(exe: &Path, workspace: &Path, rate: u32, seconds: u64) -> Result<String> {
    let home = std::env::temp_dir().join(format!("sbx-bench-tui-{}", std::process::id()));
    std::fs::create_dir_all(&home).map_err(Error::io("cannot create the bench home"))?;
    let bench = Bench { exe: exe.to_path_buf(), home: home.clone(), workspace: workspace.to_path_buf() };
    let socket = format!("sbx-bench-tui-{}", std::process::id());
    let tmux = |args: &[&str]| {
        Command::new("tmux").args(["-L", &socket]).args(args).output().map_err(Error::io("cannot run tmux"))
    };
    let screen = || tmux(&["capture-pane", "-p", "-t", "tui"]).map(|o| String::from_utf8_lossy(&o.stdout).to_string());
    let wait_screen = |text: &str| -> Result<Duration> {
        let started = Instant::now();
        while !screen()?.contains(text) {
            if started.elapsed() > Duration::from_secs(30) {
                return Err(Error::Check(format!("the dashboard never showed `{text}`")));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(started.elapsed())
    };
    let result = (|| {
        bench.sandbox(&["up", "--detach", "--name", "bench-tui"])?;
        let command = format!("{} --home {} tui bench-tui", exe.display(), home.display());
        let out = tmux(&["new-session", "-d", "-s", "tui", "-x", "120", "-y", "40", &command])?;
        if !out.status.success() {
            return Err(Error::Tool(format!("tmux: {}", String::from_utf8_lossy(&out.stderr))));
        }
        wait_screen("(attached)")?;
        let pid = std::fs::read_dir("/proc")
            .map_err(Error::io("cannot read /proc"))?
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("tui\0bench-tui"))
            })
            .ok_or_else(|| Error::Check("cannot find the dashboard's process".into()))?;
        // Settle (the first frames, the Kafka reader catching up), then measure.
        std::thread::sleep(Duration::from_secs(3));
        let window = Duration::from_secs(seconds);
        let share = |cpu: Duration| cpu.as_secs_f64() / window.as_secs_f64() * 100.0;
        let (cpu0, rss_idle) = (cpu_time(pid)?, rss_kb(pid));
        std::thread::sleep(window);
        let idle = share(cpu_time(pid)? - cpu0);

        // Key press to redraw, idle: switch between two panes and wait for each.
        let mut redraws = Vec::new();
        for i in 0..20 {
            let (key, text) = if i % 2 == 0 { ("3", "TOPIC@OFFSET") } else { ("1", "RESTARTS") };
            tmux(&["send-keys", "-t", "tui", key])?;
            redraws.push(wait_screen(text)?);
        }
        redraws.sort();
        tmux(&["send-keys", "-t", "tui", "2"])?;

        // Under load: the sandbox logs `rate` lines a second while the logs pane follows.
        let record = Record::read(&home.join("bench-tui"))?;
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(Error::io("runtime"))?;
        let (under_load, delivered, rss_load) = rt.block_on(async {
            let control = crate::control::Client::for_record(&record)?;
            let state = control.state().await?;
            let ping = state
                .component("accounts")
                .and_then(|c| c.endpoints.first())
                .map(|e| format!("{}/ping", e.url))
                .ok_or_else(|| Error::Check("no accounts service".into()))?;
            let stop = tokio_util::sync::CancellationToken::new();
            let mut load = tokio::task::JoinSet::new();
            let workers = 8u32;
            for _ in 0..workers {
                let (ping, stop) = (ping.clone(), stop.clone());
                let http = reqwest::Client::new();
                let mut every = tokio::time::interval(Duration::from_secs_f64(f64::from(workers) / f64::from(rate)));
                load.spawn(async move {
                    while !stop.is_cancelled() {
                        every.tick().await;
                        let _ = http.get(&ping).send().await;
                    }
                });
            }
            // Count what the sandbox's log stream actually carried.
            let lines = control.logs(None, true, 0).await?;
            let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let counter = count.clone();
            let counting = tokio::spawn(async move {
                let mut lines = std::pin::pin!(lines);
                while futures::StreamExt::next(&mut lines).await.is_some() {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (cpu0, n0) = (cpu_time(pid)?, count.load(std::sync::atomic::Ordering::Relaxed));
            let started = Instant::now();
            tokio::time::sleep(window).await;
            let cpu = cpu_time(pid)? - cpu0;
            let n = count.load(std::sync::atomic::Ordering::Relaxed) - n0;
            let rate = n as f64 / started.elapsed().as_secs_f64();
            let rss = rss_kb(pid);
            stop.cancel();
            counting.abort();
            while load.join_next().await.is_some() {}
            Ok::<_, Error>((share(cpu), rate, rss))
        })?;
        let mut out = String::from("| dashboard (`sandbox tui`, 120x40, tmux) | value |\n|---|---|\n");
        out.push_str(&format!("| CPU idle, {seconds} s | {idle:.1} % of a core |\n"));
        out.push_str(&format!(
            "| CPU while the logs pane follows {delivered:.0} lines/s, {seconds} s | {under_load:.1} % of a core |\n"
        ));
        out.push_str(&format!("| RSS idle / after the load | {} / {} MB |\n", rss_idle / 1024, rss_load / 1024));
        out.push_str(&format!(
            "| key press to redraw (tmux capture), p50 / max of {} | {:.0} / {:.0} ms |\n",
            redraws.len(),
            redraws[redraws.len() / 2].as_secs_f64() * 1000.0,
            redraws[redraws.len() - 1].as_secs_f64() * 1000.0
        ));
        Ok(out)
    })();
    let _ = tmux(&["kill-server"]);
    let _ = bench.sandbox(&["down", "bench-tui"]);
    let _ = std::fs::remove_dir_all(&home);
    result
}

/// Image builds and the bank under plain Compose on them: a cold build (every
/// image from nothing, in a repository of its own so that the developer's images
/// stay), a warm one (nothing changed), the bank's image alone, each image's size;
/// then `runs` times `docker-compose up -d` until every container is healthy
/// (polled every 500 ms, as Compose v2's `--wait` does), its memory, and `down -v`.
pub fn images(workspace: &Path, home: &crate::sandbox::Home, runs: usize) -> Result<String> {
    use crate::images::{self, Kind, Outcome};
    let mut bench = images::Options::new(workspace, &home.root);
    bench.repository = format!("bank-sandbox-bench-{}", std::process::id());
    let quiet = &mut |_: &str| {};
    let built = (|| {
        images::remove_all(&bench)?;
        let cold = images::build(&bench, quiet)?;
        let warm = images::build(&bench, quiet)?;
        let _ = crate::images::Docker::cli().output(&["rmi", &bench.tag(Kind::Bank)]);
        let bank = images::build(&bench, quiet)?;
        Ok::<_, Error>((cold, warm, bank))
    })();
    let _ = images::remove_all(&bench);
    let (cold, warm, bank) = built?;
    let secs = |r: &images::Report, k: Kind| match r.outcome(k) {
        Some(Outcome::Built { took }) => format!("{:.1}", took.as_secs_f64()),
        _ => "skipped".into(),
    };
    let mut out = String::from("| image | cold build, s | size, MB |\n|---|---|---|\n");
    for b in &cold.images {
        out.push_str(&format!("| {} | {} | {:.0} |\n", b.kind.name(), secs(&cold, b.kind), b.size as f64 / 1e6));
    }
    out.push_str(&format!("| **all, cold** | {:.1} | |\n", cold.took.as_secs_f64()));
    out.push_str(&format!("| all, warm (nothing changed) | {:.3} | |\n", warm.took.as_secs_f64()));
    out.push_str(&format!("| the bank's image alone (binary built) | {:.1} | |\n\n", bank.took.as_secs_f64()));

    images::build(&images::Options::new(workspace, &home.root), quiet)?;
    let files = [workspace.join(crate::TOPOLOGY), workspace.join(images::LOCAL_IMAGES)];
    let (mut healthy, mut downs, mut memory) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs.max(1) {
        let mut project = crate::compose::Project::new(&format!("sbxbench{}r{i}", std::process::id()), &files);
        let started = Instant::now();
        project.up()?;
        project.wait_healthy(Duration::from_secs(300))?;
        healthy.push(started.elapsed());
        memory.push(containers_memory_mb(&format!("label=com.docker.compose.project={}", project.name))?);
        let t = Instant::now();
        project.down()?;
        downs.push(t.elapsed());
        let left = project.leftovers()?;
        if !left.is_empty() {
            return Err(Error::Check(format!("`down -v` left {}", left.join(", "))));
        }
    }
    healthy.sort();
    downs.sort();
    memory.sort_by(f64::total_cmp);
    out.push_str(&format!(
        "| docker-compose on the local images, {} runs | p50 | min | max |\n|---|---|---|---|\n",
        healthy.len()
    ));
    out.push_str(&format!(
        "| `up -d` to every container healthy, s | {:.1} | {:.1} | {:.1} |\n",
        percentile(&healthy, 0.5).as_secs_f64(),
        healthy[0].as_secs_f64(),
        healthy[healthy.len() - 1].as_secs_f64()
    ));
    out.push_str(&format!(
        "| `down -v`, s | {:.1} | {:.1} | {:.1} |\n",
        percentile(&downs, 0.5).as_secs_f64(),
        downs[0].as_secs_f64(),
        downs[downs.len() - 1].as_secs_f64()
    ));
    out.push_str(&format!(
        "| memory of every container, healthy and idle, MB | {:.0} | {:.0} | {:.0} |\n",
        memory[memory.len() / 2],
        memory[0],
        memory[memory.len() - 1]
    ));
    Ok(out)
}

/// The memory the engine charges to the containers `filter` selects, summed (MB).
fn containers_memory_mb(filter: &str) -> Result<f64> {
    let docker = crate::images::Docker::cli();
    let ids = docker.output(&["ps", "-q", "--filter", filter])?;
    let mut args = vec!["stats", "--no-stream", "--format", "{{.MemUsage}}"];
    args.extend(ids.split_whitespace());
    // "12.5MiB / 23.4GiB": the first figure is the container's.
    Ok(docker
        .output(&args)?
        .lines()
        .filter_map(|l| l.split('/').next())
        .map(|used| {
            let used = used.trim();
            let (n, unit) = used.split_at(used.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(used.len()));
            let n: f64 = n.parse().unwrap_or(0.0);
            match unit {
                "GiB" => n * 1024.0 * 1.048_576,
                "MiB" => n * 1.048_576,
                "KiB" => n / 1024.0 * 1.048_576,
                _ => n / 1e6,
            }
        })
        .sum())
}

/// `sandbox bench backends`: in one run, on the same Compose files and images
/// (`compose/bank.yaml` with `compose/local-images.yaml`, the `bank-sandbox/*`
/// images), the Docker backend, plain `docker-compose` (`up -d`, then every
/// container polled for health each 500 ms, as Compose v2's `--wait` does) and
/// the local backend: time to all healthy, `down`, memory; then the Gherkin suite
/// on each backend.
pub fn backends(exe: &Path, workspace: &Path, images_home: &crate::sandbox::Home, runs: usize) -> Result<String> {
    use crate::backend::Kind;
    crate::images::build(&crate::images::Options::new(workspace, &images_home.root), &mut |_: &str| {})?;
    let home = std::env::temp_dir().join(format!("sbx-bench-backends-{}", std::process::id()));
    std::fs::create_dir_all(&home).map_err(Error::io("cannot create the bench home"))?;
    let bench = Bench { exe: exe.to_path_buf(), home: home.clone(), workspace: workspace.to_path_buf() };
    let files = crate::default_topology(workspace, Kind::Docker);
    let file_args: Vec<String> =
        files.iter().flat_map(|f| ["-f".to_string(), f.to_string_lossy().to_string()]).collect();
    let measured = (|| {
        let (mut docker, mut compose, mut local) = (Sample::default(), Sample::default(), Sample::default());
        for i in 0..runs.max(1) {
            let name = format!("bench-docker-{i}");
            let mut args = vec!["up", "--detach", "--backend", "docker", "--name", &name];
            args.extend(file_args.iter().map(String::as_str));
            docker.up.push(bench.sandbox(&args)?);
            docker.memory.push(
                containers_memory_mb(&format!("label={}={name}", crate::backend::docker::LABEL_SANDBOX))?
                    + sandbox_memory_kb(&home, &name)? as f64 / 1024.0,
            );
            docker.down.push(bench.sandbox(&["down", &name])?);

            let mut project = crate::compose::Project::new(&format!("sbxbench{}b{i}", std::process::id()), &files);
            let started = Instant::now();
            project.up()?;
            project.wait_healthy(Duration::from_secs(300))?;
            compose.up.push(started.elapsed());
            compose.memory.push(containers_memory_mb(&format!("label=com.docker.compose.project={}", project.name))?);
            let t = Instant::now();
            project.down()?;
            compose.down.push(t.elapsed());

            let name = format!("bench-local-{i}");
            let mut args = vec!["up", "--detach", "--name", &name];
            args.extend(file_args.iter().map(String::as_str));
            local.up.push(bench.sandbox(&args)?);
            local.memory.push(sandbox_memory_kb(&home, &name)? as f64 / 1024.0);
            local.down.push(bench.sandbox(&["down", &name])?);
        }
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(Error::io("runtime"))?;
        let mut suites = Vec::new();
        for kind in [Kind::Docker, Kind::Local] {
            let mut opts = crate::e2e::Options::new(workspace, exe);
            opts.home = crate::sandbox::Home { root: home.clone() };
            opts.backend = kind;
            opts.report_to_stderr = true;
            let summary = rt.block_on(crate::e2e::run(opts))?;
            if summary.failed {
                return Err(Error::Check(format!("a scenario failed on the {kind} backend: {summary}")));
            }
            suites.push(summary);
        }
        Ok((docker, compose, local, suites))
    })();
    for (name, _) in (crate::sandbox::Home { root: home.clone() }).list() {
        let _ = bench.sandbox(&["down", &name]);
    }
    let _ = std::fs::remove_dir_all(&home);
    let (mut docker, mut compose, mut local, suites) = measured?;
    let n = docker.up.len();
    let mut out = format!(
        "| {n} runs each, p50 (min-max) | `sandbox up --backend docker` | `docker-compose up -d` + health polled | `sandbox up` (local) |\n|---|---|---|---|\n"
    );
    let row = |what: &str, f: &dyn Fn(&mut Sample) -> String, d: &mut Sample, c: &mut Sample, l: &mut Sample| {
        format!("| {what} | {} | {} | {} |\n", f(d), f(c), f(l))
    };
    let secs = |v: &mut Vec<Duration>| spread(v, 1);
    out.push_str(&row("to all healthy", &|s| secs(&mut s.up), &mut docker, &mut compose, &mut local));
    out.push_str(&row("`down`, everything removed", &|s| secs(&mut s.down), &mut docker, &mut compose, &mut local));
    out.push_str(&row(
        "memory, healthy and idle, MB",
        &|s| {
            s.memory.sort_by(f64::total_cmp);
            format!("{:.0}", s.memory[s.memory.len() / 2])
        },
        &mut docker,
        &mut compose,
        &mut local,
    ));
    let ratio = |s: &Sample| percentile(&s.up, 0.5).as_secs_f64() / percentile(&compose.up, 0.5).as_secs_f64();
    out.push_str(&format!(
        "| to all healthy, against Compose | {:.2}x (goal 0.5x) | 1x | {:.2}x (goal 0.1x) |\n",
        ratio(&docker),
        ratio(&local)
    ));
    let suite = |s: &crate::e2e::Summary| {
        format!(
            "{:.1} s ({} scenarios; start-up {:.1} s, teardown {:.1} s)",
            (s.start_up + s.running + s.teardown).as_secs_f64(),
            s.scenarios,
            s.start_up.as_secs_f64(),
            s.teardown.as_secs_f64()
        )
    };
    out.push_str(&format!(
        "| the Gherkin suite, fresh sandbox | {} | - | {} |\n",
        suite(&suites[0]),
        suite(&suites[1])
    ));
    Ok(out)
}

#[derive(Default)]
struct Sample {
    up: Vec<Duration>,
    down: Vec<Duration>,
    memory: Vec<f64>,
}

/// A directory removed (with everything in it) when dropped, even on an error.
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `sandbox bench clone`: a new engineer's first minutes. The workspace's
/// committed sources are cloned (`git clone`, as a new engineer would) into a
/// temporary directory, then `cargo sandbox up --detach` runs there with an empty
/// target directory (crates from cargo's local cache) until every component is
/// healthy; the first build's share is when cargo says `Finished`. Then `down`,
/// and the clone (with its target directory) is removed.
pub fn clone(workspace: &Path) -> Result<String> {
    let scratch = Removed(std::env::temp_dir().join(format!("bank-sandbox-bench-clone-{}", std::process::id())));
    let (ws, home) = (scratch.0.join("workspace"), scratch.0.join("home"));
    std::fs::create_dir_all(&scratch.0).map_err(Error::io(format!("cannot create {}", scratch.0.display())))?;
    let started = Instant::now();
    let out = Command::new("git")
        .args(["clone", "--quiet"])
        .arg(workspace)
        .arg(&ws)
        .output()
        .map_err(Error::io("cannot run git (the bench clones the workspace as a new engineer would)"))?;
    if !out.status.success() {
        return Err(Error::Check(format!(
            "git clone {} failed (the bench clones the workspace's committed sources): {}",
            workspace.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let cloned = started.elapsed();

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let sandbox = |cmd: &mut Command| {
        crate::fresh::as_from_a_shell(cmd)
            .current_dir(&ws)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("SANDBOX_BANK_BIN")
            .arg("--home")
            .arg(&home);
    };
    let mut up = Command::new(&cargo);
    up.arg("sandbox");
    sandbox(&mut up);
    up.args(["up", "--detach", "--name", "bench-clone"]).stdout(std::process::Stdio::null());
    up.stderr(std::process::Stdio::piped());
    let started = Instant::now();
    let mut child = up.spawn().map_err(Error::io("cannot run cargo"))?;
    let (mut built, mut crates, mut tail) = (None, 0usize, Vec::new());
    if let Some(stderr) = child.stderr.take() {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(std::result::Result::ok) {
            let line = line.trim().to_string();
            if line.starts_with("Compiling ") {
                crates += 1;
            } else if line.starts_with("Finished ") && built.is_none() {
                built = Some(started.elapsed());
            }
            tail.push(line);
        }
    }
    let status = child.wait().map_err(Error::io("cargo sandbox up did not finish"))?;
    let healthy = started.elapsed();
    // Down whatever came up, with the binary the clone built.
    let mut down = Command::new(ws.join("target/debug/sandbox"));
    sandbox(&mut down);
    let downed = down.args(["down", "bench-clone"]).output();
    if !status.success() {
        let tail = tail[tail.len().saturating_sub(20)..].join("\n");
        return Err(Error::Check(format!("`cargo sandbox up --detach` in the clone failed ({status}):\n{tail}")));
    }
    match downed {
        Ok(o) if o.status.success() => {}
        Ok(o) => return Err(Error::Check(format!("`sandbox down` failed: {}", String::from_utf8_lossy(&o.stderr)))),
        Err(e) => return Err(Error::Check(format!("cannot run the clone's sandbox binary: {e}"))),
    }
    let built = built.ok_or_else(|| Error::Check("cargo built nothing: was the target directory empty?".into()))?;
    let s = |d: Duration| format!("{:.1}", d.as_secs_f64());
    Ok(format!(
        "| from a fresh clone (empty target directory, crates in cargo's cache) | s |\n|---|---|\n\
         | `git clone` | {} |\n\
         | `cargo sandbox up --detach` to every component healthy | **{}** |\n\
         | of which the first build ({crates} crates compiled) | {} |\n\
         | of which `up` after the build | {} |\n",
        s(cloned),
        s(healthy),
        s(built),
        s(healthy.saturating_sub(built)),
    ))
}

/// `sandbox bench start`: starting a whole bank from code, to every component
/// healthy, and removing it: the library's start (`start::Sandbox`) on each
/// backend, the bank-in-a-box through its testcontainers module (healthy and
/// Kafka advertised), and `sandbox up --backend docker --detach` beside them.
pub fn start(exe: &Path, workspace: &Path, images_home: &crate::sandbox::Home, runs: usize) -> Result<String> {
    use crate::backend::Kind;
    crate::images::build(&crate::images::Options::new(workspace, &images_home.root), &mut |_: &str| {})?;
    let home = std::env::temp_dir().join(format!("sbx-bench-start-{}", std::process::id()));
    std::fs::create_dir_all(&home).map_err(Error::io("cannot create the bench home"))?;
    let _removed = Removed(home.clone());
    let bench = Bench { exe: exe.to_path_buf(), home: home.clone(), workspace: workspace.to_path_buf() };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(Error::io("runtime"))?;
    let (mut local, mut docker, mut boxed, mut cli) =
        (Sample::default(), Sample::default(), Sample::default(), Sample::default());
    for i in 0..runs.max(1) {
        for (kind, sample) in [(Kind::Local, &mut local), (Kind::Docker, &mut docker)] {
            let mut opts = crate::start::Options::new(workspace, exe);
            opts.name = Some(format!("bench-start-{}-{i}", kind.name()));
            opts.home = crate::sandbox::Home { root: home.clone() };
            opts.backend = kind;
            let started = Instant::now();
            let sandbox = rt.block_on(crate::start::Sandbox::start(opts))?;
            sample.up.push(started.elapsed());
            let t = Instant::now();
            rt.block_on(sandbox.stop())?;
            sample.down.push(t.elapsed());
        }
        let started = Instant::now();
        let bank = rt
            .block_on(crate::containers::BankInABox::default().start())
            .map_err(|e| Error::Check(format!("the bank-in-a-box did not start: {e}")))?;
        boxed.up.push(started.elapsed());
        let t = Instant::now();
        rt.block_on(bank.container.rm()).map_err(|e| Error::Check(format!("cannot remove the bank-in-a-box: {e}")))?;
        boxed.down.push(t.elapsed());

        let name = format!("bench-start-cli-{i}");
        cli.up.push(bench.sandbox(&["up", "--detach", "--backend", "docker", "--name", &name])?);
        cli.down.push(bench.sandbox(&["down", &name])?);
    }
    let secs = |v: &mut Vec<Duration>| spread(v, 2);
    let mut out = format!(
        "| {} runs each, p50 (min-max) | to every component healthy | removed |\n|---|---|---|\n",
        local.up.len()
    );
    for (what, sample) in [
        ("`start::Sandbox`, local backend", &mut local),
        ("`start::Sandbox`, Docker backend", &mut docker),
        ("`BankInABox::default().start()` (one container)", &mut boxed),
        ("`sandbox up --backend docker --detach`", &mut cli),
    ] {
        out.push_str(&format!("| {what} | {} | {} |\n", secs(&mut sample.up), secs(&mut sample.down)));
    }
    Ok(out)
}
