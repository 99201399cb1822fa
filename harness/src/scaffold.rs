//! `sandbox new service NAME [--consumes TOPIC:EVENT_TYPE]...`: a new service
//! of the bank from the service template (`harness/templates/service`), wired
//! into everything that must know it: the `bank` binary, `compose/bank.yaml`
//! (its block, its database, the gateway's routes, the connector's sources),
//! the API tests and the scenarios.
//!
//! Everything is worked out in memory and checked first (the name, what it
//! consumes, the topology as `sandbox up` would read it, the code through
//! rustfmt); only then is anything written, and a write that fails puts back
//! what was there. A refused generation leaves the workspace untouched.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use wire::payloads::{CATALOGUE, Published};

use crate::error::{Error, Result};
use crate::topology::Topology;

const MODULE: &str = include_str!("../templates/service/mod.rs.tmpl");
const MIGRATION: &str = include_str!("../templates/service/migration.sql.tmpl");
const API_TEST: &str = include_str!("../templates/service/api_test.rs.tmpl");
const CONSUME_TEST: &str = include_str!("../templates/service/consume_test.rs.tmpl");
/// Where the bank's event payloads (and so its event contracts) are.
const PAYLOADS: &str = "bank/wire/src/payloads.rs";
const PAYLOAD: &str = include_str!("../templates/service/payload.rs.tmpl");

/// Names that would read as something else: Rust's keywords, the bank's own
/// modules, and words the CLIs give a meaning (`bank probe`, `sandbox logs all`).
const RESERVED: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate", "do", "dyn", "else",
    "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "macro", "match", "mod",
    "move", "mut", "override", "priv", "pub", "ref", "return", "self", "static", "struct", "super", "trait", "true",
    "try", "type", "typeof", "union", "unsafe", "unsized", "use", "virtual", "where", "while", "yield", "kit",
    "domain", "main", "lib", "probe", "all", "help", "bank", "sandbox", "wire", "harness", "tests",
];

/// One file the generation writes: its path in the workspace, its new text and,
/// for a file that exists, the text it replaces.
#[derive(Debug, Clone)]
pub struct Change {
    pub path: PathBuf,
    pub text: String,
    pub before: Option<String>,
}

/// What `new service` would do; [`Plan::apply`] does it.
#[derive(Debug)]
pub struct Plan {
    pub name: String,
    pub changes: Vec<Change>,
}

/// Work out the new service `name`, consuming `consumes` (`TOPIC:EVENT_TYPE`
/// each), in `workspace`; nothing is written.
pub fn plan(workspace: &Path, name: &str, consumes: &[String]) -> Result<Plan> {
    check_name(name)?;
    let compose_path = workspace.join(crate::TOPOLOGY);
    let compose = read(&compose_path)?;
    let topology = Topology::parse(&compose_path, &compose)?;
    if topology.service(name).is_some() {
        return Err(refused(format!("`{name}` is already a service in {}", crate::TOPOLOGY)));
    }
    if workspace.join("bank/src").join(name).exists() {
        return Err(refused(format!("bank/src/{name} already exists")));
    }
    let own_topic = format!("{name}.events");
    if CATALOGUE.iter().any(|p| p.topic == own_topic) || compose.contains(&format!("{name}=http://")) {
        return Err(refused(format!("the topic `{own_topic}` already exists; choose another name")));
    }
    let consumed = consumes.iter().map(|c| lookup(c)).collect::<Result<Vec<_>>>()?;
    for (i, c) in consumed.iter().enumerate() {
        if consumed[..i].contains(c) {
            return Err(refused(format!("`--consumes {}:{}` is given twice", c.topic, c.event_type)));
        }
    }
    let t = Template { name, consumed: &consumed };
    let rustfmt = Rustfmt::new(workspace)?;
    let lib_path = workspace.join("bank/src/lib.rs");
    let tests_path = workspace.join("bank/tests/api/main.rs");
    let payloads_path = workspace.join(PAYLOADS);
    let lib = read(&lib_path)?;
    let tests = read(&tests_path)?;
    let payloads = read(&payloads_path)?;
    let new_compose = t.compose(&compose)?;
    // The topology as `sandbox up` will read it, the new service in it.
    let checked = Topology::parse(&compose_path, &new_compose)?;
    if checked.service(name).is_none() {
        return Err(Error::Check(format!("the generated {} has no `{name}` service", crate::TOPOLOGY)));
    }
    let mut changes = vec![
        Change { path: format!("bank/src/{name}/mod.rs").into(), text: rustfmt.run(&t.module())?, before: None },
        Change {
            path: format!("bank/src/{name}/migrations/0100_{name}.sql").into(),
            text: t.fill(MIGRATION),
            before: None,
        },
        Change { path: format!("bank/tests/api/{name}.rs").into(), text: rustfmt.run(&t.api_test())?, before: None },
        Change { path: format!("scenarios/{name}.feature").into(), text: t.feature(), before: None },
        Change { path: "bank/src/lib.rs".into(), text: rustfmt.run(&t.lib(&lib)?)?, before: Some(lib) },
        Change {
            path: "bank/tests/api/main.rs".into(),
            text: rustfmt.run(&t.tests_main(&tests)?)?,
            before: Some(tests),
        },
        Change { path: crate::TOPOLOGY.into(), text: new_compose, before: Some(compose) },
        Change { path: PAYLOADS.into(), text: rustfmt.run(&t.payloads(&payloads)?)?, before: Some(payloads) },
    ];
    for c in &changes {
        if c.before.is_none() && workspace.join(&c.path).exists() {
            return Err(refused(format!("{} already exists", c.path.display())));
        }
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Plan { name: name.to_string(), changes })
}

