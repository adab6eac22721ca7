//! The payer packet (DESIGN.md section 4, 113 bytes) and the issuer's answer for the SIM
//! (section 5, 79 bytes): byte layouts, their clear and secret parts, and sealing and opening
//! them with software keys (the SIM side). The issuer seals and opens the same bytes inside
//! the HSM, using [`PayerPacket::mac_input`], [`PaymentSecret::from_plaintext`],
//! [`AnswerPlain::to_plaintext`] and [`PayerAnswer::mac_input`].

use std::fmt;

use zeroize::Zeroizing;

use crate::codec::{self, Codec, Reader, Writer};
use crate::ids::{Account, Amount, Counter, Currency, IdError, Iin, MerchantId, OrderNo, Password, Rsn, SimId};
use crate::keys::{CryptoError, MAC_LEN, SessionKeys, cbc_decrypt, cbc_encrypt, cmac8, mac_matches};

/// Type byte of a payment request, version 1.
pub const PACKET_TYPE: u8 = 0x01;
/// Length of the clear secret: account BCD (10) || password length (1) || password (12).
pub const SECRET_LEN: usize = PaymentSecret::ENCODED_LEN;
/// Length of the encrypted secret: the clear secret after PKCS#7 padding.
pub const SECRET_CIPHERTEXT_LEN: usize = pkcs7_padded_len(SECRET_LEN);
/// Bytes covered by the packet's MAC: the type byte, the clear fields, the IV and the encrypted
/// secret, in that order ([`PayerPacket::mac_input`] writes them).
pub const PACKET_MAC_INPUT_LEN: usize = u8::ENCODED_LEN + ClearFields::ENCODED_LEN + IV_LEN + SECRET_CIPHERTEXT_LEN;
/// Length of the payer packet: the MAC input, then the MAC.
pub const PACKET_LEN: usize = PACKET_MAC_INPUT_LEN + MAC_LEN;

/// Type byte of a payment answer, version 1.
pub const ANSWER_TYPE: u8 = 0x81;
/// Length of the clear answer body before padding.
pub const ANSWER_PLAIN_LEN: usize = AnswerPlain::ENCODED_LEN;
/// Length of the encrypted answer body: the clear body after PKCS#7 padding.
pub const ANSWER_CIPHERTEXT_LEN: usize = pkcs7_padded_len(ANSWER_PLAIN_LEN);
/// Bytes covered by the answer's MAC: the type byte, the counter, the IV and the encrypted
/// body, in that order ([`PayerAnswer::mac_input`] writes them).
pub const ANSWER_MAC_INPUT_LEN: usize = u8::ENCODED_LEN + Counter::ENCODED_LEN + IV_LEN + ANSWER_CIPHERTEXT_LEN;
/// Length of the answer: the MAC input, then the MAC.
pub const ANSWER_LEN: usize = ANSWER_MAC_INPUT_LEN + MAC_LEN;

/// Length of an IV, and of the AES block that PKCS#7 pads to.
pub const IV_LEN: usize = 16;

// The sizes DESIGN.md sections 4 and 5 publish. Every size above is summed from the lengths of
// the fields the codec writes, so a change to a layout that moves one of these fails to compile
// instead of changing the protocol unnoticed.
const _: () = assert!(PACKET_LEN == 113 && PACKET_MAC_INPUT_LEN == 105);
const _: () = assert!(SECRET_LEN == 23 && SECRET_CIPHERTEXT_LEN == 32);
const _: () = assert!(ANSWER_LEN == 79 && ANSWER_MAC_INPUT_LEN == 71);
const _: () = assert!(ANSWER_PLAIN_LEN == 42 && ANSWER_CIPHERTEXT_LEN == 48);
const _: () = assert!(PACKET_LEN <= 140, "the payer packet must fit one SMS");

// What the errors call each layout.
const PACKET_NAME: &str = "payer packet";
const ANSWER_NAME: &str = "answer";
const SECRET_NAME: &str = "secret";
const ANSWER_BODY_NAME: &str = "answer body";

