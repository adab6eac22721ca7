//! One request and its answer, checked end to end: the SIM builds the packet, the merchant
//! signs the request, the answer must be HTTP 200 with the bank's detached JWS valid under the
//! scheme CA, and the SIM must open its payer answer (MAC, next RSN) before the SIM is used
//! again. A retransmission sends the SIM's previous request again and expects the very bytes
//! the bank stored. A bad-MAC request sends the SIM's packet with its MAC corrupted and expects
//! the bank's signed 63 with no payer answer; the SIM keeps that packet pending and sends it,
//! intact, next time: the session keys must not have moved.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mps_pki::Role;
use mps_protocol::{Amount, Currency, OrderNo, Password, ResponseCode};
use mps_sim::PaymentRequest;
use rustls_pki_types::UnixTime;
use serde::Serialize;

use crate::drive::client::{Connection, Merchant};
use crate::provision::Payer;

/// What a request is meant to test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// A payment with the right password: expect 00.
    Payment,
    /// A payment with a wrong password: expect 55.
    WrongPassword,
    /// The SIM's previous request again: expect the stored answer, byte for byte.
    Retransmission,
    /// A payment whose packet MAC is corrupted: expect the signed 63 without a payer answer,
    /// and no state moved (the intact packet is sent next and must be approved).
    BadMac,
}

/// Why a request counts as an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// No answer: connection, TLS, timeout.
    Transport,
    /// An HTTP status other than 200.
    HttpStatus,
    /// The bank's signature is missing, invalid, or not the SIM's bank.
    BadSignature,
    /// The body is not the answer the protocol defines (JSON, fields, code).
    MalformedAnswer,
    /// The SIM could not open the payer answer (MAC, counter, format).
    SimCouldNotOpen,
    /// A valid answer with another response code than the one expected.
    UnexpectedCode,
    /// A retransmission whose answer differs from the stored one.
    RetransmissionMismatch,
    /// The SIM refused to build the packet (a harness bug: every SIM has one payment in flight at most).
    SimRefused,
}

/// The result of one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchanged {
    /// What was sent.
    pub kind: RequestKind,
    /// The HTTP status, when an answer came.
    pub status: Option<u16>,
    /// The response code, when the answer carried one.
    pub code: Option<ResponseCode>,
    /// The error, if any.
    pub error: Option<ErrorKind>,
}

/// A request and its answer, kept for the retransmission test.
#[derive(Debug, Clone)]
pub(crate) struct LastExchange {
    body: Vec<u8>,
    jws: String,
    answer_body: Vec<u8>,
}

/// A packet the SIM still has pending (sent without a usable answer, or held back while its
/// bad-MAC twin went out): sent again, byte for byte, next time.
#[derive(Debug, Clone)]
pub(crate) struct InDoubt {
    body: Vec<u8>,
    jws: String,
    kind: RequestKind,
}

/// Everything an exchange needs besides the SIM and the connection.
pub struct Context {
    /// Who signs them.
    pub merchant: Merchant,
    /// The scheme CA, for the bank's signature.
    pub trust: mps_pki::TrustStore,
    /// Amount of each payment.
    pub amount: Amount,
    /// Currency of each payment.
    pub currency: Currency,
    /// The payers' right password.
    pub password: Password,
    /// A password that is not the right one.
    pub wrong_password: Password,
    /// Four characters that make this run's order numbers unique.
    pub order_prefix: String,
}

/// Four random capitals before an eight-digit sequence: order numbers unique across runs.
pub fn random_order_prefix() -> String {
    (0..4).map(|_| char::from(b'A' + rand::random::<u8>() % 26)).collect()
}

/// A wrong password that differs from `right`.
pub fn wrong_password_for(right: &Password) -> Result<Password, mps_protocol::IdError> {
    let candidate = Password::new("9753")?;
    if candidate == *right { Password::new("8642") } else { Ok(candidate) }
}

/// Decides what a request does given what was drawn and what the SIM can do now.
pub fn choose_kind(drawn: RequestKind, payer: &Payer) -> RequestKind {
    if payer.in_doubt.is_some() {
        return payer.in_doubt.as_ref().map_or(RequestKind::Payment, |d| d.kind);
    }
    match drawn {
        RequestKind::Retransmission if payer.last.is_some() => RequestKind::Retransmission,
        RequestKind::WrongPassword if !payer.needs_right_password => RequestKind::WrongPassword,
        RequestKind::BadMac => RequestKind::BadMac,
        _ => RequestKind::Payment,
    }
}

/// One exchange of `kind` (from [`choose_kind`]) with order number sequence `sequence`.
pub async fn exchange(
    context: &Context,
    connection: &Connection,
    payer: &mut Payer,
    kind: RequestKind,
    sequence: u64,
) -> Exchanged {
    match kind {
        RequestKind::Retransmission => retransmit(context, connection, payer).await,
        RequestKind::BadMac => bad_mac(context, connection, payer, sequence).await,
        RequestKind::Payment | RequestKind::WrongPassword => pay(context, connection, payer, kind, sequence).await,
    }
}

