//! The bodies that cross between the bank's services and its providers: the
//! events one service consumes from another, the providers' webhooks and the
//! acquirer's charge. The producer builds one of these types and the consumer
//! reads the same type, so a renamed or retyped field fails to compile on both
//! sides instead of reading as `null` at run time.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Envelope;

/// An amount in minor units (pence), with its ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Amount {
    /// Minor units (pence for GBP); never negative.
    #[schemars(range(min = 0))]
    pub amount: i64,
    /// ISO 4217, e.g. `GBP`.
    #[schemars(pattern(r"^[A-Z]{3}$"))]
    pub currency: String,
}

impl Amount {
    pub fn gbp(pence: i64) -> Self {
        Self { amount: pence, currency: "GBP".into() }
    }
}

/// UK account details (sort code as the sender wrote it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Details {
    #[serde(default)]
    pub name: String,
    /// Six digits, with or without dashes: `20-00-00`, `200000`.
    #[schemars(pattern(r"^[0-9]{2}-?[0-9]{2}-?[0-9]{2}$"))]
    pub sort_code: String,
    /// Eight digits.
    #[schemars(pattern(r"^[0-9]{8}$"))]
    pub account_number: String,
}

impl Details {
    fn example() -> Self {
        Self { name: "Carol".into(), sort_code: "20-00-00".into(), account_number: "12345678".into() }
    }
}

/// Who sent an inbound payment: a name, and whatever else the sending bank
/// says of it (the scheme passes it on as it came).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Sender {
    #[serde(default)]
    pub name: String,
    #[serde(flatten)]
    pub more: serde_json::Map<String, serde_json::Value>,
}

/// An event's payload: the event type it travels as.
pub trait Payload: Serialize + DeserializeOwned + JsonSchema {
    const TYPE: &'static str;
    /// The Kafka topic its producer's events go to (`<service>.events`).
    const TOPIC: &'static str;

    /// A payload of this type as its producer would write it, for tests and
    /// documentation (a generated service's API test publishes one).
    fn example() -> Self;
}

/// One kind of event a service publishes with a typed payload: what a new
/// service may consume (`sandbox new service --consumes TOPIC:EVENT_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The Kafka topic the connector publishes it to (`<service>.events`).
    pub topic: &'static str,
    pub event_type: &'static str,
    /// The payload's type in this module.
    pub rust_type: &'static str,
}

/// Calls `$then!` with every published payload type, by topic: the one list
/// the catalogue, the schemas and the examples are made from.
macro_rules! every_payload {
    ($then:ident) => {
        $then!(
            CustomerCreated,
            AccountOpened,
            AccountCredited,
            HoldPlaced,
            HoldCaptured,
            HoldReleased,
            PaymentCreated,
            PaymentSubmitted,
            PaymentCompleted,
            PaymentFailed,
            PaymentReceived,
            PaymentReturned,
            TopupCreated,
            TopupSucceeded,
            TopupFailed,
            TransactionScreened,
            AlertRaised,
            AlertClosed,
            WebhookReceived,
        )
    };
}

macro_rules! catalogue {
    ($($ty:ident),* $(,)?) => {
        &[$(Published { topic: <$ty as Payload>::TOPIC, event_type: <$ty as Payload>::TYPE, rust_type: stringify!($ty) }),*]
    };
}

/// Every event the bank publishes, by topic: each has a payload type here,
/// and so a JSON Schema ([`schema`]). An event of a type not listed here is
/// a broken contract (the e2e runner fails the scenario that saw it).
pub const CATALOGUE: &[Published] = every_payload!(catalogue);

/// The JSON Schema (2020-12) of one event type's payload, generated from its
/// type here; `None` for a type the bank does not publish.
pub fn schema(event_type: &str) -> Option<serde_json::Value> {
    macro_rules! by_type {
        ($($ty:ident),* $(,)?) => {
            match event_type {
                $(<$ty as Payload>::TYPE => Some(schema_of::<$ty>()),)*
                _ => None,
            }
        };
    }
    every_payload!(by_type)
}