/// The ciphertext length of `len` clear bytes under CBC with PKCS#7, which always adds 1 to 16
/// bytes of padding: what [`cbc_encrypt`] returns.
const fn pkcs7_padded_len(len: usize) -> usize {
    (len / IV_LEN + 1) * IV_LEN
}

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
    /// The bytes ended inside a field. The decoders check a message's whole length first, so
    /// this names a layout longer than the length it declares, not a short message.
    #[error("{what} ended inside a field: {needed} bytes needed, {left} left")]
    Truncated {
        /// "payer packet", "answer", "secret" or "answer body".
        what: &'static str,
        /// Bytes the field needed.
        needed: usize,
        /// Bytes that were left.
        left: usize,
    },
    /// Bytes were left after the last field: like [`WireError::Truncated`], a layout that
    /// disagrees with the length it declares.
    #[error("{what} has {left} bytes after its last field")]
    TrailingBytes {
        /// "payer packet", "answer", "secret" or "answer body".
        what: &'static str,
        /// Bytes left over.
        left: usize,
    },
    /// The MAC or decryption failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
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

/// The clear fields in wire order, right after the packet's type byte.
impl Codec for ClearFields {
    const ENCODED_LEN: usize = Iin::ENCODED_LEN
        + SimId::ENCODED_LEN
        + Counter::ENCODED_LEN
        + MerchantId::ENCODED_LEN
        + OrderNo::ENCODED_LEN
        + Amount::ENCODED_LEN
        + Currency::ENCODED_LEN;

    fn write_to(&self, writer: &mut Writer<'_>) {
        self.iin.write_to(writer);
        self.sim_id.write_to(writer);
        self.counter.write_to(writer);
        self.merchant_id.write_to(writer);
        self.order_no.write_to(writer);
        self.amount.write_to(writer);
        self.currency.write_to(writer);
    }

    fn read_from(reader: &mut Reader<'_>) -> Result<Self, WireError> {
        // The IIN and the SIM id come before the counter on the wire, but their errors wait
        // until it is read: the decoder has always reported a zero counter before them.
        let iin = Iin::read_from(reader);
        let sim_id = SimId::read_from(reader);
        let counter = read_session_counter(reader)?;
        Ok(Self {
            iin: iin?,
            sim_id: sim_id?,
            counter,
            merchant_id: MerchantId::read_from(reader)?,
            order_no: OrderNo::read_from(reader)?,
            amount: Amount::read_from(reader)?,
            currency: Currency::read_from(reader)?,
        })
    }
}

/// A decoded payer packet: clear fields, IV, ciphertext and MAC. Decoding checks layout and
/// field formats; it cannot check the MAC, which needs the session keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayerPacket {
    /// The clear part.
    pub fields: ClearFields,
    /// Random IV of the secret's encryption.
    pub iv: [u8; IV_LEN],
    /// AES-256-CBC(Ks_n, IV, PKCS#7(secret)).
    pub ciphertext: [u8; SECRET_CIPHERTEXT_LEN],
    /// First 8 bytes of AES-CMAC(Ki_n, bytes 0..105).
    pub mac: [u8; MAC_LEN],
}

impl PayerPacket {
    /// Parses exactly 113 bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        codec::read_exact(PACKET_NAME, bytes)
    }

    /// The 113 wire bytes.
    pub fn encode(&self) -> [u8; PACKET_LEN] {
        let mut out = [0u8; PACKET_LEN];
        codec::encode_into(self, &mut out);
        out
    }

    /// Bytes 0..105, the input of the packet MAC.
    pub fn mac_input(&self) -> [u8; PACKET_MAC_INPUT_LEN] {
        let mut out = [0u8; PACKET_MAC_INPUT_LEN];
        let mut writer = Writer::new(&mut out);
        self.write_mac_input(&mut writer);
        writer.finish();
        out
    }

    /// Builds a packet on the SIM: encrypts the secret under Ks_n and MACs under Ki_n.
    pub fn seal(keys: &SessionKeys, fields: ClearFields, secret: &PaymentSecret, iv: [u8; IV_LEN]) -> Self {
        let plaintext = secret.to_plaintext();
        let ciphertext_vec = cbc_encrypt(&keys.encryption, &iv, &plaintext[..]);
        let mut ciphertext = [0u8; SECRET_CIPHERTEXT_LEN];
        // SECRET_CIPHERTEXT_LEN is the padded length of the secret by definition.
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

    /// Everything the MAC covers: the packet up to the MAC, written once for both
    /// [`PayerPacket::mac_input`] and [`PayerPacket::encode`].
    fn write_mac_input(&self, writer: &mut Writer<'_>) {
        PACKET_TYPE.write_to(writer);
        self.fields.write_to(writer);
        self.iv.write_to(writer);
        self.ciphertext.write_to(writer);
    }
}

