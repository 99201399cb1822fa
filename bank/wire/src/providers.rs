//! What the bank sends its providers and what they answer: the other side of
//! the webhooks in [`crate::payloads`]. The bank builds these types; the
//! sandbox's provider mocks check every request against their schemas
//! ([`contracts`]) before they act on it, so a call that drifts from the
//! provider's API is refused in the sandbox as the real provider would refuse
//! it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::payloads::{AcquirerWebhook, Amount, Charge, Details, SchemeWebhook};

/// The scheme's `POST /payments`: send a payment (the payment id is the
/// bank's, and a repeat of it is answered as the first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SchemePayment {
    /// The sender's own id for the payment (the bank's payment id).
    #[schemars(length(min = 1, max = 64))]
    pub payment_id: String,
    /// The debtor's account, as the sender names it (the bank: its URL).
    #[schemars(length(min = 1))]
    pub debtor_account: String,
    pub creditor: Details,
    pub amount: Amount,
    #[schemars(length(max = 18))]
    pub reference: String,
}

/// The scheme's answer to a payment: accepted, its outcome to follow by webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SchemeAccepted {
    pub scheme_id: String,
    pub payment_id: String,
    pub status: String,
}

/// The scheme's `GET /payments/{payment_id}`: what became of a payment, as
/// the scheme knows it. Asked when its webhook did not come (reconciliation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SchemePaymentStatus {
    pub payment_id: String,
    pub scheme_id: String,
    /// `accepted` (no outcome yet), `settled` or `rejected`.
    pub status: String,
    /// (rejected) the ISO 20022 reason code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The scheme's `POST /returns`: hand an inbound payment back, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SchemeReturn {
    pub scheme_id: String,
    /// An ISO 20022 reason code, e.g. `AC01`.
    #[schemars(pattern(r"^[A-Z]{2}[0-9]{2}$"))]
    pub reason: String,
}

/// The acquirer's `POST /charges`: charge a card token (the charge id is the
/// bank's, and a repeat of it is answered as the first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChargeRequest {
    /// The merchant's own id for the charge (the bank's top-up id).
    #[schemars(length(min = 1, max = 64))]
    pub charge_id: String,
    #[schemars(length(min = 1, max = 64))]
    pub card_token: String,
    pub amount: Amount,
    pub reference: String,
}

/// The screening vendor's `POST /screenings`: score a transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScreeningRequest {
    /// The bank's name for the transaction (a payment's URL, `inbound/…`, `topup/…`).
    #[schemars(length(min = 1))]
    pub transaction_id: String,
    /// The bank's account (its URL).
    pub account: String,
    pub amount: Amount,
    /// Who is on the other side, as the bank knows them (account details, a sender).
    pub counterparty: serde_json::Value,
    /// `outbound payment`, `inbound payment` or `card top-up`.
    pub kind: String,
}

/// The vendor's score for a transaction, 0 (none) to 100, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Screening {
    pub transaction_id: String,
    #[schemars(range(min = 0, max = 100))]
    pub score: i64,
    #[serde(default)]
    pub reasons: Vec<String>,
}

/// `T`'s JSON Schema (2020-12) as its serde attributes make it: requests
/// refuse unknown fields (`deny_unknown_fields`), answers and webhooks are
/// open to what a provider may add.
fn schema<T: JsonSchema>() -> serde_json::Value {
    schemars::generate::SchemaSettings::draft2020_12().into_generator().into_root_schema_for::<T>().to_value()
}

/// One operation of a provider's API: its request and answer schemas.
fn operation<Req: JsonSchema, Ans: JsonSchema>(method: &str, path: &str, status: u16) -> serde_json::Value {
    serde_json::json!({
        "method": method,
        "path": path,
        "request": schema::<Req>(),
        "answer": { "status": status, "schema": schema::<Ans>() },
    })
}

/// Every provider's API as the bank uses it, and the webhooks it sends back,
/// as JSON Schemas: what the mocks check requests against and what
/// `sandbox contracts providers` prints.
pub fn contracts() -> serde_json::Value {
    serde_json::json!({
        "payment-scheme": {
            "operations": [
                operation::<SchemePayment, SchemeAccepted>("POST", "/payments", 202),
                operation::<SchemeReturn, serde_json::Value>("POST", "/returns", 202),
                operation::<(), SchemePaymentStatus>("GET", "/payments/{payment_id}", 200),
            ],
            "webhook": schema::<SchemeWebhook>(),
        },
        "card-acquirer": {
            "operations": [operation::<ChargeRequest, Charge>("POST", "/charges", 201)],
            "webhook": schema::<AcquirerWebhook>(),
        },
        "screening-vendor": {
            "operations": [operation::<ScreeningRequest, Screening>("POST", "/screenings", 200)],
        },
    })
}
