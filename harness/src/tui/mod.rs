//! The TUI (`sandbox up` in a terminal, `sandbox tui`): a client of the same
//! control API, Kafka reader and admin APIs the CLI and the e2e runner use.
//! State, intent and drawing are apart (`app`, the run loop here, `ui`); one
//! `select!` takes keys, arrivals and a redraw tick, and redraws at most every
//! [`FRAME`] however fast lines arrive.

pub mod app;
#[cfg(test)]
mod tests;
mod ui;

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;

use app::{App, Command, Msg, ProviderView};
use harness::control;
use harness::providers::{AdminClient, Fault};

/// The shortest time between two redraws: 20 frames a second at most.
const FRAME: Duration = Duration::from_millis(50);
const PROVIDERS_EVERY: Duration = Duration::from_secs(1);

/// Restores the terminal however the TUI ends (ratatui's own panic hook
/// covers a panic).
struct Terminal(ratatui::DefaultTerminal);

impl Drop for Terminal {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// What commands need to reach the sandbox.
#[derive(Clone)]
struct Ctx {
    control: control::Client,
    admins: Vec<AdminClient>,
    http: reqwest::Client,
    tx: mpsc::UnboundedSender<Msg>,
    sandbox: String,
    home: std::path::PathBuf,
}

/// The feature files under the workspace's `scenarios/`, with their scenarios.
fn features() -> Vec<app::FeatureView> {
    let Some(dir) = std::env::current_dir().ok().and_then(|d| harness::find_workspace(&d)).map(|w| w.join("scenarios"))
    else {
        return Vec::new();
    };
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "feature")).collect())
        .unwrap_or_default();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|path| {
            let f = cucumber::gherkin::Feature::parse_path(&path, cucumber::gherkin::GherkinEnv::default()).ok()?;
            let scenarios = f.scenarios.iter().map(|s| s.name.clone()).collect();
            Some(app::FeatureView { path, name: f.name, scenarios })
        })
        .collect()
}

/// Run the TUI on the sandbox behind `control` until the user quits.
pub async fn run(
    control: control::Client,
    sandbox: &str,
    owned: bool,
    home: &harness::sandbox::Home,
) -> anyhow::Result<()> {
    let state = control.state().await?;
    let url = |name: &str| state.component(name).and_then(|c| c.endpoints.first()).map(|e| e.url.clone());
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(follow_state(control.clone(), tx.clone()));
    tasks.spawn(follow_logs(control.clone(), tx.clone()));
    if let Some(brokers) = url("kafka") {
        tasks.spawn(follow_events(brokers, tx.clone()));
    }
    let admins: Vec<AdminClient> =
        harness::e2e::PROVIDERS.iter().filter_map(|p| url(p).map(|u| AdminClient::new(p, &u))).collect();
    tasks.spawn(poll_providers(admins.clone(), tx.clone()));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let gateway = url("gateway");

    let mut app = App::new(sandbox, owned);
    app.features = features();
    let ctx = Ctx {
        control: control.clone(),
        admins: admins.clone(),
        http: http.clone(),
        tx: tx.clone(),
        sandbox: sandbox.to_string(),
        home: home.root.clone(),
    };
    let mut terminal = Terminal(ratatui::try_init()?);
    // The explorer opens the front door once the gateway answers (a sandbox
    // `up` just started has none yet), retrying every couple of seconds.
    let mut front_door_asked: Option<std::time::Instant> = None;
    let mut document_asked: Option<std::time::Instant> = None;
    let mut keys = crossterm::event::EventStream::new();
    let mut tick = tokio::time::interval(FRAME);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            key = keys.next() => match key {
                Some(Ok(crossterm::event::Event::Key(k))) if k.kind == crossterm::event::KeyEventKind::Press => {
                    match app.on_key(k) {
                        Some(Command::Quit) => break,
                        Some(cmd) => execute(cmd, &ctx),
                        None => {}
                    }
                    // A key is answered at once, not at the next frame.
                    terminal.0.draw(|f| ui::draw(&app, f))?;
                    app.dirty = false;
                }
                Some(Ok(crossterm::event::Event::Resize(..))) => app.dirty = true,
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
            Some(msg) = rx.recv() => {
                app.on_msg(msg);
                // Take everything already waiting: one redraw for a burst.
                while let Ok(more) = rx.try_recv() {
                    app.on_msg(more);
                }
            }
            _ = tick.tick() => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                if now != app.now {
                    app.now = now;
                    app.dirty |= app.pane == app::Pane::Services;
                }
                let gateway_up = app.state.as_ref().and_then(|s| s.component("gateway"))
                    .is_some_and(|c| c.status == harness::engine::Status::Healthy);
                if let Some(g) = &gateway
                    && app.explorer.is_empty()
                    && gateway_up
                    && front_door_asked.is_none_or(|t| t.elapsed() > Duration::from_secs(2))
                {
                    front_door_asked = Some(std::time::Instant::now());
                    execute(Command::Open(format!("{g}/")), &ctx);
                }
                // The bank's document, for the explorer's forms: read once, with the front door.
                if let Some(g) = &gateway
                    && app.document.is_none()
                    && gateway_up
                    && document_asked.is_none_or(|t| t.elapsed() > Duration::from_secs(2))
                {
                    document_asked = Some(std::time::Instant::now());
                    let (http, tx, url) = (ctx.http.clone(), ctx.tx.clone(), format!("{g}/openapi.json"));
                    tokio::spawn(async move {
                        let read = async { anyhow::Ok(http.get(&url).send().await?.error_for_status()?.json().await?) };
                        if let Ok(document) = read.await {
                            let _ = tx.send(Msg::Document(document));
                        }
                    });
                }
                if app.dirty {
                    terminal.0.draw(|f| ui::draw(&app, f))?;
                    app.dirty = false;
                }
            }
        }
    }
    tasks.abort_all();
    drop(terminal);
    Ok(())
}