/// The packet of DESIGN.md section 4: the MAC input, then the MAC.
impl Codec for PayerPacket {
    const ENCODED_LEN: usize = PACKET_LEN;

    fn write_to(&self, writer: &mut Writer<'_>) {
        self.write_mac_input(writer);
        self.mac.write_to(writer);
    }

    fn read_from(reader: &mut Reader<'_>) -> Result<Self, WireError> {
        read_type(reader, PACKET_NAME, PACKET_TYPE)?;
        Ok(Self {
            fields: ClearFields::read_from(reader)?,
            iv: <[u8; IV_LEN]>::read_from(reader)?,
            ciphertext: <[u8; SECRET_CIPHERTEXT_LEN]>::read_from(reader)?,
            mac: <[u8; MAC_LEN]>::read_from(reader)?,
        })
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
        codec::encode_into(self, &mut out);
        out
    }

    /// Parses the 23 clear bytes (after PKCS#7 removal).
    pub fn from_plaintext(bytes: &[u8]) -> Result<Self, WireError> {
        // One error for every flaw, the length included: an error never tells what the secret
        // held.
        codec::read_exact(SECRET_NAME, bytes).map_err(|_| WireError::Secret)
    }
}

/// The secret of DESIGN.md section 4: the account, then the password field.
impl Codec for PaymentSecret {
    const ENCODED_LEN: usize = Account::ENCODED_LEN + Password::ENCODED_LEN;

    fn write_to(&self, writer: &mut Writer<'_>) {
        self.account.write_to(writer);
        self.password.write_to(writer);
    }

    fn read_from(reader: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Self { account: Account::read_from(reader)?, password: Password::read_from(reader)? })
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
    /// 25 unable to locate the original transaction (a reversal with nothing to reverse).
    NoOriginal,
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
    pub const ALL: [ResponseCode; 16] = [
        Self::Approved,
        Self::InvalidTransaction,
        Self::InvalidAmount,
        Self::UnknownSim,
        Self::NoOriginal,
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
            Self::NoOriginal => "25",
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
            Self::NoOriginal => "no original authorization to reverse",
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
        codec::encode_into(self, &mut out);
        out
    }

    /// Parses the 42 clear bytes.
    pub fn from_plaintext(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() != ANSWER_PLAIN_LEN {
            return Err(WireError::AnswerBody);
        }
        codec::read_exact(ANSWER_BODY_NAME, bytes)
    }
}

/// The answer body of DESIGN.md section 5, sealed inside the answer.
impl Codec for AnswerPlain {
    const ENCODED_LEN: usize = ResponseCode::ENCODED_LEN
        + AuthCode::ENCODED_LEN
        + i64::ENCODED_LEN
        + Currency::ENCODED_LEN
        + Rsn::ENCODED_LEN
        + TxnId::ENCODED_LEN;

    fn write_to(&self, writer: &mut Writer<'_>) {
        self.response_code.write_to(writer);
        self.auth_code.write_to(writer);
        self.balance.write_to(writer);
        self.currency.write_to(writer);
        self.next_rsn.write_to(writer);
        self.txn_id.write_to(writer);
    }

    fn read_from(reader: &mut Reader<'_>) -> Result<Self, WireError> {
        let response_code = ResponseCode::read_from(reader)?;
        let auth_code = AuthCode::read_from(reader)?;
        let auth_ok = if response_code == ResponseCode::Approved {
            auth_code.0.iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        } else {
            auth_code.is_none()
        };
        if !auth_ok {
            return Err(WireError::AnswerBody);
        }
        Ok(Self {
            response_code,
            auth_code,
            balance: i64::read_from(reader)?,
            currency: Currency::read_from(reader)?,
            next_rsn: Rsn::read_from(reader)?,
            txn_id: TxnId::read_from(reader)?,
        })
    }
}

/// The issuer's answer for the SIM, as on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayerAnswer {
    /// Echo of the packet's counter n.
    pub counter: Counter,
    /// Random IV.
    pub iv: [u8; IV_LEN],
    /// AES-256-CBC(Ks_n, IV, PKCS#7(AnswerPlain)).
    pub ciphertext: [u8; ANSWER_CIPHERTEXT_LEN],
    /// First 8 bytes of AES-CMAC(Ki_n, bytes 0..71).
    pub mac: [u8; MAC_LEN],
}

