//! Amount text to minor units, exactly: "12.5" EUR is 1250 cents. No floats anywhere; the
//! number of decimals is the currency's ISO 4217 exponent, and more decimals are refused
//! rather than rounded.

use crate::ids::{Amount, Currency};

/// Why an amount text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AmountError {
    /// Nothing typed.
    #[error("no amount given")]
    Empty,
    /// Not digits with at most one decimal point.
    #[error("{text:?} is not an amount: use digits and at most one '.', like 12.50")]
    NotANumber {
        /// What was typed (amounts are not secret).
        text: String,
    },
    /// More decimals than the currency has.
    #[error("{currency} has {digits} decimal places; {text:?} has more")]
    TooManyDecimals {
        /// The currency's alphabetic code.
        currency: &'static str,
        /// Its number of decimals.
        digits: u8,
        /// What was typed.
        text: String,
    },
    /// More than fits in 64 bits of minor units.
    #[error("{text:?} is too large")]
    TooLarge {
        /// What was typed.
        text: String,
    },
    /// Zero: nothing to pay.
    #[error("the amount must be greater than zero")]
    Zero,
}

/// Parses an amount in major units ("12.50", "12.5", "12", "0.99") into minor units of
/// `currency`. Refuses signs, spaces, separators, exponents, zero and extra decimals.
pub fn parse_major_amount(text: &str, currency: Currency) -> Result<Amount, AmountError> {
    let amount = parse_major_amount_or_zero(text, currency)?;
    if amount.minor() == 0 {
        return Err(AmountError::Zero);
    }
    Ok(amount)
}

/// Like [`parse_major_amount`], but zero is accepted: for balances and limits, not payments.
pub fn parse_major_amount_or_zero(text: &str, currency: Currency) -> Result<Amount, AmountError> {
    if text.is_empty() {
        return Err(AmountError::Empty);
    }
    let not_a_number = || AmountError::NotANumber { text: text.to_owned() };
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) {
        return Err(not_a_number());
    }
    let fraction = fraction.unwrap_or("");
    if !all_digits(fraction) || (text.ends_with('.') && fraction.is_empty()) {
        return Err(not_a_number());
    }
    let digits = currency.minor_unit_digits();
    if fraction.len() > usize::from(digits) {
        return Err(AmountError::TooManyDecimals { currency: currency.alpha(), digits, text: text.to_owned() });
    }
    let too_large = || AmountError::TooLarge { text: text.to_owned() };
    // Whole part times 10^digits, plus the fraction right-padded with zeros to `digits`.
    let scale = 10u64.checked_pow(u32::from(digits)).ok_or_else(too_large)?;
    let whole_minor = whole.parse::<u64>().map_err(|_| too_large())?.checked_mul(scale).ok_or_else(too_large)?;
    let fraction_minor = if fraction.is_empty() {
        0
    } else {
        let padding = 10u64.pow((usize::from(digits) - fraction.len()) as u32);
        fraction.parse::<u64>().map_err(|_| not_a_number())? * padding
    };
    let minor = whole_minor.checked_add(fraction_minor).ok_or_else(too_large)?;
    Ok(Amount::from_minor(minor))
}

/// Parses an amount given directly in minor units ("1250" is 12.50 EUR); refuses zero.
pub fn parse_minor_amount(text: &str) -> Result<Amount, AmountError> {
    if text.is_empty() {
        return Err(AmountError::Empty);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AmountError::NotANumber { text: text.to_owned() });
    }
    let minor = text.parse::<u64>().map_err(|_| AmountError::TooLarge { text: text.to_owned() })?;
    if minor == 0 {
        return Err(AmountError::Zero);
    }
    Ok(Amount::from_minor(minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(text: &str) -> Result<u64, AmountError> {
        parse_major_amount(text, Currency::EUR).map(|a| a.minor())
    }

    #[test]
    fn major_units_parse_exactly() {
        assert_eq!(eur("12.50"), Ok(1250));
        assert_eq!(eur("12.5"), Ok(1250));
        assert_eq!(eur("12"), Ok(1200));
        assert_eq!(eur("0.01"), Ok(1));
        assert_eq!(eur("007.10"), Ok(710));
        assert_eq!(eur("184467440737095516.15"), Ok(u64::MAX));
        let jpy = Currency::from_code(392).unwrap();
        assert_eq!(parse_major_amount("1250", jpy).map(|a| a.minor()), Ok(1250));
    }

    #[test]
    fn bad_amounts_are_refused_not_rounded() {
        assert!(matches!(eur("12.505"), Err(AmountError::TooManyDecimals { digits: 2, .. })));
        let jpy = Currency::from_code(392).unwrap();
        assert!(matches!(parse_major_amount("12.5", jpy), Err(AmountError::TooManyDecimals { digits: 0, .. })));
        for bad in ["", "abc", "12,50", "-1", "+1", "1e3", " 12", "12 ", ".5", "12.", "1.2.3", "١٢"] {
            assert!(eur(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(eur("0"), Err(AmountError::Zero));
        assert_eq!(eur("0.00"), Err(AmountError::Zero));
        assert_eq!(parse_major_amount_or_zero("0.00", Currency::EUR).map(|a| a.minor()), Ok(0));
        assert!(matches!(eur("184467440737095516.16"), Err(AmountError::TooLarge { .. })));
        assert!(matches!(eur("99999999999999999999999"), Err(AmountError::TooLarge { .. })));
    }

    #[test]
    fn minor_units_parse() {
        assert_eq!(parse_minor_amount("1250").map(|a| a.minor()), Ok(1250));
        assert_eq!(parse_minor_amount("0"), Err(AmountError::Zero));
        assert!(parse_minor_amount("12.50").is_err());
        assert!(parse_minor_amount("").is_err());
    }
}
