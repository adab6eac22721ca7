//! Typed identifiers and amounts of DESIGN.md section 2, parsed once at the edge.
//!
//! Every constructor rejects bad input with an [`IdError`]; a function that takes one of
//! these types never validates it again. Wire helpers (BCD, fixed-width ASCII) live here too,
//! so the packet codecs only move bytes.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Why an identifier, amount or currency was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The value has the wrong number of characters.
    #[error("{field} must have {expected} characters, got {actual}")]
    Length {
        /// Which field.
        field: &'static str,
        /// What was expected, in words ("6", "19 or 20", "1 to 15").
        expected: &'static str,
        /// How many characters were given.
        actual: usize,
    },
    /// A character that is not a decimal digit.
    #[error("{field} must contain only the digits 0-9")]
    NotDigits {
        /// Which field.
        field: &'static str,
    },
    /// A character outside printable ASCII (0x20..=0x7e).
    #[error("{field} must contain only printable ASCII characters")]
    NotPrintable {
        /// Which field.
        field: &'static str,
    },
    /// Only spaces: an empty merchant id or order number.
    #[error("{field} must not be blank")]
    Blank {
        /// Which field.
        field: &'static str,
    },
    /// A BCD nibble that is neither a digit nor, where allowed, the 0xF pad.
    #[error("{field} is not valid BCD")]
    BadBcd {
        /// Which field.
        field: &'static str,
    },
    /// Currency code 0 or not in the ISO 4217 table this build knows.
    #[error("currency {0} is not a known ISO 4217 numeric code")]
    UnknownCurrency(u16),
    /// A session counter at or above 2^48 (it is 6 bytes on the wire).
    #[error("counter {0} does not fit in 6 bytes")]
    CounterRange(u64),
    /// A password of the wrong length (4 to 12 characters).
    #[error("payment password must have 4 to 12 characters, got {0}")]
    PasswordLength(usize),
    /// A text that is not a number.
    #[error("{field} is not a whole number")]
    NotANumber {
        /// Which field.
        field: &'static str,
    },
}

fn check_digits(field: &'static str, s: &str) -> Result<(), IdError> {
    if s.bytes().all(|b| b.is_ascii_digit()) { Ok(()) } else { Err(IdError::NotDigits { field }) }
}

/// Packs decimal digits into BCD, two per byte, high nibble first, padded with 0xF.
fn digits_to_bcd<const N: usize>(digits: &str) -> [u8; N] {
    let mut out = [0xFFu8; N];
    for (i, d) in digits.bytes().enumerate() {
        let nibble = d - b'0';
        let byte = &mut out[i / 2];
        if i % 2 == 0 {
            *byte = (nibble << 4) | 0x0F;
        } else {
            *byte = (*byte & 0xF0) | nibble;
        }
    }
    out
}

/// Unpacks BCD digits until the first 0xF pad; after a pad only pad nibbles may follow.
fn bcd_to_digits(field: &'static str, bytes: &[u8]) -> Result<String, IdError> {
    let mut out = String::with_capacity(bytes.len() * 2);
    let mut padded = false;
    for nibble in bytes.iter().flat_map(|b| [b >> 4, b & 0x0F]) {
        match nibble {
            0..=9 if !padded => out.push(char::from(b'0' + nibble)),
            0x0F => padded = true,
            _ => return Err(IdError::BadBcd { field }),
        }
    }
    Ok(out)
}

/// Issuer or acquirer identification number: exactly 6 decimal digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Iin([u8; 6]);

impl Iin {
    /// Parses 6 decimal digits.
    pub fn new(s: &str) -> Result<Self, IdError> {
        let bytes: [u8; 6] =
            s.as_bytes().try_into().map_err(|_| IdError::Length { field: "iin", expected: "6", actual: s.len() })?;
        check_digits("iin", s)?;
        Ok(Self(bytes))
    }

