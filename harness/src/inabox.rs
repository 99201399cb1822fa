//! The whole bank in one container (`bank-sandbox/bank-in-a-box`): the local
//! backend inside it (PostgreSQL, the broker, the provider mocks, every
//! service), behind fixed ports on every interface of the container:
//!
//! | port | what |
//! |------|------|
//! | 8080 | the gateway |
//! | 8081, 8082, 8083 | the payment scheme's, the card acquirer's and the screening vendor's mocks (`/__admin`) |
//! | 9092 | Kafka, advertised as the host's mapped port once told ([`advertise`]) |
//! | 5432 | PostgreSQL: user `bank`, the password in `POSTGRES_PASSWORD`, one database per service |
//!
//! The ports open when every component is healthy; the container's health
//! check (`sandbox box health`) passes while they all are. A Kafka client
//! outside the container needs the broker to name an address it can reach,
//! which only the engine knows (the host port it mapped 9092 to): the
//! starter says it once the container runs, `sandbox box advertise host:port`
//! (what testcontainers modules do for Kafka), until then the broker is
//! advertised as `<container hostname>:9092`, right for containers on a
//! shared network.
//!
//! The box talks to those commands over a Unix socket in its home (0700).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::engine::State;
use crate::error::{Error, Result};
use crate::sandbox::Home;
use crate::start::{Options as StartOptions, Sandbox};
use crate::supervisor::Observer;

/// The gateway's port.
pub const GATEWAY_PORT: u16 = 8080;
/// Each provider mock's port, by name.
pub const PROVIDER_PORTS: [(&str, u16); 3] =
    [("payment-scheme", 8081), ("card-acquirer", 8082), ("screening-vendor", 8083)];
/// The broker's port.
pub const KAFKA_PORT: u16 = 9092;
/// PostgreSQL's port.
pub const POSTGRES_PORT: u16 = 5432;
/// PostgreSQL's superuser, as compose/bank.yaml names it.
pub const POSTGRES_USER: &str = "bank";
/// Where the image keeps the topology and the providers' definitions.
pub const WORKSPACE: &str = "/opt/bank-sandbox";
/// The line the box prints once every component is healthy and every port open.
pub const READY: &str = "bank-in-a-box is ready";
/// The `/dev/shm` the box wants (`--shm-size=512m`): the local backend keeps
/// PostgreSQL's cluster there when 512 MB are free, else on disk (slower).
pub const SHM_SIZE: u64 = 512 << 20;
/// The sandbox's name inside the container.
const NAME: &str = "box";

/// What the box needs: where it keeps its state, the workspace it runs, the
/// `sandbox` binary, the PostgreSQL password and what to tell Kafka clients
/// until told otherwise.
#[derive(Debug, Clone)]
pub struct Options {
    pub home: Home,
    pub workspace: PathBuf,
    pub sandbox_bin: PathBuf,
    pub postgres_password: String,
    pub advertise: (String, u16),
}

/// The Unix socket the box's commands reach it on.
fn socket(home: &Home) -> PathBuf {
    home.root.join(".box.sock")
}

/// Run the box until a signal: start the sandbox, open the ports, answer
/// `health` and `advertise` on the socket, tear everything down at the end.
pub async fn run(opts: Options, observer: impl Observer) -> Result<()> {
    // Every port is claimed before anything starts: one taken is refused with
    // nothing made.
    let mut listeners = Vec::new();
    let mut ports = vec![GATEWAY_PORT, KAFKA_PORT, POSTGRES_PORT];
    ports.extend(PROVIDER_PORTS.iter().map(|(_, p)| *p));
    for port in ports {
        let listener = TcpListener::bind(("0.0.0.0", port)).await.map_err(|cause| Error::PortTaken {
            port,
            what: "the bank-in-a-box".into(),
            cause,
        })?;
        listeners.push((port, listener));
    }
    opts.home.ensure()?;
    let path = socket(&opts.home);
    let _ = std::fs::remove_file(&path);
    let commands = UnixListener::bind(&path).map_err(Error::io(format!("cannot listen on {}", path.display())))?;

    let shm = nix::sys::statvfs::statvfs("/dev/shm").map(|s| s.blocks_available() * s.fragment_size());
    if shm.is_ok_and(|free| free < SHM_SIZE) {
        println!(
            "note: /dev/shm has less than 512 MB free, so PostgreSQL's cluster goes to disk and starting takes seconds \
             longer; run the container with --shm-size=512m"
        );
    }
    let mut start = StartOptions::new(&opts.workspace, &opts.sandbox_bin);
    start.name = Some(NAME.into());
    start.home = opts.home.clone();
    start.postgres_password = Some(opts.postgres_password.clone());
    let mut sandbox = Sandbox::start_observed(start, observer).await?;

    let stop = CancellationToken::new();
    let (advertised_tx, advertised) = watch::channel((opts.advertise.0.clone(), i32::from(opts.advertise.1)));
    for (port, listener) in listeners {
        let upstream = upstream(&sandbox, port)?;
        if port == KAFKA_PORT {
            crate::backend::kafka_proxy::spawn(listener, upstream, advertised.clone(), stop.clone());
        } else {
            forward(listener, upstream, stop.clone());
        }
    }
    let control = sandbox.control();
    tokio::spawn(serve_commands(commands, control, advertised_tx, stop.clone()));
    println!(
        "{READY}: gateway :{GATEWAY_PORT}, kafka :{KAFKA_PORT} (advertised as {}:{}), postgres :{POSTGRES_PORT} (user {POSTGRES_USER}), {}",
        opts.advertise.0,
        opts.advertise.1,
        PROVIDER_PORTS.map(|(name, port)| format!("{name} :{port}")).join(", ")
    );
    let outcome = sandbox.wait().await;
    stop.cancel();
    let _ = std::fs::remove_file(&path);
    outcome
}