/// The published event contracts, as one JSON document: every event type
/// (of `topic` only, when given) with its topic, its Rust type and its
/// payload's schema. Served at `/contracts/events` and printed by
/// `sandbox contracts events`.
pub fn contracts(topic: Option<&str>) -> serde_json::Value {
    let events: Vec<serde_json::Value> = CATALOGUE
        .iter()
        .filter(|p| topic.is_none_or(|t| t == p.topic))
        .map(|p| {
            serde_json::json!({
                "type": p.event_type,
                "topic": p.topic,
                "rust_type": format!("wire::payloads::{}", p.rust_type),
                "schema": schema(p.event_type),
            })
        })
        .collect();
    serde_json::json!({
        "description": "Events on Kafka: each message's value is an envelope (id, type, aggregate_id, occurred_at, trace_id, data); its `data` matches the schema of its `type`.",
        "events": events,
    })
}

/// The example payload of one event type, as JSON; `None` for a type the
/// bank does not publish.
pub fn example_of(event_type: &str) -> Option<serde_json::Value> {
    macro_rules! by_type {
        ($($ty:ident),* $(,)?) => {
            match event_type {
                $(<$ty as Payload>::TYPE => serde_json::to_value(<$ty as Payload>::example()).ok(),)*
                _ => None,
            }
        };
    }
    every_payload!(by_type)
}

/// `P`'s schema, titled with its event type.
fn schema_of<P: Payload>() -> serde_json::Value {
    closed_schema::<P>(Some(P::TYPE))
}

/// `T`'s JSON Schema (2020-12) with its objects closed (below), titled when
/// given a title: what every published contract is made of.
fn closed_schema<T: JsonSchema>(title: Option<&str>) -> serde_json::Value {
    let mut schema = schemars::generate::SchemaSettings::draft2020_12()
        .with_transform(schemars::transform::RecursiveTransform(close_objects))
        .into_generator()
        .into_root_schema_for::<T>();
    if let Some(title) = title {
        schema.insert("title".into(), title.into());
    }
    schema.to_value()
}

/// Every object schema with named properties refuses others (unless it says
/// otherwise, as a flattened map does); `unevaluatedProperties`, so that
/// properties a composed schema names count as named.
fn close_objects(schema: &mut schemars::Schema) {
    if let Some(obj) = schema.as_object_mut()
        && obj.contains_key("properties")
        && !obj.contains_key("additionalProperties")
    {
        obj.insert("unevaluatedProperties".into(), false.into());
    }
}

/// The payload of an envelope, read as `T` when the envelope carries `T`'s type.
pub fn payload<T: Payload>(event: &Envelope) -> Result<T, String> {
    if event.kind != T::TYPE {
        return Err(format!("event {} is a `{}`, not a `{}`", event.id, event.kind, T::TYPE));
    }
    serde_json::from_value(event.data.clone()).map_err(|e| format!("`{}` event {}: {e}", T::TYPE, event.id))
}

/// Payments: an outbound payment was accepted and its funds held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentCreated {
    /// The payment's URL.
    #[schemars(url)]
    pub payment: String,
    #[schemars(url)]
    pub debtor_account: String,
    pub to: Details,
    pub amount: Amount,
    pub reference: String,
}

impl Payload for PaymentCreated {
    const TYPE: &'static str = "payment.created";
    const TOPIC: &'static str = "payments.events";

    fn example() -> Self {
        Self {
            payment: format!("http://payments.example/payments/{}", Uuid::nil()),
            debtor_account: format!("http://accounts.example/accounts/{}", Uuid::nil()),
            to: Details::example(),
            amount: Amount::gbp(1250),
            reference: "rent".into(),
        }
    }
}

/// Payments: an outbound payment settled at the scheme; its hold was captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentCompleted {
    /// The payment's URL.
    #[schemars(url)]
    pub payment: String,
    pub payment_id: Uuid,
    #[schemars(url)]
    pub debtor_account: String,
    pub amount: Amount,
    pub to: Details,
    pub scheme_id: String,
}

