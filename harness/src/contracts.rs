//! The bank's contracts. Events: every event type on Kafka has a JSON Schema,
//! generated from its payload type in `wire::payloads`. The e2e runner checks
//! every event it reads against its type's schema; `sandbox contracts events`
//! prints the set (`wire::payloads::contracts`), which every service also
//! serves at `/contracts/events`. HTTP: every service serves its OpenAPI
//! document at `/openapi.json` (the gateway: the bank's); [`HttpContract`]
//! checks answers against one, as the bank's API tests and the e2e runner do
//! with every answer they get.

use std::collections::BTreeMap;

use wire::payloads::{CATALOGUE, schema};

/// A contract's schema compiled to check values against, formats too (`uri`
/// on every link: a path where a URL belongs breaks the contract).
pub fn compile(schema: &serde_json::Value) -> Result<jsonschema::Validator, String> {
    jsonschema::draft202012::options().should_validate_formats(true).build(schema).map_err(|e| e.to_string())
}

/// Every way `value` breaks `validator`'s contract, each as `where: rule`
/// (`/` for the value itself); empty when it keeps it.
pub fn mismatches(validator: &jsonschema::Validator, value: &serde_json::Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| {
            let at = e.instance_path().to_string();
            format!("{}: {e}", if at.is_empty() { "/" } else { &at })
        })
        .collect()
}

/// The compiled schema of every published event type.
pub struct EventContracts {
    validators: BTreeMap<&'static str, jsonschema::Validator>,
}

impl std::fmt::Debug for EventContracts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventContracts").field("types", &self.validators.keys().collect::<Vec<_>>()).finish()
    }
}

impl EventContracts {
    /// Compile every schema of the catalogue; an error names the type whose
    /// generated schema does not compile (a bug in its type's attributes).
    pub fn new() -> Result<Self, String> {
        let mut validators = BTreeMap::new();
        for p in CATALOGUE {
            let schema =
                schema(p.event_type).ok_or_else(|| format!("`{}` is catalogued without a schema", p.event_type))?;
            let validator =
                compile(&schema).map_err(|e| format!("the schema of `{}` does not compile: {e}", p.event_type))?;
            validators.insert(p.event_type, validator);
        }
        Ok(Self { validators })
    }

    /// `Ok` when the event's type is published and its data matches the
    /// type's schema; else every mismatch, each naming where in the data.
    pub fn check(&self, topic: &str, event: &wire::Envelope) -> Result<(), String> {
        let what = format!("`{}` event {} on {topic}", event.kind, event.id);
        let Some(validator) = self.validators.get(event.kind.as_str()) else {
            return Err(format!(
                "{what}: no schema for this event type; give it a payload type in bank/wire/src/payloads.rs and add it to the catalogue"
            ));
        };
        let errors = mismatches(validator, &event.data);
        if errors.is_empty() { Ok(()) } else { Err(format!("{what} does not match its schema: {}", errors.join("; "))) }
    }
}

/// An OpenAPI document's operations, to check answers against: an answer
/// must come from a documented operation, with a status that operation lists,
/// and a body that matches the schema given for that status.
pub struct HttpContract {
    operations: Vec<Operation>,
}

struct Operation {
    method: String,
    template: String,
    /// The template's segments; `None` where a parameter goes.
    segments: Vec<Option<String>>,
    /// Status (`"200"`, `"default"`) to the body's validator, `None` for a
    /// status that has no JSON body to check.
    responses: BTreeMap<String, Option<std::sync::Arc<jsonschema::Validator>>>,
}

impl std::fmt::Debug for HttpContract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpContract").field("operations", &self.operations.len()).finish()
    }
}

impl HttpContract {
    /// Compile every answer's schema of `document` (OpenAPI 3.1); an error
    /// names the operation whose schema does not compile.
    pub fn new(document: &serde_json::Value) -> Result<Self, String> {
        let components = document.get("components").cloned().unwrap_or_default();
        let mut compiled: BTreeMap<String, std::sync::Arc<jsonschema::Validator>> = BTreeMap::new();
        let mut operations = Vec::new();
        for (template, item) in document["paths"].as_object().into_iter().flatten() {
            for (method, operation) in item.as_object().into_iter().flatten() {
                let mut responses = BTreeMap::new();
                for (status, response) in operation["responses"].as_object().into_iter().flatten() {
                    let schema = response["content"]
                        .as_object()
                        .and_then(|c| c.iter().find(|(media, _)| media.contains("json")))
                        .map(|(_, media)| media["schema"].clone());
                    let validator = match schema {
                        Some(schema) => {
                            let key = schema.to_string();
                            if !compiled.contains_key(&key) {
                                let mut root = serde_json::json!({ "components": components });
                                if let (Some(root), Some(schema)) = (root.as_object_mut(), schema.as_object()) {
                                    root.extend(schema.clone());
                                }
                                let validator = compile(&root).map_err(|e| {
                                    format!(
                                        "{} {template}: the schema of its {status} answer does not compile: {e}",
                                        method.to_uppercase()
                                    )
                                })?;
                                compiled.insert(key.clone(), std::sync::Arc::new(validator));
                            }
                            compiled.get(&key).cloned()
                        }
                        None => None,
                    };
                    responses.insert(status.clone(), validator);
                }
                let segments = template
                    .split('/')
                    .map(|s| (!(s.starts_with('{') && s.ends_with('}'))).then(|| s.to_string()))
                    .collect();
                operations.push(Operation {
                    method: method.to_uppercase(),
                    template: template.clone(),
                    segments,
                    responses,
                });
            }
        }
        Ok(Self { operations })
    }

