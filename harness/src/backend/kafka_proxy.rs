//! A Kafka-protocol relay that serves the host side of a broker inside a Docker
//! network. The broker advertises the address the services inside the network
//! use (`kafka:9092`), which a client on the host cannot resolve; so the host's
//! clients (the harness's reader, the tests, any client an engineer points at
//! the sandbox) connect here instead, and the broker addresses in the answers
//! that carry them (Metadata, FindCoordinator, DescribeCluster) are rewritten
//! to this relay's own. This is what a second, host-facing listener does on an
//! Apache Kafka broker; the embedded broker has one listener, so the relay
//! gives every broker image the same two faces.
//!
//! Kafka answers a connection's requests in order, so each answer is matched
//! with its request's API key and version by a queue, not a lookup.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use tansu_sans_io::{Body, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const METADATA: i16 = 3;
const FIND_COORDINATOR: i16 = 10;
const DESCRIBE_CLUSTER: i16 = 60;

/// The address clients are told the broker is at (host, port). A watch, so
/// that its owner can change it while the relay runs: the bank-in-a-box
/// learns its host-side port only once the engine has mapped it.
pub type Advertised = tokio::sync::watch::Receiver<(String, i32)>;

/// An address that never changes.
pub fn advertise(host: &str, port: u16) -> Advertised {
    tokio::sync::watch::channel((host.to_string(), i32::from(port))).1
}

/// Relay every connection on `listener` to `upstream` until `stop`, telling
/// clients the broker is at `advertised`'s current address.
pub fn spawn(listener: TcpListener, upstream: SocketAddr, advertised: Advertised, stop: CancellationToken) {
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((client, _)) = accepted else { continue };
            let (advertised, stop) = (advertised.clone(), stop.clone());
            tokio::spawn(async move {
                let Ok(broker) = TcpStream::connect(upstream).await else { return };
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = relay(client, broker, &advertised) => {}
                }
            });
        }
    });
}

async fn relay(client: TcpStream, broker: TcpStream, advertised: &Advertised) {
    let _ = client.set_nodelay(true);
    let _ = broker.set_nodelay(true);
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut broker_rx, mut broker_tx) = broker.into_split();
    let asked: Arc<Mutex<VecDeque<(i16, i16)>>> = Arc::default();
    let requests = {
        let asked = asked.clone();
        async move {
            while let Some(frame) = read_frame(&mut client_rx).await {
                // The request header starts with the API key and version.
                if frame.len() >= 8 {
                    let mut head = &frame[4..8];
                    let key = head.get_i16();
                    let version = head.get_i16();
                    asked.lock().expect("queue").push_back((key, version));
                }
                if broker_tx.write_all(&frame).await.is_err() {
                    break;
                }
            }
        }
    };
    let answers = async move {
        while let Some(frame) = read_frame(&mut broker_rx).await {
            let Some((key, version)) = asked.lock().expect("queue").pop_front() else { break };
            let frame = if matches!(key, METADATA | FIND_COORDINATOR | DESCRIBE_CLUSTER) {
                let to = advertised.borrow().clone();
                rewrite(frame, key, version, &to)
            } else {
                frame
            };
            if client_tx.write_all(&frame).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = requests => {}
        () = answers => {}
    }
}

/// One size-prefixed frame, prefix included; `None` at the end of the stream.
async fn read_frame(rx: &mut (impl AsyncReadExt + Unpin)) -> Option<Bytes> {
    let size = rx.read_i32().await.ok()?;
    let len = usize::try_from(size).ok()?;
    let mut frame = vec![0; 4 + len];
    frame[..4].copy_from_slice(&size.to_be_bytes());
    rx.read_exact(&mut frame[4..]).await.ok()?;
    Some(Bytes::from(frame))
}

/// The answer with every broker address replaced by `advertised`; unchanged if
/// it cannot be decoded (the client then sees the broker's own address).
fn rewrite(frame: Bytes, key: i16, version: i16, (host, port): &(String, i32)) -> Bytes {
    let Ok(Frame { header, mut body, .. }) = Frame::response_from_bytes(frame.clone(), key, version) else {
        tracing::warn!(key, version, "cannot decode a broker answer; passed on unchanged");
        return frame;
    };
    match &mut body {
        Body::MetadataResponse(r) => {
            for b in r.brokers.iter_mut().flatten() {
                (b.host, b.port) = (host.clone(), *port);
            }
        }
        Body::FindCoordinatorResponse(r) => {
            if r.host.is_some() {
                (r.host, r.port) = (Some(host.clone()), Some(*port));
            }
            for c in r.coordinators.iter_mut().flatten() {
                (c.host, c.port) = (host.clone(), *port);
            }
        }
        Body::DescribeClusterResponse(r) => {
            for b in r.brokers.iter_mut().flatten() {
                (b.host, b.port) = (host.clone(), *port);
            }
        }
        _ => return frame,
    }
    Frame::response(header, body, key, version).unwrap_or(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tansu_sans_io::metadata_response::MetadataResponseBroker;
    use tansu_sans_io::{Header, MetadataResponse};

    #[test]
    fn metadata_answers_name_the_relay_and_keep_everything_else() {
        let broker = MetadataResponseBroker::default().node_id(0).host("kafka".into()).port(9092).rack(None);
        let body = MetadataResponse::default()
            .throttle_time_ms(Some(0))
            .brokers(Some(vec![broker]))
            .cluster_id(Some("bank-sandbox".into()))
            .controller_id(Some(0))
            .topics(Some(vec![]));
        // (v8 to v10 carry authorized operations, which this answer leaves out.)
        for version in [1, 4, 12] {
            let header = Header::Response { correlation_id: 7 };
            let frame = Frame::response(header.clone(), body.clone().into(), METADATA, version).unwrap();
            let out = rewrite(frame, METADATA, version, &("127.0.0.1".into(), 41000));
            let decoded = Frame::response_from_bytes(out, METADATA, version).unwrap();
            assert_eq!(decoded.header, header);
            let Body::MetadataResponse(r) = decoded.body else { panic!("not metadata") };
            let b = &r.brokers.unwrap()[0];
            assert_eq!((b.host.as_str(), b.port, b.node_id), ("127.0.0.1", 41000, 0), "v{version}");
            if version >= 2 {
                assert_eq!(r.cluster_id.as_deref(), Some("bank-sandbox"), "v{version}");
            }
        }
    }
}
