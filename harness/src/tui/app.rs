//! The TUI's state and what input does to it. Keys become [`Command`]s for the
//! run loop (anything that talks to the sandbox); everything that arrives
//! (state, log lines, events, answers) comes in as a [`Msg`]. Nothing here
//! draws or does I/O, so every behaviour is tested by feeding it.

use std::collections::VecDeque;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde_json::Value;

use harness::engine::State;
use harness::logs::{LogLine, level_of, render_log};
use harness::providers::{Fault, FaultKind, JournalEntry};

/// How many log lines and events are kept: memory stays flat however noisy
/// the bank gets.
pub const LOG_CAP: usize = 10_000;
pub const EVENT_CAP: usize = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Services,
    Logs,
    Events,
    Providers,
    Explorer,
    Follow,
    Scenarios,
}

impl Pane {
    pub const ALL: [Pane; 7] =
        [Pane::Services, Pane::Logs, Pane::Events, Pane::Providers, Pane::Explorer, Pane::Follow, Pane::Scenarios];

    pub fn title(self) -> &'static str {
        match self {
            Pane::Services => "Services",
            Pane::Logs => "Logs",
            Pane::Events => "Events",
            Pane::Providers => "Providers",
            Pane::Explorer => "Explorer",
            Pane::Follow => "Follow",
            Pane::Scenarios => "Scenarios",
        }
    }
}

/// An event as the events pane shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    /// When it happened, Unix milliseconds.
    pub at: u64,
    pub topic: String,
    pub offset: i64,
    pub kind: String,
    pub key: String,
    pub trace_id: String,
    pub summary: String,
}

/// A provider as the providers pane shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProviderView {
    pub name: String,
    pub journal: Vec<JournalEntry>,
    pub faults: Vec<Fault>,
}

/// Something the run loop does on the app's behalf.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Quit,
    Restart(String),
    Stop(String),
    /// GET a URL for the explorer.
    Open(String),
    /// For `remaining` requests, or every one until cleared.
    AddFault {
        provider: String,
        kind: FaultKind,
        remaining: Option<u32>,
    },
    ClearFaults(String),
    /// Run one feature file's scenarios, or all, against this sandbox.
    RunScenarios(Option<std::path::PathBuf>),
    /// Perform an action a link advertises, with a JSON body.
    Submit {
        method: String,
        href: String,
        body: String,
    },
}

/// The explorer's form for an action, made from its request schema in the
/// bank's OpenAPI document: its fields, the one being edited, and what the
/// last check of the body found.
#[derive(Debug, Clone)]
pub struct Form {
    pub rel: String,
    pub method: String,
    pub href: String,
    pub request: harness::contracts::RequestForm,
    pub selected: usize,
    pub errors: Vec<String>,
}

/// A feature file as the scenarios pane lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureView {
    pub path: std::path::PathBuf,
    pub name: String,
    pub scenarios: Vec<String>,
}

/// Something that arrived.
#[derive(Debug, Clone)]
pub enum Msg {
    State(State),
    Log(LogLine),
    Event(EventRow),
    Providers(Vec<ProviderView>),
    /// The explorer's resource at a URL.
    Resource(String, Value),
    /// The bank's OpenAPI document (the gateway's `/openapi.json`).
    Document(Value),
    /// A command's outcome, for the status line.
    Note(String),
    /// A line of a scenario run's output.
    RunLine(String),
    /// The run ended: passed or not.
    RunDone(bool),
}

/// What a text box is editing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Editing {
    LogFilter,
    EventFilter,
    FollowId,
}

/// One thing seen about the followed id, from any source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    /// Unix milliseconds.
    pub at: u64,
    /// `log accounts`, `event payments.events`, `payment-scheme in`.
    pub source: String,
    pub text: String,
}

