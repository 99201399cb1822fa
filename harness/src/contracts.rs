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
                                let validator = compile(&standalone(document, &schema)).map_err(|e| {
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
                operations.push(Operation { method: method.to_uppercase(), template: template.clone(), responses });
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
        let operations = self.operations.iter().filter(|o| o.method == method).map(|o| (o.template.as_str(), o));
        let operation = most_literal(operations, path);
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

/// A form for an operation's JSON body, made from the request schema an
/// OpenAPI document gives it: one field for each leaf of the body (nested
/// objects flattened, `to.sort_code`), with its type, whether it is required,
/// its description and its limits; the body it makes is checked against the
/// schema before anything is sent. The dashboard's explorer fills one in for
/// every action it offers.
#[derive(Debug, Clone)]
pub struct RequestForm {
    pub fields: Vec<FormField>,
    /// The request schema with the document's components, to check against.
    schema: Option<serde_json::Value>,
}

/// One field of a [`RequestForm`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormField {
    /// Its place in the body, dotted: `amount.currency`.
    pub name: String,
    pub kind: FieldKind,
    pub required: bool,
    /// What the schema says of it.
    pub description: String,
    /// Its limits, as a reader would say them: `1 to 140 characters`, `matches ^[0-9]{8}$`.
    pub rules: String,
    /// What is typed in (an example from the schema to start with).
    pub value: String,
}

/// How a field's text becomes JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Text,
    Integer,
    Number,
    Boolean,
}

impl RequestForm {
    /// The form for `method path` (`path` as the document names it, e.g.
    /// `/payments/payments`, or a URL whose path that is) in `document`;
    /// `None` when the document describes no such operation. An operation
    /// that takes no body has a form with no fields.
    pub fn for_operation(document: &serde_json::Value, method: &str, path: &str) -> Option<Self> {
        let path = match url::Url::parse(path) {
            Ok(url) => url.path().to_string(),
            Err(_) => path.split('?').next().unwrap_or(path).to_string(),
        };
        let method = method.to_lowercase();
        let items = document["paths"].as_object()?.iter();
        let operations = items.filter_map(|(template, item)| Some((template.as_str(), item.get(&method)?)));
        let operation = most_literal(operations, &path)?;
        let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
        if !schema.is_object() {
            return Some(Self { fields: Vec::new(), schema: None });
        }
        let root = standalone(document, schema);
        let mut fields = Vec::new();
        leaves(document, &root, "", true, &mut fields);
        // The required ones first (each group in the document's order).
        fields.sort_by_key(|f| !f.required);
        Some(Self { fields, schema: Some(root) })
    }

    /// Set the field `name` (when the form has it and it is empty).
    pub fn prefill(&mut self, name: &str, value: &str) {
        if let Some(field) = self.fields.iter_mut().find(|f| f.name == name && f.value.is_empty()) {
            field.value = value.to_string();
        }
    }

    /// The body the fields make, checked against the operation's schema; or
    /// every rule it breaks, each naming the field. Empty optional fields
    /// are left out; a number that does not parse is sent as text, which the
    /// check then names.
    pub fn body(&self) -> Result<serde_json::Value, Vec<String>> {
        let Some(schema) = &self.schema else { return Ok(serde_json::Value::Null) };
        let mut body = serde_json::json!({});
        for field in &self.fields {
            let text = field.value.trim();
            if text.is_empty() {
                continue;
            }
            let value = match field.kind {
                FieldKind::Integer => text.parse::<i64>().map(serde_json::Value::from).ok(),
                FieldKind::Number => text.parse::<f64>().ok().map(serde_json::Value::from),
                FieldKind::Boolean => text.parse::<bool>().ok().map(serde_json::Value::from),
                FieldKind::Text => None,
            }
            .unwrap_or_else(|| serde_json::Value::String(field.value.clone()));
            let mut at = &mut body;
            let parts: Vec<&str> = field.name.split('.').collect();
            for part in &parts[..parts.len() - 1] {
                at = &mut at[*part];
            }
            at[parts[parts.len() - 1]] = value;
        }
        let validator = compile(schema).map_err(|e| vec![format!("the request schema does not compile: {e}")])?;
        let errors: Vec<String> = mismatches(&validator, &body)
            .into_iter()
            .map(|e| match e.split_once(": ") {
                Some(("/", rule)) => rule.to_string(),
                Some((at, rule)) => format!("{}: {rule}", at.trim_start_matches('/').replace('/', ".")),
                None => e,
            })
            .collect();
        if errors.is_empty() { Ok(body) } else { Err(errors) }
    }
}