impl Payload for PaymentCompleted {
    const TYPE: &'static str = "payment.completed";
    const TOPIC: &'static str = "payments.events";

    fn example() -> Self {
        Self {
            payment: format!("http://payments.example/payments/{}", Uuid::nil()),
            payment_id: Uuid::nil(),
            debtor_account: format!("http://accounts.example/accounts/{}", Uuid::nil()),
            amount: Amount::gbp(1250),
            to: Details::example(),
            scheme_id: "fps_000001".into(),
        }
    }
}

/// Payments: money from another bank was credited to `account`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentReceived {
    pub scheme_id: String,
    pub to: Details,
    pub from: Sender,
    pub amount: Amount,
    pub reference: String,
    #[schemars(url)]
    pub account: String,
}

impl Payload for PaymentReceived {
    const TYPE: &'static str = "payment.received";
    const TOPIC: &'static str = "payments.events";

    fn example() -> Self {
        Self {
            scheme_id: "fps_000002".into(),
            to: Details::example(),
            from: Sender { name: "Dave".into(), more: serde_json::Map::new() },
            amount: Amount::gbp(3000),
            reference: "dinner".into(),
            account: format!("http://accounts.example/accounts/{}", Uuid::nil()),
        }
    }
}

/// Top-ups: a card top-up succeeded and `account` was credited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TopupSucceeded {
    pub topup_id: Uuid,
    #[schemars(url)]
    pub account: String,
    pub amount: Amount,
    pub acquirer_id: String,
}

impl Payload for TopupSucceeded {
    const TYPE: &'static str = "topup.succeeded";
    const TOPIC: &'static str = "topups.events";

    fn example() -> Self {
        Self {
            topup_id: Uuid::nil(),
            account: format!("http://accounts.example/accounts/{}", Uuid::nil()),
            amount: Amount::gbp(2000),
            acquirer_id: "ch_000001".into(),
        }
    }
}

/// An account's URL, as the accounts service writes it.
fn account_url() -> String {
    format!("http://accounts.example/accounts/{}", Uuid::nil())
}

/// Accounts: a customer was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CustomerCreated {
    /// The customer's URL.
    #[schemars(url)]
    pub customer: String,
    pub name: String,
}

impl Payload for CustomerCreated {
    const TYPE: &'static str = "customer.created";
    const TOPIC: &'static str = "accounts.events";

    fn example() -> Self {
        Self { customer: format!("http://accounts.example/customers/{}", Uuid::nil()), name: "Alice".into() }
    }
}

/// Accounts: an account was opened for a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AccountOpened {
    /// The account's URL.
    #[schemars(url)]
    pub account: String,
    /// The customer's URL.
    #[schemars(url)]
    pub customer: String,
    /// As printed: `04-00-04`.
    #[schemars(pattern(r"^[0-9]{2}-[0-9]{2}-[0-9]{2}$"))]
    pub sort_code: String,
    /// Eight digits.
    #[schemars(pattern(r"^[0-9]{8}$"))]
    pub account_number: String,
    /// ISO 4217.
    #[schemars(pattern(r"^[A-Z]{3}$"))]
    pub currency: String,
}

impl Payload for AccountOpened {
    const TYPE: &'static str = "account.opened";
    const TOPIC: &'static str = "accounts.events";

    fn example() -> Self {
        Self {
            account: account_url(),
            customer: format!("http://accounts.example/customers/{}", Uuid::nil()),
            sort_code: "04-00-04".into(),
            account_number: "12345678".into(),
            currency: "GBP".into(),
        }
    }
}

/// Accounts: money was put into an account from outside the bank's flows (or
/// by a flow that credits: an inbound payment, a top-up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AccountCredited {
    #[schemars(url)]
    pub account: String,
    /// The posting's id.
    pub transaction: Uuid,
    pub amount: Amount,
    pub balance_after: Amount,
    pub reference: String,
}

