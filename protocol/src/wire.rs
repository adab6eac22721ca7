//! The payer packet (DESIGN.md section 4, 113 bytes) and the issuer's answer for the SIM
//! (section 5, 79 bytes): byte layouts, their clear and secret parts, and sealing and opening
//! them with software keys (the SIM side). The issuer seals and opens the same bytes inside
//! the HSM, using [`PayerPacket::mac_input`], [`PaymentSecret::from_plaintext`],
//! [`AnswerPlain::to_plaintext`] and [`PayerAnswer::mac_input`].

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

use crate::ids::{Account, Amount, Counter, Currency, IdError, Iin, MerchantId, OrderNo, Password, Rsn, SimId};
use crate::keys::{CryptoError, MAC_LEN, SessionKeys, cbc_decrypt, cbc_encrypt, cmac8, mac_matches};

/// Type byte of a payment request, version 1.
pub const PACKET_TYPE: u8 = 0x01;
/// Length of the payer packet.
pub const PACKET_LEN: usize = 113;
/// Bytes covered by the packet's MAC.
pub const PACKET_MAC_INPUT_LEN: usize = 105;
/// Length of the encrypted secret.
pub const SECRET_CIPHERTEXT_LEN: usize = 32;
/// Length of the clear secret: account BCD (10) || password length (1) || password (12).
pub const SECRET_LEN: usize = 23;

/// Type byte of a payment answer, version 1.
pub const ANSWER_TYPE: u8 = 0x81;
/// Length of the answer.
pub const ANSWER_LEN: usize = 79;
/// Bytes covered by the answer's MAC.
pub const ANSWER_MAC_INPUT_LEN: usize = 71;
/// Length of the encrypted answer body.
pub const ANSWER_CIPHERTEXT_LEN: usize = 48;
/// Length of the clear answer body before padding.
pub const ANSWER_PLAIN_LEN: usize = 42;

const _: () = assert!(1 + 3 + 10 + 6 + 15 + 12 + 8 + 2 + 16 + SECRET_CIPHERTEXT_LEN + MAC_LEN == PACKET_LEN);
const _: () = assert!(PACKET_MAC_INPUT_LEN + MAC_LEN == PACKET_LEN);
const _: () = assert!(SECRET_LEN.div_ceil(16) * 16 == SECRET_CIPHERTEXT_LEN);
const _: () = assert!(1 + 6 + 16 + ANSWER_CIPHERTEXT_LEN + MAC_LEN == ANSWER_LEN);
const _: () = assert!(ANSWER_MAC_INPUT_LEN + MAC_LEN == ANSWER_LEN);
const _: () = assert!(2 + 6 + 8 + 2 + 8 + 16 == ANSWER_PLAIN_LEN);
const _: () = assert!((ANSWER_PLAIN_LEN / 16 + 1) * 16 == ANSWER_CIPHERTEXT_LEN);
const _: () = assert!(PACKET_LEN <= 140, "the payer packet must fit one SMS");

/// Every way a packet or answer can be malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Not the expected number of bytes.
    #[error("{what} must be {expected} bytes, got {actual}")]
    Length {
        /// "payer packet" or "answer".
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Actual length.
        actual: usize,
    },
    /// An unknown type or version byte.
    #[error("{what} has type 0x{actual:02x}, expected 0x{expected:02x}")]
    Type {
        /// "payer packet" or "answer".
        what: &'static str,
        /// Expected type byte.
        expected: u8,
        /// Actual type byte.
        actual: u8,
    },
    /// A field that does not parse.
    #[error("field {field}: {source}")]
    Field {
        /// Wire field name.
        field: &'static str,
        /// Why.
        #[source]
        source: IdError,
    },
    /// Counter 0 is never a session (sessions start at 1).
    #[error("counter 0 is not a session")]
    CounterZero,
    /// A password length byte outside 4..=12 or a pad byte that is not 0x00.
    #[error("secret is malformed")]
    Secret,
    /// A response code or auth code that is not printable ASCII of the right form.
    #[error("answer body is malformed")]
    AnswerBody,
    /// The MAC or decryption failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

