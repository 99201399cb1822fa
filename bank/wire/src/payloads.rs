//! The bodies that cross between the bank's services and its providers: the
//! events one service consumes from another, the providers' webhooks and the
//! acquirer's charge. The producer builds one of these types and the consumer
//! reads the same type, so a renamed or retyped field fails to compile on both
//! sides instead of reading as `null` at run time.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Envelope;

/// An amount in minor units (pence), with its ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    pub amount: i64,
    pub currency: String,
}

impl Amount {
    pub fn gbp(pence: i64) -> Self {
        Self { amount: pence, currency: "GBP".into() }
    }
}

/// UK account details (sort code as the sender wrote it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Details {
    #[serde(default)]
    pub name: String,
    pub sort_code: String,
    pub account_number: String,
}

impl Details {
    fn example() -> Self {
        Self { name: "Carol".into(), sort_code: "20-00-00".into(), account_number: "12345678".into() }
    }
}

/// Who sent an inbound payment: a name, and whatever else the sending bank
/// says of it (the scheme passes it on as it came).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sender {
    #[serde(default)]
    pub name: String,
    #[serde(flatten)]
    pub more: serde_json::Map<String, serde_json::Value>,
}

/// An event's payload: the event type it travels as.
pub trait Payload: Serialize + DeserializeOwned {
    const TYPE: &'static str;

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

macro_rules! published {
    ($($topic:literal: $ty:ident),* $(,)?) => {
        &[$(Published { topic: $topic, event_type: <$ty as Payload>::TYPE, rust_type: stringify!($ty) }),*]
    };
}

/// Every event published with a typed payload, by topic.
pub const CATALOGUE: &[Published] = published![
    "payments.events": PaymentCreated,
    "payments.events": PaymentCompleted,
    "payments.events": PaymentReceived,
    "topups.events": TopupSucceeded,
];

/// The payload of an envelope, read as `T` when the envelope carries `T`'s type.
pub fn payload<T: Payload>(event: &Envelope) -> Result<T, String> {
    if event.kind != T::TYPE {
        return Err(format!("event {} is a `{}`, not a `{}`", event.id, event.kind, T::TYPE));
    }
    serde_json::from_value(event.data.clone()).map_err(|e| format!("`{}` event {}: {e}", T::TYPE, event.id))
}

/// Payments: an outbound payment was accepted and its funds held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCreated {
    /// The payment's URL.
    pub payment: String,
    pub debtor_account: String,
    pub to: Details,
    pub amount: Amount,
    pub reference: String,
}

impl Payload for PaymentCreated {
    const TYPE: &'static str = "payment.created";

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCompleted {
    /// The payment's URL.
    pub payment: String,
    pub payment_id: Uuid,
    pub debtor_account: String,
    pub amount: Amount,
    pub to: Details,
    pub scheme_id: String,
}

impl Payload for PaymentCompleted {
    const TYPE: &'static str = "payment.completed";

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentReceived {
    pub scheme_id: String,
    pub to: Details,
    pub from: Sender,
    pub amount: Amount,
    pub reference: String,
    pub account: String,
}

impl Payload for PaymentReceived {
    const TYPE: &'static str = "payment.received";

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopupSucceeded {
    pub topup_id: Uuid,
    pub account: String,
    pub amount: Amount,
    pub acquirer_id: String,
}

impl Payload for TopupSucceeded {
    const TYPE: &'static str = "topup.succeeded";

    fn example() -> Self {
        Self {
            topup_id: Uuid::nil(),
            account: format!("http://accounts.example/accounts/{}", Uuid::nil()),
            amount: Amount::gbp(2000),
            acquirer_id: "ch_000001".into(),
        }
    }
}

/// The payment scheme's webhooks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundPayment {
    pub scheme_id: String,
    pub to: Details,
    pub from: Sender,
    pub amount: Amount,
    #[serde(default)]
    pub reference: String,
}

/// What the card acquirer answers to a charge (and repeats in its webhook).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeStatus {
    Succeeded,
    Declined,
}

/// The card acquirer's webhook: the charge again, under its outcome's type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
        round_trips::<PaymentCreated>();
        round_trips::<PaymentCompleted>();
        round_trips::<PaymentReceived>();
        round_trips::<TopupSucceeded>();
        let types: Vec<&str> = CATALOGUE.iter().map(|p| p.event_type).collect();
        assert_eq!(types, ["payment.created", "payment.completed", "payment.received", "topup.succeeded"]);
        assert_eq!(CATALOGUE[1].rust_type, "PaymentCompleted");
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