#[derive(Debug)]
pub struct App {
    pub sandbox: String,
    /// The TUI started the sandbox: quitting tears it down.
    pub owned: bool,
    pub pane: Pane,
    pub state: Option<State>,
    pub selected: usize,
    pub logs: VecDeque<LogLine>,
    /// One component's logs, or all interleaved.
    pub log_source: Option<String>,
    pub log_filter: String,
    /// 0 = everything, 1 = INFO and up, 2 = WARN and up, 3 = ERROR.
    pub log_level: u8,
    /// Following the newest line; off, the view holds still (`log_scroll` lines up).
    pub follow: bool,
    pub log_scroll: usize,
    pub events: VecDeque<EventRow>,
    pub event_filter: String,
    pub event_scroll: usize,
    pub providers: Vec<ProviderView>,
    pub provider_selected: usize,
    /// The explorer's trail of (URL, resource), the current one last.
    pub explorer: Vec<(String, Value)>,
    pub link_selected: usize,
    /// The id followed across logs, events and provider journals.
    pub follow_id: String,
    pub features: Vec<FeatureView>,
    pub feature_selected: usize,
    /// The last run's output, as it arrives.
    pub run_output: VecDeque<String>,
    /// `None` while a run goes on (or before any), then whether it passed.
    pub run_passed: Option<bool>,
    pub running: bool,
    pub run_scroll: usize,
    pub editing: Option<Editing>,
    pub form: Option<Form>,
    /// The bank's OpenAPI document, once read: the explorer's forms come from it.
    pub document: Option<Value>,
    pub help: bool,
    pub note: Option<String>,
    /// Something changed since the last draw.
    pub dirty: bool,
    /// Unix seconds, as of the last tick: what uptimes are counted to.
    pub now: u64,
}

impl App {
    pub fn new(sandbox: &str, owned: bool) -> Self {
        Self {
            sandbox: sandbox.to_string(),
            owned,
            pane: Pane::Services,
            state: None,
            selected: 0,
            logs: VecDeque::new(),
            log_source: None,
            log_filter: String::new(),
            log_level: 0,
            follow: true,
            log_scroll: 0,
            events: VecDeque::new(),
            event_filter: String::new(),
            event_scroll: 0,
            providers: Vec::new(),
            provider_selected: 0,
            explorer: Vec::new(),
            link_selected: 0,
            follow_id: String::new(),
            features: Vec::new(),
            feature_selected: 0,
            run_output: VecDeque::new(),
            run_passed: None,
            running: false,
            run_scroll: 0,
            editing: None,
            form: None,
            document: None,
            help: false,
            note: None,
            dirty: true,
            now: 0,
        }
    }

    pub fn on_msg(&mut self, msg: Msg) {
        // Lines and events only cost a redraw where they show.
        self.dirty |= match &msg {
            Msg::Log(_) => matches!(self.pane, Pane::Logs | Pane::Follow),
            Msg::Event(_) => matches!(self.pane, Pane::Events | Pane::Follow),
            Msg::Providers(_) => matches!(self.pane, Pane::Providers | Pane::Follow),
            _ => true,
        };
        match msg {
            Msg::State(s) => {
                self.selected = self.selected.min(s.components.len().saturating_sub(1));
                self.state = Some(s);
            }
            Msg::Log(line) => {
                if self.logs.len() == LOG_CAP {
                    self.logs.pop_front();
                }
                if !self.follow && self.log_matches(&line) {
                    // Hold the view still while new lines arrive below it.
                    self.log_scroll += 1;
                }
                self.logs.push_back(line);
            }
            Msg::Event(e) => {
                // Kept in the order the events happened, not the order they are
                // read: the reader catches up topic by topic from the start, and
                // the pane must open on the newest event of all, not on the last
                // one read of the last topic.
                let at = self.events.partition_point(|r| r.at <= e.at);
                if self.events.len() == EVENT_CAP {
                    if at == 0 {
                        // Older than everything kept: it would be the first to go.
                        return;
                    }
                    self.events.pop_front();
                    self.events.insert(at - 1, e);
                } else {
                    self.events.insert(at, e);
                }
            }
            Msg::Providers(p) => {
                self.provider_selected = self.provider_selected.min(p.len().saturating_sub(1));
                self.providers = p;
            }
            Msg::Resource(url, value) => {
                self.explorer.push((url, value));
                self.link_selected = 0;
            }
            Msg::Document(document) => self.document = Some(document),
            Msg::Note(n) => self.note = Some(n),
            Msg::RunLine(line) => {
                if self.run_output.len() == LOG_CAP {
                    self.run_output.pop_front();
                }
                self.run_output.push_back(line);
            }
            Msg::RunDone(passed) => {
                self.running = false;
                self.run_passed = Some(passed);
            }
        }
    }