fn field<T>(name: &'static str, r: Result<T, IdError>) -> Result<T, WireError> {
    r.map_err(|source| WireError::Field { field: name, source })
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// The fields of a payer packet that travel in clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClearFields {
    /// Issuer identification number.
    pub iin: Iin,
    /// The SIM's ICCID.
    pub sim_id: SimId,
    /// Session number n >= 1.
    pub counter: Counter,
    /// Merchant id.
    pub merchant_id: MerchantId,
    /// Merchant's order number.
    pub order_no: OrderNo,
    /// Amount in minor units.
    pub amount: Amount,
    /// Currency.
    pub currency: Currency,
}

/// A decoded payer packet: clear fields, IV, ciphertext and MAC. Decoding checks layout and
/// field formats; it cannot check the MAC, which needs the session keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayerPacket {
    /// The clear part.
    pub fields: ClearFields,
    /// Random IV of the secret's encryption.
    pub iv: [u8; 16],
    /// AES-256-CBC(Ks_n, IV, PKCS#7(secret)).
    pub ciphertext: [u8; SECRET_CIPHERTEXT_LEN],
    /// First 8 bytes of AES-CMAC(Ki_n, bytes 0..105).
    pub mac: [u8; MAC_LEN],
}

impl PayerPacket {
    /// Parses exactly 113 bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() != PACKET_LEN {
            return Err(WireError::Length { what: "payer packet", expected: PACKET_LEN, actual: bytes.len() });
        }
        if bytes[0] != PACKET_TYPE {
            return Err(WireError::Type { what: "payer packet", expected: PACKET_TYPE, actual: bytes[0] });
        }
        let counter = Counter::from_wire(&array(bytes, 14));
        if counter.value() == 0 {
            return Err(WireError::CounterZero);
        }
        let fields = ClearFields {
            iin: field("iin", Iin::from_bcd(&array(bytes, 1)))?,
            sim_id: field("sim_id", SimId::from_bcd(&array(bytes, 4)))?,
            counter,
            merchant_id: field("merchant_id", MerchantId::from_wire(&array(bytes, 20)))?,
            order_no: field("order_no", OrderNo::from_wire(&array(bytes, 35)))?,
            amount: Amount::from_minor(u64::from_be_bytes(array(bytes, 47))),
            currency: field("currency", Currency::from_code(u16::from_be_bytes(array(bytes, 55))))?,
        };
        Ok(Self { fields, iv: array(bytes, 57), ciphertext: array(bytes, 73), mac: array(bytes, 105) })
    }

    /// The 113 wire bytes.
    pub fn encode(&self) -> [u8; PACKET_LEN] {
        let mut out = [0u8; PACKET_LEN];
        out[..PACKET_MAC_INPUT_LEN].copy_from_slice(&self.mac_input());
        out[105..].copy_from_slice(&self.mac);
        out
    }

    /// Bytes 0..105, the input of the packet MAC.
    pub fn mac_input(&self) -> [u8; PACKET_MAC_INPUT_LEN] {
        let f = &self.fields;
        let mut out = [0u8; PACKET_MAC_INPUT_LEN];
        out[0] = PACKET_TYPE;
        out[1..4].copy_from_slice(&f.iin.to_bcd());
        out[4..14].copy_from_slice(&f.sim_id.to_bcd());
        out[14..20].copy_from_slice(&f.counter.to_wire());
        out[20..35].copy_from_slice(&f.merchant_id.to_wire());
        out[35..47].copy_from_slice(&f.order_no.to_wire());
        out[47..55].copy_from_slice(&f.amount.minor().to_be_bytes());
        out[55..57].copy_from_slice(&f.currency.code().to_be_bytes());
        out[57..73].copy_from_slice(&self.iv);
        out[73..105].copy_from_slice(&self.ciphertext);
        out
    }

    /// Builds a packet on the SIM: encrypts the secret under Ks_n and MACs under Ki_n.
    pub fn seal(keys: &SessionKeys, fields: ClearFields, secret: &PaymentSecret, iv: [u8; 16]) -> Self {
        let plaintext = secret.to_plaintext();
        let ciphertext_vec = cbc_encrypt(&keys.encryption, &iv, &plaintext[..]);
        let mut ciphertext = [0u8; SECRET_CIPHERTEXT_LEN];
        // SECRET_LEN (23) always pads to 32 bytes: asserted at compile time above.
        ciphertext.copy_from_slice(&ciphertext_vec[..SECRET_CIPHERTEXT_LEN]);
        let mut packet = Self { fields, iv, ciphertext, mac: [0; MAC_LEN] };
        packet.mac = cmac8(&keys.integrity, &packet.mac_input());
        packet
    }

    /// Checks the MAC under Ki_n (constant time), then decrypts the secret under Ks_n.
    pub fn open(&self, keys: &SessionKeys) -> Result<PaymentSecret, WireError> {
        let expected = cmac8(&keys.integrity, &self.mac_input());
        if !mac_matches(&expected, &self.mac) {
            return Err(CryptoError::BadMac.into());
        }
        let plaintext = cbc_decrypt(&keys.encryption, &self.iv, &self.ciphertext)?;
        PaymentSecret::from_plaintext(&plaintext)
    }
}

