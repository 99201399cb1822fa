//! The containers' healthcheck, shared by both images' binaries (`bank probe`,
//! `sandbox probe`): the images carry no curl, so the check is written against
//! std only. `http://host:port/path` passes when the GET answers 2xx;
//! `tcp://host:port` passes when the port accepts a connection (the broker,
//! which has no HTTP endpoint).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(2);

pub fn probe(url: &str) -> Result<(), String> {
    if let Some(authority) = url.strip_prefix("tcp://") {
        connect(authority).map(drop)
    } else if let Some(rest) = url.strip_prefix("http://") {
        http(url, rest)
    } else {
        Err(format!("`{url}` is neither an http:// nor a tcp:// URL"))
    }
}

fn connect(authority: &str) -> Result<TcpStream, String> {
    let addr: SocketAddr = authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority} has no address"))?;
    TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("{authority}: {e}"))
}

fn http(url: &str, rest: &str) -> Result<(), String> {
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let mut stream = connect(authority)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    // One write: `write!` on an unbuffered stream sends each piece of the format on its own.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut head = [0u8; 32];
    let n = stream.read(&mut head).map_err(|e| format!("{authority}: {e}"))?;
    let status_line = String::from_utf8_lossy(&head[..n]);
    let code = status_line.split_whitespace().nth(1).unwrap_or("");
    if code.starts_with('2') {
        Ok(())
    } else {
        Err(format!("GET {url} answered `{}`", status_line.lines().next().unwrap_or("")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn tcp_passes_on_an_open_port_and_fails_on_a_closed_one() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(probe(&format!("tcp://{addr}")), Ok(()));
        // Port 1 (tcpmux), which nothing here serves; not a port just released,
        // which a test running alongside may bind and then answer on.
        let err = probe("tcp://127.0.0.1:1").unwrap_err();
        assert!(err.starts_with("127.0.0.1:1: "), "{err}");
    }

    #[test]
    fn http_wants_a_2xx() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for answer in ["HTTP/1.1 200 OK\r\n\r\n", "HTTP/1.1 503 Service Unavailable\r\n\r\n"] {
                let (mut s, _) = listener.accept().unwrap();
                // The whole request, then the answer, as an HTTP server would.
                let mut request = Vec::new();
                let mut buf = [0u8; 256];
                while !request.ends_with(b"\r\n\r\n") {
                    let n = s.read(&mut buf).unwrap();
                    assert!(n > 0, "the probe closed before its request was complete");
                    request.extend_from_slice(&buf[..n]);
                }
                s.write_all(answer.as_bytes()).unwrap();
            }
        });
        assert_eq!(probe(&format!("http://{addr}/health")), Ok(()));
        let err = probe(&format!("http://{addr}/health")).unwrap_err();
        assert!(err.contains("503"), "{err}");
        server.join().unwrap();
    }

    #[test]
    fn other_schemes_are_refused_by_name() {
        assert_eq!(probe("ftp://x"), Err("`ftp://x` is neither an http:// nor a tcp:// URL".into()));
    }
}