/// The byte of the packet's MAC that a bad-MAC request flips (its last byte).
const CORRUPTED_BYTE: usize = mps_protocol::wire::PACKET_LEN - 1;

/// Sends the SIM's next packet with a corrupted MAC. Whatever the answer, the intact packet
/// stays pending and goes out next time, as a [`RequestKind::Payment`] that must be approved
/// with the same session keys: proof that the bad MAC moved nothing at the bank.
async fn bad_mac(context: &Context, connection: &Connection, payer: &mut Payer, sequence: u64) -> Exchanged {
    let kind = RequestKind::BadMac;
    let failed = |error, status, code| Exchanged { kind, status, code, error: Some(error) };
    let (packet, order_no) = match prepare(context, payer, kind, sequence) {
        Ok(prepared) => prepared,
        Err(error) => return failed(error, None, None),
    };
    let mut corrupted = packet;
    corrupted[CORRUPTED_BYTE] ^= 0x5a;
    let intact = wrap(context, &packet, order_no);
    let sent = wrap(context, &corrupted, order_no);
    let ((body, jws), (bad_body, bad_jws)) = match (intact, sent) {
        (Ok(intact), Ok(sent)) => (intact, sent),
        (Err(error), _) | (_, Err(error)) => return failed(error, None, None),
    };
    payer.in_doubt = Some(InDoubt { body, jws, kind: RequestKind::Payment });
    let answer = match post_signed(context, connection, payer, &bad_body, &bad_jws).await {
        Ok(answer) => answer,
        Err((error, status)) => return failed(error, status, None),
    };
    let status = Some(answer.status);
    let (code, payer_answer) = match parse_decline(&answer.body) {
        Ok(parsed) => parsed,
        Err(error) => return failed(error, status, None),
    };
    if payer_answer.is_some() {
        return failed(ErrorKind::MalformedAnswer, status, Some(code));
    }
    let error = (code != ResponseCode::SecurityViolation).then_some(ErrorKind::UnexpectedCode);
    Exchanged { kind, status, code: Some(code), error }
}

async fn pay(
    context: &Context,
    connection: &Connection,
    payer: &mut Payer,
    kind: RequestKind,
    sequence: u64,
) -> Exchanged {
    let failed = |error, status, code| Exchanged { kind, status, code, error: Some(error) };
    let (body, jws) = match payer.in_doubt.take() {
        Some(in_doubt) => (in_doubt.body, in_doubt.jws),
        None => match build(context, payer, kind, sequence) {
            Ok(request) => request,
            Err(error) => return failed(error, None, None),
        },
    };
    let answer = match connection.post(&body, &jws).await {
        Ok(answer) => answer,
        Err(_) => {
            payer.in_doubt = Some(InDoubt { body, jws, kind });
            return failed(ErrorKind::Transport, None, None);
        }
    };
    let status = Some(answer.status);
    if answer.status != 200 {
        payer.in_doubt = Some(InDoubt { body, jws, kind });
        return failed(ErrorKind::HttpStatus, status, None);
    }
    if let Err(error) = verify_signature(context, payer, &answer) {
        payer.in_doubt = Some(InDoubt { body, jws, kind });
        return failed(error, status, None);
    }
    let (code, payer_answer) = match parse_answer(&answer.body) {
        Ok(parsed) => parsed,
        Err(error) => {
            payer.in_doubt = Some(InDoubt { body, jws, kind });
            return failed(error, status, None);
        }
    };
    let opened = match payer.profile.open_answer(&payer_answer, Some(payer.iin)) {
        Ok(opened) => opened,
        Err(_) => {
            payer.in_doubt = Some(InDoubt { body, jws, kind });
            return failed(ErrorKind::SimCouldNotOpen, status, Some(code));
        }
    };
    payer.last = Some(LastExchange { body, jws, answer_body: answer.body });
    payer.needs_right_password = code == ResponseCode::IncorrectPassword;
    if opened.answer.response_code != code {
        return failed(ErrorKind::MalformedAnswer, status, Some(code));
    }
    let expected = match kind {
        RequestKind::WrongPassword => ResponseCode::IncorrectPassword,
        _ => ResponseCode::Approved,
    };
    let error = (code != expected).then_some(ErrorKind::UnexpectedCode);
    Exchanged { kind, status, code: Some(code), error }
}

/// The SIM builds the packet, the merchant wraps and signs it.
fn build(
    context: &Context,
    payer: &mut Payer,
    kind: RequestKind,
    sequence: u64,
) -> Result<(Vec<u8>, String), ErrorKind> {
    let (packet, order_no) = prepare(context, payer, kind, sequence)?;
    wrap(context, &packet, order_no)
}

