//! The TUI as its user sees it: events fed into the app, every pane rendered
//! on ratatui's TestBackend at 80x24 and 120x40, and snapshotted.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use serde_json::json;

use super::app::{App, Command, FeatureView, Msg, Pane, ProviderView, event_row};
use super::ui;
use harness::backend::RunId;
use harness::engine::{Component, Endpoint, Phase, State, Status};
use harness::logs::LogLine;
use harness::providers::{Fault, FaultKind, JournalEntry};

fn key(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}

fn component(name: &str, status: Status, port: u16, restarts: u32) -> Component {
    Component {
        name: name.into(),
        id: (status == Status::Healthy).then_some(RunId::Pid(1000 + u32::from(port % 100))),
        status,
        endpoints: vec![Endpoint { name: "http".into(), url: format!("http://127.0.0.1:{port}") }],
        restarts,
        started_at: Some(1),
        ready_ms: Some(120),
        last_probe: None,
    }
}

fn state() -> State {
    State {
        sandbox: "dev".into(),
        phase: Phase::Running,
        components: vec![
            // A URL longer than the others: its column is as wide as it needs.
            Component {
                endpoints: vec![Endpoint {
                    name: "postgres".into(),
                    url: "postgres://bank:bank@127.0.0.1:15432".into(),
                }],
                ..component("postgres", Status::Healthy, 15432, 0)
            },
            component("kafka", Status::Healthy, 19092, 0),
            // Once healthy, the detail is what its health checks say.
            Component {
                last_probe: Some("degraded: payment-scheme degraded (timed out)".into()),
                ..component("accounts", Status::Healthy, 18081, 0)
            },
            component("payments", Status::Exited { code: None }, 18082, 1),
            Component { last_probe: Some("ok: database".into()), ..component("gateway", Status::Healthy, 18080, 0) },
        ],
    }
}

fn log(seq: u64, component: &str, level: &str, message: &str) -> LogLine {
    let text = json!({
        "timestamp": "2026-11-21T10:00:00Z", "level": level,
        "fields": { "message": message, "status": "200" },
        "spans": [{ "method": "POST", "route": "/payments", "trace_id": "0123456789abcdef" }],
    });
    LogLine { seq, component: component.into(), stream: "stdout".into(), at: 0, text: text.to_string() }
}

fn app() -> App {
    let mut app = App::new("dev", true);
    app.now = 76;
    app.on_msg(Msg::State(state()));
    app.on_msg(Msg::Log(log(1, "accounts", "INFO", "handled")));
    app.on_msg(Msg::Log(log(2, "payments", "WARN", "not available; will retry")));
    app.on_msg(Msg::Log(log(3, "gateway", "ERROR", "webhook signature mismatch")));
    app.on_msg(Msg::Log(LogLine {
        seq: 4,
        component: "kafka".into(),
        stream: "stderr".into(),
        at: 0,
        text: "broker listening on 127.0.0.1:19092".into(),
    }));
    let envelope = |kind: &str, data: serde_json::Value| wire::Envelope {
        id: uuid::Uuid::nil(),
        kind: kind.into(),
        aggregate_id: "6f1c2a".into(),
        occurred_at: time::OffsetDateTime::UNIX_EPOCH,
        trace_id: "0123456789abcdef".into(),
        data,
    };
    app.follow_id = "0123456789abcdef".into();
    app.on_msg(Msg::Event(event_row(
        "payments.events",
        7,
        &envelope(
            "payment.created",
            json!({ "payment": "http://gw/payments/payments/6f1c2a", "amount": { "amount": 2500, "currency": "GBP" } }),
        ),
    )));
    app.on_msg(Msg::Event(event_row(
        "accounts.events",
        12,
        &envelope(
            "hold.placed",
            json!({ "account": "http://gw/accounts/accounts/9a", "amount": { "amount": 2500, "currency": "GBP" } }),
        ),
    )));
    app.on_msg(Msg::Providers(vec![
        ProviderView {
            name: "payment-scheme".into(),
            journal: vec![JournalEntry {
                seq: 1,
                at: 0,
                direction: "in".into(),
                method: "POST".into(),
                path: "/payments".into(),
                scope: None,
                trace_id: Some("0123456789abcdef".into()),
                body: json!({}),
                status: 503,
                fault: Some(FaultKind::Unavailable),
            }],
            faults: vec![Fault {
                id: 1,
                kind: FaultKind::Unavailable,
                scope: None,
                remaining: None,
                delay_ms: None,
                reason: None,
            }],
        },
        ProviderView { name: "card-acquirer".into(), journal: vec![], faults: vec![] },
    ]));
    app.features = vec![
        FeatureView {
            path: "scenarios/payments.feature".into(),
            name: "Domestic payments".into(),
            scenarios: vec!["A payment to another bank settles".into(), "The scheme is unavailable".into()],
        },
        FeatureView { path: "scenarios/topups.feature".into(), name: "Card top-ups".into(), scenarios: vec![] },
    ];
    for line in [
        "Feature: Domestic payments",
        "  Scenario: A payment to another bank settles",
        "   ✔  Then the payment is completed",
        "   ✘  And Alice's balance is £75.00",
    ] {
        app.on_msg(Msg::RunLine(line.into()));
    }
    app.on_msg(Msg::RunDone(false));
    app.on_msg(Msg::Resource(
        "http://gw/".into(),
        json!({ "service": "gateway", "_links": {
            "self": { "href": "http://gw/" },
            "accounts": { "href": "http://gw/accounts/" },
            "payments": { "href": "http://gw/payments/" },
        }}),
    ));
    app
}

