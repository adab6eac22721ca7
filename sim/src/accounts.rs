//! The payer's accounts: which account numbers this SIM pays from, each at one issuer whose key
//! set the SIM holds. Shown masked (first 6, last 4) everywhere but in the profile file.

use mps_protocol::{Account, Iin};
use serde::{Deserialize, Serialize};

use crate::error::SimError;
use crate::profile::Profile;

/// Longest nickname, in characters.
pub const NICKNAME_CHARS_MAX: usize = 32;
/// Most accounts one profile holds.
pub const ACCOUNTS_MAX: usize = 64;

/// An account the payer can pay from. Debug shows the number masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountEntry {
    /// The account number.
    #[serde(with = "crate::serde_hex::account")]
    pub account: Account,
    /// The issuer that holds the account.
    pub iin: Iin,
    /// A name the payer chose, for choosing the account at the prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nickname: Option<String>,
}

impl AccountEntry {
    /// "nickname (400012******1234 at 400012)" or "400012******1234 at 400012".
    pub fn label(&self) -> String {
        match &self.nickname {
            Some(nickname) => format!("{nickname} ({} at issuer {})", self.account.masked(), self.iin),
            None => format!("{} at issuer {}", self.account.masked(), self.iin),
        }
    }
}

fn nickname_is_valid(nickname: &str) -> bool {
    let count = nickname.chars().count();
    (1..=NICKNAME_CHARS_MAX).contains(&count)
        && nickname.chars().all(|c| !c.is_control())
        && nickname.trim() == nickname
        && !nickname.chars().all(|c| c.is_ascii_digit())
}

/// Invariants of the account list: unique numbers and nicknames, each at a known issuer.
pub(crate) fn check(profile: &Profile) -> Result<(), String> {
    if profile.accounts.len() > ACCOUNTS_MAX {
        return Err(format!("more than {ACCOUNTS_MAX} accounts"));
    }
    for (index, entry) in profile.accounts.iter().enumerate() {
        if !profile.key_sets.contains_key(&entry.iin) {
            return Err(format!("account {} belongs to issuer {} without a key set", entry.account, entry.iin));
        }
        if let Some(nickname) = &entry.nickname
            && !nickname_is_valid(nickname)
        {
            return Err(format!("account {} has an invalid nickname", entry.account));
        }
        for other in &profile.accounts[index + 1..] {
            if other.account == entry.account {
                return Err(format!("account {} is listed twice", entry.account));
            }
            if other.nickname.is_some() && other.nickname == entry.nickname {
                return Err(format!("two accounts are called {:?}", other.nickname));
            }
        }
    }
    Ok(())
}

impl Profile {
    /// Registers an account at an issuer whose key set this SIM holds.
    pub fn add_account(&mut self, account: Account, iin: Iin, nickname: Option<String>) -> Result<(), SimError> {
        if !self.key_sets.contains_key(&iin) {
            return Err(SimError::UnknownIssuer { iin });
        }
        if self.accounts.iter().any(|e| e.account == account) {
            return Err(SimError::AccountExists { account: account.masked() });
        }
        if let Some(nickname) = &nickname {
            if !nickname_is_valid(nickname) {
                return Err(SimError::BadNickname);
            }
            if self.accounts.iter().any(|e| e.nickname.as_deref() == Some(nickname.as_str())) {
                return Err(SimError::NicknameTaken { nickname: nickname.clone() });
            }
        }
        if self.accounts.len() >= ACCOUNTS_MAX {
            return Err(SimError::ListFull { what: "accounts", max: ACCOUNTS_MAX });
        }
        self.accounts.push(AccountEntry { account, iin, nickname });
        Ok(())
    }

    /// The registered accounts, in the order they were added.
    pub fn accounts(&self) -> &[AccountEntry] {
        &self.accounts
    }

    /// Finds an account by its full number, its nickname, or its last 4 digits when those are
    /// unique.
    pub fn find_account(&self, selector: &str) -> Result<&AccountEntry, SimError> {
        let index = self.account_index(selector)?;
        Ok(&self.accounts[index])
    }

    /// Removes an account (see [`Profile::find_account`] for the selector).
    pub fn remove_account(&mut self, selector: &str) -> Result<AccountEntry, SimError> {
        let index = self.account_index(selector)?;
        Ok(self.accounts.remove(index))
    }

    fn account_index(&self, selector: &str) -> Result<usize, SimError> {
        // Never echo a full account number back: show it masked if it is one.
        let shown = match Account::new(selector) {
            Ok(account) => account.masked(),
            Err(_) => selector.to_owned(),
        };
        if let Some(index) = self.accounts.iter().position(|e| e.account.expose() == selector) {
            return Ok(index);
        }
        if let Some(index) = self.accounts.iter().position(|e| e.nickname.as_deref() == Some(selector)) {
            return Ok(index);
        }
        if selector.len() == 4 && selector.bytes().all(|b| b.is_ascii_digit()) {
            let matches: Vec<usize> =
                (0..self.accounts.len()).filter(|&i| self.accounts[i].account.expose().ends_with(selector)).collect();
            match matches.as_slice() {
                [index] => return Ok(*index),
                [] => {}
                several => {
                    let candidates =
                        several.iter().map(|&i| self.accounts[i].account.masked()).collect::<Vec<_>>().join(", ");
                    return Err(SimError::AmbiguousAccount { selector: shown, candidates });
                }
            }
        }
        Err(SimError::UnknownAccount { selector: shown })
    }
}