    /// The 6 digits.
    pub fn as_str(&self) -> &str {
        // The constructor admits only ASCII digits.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// 3 bytes of BCD, as on the wire.
    pub fn to_bcd(&self) -> [u8; 3] {
        digits_to_bcd(self.as_str())
    }

    /// Parses 3 bytes of BCD (no padding allowed).
    pub fn from_bcd(bytes: &[u8; 3]) -> Result<Self, IdError> {
        let digits = bcd_to_digits("iin", bytes)?;
        Self::new(&digits).map_err(|_| IdError::BadBcd { field: "iin" })
    }
}

/// A SIM's ICCID: 19 or 20 decimal digits; 10 bytes of BCD on the wire, padded with 0xF.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SimId(String);

impl SimId {
    /// Parses 19 or 20 decimal digits.
    pub fn new(s: &str) -> Result<Self, IdError> {
        if !(19..=20).contains(&s.len()) {
            return Err(IdError::Length { field: "sim_id", expected: "19 or 20", actual: s.len() });
        }
        check_digits("sim_id", s)?;
        Ok(Self(s.to_owned()))
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// 10 bytes of BCD, 0xF padded.
    pub fn to_bcd(&self) -> [u8; 10] {
        digits_to_bcd(&self.0)
    }

    /// Parses 10 bytes of BCD.
    pub fn from_bcd(bytes: &[u8; 10]) -> Result<Self, IdError> {
        let digits = bcd_to_digits("sim_id", bytes)?;
        Self::new(&digits).map_err(|_| IdError::BadBcd { field: "sim_id" })
    }
}

macro_rules! string_id_traits {
    ($name:ident) => {
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.as_str())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(&s).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
    };
}

string_id_traits!(Iin);
string_id_traits!(SimId);

/// A payer's account number: 12 to 19 decimal digits (DESIGN.md: up to 19; the lower bound of
/// 12 keeps the mask "first 6, last 4" from showing the whole number). Secret: Debug and
/// Display show it masked, and it is zeroized on drop.
#[derive(Clone, PartialEq, Eq, Hash, Zeroize, ZeroizeOnDrop)]
pub struct Account(String);

impl Account {
    /// Shortest account number accepted.
    pub const DIGITS_MIN: usize = 12;
    /// Longest account number accepted.
    pub const DIGITS_MAX: usize = 19;

    /// Parses 12 to 19 decimal digits.
    pub fn new(s: &str) -> Result<Self, IdError> {
        if !(Self::DIGITS_MIN..=Self::DIGITS_MAX).contains(&s.len()) {
            return Err(IdError::Length { field: "account", expected: "12 to 19", actual: s.len() });
        }
        check_digits("account", s)?;
        Ok(Self(s.to_owned()))
    }

    /// The full number. Only for the ledger key and the wire; never for logs.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// First 6 and last 4 digits, the rest as '*': the only form fit for logs and screens.
    pub fn masked(&self) -> String {
        let n = self.0.len();
        let mut out = String::with_capacity(n);
        out.push_str(&self.0[..6]);
        out.extend(std::iter::repeat_n('*', n - 10));
        out.push_str(&self.0[n - 4..]);
        out
    }

    /// 10 bytes of BCD, 0xF padded.
    pub fn to_bcd(&self) -> [u8; 10] {
        digits_to_bcd(&self.0)
    }

    /// Parses 10 bytes of BCD.
    pub fn from_bcd(bytes: &[u8; 10]) -> Result<Self, IdError> {
        let mut digits = bcd_to_digits("account", bytes)?;
        let parsed = Self::new(&digits).map_err(|_| IdError::BadBcd { field: "account" });
        digits.zeroize();
        parsed
    }
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Account({})", self.masked())
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Printable ASCII of a fixed width, space padded on the right (ISO 8583 style).
fn fixed_ascii<const N: usize>(field: &'static str, s: &str) -> Result<[u8; N], IdError> {
    if s.is_empty() || s.len() > N {
        return Err(IdError::Length { field, expected: if N == 15 { "1 to 15" } else { "1 to 12" }, actual: s.len() });
    }
    if !s.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(IdError::NotPrintable { field });
    }
    if s.bytes().all(|b| b == b' ') {
        return Err(IdError::Blank { field });
    }
    let mut out = [b' '; N];
    out[..s.len()].copy_from_slice(s.as_bytes());
    Ok(out)
}

fn fixed_ascii_from_wire<const N: usize>(field: &'static str, bytes: &[u8; N]) -> Result<[u8; N], IdError> {
    if !bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(IdError::NotPrintable { field });
    }
    if bytes.iter().all(|b| *b == b' ') {
        return Err(IdError::Blank { field });
    }
    Ok(*bytes)
}