    /// The documented operations, as `METHOD /template`.
    pub fn operations(&self) -> Vec<String> {
        self.operations.iter().map(|o| format!("{} {}", o.method, o.template)).collect()
    }

    /// `Ok` when `status` and `body` are what the document says `method
    /// path` answers (`path` without the query; `body` the JSON answer, or
    /// the text as a string); else what broke the contract.
    pub fn check(&self, method: &str, path: &str, status: u16, body: &serde_json::Value) -> Result<(), String> {
        let method = method.to_uppercase();
        let path = path.split('?').next().unwrap_or(path);
        let segments: Vec<&str> = path.split('/').collect();
        let operation = self
            .operations
            .iter()
            .filter(|o| o.method == method && o.segments.len() == segments.len())
            .filter(|o| {
                o.segments.iter().zip(&segments).all(|(t, s)| match t {
                    Some(t) => t == s,
                    None => !s.is_empty(),
                })
            })
            // The most literal template wins (`/accounts/x` over `/{service}/x`).
            .min_by_key(|o| o.segments.iter().filter(|s| s.is_none()).count());
        let Some(operation) = operation else {
            // Not found is the answer for whatever no operation describes.
            if status == 404 {
                return Ok(());
            }
            return Err(format!("{method} {path} answered {status}, but the document describes no such operation"));
        };
        let what = format!("{method} {} answered {status}", operation.template);
        let Some(validator) =
            operation.responses.get(&status.to_string()).or_else(|| operation.responses.get("default"))
        else {
            return Err(format!(
                "{what}, a status its document does not list (it lists {}): {body}",
                operation.responses.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        };
        let Some(validator) = validator else { return Ok(()) };
        let errors = mismatches(validator, body);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("{what} with a body that does not match its schema: {}: {body}", errors.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use wire::payloads::Payload as _;

    fn envelope(kind: &str, data: Value) -> wire::Envelope {
        wire::Envelope {
            id: uuid::Uuid::nil(),
            kind: kind.into(),
            aggregate_id: "a".into(),
            occurred_at: time::OffsetDateTime::UNIX_EPOCH,
            trace_id: "t".into(),
            data,
        }
    }

    /// Each type's own example matches its schema; a renamed field, a wrong
    /// type, a field too many and an unknown type are each named.
    #[test]
    fn events_are_checked_against_the_schema_of_their_type() {
        let contracts = EventContracts::new().unwrap();
        for p in CATALOGUE {
            let example = wire::payloads::example_of(p.event_type).unwrap();
            contracts.check(p.topic, &envelope(p.event_type, example)).unwrap();
        }
        let mut renamed = serde_json::to_value(wire::payloads::PaymentCompleted::example()).unwrap();
        let id = renamed.as_object_mut().unwrap().remove("payment_id").unwrap();
        renamed["paymentId"] = id;
        let err = contracts.check("payments.events", &envelope("payment.completed", renamed)).unwrap_err();
        assert!(err.contains("payment_id") && err.contains("paymentId"), "{err}");

        let mut retyped = serde_json::to_value(wire::payloads::HoldCaptured::example()).unwrap();
        retyped["balance_after"]["amount"] = json!("12.50");
        let err = contracts.check("accounts.events", &envelope("hold.captured", retyped)).unwrap_err();
        assert!(err.contains("/balance_after/amount"), "{err}");

        let mut relative = serde_json::to_value(wire::payloads::HoldPlaced::example()).unwrap();
        relative["hold"] = json!("/holds/1");
        relative["amount"]["currency"] = json!("gbp");
        let err = contracts.check("accounts.events", &envelope("hold.placed", relative)).unwrap_err();
        assert!(err.contains("/hold") && err.contains("/amount/currency"), "{err}");

        let err = contracts.check("accounts.events", &envelope("account.renamed", json!({}))).unwrap_err();
        assert!(err.contains("no schema for this event type"), "{err}");
    }

    #[test]
    fn the_published_document_lists_every_type_with_its_topic_and_schema() {
        let doc = wire::payloads::contracts(None);
        let events = doc["events"].as_array().unwrap();
        assert_eq!(events.len(), CATALOGUE.len());
        let created = events.iter().find(|e| e["type"] == "payment.created").unwrap();
        assert_eq!(created["topic"], "payments.events");
        assert_eq!(created["schema"]["title"], "payment.created");
        assert!(created["schema"]["required"].as_array().unwrap().contains(&json!("debtor_account")));
        let accounts = wire::payloads::contracts(Some("accounts.events"));
        assert!(accounts["events"].as_array().unwrap().iter().all(|e| e["topic"] == "accounts.events"));
        assert_eq!(accounts["events"].as_array().unwrap().len(), 6);
    }
}
