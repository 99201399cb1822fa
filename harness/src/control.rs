//! The supervisor's control API: the one door through which the CLI (and later
//! the TUI and the e2e runner) read a sandbox's state, follow its logs and stop
//! it. HTTP on 127.0.0.1, with a bearer token kept in the sandbox's record
//! (readable by its owner only).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State as AxState};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::engine::{Bus, State};
use crate::error::{Error, Result};
use crate::logs::LogLine;
use crate::sandbox::Record;

/// What the control API may ask of the running sandbox beyond reading it.
pub trait Steer: Send + Sync + 'static {
    /// Kill a component as a crash would: its restart policy may start it
    /// again, else it stays down until restarted.
    fn kill<'a>(&'a self, component: &'a str) -> futures::future::BoxFuture<'a, Result<()>>;
    /// Stop a component if it runs and start it again; resolves once it is healthy.
    fn restart<'a>(&'a self, component: &'a str) -> futures::future::BoxFuture<'a, Result<()>>;
    /// Stop a component gracefully; it stays down until restarted (a stop is
    /// never answered by a restart policy).
    fn stop<'a>(&'a self, component: &'a str) -> futures::future::BoxFuture<'a, Result<()>>;
}

impl<B: crate::backend::Backend> Steer for crate::engine::Engine<B> {
    fn kill<'a>(&'a self, component: &'a str) -> futures::future::BoxFuture<'a, Result<()>> {
        Box::pin(crate::engine::Engine::kill(self, component))
    }

    fn restart<'a>(&'a self, component: &'a str) -> futures::future::BoxFuture<'a, Result<()>> {
        Box::pin(crate::engine::Engine::restart(self, component))
    }

    fn stop<'a>(&'a self, component: &'a str) -> futures::future::BoxFuture<'a, Result<()>> {
        Box::pin(crate::engine::Engine::stop_one(self, component))
    }
}

#[derive(Clone)]
struct Ctx {
    bus: Bus,
    steer: std::sync::Arc<dyn Steer>,
    down: CancellationToken,
    token: String,
}

pub struct Served {
    pub bus: Bus,
    pub steer: std::sync::Arc<dyn Steer>,
    /// Cancelled by `POST /down`.
    pub down: CancellationToken,
    pub token: String,
}

/// Serve the control API on `listener` until `shutdown`.
pub fn serve(listener: tokio::net::TcpListener, served: Served, shutdown: CancellationToken) {
    let Served { bus, steer, down, token } = served;
    let ctx = Ctx { bus, steer, down, token };
    let app = Router::new()
        .route("/state", get(state))
        .route("/down", post(request_down))
        .route("/components/{name}/kill", post(kill))
        .route("/components/{name}/restart", post(restart))
        .route("/components/{name}/stop", post(stop))
        .route("/logs", get(logs))
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), auth))
        .with_state(ctx);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
    });
}

async fn auth(AxState(ctx): AxState<Ctx>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == ctx.token);
    if ok { next.run(req).await } else { (StatusCode::UNAUTHORIZED, "missing or wrong control token").into_response() }
}

#[derive(Debug, Deserialize)]
struct StateQuery {
    #[serde(default)]
    follow: bool,
}

/// The state; with `follow`, newline-delimited JSON: the state now, then the
/// state after each change (rapid changes may arrive merged), ending once the
/// sandbox has stopped.
async fn state(AxState(ctx): AxState<Ctx>, Query(q): Query<StateQuery>) -> Response {
    if !q.follow {
        return Json(ctx.bus.state()).into_response();
    }
    // (receiver, whether the next state must wait for a change, whether it has stopped)
    let states = futures::stream::unfold((ctx.bus.watch(), false, false), |(mut rx, wait, stopped)| async move {
        if stopped || (wait && rx.changed().await.is_err()) {
            return None;
        }
        let state = rx.borrow_and_update().clone();
        let line = format!("{}\n", serde_json::to_string(&state).unwrap_or_default());
        let stopped = state.phase == crate::engine::Phase::Stopped;
        Some((Ok::<_, std::convert::Infallible>(line), (rx, true, stopped)))
    });
    Body::from_stream(states).into_response()
}

async fn request_down(AxState(ctx): AxState<Ctx>) -> StatusCode {
    ctx.down.cancel();
    StatusCode::ACCEPTED
}

fn no_such_component(ctx: &Ctx, name: &str) -> Option<Response> {
    if ctx.bus.state().component(name).is_some() {
        return None;
    }
    let names: Vec<String> = ctx.bus.state().components.into_iter().map(|c| c.name).collect();
    Some((StatusCode::NOT_FOUND, format!("no component `{name}`; components: {}", names.join(", "))).into_response())
}

/// The component as it is after the change.
fn component_now(ctx: &Ctx, name: &str) -> Response {
    Json(ctx.bus.state().component(name).cloned()).into_response()
}

