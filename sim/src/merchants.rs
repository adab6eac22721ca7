//! The merchants the payer pays: merchant ids (ISO 8583 field 42) with an optional name and
//! the URL where the merchant's server takes payer packets (`sim pay --send`).

use mps_protocol::MerchantId;
use serde::{Deserialize, Serialize};

use crate::error::SimError;
use crate::profile::Profile;

/// Longest merchant name, in characters.
pub const NAME_CHARS_MAX: usize = 64;
/// Longest merchant URL, in bytes.
pub const URL_BYTES_MAX: usize = 512;
/// Most merchants one profile holds.
pub const MERCHANTS_MAX: usize = 256;

/// A merchant the payer can pay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantEntry {
    /// The merchant id as on the packet.
    pub merchant_id: MerchantId,
    /// A display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where the merchant's server takes payer packets (http:// or https://).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl MerchantEntry {
    /// Checks a name and URL and builds an entry.
    pub fn new(merchant_id: MerchantId, name: Option<String>, url: Option<String>) -> Result<Self, SimError> {
        if let Some(name) = &name {
            check_name(name)?;
        }
        if let Some(url) = &url {
            check_url(url)?;
        }
        Ok(Self { merchant_id, name, url })
    }

    /// "Corner coffee (COFFEE-SHOP-01)" or "COFFEE-SHOP-01".
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("{name} ({})", self.merchant_id),
            None => self.merchant_id.to_string(),
        }
    }
}

fn check_name(name: &str) -> Result<(), SimError> {
    let count = name.chars().count();
    if !(1..=NAME_CHARS_MAX).contains(&count) || name.trim().is_empty() {
        return Err(SimError::BadMerchantField { field: "name", reason: "must be 1 to 64 characters, not blank" });
    }
    if name.chars().any(char::is_control) {
        return Err(SimError::BadMerchantField { field: "name", reason: "must not contain control characters" });
    }
    Ok(())
}

fn check_url(url: &str) -> Result<(), SimError> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
    match rest {
        None => Err(SimError::BadMerchantField { field: "url", reason: "must start with http:// or https://" }),
        Some(_) if url.len() > URL_BYTES_MAX => {
            Err(SimError::BadMerchantField { field: "url", reason: "must be at most 512 bytes" })
        }
        Some(rest) if rest.is_empty() || !url.bytes().all(|b| b.is_ascii_graphic()) => {
            Err(SimError::BadMerchantField { field: "url", reason: "must name a host and contain no spaces" })
        }
        Some(_) => Ok(()),
    }
}

/// Invariants of the merchant list: unique ids, valid names and URLs.
pub(crate) fn check(merchants: &[MerchantEntry]) -> Result<(), String> {
    if merchants.len() > MERCHANTS_MAX {
        return Err(format!("more than {MERCHANTS_MAX} merchants"));
    }
    for (index, entry) in merchants.iter().enumerate() {
        MerchantEntry::new(entry.merchant_id, entry.name.clone(), entry.url.clone())
            .map_err(|e| format!("merchant {}: {e}", entry.merchant_id))?;
        if merchants[index + 1..].iter().any(|m| m.merchant_id == entry.merchant_id) {
            return Err(format!("merchant {} is listed twice", entry.merchant_id));
        }
    }
    Ok(())
}

impl Profile {
    /// Registers a merchant.
    pub fn add_merchant(&mut self, entry: MerchantEntry) -> Result<(), SimError> {
        if self.merchants.iter().any(|m| m.merchant_id == entry.merchant_id) {
            return Err(SimError::MerchantExists { merchant_id: entry.merchant_id.to_string() });
        }
        if self.merchants.len() >= MERCHANTS_MAX {
            return Err(SimError::ListFull { what: "merchants", max: MERCHANTS_MAX });
        }
        // Re-check: entries built by hand (public fields) must obey the same rules.
        let entry = MerchantEntry::new(entry.merchant_id, entry.name, entry.url)?;
        self.merchants.push(entry);
        Ok(())
    }

    /// The registered merchants, in the order they were added.
    pub fn merchants(&self) -> &[MerchantEntry] {
        &self.merchants
    }

    /// Finds a merchant by id.
    pub fn find_merchant(&self, merchant_id: &str) -> Result<&MerchantEntry, SimError> {
        self.merchants
            .iter()
            .find(|m| m.merchant_id.as_str() == merchant_id)
            .ok_or_else(|| SimError::UnknownMerchant { merchant_id: merchant_id.to_owned() })
    }

    /// Removes a merchant by id.
    pub fn remove_merchant(&mut self, merchant_id: &str) -> Result<MerchantEntry, SimError> {
        let index = self
            .merchants
            .iter()
            .position(|m| m.merchant_id.as_str() == merchant_id)
            .ok_or_else(|| SimError::UnknownMerchant { merchant_id: merchant_id.to_owned() })?;
        Ok(self.merchants.remove(index))
    }
}