fn render(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| ui::draw(app, f)).unwrap();
    format!("{}", terminal.backend())
}

#[test]
fn every_pane_renders_at_three_sizes() {
    let mut app = app();
    for (i, pane) in Pane::ALL.iter().enumerate() {
        app.on_key(key(char::from(b'1' + i as u8)));
        assert_eq!(app.pane, *pane);
        for (w, h) in [(80, 24), (120, 40), (200, 50)] {
            insta::assert_snapshot!(format!("{}_{w}x{h}", pane.title().to_lowercase()), render(&app, w, h));
        }
    }
}

#[test]
fn the_help_overlay_lists_the_keys_and_any_key_closes_it() {
    let mut app = app();
    app.on_key(key('?'));
    insta::assert_snapshot!("help_80x24", render(&app, 80, 24));
    insta::assert_snapshot!("help_140x40", render(&app, 140, 40));
    assert_eq!(app.on_key(key('q')), None, "the first key only closes the help");
    assert!(!app.help);
    assert_eq!(app.on_key(key('q')), Some(Command::Quit));
}

#[test]
fn services_keys_steer_the_selected_component() {
    let mut app = app();
    app.on_key(key('j'));
    app.on_key(key('j'));
    app.on_key(key('j'));
    assert_eq!(app.selected_component(), Some("payments"));
    assert_eq!(app.on_key(key('r')), Some(Command::Restart("payments".into())));
    assert_eq!(app.on_key(key('s')), Some(Command::Stop("payments".into())));
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    assert_eq!((app.pane, app.log_source.as_deref()), (Pane::Logs, Some("payments")));
    assert_eq!(app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Some(Command::Quit));
}

#[test]
fn logs_filter_by_text_and_level_and_hold_still_when_paused() {
    let mut app = app();
    app.on_key(key('2'));
    app.on_key(key('/'));
    for c in "signature".chars() {
        app.on_key(key(c));
    }
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    let shown: Vec<u64> = app.logs.iter().filter(|l| app.log_matches(l)).map(|l| l.seq).collect();
    assert_eq!(shown, [3]);
    app.on_key(key('/'));
    app.on_key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
    app.on_key(key('L'));
    app.on_key(key('L'));
    let shown: Vec<u64> = app.logs.iter().filter(|l| app.log_matches(l)).map(|l| l.seq).collect();
    assert_eq!(shown, [2, 3], "WARN and up");
    app.on_key(key('f'));
    assert!(!app.follow);
    app.on_msg(Msg::Log(log(5, "gateway", "ERROR", "another")));
    assert_eq!(app.log_scroll, 1, "a paused view holds still as lines arrive");
}

#[test]
fn memory_stays_bounded_however_many_lines_arrive() {
    let mut app = App::new("dev", false);
    for seq in 0..(super::app::LOG_CAP as u64 + 500) {
        app.on_msg(Msg::Log(log(seq, "accounts", "INFO", "handled")));
    }
    assert_eq!(app.logs.len(), super::app::LOG_CAP);
    assert_eq!(app.logs.front().map(|l| l.seq), Some(500), "the oldest lines go first");
}