macro_rules! fixed_ascii_id {
    ($(#[$doc:meta])* $name:ident, $len:expr, $field:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; $len]);

        impl $name {
            /// Width on the wire.
            pub const LEN: usize = $len;

            /// Parses 1 to LEN printable ASCII characters, not all spaces; pads with spaces.
            pub fn new(s: &str) -> Result<Self, IdError> {
                fixed_ascii::<$len>($field, s).map(Self)
            }

            /// Takes the padded wire form.
            pub fn from_wire(bytes: &[u8; $len]) -> Result<Self, IdError> {
                fixed_ascii_from_wire::<$len>($field, bytes).map(Self)
            }

            /// The padded wire form.
            pub fn to_wire(&self) -> [u8; $len] {
                self.0
            }

            /// The value without its trailing padding.
            pub fn as_str(&self) -> &str {
                // Printable ASCII only, by construction.
                std::str::from_utf8(&self.0).unwrap_or("").trim_end_matches(' ')
            }
        }

        string_id_traits!($name);
    };
}

fixed_ascii_id!(
    /// Merchant identifier: 15 printable ASCII characters, space padded (ISO 8583 field 42).
    MerchantId, 15, "merchant_id"
);
fixed_ascii_id!(
    /// Merchant's order number: 12 printable ASCII characters, space padded.
    OrderNo, 12, "order_no"
);

/// An amount in the currency's minor units. Never a float.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Amount(u64);

impl Amount {
    /// From minor units.
    pub const fn from_minor(minor: u64) -> Self {
        Self(minor)
    }

    /// Minor units.
    pub const fn minor(&self) -> u64 {
        self.0
    }

    /// Parses a decimal text of minor units ("1250" is 12.50 EUR).
    pub fn parse_minor(s: &str) -> Result<Self, IdError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdError::NotANumber { field: "amount" });
        }
        s.parse().map(Self).map_err(|_| IdError::NotANumber { field: "amount" })
    }

    /// Formats with the currency's decimal point: 1250 EUR is "12.50".
    pub fn display_in(&self, currency: Currency) -> String {
        format_minor(i128::from(self.0), currency)
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Amount({})", self.0)
    }
}

/// Formats a signed count of minor units with the currency's exponent.
pub fn format_minor(minor: i128, currency: Currency) -> String {
    let exponent = u32::from(currency.minor_unit_digits());
    let sign = if minor < 0 { "-" } else { "" };
    let magnitude = minor.unsigned_abs();
    if exponent == 0 {
        return format!("{sign}{magnitude} {}", currency.alpha());
    }
    let scale = 10u128.pow(exponent);
    format!("{sign}{}.{:0width$} {}", magnitude / scale, magnitude % scale, currency.alpha(), width = exponent as usize)
}

/// ISO 4217 currencies this build knows: numeric code, alphabetic code, minor unit digits.
const CURRENCIES: &[(u16, &str, u8)] = &[
    (36, "AUD", 2),
    (124, "CAD", 2),
    (156, "CNY", 2),
    (203, "CZK", 2),
    (208, "DKK", 2),
    (344, "HKD", 2),
    (348, "HUF", 2),
    (356, "INR", 2),
    (392, "JPY", 0),
    (410, "KRW", 0),
    (554, "NZD", 2),
    (578, "NOK", 2),
    (643, "RUB", 2),
    (702, "SGD", 2),
    (710, "ZAR", 2),
    (752, "SEK", 2),
    (756, "CHF", 2),
    (826, "GBP", 2),
    (840, "USD", 2),
    (901, "TWD", 2),
    (941, "RSD", 2),
    (946, "RON", 2),
    (949, "TRY", 2),
    (978, "EUR", 2),
    (985, "PLN", 2),
    (986, "BRL", 2),
];

/// An ISO 4217 numeric currency code from the table this build knows.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(u16);

impl Currency {
    /// Euro.
    pub const EUR: Currency = Currency(978);
    /// US dollar.
    pub const USD: Currency = Currency(840);
    /// Chinese yuan.
    pub const CNY: Currency = Currency(156);

    /// From the numeric code; refuses 0 and codes not in the table.
    pub fn from_code(code: u16) -> Result<Self, IdError> {
        if CURRENCIES.iter().any(|(c, _, _)| *c == code) { Ok(Self(code)) } else { Err(IdError::UnknownCurrency(code)) }
    }

    /// From "978" or "EUR" (any case).
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if let Ok(code) = s.parse::<u16>() {
            return Self::from_code(code);
        }
        CURRENCIES
            .iter()
            .find(|(_, alpha, _)| alpha.eq_ignore_ascii_case(s))
            .map(|(code, _, _)| Self(*code))
            .ok_or(IdError::UnknownCurrency(0))
    }

    /// The numeric code.
    pub const fn code(&self) -> u16 {
        self.0
    }

    /// The alphabetic code, e.g. "EUR".
    pub fn alpha(&self) -> &'static str {
        self.entry().1
    }

    /// Digits after the decimal point (2 for EUR, 0 for JPY).
    pub fn minor_unit_digits(&self) -> u8 {
        self.entry().2
    }

    fn entry(&self) -> &'static (u16, &'static str, u8) {
        // The constructor admits only codes from the table.
        CURRENCIES.iter().find(|(c, _, _)| *c == self.0).unwrap_or(&(0, "???", 0))
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({} {})", self.0, self.alpha())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.alpha())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.0)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = u16::deserialize(d)?;
        Self::from_code(code).map_err(serde::de::Error::custom)
    }
}