async fn kill(AxState(ctx): AxState<Ctx>, Path(name): Path<String>) -> Response {
    if let Some(missing) = no_such_component(&ctx, &name) {
        return missing;
    }
    match ctx.steer.kill(&name).await {
        Ok(()) => {
            // Answer once the exit is recorded, so a reader sees it down.
            let mut watch = ctx.bus.watch();
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                watch.wait_for(|s| s.component(&name).is_some_and(|c| c.id.is_none())),
            )
            .await;
            component_now(&ctx, &name)
        }
        Err(e) => (StatusCode::CONFLICT, e.to_string()).into_response(),
    }
}

async fn stop(AxState(ctx): AxState<Ctx>, Path(name): Path<String>) -> Response {
    if let Some(missing) = no_such_component(&ctx, &name) {
        return missing;
    }
    match ctx.steer.stop(&name).await {
        Ok(()) => component_now(&ctx, &name),
        Err(e) => (StatusCode::CONFLICT, e.to_string()).into_response(),
    }
}

async fn restart(AxState(ctx): AxState<Ctx>, Path(name): Path<String>) -> Response {
    if let Some(missing) = no_such_component(&ctx, &name) {
        return missing;
    }
    match ctx.steer.restart(&name).await {
        Ok(()) => component_now(&ctx, &name),
        Err(e) => (StatusCode::CONFLICT, e.to_string()).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct LogsQuery {
    component: Option<String>,
    #[serde(default)]
    follow: bool,
    tail: Option<usize>,
}

/// Newline-delimited JSON [`LogLine`]s: the last `tail`, then (with `follow`)
/// every new one as it arrives.
async fn logs(AxState(ctx): AxState<Ctx>, Query(q): Query<LogsQuery>) -> Response {
    if let Some(missing) = q.component.as_deref().and_then(|c| no_such_component(&ctx, c)) {
        return missing;
    }
    // Subscribe before reading the backlog, then skip what the backlog had.
    let live = ctx.bus.logs.subscribe();
    let backlog = ctx.bus.logs.tail_of(q.component.as_deref(), q.tail.unwrap_or(200));
    let last = backlog.last().map(|l| l.seq);
    let encode =
        |l: &LogLine| Ok::<_, std::convert::Infallible>(format!("{}\n", serde_json::to_string(l).unwrap_or_default()));
    let head = futures::stream::iter(backlog.iter().map(encode).collect::<Vec<_>>());
    if !q.follow {
        return Body::from_stream(head).into_response();
    }
    let component = q.component.clone();
    let tail = futures::stream::unfold(live, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(line) => return Some((line, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .filter(move |l| {
        let keep = last.is_none_or(|s| l.seq > s) && component.as_ref().is_none_or(|c| *c == l.component);
        futures::future::ready(keep)
    })
    .map(move |l| encode(&l));
    Body::from_stream(head.chain(tail)).into_response()
}

/// The client side, for the CLI.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    pub fn for_record(record: &Record) -> Result<Self> {
        let control = record.control.as_ref().ok_or_else(|| {
            Error::NotRunning(format!("sandbox `{}` is still starting; try again in a moment", record.name))
        })?;
        Ok(Self::new(control))
    }

    /// A client of the control API at `control` (as its supervisor announced it).
    pub fn new(control: &crate::sandbox::Control) -> Self {
        Self { base: format!("http://{}", control.addr), token: control.token.clone(), http: reqwest::Client::new() }
    }

    fn error(&self, e: impl std::fmt::Display) -> Error {
        Error::Control { addr: self.base.clone(), message: e.to_string() }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = req.bearer_auth(&self.token).send().await.map_err(|e| self.error(e))?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            let status = resp.status();
            Err(self.error(format!("{status}: {}", resp.text().await.unwrap_or_default())))
        }
    }

    pub async fn state(&self) -> Result<State> {
        let resp =
            self.send(self.http.get(format!("{}/state", self.base)).timeout(std::time::Duration::from_secs(5))).await?;
        resp.json().await.map_err(|e| self.error(e))
    }

    /// Kill a component (as a crash would); returns once it is down.
    pub async fn kill(&self, component: &str) -> Result<crate::engine::Component> {
        let url = format!("{}/components/{component}/kill", self.base);
        let resp = self.send(self.http.post(url).timeout(std::time::Duration::from_secs(15))).await?;
        resp.json().await.map_err(|e| self.error(e))
    }

    /// Stop a component gracefully; returns once it is down.
    pub async fn stop(&self, component: &str) -> Result<crate::engine::Component> {
        let url = format!("{}/components/{component}/stop", self.base);
        let resp = self.send(self.http.post(url).timeout(std::time::Duration::from_secs(60))).await?;
        resp.json().await.map_err(|e| self.error(e))
    }

    /// Restart a component; returns once it is healthy again.
    pub async fn restart(&self, component: &str) -> Result<crate::engine::Component> {
        let url = format!("{}/components/{component}/restart", self.base);
        // A restart of a bank service may rebuild the bank first (minutes on a
        // cold cache); the engine bounds the wait for health itself.
        let wait = crate::engine::START_DEADLINE + std::time::Duration::from_secs(600);
        let resp = self.send(self.http.post(url).timeout(wait)).await?;
        resp.json().await.map_err(|e| self.error(e))
    }

    pub async fn down(&self) -> Result<()> {
        self.send(self.http.post(format!("{}/down", self.base)).timeout(std::time::Duration::from_secs(5)))
            .await
            .map(|_| ())
    }

    /// Log lines as they come; the stream ends when the sandbox does (or at once
    /// without `follow`).
    pub async fn logs(
        &self,
        component: Option<&str>,
        follow: bool,
        tail: usize,
    ) -> Result<impl futures::Stream<Item = Result<LogLine>> + use<>> {
        let mut query = vec![("follow", follow.to_string()), ("tail", tail.to_string())];
        if let Some(c) = component {
            query.push(("component", c.to_string()));
        }
        let resp = self.send(self.http.get(format!("{}/logs", self.base)).query(&query)).await?;
        Ok(self.ndjson(resp))
    }

    /// The sandbox's state now, then after each change; the stream ends once the
    /// sandbox has stopped (or its supervisor is gone).
    pub async fn states(&self) -> Result<impl futures::Stream<Item = Result<State>> + use<>> {
        let resp = self.send(self.http.get(format!("{}/state", self.base)).query(&[("follow", "true")])).await?;
        Ok(self.ndjson(resp))
    }

    /// A response body of newline-delimited JSON, one value per line.
    fn ndjson<T: serde::de::DeserializeOwned>(
        &self,
        resp: reqwest::Response,
    ) -> impl futures::Stream<Item = Result<T>> + use<T> {
        let base = self.base.clone();
        futures::stream::unfold((resp.bytes_stream(), Vec::<u8>::new()), move |(mut bytes, mut buf)| {
            let base = base.clone();
            async move {
                loop {
                    if let Some(i) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=i).collect();
                        let parsed = serde_json::from_slice::<T>(&line)
                            .map_err(|e| Error::Control { addr: base.clone(), message: format!("bad line: {e}") });
                        return Some((parsed, (bytes, buf)));
                    }
                    match bytes.next().await {
                        Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                        Some(Err(e)) => {
                            return Some((
                                Err(Error::Control { addr: base.clone(), message: e.to_string() }),
                                (bytes, buf),
                            ));
                        }
                        None => return None,
                    }
                }
            }
        })
    }
}