/// Do what a key asked, off the UI's task; the outcome comes back as a message.
fn execute(cmd: Command, ctx: &Ctx) {
    let (control, tx, http) = (ctx.control.clone(), ctx.tx.clone(), ctx.http.clone());
    let admin = |name: &str| ctx.admins.iter().find(|a| a.name() == name).cloned();
    match cmd {
        Command::Quit => {}
        Command::Submit { method, href, body } => {
            tokio::spawn(async move {
                let note = match submit(&http, &method, &href, &body).await {
                    Ok((status, answer)) if status.is_success() => {
                        let at = answer["_links"]["self"]["href"].as_str().unwrap_or(&href).to_string();
                        let _ = tx.send(Msg::Resource(at, answer));
                        format!("{method} {href}: {status}")
                    }
                    Ok((status, answer)) => format!(
                        "{method} {href}: {status}: {}",
                        answer["detail"].as_str().map_or_else(|| answer.to_string(), String::from)
                    ),
                    Err(e) => format!("{method} {href}: {e}"),
                };
                let _ = tx.send(Msg::Note(note));
            });
        }
        Command::RunScenarios(feature) => {
            let (home, sandbox) = (ctx.home.clone(), ctx.sandbox.clone());
            tokio::spawn(async move {
                let passed = run_scenarios(&home, &sandbox, feature, &tx).await.unwrap_or_else(|e| {
                    let _ = tx.send(Msg::RunLine(format!("cannot run the scenarios: {e}")));
                    false
                });
                let _ = tx.send(Msg::RunDone(passed));
            });
        }
        Command::Restart(name) => {
            let _ = tx.send(Msg::Note(format!("restarting {name}…")));
            tokio::spawn(async move {
                let note = match control.restart(&name).await {
                    Ok(c) => {
                        format!(
                            "{name}: {} ({})",
                            c.status.label(),
                            c.id.as_ref().map_or("not running".into(), ToString::to_string)
                        )
                    }
                    Err(e) => format!("{name}: {e}"),
                };
                let _ = tx.send(Msg::Note(note));
            });
        }
        Command::Stop(name) => {
            let _ = tx.send(Msg::Note(format!("stopping {name}…")));
            tokio::spawn(async move {
                let note = match control.stop(&name).await {
                    Ok(_) => format!("{name} stopped; r starts it again"),
                    Err(e) => format!("{name}: {e}"),
                };
                let _ = tx.send(Msg::Note(note));
            });
        }
        Command::Open(url) => {
            tokio::spawn(async move {
                let got = async {
                    let resp = http.get(&url).send().await?;
                    let status = resp.status();
                    let body: serde_json::Value = resp.json().await?;
                    anyhow::Ok((status, body))
                }
                .await;
                let _ = match got {
                    Ok((status, body)) if status.is_success() => tx.send(Msg::Resource(url, body)),
                    Ok((status, body)) => tx.send(Msg::Note(format!("{url}: {status} {body}"))),
                    Err(e) => tx.send(Msg::Note(format!("{url}: {e}"))),
                };
            });
        }
        Command::AddFault { provider, kind, remaining } => {
            let Some(a) = admin(&provider) else { return };
            tokio::spawn(async move {
                let fault = Fault { id: 0, kind, scope: None, remaining, delay_ms: Some(1500), reason: None };
                let note = match a.add_fault(&fault).await {
                    Ok(f) => format!(
                        "{provider}: fault #{} {:?} for {}; c clears",
                        f.id,
                        f.kind,
                        remaining.map_or("every request".to_string(), |n| format!("the next {n}"))
                    ),
                    Err(e) => e.to_string(),
                };
                let _ = tx.send(Msg::Note(note));
            });
        }
        Command::ClearFaults(provider) => {
            let Some(a) = admin(&provider) else { return };
            tokio::spawn(async move {
                let note = match a.clear_all_faults().await {
                    Ok(()) => format!("{provider}: faults cleared"),
                    Err(e) => e.to_string(),
                };
                let _ = tx.send(Msg::Note(note));
            });
        }
    }
}