/// Of `operations` (each with its path template), the one whose template
/// names `path` (a `{...}` segment takes any non-empty one), the most literal
/// winning: `/accounts/x` over `/{service}/x`.
fn most_literal<'t, T>(operations: impl Iterator<Item = (&'t str, T)>, path: &str) -> Option<T> {
    let segments: Vec<&str> = path.split('/').collect();
    let parameter = |t: &str| t.starts_with('{') && t.ends_with('}');
    operations
        .filter(|(template, _)| {
            let t: Vec<&str> = template.split('/').collect();
            t.len() == segments.len()
                && t.iter().zip(&segments).all(|(t, s)| if parameter(t) { !s.is_empty() } else { t == s })
        })
        .min_by_key(|(template, _)| template.split('/').filter(|t| parameter(t)).count())
        .map(|(_, operation)| operation)
}

/// A schema of `document` that stands on its own: the document's
/// components beside it, so that its `$ref`s resolve.
fn standalone(document: &serde_json::Value, schema: &serde_json::Value) -> serde_json::Value {
    let mut root = serde_json::json!({ "components": document.get("components").cloned().unwrap_or_default() });
    if let (Some(root), Some(schema)) = (root.as_object_mut(), schema.as_object()) {
        root.extend(schema.clone());
    }
    root
}

/// `schema` with its `$ref` followed (into `document`'s components) and an
/// optional's `null` branch dropped.
fn resolved<'a>(document: &'a serde_json::Value, schema: &'a serde_json::Value) -> &'a serde_json::Value {
    if let Some(reference) = schema["$ref"].as_str() {
        let pointer = reference.trim_start_matches('#');
        return document.pointer(pointer).map_or(schema, |s| resolved(document, s));
    }
    if let Some(branches) = schema["anyOf"].as_array().or_else(|| schema["oneOf"].as_array()) {
        let real: Vec<&serde_json::Value> = branches.iter().filter(|b| b["type"] != "null").collect();
        if let [only] = real[..] {
            return resolved(document, only);
        }
    }
    schema
}

fn leaves(
    document: &serde_json::Value,
    schema: &serde_json::Value,
    prefix: &str,
    required: bool,
    out: &mut Vec<FormField>,
) {
    // A property's own description, else its type's.
    let described = schema["description"].as_str().map(String::from);
    let schema = resolved(document, schema);
    let types: Vec<&str> = match &schema["type"] {
        serde_json::Value::String(t) => vec![t.as_str()],
        serde_json::Value::Array(ts) => ts.iter().filter_map(|t| t.as_str()).filter(|t| *t != "null").collect(),
        _ => Vec::new(),
    };
    if types.first() == Some(&"object") || schema.get("properties").is_some() {
        let needed: Vec<&str> =
            schema["required"].as_array().into_iter().flatten().filter_map(|r| r.as_str()).collect();
        for (name, property) in schema["properties"].as_object().into_iter().flatten() {
            let dotted = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
            leaves(document, property, &dotted, required && needed.contains(&name.as_str()), out);
        }
        return;
    }
    let kind = match types.first().copied() {
        Some("integer") => FieldKind::Integer,
        Some("number") => FieldKind::Number,
        Some("boolean") => FieldKind::Boolean,
        _ => FieldKind::Text,
    };
    let mut rules = Vec::new();
    match (schema["minimum"].as_f64(), schema["maximum"].as_f64()) {
        (Some(min), Some(max)) => rules.push(format!("{min} to {max}")),
        (Some(min), None) => rules.push(format!("at least {min}")),
        (None, Some(max)) => rules.push(format!("at most {max}")),
        _ => {}
    }
    match (schema["minLength"].as_u64(), schema["maxLength"].as_u64()) {
        (Some(min), Some(max)) => rules.push(format!("{min} to {max} characters")),
        (Some(min), None) => rules.push(format!("at least {min} characters")),
        (None, Some(max)) => rules.push(format!("at most {max} characters")),
        _ => {}
    }
    if let Some(pattern) = schema["pattern"].as_str() {
        rules.push(format!("matches {pattern}"));
    }
    if let Some(values) = schema["enum"].as_array() {
        let values: Vec<String> = values.iter().filter_map(|v| v.as_str()).map(String::from).collect();
        rules.push(format!("one of {}", values.join(", ")));
    }
    if let Some(format) = schema["format"].as_str() {
        rules.push(format.to_string());
    }
    let example = schema["examples"].get(0).or_else(|| schema.get("default")).map(|v| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    out.push(FormField {
        name: prefix.to_string(),
        kind,
        required,
        description: described.or_else(|| schema["description"].as_str().map(String::from)).unwrap_or_default(),
        rules: rules.join("; "),
        value: example.unwrap_or_default(),
    });
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