    /// The component the services pane points at.
    pub fn selected_component(&self) -> Option<&str> {
        self.state.as_ref().and_then(|s| s.components.get(self.selected)).map(|c| c.name.as_str())
    }

    pub fn log_matches(&self, l: &LogLine) -> bool {
        self.log_source.as_ref().is_none_or(|s| *s == l.component)
            && level_of(&l.text) >= self.log_level
            && (self.log_filter.is_empty() || l.text.to_lowercase().contains(&self.log_filter.to_lowercase()))
    }

    pub fn event_matches(&self, e: &EventRow) -> bool {
        let f = self.event_filter.to_lowercase();
        f.is_empty()
            || [&e.topic, &e.kind, &e.key, &e.trace_id, &e.summary].iter().any(|s| s.to_lowercase().contains(&f))
    }

    /// Everything seen about the followed id, oldest first: log lines, events
    /// (by key, trace id or data) and provider traffic.
    pub fn timeline(&self) -> Vec<Sighting> {
        let id = self.follow_id.trim();
        if id.is_empty() {
            return Vec::new();
        }
        let mut seen: Vec<Sighting> = self
            .logs
            .iter()
            .filter(|l| l.text.contains(id))
            .map(|l| Sighting { at: l.at, source: format!("log {}", l.component), text: render_log(&l.text) })
            .collect();
        seen.extend(
            self.events.iter().filter(|e| e.key.contains(id) || e.trace_id.contains(id) || e.summary.contains(id)).map(
                |e| Sighting {
                    at: e.at,
                    source: format!("event {}", e.topic),
                    text: format!("{} {} {}", e.kind, e.key, e.summary),
                },
            ),
        );
        for p in &self.providers {
            for e in p
                .journal
                .iter()
                .filter(|e| e.trace_id.as_deref().is_some_and(|t| t.contains(id)) || e.body.to_string().contains(id))
            {
                seen.push(Sighting {
                    at: e.at,
                    source: format!("{} {}", p.name, e.direction),
                    text: format!("{} {} -> {}", e.method, e.path, e.status),
                });
            }
        }
        seen.sort_by_key(|s| s.at);
        seen
    }

    /// The form for the action `rel` (`method href`), from the request schema
    /// the bank's document gives it, with the account the explorer last
    /// passed filled in where the body names one.
    fn form_for(&self, rel: String, method: String, href: String) -> Result<Form, String> {
        let document = self.document.as_ref().ok_or_else(|| {
            "the bank's OpenAPI document (the gateway's /openapi.json) is not read yet; try again in a moment"
                .to_string()
        })?;
        let mut request = harness::contracts::RequestForm::for_operation(document, &method, &href)
            .ok_or_else(|| format!("the bank's document does not describe {method} {href}; nothing to fill in"))?;
        let account = self
            .explorer
            .iter()
            .rev()
            .map(|(_, r)| r)
            .find(|r| r.get("sort_code").is_some() && r.get("account_number").is_some())
            .and_then(|r| r["_links"]["self"]["href"].as_str());
        if let Some(account) = account {
            for field in ["from", "account"] {
                request.prefill(field, account);
            }
        }
        Ok(Form { rel, method, href, request, selected: 0, errors: Vec::new() })
    }