impl PayerAnswer {
    /// Parses exactly 79 bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        codec::read_exact(ANSWER_NAME, bytes)
    }

    /// The 79 wire bytes.
    pub fn encode(&self) -> [u8; ANSWER_LEN] {
        let mut out = [0u8; ANSWER_LEN];
        codec::encode_into(self, &mut out);
        out
    }

    /// Bytes 0..71, the input of the answer MAC.
    pub fn mac_input(&self) -> [u8; ANSWER_MAC_INPUT_LEN] {
        let mut out = [0u8; ANSWER_MAC_INPUT_LEN];
        let mut writer = Writer::new(&mut out);
        self.write_mac_input(&mut writer);
        writer.finish();
        out
    }

    /// Seals an answer with software keys (tests and reference issuers; the bank does this in
    /// the HSM).
    pub fn seal(keys: &SessionKeys, counter: Counter, plain: &AnswerPlain, iv: [u8; IV_LEN]) -> Self {
        let ciphertext_vec = cbc_encrypt(&keys.encryption, &iv, &plain.to_plaintext()[..]);
        let mut ciphertext = [0u8; ANSWER_CIPHERTEXT_LEN];
        // ANSWER_CIPHERTEXT_LEN is the padded length of the answer body by definition.
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

    /// Everything the MAC covers: the answer up to the MAC, written once for both
    /// [`PayerAnswer::mac_input`] and [`PayerAnswer::encode`].
    fn write_mac_input(&self, writer: &mut Writer<'_>) {
        ANSWER_TYPE.write_to(writer);
        self.counter.write_to(writer);
        self.iv.write_to(writer);
        self.ciphertext.write_to(writer);
    }
}

/// The answer of DESIGN.md section 5: the MAC input, then the MAC.
impl Codec for PayerAnswer {
    const ENCODED_LEN: usize = ANSWER_LEN;

    fn write_to(&self, writer: &mut Writer<'_>) {
        self.write_mac_input(writer);
        self.mac.write_to(writer);
    }

    fn read_from(reader: &mut Reader<'_>) -> Result<Self, WireError> {
        read_type(reader, ANSWER_NAME, ANSWER_TYPE)?;
        Ok(Self {
            counter: read_session_counter(reader)?,
            iv: <[u8; IV_LEN]>::read_from(reader)?,
            ciphertext: <[u8; ANSWER_CIPHERTEXT_LEN]>::read_from(reader)?,
            mac: <[u8; MAC_LEN]>::read_from(reader)?,
        })
    }
}

/// Reads the type byte that opens a packet or an answer and refuses any other than `expected`.
fn read_type(reader: &mut Reader<'_>, what: &'static str, expected: u8) -> Result<(), WireError> {
    let actual = u8::read_from(reader)?;
    if actual != expected {
        return Err(WireError::Type { what, expected, actual });
    }
    Ok(())
}

/// Reads the counter n of a packet or an answer. Counter 0 is the state right after
/// personalisation, never a session, so it never appears on the wire.
fn read_session_counter(reader: &mut Reader<'_>) -> Result<Counter, WireError> {
    let counter = Counter::read_from(reader)?;
    if counter.value() == 0 {
        return Err(WireError::CounterZero);
    }
    Ok(counter)
}

// How each field type is written. `ids.rs` owns the conversions (BCD, padded ASCII); these
// impls fix each field's length and name the field in its errors. The leaf impls take and put
// `[u8; Self::ENCODED_LEN]`, so the compiler checks each length against the conversion's array.

impl Codec for Iin {
    const ENCODED_LEN: usize = 3;

    fn write_to(&self, writer: &mut Writer<'_>) {
        writer.put_array::<{ Self::ENCODED_LEN }>(&self.to_bcd());
    }

    fn read_from(reader: &mut Reader<'_>) -> Result<Self, WireError> {
        field("iin", Self::from_bcd(reader.take_array::<{ Self::ENCODED_LEN }>()?))
    }
}

impl Codec for SimId {
    const ENCODED_LEN: usize = 10;

    fn write_to(&self, writer: &mut Writer<'_>) {
        writer.put_array::<{ Self::ENCODED_LEN }>(&self.to_bcd());
    }