/// A bank document as the gateway serves it, cut to two actions: what the
/// explorer's forms are made from.
fn document() -> serde_json::Value {
    json!({
        "openapi": "3.1.0",
        "paths": {
            "/payments/payments": { "post": { "requestBody": { "content": { "application/json": {
                "schema": { "$ref": "#/components/schemas/NewPayment" } } } } } },
            "/accounts/accounts/{id}/credits": { "post": { "requestBody": { "content": { "application/json": {
                "schema": { "$ref": "#/components/schemas/MoneyMovement" } } } } } },
            "/accounts/holds/{id}/capture": { "post": {} },
        },
        "components": { "schemas": {
            "MoneyInput": { "type": "object", "required": ["amount", "currency"], "properties": {
                "amount": { "type": "integer", "minimum": 1, "maximum": 1000000000000i64, "description": "Pence" },
                "currency": { "type": "string", "pattern": "^[A-Z]{3}$", "examples": ["GBP"] } } },
            "NewPayment": { "type": "object", "required": ["from", "to", "amount"], "additionalProperties": false,
                "properties": {
                    "from": { "type": "string", "description": "The debtor account's URL" },
                    "to": { "type": "object", "required": ["name"], "properties": {
                        "name": { "type": "string", "minLength": 1, "maxLength": 140 } } },
                    "amount": { "$ref": "#/components/schemas/MoneyInput" },
                    "reference": { "type": "string", "maxLength": 18 } } },
            "MoneyMovement": { "type": "object", "required": ["amount", "currency"], "properties": {
                "amount": { "type": "integer", "minimum": 1 },
                "currency": { "type": "string", "pattern": "^[A-Z]{3}$", "examples": ["GBP"] },
                "reference": { "type": ["string", "null"], "maxLength": 140 } } },
        } },
    })
}

#[test]
fn the_explorer_follows_links_and_refuses_actions() {
    let mut app = app();
    app.on_key(key('5'));
    let links = app.links();
    let payments = links.iter().position(|(rel, _, _)| rel == "payments").unwrap();
    for _ in 0..payments {
        app.on_key(key('j'));
    }
    let cmd = app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    assert_eq!(cmd, Some(Command::Open("http://gw/payments/".into())));
    app.on_msg(Msg::Resource(
        "http://gw/payments/".into(),
        json!({ "_links": { "create-payment": { "href": "http://gw/payments/payments", "method": "POST" } } }),
    ));
    assert_eq!(app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)), None);
    assert!(app.form.is_none(), "no form before the bank's document is read");
    assert!(app.note.as_deref().unwrap_or_default().contains("not read yet"), "{:?}", app.note);
    app.on_msg(Msg::Document(document()));
    assert_eq!(app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)), None, "an action opens its form");
    assert_eq!(app.form.as_ref().map(|f| f.method.as_str()), Some("POST"));
    insta::assert_snapshot!("explorer_form_80x24", render(&app, 80, 24));
    app.on_key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
    assert!(app.form.is_none(), "Esc cancels");
    app.on_key(KeyEvent::new(KeyCode::Backspace, KeyModifiers::NONE));
    assert_eq!(app.explorer.len(), 1);
}

#[test]
fn provider_keys_set_and_clear_faults() {
    let mut app = app();
    app.on_key(key('4'));
    let set = app.on_key(key('u'));
    assert_eq!(
        set,
        Some(Command::AddFault { provider: "payment-scheme".into(), kind: FaultKind::Unavailable, remaining: None })
    );
    let next = app.on_key(key('x'));
    assert_eq!(
        next,
        Some(Command::AddFault { provider: "payment-scheme".into(), kind: FaultKind::Reject, remaining: Some(1) })
    );
    app.on_key(key('j'));
    assert_eq!(app.on_key(key('c')), Some(Command::ClearFaults("card-acquirer".into())));
}

#[test]
fn following_a_trace_id_gathers_logs_events_and_provider_traffic_in_order() {
    let mut app = app();
    app.follow_id.clear();
    app.on_key(key('3'));
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    assert_eq!((app.pane, app.follow_id.as_str()), (Pane::Follow, "0123456789abcdef"));
    let sources: Vec<String> = app.timeline().into_iter().map(|s| s.source).collect();
    assert_eq!(sources.iter().filter(|s| s.starts_with("log ")).count(), 3, "{sources:?}");
    assert_eq!(sources.iter().filter(|s| s.starts_with("event ")).count(), 2, "{sources:?}");
    assert!(sources.contains(&"payment-scheme in".to_string()), "{sources:?}");
    let times: Vec<u64> = app.timeline().into_iter().map(|s| s.at).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first: {times:?}");
}

