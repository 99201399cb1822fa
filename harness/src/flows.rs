//! `sandbox bench flows`: the bank's money flows measured on a real sandbox.
//! Latency from `POST /payments` (through the gateway) to `payment.completed`
//! seen on Kafka; from `payment.created` to `alert.raised`, both seen on Kafka;
//! sustained payments per second with many concurrent payers; then an audit
//! that every payment completed and every account was debited exactly once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// Seen on Kafka: (event type, id) -> when, and when the bank wrote the event
/// (its `occurred_at`).
type Seen = Arc<Mutex<HashMap<(String, String), (Instant, time::OffsetDateTime)>>>;

fn spawn_reader(brokers: &str, topics: &[&str], seen: Seen) -> Result<tokio::task::JoinHandle<()>> {
    let group = format!("bench-{}", uuid::Uuid::new_v4());
    let consumer = crate::topics::consumer(brokers, &group, Duration::from_millis(10))?;
    consumer.subscribe(topics).map_err(|e| Error::Kafka(format!("cannot subscribe: {e}")))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok(msg) = consumer.recv().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let Some(Ok(event)) = msg.payload().map(serde_json::from_slice::<wire::Envelope>) else { continue };
            let id = match event.kind.as_str() {
                "payment.completed" | "payment.failed" => event.data["payment_id"].as_str().map(String::from),
                "payment.created" => event.data["payment"].as_str().map(String::from),
                "alert.raised" => event.data["transaction"].as_str().map(String::from),
                _ => None,
            };
            if let Some(id) = id {
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((event.kind.clone(), id), (Instant::now(), event.occurred_at));
            }
        }
    }))
}

/// Milliseconds of CPU the machine has spent busy (user, nice, system, irq,
/// softirq; not idle, iowait or steal), from Linux's `/proc/stat`.
pub(crate) fn cpu_busy() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<f64> = stat.lines().next()?.split_whitespace().skip(1).map_while(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal: ticks of USER_HZ, which
    // Linux fixes at 100 a second for this file.
    let busy = fields.first()? + fields.get(1)? + fields.get(2)? + fields.get(5)? + fields.get(6)?;
    Some(busy * 10.0)
}

/// Milliseconds of CPU each process has spent (user and system), by what it
/// is: `postgres` (every backend together), a bank service by its command
/// (`bank payments`), a sandbox process by its subcommand (`sandbox broker`,
/// the providers by their spec), this bench itself; from Linux's
/// `/proc/<pid>/stat`. A process that exits in between is not counted.
fn cpu_by_process() -> HashMap<String, f64> {
    let mut by = HashMap::new();
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else { return by };
    for entry in dir.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let (Ok(stat), Ok(cmdline)) =
            (std::fs::read_to_string(entry.path().join("stat")), std::fs::read(entry.path().join("cmdline")))
        else {
            continue;
        };
        // After the command's name in parentheses: state is field 3, utime 14, stime 15.
        let Some((comm, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
        let ms = (ticks(11) + ticks(12)) * 10.0;
        if ms == 0.0 {
            continue;
        }
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let program = args.first().and_then(|a| a.rsplit('/').next()).unwrap_or_default();
        let label = if pid == me {
            "this bench (load and Kafka reader)".to_string()
        } else if comm.ends_with("(postgres") || program == "postgres" {
            "postgres".to_string()
        } else if program.starts_with("bank") {
            // `bank`, or a copy of it named in SANDBOX_BANK_BIN.
            format!("bank {}", args[1..].join(" "))
        } else if program == "sandbox" && args.iter().any(|a| a == "provider") {
            let spec = args.iter().skip_while(|a| *a != "--spec").nth(1).map(std::path::Path::new);
            format!("sandbox provider {}", spec.and_then(|s| s.file_stem()).map_or("?".into(), |s| s.to_string_lossy()))
        } else if program == "sandbox" && args.iter().any(|a| a == "broker") {
            "sandbox broker".to_string()
        } else if program == "sandbox" {
            "sandbox (the supervisor)".to_string()
        } else {
            "other processes".to_string()
        };
        *by.entry(label).or_insert(0.0) += ms;
    }
    by
}

/// The CPU per payment of each process between two [`cpu_by_process`]
/// readings, the largest first, as table rows.
fn cpu_rows(before: &HashMap<String, f64>, after: &HashMap<String, f64>, payments: usize) -> String {
    let mut rows: Vec<(String, f64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), (v - before.get(k).copied().unwrap_or(0.0)) / payments.max(1) as f64))
        .filter(|(_, ms)| *ms >= 0.05)
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    rows.iter().map(|(k, ms)| format!("| CPU per payment: `{k}` | {ms:.2} ms |\n")).collect()
}

