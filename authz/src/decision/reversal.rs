//! Reversals (DESIGN.md section 6.1): a merchant that gave up waiting for an answer undoes the
//! authorization, so that no payer is debited for an order the merchant considers unpaid.
//!
//! In order: parse the body (400, code 30), the merchant's signature and identity as in step 3
//! (401, code 63), our IIN (400, code 12); a repeated request (the same bytes) gets its stored
//! answer; then, under the order's and the account's locks (the authorization's lock order),
//! the merchant order's approval that is not reversed yet: none is 25, one whose amount,
//! currency or transaction id differ is 12, else 00 and the ledger books the mirrored postings,
//! frees the order and restores the day's usage. A transaction id of another merchant's order
//! is refused (403, code 63). The SIM's ratchet is not touched. The answer is signed by the
//! bank and leaves only after it is stored.

use mps_protocol::{Amount, Currency, Iin, MerchantId, OrderNo, TxnId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::attempt::Attempt;
use super::request::BadRequest;
use super::summary::About;
use super::{Authorizer, Dependency, Early, Refusal, Reply, approve};
use crate::ledger::{ReversalCommit, ReversalOutcome, ReversalReason};
use crate::ops::metrics::Stage;

/// A reversal request whose every field has been parsed.
#[derive(Debug, Clone)]
pub struct ReversalRequest {
    /// The merchant.
    pub merchant_id: MerchantId,
    /// The order to undo.
    pub order_no: OrderNo,
    /// The amount of the authorization.
    pub amount: Amount,
    /// Its currency.
    pub currency: Currency,
    /// The merchant's acquirer.
    pub acquirer_iin: Iin,
    /// The issuer (the gateway routes by it).
    pub issuer_iin: Iin,
    /// The authorization's transaction id, when the merchant has it.
    pub txn_id: Option<TxnId>,
    /// Why.
    pub reason: ReversalReason,
    /// The merchant's clock.
    pub merchant_time: OffsetDateTime,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReversal {
    merchant_id: String,
    order_no: String,
    amount: u64,
    currency: u16,
    acquirer_iin: String,
    issuer_iin: String,
    txn_id: Option<String>,
    reason: String,
    merchant_time: String,
}

/// Parses the exact body bytes.
pub fn parse(body: &[u8]) -> Result<ReversalRequest, BadRequest> {
    let raw: RawReversal =
        serde_json::from_slice(body).map_err(|e| BadRequest(format!("body is not a valid reversal request: {e}")))?;
    let field = |name: &str, e: &dyn std::fmt::Display| BadRequest(format!("{name}: {e}"));
    let txn_id = match raw.txn_id.as_deref() {
        None => None,
        Some(hex) => Some(TxnId::from_hex(hex).ok_or_else(|| BadRequest("txn_id: 32 hexadecimal digits".to_owned()))?),
    };
    Ok(ReversalRequest {
        merchant_id: MerchantId::new(&raw.merchant_id).map_err(|e| field("merchant_id", &e))?,
        order_no: OrderNo::new(&raw.order_no).map_err(|e| field("order_no", &e))?,
        amount: super::request::bookable_amount(raw.amount)?,
        currency: Currency::from_code(raw.currency).map_err(|e| field("currency", &e))?,
        acquirer_iin: Iin::new(&raw.acquirer_iin).map_err(|e| field("acquirer_iin", &e))?,
        issuer_iin: Iin::new(&raw.issuer_iin).map_err(|e| field("issuer_iin", &e))?,
        txn_id,
        reason: ReversalReason::parse(&raw.reason)
            .ok_or_else(|| BadRequest("reason: \"timeout\" or \"cancelled\"".to_owned()))?,
        merchant_time: OffsetDateTime::parse(&raw.merchant_time, &Rfc3339).map_err(|e| field("merchant_time", &e))?,
    })
}

#[derive(Serialize)]
struct AnswerBody<'a> {
    response_code: &'a str,
    reversal_id: String,
    txn_id: Option<String>,
    merchant_id: &'a str,
    order_no: &'a str,
    amount: u64,
    currency: u16,
    issuer_time: String,
}

fn answer_body(
    request: &ReversalRequest,
    outcome: ReversalOutcome,
    reversal_id: TxnId,
    now: OffsetDateTime,
) -> Vec<u8> {
    let body = AnswerBody {
        response_code: outcome.response_code().as_str(),
        reversal_id: reversal_id.to_hex(),
        txn_id: outcome.original().map(|t| t.to_hex()),
        merchant_id: request.merchant_id.as_str(),
        order_no: request.order_no.as_str(),
        amount: request.amount.minor(),
        currency: request.currency.code(),
        issuer_time: now.format(&Rfc3339).unwrap_or_default(),
    };
    // A struct of strings and integers always serializes.
    serde_json::to_vec(&body).unwrap_or_default()
}

impl Authorizer {
    /// The stored answer of the reversal whose request had SHA-256 `digest`, as a reply.
    async fn stored_reversal(&self, digest: [u8; 32], about: &About) -> Early<Option<Reply>> {
        let stored = self.ledger_call(self.ledger.stored_reversal(digest)).await?;
        Ok(stored.map(|stored| Reply::Processed {
            body: stored.response_body,
            signature: stored.response_signature,
            code: stored.response_code,
            about: Box::new(about.clone()),
        }))
    }

    /// Decides one reversal from the exact body bytes and the `x-jws-signature` header; like
    /// [`Authorizer::authorize`], it books only if `attempt`'s caller has not given up.
    pub async fn reverse(&self, body: &[u8], jws: Option<&str>, attempt: &Attempt) -> Reply {
        match self.run_reversal(body, jws, attempt).await {
            Ok(reply) | Err(reply) => reply,
        }
    }

    async fn run_reversal(&self, body: &[u8], jws: Option<&str>, attempt: &Attempt) -> Early<Reply> {
        let request = parse(body).map_err(|e| Reply::Refused(Refusal::Format(e)))?;
        self.timed(Stage::Jws, async { self.merchants.check(jws, body, &request.merchant_id) }).await.map_err(|e| {
            tracing::info!(reason = %e, "merchant signature on a reversal refused");
            Reply::Refused(Refusal::Signature(e))
        })?;
        if request.issuer_iin != self.settings.iin {
            return Err(Reply::Refused(Refusal::Format(BadRequest(format!(
                "issuer_iin {} is not this issuer",
                request.issuer_iin
            )))));
        }
        let digest: [u8; 32] = Sha256::digest(body).into();
        let about = About::order(request.merchant_id, request.amount, request.currency);
        if let Some(stored) = self.stored_reversal(digest, &about).await? {
            return Ok(stored);
        }
        let _order_guard = self.order_locks.lock(&(request.merchant_id, request.order_no)).await;
        // The same request may have been answered while this one waited for the lock.
        if let Some(stored) = self.stored_reversal(digest, &about).await? {
            return Ok(stored);
        }
        if let Some(txn_id) = request.txn_id {
            let named = self.ledger_call(self.ledger.transaction(&txn_id)).await?;
            if named.is_some_and(|t| t.transaction.merchant_id != request.merchant_id) {
                tracing::warn!(merchant = %request.merchant_id, "a reversal named another merchant's transaction");
                return Err(Reply::Refused(Refusal::OtherMerchant));
            }
        }
        let approval = self.ledger_call(self.ledger.active_approval(&request.merchant_id, &request.order_no)).await?;
        let _account_guard = match &approval {
            Some(approval) => Some(self.account_locks.lock(approval.transaction.account.expose()).await),
            None => None,
        };
        let outcome = match &approval {
            None => ReversalOutcome::NothingToReverse,
            Some(approval) => {
                let original = approval.transaction.txn_id;
                let same = approval.transaction.amount == request.amount
                    && approval.transaction.currency == request.currency
                    && request.txn_id.is_none_or(|named| named == original);
                if same { ReversalOutcome::Reversed { original } } else { ReversalOutcome::Mismatch { original } }
            }
        };
        let now = self.settings.clock.now();
        let reversal_id = approve::new_txn_id(now);
        let body = answer_body(&request, outcome, reversal_id, now);
        let signature = self.sign(&body).await?;
        let commit = ReversalCommit {
            reversal_id,
            request_digest: digest,
            merchant_id: request.merchant_id,
            order_no: request.order_no,
            amount: request.amount,
            currency: request.currency,
            reason: request.reason,
            outcome,
            business_day: self.settings.cutoff.business_day(now),
            created_at: now,
            response_body: body.clone(),
            response_signature: signature.clone(),
        };
        if !attempt.begin_booking() {
            tracing::info!("the caller gave up before the reversal was booked: nothing booked");
            return Err(Reply::Unavailable(Dependency::Deadline));
        }
        self.ledger_call(self.ledger.commit_reversal(commit)).await?;
        let code = outcome.response_code();
        tracing::info!(
            reversal_id = %reversal_id.to_hex(),
            merchant = %request.merchant_id,
            order = %request.order_no,
            code = code.as_str(),
            "reversal decided"
        );
        let about = match &approval {
            Some(approval) => about.with_account(&approval.transaction.account),
            None => about,
        };
        Ok(Reply::Processed { body, signature, code, about: Box::new(about) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> String {
        r#"{"merchant_id":"SHOP-1","order_no":"A-1","amount":1250,"currency":978,"acquirer_iin":"500001","issuer_iin":"400012","txn_id":null,"reason":"timeout","merchant_time":"2026-11-26T12:00:00Z"}"#.to_owned()
    }

    #[test]
    fn reversal_bodies_parse_and_malformed_ones_are_refused() {
        let request = parse(body().as_bytes()).unwrap();
        assert_eq!((request.amount.minor(), request.reason, request.txn_id), (1250, ReversalReason::Timeout, None));
        let with_txn = body().replace("null", "\"00112233445566778899aabbccddeeff\"");
        assert!(parse(with_txn.as_bytes()).unwrap().txn_id.is_some());
        for (from, to) in [
            ("null", "\"xyz\""),
            ("\"timeout\"", "\"bored\""),
            ("1250", "12.5"),
            ("\"400012\"", "\"40001\""),
            ("}", ",\"extra\":1}"),
        ] {
            assert!(parse(body().replace(from, to).as_bytes()).is_err(), "{from} -> {to}");
        }
    }
}
