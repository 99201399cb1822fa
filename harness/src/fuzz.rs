//! `sandbox fuzz`: a third-party contract fuzzer, schemathesis (pinned, from
//! PyPI, into a virtual environment of its own), run against a fresh sandbox
//! through the gateway's OpenAPI document: generated requests to every
//! operation, links followed where the document gives them, with its checks
//! for server errors, statuses the document does not list, content types and
//! bodies off their schema. Then the bank's books are audited (every
//! account's postings add up to its balance, its holds to what it holds back,
//! no payment or top-up left half-done) and every refused request is looked
//! for in every service's event log: a refusal changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bench::Bench;
use crate::error::{Error, Result};
use crate::sandbox::Record;

/// The schemathesis release the gate runs: a new one is a deliberate change.
pub const SCHEMATHESIS: &str = "4.32.5";

/// The checks run on every answer.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";

#[derive(Debug, Clone)]
pub struct Options {
    pub backend: crate::backend::Kind,
    /// Test cases per operation and phase, at most.
    pub examples: u32,
    pub seed: Option<u64>,
    /// Fewer requests than this fails the run: too little was tried.
    pub min_requests: u64,
}

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    /// Requests the bank answered through its gateway (its own count).
    pub requests: u64,
    /// Of those, answered 5xx.
    pub server_errors: u64,
    pub operations: usize,
    pub elapsed: Duration,
    /// Whether schemathesis found nothing wrong.
    pub fuzzer_passed: bool,
    /// Requests refused (4xx) and the events they caused (must be none).
    pub refused: usize,
    pub refusals_that_changed_something: Vec<String>,
    /// Broken invariants of the books, each on its line.
    pub audit: Vec<String>,
    /// The fewest requests a passing run sends.
    pub min_requests: u64,
    /// What the fuzzer's requests did to the books: payments completed,
    /// top-ups succeeded, accounts audited.
    pub moved: (usize, usize, usize),
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.fuzzer_passed
            && self.requests >= self.min_requests
            && self.server_errors == 0
            && self.audit.is_empty()
            && self.refusals_that_changed_something.is_empty()
    }

    pub fn summary(&self) -> String {
        let mut out = format!(
            "{} requests to {} operations in {:.1} s: {} answered 5xx; schemathesis {}\n\
             {} refused, {} of them changed something\n\
             audit of the books ({} accounts; {} payments completed and {} top-ups succeeded): {}\n",
            self.requests,
            self.operations,
            self.elapsed.as_secs_f64(),
            self.server_errors,
            if self.fuzzer_passed { "found nothing" } else { "found failures (above)" },
            self.refused,
            self.refusals_that_changed_something.len(),
            self.moved.2,
            self.moved.0,
            self.moved.1,
            if self.audit.is_empty() { "every invariant holds".to_string() } else { self.audit.join("\n  ") },
        );
        if self.requests < self.min_requests {
            out.push_str(&format!(
                "too few requests: {} of the {} a run must send; raise --examples\n",
                self.requests, self.min_requests
            ));
        }
        for change in &self.refusals_that_changed_something {
            out.push_str(&format!("  refused, yet: {change}\n"));
        }
        out
    }
}

/// The virtual environment with the pinned schemathesis, made when missing;
/// its `schemathesis`.
pub fn ensure_schemathesis() -> Result<PathBuf> {
    let pin = format!("schemathesis=={SCHEMATHESIS}");
    let venv = crate::python::environment(&format!("schemathesis-{SCHEMATHESIS}"), &[&pin])?;
    Ok(venv.join("bin").join("schemathesis"))
}