/// A connection to `server`'s `postgres` database, where pg_stat_statements'
/// view is installed (the local backend preloads the module).
pub(crate) async fn statements_view(server: &str) -> Result<sqlx::PgConnection, sqlx::Error> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&format!("{server}/postgres")).await?;
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").execute(&mut conn).await?;
    Ok(conn)
}

/// Statements PostgreSQL has run, by database: (all, of which `BEGIN`,
/// `COMMIT` or `ROLLBACK`, milliseconds in them), from pg_stat_statements
/// (which the local backend preloads). Empty when the server cannot say.
async fn statement_calls(server: &str) -> HashMap<String, (f64, f64, f64)> {
    use sqlx::Row;
    let Ok(mut conn) = statements_view(server).await else {
        return HashMap::new();
    };
    let rows = sqlx::query(
        "SELECT d.datname, sum(s.calls)::float8, \
                coalesce(sum(s.calls) FILTER (WHERE upper(s.query) IN ('BEGIN', 'COMMIT', 'ROLLBACK')), 0)::float8, \
                sum(s.total_exec_time)::float8 \
         FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid GROUP BY d.datname",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap_or_default();
    rows.iter()
        .filter_map(|r| Some((r.try_get(0).ok()?, (r.try_get(1).ok()?, r.try_get(2).ok()?, r.try_get(3).ok()?))))
        .collect()
}

/// Statements per payment of each database between two [`statement_calls`]
/// readings, the most first, as table rows.
fn statement_rows(
    before: &HashMap<String, (f64, f64, f64)>,
    after: &HashMap<String, (f64, f64, f64)>,
    payments: usize,
) -> String {
    let n = payments.max(1) as f64;
    let mut rows: Vec<(String, f64, f64, f64)> = after
        .iter()
        .map(|(db, (calls, tx, ms))| {
            let (c0, t0, m0) = before.get(db).copied().unwrap_or_default();
            (db.clone(), (calls - c0) / n, (tx - t0) / n, (ms - m0) / n)
        })
        .filter(|r| r.1 >= 0.05)
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = rows.iter().map(|r| r.1).sum();
    let mut out = format!("| PostgreSQL statements per payment, all databases | {total:.1} |\n");
    for (db, calls, tx, ms) in rows {
        out.push_str(&format!(
            "| PostgreSQL statements per payment: `{db}` (of which BEGIN/COMMIT; time in them) | {calls:.1} ({tx:.1}; {ms:.2} ms) |\n"
        ));
    }
    out
}

async fn wait_seen(seen: &Seen, kind: &str, id: &str, deadline: Instant) -> Result<Instant> {
    Ok(wait_event(seen, kind, id, deadline).await?.0)
}

/// When the event was seen on Kafka, and when the bank wrote it.
async fn wait_event(seen: &Seen, kind: &str, id: &str, deadline: Instant) -> Result<(Instant, time::OffsetDateTime)> {
    loop {
        if let Some(t) = seen.lock().unwrap_or_else(|e| e.into_inner()).get(&(kind.to_string(), id.to_string())) {
            return Ok(*t);
        }
        if Instant::now() > deadline {
            return Err(Error::Kafka(format!("{kind} for {id} never reached Kafka")));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

struct Api {
    http: reqwest::Client,
    root: Value,
}

impl Api {
    async fn call(&self, method: reqwest::Method, url: &str, body: Option<Value>, key: bool) -> Result<Value> {
        let mut req = self.http.request(method, url);
        if key {
            req = req.header("idempotency-key", uuid::Uuid::new_v4().to_string());
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| Error::Http(format!("{url}: {e}")))?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(Error::Http(format!("{url}: {status} {value}")));
        }
        Ok(value)
    }

    fn link(v: &Value, rel: &str) -> Result<String> {
        v["_links"][rel]["href"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| Error::Http(format!("no `{rel}` link in {v}")))
    }

    async fn service(&self, name: &str) -> Result<Value> {
        self.call(reqwest::Method::GET, &Self::link(&self.root, name)?, None, false).await
    }

    async fn account_with(&self, accounts: &Value, pence: i64) -> Result<Value> {
        let customers = Self::link(accounts, "customers")?;
        let c = self.call(reqwest::Method::POST, &customers, Some(json!({ "name": "Bench" })), false).await?;
        let a = self.call(reqwest::Method::POST, &Self::link(&c, "open-account")?, Some(json!({})), false).await?;
        let credit = Self::link(&a, "credit")?;
        self.call(reqwest::Method::POST, &credit, Some(json!({ "amount": pence, "currency": "GBP" })), true).await?;
        Ok(a)
    }

    async fn pay(&self, payments: &str, from: &Value, pence: i64, to: &str) -> Result<Value> {
        let body = json!({
            "from": Self::link(from, "self")?,
            "to": { "name": "Payee", "sort_code": "20-00-00", "account_number": to },
            "amount": { "amount": pence, "currency": "GBP" },
            "reference": "bench",
        });
        self.call(reqwest::Method::POST, payments, Some(body), true).await
    }
}

fn pct(sorted: &[Duration], p: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let d = sorted[((sorted.len() as f64 - 1.0) * p).round() as usize];
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// What the bench sends.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Sequential payments for the latency figures.
    pub payments: usize,
    /// Concurrent payers for the throughput figure.
    pub workers: usize,
    /// How long the payers send payments.
    pub seconds: u64,
    /// Payments a second the payers are paced to together; `None`: each sends
    /// as soon as its last payment was accepted.
    pub rate: Option<f64>,
}

/// Measure against the sandbox whose gateway and broker are given.
pub async fn measure(gateway: &str, brokers: &str, scheme: &str, postgres: &str, load: Load) -> Result<String> {
    let Load { payments, workers, seconds, rate } = load;
    let seen: Seen = Arc::default();
    let reader = spawn_reader(brokers, &["payments.events", "monitoring.events"], seen.clone())?;
    let http =
        reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(|e| Error::Http(e.to_string()))?;
    let root = Api { http: http.clone(), root: Value::Null }
        .call(reqwest::Method::GET, &format!("{gateway}/"), None, false)
        .await?;
    let api = Arc::new(Api { http, root });
    let accounts = api.service("accounts").await?;
    let payments_root = api.service("payments").await?;
    let payments_url = Api::link(&payments_root, "payments")?;

    // 1. Latency, one payment at a time; every tenth is large enough to alert.
    let payer = api.account_with(&accounts, 1_000_000_000).await?;
    let mut completion = Vec::new();
    let mut alerting = Vec::new();
    for i in 0..payments {
        let large = i % 10 == 9;
        let started = Instant::now();
        let p = api
            .pay(&payments_url, &payer, if large { 600_000 } else { 1_000 }, &format!("{:08}", 20_000_000 + i))
            .await?;
        let id = p["id"].as_str().unwrap_or_default().to_string();
        let url = Api::link(&p, "self")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let done = wait_seen(&seen, "payment.completed", &id, deadline).await?;
        completion.push(done - started);
        if large {
            let created = wait_seen(&seen, "payment.created", &url, deadline).await?;
            let alert = wait_seen(&seen, "alert.raised", &url, deadline).await?;
            alerting.push(alert.saturating_duration_since(created));
        }
    }
    completion.sort();
    alerting.sort();

    // 2. Throughput: concurrent payers, each from its own account, for `seconds`.
    const START: i64 = 100_000_000;
    let mut payers = Vec::new();
    for _ in 0..workers {
        payers.push(api.account_with(&accounts, START).await?);
    }
    let window = Duration::from_secs(seconds);
    let started = Instant::now();
    let started_at = time::OffsetDateTime::now_utc();
    let cpu_before = cpu_busy();
    let processes_before = cpu_by_process();
    let statements_before = statement_calls(postgres).await;
    let mut tasks = tokio::task::JoinSet::new();
    for (w, payer) in payers.iter().cloned().enumerate() {
        let (api, url) = (api.clone(), payments_url.clone());
        tasks.spawn(async move {
            let mut ids = Vec::new();
            let mut n = 0;
            // Paced: each payer one payment every `workers / rate` seconds,
            // the payers spread over that interval.
            let pace = rate.map(|r| Duration::from_secs_f64(workers as f64 / r));
            let mut due = started + pace.map_or(Duration::ZERO, |p| p.mul_f64(w as f64 / workers as f64));
            while started.elapsed() < window {
                if let Some(pace) = pace {
                    tokio::time::sleep_until(due.into()).await;
                    due += pace;
                    if started.elapsed() >= window {
                        break;
                    }
                }
                let sent = Instant::now();
                let p = api.pay(&url, &payer, 100, &format!("{:08}", 30_000_000 + w * 10_000 + n % 50)).await?;
                ids.push((p["id"].as_str().unwrap_or_default().to_string(), sent));
                n += 1;
            }
            Ok::<_, Error>(ids)
        });
    }
    let mut ids = Vec::new();
    while let Some(r) = tasks.join_next().await {
        ids.extend(r.map_err(|e| Error::Panicked(e.to_string()))??);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut last, mut written) = (started, started_at);
    let mut under_load = Vec::new();
    for (id, sent) in &ids {
        let (seen_at, occurred_at) = wait_event(&seen, "payment.completed", id, deadline).await?;
        (last, written) = (last.max(seen_at), written.max(occurred_at));
        under_load.push(seen_at.saturating_duration_since(*sent));
    }
    under_load.sort();
    // The whole machine's CPU from the first payment to the last seen
    // completed: a cost per payment that other tenants of the machine (steal)
    // and the run's timing move less than they move the rate.
    let cpu_per_payment = cpu_before.zip(cpu_busy()).map(|(a, b)| (b - a) / ids.len().max(1) as f64);
    let per_process = cpu_rows(&processes_before, &cpu_by_process(), ids.len());
    let per_database = statement_rows(&statements_before, &statement_calls(postgres).await, ids.len());
    let sustained = ids.len() as f64 / (last - started).as_secs_f64();
    // The same payments by when the bank completed them (the event's time):
    // the bank's own rate, without the connector, the broker and the reader.
    let bank_rate = ids.len() as f64 / (written - started_at).as_seconds_f64().max(0.001);

    // 3. Audit: every payer debited exactly once per payment.
    let per_payer = ids.len();
    let mut debited = 0i64;
    let mut postings = 0u64;
    for payer in &payers {
        let a = api.call(reqwest::Method::GET, &Api::link(payer, "self")?, None, false).await?;
        debited += START - a["balance"]["amount"].as_i64().unwrap_or(0);
        let mut url = Api::link(payer, "transactions")?;
        loop {
            let page = api.call(reqwest::Method::GET, &url, None, false).await?;
            let n = page["count"].as_u64().unwrap_or(0);
            postings += page["_embedded"]["transactions"]
                .as_array()
                .map_or(0, |t| t.iter().filter(|t| t["kind"] == "debit").count() as u64);
            if n == 0 {
                break;
            }
            url = Api::link(&page, "next")?;
        }
    }
    // 4. A slow scheme: every answer 3 s late, 30 payments in flight, while
    // the payments service's health, a read and new payments are timed.
    let slow = while_slow(&api, &seen, gateway, scheme, &accounts, &payments_url).await?;
    reader.abort();
    let ok = debited == per_payer as i64 * 100 && postings == per_payer as u64;
    let mut out = String::new();
    out.push_str("| measure | value |\n|---|---|\n");
    out.push_str(&format!(
        "| `POST /payments` to `payment.completed` on Kafka, p50 ({} payments) | {} |\n",
        completion.len(),
        pct(&completion, 0.5)
    ));
    out.push_str(&format!("| `POST /payments` to `payment.completed` on Kafka, p99 | {} |\n", pct(&completion, 0.99)));
    out.push_str(&format!(
        "| `payment.created` to `alert.raised` on Kafka, p50 ({} alerts) | {} |\n",
        alerting.len(),
        pct(&alerting, 0.5)
    ));
    out.push_str(&format!("| `payment.created` to `alert.raised` on Kafka, p99 | {} |\n", pct(&alerting, 0.99)));
    let offered = rate.map_or(String::new(), |r| format!(", paced to {r:.0}/s"));
    out.push_str(&format!(
        "| sustained payments/s, {workers} concurrent payers{offered}, {seconds} s, to completion | {sustained:.0} |\n"
    ));
    out.push_str(&format!(
        "| the same, completed in the bank (by the events' time, before Kafka) | {bank_rate:.0} |\n"
    ));
    out.push_str(&format!(
        "| at that load, `POST /payments` to `payment.completed` on Kafka, p50 / p99 | {} / {} |\n",
        pct(&under_load, 0.5),
        pct(&under_load, 0.99)
    ));
    out.push_str(&format!(
        "| CPU per payment, the whole machine, throughput phase | {} |\n",
        cpu_per_payment.map_or("n/a (no /proc/stat)".to_string(), |ms| format!("{ms:.1} ms"))
    ));
    out.push_str(&per_process);
    out.push_str(&per_database);
    out.push_str(&format!(
        "| audit: {} payments, {} debit postings, {} pence debited (expected {}) | {} |\n",
        per_payer,
        postings,
        debited,
        per_payer * 100,
        if ok { "none lost, none duplicated" } else { "MISMATCH" }
    ));
    out.push_str(&slow);
    if !ok {
        return Err(Error::Check(format!("the audit failed:\n{out}")));
    }
    Ok(out)
}

/// Phase 4 of [`measure`]: the scheme slow (3 s) for every request, 30
/// payments in flight; for 5 s, every 100 ms, `GET /payments/health`, a read of
/// one of them and a new payment are timed; then the fault is cleared and every
/// payment must complete, each debited once.
async fn while_slow(
    api: &Api,
    seen: &Seen,
    gateway: &str,
    scheme: &str,
    accounts: &Value,
    payments_url: &str,
) -> Result<String> {
    let faults = format!("{scheme}/__admin/faults");
    api.call(reqwest::Method::POST, &faults, Some(json!({ "kind": "slow", "delay_ms": 3_000 })), false).await?;
    let measured = async {
        const START: i64 = 10_000_000;
        let payer = api.account_with(accounts, START).await?;
        let mut made = Vec::new();
        for i in 0..30 {
            made.push(api.pay(payments_url, &payer, 100, &format!("{:08}", 40_000_000 + i)).await?);
        }
        let first = Api::link(&made[0], "self")?;
        let health = format!("{gateway}/payments/health");
        let (mut health_ms, mut read_ms, mut write_ms, mut not_ok) = (Vec::new(), Vec::new(), Vec::new(), 0);
        let until = Instant::now() + Duration::from_secs(5);
        let mut i = 0;
        while Instant::now() < until {
            let t = Instant::now();
            let status = api.http.get(&health).send().await.map_err(|e| Error::Http(format!("{health}: {e}")))?.status();
            health_ms.push(t.elapsed());
            not_ok += usize::from(!status.is_success());
            let t = Instant::now();
            api.call(reqwest::Method::GET, &first, None, false).await?;
            read_ms.push(t.elapsed());
            let t = Instant::now();
            made.push(api.pay(payments_url, &payer, 100, &format!("{:08}", 40_001_000 + i)).await?);
            write_ms.push(t.elapsed());
            i += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        api.call(reqwest::Method::DELETE, &faults, None, false).await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        for p in &made {
            wait_seen(seen, "payment.completed", p["id"].as_str().unwrap_or_default(), deadline).await?;
        }
        let a = api.call(reqwest::Method::GET, &Api::link(&payer, "self")?, None, false).await?;
        let debited = START - a["balance"]["amount"].as_i64().unwrap_or(0);
        for v in [&mut health_ms, &mut read_ms, &mut write_ms] {
            v.sort();
        }
        let row = |what: &str, v: &[Duration]| {
            format!("| while the scheme answers in 3 s: {what}, p50 / p99 | {} / {} |\n", pct(v, 0.5), pct(v, 0.99))
        };
        let mut out = row(&format!("`GET /payments/health` ({} of {} not 200)", not_ok, health_ms.len()), &health_ms);
        out.push_str(&row("`GET` a payment", &read_ms));
        out.push_str(&row("a new `POST /payments`", &write_ms));
        let expected = made.len() as i64 * 100;
        out.push_str(&format!(
            "| while the scheme answers in 3 s: {} payments, then all completed, {debited} pence debited (expected {expected}) | {} |\n",
            made.len(),
            if debited == expected { "none lost, none duplicated" } else { "MISMATCH" }
        ));
        if debited != expected || not_ok > 0 {
            return Err(Error::Check(format!("the slow-scheme phase failed:\n{out}")));
        }
        Ok(out)
    }
    .await;
    // Whatever happened, the scheme is left answering at once.
    let _ = api.call(reqwest::Method::DELETE, &faults, None, false).await;
    measured
}
