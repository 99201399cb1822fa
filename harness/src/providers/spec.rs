//! A provider's definition, from `fixtures/providers/<name>.yaml`: which API it
//! speaks, what scopes its faults and journal, and the outcomes its magic values
//! force (first matching rule wins), like a real provider's sandbox.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Faster Payments style: accepts a payment, later calls back settled or rejected.
    PaymentScheme,
    /// Charges a card token: succeeded or declined, confirmed by webhook.
    CardAcquirer,
    /// Scores a transaction's risk.
    ScreeningVendor,
}

impl Kind {
    /// As definitions and contracts name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::PaymentScheme => "payment-scheme",
            Self::CardAcquirer => "card-acquirer",
            Self::ScreeningVendor => "screening-vendor",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub name: String,
    pub kind: Kind,
    /// JSON pointer into a request body naming what faults and journal entries
    /// are scoped to (an account, a card token).
    pub scope: String,
    #[serde(default)]
    pub webhook: Option<Webhook>,
    /// (payment scheme) Sort codes of the bank behind the webhook: a settled
    /// payment to one of them is also delivered to it as an inbound payment,
    /// as Faster Payments does between two customers of one bank.
    #[serde(default)]
    pub inbound_sort_codes: Vec<String>,
    pub outcomes: Vec<Rule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Appended to the sandbox's webhook base URL (the gateway).
    pub path: String,
    /// How long after accepting the provider calls back.
    #[serde(default)]
    pub delay_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub when: Option<When>,
    pub then: Value,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// JSON pointer into the request body.
    pub pointer: String,
    #[serde(default)]
    pub equals: Option<Value>,
    #[serde(default)]
    pub at_least: Option<f64>,
}

impl When {
    fn matches(&self, body: &Value) -> bool {
        let Some(v) = body.pointer(&self.pointer) else { return false };
        let equals = self.equals.as_ref().is_none_or(|e| e == v);
        let at_least = self.at_least.is_none_or(|min| v.as_f64().is_some_and(|n| n >= min));
        equals && at_least
    }
}

impl Spec {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|cause| Error::Read { path: path.to_path_buf(), cause })?;
        let spec: Spec = serde_yaml::from_str(&text).map_err(|e| Error::Topology {
            file: path.to_path_buf(),
            line: e.location().map_or(1, |l| l.line()),
            message: format!("not a provider definition: {e}"),
        })?;
        if !spec.outcomes.iter().any(|r| r.when.is_none()) {
            return Err(Error::Topology {
                file: path.to_path_buf(),
                line: 1,
                message: format!("provider `{}` has no default outcome (a rule without `when`)", spec.name),
            });
        }
        Ok(spec)
    }

    /// The outcome the first matching rule forces.
    pub fn outcome(&self, body: &Value) -> Value {
        self.outcomes
            .iter()
            .find(|r| r.when.as_ref().is_none_or(|w| w.matches(body)))
            .map(|r| r.then.clone())
            .unwrap_or(Value::Null)
    }

    pub fn is_inbound(&self, sort_code: &Value) -> bool {
        let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
        sort_code.as_str().is_some_and(|s| self.inbound_sort_codes.iter().any(|c| digits(c) == digits(s)))
    }

    pub fn scope_of(&self, body: &Value) -> Option<String> {
        body.pointer(&self.scope).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_fixtures_load_and_their_magic_values_force_outcomes() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/providers");
        let scheme = Spec::load(&dir.join("payment-scheme.yaml")).unwrap();
        let rejected = json!({ "creditor": { "account_number": "99999901" } });
        assert_eq!(scheme.outcome(&rejected)["result"], "rejected");
        assert_eq!(scheme.outcome(&rejected)["reason"], "AC01");
        assert_eq!(scheme.outcome(&json!({ "creditor": { "account_number": "12345678" } }))["result"], "settled");
        let acquirer = Spec::load(&dir.join("card-acquirer.yaml")).unwrap();
        assert_eq!(acquirer.outcome(&json!({ "card_token": "tok_declined" }))["result"], "declined");
        assert_eq!(acquirer.outcome(&json!({ "card_token": "tok_visa" }))["result"], "succeeded");
        let vendor = Spec::load(&dir.join("screening-vendor.yaml")).unwrap();
        assert!(vendor.outcome(&json!({ "amount": { "amount": 1_000_000 } }))["score"].as_u64().unwrap() >= 90);
        assert!(vendor.outcome(&json!({ "amount": { "amount": 100 } }))["score"].as_u64().unwrap() < 50);
    }
}