#[test]
fn scenarios_run_one_feature_or_all_and_one_run_at_a_time() {
    let mut app = app();
    app.on_key(key('7'));
    let run = app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    assert_eq!(run, Some(Command::RunScenarios(Some("scenarios/payments.feature".into()))));
    assert!(app.running && app.run_output.is_empty(), "a new run starts with a clean output");
    assert_eq!(app.on_key(key('a')), None, "one run at a time");
    assert!(app.note.as_deref().unwrap_or_default().contains("a run is going on"));
    app.on_msg(Msg::RunDone(true));
    assert_eq!(app.on_key(key('a')), Some(Command::RunScenarios(None)));
}

#[test]
fn an_action_form_is_made_from_the_request_schema_and_checked_before_sending() {
    let mut app = app();
    app.on_key(key('5'));
    app.on_msg(Msg::Document(document()));
    app.on_msg(Msg::Resource(
        "http://gw/accounts/accounts/9a".into(),
        json!({ "sort_code": "04-00-04", "account_number": "10000001", "_links": {
            "self": { "href": "http://gw/accounts/accounts/9a" },
            "credit": { "href": "http://gw/accounts/accounts/9a/credits", "method": "POST" },
            "pay": { "href": "http://gw/payments/payments", "method": "POST" },
        }}),
    ));
    let enter = KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE);
    let position = |app: &App, rel: &str| app.links().iter().position(|(r, _, _)| r == rel).unwrap();
    for _ in 0..position(&app, "credit") {
        app.on_key(KeyEvent::new(KeyCode::Down, KeyModifiers::NONE));
    }
    app.on_key(enter);
    let form = app.form.clone().unwrap();
    let names: Vec<(&str, bool)> = form.request.fields.iter().map(|f| (f.name.as_str(), f.required)).collect();
    assert_eq!(names, [("amount", true), ("currency", true), ("reference", false)], "the schema's fields, in order");
    assert_eq!(form.request.fields[1].value, "GBP", "the schema's example to start from");
    assert_eq!(form.request.fields[0].rules, "at least 1");
    // Nothing typed in a required field: the check names it, nothing is sent.
    assert_eq!(app.on_key(enter), None);
    let errors = app.form.as_ref().unwrap().errors.join("\n");
    assert!(errors.contains("\"amount\" is a required property"), "{errors}");
    insta::assert_snapshot!("explorer_form_refused_80x24", render(&app, 80, 24));
    // Out of its limits: named too.
    for c in "-5".chars() {
        app.on_key(key(c));
    }
    assert_eq!(app.on_key(enter), None);
    assert!(app.form.as_ref().unwrap().errors.join("\n").contains("amount: -5 is less than the minimum of 1"));
    app.on_key(KeyEvent::new(KeyCode::Backspace, KeyModifiers::NONE));
    app.on_key(KeyEvent::new(KeyCode::Backspace, KeyModifiers::NONE));
    for c in "1000".chars() {
        app.on_key(key(c));
    }
    assert_eq!(
        app.on_key(enter),
        Some(Command::Submit {
            method: "POST".into(),
            href: "http://gw/accounts/accounts/9a/credits".into(),
            body: r#"{"amount":1000,"currency":"GBP"}"#.into(),
        }),
        "typed numbers go as numbers; an empty optional field is left out"
    );
    // A payment's form: nested fields dotted, the account just passed filled in.
    for _ in 0..position(&app, "pay") {
        app.on_key(KeyEvent::new(KeyCode::Down, KeyModifiers::NONE));
    }
    app.on_key(enter);
    let fields = &app.form.as_ref().unwrap().request.fields;
    let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["amount.amount", "amount.currency", "from", "to.name", "reference"], "the required first");
    assert_eq!(fields[2].value, "http://gw/accounts/accounts/9a");
}

#[test]
fn the_events_pane_opens_on_the_newest_event_whatever_order_the_topics_are_read_in() {
    let mut app = App::new("dev", true);
    let envelope = |kind: &str, secs: i64| wire::Envelope {
        id: uuid::Uuid::new_v4(),
        kind: kind.into(),
        aggregate_id: kind.into(),
        occurred_at: time::OffsetDateTime::from_unix_timestamp(secs).unwrap(),
        trace_id: "t".into(),
        data: json!({}),
    };
    // The reader catches up one topic after the other: payments' recent events
    // first, then accounts' older ones.
    app.on_msg(Msg::Event(event_row("payments.events", 0, &envelope("payment.completed", 300))));
    app.on_msg(Msg::Event(event_row("accounts.events", 0, &envelope("account.opened", 100))));
    app.on_msg(Msg::Event(event_row("accounts.events", 1, &envelope("hold.captured", 200))));
    let kinds: Vec<&str> = app.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["account.opened", "hold.captured", "payment.completed"], "newest last, where the pane opens");
}
