//! Component logs: a bounded ring buffer per component (memory stays flat however
//! chatty a service is) and a broadcast for followers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

/// Lines kept per component.
pub const RING: usize = 5000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Increases by one per line across the sandbox: followers resume by it.
    pub seq: u64,
    pub component: String,
    pub stream: String,
    /// Unix milliseconds when the line was read.
    pub at: u64,
    pub text: String,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    rings: BTreeMap<String, VecDeque<LogLine>>,
}

#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    tx: broadcast::Sender<LogLine>,
}

impl Default for LogStore {
    fn default() -> Self {
        Self::new()
    }
}

impl LogStore {
    pub fn new() -> Self {
        Self { inner: Arc::default(), tx: broadcast::channel(4096).0 }
    }

    pub fn sink(&self, component: &str) -> LogSink {
        LogSink { store: self.clone(), component: component.to_string() }
    }

    pub fn push(&self, mut line: LogLine) {
        {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            line.seq = inner.next;
            inner.next += 1;
            let ring = inner.rings.entry(line.component.clone()).or_default();
            if ring.len() == RING {
                ring.pop_front();
            }
            ring.push_back(line.clone());
        }
        let _ = self.tx.send(line);
    }

    /// The last `n` lines of one component (or of all, interleaved, for `None`).
    pub fn tail_of(&self, component: Option<&str>, n: usize) -> Vec<LogLine> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut lines: Vec<LogLine> = match component {
            Some(c) => inner.rings.get(c).map(|r| r.iter().cloned().collect()).unwrap_or_default(),
            None => inner.rings.values().flat_map(|r| r.iter().cloned()).collect(),
        };
        lines.sort_by_key(|l| l.seq);
        let skip = lines.len().saturating_sub(n);
        lines.split_off(skip)
    }

    pub fn tail(&self, component: &str, n: usize) -> Vec<LogLine> {
        self.tail_of(Some(component), n)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LogLine> {
        self.tx.subscribe()
    }
}

/// A log line's level (0 debug/other, 1 info, 2 warn, 3 error), from the
/// bank's JSON lines or a plain line's words.
pub fn level_of(text: &str) -> u8 {
    let upper = |s: &str| text.contains(s);
    if upper("\"level\":\"ERROR\"") || upper(" ERROR ") {
        3
    } else if upper("\"level\":\"WARN\"") || upper(" WARN ") {
        2
    } else if upper("\"level\":\"INFO\"") || upper(" INFO ") {
        1
    } else {
        0
    }
}

/// A short, readable form of one bank log line: `LEVEL message key=value`,
/// or the line itself when it is not the bank's JSON.
pub fn render_log(text: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(text) else { return text.to_string() };
    let level = v["level"].as_str().unwrap_or("");
    let fields = v["fields"].as_object();
    let message = fields.and_then(|f| f.get("message")).and_then(Value::as_str).unwrap_or("");
    let mut out = format!("{level:<5} {message}");
    if let Some(f) = fields {
        for (k, val) in f.iter().filter(|(k, _)| *k != "message") {
            let val = val.as_str().map(String::from).unwrap_or_else(|| val.to_string());
            out.push_str(&format!(" {k}={val}"));
        }
    }
    if let Some(span) = v["spans"].as_array().and_then(|s| s.last()) {
        if let Some(route) = span["route"].as_str() {
            out.push_str(&format!(" {} {route}", span["method"].as_str().unwrap_or("")));
        }
        if let Some(t) = span["trace_id"].as_str() {
            out.push_str(&format!(" trace={}", &t[..t.len().min(8)]));
        }
    }
    out
}

/// Where one component's output goes.
#[derive(Debug, Clone)]
pub struct LogSink {
    store: LogStore,
    component: String,
}

impl LogSink {
    pub fn line(&self, stream: &str, text: String) {
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        self.store.push(LogLine { seq: 0, component: self.component.clone(), stream: stream.into(), at, text });
    }

    /// Forward every line of `reader` until it closes.
    pub fn forward<R>(&self, stream: &'static str, reader: R)
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
    {
        use tokio::io::AsyncBufReadExt;
        let sink = self.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.line(stream, line);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_lines_only() {
        let store = LogStore::new();
        let sink = store.sink("a");
        for i in 0..RING + 10 {
            sink.line("stdout", format!("line {i}"));
        }
        let all = store.tail("a", usize::MAX);
        assert_eq!(all.len(), RING);
        assert_eq!(all[0].text, "line 10");
        assert_eq!(
            store.tail("a", 2).iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
            [format!("line {}", RING + 8), format!("line {}", RING + 9)]
        );
    }

    #[test]
    fn tail_of_all_interleaves_by_arrival() {
        let store = LogStore::new();
        store.sink("a").line("stdout", "1".into());
        store.sink("b").line("stdout", "2".into());
        store.sink("a").line("stdout", "3".into());
        let texts: Vec<_> = store.tail_of(None, 10).into_iter().map(|l| l.text).collect();
        assert_eq!(texts, ["1", "2", "3"]);
    }
}
