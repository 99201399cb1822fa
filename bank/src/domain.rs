//! Value types that cannot hold a bad value ("parse, don't validate"). Money is
//! integer minor units with an ISO 4217 currency.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DomainError {
    #[error("amount must be a positive whole number of minor units (pence), got {0}")]
    NonPositiveAmount(i64),
    #[error("unknown currency `{0}`: use an ISO 4217 code such as GBP")]
    UnknownCurrency(String),
    #[error("currency mismatch: the account holds {expected}, the request is in {got}")]
    CurrencyMismatch { expected: Currency, got: Currency },
    #[error("Idempotency-Key must be 1 to 255 printable ASCII characters")]
    BadIdempotencyKey,
    #[error("sort code must be six digits (e.g. 04-00-04 or 040004), got `{0}`")]
    BadSortCode(String),
    #[error("account number must be eight digits, got `{0}`")]
    BadAccountNumber(String),
    #[error(
        "must be the URL of an account of this bank, as the accounts service gives it \
         (`{accounts}/accounts/<id>`, or through the gateway `<gateway>/accounts/accounts/<id>`); got {got}"
    )]
    ForeignAccount { accounts: String, got: String },
    #[error("amount must be at most {MAX_AMOUNT} minor units, got {0}")]
    AmountTooLarge(i64),
}

/// The currencies this bank knows. Accounts are opened in GBP; the others exist so
/// that a payment in them is refused as a mismatch rather than as nonsense.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Currency {
    Gbp,
    Eur,
    Usd,
}

impl Currency {
    pub fn code(self) -> &'static str {
        match self {
            Self::Gbp => "GBP",
            Self::Eur => "EUR",
            Self::Usd => "USD",
        }
    }

    pub fn parse(code: &str) -> Result<Self, DomainError> {
        match code {
            "GBP" => Ok(Self::Gbp),
            "EUR" => Ok(Self::Eur),
            "USD" => Ok(Self::Usd),
            other => Err(DomainError::UnknownCurrency(other.to_string())),
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl TryFrom<String> for Currency {
    type Error = DomainError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> Self {
        c.code().to_string()
    }
}

/// A strictly positive amount of money: what a credit, hold or payment moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Money {
    pub amount: i64,
    pub currency: Currency,
}

/// The largest amount one request may move: £10bn in pence. Far beyond any
/// real payment, and small enough that no sum of them a sandbox could make
/// overflows a balance.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

impl Money {
    pub fn new(amount: i64, currency: Currency) -> Result<Self, DomainError> {
        if amount <= 0 {
            return Err(DomainError::NonPositiveAmount(amount));
        }
        if amount > MAX_AMOUNT {
            return Err(DomainError::AmountTooLarge(amount));
        }
        Ok(Self { amount, currency })
    }
}

/// The wire shape of money in requests: parsed into [`Money`] by the handler so
/// the error names the field.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MoneyInput {
    /// Whole minor units (pence), 1 to 10^12.
    #[schemars(range(min = 1, max = MAX_AMOUNT), example = 1000)]
    pub amount: i64,
    /// ISO 4217: a currency the bank knows (its accounts hold GBP).
    #[schemars(extend("enum" = ["GBP", "EUR", "USD"]), example = &"GBP")]
    pub currency: String,
}

impl TryFrom<MoneyInput> for Money {
    type Error = DomainError;
    fn try_from(input: MoneyInput) -> Result<Self, Self::Error> {
        Money::new(input.amount, Currency::parse(&input.currency)?)
    }
}

/// A balance: may be zero (never negative in this bank: there are no overdrafts).
pub fn money_json(amount: i64, currency: Currency) -> serde_json::Value {
    serde_json::json!({ "amount": amount, "currency": currency.code() })
}