    fn read_from(reader: &mut Reader<'_>) -> Result<Self, WireError> {
        field("sim_id", Self::from_bcd(reader.take_array::<{ Self::ENCODED_LEN }>()?))
    }
}

/// 6 bytes big-endian; any value reads, and [`read_session_counter`] refuses 0 where a session
/// is meant.
impl Codec for Counter {
    const ENCODED_LEN: usize = 6;

    fn write_to(&self, writer: &mut Writer<'_>) {
        writer.put_array::<{ Self::ENCODED_LEN }>(&self.to_wire());
    }

    fn read_from(reader: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Self::from_wire(reader.take_array::<{ Self::ENCODED_LEN }>()?))
    }
}

impl Codec for MerchantId {
    const ENCODED_LEN: usize = Self::LEN;

    fn write_to(&self, writer: &mut Writer<'_>) {
        writer.put_array::<{ Self::ENCODED_LEN }>(&self.to_wire());
    }

    fn read_from(reader: &mut Reader<'_>) -> Result<Self, WireError> {
        field("merchant_id", Self::from_wire(reader.take_array::<{ Self::ENCODED_LEN }>()?))
    }
}

impl Codec for OrderNo {
    const ENCODED_LEN: usize = Self::LEN;

    fn write_to(&self, writer: &mut Writer<'_>) {
        writer.put_array::<{ Self::ENCODED_LEN }>(&self.to_wire());
    }

    fn read_from(reader: &mut Reader<'_>) -> Result<Self, WireError> {
        field("order_no", Self::from_wire(reader.take_array::<{ Self::ENCODED_LEN }>()?))
    }
}

/// Minor units, unsigned.
impl Codec for Amount {
    const ENCODED_LEN: usize = u64::ENCODED_LEN;

    fn write_to(&self, writer: &mut Writer<'_>) {
        self.minor().write_to(writer);
    }

    fn read_from(reader: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Self::from_minor(u64::read_from(reader)?))
    }
}

/// The ISO 4217 numeric code.
impl Codec for Currency {
    const ENCODED_LEN: usize = u16::ENCODED_LEN;

    fn write_to(&self, writer: &mut Writer<'_>) {
        self.code().write_to(writer);
    }

    fn read_from(reader: &mut Reader<'_>) -> Result<Self, WireError> {
        field("currency", Self::from_code(u16::read_from(reader)?))
    }
}

impl Codec for Rsn {
    const ENCODED_LEN: usize = 8;

    fn write_to(&self, writer: &mut Writer<'_>) {
        writer.put_array::<{ Self::ENCODED_LEN }>(&self.0);
    }

    fn read_from(reader: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Self(*reader.take_array::<{ Self::ENCODED_LEN }>()?))
    }
}

/// Account BCD, read in place from the decrypted secret so that no copy of it outlives the
/// zeroized plaintext.
impl Codec for Account {
    const ENCODED_LEN: usize = 10;

    fn write_to(&self, writer: &mut Writer<'_>) {
        let bcd = Zeroizing::new(self.to_bcd());
        writer.put_array::<{ Self::ENCODED_LEN }>(&bcd);
    }

    fn read_from(reader: &mut Reader<'_>) -> Result<Self, WireError> {
        field("account", Self::from_bcd(reader.take_array::<{ Self::ENCODED_LEN }>()?))
    }
}

/// Length byte, then the password padded with 0x00 to [`Password::LEN_MAX`]: the field is the
/// same size for every password, so the packet does not tell a password's length.
impl Codec for Password {
    const ENCODED_LEN: usize = u8::ENCODED_LEN + Self::LEN_MAX;

    fn write_to(&self, writer: &mut Writer<'_>) {
        let password = self.expose();
        // Password admits LEN_MIN..=LEN_MAX bytes only, so the length fits the byte and the
        // pad is never negative.
        (password.len() as u8).write_to(writer);
        writer.put(password);
        writer.put_zeros(Self::LEN_MAX.saturating_sub(password.len()));
    }

    fn read_from(reader: &mut Reader<'_>) -> Result<Self, WireError> {
        let len = usize::from(u8::read_from(reader)?);
        let padded = reader.take_array::<{ Self::LEN_MAX }>()?;
        let (password, pad) = padded.split_at_checked(len).ok_or(WireError::Secret)?;
        if pad.iter().any(|b| *b != 0) {
            return Err(WireError::Secret);
        }
        // from_bytes refuses a length under LEN_MIN and anything not printable.
        Self::from_bytes(password).map_err(|_| WireError::Secret)
    }
}

