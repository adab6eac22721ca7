//! The raw HSM bound: the bank's own HSM pool (its token, its pool size, opened from its authz
//! configuration) doing only what one authorization asks of it, `mps_hsm::bench::authorization`
//! (open_session + seal_answer + sign_es256), from a few callers per pool thread. The packet is
//! a real payer's: a copy of its SIM builds its next session's packet, and the bank's ledger
//! gives the wrapped chain key and RSN, so every MAC check really passes.

use std::time::Duration;

use mps_authz::ledger::Ledger;
use mps_hsm::Hsm;
use mps_hsm::bench::{self, AuthorizationInput};
use mps_protocol::wire::PayerPacket;
use mps_protocol::{OrderNo, Password};
use mps_sim::{PaymentRequest, Profile};

use super::{Bound, BoundError};
use crate::drive::exchange::Context;
use crate::provision::Payer;

/// Concurrent callers per HSM pool thread (keeps every worker's queue non-empty, as in
/// `mps-hsm bench`).
pub const CALLERS_PER_POOL_THREAD: usize = 4;

/// The input of the HSM bound from `payer`'s SIM (a copy of it: the payer itself is left as
/// it was) and its record in `ledger`. Call before the run, while the SIM's record and the SIM
/// agree.
pub async fn fixture(payer: &Payer, ledger: &Ledger, context: &Context) -> Result<AuthorizationInput, BoundError> {
    let fail = |what: String| BoundError::Hsm(what);
    let record = ledger
        .sim(&payer.sim_id)
        .await
        .map_err(|e| fail(format!("reading SIM {} from the ledger: {e}", payer.sim_id)))?
        .ok_or_else(|| fail(format!("SIM {} is not in the ledger", payer.sim_id)))?;
    let mut copy = copy_of(&payer.profile)?;
    let request = PaymentRequest {
        account: payer.account.clone(),
        merchant_id: context.merchant.id,
        order_no: OrderNo::new("BOUND-HSM-1").map_err(|e| fail(e.to_string()))?,
        amount: context.amount,
        currency: context.currency,
    };
    let password: &Password = &context.password;
    let packet: PayerPacket =
        copy.prepare_payment(&request, password, rand::random()).map_err(|e| fail(format!("the SIM copy: {e}")))?;
    Ok(AuthorizationInput { wrapped: record.wrapped_chain_key, rsn: record.next_rsn, packet })
}

/// A copy of a profile, through the sim library's own file format (in a private temp dir).
fn copy_of(profile: &Profile) -> Result<Profile, BoundError> {
    let fail = |what: String| BoundError::Hsm(format!("copying a SIM profile: {what}"));
    let dir = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let path = dir.path().join("sim-profile.json");
    profile.save(&path).map_err(|e| fail(e.to_string()))?;
    Profile::load(&path).map_err(|e| fail(e.to_string()))
}

/// Runs the authorization's HSM calls on `hsm` for `time` from `callers` tasks.
pub async fn measure(hsm: &Hsm, input: AuthorizationInput, callers: usize, time: Duration) -> Bound {
    let hsm = hsm.clone();
    let input = std::sync::Arc::new(input);
    let measured = bench::measure(callers, time, move |_caller| {
        let (hsm, input) = (hsm.clone(), std::sync::Arc::clone(&input));
        async move { bench::authorization(&hsm, &input).await }
    })
    .await;
    Bound::new("open_session + seal_answer + sign_es256 on the bank's token", callers, measured)
}