/// A SIM session counter n: 0 after personalisation, n >= 1 for sessions. 6 bytes on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Counter(u64);

impl Counter {
    /// Largest value that fits in 6 bytes.
    pub const MAX: u64 = (1 << 48) - 1;
    /// The counter of a freshly personalised SIM.
    pub const ZERO: Counter = Counter(0);

    /// Refuses values at or above 2^48.
    pub fn new(n: u64) -> Result<Self, IdError> {
        if n > Self::MAX { Err(IdError::CounterRange(n)) } else { Ok(Self(n)) }
    }

    /// The value.
    pub const fn value(&self) -> u64 {
        self.0
    }

    /// n + 1, or None at the end of the counter space (the SIM must be re-personalised).
    pub fn next(&self) -> Option<Counter> {
        Counter::new(self.0 + 1).ok()
    }

    /// 6 bytes big-endian.
    pub fn to_wire(&self) -> [u8; 6] {
        let b = self.0.to_be_bytes();
        [b[2], b[3], b[4], b[5], b[6], b[7]]
    }

    /// From 6 bytes big-endian (every value fits).
    pub fn from_wire(bytes: &[u8; 6]) -> Self {
        let mut b = [0u8; 8];
        b[2..].copy_from_slice(bytes);
        Self(u64::from_be_bytes(b))
    }
}

impl TryFrom<u64> for Counter {
    type Error = IdError;
    fn try_from(n: u64) -> Result<Self, IdError> {
        Self::new(n)
    }
}

impl From<Counter> for u64 {
    fn from(c: Counter) -> u64 {
        c.0
    }
}

/// A random sequence number: 8 bytes drawn by the bank's HSM, one per session.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rsn(pub [u8; 8]);

impl Rsn {
    /// Lower-case hex, as in records and the ledger.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// From 16 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, IdError> {
        let mut out = [0u8; 8];
        hex::decode_to_slice(s, &mut out).map_err(|_| IdError::Length {
            field: "rsn",
            expected: "16 hex",
            actual: s.len(),
        })?;
        Ok(Self(out))
    }
}

impl fmt::Debug for Rsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rsn({})", self.to_hex())
    }
}

/// A payment password: 4 to 12 printable ASCII characters. Never printed; zeroized on drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Password(Vec<u8>);

impl Password {
    /// Shortest password accepted.
    pub const LEN_MIN: usize = 4;
    /// Longest password accepted.
    pub const LEN_MAX: usize = 12;

    /// Parses 4 to 12 printable ASCII characters.
    pub fn new(s: &str) -> Result<Self, IdError> {
        Self::from_bytes(s.as_bytes())
    }

