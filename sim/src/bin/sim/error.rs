//! The `sim` binary's errors and how they reach the payer: one line saying what went wrong and
//! one saying what to do next. Every error exits non-zero and leaves the profile unchanged.

use mps_protocol::perso::PersoError;
use mps_sim::{AmountError, ProfileError, SimError};

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: refused, nothing changed.
pub const EXIT_ERROR: u8 = 1;
/// Exit status: the issuer's answer was read and declined the payment (the ratchet advanced).
pub const EXIT_DECLINED: u8 = 3;
/// Exit status: the packet was sent but no answer came back; the payment is still pending.
pub const EXIT_NO_ANSWER: u8 = 4;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The library refused.
    #[error(transparent)]
    Sim(#[from] SimError),
    /// Bad input from a flag, a file or stdin.
    #[error("{0}")]
    Input(String),
    /// Bad configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// A value is missing and there is no terminal to ask on.
    #[error("missing {flag}: there is no terminal to ask on")]
    Missing {
        /// The flag that supplies it.
        flag: &'static str,
    },
    /// Too many wrong answers at a prompt, or end of input.
    #[error("{0}")]
    Prompt(String),
    /// The payer declined at the confirmation.
    #[error("payment cancelled: nothing was built or stored")]
    Cancelled,
    /// Sending to the merchant failed.
    #[error("sending to the merchant failed: {0}")]
    Send(String),
}

impl From<ProfileError> for CliError {
    fn from(error: ProfileError) -> Self {
        Self::Sim(SimError::Profile(error))
    }
}

impl From<AmountError> for CliError {
    fn from(error: AmountError) -> Self {
        Self::Input(error.to_string())
    }
}

impl CliError {
    /// A bad input.
    pub fn input(message: String) -> Self {
        Self::Input(message)
    }

    /// A bad configuration.
    pub fn config(message: String) -> Self {
        Self::Config(message)
    }

    /// What the payer should do next.
    pub fn hint(&self) -> Option<String> {
        let hint = match self {
            Self::Sim(error) => return sim_hint(error),
            Self::Input(_) => "check the value and run the command again (`sim <command> --help` lists the flags)",
            Self::Config(_) => "fix the config file (see config/sim.example.toml) or the MPS_SIM__<KEY> variable",
            Self::Missing { flag } => {
                return Some(format!("pass {flag} on the command line, or run on a terminal to be asked for it"));
            }
            Self::Prompt(_) => "run the command again",
            Self::Cancelled => return None,
            Self::Send(_) => {
                "the payment is still pending: send it again with `sim resend --send <url>`, or print it with `sim resend`"
            }
        };
        Some(hint.to_owned())
    }
}

fn sim_hint(error: &SimError) -> Option<String> {
    let hint = match error {
        SimError::Profile(ProfileError::NotFound { .. }) => {
            "personalise first: `sim personalise --record <file> --transport-key-file <file>`, or point --profile (MPS_SIM_PROFILE) at your profile"
        }
        SimError::Profile(ProfileError::Json { .. } | ProfileError::Corrupt { .. } | ProfileError::TooLarge { .. }) => {
            "the profile file was changed outside `sim`; restore it from a backup or personalise again"
        }
        SimError::Profile(ProfileError::Busy { .. }) => {
            "another `sim` command is working on this profile: let it finish (or answer its prompt) and try again"
        }
        SimError::Profile(_) => "check the path and its permissions",
        SimError::Perso(PersoError::Unwrap) => {
            "check that the transport key (64 hex digits) is the one this record was wrapped under"
        }
        SimError::Perso(_) => "the record file is damaged or not a personalisation record: ask the bank for it again",
        SimError::KeySetExists { .. } => {
            "add --force to replace it (its pending payment is dropped and its counter starts again at 0)"
        }
        SimError::UnknownIssuer { .. } => "`sim status` lists the issuers this SIM holds key sets for",
        SimError::AccountExists { .. } | SimError::NicknameTaken { .. } => "`sim account list` shows the accounts",
        SimError::BadNickname => "choose another nickname",
        SimError::UnknownAccount { .. } | SimError::AmbiguousAccount { .. } => {
            "`sim account list` shows the accounts: choose one by nickname, last 4 digits or full number"
        }
        SimError::MerchantExists { .. } => "`sim merchant list` shows the merchants",
        SimError::UnknownMerchant { .. } => {
            "`sim merchant list` shows the merchants; add one with `sim merchant add --id <merchant id>`"
        }
        SimError::BadMerchantField { .. } => "check the value and run the command again",
        SimError::ListFull { .. } => "remove an entry first",
        SimError::Id(_) => "check the value and run the command again",
        SimError::ZeroAmount => "give an amount greater than zero",
        SimError::PaymentPending { .. } => {
            "read its answer with `sim answer <answer>`, or send the same packet again with `sim resend`"
        }
        SimError::CounterExhausted { .. } => "this key set is used up: the bank must personalise the SIM again",
        SimError::NoPendingPayment { .. } => "nothing to do: `sim status` shows the key sets",
        SimError::SeveralPending { .. } => "say which with --issuer <iin>",
        SimError::AnswerFormat(_) => "pass the 79-byte answer as base64, hex, @file or - (stdin)",
        SimError::AnswerAlreadyRead { .. } => "nothing to do: `sim status` shows the counter of each key set",
        SimError::AnswerCounterMismatch { .. } => "this answer is not for the pending payment: check it is the latest",
        SimError::AnswerRejected(_) => {
            "the answer was changed on the way or is not for this SIM; `sim resend` sends the packet again and the bank repeats its answer"
        }
        _ => return None,
    };
    Some(hint.to_owned())
}
