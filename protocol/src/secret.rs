//! One wrapper for every value that must never be seen in logs, errors or panics: its Debug
//! prints only the type's name, and it is zeroized when dropped. Domain types that carry a
//! secret (a password verification value, a holder's name) are built on it instead of writing
//! their own redacting Debug by hand.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// A value that is redacted in Debug output and zeroized on drop. Reading it needs an explicit
/// [`Secret::expose`], which is easy to find in a review.
pub struct Secret<T: Zeroize>(T);

impl<T: Zeroize> Secret<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> Drop for Secret<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<T: Zeroize + Clone> Clone for Secret<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret<{}>(<redacted>)", std::any::type_name::<T>())
    }
}

impl<const N: usize> Secret<[u8; N]> {
    /// Compares in constant time.
    pub fn ct_eq(&self, other: &[u8; N]) -> bool {
        self.0.ct_eq(other).into()
    }
}

/// Equality of byte secrets is compared in constant time, so that deriving `PartialEq` on a
/// record that holds one cannot leak how many bytes matched.
impl<const N: usize> PartialEq for Secret<[u8; N]> {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(&other.0)
    }
}

impl<const N: usize> Eq for Secret<[u8; N]> {}

impl PartialEq for Secret<String> {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for Secret<String> {}

/// Length of a payment password verification value.
pub const PASSWORD_VERIFICATION_VALUE_LEN: usize = 32;

/// HMAC-SHA256(mps-pvk, account BCD || password), made in the HSM: what the bank stores and
/// compares instead of the password. Compared in constant time; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordVerificationValue(Secret<[u8; PASSWORD_VERIFICATION_VALUE_LEN]>);

impl PasswordVerificationValue {
    /// From the HSM's 32 bytes.
    pub fn new(bytes: [u8; PASSWORD_VERIFICATION_VALUE_LEN]) -> Self {
        Self(Secret::new(bytes))
    }

    /// The bytes, to store them.
    pub fn expose(&self) -> &[u8; PASSWORD_VERIFICATION_VALUE_LEN] {
        self.0.expose()
    }

    /// Whether `other` is the same value, in constant time.
    pub fn matches(&self, other: &Self) -> bool {
        self.0.ct_eq(other.0.expose())
    }
}

impl fmt::Debug for PasswordVerificationValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordVerificationValue(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_equal_exactly_when_their_values_are() {
        assert!(Secret::new([1u8, 2, 3]) == Secret::new([1u8, 2, 3]));
        assert!(Secret::new([1u8, 2, 3]) != Secret::new([1u8, 2, 4]));
        assert!(Secret::new("2468".to_owned()) == Secret::new("2468".to_owned()));
        assert!(Secret::new("2468".to_owned()) != Secret::new("2469".to_owned()));
        assert!(Secret::new("2468".to_owned()) != Secret::new("24680".to_owned()));
        let value = PasswordVerificationValue::new([9; 32]);
        assert_eq!(value.expose(), &[9; 32]);
        assert!(value.matches(&PasswordVerificationValue::new([9; 32])));
        assert!(!value.matches(&PasswordVerificationValue::new([8; 32])));
    }

    #[test]
    fn secrets_never_print_and_compare_by_value() {
        let secret = Secret::new([7u8; 32]);
        assert_eq!(format!("{secret:?}"), "Secret<[u8; 32]>(<redacted>)");
        assert!(secret.ct_eq(&[7; 32]) && !secret.ct_eq(&[8; 32]));
        assert_eq!(secret.clone(), secret);
        let name = Secret::new("Li Xi".to_owned());
        assert!(!format!("{name:?}").contains("Li"));
        assert_eq!(name.expose(), "Li Xi");
        let value = PasswordVerificationValue::new([1; 32]);
        assert_eq!(format!("{value:?}"), "PasswordVerificationValue(<redacted>)");
        assert!(value.matches(&PasswordVerificationValue::new([1; 32])));
        assert!(!value.matches(&PasswordVerificationValue::new([2; 32])));
    }
}
