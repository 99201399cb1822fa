//! What crosses the wire between the bank and the harness: the event envelope
//! and the webhook signature scheme. Both sides must agree byte for byte, so
//! both use this crate. It must stay small and depend on neither side.
//! `probe` is the containers' healthcheck, which both sides' images run;
//! `backoff` the retry policy both sides wait by; `payloads` the bodies
//! services and providers exchange.

pub mod backoff;
pub mod payloads;
pub mod probe;
pub mod providers;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use time::OffsetDateTime;
use uuid::Uuid;

/// One event as it travels: in a service's log, over `/events` and on Kafka.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub aggregate_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub trace_id: String,
    pub data: Value,
}

/// The header a provider signs its webhooks with.
pub const SIGNATURE_HEADER: &str = "x-provider-signature";

/// How far a webhook's timestamp may be from now before it is refused (replays).
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", hex(&mac(secret, timestamp, body)))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    Missing,
    Malformed,
    Stale,
    Mismatch,
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Missing => "no signature header",
            Self::Malformed => "the signature header is not `t=<unix>,v1=<hex>`",
            Self::Stale => "the signature's timestamp is too far from now",
            Self::Mismatch => "the signature does not match the body",
        })
    }
}

/// Check `header` against `body` at time `now` (unix seconds), in constant time.
pub fn verify(secret: &[u8], header: Option<&str>, body: &[u8], now: i64) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut given = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => given = unhex(v),
            _ => {}
        }
    }
    let (Some(timestamp), Some(given)) = (timestamp, given) else { return Err(SignatureError::Malformed) };
    if (now - timestamp).abs() > SIGNATURE_TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).map_err(|_| SignatureError::Malformed)?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&given).map_err(|_| SignatureError::Mismatch)
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_any_change_breaks_it() {
        let header = sign(b"secret", 1_700_000_000, b"{\"a\":1}");
        assert_eq!(verify(b"secret", Some(&header), b"{\"a\":1}", 1_700_000_010), Ok(()));
        assert_eq!(verify(b"secret", Some(&header), b"{\"a\":2}", 1_700_000_010), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"other", Some(&header), b"{\"a\":1}", 1_700_000_010), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"secret", Some(&header), b"{\"a\":1}", 1_700_009_999), Err(SignatureError::Stale));
        assert_eq!(verify(b"secret", None, b"{}", 0), Err(SignatureError::Missing));
        assert_eq!(verify(b"secret", Some("v1=zz"), b"{}", 0), Err(SignatureError::Malformed));
    }
}