impl Payload for AccountCredited {
    const TYPE: &'static str = "account.credited";
    const TOPIC: &'static str = "accounts.events";

    fn example() -> Self {
        Self {
            account: account_url(),
            transaction: Uuid::nil(),
            amount: Amount::gbp(1000),
            balance_after: Amount::gbp(1000),
            reference: "deposit".into(),
        }
    }
}

/// Accounts: funds were reserved on an account (a payment's hold).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HoldPlaced {
    #[schemars(url)]
    pub account: String,
    /// The hold's URL.
    #[schemars(url)]
    pub hold: String,
    pub amount: Amount,
    pub reference: String,
}

impl Payload for HoldPlaced {
    const TYPE: &'static str = "hold.placed";
    const TOPIC: &'static str = "accounts.events";

    fn example() -> Self {
        Self {
            account: account_url(),
            hold: format!("http://accounts.example/holds/{}", Uuid::nil()),
            amount: Amount::gbp(1250),
            reference: "rent".into(),
        }
    }
}

/// Accounts: a hold was captured: its amount left the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HoldCaptured {
    #[schemars(url)]
    pub account: String,
    #[schemars(url)]
    pub hold: String,
    pub amount: Amount,
    pub reference: String,
    /// The debit's posting.
    pub transaction: Uuid,
    pub balance_after: Amount,
}

impl Payload for HoldCaptured {
    const TYPE: &'static str = "hold.captured";
    const TOPIC: &'static str = "accounts.events";

    fn example() -> Self {
        let placed = HoldPlaced::example();
        Self {
            account: placed.account,
            hold: placed.hold,
            amount: placed.amount,
            reference: placed.reference,
            transaction: Uuid::nil(),
            balance_after: Amount::gbp(0),
        }
    }
}

/// Accounts: a hold was released: its amount is available again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HoldReleased {
    #[schemars(url)]
    pub account: String,
    #[schemars(url)]
    pub hold: String,
    pub amount: Amount,
    pub reference: String,
}

impl Payload for HoldReleased {
    const TYPE: &'static str = "hold.released";
    const TOPIC: &'static str = "accounts.events";

    fn example() -> Self {
        let HoldPlaced { account, hold, amount, reference } = HoldPlaced::example();
        Self { account, hold, amount, reference }
    }
}

/// Payments: a payment was handed to the scheme (an attempt's number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentSubmitted {
    pub payment_id: Uuid,
    pub scheme_id: String,
    pub attempts: i32,
}

impl Payload for PaymentSubmitted {
    const TYPE: &'static str = "payment.submitted";
    const TOPIC: &'static str = "payments.events";

    fn example() -> Self {
        Self { payment_id: Uuid::nil(), scheme_id: "fps_000001".into(), attempts: 1 }
    }
}

/// Payments: a payment failed (the scheme's reason code and words); its hold
/// was released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentFailed {
    pub payment_id: Uuid,
    /// The scheme's reason code, e.g. `AC01`.
    pub reason: String,
    pub description: String,
}

impl Payload for PaymentFailed {
    const TYPE: &'static str = "payment.failed";
    const TOPIC: &'static str = "payments.events";

    fn example() -> Self {
        Self { payment_id: Uuid::nil(), reason: "AC01".into(), description: "incorrect account number".into() }
    }
}

/// Payments: money from another bank for an account this bank does not have
/// went back to the scheme.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentReturned {
    pub scheme_id: String,
    pub to: Details,
    pub from: Sender,
    pub amount: Amount,
    pub reference: String,
    /// Why it went back, e.g. `AC01`.
    pub reason: String,
}

impl Payload for PaymentReturned {
    const TYPE: &'static str = "payment.returned";
    const TOPIC: &'static str = "payments.events";

    fn example() -> Self {
        let received = PaymentReceived::example();
        Self {
            scheme_id: received.scheme_id,
            to: received.to,
            from: received.from,
            amount: received.amount,
            reference: received.reference,
            reason: "AC01".into(),
        }
    }
}