    /// The explorer's current resource's links: (rel, href, method).
    pub fn links(&self) -> Vec<(String, String, String)> {
        self.explorer.last().map(|(_, r)| harness::api::links(r)).unwrap_or_default()
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Option<Command> {
        self.dirty = true;
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Some(Command::Quit);
        }
        if let Some(form) = self.form.as_mut() {
            let last = form.request.fields.len().saturating_sub(1);
            match key.code {
                // Checked against the schema first: a body it refuses is not sent.
                KeyCode::Enter => match form.request.body() {
                    Ok(body) => {
                        let form = self.form.take()?;
                        let body = if body.is_null() { String::new() } else { body.to_string() };
                        return Some(Command::Submit { method: form.method, href: form.href, body });
                    }
                    Err(errors) => form.errors = errors,
                },
                KeyCode::Esc => self.form = None,
                KeyCode::Up | KeyCode::BackTab => form.selected = form.selected.saturating_sub(1),
                KeyCode::Down | KeyCode::Tab => form.selected = (form.selected + 1).min(last),
                KeyCode::Backspace => {
                    if let Some(field) = form.request.fields.get_mut(form.selected) {
                        field.value.pop();
                    }
                }
                KeyCode::Char(c) => {
                    if let Some(field) = form.request.fields.get_mut(form.selected) {
                        field.value.push(c);
                    }
                }
                _ => {}
            }
            return None;
        }
        if let Some(editing) = self.editing {
            let text = match editing {
                Editing::LogFilter => &mut self.log_filter,
                Editing::EventFilter => &mut self.event_filter,
                Editing::FollowId => &mut self.follow_id,
            };
            match key.code {
                KeyCode::Enter => self.editing = None,
                KeyCode::Esc => {
                    text.clear();
                    self.editing = None;
                }
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) => text.push(c),
                _ => {}
            }
            return None;
        }
        if self.help {
            self.help = false;
            return None;
        }
        self.note = None;
        match key.code {
            KeyCode::Char('q') => return Some(Command::Quit),
            KeyCode::Char('?') => self.help = true,
            KeyCode::Tab | KeyCode::Right => self.pane = self.next_pane(1),
            KeyCode::BackTab | KeyCode::Left => self.pane = self.next_pane(Pane::ALL.len() - 1),
            KeyCode::Char(c @ '1'..='7') => self.pane = Pane::ALL[c as usize - '1' as usize],
            _ => return self.pane_key(key),
        }
        None
    }

    fn next_pane(&self, by: usize) -> Pane {
        let i = Pane::ALL.iter().position(|p| *p == self.pane).unwrap_or(0);
        Pane::ALL[(i + by) % Pane::ALL.len()]
    }

    fn pane_key(&mut self, key: KeyEvent) -> Option<Command> {
        let up = matches!(key.code, KeyCode::Up | KeyCode::Char('k'));
        let down = matches!(key.code, KeyCode::Down | KeyCode::Char('j'));
        match self.pane {
            Pane::Services => {
                let n = self.state.as_ref().map_or(0, |s| s.components.len());
                if up {
                    self.selected = self.selected.saturating_sub(1);
                } else if down {
                    self.selected = (self.selected + 1).min(n.saturating_sub(1));
                }
                let name = self.selected_component().map(String::from)?;
                match key.code {
                    KeyCode::Char('r') => return Some(Command::Restart(name)),
                    KeyCode::Char('s') => return Some(Command::Stop(name)),
                    KeyCode::Enter | KeyCode::Char('l') => {
                        self.log_source = Some(name);
                        self.pane = Pane::Logs;
                    }
                    _ => {}
                }
            }
            Pane::Logs => match key.code {
                KeyCode::Char('/') => self.editing = Some(Editing::LogFilter),
                KeyCode::Char('f') | KeyCode::Char(' ') => {
                    self.follow = !self.follow;
                    self.log_scroll = 0;
                }
                KeyCode::Char('a') => self.log_source = None,
                KeyCode::Char('L') => self.log_level = (self.log_level + 1) % 4,
                _ if up => {
                    self.follow = false;
                    self.log_scroll += 1;
                }
                _ if down => {
                    self.log_scroll = self.log_scroll.saturating_sub(1);
                    if self.log_scroll == 0 {
                        self.follow = true;
                    }
                }
                KeyCode::Char('G') | KeyCode::End => {
                    self.follow = true;
                    self.log_scroll = 0;
                }
                _ => {}
            },
            Pane::Scenarios => {
                if up {
                    self.feature_selected = self.feature_selected.saturating_sub(1);
                } else if down {
                    self.feature_selected = (self.feature_selected + 1).min(self.features.len().saturating_sub(1));
                }
                let run = match key.code {
                    KeyCode::Enter => Some(self.features.get(self.feature_selected)?.path.clone()),
                    KeyCode::Char('a') => None,
                    KeyCode::PageUp | KeyCode::Char('K') => {
                        self.run_scroll += 10;
                        return None;
                    }
                    KeyCode::PageDown | KeyCode::Char('J') => {
                        self.run_scroll = self.run_scroll.saturating_sub(10);
                        return None;
                    }
                    _ => return None,
                };
                if self.running {
                    self.note = Some("a run is going on; wait for it to end".into());
                    return None;
                }
                self.running = true;
                self.run_passed = None;
                self.run_scroll = 0;
                self.run_output.clear();
                return Some(Command::RunScenarios(run));
            }
            Pane::Follow => {
                if key.code == KeyCode::Char('/') {
                    self.editing = Some(Editing::FollowId);
                }
            }
            Pane::Events => match key.code {
                KeyCode::Char('/') => self.editing = Some(Editing::EventFilter),
                KeyCode::Enter => {
                    // Follow the newest event in view by its trace id.
                    let shown: Vec<&EventRow> = self.events.iter().filter(|e| self.event_matches(e)).collect();
                    let pick = shown.len().checked_sub(1 + self.event_scroll).and_then(|i| shown.get(i));
                    if let Some(e) = pick {
                        self.follow_id = e.trace_id.clone();
                        self.pane = Pane::Follow;
                    }
                }
                _ if up => self.event_scroll += 1,
                _ if down => self.event_scroll = self.event_scroll.saturating_sub(1),
                KeyCode::Char('G') | KeyCode::End => self.event_scroll = 0,
                _ => {}
            },
            Pane::Providers => {
                if up {
                    self.provider_selected = self.provider_selected.saturating_sub(1);
                } else if down {
                    self.provider_selected = (self.provider_selected + 1).min(self.providers.len().saturating_sub(1));
                }
                let provider = self.providers.get(self.provider_selected)?.name.clone();
                let (kind, remaining) = match key.code {
                    KeyCode::Char('u') => (FaultKind::Unavailable, None),
                    KeyCode::Char('s') => (FaultKind::Slow, None),
                    KeyCode::Char('x') => (FaultKind::Reject, Some(1)),
                    KeyCode::Char('c') => return Some(Command::ClearFaults(provider)),
                    _ => return None,
                };
                return Some(Command::AddFault { provider, kind, remaining });
            }
            Pane::Explorer => {
                let links = self.links();
                if up {
                    self.link_selected = self.link_selected.saturating_sub(1);
                } else if down {
                    self.link_selected = (self.link_selected + 1).min(links.len().saturating_sub(1));
                }
                match key.code {
                    KeyCode::Enter => {
                        let (rel, href, method) = links.get(self.link_selected)?.clone();
                        if method != "GET" {
                            match self.form_for(rel, method, href) {
                                Ok(form) => self.form = Some(form),
                                Err(why) => self.note = Some(why),
                            }
                        } else if href.contains('{') {
                            self.note = Some(format!("`{rel}` is a URI template ({href})"));
                        } else {
                            return Some(Command::Open(href));
                        }
                    }
                    KeyCode::Backspace | KeyCode::Char('h') if self.explorer.len() > 1 => {
                        self.explorer.pop();
                        self.link_selected = 0;
                    }
                    KeyCode::Char('g') => {
                        let front = self.explorer.first().map(|(u, _)| u.clone())?;
                        self.explorer.clear();
                        return Some(Command::Open(front));
                    }
                    _ => {}
                }
            }
        }
        None
    }
}

/// The events pane's row for one event read from Kafka.
pub fn event_row(topic: &str, offset: i64, e: &wire::Envelope) -> EventRow {
    let summary = e
        .data
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.rsplit('/').next().unwrap_or(s).to_string(),
                        Value::Object(o) if o.contains_key("amount") => {
                            harness::api::pounds(o["amount"].as_i64().unwrap_or(0))
                        }
                        other => other.to_string(),
                    };
                    format!("{k}={v}")
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    EventRow {
        at: (e.occurred_at.unix_timestamp_nanos() / 1_000_000).max(0) as u64,
        topic: topic.to_string(),
        offset,
        kind: e.kind.clone(),
        key: e.aggregate_id.clone(),
        trace_id: e.trace_id.clone(),
        summary,
    }
}