pub fn random_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub async fn bind() -> Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener =
        tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.map_err(Error::io("cannot bind the control API"))?;
    let addr = listener.local_addr().map_err(Error::io("control API address"))?;
    Ok((listener, addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fake::FakeBackend;
    use crate::engine::{Engine, Phase};
    use crate::topology::Topology;

    fn record(addr: SocketAddr, token: &str) -> Record {
        Record {
            name: "t".into(),
            dir: std::env::temp_dir(),
            backend: crate::backend::Kind::Local,
            topology: Vec::new(),
            pid: std::process::id(),
            pid_start_time: None,
            created_at: 0,
            control: Some(crate::sandbox::Control { addr: addr.to_string(), token: token.into() }),
            children: Vec::new(),
            postgres_password: None,
        }
    }

    #[tokio::test]
    async fn the_state_is_pushed_on_each_change_until_the_sandbox_stops() {
        let topology = Topology::parse(
            std::path::Path::new("t.yaml"),
            "services:\n  db:\n    ports: [\"5432\"]\n    x-sandbox: { run: postgres }\n  app:\n    ports: [\"8080\"]\n    depends_on: { db: { condition: service_healthy } }\n",
        )
        .unwrap();
        let engine =
            std::sync::Arc::new(Engine::new(FakeBackend::new().ready_after("db", 3), topology, "t").await.unwrap());
        let (listener, addr) = bind().await.unwrap();
        let shutdown = CancellationToken::new();
        let served = Served {
            bus: engine.bus().clone(),
            steer: engine.clone(),
            down: CancellationToken::new(),
            token: "secret".into(),
        };
        serve(listener, served, shutdown.clone());
        let client = Client::for_record(&record(addr, "secret")).unwrap();
        let mut states = std::pin::pin!(client.states().await.unwrap());
        let first = states.next().await.unwrap().unwrap();
        assert_eq!(first.phase, Phase::Starting);

        engine.start().await.unwrap();
        let mut seen = vec![first];
        while seen.last().unwrap().phase != Phase::Running {
            seen.push(states.next().await.unwrap().unwrap());
        }
        assert!(seen.last().unwrap().all_healthy());
        engine.stop().await.unwrap();
        let mut last = None;
        while let Some(state) = states.next().await {
            last = Some(state.unwrap());
        }
        assert_eq!(last.map(|s| s.phase), Some(Phase::Stopped), "the stream ends once the sandbox has stopped");

        let wrong = Client::for_record(&record(addr, "guess")).unwrap();
        let refused = wrong.states().await.err().unwrap().to_string();
        assert!(refused.contains("401"), "{refused}");
        shutdown.cancel();
    }
}