/// Top-ups: a card top-up was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TopupCreated {
    pub topup_id: Uuid,
    #[schemars(url)]
    pub account: String,
    pub amount: Amount,
}

impl Payload for TopupCreated {
    const TYPE: &'static str = "topup.created";
    const TOPIC: &'static str = "topups.events";

    fn example() -> Self {
        Self { topup_id: Uuid::nil(), account: account_url(), amount: Amount::gbp(2000) }
    }
}

/// Top-ups: a card top-up failed (the acquirer's reason); nothing was credited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TopupFailed {
    pub topup_id: Uuid,
    #[schemars(url)]
    pub account: String,
    pub reason: String,
}

impl Payload for TopupFailed {
    const TYPE: &'static str = "topup.failed";
    const TOPIC: &'static str = "topups.events";

    fn example() -> Self {
        Self { topup_id: Uuid::nil(), account: account_url(), reason: "do_not_honour".into() }
    }
}

/// Monitoring: a transaction was screened, alert or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TransactionScreened {
    /// The transaction screened: a payment's URL, `inbound/<scheme id>` or
    /// `topup/<id>`.
    pub transaction: String,
    /// `outbound payment`, `inbound payment` or `card top-up`.
    pub kind: String,
    #[schemars(url)]
    pub account: String,
    /// The screening vendor's score.
    pub score: i64,
    /// The alert raised for it, if one was.
    pub alert_id: Option<Uuid>,
}

impl Payload for TransactionScreened {
    const TYPE: &'static str = "transaction.screened";
    const TOPIC: &'static str = "monitoring.events";

    fn example() -> Self {
        Self {
            transaction: format!("http://payments.example/payments/{}", Uuid::nil()),
            kind: "outbound payment".into(),
            account: account_url(),
            score: 10,
            alert_id: None,
        }
    }
}

/// Monitoring: a suspicious-transaction alert was raised, with its reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AlertRaised {
    pub alert_id: Uuid,
    pub transaction: String,
    pub kind: String,
    #[schemars(url)]
    pub account: String,
    pub amount: Amount,
    pub reasons: Vec<String>,
    pub score: i64,
}

impl Payload for AlertRaised {
    const TYPE: &'static str = "alert.raised";
    const TOPIC: &'static str = "monitoring.events";

    fn example() -> Self {
        let screened = TransactionScreened::example();
        Self {
            alert_id: Uuid::nil(),
            transaction: screened.transaction,
            kind: screened.kind,
            account: screened.account,
            amount: Amount::gbp(1_000_000),
            reasons: vec!["large amount: £10,000.00 is at or over £5,000.00".into()],
            score: 10,
        }
    }
}

/// Monitoring: an alert was closed with an analyst's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AlertClosed {
    pub alert_id: Uuid,
    pub outcome: String,
}

impl Payload for AlertClosed {
    const TYPE: &'static str = "alert.closed";
    const TOPIC: &'static str = "monitoring.events";

    fn example() -> Self {
        Self { alert_id: Uuid::nil(), outcome: "false_positive".into() }
    }
}

/// Gateway: a provider's webhook arrived, signed, and was passed on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookReceived {
    /// The provider, as its route names it: `payment-scheme`, `card-acquirer`.
    pub provider: String,
    /// The webhook's own `type` (`unknown` when it has none).
    #[serde(rename = "type")]
    pub kind: String,
    /// The webhook as the provider sent it.
    pub body: serde_json::Value,
}

impl Payload for WebhookReceived {
    const TYPE: &'static str = "webhook.received";
    const TOPIC: &'static str = "gateway.events";

    fn example() -> Self {
        Self {
            provider: "card-acquirer".into(),
            kind: "charge.succeeded".into(),
            body: serde_json::json!({ "type": "charge.succeeded" }),
        }
    }
}