/// Two ASCII digits.
impl Codec for ResponseCode {
    const ENCODED_LEN: usize = 2;

    fn write_to(&self, writer: &mut Writer<'_>) {
        // Every code is two ASCII digits: `response_codes_round_trip` checks all of them.
        writer.put(self.as_str().as_bytes());
    }

    fn read_from(reader: &mut Reader<'_>) -> Result<Self, WireError> {
        let digits = reader.take_array::<{ Self::ENCODED_LEN }>()?;
        std::str::from_utf8(digits).ok().and_then(Self::parse).ok_or(WireError::AnswerBody)
    }
}

/// Six bytes as they are; whether they suit the response code is the answer body's rule.
impl Codec for AuthCode {
    const ENCODED_LEN: usize = 6;

    fn write_to(&self, writer: &mut Writer<'_>) {
        writer.put_array::<{ Self::ENCODED_LEN }>(&self.0);
    }

    fn read_from(reader: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Self(*reader.take_array::<{ Self::ENCODED_LEN }>()?))
    }
}

impl Codec for TxnId {
    const ENCODED_LEN: usize = 16;

    fn write_to(&self, writer: &mut Writer<'_>) {
        writer.put_array::<{ Self::ENCODED_LEN }>(&self.0);
    }

    fn read_from(reader: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Self(*reader.take_array::<{ Self::ENCODED_LEN }>()?))
    }
}