/// The encrypted part of the packet: the account and the payment password.
#[derive(Clone, PartialEq, Eq)]
pub struct PaymentSecret {
    /// The account to pay from.
    pub account: Account,
    /// The payment password.
    pub password: Password,
}

impl PaymentSecret {
    /// `account BCD (10) || password length (1) || password padded with 0x00 to 12`, zeroized
    /// on drop.
    pub fn to_plaintext(&self) -> Zeroizing<[u8; SECRET_LEN]> {
        let mut out = Zeroizing::new([0u8; SECRET_LEN]);
        out[..10].copy_from_slice(&self.account.to_bcd());
        let password = self.password.expose();
        // Password admits 4..=12 bytes only.
        out[10] = password.len() as u8;
        out[11..11 + password.len()].copy_from_slice(password);
        out
    }

    /// Parses the 23 clear bytes (after PKCS#7 removal).
    pub fn from_plaintext(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() != SECRET_LEN {
            return Err(WireError::Secret);
        }
        let mut account_bcd: [u8; 10] = array(bytes, 0);
        let account = Account::from_bcd(&account_bcd).map_err(|_| WireError::Secret);
        account_bcd.zeroize();
        let account = account?;
        let len = usize::from(bytes[10]);
        if !(Password::LEN_MIN..=Password::LEN_MAX).contains(&len) || bytes[11 + len..].iter().any(|b| *b != 0) {
            return Err(WireError::Secret);
        }
        let password = Password::from_bytes(&bytes[11..11 + len]).map_err(|_| WireError::Secret)?;
        Ok(Self { account, password })
    }
}

impl fmt::Debug for PaymentSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaymentSecret").field("account", &self.account).field("password", &self.password).finish()
    }
}

/// An ISO 8583 response code of DESIGN.md section 7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResponseCode {
    /// 00 approved.
    Approved,
    /// 12 invalid transaction.
    InvalidTransaction,
    /// 13 invalid amount.
    InvalidAmount,
    /// 14 unknown SIM / invalid card number.
    UnknownSim,
    /// 30 format error.
    FormatError,
    /// 51 insufficient funds.
    InsufficientFunds,
    /// 55 incorrect password (PIN).
    IncorrectPassword,
    /// 57 transaction not permitted to this account.
    NotPermitted,
    /// 61 exceeds withdrawal (daily) limit.
    ExceedsDailyLimit,
    /// 62 restricted (blocked SIM or closed account).
    Restricted,
    /// 63 security violation.
    SecurityViolation,
    /// 75 allowable number of password tries exceeded.
    PasswordTriesExceeded,
    /// 91 issuer or switch inoperative.
    IssuerUnavailable,
    /// 94 duplicate transmission.
    Duplicate,
    /// 96 system malfunction.
    SystemMalfunction,
}

impl ResponseCode {
    /// Every code, for tables and tests.
    pub const ALL: [ResponseCode; 15] = [
        Self::Approved,
        Self::InvalidTransaction,
        Self::InvalidAmount,
        Self::UnknownSim,
        Self::FormatError,
        Self::InsufficientFunds,
        Self::IncorrectPassword,
        Self::NotPermitted,
        Self::ExceedsDailyLimit,
        Self::Restricted,
        Self::SecurityViolation,
        Self::PasswordTriesExceeded,
        Self::IssuerUnavailable,
        Self::Duplicate,
        Self::SystemMalfunction,
    ];