/// The payment scheme's webhooks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum SchemeWebhook {
    /// An outbound payment reached the creditor's bank.
    #[serde(rename = "payment.settled")]
    Settled { scheme_id: String, payment_id: String, debtor_account: Option<String>, amount: Amount },
    /// An outbound payment was turned down, with the scheme's reason code.
    #[serde(rename = "payment.rejected")]
    Rejected {
        scheme_id: String,
        payment_id: String,
        debtor_account: Option<String>,
        amount: Amount,
        reason: String,
        description: String,
    },
    /// Money from another bank for one of this bank's accounts.
    #[serde(rename = "payment.received")]
    Received(InboundPayment),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InboundPayment {
    pub scheme_id: String,
    pub to: Details,
    pub from: Sender,
    pub amount: Amount,
    #[serde(default)]
    pub reference: String,
}

/// What the card acquirer answers to a charge (and repeats in its webhook).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Charge {
    pub acquirer_id: String,
    pub charge_id: String,
    pub status: ChargeStatus,
    pub amount: Amount,
    pub card_token: String,
    /// Why it was declined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChargeStatus {
    Succeeded,
    Declined,
}

/// The card acquirer's webhook: the charge again, under its outcome's type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum AcquirerWebhook {
    #[serde(rename = "charge.succeeded")]
    Succeeded(Charge),
    #[serde(rename = "charge.declined")]
    Declined(Charge),
}

impl AcquirerWebhook {
    pub fn of(charge: Charge) -> Self {
        match charge.status {
            ChargeStatus::Succeeded => Self::Succeeded(charge),
            ChargeStatus::Declined => Self::Declined(charge),
        }
    }

    pub fn charge(&self) -> &Charge {
        match self {
            Self::Succeeded(c) | Self::Declined(c) => c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<P: Payload + PartialEq + std::fmt::Debug>() {
        let example = P::example();
        let back: P = serde_json::from_value(serde_json::to_value(&example).unwrap()).unwrap();
        assert_eq!(back, example, "{}", P::TYPE);
    }

    #[test]
    fn every_catalogued_payload_has_an_example_that_reads_back() {
        macro_rules! all_round_trip {
            ($($ty:ident),* $(,)?) => { $(round_trips::<$ty>();)* };
        }
        every_payload!(all_round_trip);
        let types: Vec<&str> = CATALOGUE.iter().map(|p| p.event_type).collect();
        for t in ["payment.created", "payment.completed", "payment.received", "topup.succeeded", "hold.captured"] {
            assert!(types.contains(&t), "{t} is not catalogued");
        }
        let completed = CATALOGUE.iter().find(|p| p.event_type == "payment.completed").unwrap();
        assert_eq!((completed.topic, completed.rust_type), ("payments.events", "PaymentCompleted"));
        // Each type is catalogued once, under its producer's topic.
        let mut unique = types.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), types.len());
        assert!(CATALOGUE.iter().all(|p| p.topic.ends_with(".events")));
    }

    #[test]
    fn webhooks_read_back_as_what_was_sent() {
        let charge = Charge {
            acquirer_id: "ch_000001".into(),
            charge_id: "c1".into(),
            status: ChargeStatus::Declined,
            amount: Amount { amount: 500, currency: "GBP".into() },
            card_token: "tok_declined".into(),
            reason: Some("do_not_honour".into()),
        };
        let hook = serde_json::to_value(AcquirerWebhook::of(charge.clone())).unwrap();
        assert_eq!(hook["type"], "charge.declined");
        assert_eq!(hook["status"], "declined");
        assert_eq!(serde_json::from_value::<AcquirerWebhook>(hook).unwrap().charge(), &charge);
        let inbound = serde_json::json!({
            "type": "payment.received", "scheme_id": "fps_1",
            "to": { "sort_code": "04-00-04", "account_number": "12345678" },
            "from": { "name": "Dave", "payment_id": "p1" },
            "amount": { "amount": 3000, "currency": "GBP" },
        });
        let SchemeWebhook::Received(p) = serde_json::from_value(inbound).unwrap() else { panic!("not received") };
        assert_eq!((p.from.name.as_str(), &p.from.more["payment_id"]), ("Dave", &serde_json::json!("p1")));
    }
}