/// The sandbox's state as the supervisor pushes it.
async fn follow_state(control: control::Client, tx: mpsc::UnboundedSender<Msg>) {
    follow(|| control.states(), Msg::State, tx).await;
}

async fn follow_logs(control: control::Client, tx: mpsc::UnboundedSender<Msg>) {
    follow(|| control.logs(None, true, 1000), Msg::Log, tx).await;
}

/// Forward a control API stream to the dashboard, reconnecting (each second)
/// when it breaks while the sandbox still runs, until the dashboard closes.
async fn follow<T, S, F>(open: impl Fn() -> F, msg: impl Fn(T) -> Msg, tx: mpsc::UnboundedSender<Msg>)
where
    S: futures::Stream<Item = harness::Result<T>>,
    F: std::future::Future<Output = harness::Result<S>>,
{
    loop {
        if let Ok(items) = open().await {
            let mut items = std::pin::pin!(items);
            while let Some(Ok(item)) = items.next().await {
                if tx.send(msg(item)).is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn follow_events(brokers: String, tx: mpsc::UnboundedSender<Msg>) {
    // The topics exist once the connector has started: try until they do.
    let topics = loop {
        // A viewer need not see an event within milliseconds: a longer fetch
        // wait keeps the reader from waking the process a hundred times a second.
        match harness::topics::Topics::start_with(&brokers, Duration::from_millis(250)).await {
            Ok(t) => break t,
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    };
    let mut read = 0;
    loop {
        let (new, n) = topics.since(read);
        read = n;
        for s in new {
            if tx.send(Msg::Event(app::event_row(&s.topic, s.offset, &s.event))).is_err() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn poll_providers(admins: Vec<AdminClient>, tx: mpsc::UnboundedSender<Msg>) {
    let mut last: Vec<ProviderView> = Vec::new();
    loop {
        let mut views = Vec::new();
        for a in &admins {
            let journal = a.journal(None).await.unwrap_or_default();
            let faults = a.faults().await.unwrap_or_default();
            views.push(ProviderView { name: a.name().to_string(), journal, faults });
        }
        if views != last {
            last = views.clone();
            if tx.send(Msg::Providers(views)).is_err() {
                return;
            }
        }
        tokio::time::sleep(PROVIDERS_EVERY).await;
    }
}

/// `sandbox test` against this sandbox as a child process (stopped if the TUI
/// quits), its output streamed in line by line.
async fn run_scenarios(
    home: &std::path::Path,
    sandbox: &str,
    feature: Option<std::path::PathBuf>,
    tx: &mpsc::UnboundedSender<Msg>,
) -> anyhow::Result<bool> {
    use tokio::io::AsyncBufReadExt;
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.arg("--home").arg(home).args(["test", "--name", sandbox]);
    if let Some(f) = feature {
        cmd.arg(f);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let out = tokio::io::BufReader::new(child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?).lines();
    let err = tokio::io::BufReader::new(child.stderr.take().ok_or_else(|| anyhow::anyhow!("no stderr"))?).lines();
    tokio::join!(forward(out, tx), forward(err, tx));
    Ok(child.wait().await?.success())
}

async fn forward<R: tokio::io::AsyncBufRead + Unpin>(mut lines: tokio::io::Lines<R>, tx: &mpsc::UnboundedSender<Msg>) {
    while let Ok(Some(line)) = lines.next_line().await {
        let _ = tx.send(Msg::RunLine(line));
    }
}

/// An action from the explorer's form: the body must be JSON; every action
/// gets an Idempotency-Key of its own, as the bank's money moves require.
async fn submit(
    http: &reqwest::Client,
    method: &str,
    href: &str,
    body: &str,
) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
    let request = http
        .request(reqwest::Method::from_bytes(method.as_bytes())?, href)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string());
    // An action that takes no body (capture, release) is sent without one.
    let request = if body.is_empty() {
        request
    } else {
        let json: serde_json::Value =
            serde_json::from_str(body).map_err(|e| anyhow::anyhow!("the body is not JSON ({e}); nothing was sent"))?;
        request.json(&json)
    };
    let resp = request.send().await?;
    let status = resp.status();
    Ok((status, resp.json().await.unwrap_or_default()))
}