impl Plan {
    /// Write every change, or none: each file is written beside its place
    /// first, then all are moved into place; on any failure what was moved is
    /// put back and what was made is removed.
    pub fn apply(&self, workspace: &Path) -> Result<()> {
        let mut made_dirs: Vec<PathBuf> = Vec::new();
        let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
        let result = self.stage(workspace, &mut made_dirs, &mut staged).and_then(|()| {
            let mut moved: Vec<&Change> = Vec::new();
            for (change, (tmp, to)) in self.changes.iter().zip(&staged) {
                if let Err(cause) = std::fs::rename(tmp, to) {
                    for done in moved {
                        let path = workspace.join(&done.path);
                        match &done.before {
                            Some(before) => drop(std::fs::write(&path, before)),
                            None => drop(std::fs::remove_file(&path)),
                        }
                    }
                    return Err(Error::Io { context: format!("cannot write {}", to.display()), cause });
                }
                moved.push(change);
            }
            Ok(())
        });
        if result.is_err() {
            for (tmp, _) in &staged {
                let _ = std::fs::remove_file(tmp);
            }
            for dir in made_dirs.iter().rev() {
                let _ = std::fs::remove_dir(dir);
            }
        }
        result
    }

    fn stage(&self, workspace: &Path, made: &mut Vec<PathBuf>, staged: &mut Vec<(PathBuf, PathBuf)>) -> Result<()> {
        for change in &self.changes {
            let to = workspace.join(&change.path);
            let dir = to.parent().unwrap_or(workspace);
            let missing: Vec<PathBuf> =
                dir.ancestors().take_while(|d| !d.exists()).map(Path::to_path_buf).collect::<Vec<_>>();
            for d in missing.into_iter().rev() {
                std::fs::create_dir(&d).map_err(Error::io(format!("cannot create {}", d.display())))?;
                made.push(d);
            }
            let tmp = dir.join(format!(".{}.sandbox-new", to.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
            std::fs::write(&tmp, &change.text).map_err(Error::io(format!("cannot write {}", tmp.display())))?;
            staged.push((tmp, to));
        }
        Ok(())
    }
}

fn refused(message: String) -> Error {
    Error::Check(message)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|cause| Error::Read { path: path.to_path_buf(), cause })
}

/// A service name is a Rust module and a DNS label both, and new.
fn check_name(name: &str) -> Result<()> {
    let ok = (2..=30).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !ok {
        return Err(refused(format!(
            "invalid service name `{name}`: use 2-30 characters from a-z and 0-9, starting with a letter \
             (it names a Rust module and a DNS label, so no `-`, `_` or capitals)"
        )));
    }
    if RESERVED.contains(&name) {
        return Err(refused(format!("`{name}` is reserved (a Rust keyword or a name the bank already uses)")));
    }
    Ok(())
}

/// `TOPIC:EVENT_TYPE` as a published event, or a refusal listing what is known.
fn lookup(spec: &str) -> Result<&'static Published> {
    let mut topics: Vec<&str> = CATALOGUE.iter().map(|p| p.topic).collect();
    topics.dedup();
    let Some((topic, event_type)) = spec.split_once(':') else {
        return Err(refused(format!(
            "`--consumes {spec}` is not TOPIC:EVENT_TYPE, e.g. payments.events:payment.completed"
        )));
    };
    if !topics.contains(&topic) {
        return Err(refused(format!(
            "unknown topic `{topic}`; the topics with typed events are: {}",
            topics.join(", ")
        )));
    }
    CATALOGUE.iter().find(|p| p.topic == topic && p.event_type == event_type).ok_or_else(|| {
        let known: Vec<&str> = CATALOGUE.iter().filter(|p| p.topic == topic).map(|p| p.event_type).collect();
        refused(format!("unknown event type `{event_type}` on {topic}; its event types are: {}", known.join(", ")))
    })
}

