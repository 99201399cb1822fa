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

/// UK account details (sort code as the sender wrote it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Details {
    #[serde(default)]
    pub name: String,
    pub sort_code: String,
    pub account_number: String,
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
}

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