/// Names the wire field an identifier's error came from.
fn field<T>(name: &'static str, r: Result<T, IdError>) -> Result<T, WireError> {
    r.map_err(|source| WireError::Field { field: name, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::round_trip;
    use crate::keys::AesKey;

    fn clear_fields() -> ClearFields {
        ClearFields {
            iin: Iin::new("400012").unwrap(),
            sim_id: SimId::new("8949012345678901234").unwrap(),
            counter: Counter::new(0x0102_0304_0506).unwrap(),
            merchant_id: MerchantId::new("SHOP-1").unwrap(),
            order_no: OrderNo::new("A-1").unwrap(),
            amount: Amount::from_minor(1250),
            currency: Currency::EUR,
        }
    }

    #[test]
    fn codes_and_ids_print_as_their_wire_text() {
        assert_eq!(ResponseCode::Approved.to_string(), "00");
        assert_eq!(ResponseCode::InsufficientFunds.to_string(), "51");
        // Only what is decided after the password was verified tells the balance.
        let disclosing: std::collections::BTreeSet<&str> =
            ResponseCode::ALL.iter().filter(|code| code.discloses_balance()).map(|code| code.as_str()).collect();
        assert_eq!(disclosing, ["00", "13", "51", "61", "94"].into_iter().collect());
        assert_eq!(ResponseCode::Approved.meaning(), "approved");
        assert_eq!(ResponseCode::IncorrectPassword.meaning(), "incorrect payment password");
        let meanings: std::collections::BTreeSet<&str> = ResponseCode::ALL.iter().map(|code| code.meaning()).collect();
        assert_eq!(meanings.len(), ResponseCode::ALL.len(), "every code has its own meaning");
        assert_eq!(AuthCode(*b"K7Q2MX").as_str(), "K7Q2MX");
        assert_eq!(AuthCode::NONE.as_str(), "      ");
        let txn = TxnId([0xab; 16]);
        assert_eq!(txn.to_hex(), "ab".repeat(16));
        assert_eq!(TxnId::from_hex(&txn.to_hex()), Some(txn));
        assert_eq!(format!("{txn:?}"), format!("TxnId({})", "ab".repeat(16)));
        let debug = format!("{:?}", secret());
        assert!(debug.starts_with("PaymentSecret {") && !debug.contains("2468ab"), "{debug}");
    }

    fn secret() -> PaymentSecret {
        PaymentSecret { account: Account::new("4000120000001234").unwrap(), password: Password::new("2468ab").unwrap() }
    }

    fn answer_plain() -> AnswerPlain {
        AnswerPlain {
            response_code: ResponseCode::Approved,
            auth_code: AuthCode(*b"A1B2C3"),
            balance: -5,
            currency: Currency::USD,
            next_rsn: Rsn([8; 8]),
            txn_id: TxnId([9; 16]),
        }
    }

    fn keys() -> SessionKeys {
        SessionKeys::derive(&AesKey::from_bytes([0x42; 32]), Counter::new(3).unwrap(), &Rsn([9; 8]))
    }

    #[test]
    fn every_field_type_round_trips_in_its_declared_length() {
        assert_eq!(round_trip(&Iin::new("400012").unwrap()), [0x40, 0x00, 0x12]);
        assert_eq!(round_trip(&SimId::new("8949012345678901234").unwrap()).last(), Some(&0x4F));
        assert_eq!(round_trip(&Counter::new(Counter::MAX).unwrap()), [0xFF; 6]);
        round_trip(&Counter::ZERO);
        assert_eq!(round_trip(&MerchantId::new("SHOP-1").unwrap()), *b"SHOP-1         ");
        assert_eq!(round_trip(&OrderNo::new("A-1").unwrap()), *b"A-1         ");
        round_trip(&Amount::from_minor(u64::MAX));
        assert_eq!(round_trip(&Currency::EUR), [0x03, 0xD2]);
        round_trip(&Rsn([1, 2, 3, 4, 5, 6, 7, 8]));
        round_trip(&Account::new("123456789012").unwrap());
        round_trip(&Account::new("1234567890123456789").unwrap());
        round_trip(&AuthCode::NONE);
        round_trip(&TxnId([0xEE; 16]));
        round_trip(&clear_fields());
        round_trip(&answer_plain());
    }

    #[test]
    fn passwords_of_every_length_fill_the_same_field() {
        for len in Password::LEN_MIN..=Password::LEN_MAX {
            let text = "x".repeat(len);
            let bytes = round_trip(&Password::new(&text).unwrap());
            assert_eq!(bytes.len(), 1 + Password::LEN_MAX);
            assert_eq!(usize::from(bytes[0]), len);
            assert!(bytes[1 + len..].iter().all(|b| *b == 0), "pad of a {len}-byte password");
        }
    }

    #[test]
    fn response_codes_round_trip() {
        for code in ResponseCode::ALL {
            assert_eq!(round_trip(&code), code.as_str().as_bytes());
        }
    }

    #[test]
    fn the_mac_input_is_the_message_up_to_its_mac() {
        let packet = PayerPacket::seal(&keys(), clear_fields(), &secret(), [7; IV_LEN]);
        let bytes = packet.encode();
        assert_eq!(bytes[..PACKET_MAC_INPUT_LEN], packet.mac_input());
        assert_eq!(bytes[PACKET_MAC_INPUT_LEN..], packet.mac);
        assert_eq!(bytes[0], PACKET_TYPE);
        assert_eq!(round_trip(&packet), bytes);

        let answer = PayerAnswer::seal(&keys(), Counter::new(3).unwrap(), &answer_plain(), [6; IV_LEN]);
        let bytes = answer.encode();
        assert_eq!(bytes[..ANSWER_MAC_INPUT_LEN], answer.mac_input());
        assert_eq!(bytes[ANSWER_MAC_INPUT_LEN..], answer.mac);
        assert_eq!(bytes[0], ANSWER_TYPE);
        assert_eq!(round_trip(&answer), bytes);
    }

    #[test]
    fn plaintexts_round_trip_through_their_public_forms() {
        let plaintext = secret().to_plaintext();
        assert_eq!(PaymentSecret::from_plaintext(&plaintext[..]), Ok(secret()));
        let plaintext = answer_plain().to_plaintext();
        assert_eq!(AnswerPlain::from_plaintext(&plaintext[..]), Ok(answer_plain()));
    }

    #[test]
    fn a_wrong_length_is_refused_before_anything_is_read() {
        let packet = PayerPacket::seal(&keys(), clear_fields(), &secret(), [7; IV_LEN]).encode();
        assert_eq!(
            PayerPacket::decode(&packet[..PACKET_LEN - 1]),
            Err(WireError::Length { what: "payer packet", expected: PACKET_LEN, actual: PACKET_LEN - 1 })
        );
        let mut longer = packet.to_vec();
        longer.push(0);
        assert_eq!(
            PayerPacket::decode(&longer),
            Err(WireError::Length { what: "payer packet", expected: PACKET_LEN, actual: PACKET_LEN + 1 })
        );
        assert_eq!(
            PayerAnswer::decode(&[ANSWER_TYPE]),
            Err(WireError::Length { what: "answer", expected: ANSWER_LEN, actual: 1 })
        );
        assert_eq!(PaymentSecret::from_plaintext(&[0; SECRET_LEN + 1]), Err(WireError::Secret));
        assert_eq!(AnswerPlain::from_plaintext(&[0; ANSWER_PLAIN_LEN - 1]), Err(WireError::AnswerBody));
    }

    #[test]
    fn a_zero_counter_is_reported_before_a_bad_iin() {
        let mut packet = PayerPacket::seal(&keys(), clear_fields(), &secret(), [7; IV_LEN]).encode();
        let iin_at = u8::ENCODED_LEN;
        let counter_at = iin_at + Iin::ENCODED_LEN + SimId::ENCODED_LEN;
        packet[iin_at] = 0xAB;
        assert!(matches!(PayerPacket::decode(&packet), Err(WireError::Field { field: "iin", .. })));
        packet[counter_at..counter_at + Counter::ENCODED_LEN].fill(0);
        assert_eq!(PayerPacket::decode(&packet), Err(WireError::CounterZero));
        packet[0] = ANSWER_TYPE;
        assert_eq!(
            PayerPacket::decode(&packet),
            Err(WireError::Type { what: "payer packet", expected: PACKET_TYPE, actual: ANSWER_TYPE })
        );
    }

    #[test]
    fn an_answer_for_counter_zero_is_refused() {
        let mut answer = PayerAnswer::seal(&keys(), Counter::new(3).unwrap(), &answer_plain(), [6; IV_LEN]).encode();
        answer[u8::ENCODED_LEN..u8::ENCODED_LEN + Counter::ENCODED_LEN].fill(0);
        assert_eq!(PayerAnswer::decode(&answer), Err(WireError::CounterZero));
    }

    #[test]
    fn a_malformed_secret_says_only_that() {
        let good = secret().to_plaintext();
        let length_at = Account::ENCODED_LEN;
        let mut cases = Vec::new();
        for bad_length in [0, 3, 13, 255] {
            let mut bytes = *good;
            bytes[length_at] = bad_length;
            cases.push(bytes);
        }
        let mut nonzero_pad = *good;
        nonzero_pad[SECRET_LEN - 1] = 1;
        cases.push(nonzero_pad);
        let mut unprintable = *good;
        unprintable[length_at + 1] = 0x07;
        cases.push(unprintable);
        let mut bad_bcd = *good;
        bad_bcd[0] = 0xAB;
        cases.push(bad_bcd);
        for bytes in cases {
            assert_eq!(PaymentSecret::from_plaintext(&bytes), Err(WireError::Secret), "{bytes:02x?}");
        }
    }

    #[test]
    fn an_answer_body_checks_its_auth_code_against_its_response_code() {
        let declined = AnswerPlain { response_code: ResponseCode::InsufficientFunds, ..answer_plain() };
        assert_eq!(AnswerPlain::from_plaintext(&declined.to_plaintext()[..]), Err(WireError::AnswerBody));
        let declined = AnswerPlain { auth_code: AuthCode::NONE, ..declined };
        assert_eq!(AnswerPlain::from_plaintext(&declined.to_plaintext()[..]), Ok(declined));
        let lower_case = AnswerPlain { auth_code: AuthCode(*b"a1b2c3"), ..answer_plain() };
        assert_eq!(AnswerPlain::from_plaintext(&lower_case.to_plaintext()[..]), Err(WireError::AnswerBody));

        let mut unknown_code = answer_plain().to_plaintext();
        unknown_code[..ResponseCode::ENCODED_LEN].copy_from_slice(b"99");
        assert_eq!(AnswerPlain::from_plaintext(&unknown_code[..]), Err(WireError::AnswerBody));
        let mut no_currency = answer_plain().to_plaintext();
        let currency_at = ResponseCode::ENCODED_LEN + AuthCode::ENCODED_LEN + i64::ENCODED_LEN;
        no_currency[currency_at..currency_at + Currency::ENCODED_LEN].fill(0);
        assert_eq!(
            AnswerPlain::from_plaintext(&no_currency[..]),
            Err(WireError::Field { field: "currency", source: IdError::UnknownCurrency(0) })
        );
    }
}