    /// Parses 4 to 12 printable ASCII bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdError> {
        if !(Self::LEN_MIN..=Self::LEN_MAX).contains(&bytes.len()) {
            return Err(IdError::PasswordLength(bytes.len()));
        }
        if !bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
            return Err(IdError::NotPrintable { field: "password" });
        }
        Ok(Self(bytes.to_vec()))
    }

    /// The clear bytes, for the packet and the verification value only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iin_round_trips_through_bcd() {
        let iin = Iin::new("123456").unwrap();
        assert_eq!(iin.to_bcd(), [0x12, 0x34, 0x56]);
        assert_eq!(Iin::from_bcd(&[0x12, 0x34, 0x56]).unwrap(), iin);
        assert!(Iin::from_bcd(&[0x12, 0x34, 0x5F]).is_err());
        assert!(Iin::new("12345").is_err());
        assert!(Iin::new("12345a").is_err());
    }

    #[test]
    fn sim_id_of_19_digits_is_padded_with_f() {
        let sim = SimId::new("8949012345678901234").unwrap();
        let bcd = sim.to_bcd();
        assert_eq!(bcd, [0x89, 0x49, 0x01, 0x23, 0x45, 0x67, 0x89, 0x01, 0x23, 0x4F]);
        assert_eq!(SimId::from_bcd(&bcd).unwrap(), sim);
        assert!(SimId::new("894901234567890123").is_err());
        assert!(SimId::new("894901234567890123456").is_err());
        // A digit after the pad is not BCD.
        let mut bad = bcd;
        bad[9] = 0xF4;
        assert!(SimId::from_bcd(&bad).is_err());
    }

    #[test]
    fn account_is_masked_everywhere_it_prints() {
        let account = Account::new("4000123412341234").unwrap();
        assert_eq!(account.masked(), "400012******1234");
        assert_eq!(format!("{account:?}"), "Account(400012******1234)");
        assert_eq!(format!("{account}"), "400012******1234");
        assert!(Account::new("12345678901").is_err());
        assert!(Account::new("12345678901234567890").is_err());
    }

    #[test]
    fn merchant_id_is_space_padded_and_printable() {
        let m = MerchantId::new("SHOP-001").unwrap();
        assert_eq!(&m.to_wire(), b"SHOP-001       ");
        assert_eq!(m.as_str(), "SHOP-001");
        assert!(MerchantId::new("").is_err());
        assert!(MerchantId::new("   ").is_err());
        assert!(MerchantId::new("1234567890123456").is_err());
        assert!(MerchantId::new("bad\u{7}").is_err());
        assert!(MerchantId::new("café").is_err());
    }

    #[test]
    fn currency_rejects_zero_and_unknown() {
        assert_eq!(Currency::from_code(978).unwrap(), Currency::EUR);
        assert_eq!(Currency::parse("eur").unwrap(), Currency::EUR);
        assert!(Currency::from_code(0).is_err());
        assert!(Currency::from_code(999).is_err());
        assert_eq!(Amount::from_minor(1250).display_in(Currency::EUR), "12.50 EUR");
        assert_eq!(Amount::from_minor(1250).display_in(Currency::from_code(392).unwrap()), "1250 JPY");
        assert_eq!(format_minor(-5, Currency::EUR), "-0.05 EUR");
        assert_eq!(format_minor(0, Currency::EUR), "0.00 EUR", "zero has no sign");
        assert_eq!(
            (format!("{}", Currency::EUR), format!("{:?}", Currency::EUR)),
            ("EUR".into(), "Currency(978 EUR)".into())
        );
        assert_eq!(format!("{:?}", Amount::from_minor(1250)), "Amount(1250)");
    }

    #[test]
    fn counter_is_six_bytes() {
        let c = Counter::new(0x0102_0304_0506).unwrap();
        assert_eq!(c.to_wire(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(Counter::from_wire(&[1, 2, 3, 4, 5, 6]), c);
        assert!(Counter::new(1 << 48).is_err());
        assert_eq!(Counter::new(Counter::MAX).unwrap().next(), None);
        assert_eq!(Counter::ZERO.next(), Some(Counter::new(1).unwrap()));
        assert_eq!(c.next().map(|n| n.value()), Some(0x0102_0304_0507));
        assert_eq!(u64::from(c), 0x0102_0304_0506);
        assert_eq!(serde_json::to_string(&c).unwrap(), "1108152157446", "a plain number in JSON");
        assert_eq!(serde_json::from_str::<Counter>("1108152157446").unwrap(), c);
        assert!(serde_json::from_str::<Counter>("281474976710656").is_err(), "2^48 does not fit");
    }

    #[test]
    fn a_length_error_states_the_width_of_its_field() {
        let merchant = IdError::Length { field: "merchant_id", expected: "1 to 15", actual: 0 };
        assert_eq!(MerchantId::new(""), Err(merchant));
        let order = IdError::Length { field: "order_no", expected: "1 to 12", actual: 13 };
        assert_eq!(OrderNo::new("1234567890123"), Err(order));
    }

    #[test]
    fn minor_unit_amounts_are_digits_only() {
        assert_eq!(Amount::parse_minor("1250"), Ok(Amount::from_minor(1250)));
        for bad in ["", "+5", "-5", "12.50", " 1", "18446744073709551616"] {
            assert_eq!(Amount::parse_minor(bad), Err(IdError::NotANumber { field: "amount" }), "{bad:?}");
        }
    }

    #[test]
    fn rsn_is_sixteen_hex_digits() {
        let rsn = Rsn::from_hex("00ff10a0b0c0d0e0").unwrap();
        assert_eq!(rsn, Rsn([0x00, 0xff, 0x10, 0xa0, 0xb0, 0xc0, 0xd0, 0xe0]));
        assert_eq!(rsn.to_hex(), "00ff10a0b0c0d0e0");
        assert_eq!(format!("{rsn:?}"), "Rsn(00ff10a0b0c0d0e0)");
        assert!(Rsn::from_hex("00ff").is_err());
    }

    #[test]
    fn password_never_prints() {
        let p = Password::new("s3cret!").unwrap();
        assert_eq!(format!("{p:?}"), "Password(<redacted>)");
        assert!(Password::new("abc").is_err());
        assert!(Password::new("abcdefghijklm").is_err());
        assert!(Password::new("abc\n").is_err());
    }
}