/// The workspace's rustfmt (its `rustfmt.toml`, its edition), on text.
struct Rustfmt {
    config: PathBuf,
    edition: String,
}

impl Rustfmt {
    fn new(workspace: &Path) -> Result<Self> {
        let manifest = read(&workspace.join("Cargo.toml"))?;
        let edition = manifest
            .lines()
            .find_map(|l| l.trim().strip_prefix("edition = \""))
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("2021")
            .to_string();
        Ok(Self { config: workspace.join("rustfmt.toml"), edition })
    }

    fn run(&self, source: &str) -> Result<String> {
        use std::io::Write;
        let mut cmd = Command::new("rustfmt");
        cmd.args(["--edition", &self.edition, "--emit", "stdout", "--quiet"]);
        if self.config.is_file() {
            cmd.arg("--config-path").arg(&self.config);
        }
        let mut child =
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| {
                refused(format!("cannot run rustfmt ({e}): install it with `rustup component add rustfmt`"))
            })?;
        let mut stdin = child.stdin.take().expect("piped");
        let text = source.to_string();
        let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
        let out = child.wait_with_output().map_err(Error::io("rustfmt"))?;
        let _ = writer.join();
        if !out.status.success() {
            return Err(Error::Check(format!(
                "rustfmt refused the generated code (a bug in the template): {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        String::from_utf8(out.stdout).map_err(|e| Error::Tool(format!("rustfmt: {e}")))
    }
}

/// The template, filled in for one service.
struct Template<'a> {
    name: &'a str,
    consumed: &'a [&'static Published],
}

/// `payments.events` as a setting's name: PAYMENTS_EVENTS_TOPIC.
fn topic_setting(topic: &str) -> String {
    let upper: String =
        topic.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("{upper}_TOPIC")
}

/// `payment.completed` as a function's name: payment_completed.
fn snake(event_type: &str) -> String {
    event_type.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

impl Template<'_> {
    fn title(&self) -> String {
        let mut chars = self.name.chars();
        chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
    }

    fn fill(&self, text: &str) -> String {
        text.replace("__NAME__", self.name).replace("__TITLE__", &self.title())
    }

    /// The payload types it consumes, by name.
    fn wire_types(&self) -> String {
        let mut types: Vec<&str> = self.consumed.iter().map(|p| p.rust_type).collect();
        types.sort_unstable();
        types.dedup();
        types.join(", ")
    }

    /// What the module takes from `wire::payloads`: its own event's payload,
    /// and what it consumes with the means to read it.
    fn module_wire_imports(&self) -> String {
        let own = format!("{}Recorded", self.title());
        if self.consumed.is_empty() { own } else { format!("Payload, {}, {own}, payload", self.wire_types()) }
    }

    /// `bank/wire/src/payloads.rs` with the service's event payload, before
    /// the tests, and in the list every catalogue is made from.
    fn payloads(&self, text: &str) -> Result<String> {
        let missing = |what: &str| refused(format!("{PAYLOADS} has no {what} to add `{}Recorded` to", self.title()));
        let list = text.find("macro_rules! every_payload").ok_or_else(|| missing("`every_payload` list"))?;
        let close = text[list..]
            .find("\n        )\n")
            .map(|i| list + i)
            .ok_or_else(|| missing("closed `every_payload` list"))?;
        let mut out = format!("{}\n            {}Recorded,{}", &text[..close], self.title(), &text[close..]);
        let at = out.find("#[cfg(test)]").unwrap_or(out.len());
        out.insert_str(at, &self.fill(PAYLOAD));
        Ok(out)
    }

    fn module(&self) -> String {
        let consumes = !self.consumed.is_empty();
        let mut doc = String::new();
        if consumes {
            doc.push_str("//!\n//! It consumes, once per event (a redelivery changes nothing):\n");
            for p in self.consumed {
                doc.push_str(&format!(
                    "//! - `{}` from `{}` (the topic's name is the setting {}),\n",
                    p.event_type,
                    p.topic,
                    topic_setting(p.topic)
                ));
            }
            doc.push_str("//!   each read as its typed payload (`wire::payloads`) and recorded.\n");
        }
        let mut imports = String::from(
            "use axum::extract::{Path, State};\nuse axum::http::StatusCode;\n\
             use axum::response::Response;\nuse schemars::JsonSchema;\nuse serde::{Deserialize, Serialize};\n\
             use serde_json::{Value, json};\nuse sqlx::postgres::PgRow;\nuse sqlx::{PgConnection, Row};\n\
             use uuid::Uuid;\n",
        );
        imports.push_str(&format!("use wire::payloads::{{{}}};\n", self.module_wire_imports()));
        imports.push('\n');
        if consumes {
            imports.push_str("use crate::kit::consume::{self, Rule};\n");
        }
        imports.push_str("use crate::kit::error::{ApiError, ApiResult};\n");
        imports.push_str(if consumes {
            "use crate::kit::events::{self, Envelope, NewEvent};\n"
        } else {
            "use crate::kit::events::{self, NewEvent};\n"
        });
        imports.push_str(
            "use crate::kit::hal::{BaseUrl, Hal, rfc3339};\n\
             use crate::kit::http::{ApiJson, ApiQuery, MaybeIdempotencyKey, TraceId};\n\
             use crate::kit::idempotency::{Fingerprint, once};\n\
             use crate::kit::listing::{self, Collection};\n\
             use crate::kit::openapi::{Document, Id, List, Resource, Routes, get_with};\n\
             use crate::kit::{Kit, ServiceSpec};\n",
        );
        let start = if consumes {
            let mut rules = String::new();
            for p in self.consumed {
                rules.push_str(&format!(
                    "        Rule {{\n            topic: kit.vars(\"{setting}\").unwrap_or_else(|| \"{topic}\".into()),\n            \
                     event_type: {ty}::TYPE,\n            act: |k, e| Box::pin(on_{f}(k, e)),\n        }},\n",
                    setting = topic_setting(p.topic),
                    topic = p.topic,
                    ty = p.rust_type,
                    f = snake(p.event_type),
                ));
            }
            format!(
                "/// Consume by rules: from a topic, on an event type, act.\nfn start(kit: &Kit) -> anyhow::Result<()> {{\n    \
                 let brokers = kit.require(\"KAFKA_BROKERS\", \"point it at the Kafka bootstrap servers\")?;\n    \
                 let group = kit.vars(\"CONSUMER_GROUP\").unwrap_or_else(|| \"{name}\".into());\n    \
                 let rules = vec![\n{rules}    ];\n    consume::start(kit, brokers, group, rules);\n    Ok(())\n}}",
                name = self.name
            )
        } else {
            "/// No background work yet: a consumer's rules would start here (see\n\
             /// docs/ONBOARDING.md).\nfn start(_kit: &Kit) -> anyhow::Result<()> {\n    Ok(())\n}"
                .to_string()
        };
        let mut handlers = String::new();
        for p in self.consumed {
            handlers.push_str(&format!(
                "\n/// `{kind}` from `{topic}`, read as its typed payload and recorded about\n\
                 /// the event's aggregate, once: the event's id is kept in the same transaction.\n\
                 async fn on_{f}(kit: Kit, event: Envelope) -> ApiResult<()> {{\n    \
                 let body: {ty} = match payload(&event) {{\n        Ok(body) => body,\n        Err(e) => {{\n            \
                 tracing::warn!(event_id = %event.id, error = %e, \"not a `{kind}` payload; skipped\");\n            \
                 return Ok(());\n        }}\n    }};\n    let mut tx = kit.begin().await?;\n    \
                 if !consume::first_time(&mut tx, event.id).await? {{\n        return Ok(());\n    }}\n    \
                 let data = serde_json::to_value(&body).map_err(|e| ApiError::Internal(e.into()))?;\n    \
                 let trace = TraceId(event.trace_id.clone());\n    \
                 record(&mut tx, &trace, &event.aggregate_id, {ty}::TYPE, data).await?;\n    kit.commit(tx).await\n}}\n",
                kind = p.event_type,
                topic = p.topic,
                f = snake(p.event_type),
                ty = p.rust_type,
            ));
        }
        self.fill(MODULE)
            .replace("//@consumes-doc\n", &doc)
            .replace("//@imports\n", &imports)
            .replace("//@start\n", &format!("{start}\n"))
            .replace("//@handlers\n", &handlers)
    }

    fn api_test(&self) -> String {
        let consumes = !self.consumed.is_empty();
        let mut imports = String::from("use serde_json::json;\nuse uuid::Uuid;\n");
        if consumes {
            imports.push_str(&format!("use wire::payloads::{{Payload, {}}};\n", self.wire_types()));
        }
        imports.push_str(if consumes {
            "\nuse crate::fixture::event_types;\nuse crate::helpers::{TestApp, broker, link, publish};\n"
        } else {
            "\nuse crate::fixture::event_types;\nuse crate::helpers::{TestApp, link};\n"
        });
        let start = if consumes {
            let mut settings = String::new();
            for p in self.consumed {
                let setting = topic_setting(p.topic);
                if !settings.contains(&setting) {
                    settings.push_str(&format!("            (\"{setting}\", format!(\"{}-{{unique}}\")),\n", p.topic));
                }
            }
            format!(
                "/// The service on a fresh database, consuming topics and a group of its own\n\
                 /// (their suffix is returned).\nasync fn start() -> (TestApp, String) {{\n    \
                 let unique = Uuid::new_v4().simple().to_string();\n    let app = TestApp::spawn_with(\n        \
                 &bank::{name}::SPEC,\n        &[\n            (\"KAFKA_BROKERS\", broker()),\n            \
                 (\"CONSUMER_GROUP\", format!(\"{name}-{{unique}}\")),\n{settings}        ],\n        None,\n    )\n    \
                 .await;\n    (app, unique)\n}}\n\n\
                 /// The service's records about `subject`, once there is one (or a panic after 20 s).\n\
                 async fn records_about(app: &TestApp, subject: &str) -> Vec<serde_json::Value> {{\n    \
                 let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);\n    loop {{\n        \
                 let (_, page) = app.get(&format!(\"/records?subject={{subject}}\")).await;\n        \
                 let records = page[\"_embedded\"][\"records\"].as_array().cloned().unwrap_or_default();\n        \
                 if !records.is_empty() {{\n            return records;\n        }}\n        \
                 assert!(tokio::time::Instant::now() < deadline, \"nothing recorded about {{subject}}: {{page}}\");\n        \
                 tokio::time::sleep(std::time::Duration::from_millis(20)).await;\n    }}\n}}\n",
                name = self.name
            )
        } else {
            format!(
                "/// The service on a fresh database.\nasync fn start() -> (TestApp, ()) {{\n    \
                 (TestApp::spawn(&bank::{}::SPEC).await, ())\n}}\n",
                self.name
            )
        };
        let mut consume_tests = String::new();
        for p in self.consumed {
            consume_tests.push_str(
                &self
                    .fill(CONSUME_TEST)
                    .replace("__EVENT_SNAKE__", &snake(p.event_type))
                    .replace("__TOPIC__", p.topic)
                    .replace("__TYPE__", p.rust_type),
            );
        }
        self.fill(API_TEST)
            .replace("__AND_BROKER__", if consumes { " and broker" } else { "" })
            .replace("//@imports\n", &imports)
            .replace("//@start\n", &start)
            .replace("//@consumes\n", &consume_tests)
    }

    /// One scenario per consumed event the suite's steps can make happen;
    /// otherwise one that finds the service from the bank's front door.
    fn feature(&self) -> String {
        let (name, title) = (self.name, self.title());
        let mut out = format!(
            "@{name}\nFeature: {title}\n  Generated by `sandbox new service {name}`: {name} keeps records (`/records`),\n  \
             each with its `{name}.recorded` event, and is reachable through the gateway.\n"
        );
        let mut scenarios = 0;
        for p in self.consumed {
            let (given, when, then, that) = match p.event_type {
                "payment.created" | "payment.completed" => (
                    "Alice has £10.00",
                    "Alice pays £1.00 to Carol at 20-00-00 12345678",
                    "the payment is completed",
                    "that payment",
                ),
                "topup.succeeded" => (
                    "Alice has an account",
                    "Alice tops up £20.00 with their card",
                    "the top-up succeeds",
                    "that top-up",
                ),
                _ => continue,
            };
            out.push_str(&format!(
                "\n  Scenario: {title} records each `{kind}` event once\n    Given {given}\n    When {when}\n    \
                 Then {then}\n    And the `{name}` service records the `{kind}` event for {that}\n",
                kind = p.event_type
            ));
            scenarios += 1;
        }
        if scenarios == 0 {
            out.push_str(&format!(
                "\n  Scenario: {title} is reachable from the front door\n    When I open the bank's front door\n    \
                 And I follow the `{name}` link\n    Then the resource has `self` and `discovery` links\n    \
                 And the resource has `records` and `events` links\n"
            ));
        }
        out
    }

    /// `bank/src/lib.rs` with the module and its spec in `SERVICES`.
    fn lib(&self, lib: &str) -> Result<String> {
        let name = self.name;
        let lines = insert_sorted(lib, "pub mod ", &format!("pub mod {name};"))
            .ok_or_else(|| refused("bank/src/lib.rs has no `pub mod` lines to add the module to".into()))?;
        let at =
            lines.find("pub const SERVICES").ok_or_else(|| refused("bank/src/lib.rs has no `SERVICES` list".into()))?;
        let end = lines[at..]
            .find("];")
            .map(|i| at + i)
            .ok_or_else(|| refused("`SERVICES` in bank/src/lib.rs is not closed by `];`".into()))?;
        let before = lines[..end].trim_end();
        let comma = if before.ends_with(',') { "" } else { "," };
        Ok(format!("{before}{comma} &{name}::SPEC{}", &lines[end..]))
    }

    /// `bank/tests/api/main.rs` with the new test module.
    fn tests_main(&self, main: &str) -> Result<String> {
        insert_sorted(main, "mod ", &format!("mod {};", self.name))
            .ok_or_else(|| refused("bank/tests/api/main.rs has no `mod` lines to add the test module to".into()))
    }

    /// `compose/bank.yaml` with the service's block after the last service, its
    /// database, its route through the gateway and its events to the connector.
    fn compose(&self, compose: &str) -> Result<String> {
        let name = self.name;
        let mut text = append_to_setting(compose, "POSTGRES_MULTIPLE_DATABASES", name)?;
        text = append_to_setting(&text, "ROUTES", &format!("{name}=http://{name}:8080"))?;
        text = append_to_setting(&text, "CONNECT_SOURCES", &format!("{name}=http://{name}:8080"))?;
        let consumes = !self.consumed.is_empty();
        let mut block = String::from("\n");
        if consumes {
            let what: Vec<String> = self.consumed.iter().map(|p| format!("{} ({})", p.topic, p.event_type)).collect();
            block.push_str(&format!("  # Generated by `sandbox new service {name}`: consumes {}.\n", what.join(", ")));
        } else {
            block.push_str(&format!("  # Generated by `sandbox new service {name}`.\n"));
        }
        block.push_str(&format!(
            "  {name}:\n    image: bank-sandbox/bank:0.1.0\n    command: [\"{name}\"]\n    environment:\n      \
             HTTP_ADDR: 0.0.0.0:8080\n      DATABASE_URL: postgres://bank:bank@postgres:5432/{name}\n"
        ));
        if consumes {
            block.push_str("      KAFKA_BROKERS: kafka:9092\n");
        }
        block.push_str(
            "    ports: [\"127.0.0.1::8080\"]\n    depends_on:\n      postgres:\n        condition: service_healthy\n",
        );
        if consumes {
            block.push_str("      kafka:\n        condition: service_healthy\n");
        }
        block.push_str(
            "    healthcheck:\n      test: [\"CMD\", \"bank\", \"probe\", \"http://127.0.0.1:8080/health\"]\n      \
             interval: 1s\n      timeout: 1s\n      retries: 60\n    x-sandbox:\n      run: bank\n      health: /health\n",
        );
        // After the last service: the end of `services:`, which is the next
        // top-level key or the end of the file.
        let services =
            text.find("\nservices:\n").ok_or_else(|| refused(format!("{} has no `services:`", crate::TOPOLOGY)))?;
        let after = services + "\nservices:\n".len();
        let end = text[after..]
            .match_indices('\n')
            .map(|(i, _)| after + i + 1)
            .find(|&i| text[i..].starts_with(|c: char| c.is_ascii_alphabetic()))
            .unwrap_or(text.len());
        let (head, tail) = text.split_at(end);
        Ok(format!("{}\n{}{tail}", head.trim_end_matches('\n'), block))
    }
}

/// `text` with `line` among the consecutive lines starting with `prefix`, in
/// sorted order; `None` when there are none.
fn insert_sorted(text: &str, prefix: &str, line: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let first = lines.iter().position(|l| l.starts_with(prefix))?;
    let last = first + lines[first..].iter().take_while(|l| l.starts_with(prefix)).count();
    let at = (first..last).find(|&i| lines[i] > line).unwrap_or(last);
    let mut out: Vec<&str> = lines[..at].to_vec();
    out.push(line);
    out.extend(&lines[at..]);
    Some(out.join("\n") + "\n")
}

/// `text` with `, value` after the one `  KEY: a,b` setting line.
fn append_to_setting(text: &str, key: &str, value: &str) -> Result<String> {
    let prefix = format!("{key}: ");
    let found: Vec<usize> =
        text.lines().enumerate().filter(|(_, l)| l.trim_start().starts_with(&prefix)).map(|(i, _)| i).collect();
    let [at] = found[..] else {
        return Err(refused(format!(
            "{} has {} `{key}:` settings, not one; add `{value}` to it by hand",
            crate::TOPOLOGY,
            found.len()
        )));
    };
    let lines: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| if i == at { format!("{},{value}", l.trim_end()) } else { l.to_string() })
        .collect();
    Ok(lines.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_modules_and_dns_labels_and_new() {
        for bad in ["Roundups", "round-ups", "round_ups", "9lives", "x", "a".repeat(31).as_str(), "mod", "kit", "all"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_name("roundups").is_ok());
        assert!(check_name("pots2").is_ok());
    }

    #[test]
    fn an_unknown_topic_or_type_is_refused_with_the_known_ones() {
        let e = lookup("cards.events:card.frozen").unwrap_err().to_string();
        assert!(e.contains("unknown topic `cards.events`") && e.contains("payments.events, topups.events"), "{e}");
        let e = lookup("payments.events:payment.lost").unwrap_err().to_string();
        assert!(e.contains("unknown event type `payment.lost`") && e.contains("payment.completed"), "{e}");
        let e = lookup("payments.events").unwrap_err().to_string();
        assert!(e.contains("TOPIC:EVENT_TYPE"), "{e}");
        assert_eq!(lookup("payments.events:payment.completed").unwrap().rust_type, "PaymentCompleted");
    }

    #[test]
    fn settings_are_appended_to_and_lines_inserted_in_order() {
        let yaml = "services:\n  gateway:\n    environment:\n      ROUTES: a=http://a:8080\n";
        assert_eq!(
            append_to_setting(yaml, "ROUTES", "b=http://b:8080").unwrap(),
            "services:\n  gateway:\n    environment:\n      ROUTES: a=http://a:8080,b=http://b:8080\n"
        );
        assert!(append_to_setting(yaml, "CONNECT_SOURCES", "b").unwrap_err().to_string().contains("has 0"));
        let rs = "//! doc\n\nmod a;\nmod c;\n\nuse x;\n";
        assert_eq!(insert_sorted(rs, "mod ", "mod b;").unwrap(), "//! doc\n\nmod a;\nmod b;\nmod c;\n\nuse x;\n");
        assert_eq!(topic_setting("payments.events"), "PAYMENTS_EVENTS_TOPIC");
    }
}