/// Fuzz a fresh sandbox (under a home of its own, removed after), audit it,
/// take it down.
pub fn run(exe: &Path, workspace: &Path, options: &Options) -> Result<Outcome> {
    let schemathesis = ensure_schemathesis()?;
    let home = std::env::temp_dir().join(format!("sbx-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&home).map_err(Error::io("cannot create the fuzzer's home"))?;
    let bench = Bench { exe: exe.to_path_buf(), home: home.clone(), workspace: workspace.to_path_buf() };
    let result = (|| {
        let backend = options.backend.to_string();
        bench.sandbox(&["up", "--detach", "--name", "fuzz", "--backend", &backend])?;
        let record = Record::read(&home.join("fuzz"))?;
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(Error::io("runtime"))?;
        let gateway = rt.block_on(async {
            let state = crate::control::Client::for_record(&record)?.state().await?;
            state
                .component("gateway")
                .and_then(|c| c.endpoints.first())
                .map(|e| e.url.trim_end_matches('/').to_string())
                .ok_or_else(|| Error::NotRunning("the sandbox has no `gateway` component".into()))
        })?;
        let before = rt.block_on(answered(&gateway))?;
        let started = Instant::now();
        let har = home.join("requests.har");
        let settings = workspace.join("harness").join("fuzz");
        let mut fuzzer = Command::new(&schemathesis);
        fuzzer
            .arg("--config-file")
            .arg(settings.join("schemathesis.toml"))
            .arg("run")
            .arg(format!("{gateway}/openapi.json"))
            .args(["--url", &gateway, "--checks", CHECKS, "--no-color", "--workers", "2", "--request-timeout", "40"])
            .args(["--max-examples", &options.examples.to_string(), "--report", "har", "--report-har-path"])
            .arg(&har)
            .env("PYTHONPATH", &settings)
            .current_dir(&home);
        if let Some(seed) = options.seed {
            fuzzer.args(["--seed", &seed.to_string()]);
        }
        // Its report goes to stderr, leaving stdout to the summary.
        let status = fuzzer
            .stdout(std::process::Stdio::from(
                std::io::stderr().as_fd().try_clone_to_owned().map_err(Error::io("stderr"))?,
            ))
            .status()
            .map_err(Error::io("cannot run schemathesis"))?;
        let elapsed = started.elapsed();
        rt.block_on(async {
            let after = answered(&gateway).await?;
            let document: Value = get(&format!("{gateway}/openapi.json")).await?;
            let operations = document["paths"]
                .as_object()
                .map_or(0, |p| p.values().map(|i| i.as_object().map_or(0, |o| o.len())).sum());
            let refused = refused_traces(&har)?;
            let (audit, moved) = audit(&gateway).await;
            let changed = changed_by(&gateway, &refused).await?;
            Ok(Outcome {
                requests: after.0.saturating_sub(before.0),
                server_errors: after.1.saturating_sub(before.1),
                operations,
                elapsed,
                fuzzer_passed: status.success(),
                refused: refused.len(),
                refusals_that_changed_something: changed,
                audit,
                moved,
                min_requests: options.min_requests,
            })
        })
    })();
    let _ = bench.sandbox(&["down", "fuzz"]);
    let _ = std::fs::remove_dir_all(&home);
    result
}

use std::os::fd::AsFd as _;

async fn get(url: &str) -> Result<Value> {
    let answer = reqwest::get(url).await.map_err(|e| Error::Http(format!("GET {url}: {e}")))?;
    answer.json().await.map_err(|e| Error::Http(format!("GET {url}: {e}")))
}

/// Requests the gateway answered so far, and how many of them with 5xx (its
/// `http_requests_total`).
async fn answered(gateway: &str) -> Result<(u64, u64)> {
    let url = format!("{gateway}/metrics");
    let text = reqwest::get(&url)
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| Error::Http(format!("GET {url}: {e}")))?
        .text()
        .await
        .map_err(|e| Error::Http(format!("GET {url}: {e}")))?;
    let (mut all, mut failed) = (0, 0);
    for line in text.lines().filter(|l| l.starts_with("http_requests_total{") && l.contains("service=\"gateway\"")) {
        let n: f64 = line.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0.0);
        all += n as u64;
        if line.contains("status=\"5") {
            failed += n as u64;
        }
    }
    Ok((all, failed))
}

/// The trace ids of every request the fuzzer sent that was refused (4xx),
/// from its HAR record of each request and answer.
fn refused_traces(har: &Path) -> Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(har).map_err(Error::io("cannot read schemathesis' record of its requests"))?;
    let har: Value = serde_json::from_str(&text).map_err(|e| Error::Tool(format!("schemathesis' HAR record: {e}")))?;
    let mut traces = BTreeSet::new();
    for entry in har["log"]["entries"].as_array().into_iter().flatten() {
        let status = entry["response"]["status"].as_u64().unwrap_or(0);
        if !(400..500).contains(&status) {
            continue;
        }
        let trace = entry["response"]["headers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|h| h["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case("x-trace-id")))
            .and_then(|h| h["value"].as_str());
        if let Some(trace) = trace {
            traces.insert(trace.to_string());
        }
    }
    Ok(traces)
}

/// Every event in every service's log that a refused request caused.
async fn changed_by(gateway: &str, refused: &BTreeSet<String>) -> Result<Vec<String>> {
    let front: Value = get(&format!("{gateway}/")).await?;
    let mut changed = Vec::new();
    let services: Vec<String> = front["_links"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, l)| l["href"].as_str().is_some_and(|h| h.ends_with('/') && h.len() > gateway.len() + 1))
        .filter_map(|(_, l)| l["href"].as_str().map(String::from))
        .chain(std::iter::once(format!("{gateway}/")))
        .collect();
    for service in services {
        let mut after = 0;
        loop {
            let page = get(&format!("{service}events?after={after}&limit=1000")).await?;
            let events = page["_embedded"]["events"].as_array().cloned().unwrap_or_default();
            for e in &events {
                if e["trace_id"].as_str().is_some_and(|t| refused.contains(t)) {
                    changed.push(format!("{} `{}` ({service})", e["trace_id"], e["type"]));
                }
            }
            match page["cursor"].as_i64() {
                Some(c) if !events.is_empty() && c > after => after = c,
                _ => break,
            }
        }
    }
    Ok(changed)
}

