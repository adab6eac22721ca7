//! Step 9 of the decision: the payment password. The HSM turned the clear password into its
//! verification value (HMAC-SHA256 under mps-pvk) right after decryption and zeroized it; here
//! only the two 32-byte values are compared, in constant time. Consecutive wrong tries are
//! counted; the last allowed one locks payments (75) until the bank resets the count.

use mps_protocol::PasswordVerificationValue;
use mps_protocol::ResponseCode;

use crate::ledger::{AccountRecord, PasswordEffect};

/// The verdict of step 9 and what it does to the account's try counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordVerdict {
    /// Err with 55 or 75 when refused.
    pub result: Result<(), ResponseCode>,
    /// What the commit does to the try counter.
    pub effect: PasswordEffect,
}

/// Step 9, first half: payments from a locked account are refused (75) whatever the password.
/// The ledger re-checks this at booking time.
pub fn unlocked(account: &AccountRecord) -> Result<(), ResponseCode> {
    if account.password_locked { Err(ResponseCode::PasswordTriesExceeded) } else { Ok(()) }
}

/// Step 9.
pub fn check(
    account: &AccountRecord,
    received_verification_value: &PasswordVerificationValue,
    tries_max: u32,
) -> PasswordVerdict {
    if let Err(code) = unlocked(account) {
        return PasswordVerdict { result: Err(code), effect: PasswordEffect::None };
    }
    let matches = account.password_verification_value.matches(received_verification_value);
    if matches {
        let effect = if account.password_failures > 0 { PasswordEffect::Reset } else { PasswordEffect::None };
        return PasswordVerdict { result: Ok(()), effect };
    }
    let failures = account.password_failures.saturating_add(1);
    let locked = failures >= tries_max;
    PasswordVerdict {
        result: Err(if locked { ResponseCode::PasswordTriesExceeded } else { ResponseCode::IncorrectPassword }),
        effect: PasswordEffect::Failure { tries_max },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::testing::account_record;

    const TRIES_MAX: u32 = 3;

    fn right() -> PasswordVerificationValue {
        PasswordVerificationValue::new([0; 32])
    }

    fn wrong() -> PasswordVerificationValue {
        PasswordVerificationValue::new([0x5a; 32])
    }

    fn with_failures(failures: u32) -> AccountRecord {
        AccountRecord { password_failures: failures, ..account_record(1_000) }
    }

    #[test]
    fn a_right_password_passes_and_clears_earlier_wrong_tries() {
        let verdict = check(&with_failures(0), &right(), TRIES_MAX);
        assert_eq!(verdict, PasswordVerdict { result: Ok(()), effect: PasswordEffect::None }, "nothing to clear");
        let verdict = check(&with_failures(2), &right(), TRIES_MAX);
        assert_eq!(verdict, PasswordVerdict { result: Ok(()), effect: PasswordEffect::Reset });
    }

    #[test]
    fn wrong_passwords_are_counted_and_the_last_allowed_try_locks() {
        for failures in [0, 1] {
            let verdict = check(&with_failures(failures), &wrong(), TRIES_MAX);
            let counted = PasswordEffect::Failure { tries_max: TRIES_MAX };
            assert_eq!(verdict, PasswordVerdict { result: Err(ResponseCode::IncorrectPassword), effect: counted });
        }
        let verdict = check(&with_failures(2), &wrong(), TRIES_MAX);
        assert_eq!(verdict.result, Err(ResponseCode::PasswordTriesExceeded), "the third wrong try locks");
        assert_eq!(verdict.effect, PasswordEffect::Failure { tries_max: TRIES_MAX });
    }

    #[test]
    fn a_locked_account_is_refused_whatever_the_password() {
        let locked = AccountRecord { password_locked: true, ..with_failures(3) };
        assert_eq!(unlocked(&locked), Err(ResponseCode::PasswordTriesExceeded));
        assert_eq!(unlocked(&with_failures(2)), Ok(()));
        let verdict = check(&locked, &right(), TRIES_MAX);
        assert_eq!(
            verdict,
            PasswordVerdict { result: Err(ResponseCode::PasswordTriesExceeded), effect: PasswordEffect::None }
        );
    }
}