/// An amount as the events carry it (`wire::payloads::Amount`).
pub fn amount(amount: i64, currency: Currency) -> wire::payloads::Amount {
    wire::payloads::Amount { amount, currency: currency.code().to_string() }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let ok = !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| (0x21..=0x7e).contains(&b));
        if ok { Ok(Self(s.to_string())) } else { Err(DomainError::BadIdempotencyKey) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortCode(String);

impl SortCode {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let digits: String = s.chars().filter(|c| *c != '-').collect();
        if digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(digits))
        } else {
            Err(DomainError::BadSortCode(s.to_string()))
        }
    }

    /// The usual printed form, `04-00-04`.
    pub fn display(&self) -> String {
        format!("{}-{}-{}", &self.0[0..2], &self.0[2..4], &self.0[4..6])
    }

    pub fn digits(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountNumber(String);

impl AccountNumber {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(s.to_string()))
        } else {
            Err(DomainError::BadAccountNumber(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A URL naming an account of this bank, and nothing else: a URL a client
/// sends is never fetched unless it is the bank's own. Two forms are the
/// bank's: the accounts service's own (`<accounts>/accounts/<id>`, its
/// configured base URL) and the one the gateway the client came through gives
/// (`<that gateway's origin>/accounts/accounts/<id>`), which the kit's client
/// calls at the accounts service directly. No query, fragment, credentials,
/// other path or other host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRef(String);

impl AccountRef {
    /// `raw`, if it names an account of this bank: `accounts` is the accounts
    /// service's base URL, `origin` the scheme and host the request came in by.
    pub fn parse(raw: &str, accounts: &str, origin: &str) -> Result<Self, DomainError> {
        let bases = [format!("{}/accounts/", accounts.trim_end_matches('/')), format!("{origin}/accounts/accounts/")];
        let ours = bases
            .iter()
            .filter_map(|base| raw.strip_prefix(base.as_str()))
            .any(|id| id.len() == 36 && uuid::Uuid::parse_str(id).is_ok());
        if ours {
            return Ok(Self(raw.to_string()));
        }
        let quoted = format!("{raw:?}");
        let mut got: String = quoted.chars().take(200).collect();
        if got.len() < quoted.len() {
            got.push_str("...");
        }
        Err(DomainError::ForeignAccount { accounts: accounts.trim_end_matches('/').to_string(), got })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_refuses_zero_and_negative_amounts() {
        assert_eq!(Money::new(0, Currency::Gbp), Err(DomainError::NonPositiveAmount(0)));
        assert_eq!(Money::new(-5, Currency::Gbp), Err(DomainError::NonPositiveAmount(-5)));
        assert_eq!(Money::new(1, Currency::Gbp).map(|m| m.amount), Ok(1));
    }

    #[test]
    fn unknown_currency_is_named() {
        let err = Currency::parse("XYZ").unwrap_err();
        assert_eq!(err.to_string(), "unknown currency `XYZ`: use an ISO 4217 code such as GBP");
    }

    #[test]
    fn sort_codes_accept_both_printed_forms() {
        assert_eq!(SortCode::parse("04-00-04").unwrap().digits(), "040004");
        assert_eq!(SortCode::parse("040004").unwrap().display(), "04-00-04");
        assert!(SortCode::parse("04-00-4").is_err());
        assert!(AccountNumber::parse("1234567").is_err());
        assert!(AccountNumber::parse("12345678").is_ok());
    }

    #[test]
    fn an_account_ref_is_only_ever_one_of_this_banks_accounts() {
        let accounts = "http://127.0.0.1:4001";
        let origin = "http://127.0.0.1:4000";
        let id = "0190a0b2-7c3e-7d1a-9f00-5d2b8c1e4f60";
        for ok in [format!("{accounts}/accounts/{id}"), format!("{origin}/accounts/accounts/{id}")] {
            assert_eq!(AccountRef::parse(&ok, accounts, origin).unwrap().as_str(), ok);
        }
        for bad in [
            format!("http://evil.example/accounts/{id}"),
            format!("http://evil.example/accounts/accounts/{id}"),
            format!("{accounts}/metrics"),
            format!("{accounts}/accounts/{id}/../../metrics"),
            format!("{accounts}/accounts/{id}?x=1"),
            format!("{accounts}@evil.example/accounts/{id}"),
            format!("{origin}/accounts/{id}"),
            "file:///etc/passwd".to_string(),
            String::new(),
        ] {
            let err = AccountRef::parse(&bad, accounts, origin).unwrap_err().to_string();
            assert!(err.contains("must be the URL of an account of this bank"), "{bad}: {err}");
        }
    }

    #[test]
    fn amounts_are_bounded() {
        assert!(Money::new(MAX_AMOUNT, Currency::Gbp).is_ok());
        assert_eq!(Money::new(MAX_AMOUNT + 1, Currency::Gbp), Err(DomainError::AmountTooLarge(MAX_AMOUNT + 1)));
    }

    #[test]
    fn idempotency_keys_are_bounded_and_printable() {
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("pay-123_ABC").is_ok());
    }
}