/// The SIM's packet for the next session (kept pending in the SIM) and its order number.
fn prepare(
    context: &Context,
    payer: &mut Payer,
    kind: RequestKind,
    sequence: u64,
) -> Result<([u8; mps_protocol::wire::PACKET_LEN], OrderNo), ErrorKind> {
    let order_no = OrderNo::new(&format!("{}{:08}", context.order_prefix, sequence % 100_000_000))
        .map_err(|_| ErrorKind::SimRefused)?;
    let request = PaymentRequest {
        account: payer.account.clone(),
        merchant_id: context.merchant.id,
        order_no,
        amount: context.amount,
        currency: context.currency,
    };
    let password = if kind == RequestKind::WrongPassword { &context.wrong_password } else { &context.password };
    let iv: [u8; 16] = rand::random();
    let packet = payer.profile.prepare_payment(&request, password, iv).map_err(|_| ErrorKind::SimRefused)?;
    Ok((packet.encode(), order_no))
}

/// The merchant's request body around `packet`, and its detached JWS.
fn wrap(context: &Context, packet: &[u8], order_no: OrderNo) -> Result<(Vec<u8>, String), ErrorKind> {
    let body = context.merchant.request_body(packet, order_no, context.amount, context.currency);
    let jws = context.merchant.sign(&body).map_err(|_| ErrorKind::SimRefused)?;
    Ok((body, jws))
}

async fn retransmit(context: &Context, connection: &Connection, payer: &mut Payer) -> Exchanged {
    let kind = RequestKind::Retransmission;
    let failed = |error, status, code| Exchanged { kind, status, code, error: Some(error) };
    let Some(last) = payer.last.as_ref() else {
        return failed(ErrorKind::SimRefused, None, None);
    };
    let answer = match post_signed(context, connection, payer, &last.body, &last.jws).await {
        Ok(answer) => answer,
        Err((error, status)) => return failed(error, status, None),
    };
    let status = Some(answer.status);
    let code = match parse_answer(&answer.body) {
        Ok((code, _)) => code,
        Err(error) => return failed(error, status, None),
    };
    let error = (answer.body != last.answer_body).then_some(ErrorKind::RetransmissionMismatch);
    Exchanged { kind, status, code: Some(code), error }
}

/// Posts a request whose answer must be a 200 signed by the bank: the answer, or what failed
/// and the HTTP status if one came.
async fn post_signed(
    context: &Context,
    connection: &Connection,
    payer: &Payer,
    body: &[u8],
    jws: &str,
) -> Result<Answer, (ErrorKind, Option<u16>)> {
    let answer = connection.post(body, jws).await.map_err(|_| (ErrorKind::Transport, None))?;
    let status = Some(answer.status);
    if answer.status != 200 {
        return Err((ErrorKind::HttpStatus, status));
    }
    verify_signature(context, payer, &answer).map_err(|error| (error, status))?;
    Ok(answer)
}

fn verify_signature(context: &Context, payer: &Payer, answer: &Answer) -> Result<(), ErrorKind> {
    let jws = answer.jws.as_deref().ok_or(ErrorKind::BadSignature)?;
    let identity = mps_pki::jws::verify_detached(jws, &answer.body, &context.trust, Role::BankSigning, UnixTime::now())
        .map_err(|_| ErrorKind::BadSignature)?;
    if identity.bank_iin != Some(payer.iin) {
        return Err(ErrorKind::BadSignature);
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct AnswerBody {
    response_code: String,
    payer_answer: Option<String>,
}

/// An answer to an authenticated session: a code and the payer answer.
fn parse_answer(body: &[u8]) -> Result<(ResponseCode, Vec<u8>), ErrorKind> {
    match parse_decline(body)? {
        (code, Some(payer_answer)) => Ok((code, payer_answer)),
        (_, None) => Err(ErrorKind::MalformedAnswer),
    }
}

/// Any answer: a code, and the payer answer when the packet was authenticated (null otherwise).
fn parse_decline(body: &[u8]) -> Result<(ResponseCode, Option<Vec<u8>>), ErrorKind> {
    let parsed: AnswerBody = serde_json::from_slice(body).map_err(|_| ErrorKind::MalformedAnswer)?;
    let code = ResponseCode::parse(&parsed.response_code).ok_or(ErrorKind::MalformedAnswer)?;
    let payer_answer = match parsed.payer_answer {
        Some(text) => Some(BASE64.decode(text).map_err(|_| ErrorKind::MalformedAnswer)?),
        None => None,
    };
    Ok((code, payer_answer))
}

/// An HTTP answer.
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// The body, byte for byte.
    pub body: Vec<u8>,
    /// The `x-jws-signature` header.
    pub jws: Option<String>,
}