/// The bank's books, after the fuzzer: payments and top-ups finished, each
/// finished payment's hold captured or released, every account's postings
/// add up to its balance and its open holds to what it holds back, nothing
/// negative.
async fn audit(gateway: &str) -> (Vec<String>, (usize, usize, usize)) {
    let mut problems = Vec::new();
    let (mut payments, mut topups, mut accounts_audited) = (0, 0, 0);
    // What the fuzzer started finishes (the scheme and acquirer answer in ms).
    for (path, rel, pending) in [
        ("/payments/payments?limit=500", "payments", &["reserved", "submitted"][..]),
        ("/topups/topups?limit=500", "topups", &["pending"][..]),
    ] {
        let url = format!("{gateway}{path}");
        let done = crate::api::wait_for(&format!("every one of {rel} to finish"), Duration::from_secs(30), || async {
            let page = get(&url).await?;
            let open: Vec<String> = page["_embedded"][rel]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| pending.contains(&p["status"].as_str().unwrap_or_default()))
                .map(|p| format!("{} {}", p["_links"]["self"]["href"], p["status"]))
                .collect();
            Ok(if open.is_empty() { Ok(()) } else { Err(open.join(", ")) })
        })
        .await;
        if let Err(e) = done {
            problems.push(format!("unfinished: {e}"));
        }
    }
    // Every finished payment's hold is settled its way: none left open.
    if let Ok(page) = get(&format!("{gateway}/payments/payments?limit=500")).await {
        for payment in page["_embedded"]["payments"].as_array().into_iter().flatten() {
            let want = match payment["status"].as_str() {
                Some("completed") => {
                    payments += 1;
                    "captured"
                }
                Some("failed") => "released",
                _ => continue,
            };
            let (Some(url), Some(hold)) =
                (payment["_links"]["self"]["href"].as_str(), payment["_links"]["hold"]["href"].as_str())
            else {
                continue;
            };
            match get(hold).await {
                Ok(h) if h["status"] == want => {}
                Ok(h) => problems.push(format!("{url} is {}, its hold {hold} is {}", payment["status"], h["status"])),
                Err(e) => problems.push(format!("{url}: its hold: {e}")),
            }
        }
    }
    if let Ok(page) = get(&format!("{gateway}/topups/topups?limit=500")).await {
        topups =
            page["_embedded"]["topups"].as_array().into_iter().flatten().filter(|t| t["status"] == "succeeded").count();
    }
    let customers = match get(&format!("{gateway}/accounts/customers?limit=500")).await {
        Ok(c) => c,
        Err(e) => {
            problems.push(format!("cannot list customers: {e}"));
            return (problems, (payments, topups, accounts_audited));
        }
    };
    for customer in customers["_embedded"]["customers"].as_array().into_iter().flatten() {
        let Some(accounts) = customer["_links"]["accounts"]["href"].as_str() else { continue };
        let accounts = match get(accounts).await {
            Ok(a) => a,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        for account in accounts["_embedded"]["accounts"].as_array().into_iter().flatten() {
            accounts_audited += 1;
            if let Err(e) = audit_account(account, &mut problems).await {
                problems.push(e.to_string());
            }
        }
    }
    (problems, (payments, topups, accounts_audited))
}

async fn audit_account(account: &Value, problems: &mut Vec<String>) -> Result<()> {
    let url = account["_links"]["self"]["href"].as_str().unwrap_or_default().to_string();
    let amount = |v: &Value| v["amount"].as_i64().unwrap_or(i64::MIN);
    let (balance, held) = (amount(&account["balance"]), amount(&account["held"]));
    let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
    let mut next = account["_links"]["transactions"]["href"].as_str().map(|h| format!("{h}?limit=1000"));
    let mut postings = BTreeSet::new();
    while let Some(page_url) = next.take() {
        let page = get(&page_url).await?;
        let items = page["_embedded"]["transactions"].as_array().cloned().unwrap_or_default();
        for t in &items {
            if !postings.insert(t["id"].to_string()) {
                problems.push(format!("{url}: posting {} listed twice", t["id"]));
            }
            let kind = if t["kind"] == "credit" { "credit" } else { "debit" };
            *sums.entry(kind).or_default() += amount(&t["amount"]);
        }
        if !items.is_empty() {
            next = page["_links"]["next"]["href"].as_str().map(String::from);
        }
    }
    let posted = sums.get("credit").copied().unwrap_or(0) - sums.get("debit").copied().unwrap_or(0);
    if posted != balance {
        problems.push(format!("{url}: its postings add up to {posted}, its balance is {balance}"));
    }
    let holds = get(account["_links"]["holds"]["href"].as_str().unwrap_or_default()).await?;
    let open: i64 = holds["_embedded"]["holds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["status"] == "held")
        .map(|h| amount(&h["amount"]))
        .sum();
    if open != held {
        problems.push(format!("{url}: its open holds add up to {open}, it holds back {held}"));
    }
    if balance < 0 || balance - held < 0 {
        problems.push(format!("{url}: balance {balance}, held {held}: overdrawn"));
    }
    Ok(())
}
