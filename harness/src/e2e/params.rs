//! Typed step parameters: money as the bank writes it, people by name.

use std::str::FromStr;

use cucumber::Parameter;

/// `£1,234.56`, in pence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Parameter)]
#[param(name = "money", regex = r"£\d{1,3}(?:,\d{3})*\.\d{2}|£\d+\.\d{2}")]
pub struct Money(pub i64);

impl FromStr for Money {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not an amount of money like £1,234.56");
        let digits = s.strip_prefix('£').ok_or_else(bad)?.replace(',', "");
        let (pounds, pence) = digits.split_once('.').ok_or_else(bad)?;
        let pounds: i64 = pounds.parse().map_err(|_| bad())?;
        let pence: i64 = pence.parse().map_err(|_| bad())?;
        pounds.checked_mul(100).and_then(|p| p.checked_add(pence)).map(Money).ok_or_else(bad)
    }
}

/// A person the scenario talks about: a capitalised first name.
#[derive(Debug, Clone, PartialEq, Eq, Parameter)]
#[param(name = "person", regex = r"[A-Z][a-z]+")]
pub struct Name(pub String);

impl FromStr for Name {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_reads_as_the_bank_writes_it() {
        assert_eq!("£0.01".parse::<Money>(), Ok(Money(1)));
        assert_eq!("£25.00".parse::<Money>(), Ok(Money(2_500)));
        assert_eq!("£1,000,000.00".parse::<Money>(), Ok(Money(100_000_000)));
        assert!("25.00".parse::<Money>().is_err());
        assert!("£25".parse::<Money>().is_err());
    }
}