/// Where a port of the box leads inside it.
fn upstream(sandbox: &Sandbox, port: u16) -> Result<SocketAddr> {
    let component = match port {
        GATEWAY_PORT => "gateway",
        KAFKA_PORT => "kafka",
        POSTGRES_PORT => "postgres",
        _ => PROVIDER_PORTS.iter().find(|(_, p)| *p == port).map_or("gateway", |(name, _)| name),
    };
    let url = sandbox.url(component)?;
    let host_port = url.split("://").nth(1).unwrap_or(url);
    let host_port = host_port.rsplit('@').next().unwrap_or(host_port);
    let host_port = host_port.split('/').next().unwrap_or(host_port);
    host_port.parse().map_err(|_| Error::component(component, format!("its address `{url}` is not host:port")))
}

/// Relay every connection on `listener` to `upstream`, byte for byte, until `stop`.
fn forward(listener: TcpListener, upstream: SocketAddr, stop: CancellationToken) {
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((mut client, _)) = accepted else { continue };
            let stop = stop.clone();
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(upstream).await else { return };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                tokio::select! {
                    () = stop.cancelled() => {}
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                }
            });
        }
    });
}

/// One command a line, one answer a line: `health` (`healthy`, or what is
/// not), `advertise host:port` (`ok`, or why not).
async fn serve_commands(
    commands: UnixListener,
    control: crate::control::Client,
    advertised: watch::Sender<(String, i32)>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = commands.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
        let (rx, mut tx) = stream.into_split();
        let mut line = String::new();
        if BufReader::new(rx).read_line(&mut line).await.is_err() {
            continue;
        }
        let answer = match line.trim().split_once(' ').unwrap_or((line.trim(), "")) {
            ("health", _) => match control.state().await {
                Ok(state) => health(&state),
                Err(e) => format!("unhealthy: {e}"),
            },
            ("advertise", to) => match parse_advertised(to) {
                Ok((host, port)) => {
                    advertised.send_replace((host, i32::from(port)));
                    "ok".to_string()
                }
                Err(e) => format!("error: {e}"),
            },
            (other, _) => {
                format!("error: unknown command `{other}`; the commands are `health` and `advertise HOST:PORT`")
            }
        };
        let _ = tx.write_all(format!("{answer}\n").as_bytes()).await;
    }
}

fn health(state: &State) -> String {
    let unhealthy: Vec<String> = state
        .components
        .iter()
        .filter(|c| c.status != crate::engine::Status::Healthy)
        .map(|c| format!("{} is {}", c.name, c.status.label()))
        .collect();
    if unhealthy.is_empty() { "healthy".into() } else { format!("unhealthy: {}", unhealthy.join(", ")) }
}

/// `host:port`, the port a number from 1 to 65535.
pub fn parse_advertised(text: &str) -> std::result::Result<(String, u16), String> {
    let bad = || format!("`{text}` is not HOST:PORT (e.g. localhost:32768)");
    let (host, port) = text.trim().rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// Ask the running box (`health`, `advertise host:port`): its answer, or why
/// it could not be asked.
pub async fn ask(home: &Home, command: &str) -> Result<String> {
    let path = socket(home);
    let asked = async {
        let mut stream = UnixStream::connect(&path).await?;
        stream.write_all(format!("{command}\n").as_bytes()).await?;
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).await?;
        Ok::<_, std::io::Error>(answer.trim().to_string())
    };
    asked.await.map_err(|cause| Error::Io {
        context: format!("the bank-in-a-box is not running (no answer on {})", path.display()),
        cause,
    })
}

/// The container's own host name, what containers on its network reach it by.
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into())
}

/// The workspace the image carries.
pub fn workspace() -> &'static Path {
    Path::new(WORKSPACE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advertised_address_is_host_and_port() {
        assert_eq!(parse_advertised("localhost:32768"), Ok(("localhost".into(), 32768)));
        assert_eq!(parse_advertised(" 10.0.0.2:9092\n"), Ok(("10.0.0.2".into(), 9092)));
        for bad in ["localhost", "localhost:0", ":9092", "host:99999", "a b:1"] {
            let e = parse_advertised(bad).unwrap_err();
            assert!(e.contains("HOST:PORT"), "{bad}: {e}");
        }
    }
}
