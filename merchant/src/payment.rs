//! One payment, from the phone's packet to the phone's answer: decode the packet, check its
//! clear fields against the open order, sign the authorization request, mark the order
//! submitted, deliver (with identical retries), verify the bank's signed answer, record the
//! outcome durably, and only then hand back the SIM's answer. An outcome the merchant cannot
//! establish queues a reversal. A new packet for an order already paid goes to its issuer too,
//! so that the SIM that made it reads an answer and moves on: the payment's issuer declines it,
//! and what another issuer approves the merchant reverses at once. Knows nothing of HTTP:
//! `front/` maps its results.

use std::sync::Arc;

use mps_protocol::wire::PayerPacket;
use mps_protocol::{Amount, Currency, Iin, MerchantId, OrderNo, WireError};
use rustls_pki_types::UnixTime;

use crate::bank::BankLink;
use crate::bank::answer::{self, AnswerError, Expected, Problem};
use crate::bank::request::{MerchantFacts, RequestError, ReversalFacts, SignedBody};
use crate::bank::submit::{AUTHORIZATIONS_PATH, Delivery};
use crate::ops::metrics::Metrics;
use crate::orders::{self, BankOutcome, BookError, NewReversal, Order, OrderBook, OrderStatus, Submission};

/// Why a payment did not end in a verified answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PaymentError {
    /// The packet does not decode (DESIGN.md section 4.1).
    #[error("the payer packet is malformed: {0}")]
    Malformed(#[from] WireError),
    /// The packet pays another merchant.
    #[error("the packet pays merchant {0}, not this merchant")]
    OtherMerchant(String),
    /// No such order.
    #[error("there is no order {0}; the shop must create it first")]
    UnknownOrder(OrderNo),
    /// The packet's amount or currency differs from the order's.
    #[error("the packet's {0} differs from the order's; pay the order as the shop shows it")]
    Mismatch(&'static str),
    /// The order was paid while this packet was checked: nothing was sent to the bank.
    #[error("order {0} is paid already")]
    AlreadyPaid(OrderNo),
    /// The order is paid already, and this new packet for it got no verified answer from its
    /// issuer (sent so that the SIM can move on), or waits for another packet's reversal. The
    /// identical packet may be sent again.
    #[error("order {order_no} is paid already, and this packet got no verified answer: {reason}; send it again later")]
    DuplicateUnanswered {
        /// The order.
        order_no: OrderNo,
        /// What went wrong.
        reason: String,
    },
    /// The issuer approved a second packet for an order it had approved already. Its ledger
    /// refuses that (DESIGN.md section 7, step 11), so this is a fault to investigate: the
    /// answer is not handed on, and the bank must reverse the transaction.
    #[error("the bank approved a second payment of the paid order {order_no} (txn {txn_id}); it must be reversed")]
    ApprovedTwice {
        /// The order.
        order_no: OrderNo,
        /// The second approval's transaction id.
        txn_id: String,
    },
    /// The packet's payment was reversed by the issuer (00): the identical packet must not pay
    /// again, since the issuer may answer a retransmission with its stored approval.
    #[error("the payment of this packet for order {0} was reversed by the issuer; it cannot pay again")]
    Reversed(OrderNo),
    /// The order is in flight or waits for a reversal.
    #[error("order {order_no} is {status}; try again later")]
    Busy {
        /// The order.
        order_no: OrderNo,
        /// Its status.
        status: OrderStatus,
    },
    /// The bank refused the request without deciding it (nothing booked).
    #[error("the bank refused the request ({}): {detail}", .response_code.as_deref().unwrap_or("no code"))]
    Refused {
        /// ISO 8583 code of the refusal, if any.
        response_code: Option<String>,
        /// The refusal's detail.
        detail: String,
    },
    /// The bank's answer could not be trusted; the order is unpaid and a reversal is queued.
    #[error("the bank's answer could not be verified: {0}")]
    Unverified(#[source] AnswerError),
    /// No answer within the limits; the order is unpaid and a reversal is queued.
    #[error("the bank did not answer after {attempts} attempts ({last_error})")]
    NoAnswer {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last_error: String,
    },
    /// The order book failed.
    #[error(transparent)]
    Book(#[from] BookError),
    /// The request could not be made.
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// What the phone is told after a verified answer.
#[derive(Debug, Clone)]
pub struct PhoneReply {
    /// The order as recorded.
    pub order: Order,
    /// ISO 8583 code.
    pub response_code: String,
    /// The answer's auth code (approvals).
    pub auth_code: Option<String>,
    /// The answer's transaction id, hex.
    pub txn_id: Option<String>,
    /// The SIM's answer, when the issuer made one.
    pub payer_answer: Option<Vec<u8>>,
    /// What the phone is told of the payment: the order's status, or `Reversed` for an
    /// approval of a second packet that the merchant is reversing.
    pub status: OrderStatus,
}

/// The shop's identity and its parts, shared by the phone routes and the reversal task.
pub struct Payments {
    /// The order book.
    pub book: OrderBook,
    /// The link to the bank.
    pub bank: BankLink,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Our merchant id.
    pub merchant_id: MerchantId,
    /// Our acquirer.
    pub acquirer_iin: Iin,
    /// Our account at the acquirer.
    pub merchant_account: String,
}

impl std::fmt::Debug for Payments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payments").field("merchant_id", &self.merchant_id).finish_non_exhaustive()
    }
}

impl Payments {
    /// Who we are, for the request bodies.
    pub fn facts(&self) -> MerchantFacts<'_> {
        MerchantFacts {
            merchant_id: self.merchant_id,
            acquirer_iin: self.acquirer_iin,
            merchant_account: &self.merchant_account,
        }
    }

    /// What the bank's answer to a packet of `issuer_iin` for `order` must echo.
    fn expected(&self, order: &Order, issuer_iin: Iin) -> Expected {
        Expected {
            merchant_id: self.merchant_id,
            order_no: order.order_no,
            amount: order.amount,
            currency: order.currency,
            issuer_iin,
        }
    }

    /// Pays an order with the SIM's packet. The caller runs it in its own task, so that a phone
    /// that hangs up does not cut a payment in half.
    pub async fn pay(&self, packet_bytes: Vec<u8>) -> Result<PhoneReply, PaymentError> {
        let packet = PayerPacket::decode(&packet_bytes)?;
        let fields = &packet.fields;
        if fields.merchant_id != self.merchant_id {
            return Err(PaymentError::OtherMerchant(fields.merchant_id.as_str().to_owned()));
        }
        let order_no = fields.order_no;
        let order =
            self.book.call(move |book| book.get(&order_no)).await?.ok_or(PaymentError::UnknownOrder(order_no))?;
        check_order(&order, fields.amount, fields.currency)?;
        if reversed_resend(&order, &packet_bytes) {
            return self.reversed_answer(&order, fields.iin).await;
        }
        if order.status == OrderStatus::Paid {
            if order.payer_packet.as_deref() == Some(&packet_bytes[..]) {
                return Ok(replay(&order));
            }
            return self.duplicate(&order, &packet_bytes, fields.iin).await;
        }
        let signed = self.bank.authorization(self.facts(), &packet_bytes, order_no, order.amount, order.currency)?;
        let submission = Submission {
            order_no,
            amount: order.amount,
            currency: order.currency,
            issuer_iin: fields.iin,
            packet: packet_bytes,
            body: signed.body.clone(),
            signature: signed.signature.clone(),
        };
        let begin = submission.clone();
        self.book.call(move |book| book.begin_payment(&begin)).await.map_err(|error| match error {
            BookError::Conflict { order_no, status: OrderStatus::Paid } => PaymentError::AlreadyPaid(order_no),
            BookError::Conflict { order_no, status } => PaymentError::Busy { order_no, status },
            other => PaymentError::Book(other),
        })?;
        tracing::info!(order_no = %order_no, issuer = %fields.iin, "authorization submitted");
        let delivery = self.bank.deliver(AUTHORIZATIONS_PATH, &signed, "authorization", &self.metrics).await;
        self.conclude(&submission, &self.expected(&order, fields.iin), delivery).await
    }

    /// The SIM's answer for a packet whose payment was reversed (DESIGN.md section 6.1): the
    /// identical signed request goes to the bank again, which answers a retransmission with
    /// its stored answer, so the SIM can read it and its keys move on; the order stays
    /// reversed, the reply says so, and nothing is recorded as paid. Without a stored request
    /// (an order book from before this was kept) it is refused as before.
    async fn reversed_answer(&self, order: &Order, issuer_iin: Iin) -> Result<PhoneReply, PaymentError> {
        let Some((body, signature)) = order.request.clone() else {
            return Err(PaymentError::Reversed(order.order_no));
        };
        let signed = SignedBody { body, signature };
        let delivery = self.bank.deliver(AUTHORIZATIONS_PATH, &signed, "authorization", &self.metrics).await;
        let Delivery::Answered { answer, .. } = delivery else {
            return Err(PaymentError::Reversed(order.order_no));
        };
        let expected = self.expected(order, issuer_iin);
        let outcome = answer::verify_authorization(&answer, &self.bank.trust, &expected, UnixTime::now())
            .map_err(PaymentError::Unverified)?;
        tracing::info!(order_no = %order.order_no, "resend of a reversed payment: the SIM gets the bank's stored answer");
        Ok(PhoneReply {
            response_code: outcome.response_code,
            auth_code: outcome.auth_code,
            txn_id: Some(outcome.txn_id),
            payer_answer: outcome.payer_answer,
            status: order.status,
            order: order.clone(),
        })
    }

    /// A new packet for an order that another packet paid. A SIM keeps a packet pending until
    /// it reads an answer (docs/SIM.md), so a plain refusal would leave it unable to pay at that
    /// issuer again: the packet goes to its issuer like any other, and the order is not touched.
    /// The issuer of the payment declines it (94, DESIGN.md section 7, step 11; or an earlier
    /// step's decline) and seals an answer, so the SIM's keys move on. Another issuer knows
    /// nothing of the payment and approves it if it can: see [`Self::void_elsewhere`].
    async fn duplicate(&self, order: &Order, packet_bytes: &[u8], issuer_iin: Iin) -> Result<PhoneReply, PaymentError> {
        let order_no = order.order_no;
        if order.issuer_iin != Some(issuer_iin) {
            return self.void_elsewhere(order, packet_bytes, issuer_iin).await;
        }
        let signed = self.bank.authorization(self.facts(), packet_bytes, order_no, order.amount, order.currency)?;
        let delivery = self.bank.deliver(AUTHORIZATIONS_PATH, &signed, "authorization", &self.metrics).await;
        let outcome = self.verified_duplicate(order, issuer_iin, delivery).map_err(|(_, error)| error)?;
        if outcome.response_code == "00" {
            self.metrics.payments.with_label_values(&["approved_twice"]).inc();
            tracing::error!(order_no = %order_no, txn_id = %outcome.txn_id,
                "the bank approved a second payment of a paid order: ask the bank to reverse this transaction");
            return Err(PaymentError::ApprovedTwice { order_no, txn_id: outcome.txn_id });
        }
        self.metrics.payments.with_label_values(&["declined"]).inc();
        tracing::info!(order_no = %order_no, response_code = %outcome.response_code,
            "packet for a paid order: declined by its issuer, the SIM's keys move on");
        Ok(duplicate_reply(order, outcome, order.status))
    }

    /// A packet of another issuer than the one that paid the order: that issuer knows nothing
    /// of the payment, so the merchant undoes whatever it approves. The reversal is queued
    /// before the packet leaves, due once the delivery has ended in any case (so a crash in
    /// between still sends it); after a verified approval it goes at once, and the phone is
    /// told the payment was reversed (`sim` says so); after a verified decline, or a refusal
    /// that decided nothing, it is dropped unsent. Without a verified answer it goes at once
    /// too, and the identical packet may be sent again once it is answered: the issuer then
    /// returns its stored answer.
    async fn void_elsewhere(
        &self,
        order: &Order,
        packet_bytes: &[u8],
        issuer_iin: Iin,
    ) -> Result<PhoneReply, PaymentError> {
        let order_no = order.order_no;
        let signed = self.bank.authorization(self.facts(), packet_bytes, order_no, order.amount, order.currency)?;
        let reversal = self.reversal_for(order_no, order.amount, order.currency, issuer_iin)?;
        let wait = self.bank.limits.deadline.saturating_add(VOID_MARGIN);
        let due = orders::now_ms().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
        let id =
            self.book.call(move |book| book.queue_void(&order_no, &reversal, due)).await.map_err(
                |error| match error {
                    BookError::Conflict { order_no, status: OrderStatus::ReversalPending } => {
                        let reason = "the reversal of another packet for it is still pending, so this one was not sent";
                        PaymentError::DuplicateUnanswered { order_no, reason: reason.to_owned() }
                    }
                    BookError::Conflict { order_no, status } => PaymentError::Busy { order_no, status },
                    other => PaymentError::Book(other),
                },
            )?;
        self.metrics.pending_reversals.inc();
        tracing::info!(order_no = %order_no, issuer = %issuer_iin,
            "packet of another issuer for a paid order: reversal queued, packet sent");
        let delivery = self.bank.deliver(AUTHORIZATIONS_PATH, &signed, "authorization", &self.metrics).await;
        let outcome = match self.verified_duplicate(order, issuer_iin, delivery) {
            Ok(outcome) => outcome,
            Err((may_have_decided, error)) => {
                if may_have_decided {
                    self.book.call(move |book| book.reversal_due_now(id)).await?;
                } else {
                    self.drop_void(id).await?;
                }
                return Err(error);
            }
        };
        if outcome.response_code != "00" {
            self.drop_void(id).await?;
            self.metrics.payments.with_label_values(&["declined"]).inc();
            tracing::info!(order_no = %order_no, response_code = %outcome.response_code,
                "packet of another issuer for a paid order: declined, nothing to reverse");
            return Ok(duplicate_reply(order, outcome, order.status));
        }
        self.book.call(move |book| book.reversal_due_now(id)).await?;
        self.metrics.payments.with_label_values(&["approved_reversed"]).inc();
        tracing::warn!(order_no = %order_no, issuer = %issuer_iin, txn_id = %outcome.txn_id,
            "packet of another issuer for a paid order: approved there; its reversal goes now");
        Ok(duplicate_reply(order, outcome, OrderStatus::Reversed))
    }

    /// Drops a void whose packet moved nothing, unless it went out already.
    async fn drop_void(&self, id: i64) -> Result<(), PaymentError> {
        if self.book.call(move |book| book.drop_unsent_reversal(id)).await? {
            self.metrics.pending_reversals.dec();
        }
        Ok(())
    }

    /// The verified answer to a second packet for a paid order. An error says whether the
    /// issuer may have decided the packet (no answer, or one that does not verify) or surely
    /// did not (it refused the request).
    fn verified_duplicate(
        &self,
        order: &Order,
        issuer_iin: Iin,
        delivery: Delivery,
    ) -> Result<BankOutcome, (bool, PaymentError)> {
        let order_no = order.order_no;
        let unanswered = |may_have_decided: bool, reason: String| {
            tracing::warn!(order_no = %order_no, reason = %reason, "packet for a paid order: no verified answer");
            (may_have_decided, PaymentError::DuplicateUnanswered { order_no, reason })
        };
        let answer = match delivery {
            Delivery::Answered { answer, .. } if answer.status == 200 => answer,
            Delivery::Answered { answer, .. } if (400..500).contains(&answer.status) => {
                return Err(unanswered(false, format!("refused with HTTP {}", answer.status)));
            }
            Delivery::Answered { answer, .. } => return Err(unanswered(true, format!("HTTP {}", answer.status))),
            Delivery::GaveUp { attempts, last_error } => {
                return Err(unanswered(true, format!("no answer after {attempts} attempts: {last_error}")));
            }
        };
        answer::verify_authorization(&answer, &self.bank.trust, &self.expected(order, issuer_iin), UnixTime::now())
            .map_err(|error| unanswered(true, format!("answer not verified: {error}")))
    }

    async fn conclude(
        &self,
        submission: &Submission,
        expected: &Expected,
        delivery: Delivery,
    ) -> Result<PhoneReply, PaymentError> {
        let order_no = submission.order_no;
        let answer = match delivery {
            Delivery::GaveUp { attempts, last_error } => {
                let reason = format!("no answer from the bank after {attempts} attempts: {last_error}");
                self.unresolved(submission, OrderStatus::ReversalPending, &reason, "timeout").await?;
                return Err(PaymentError::NoAnswer { attempts, last_error });
            }
            Delivery::Answered { answer, .. } => answer,
        };
        if (400..500).contains(&answer.status) {
            let problem = Problem::read(&answer.body);
            let detail = problem.detail.or(problem.title).unwrap_or_else(|| format!("HTTP {}", answer.status));
            let reason = format!("refused by the bank (HTTP {}): {detail}", answer.status);
            let code = problem.response_code.filter(|code| code.len() == 2 && code.bytes().all(|b| b.is_ascii_digit()));
            let stored_code = code.clone();
            self.book.call(move |book| book.record_refused(&order_no, stored_code.as_deref(), &reason)).await?;
            self.metrics.payments.with_label_values(&["refused"]).inc();
            tracing::warn!(order_no = %order_no, status = answer.status, "the bank refused the request");
            return Err(PaymentError::Refused { response_code: code, detail });
        }
        let verified = if answer.status == 200 {
            answer::verify_authorization(&answer, &self.bank.trust, expected, UnixTime::now())
        } else {
            Err(AnswerError::Unsigned)
        };
        match verified {
            Ok(outcome) => {
                let code = outcome.response_code.clone();
                let (auth_code, txn_id) = (outcome.auth_code.clone(), Some(outcome.txn_id.clone()));
                let payer_answer = outcome.payer_answer.clone();
                let order = self.book.call(move |book| book.record_answer(&order_no, &outcome)).await?;
                let label = if code == "00" { "approved" } else { "declined" };
                self.metrics.payments.with_label_values(&[label]).inc();
                tracing::info!(order_no = %order_no, response_code = %code, status = %order.status, "bank answer verified and recorded");
                Ok(PhoneReply { status: order.status, order, response_code: code, auth_code, txn_id, payer_answer })
            }
            Err(error) => {
                let reason = format!("bank answer not trusted (HTTP {}): {error}", answer.status);
                tracing::error!(order_no = %order_no, status = answer.status, error = %error, "bank answer not trusted; reversal queued");
                self.unresolved(submission, OrderStatus::Unknown, &reason, "unverified").await?;
                Err(PaymentError::Unverified(error))
            }
        }
    }

    /// Records an outcome that could not be established and queues its reversal.
    async fn unresolved(
        &self,
        submission: &Submission,
        status: OrderStatus,
        reason: &str,
        metric: &'static str,
    ) -> Result<Order, PaymentError> {
        let reversal =
            self.reversal_for(submission.order_no, submission.amount, submission.currency, submission.issuer_iin)?;
        let order_no = submission.order_no;
        let reason = reason.to_owned();
        let order = self.book.call(move |book| book.record_unresolved(&order_no, status, &reason, &reversal)).await?;
        self.metrics.payments.with_label_values(&[metric]).inc();
        self.metrics.pending_reversals.inc();
        tracing::warn!(order_no = %order_no, status = %order.status, "payment unresolved; reversal queued");
        Ok(order)
    }

    fn reversal_for(
        &self,
        order_no: OrderNo,
        amount: Amount,
        currency: Currency,
        issuer_iin: Iin,
    ) -> Result<NewReversal, PaymentError> {
        let facts = ReversalFacts { order_no, amount, currency, issuer_iin, txn_id: None };
        let signed = self.bank.reversal(self.facts(), facts)?;
        Ok(NewReversal { issuer_iin, body: signed.body, signature: signed.signature })
    }

    /// At start-up: every order left submitted (the merchant stopped while its request was out)
    /// is unresolved; queue its reversal. Returns how many.
    pub async fn recover_submitted(&self) -> Result<usize, PaymentError> {
        let orders = self.book.call(|book| book.submitted()).await?;
        for order in &orders {
            let Some(issuer_iin) = order.issuer_iin else {
                return Err(BookError::Damaged("a submitted order without its issuer").into());
            };
            let reversal = self.reversal_for(order.order_no, order.amount, order.currency, issuer_iin)?;
            let order_no = order.order_no;
            let reason = "the merchant stopped while the request was out".to_owned();
            self.book
                .call(move |book| book.record_unresolved(&order_no, OrderStatus::ReversalPending, &reason, &reversal))
                .await?;
            tracing::warn!(order_no = %order_no, "order left submitted at the last stop; reversal queued");
        }
        Ok(orders.len())
    }
}

/// The packet's amount and currency must be the order's.
fn check_order(order: &Order, amount: Amount, currency: Currency) -> Result<(), PaymentError> {
    if order.amount != amount {
        return Err(PaymentError::Mismatch("amount"));
    }
    if order.currency != currency {
        return Err(PaymentError::Mismatch("currency"));
    }
    Ok(())
}

/// How long after a void's packet could have had its last answer the void is due anyway.
const VOID_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The phone's reply to a second packet for a paid order: the issuer's answer to it, with the
/// order as it stands.
fn duplicate_reply(order: &Order, outcome: BankOutcome, status: OrderStatus) -> PhoneReply {
    PhoneReply {
        response_code: outcome.response_code,
        auth_code: outcome.auth_code,
        txn_id: Some(outcome.txn_id),
        payer_answer: outcome.payer_answer,
        status,
        order: order.clone(),
    }
}

/// The stored reply to a byte-identical packet of a paid order (the SIM lost the answer).
fn replay(order: &Order) -> PhoneReply {
    tracing::info!(order_no = %order.order_no, "identical packet for a paid order: stored answer");
    PhoneReply {
        response_code: order.response_code.clone().unwrap_or_default(),
        auth_code: order.auth_code.clone(),
        txn_id: order.txn_id.clone(),
        payer_answer: order.payer_answer.clone(),
        status: order.status,
        order: order.clone(),
    }
}

/// A byte-identical resend of the packet whose payment the bank reversed (00).
fn reversed_resend(order: &Order, packet_bytes: &[u8]) -> bool {
    order.status == OrderStatus::Reversed
        && order.reversal_code.as_deref() == Some("00")
        && order.payer_packet.as_deref() == Some(packet_bytes)
}