    /// The two ASCII digits.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Approved => "00",
            Self::InvalidTransaction => "12",
            Self::InvalidAmount => "13",
            Self::UnknownSim => "14",
            Self::FormatError => "30",
            Self::InsufficientFunds => "51",
            Self::IncorrectPassword => "55",
            Self::NotPermitted => "57",
            Self::ExceedsDailyLimit => "61",
            Self::Restricted => "62",
            Self::SecurityViolation => "63",
            Self::PasswordTriesExceeded => "75",
            Self::IssuerUnavailable => "91",
            Self::Duplicate => "94",
            Self::SystemMalfunction => "96",
        }
    }

    /// Parses two ASCII digits.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether an answer with this code carries the real available balance. The issuer tells
    /// the balance only once the payment password has been verified (approval and the declines
    /// of DESIGN.md section 7 steps 10 to 12); after a wrong password, a locked password, or an
    /// account refused at step 8, the balance field is 0 and means nothing.
    pub fn discloses_balance(&self) -> bool {
        matches!(
            self,
            Self::Approved | Self::InvalidAmount | Self::ExceedsDailyLimit | Self::Duplicate | Self::InsufficientFunds
        )
    }

    /// A short English meaning, for screens.
    pub fn meaning(&self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::InvalidTransaction => "invalid transaction",
            Self::InvalidAmount => "invalid amount or over the per-payment limit",
            Self::UnknownSim => "unknown SIM",
            Self::FormatError => "format error",
            Self::InsufficientFunds => "insufficient funds",
            Self::IncorrectPassword => "incorrect payment password",
            Self::NotPermitted => "not permitted for this account",
            Self::ExceedsDailyLimit => "daily limit exceeded",
            Self::Restricted => "SIM blocked or account closed",
            Self::SecurityViolation => "security violation",
            Self::PasswordTriesExceeded => "too many wrong passwords: payments locked",
            Self::IssuerUnavailable => "issuer unavailable",
            Self::Duplicate => "duplicate order",
            Self::SystemMalfunction => "system malfunction",
        }
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A 6-character authorization code (uppercase letters and digits), or six spaces on decline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuthCode(pub [u8; 6]);

impl AuthCode {
    /// Six spaces: the auth code of a decline.
    pub const NONE: AuthCode = AuthCode(*b"      ");

    /// As text (spaces included).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??????")
    }

    /// Whether this is the blank code of a decline.
    pub fn is_none(&self) -> bool {
        *self == Self::NONE
    }
}

/// A transaction id: 16 bytes chosen by the issuer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnId(pub [u8; 16]);

impl TxnId {
    /// 32 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// From 32 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }
}

impl fmt::Debug for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TxnId({})", self.to_hex())
    }
}

/// The clear body of the issuer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerPlain {
    /// ISO 8583 response code.
    pub response_code: ResponseCode,
    /// Auth code, or [`AuthCode::NONE`] when declined.
    pub auth_code: AuthCode,
    /// Available balance after the session, in minor units (negative for an overdrawn credit
    /// line is impossible by design, but the field is signed as the wire says).
    pub balance: i64,
    /// Currency of the balance.
    pub currency: Currency,
    /// RSN_{n+1}: the next session's random sequence number (the paper's "new cheque").
    pub next_rsn: Rsn,
    /// The issuer's transaction id.
    pub txn_id: TxnId,
}

impl AnswerPlain {
    /// The 42 clear bytes before PKCS#7 padding.
    pub fn to_plaintext(&self) -> Zeroizing<[u8; ANSWER_PLAIN_LEN]> {
        let mut out = Zeroizing::new([0u8; ANSWER_PLAIN_LEN]);
        out[0..2].copy_from_slice(self.response_code.as_str().as_bytes());
        out[2..8].copy_from_slice(&self.auth_code.0);
        out[8..16].copy_from_slice(&self.balance.to_be_bytes());
        out[16..18].copy_from_slice(&self.currency.code().to_be_bytes());
        out[18..26].copy_from_slice(&self.next_rsn.0);
        out[26..42].copy_from_slice(&self.txn_id.0);
        out
    }

    /// Parses the 42 clear bytes.
    pub fn from_plaintext(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() != ANSWER_PLAIN_LEN {
            return Err(WireError::AnswerBody);
        }
        let code = std::str::from_utf8(&bytes[0..2]).ok().and_then(ResponseCode::parse).ok_or(WireError::AnswerBody)?;
        let auth_code = AuthCode(array(bytes, 2));
        let auth_ok = if code == ResponseCode::Approved {
            auth_code.0.iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        } else {
            auth_code.is_none()
        };
        if !auth_ok {
            return Err(WireError::AnswerBody);
        }
        Ok(Self {
            response_code: code,
            auth_code,
            balance: i64::from_be_bytes(array(bytes, 8)),
            currency: field("currency", Currency::from_code(u16::from_be_bytes(array(bytes, 16))))?,
            next_rsn: Rsn(array(bytes, 18)),
            txn_id: TxnId(array(bytes, 26)),
        })
    }
}

/// The issuer's answer for the SIM, as on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayerAnswer {
    /// Echo of the packet's counter n.
    pub counter: Counter,
    /// Random IV.
    pub iv: [u8; 16],
    /// AES-256-CBC(Ks_n, IV, PKCS#7(AnswerPlain)).
    pub ciphertext: [u8; ANSWER_CIPHERTEXT_LEN],
    /// First 8 bytes of AES-CMAC(Ki_n, bytes 0..71).
    pub mac: [u8; MAC_LEN],
}

impl PayerAnswer {
    /// Parses exactly 79 bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() != ANSWER_LEN {
            return Err(WireError::Length { what: "answer", expected: ANSWER_LEN, actual: bytes.len() });
        }
        if bytes[0] != ANSWER_TYPE {
            return Err(WireError::Type { what: "answer", expected: ANSWER_TYPE, actual: bytes[0] });
        }
        let counter = Counter::from_wire(&array(bytes, 1));
        if counter.value() == 0 {
            return Err(WireError::CounterZero);
        }
        Ok(Self { counter, iv: array(bytes, 7), ciphertext: array(bytes, 23), mac: array(bytes, 71) })
    }

    /// The 79 wire bytes.
    pub fn encode(&self) -> [u8; ANSWER_LEN] {
        let mut out = [0u8; ANSWER_LEN];
        out[..ANSWER_MAC_INPUT_LEN].copy_from_slice(&self.mac_input());
        out[71..].copy_from_slice(&self.mac);
        out
    }

    /// Bytes 0..71, the input of the answer MAC.
    pub fn mac_input(&self) -> [u8; ANSWER_MAC_INPUT_LEN] {
        let mut out = [0u8; ANSWER_MAC_INPUT_LEN];
        out[0] = ANSWER_TYPE;
        out[1..7].copy_from_slice(&self.counter.to_wire());
        out[7..23].copy_from_slice(&self.iv);
        out[23..71].copy_from_slice(&self.ciphertext);
        out
    }

    /// Seals an answer with software keys (tests and reference issuers; the bank does this in
    /// the HSM).
    pub fn seal(keys: &SessionKeys, counter: Counter, plain: &AnswerPlain, iv: [u8; 16]) -> Self {
        let ciphertext_vec = cbc_encrypt(&keys.encryption, &iv, &plain.to_plaintext()[..]);
        let mut ciphertext = [0u8; ANSWER_CIPHERTEXT_LEN];
        // 42 bytes always pad to 48: asserted at compile time above.
        ciphertext.copy_from_slice(&ciphertext_vec[..ANSWER_CIPHERTEXT_LEN]);
        let mut answer = Self { counter, iv, ciphertext, mac: [0; MAC_LEN] };
        answer.mac = cmac8(&keys.integrity, &answer.mac_input());
        answer
    }

    /// Checks the MAC (constant time) and decrypts, on the SIM.
    pub fn open(&self, keys: &SessionKeys) -> Result<AnswerPlain, WireError> {
        let expected = cmac8(&keys.integrity, &self.mac_input());
        if !mac_matches(&expected, &self.mac) {
            return Err(CryptoError::BadMac.into());
        }
        let plaintext = cbc_decrypt(&keys.encryption, &self.iv, &self.ciphertext)?;
        AnswerPlain::from_plaintext(&plaintext)
    }
}
