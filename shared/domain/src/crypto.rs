//! Keyed hashing with the server secret: verification-code MACs and address tags.
//!
//! Codes are never stored: only HMAC-SHA256(code key, challenge_id ‖ 0 ‖ code). The
//! address tag (the Redis hash tag of everything that belongs to one address) is an HMAC
//! of the normalised e-mail, so key names never hold an address in clear. Each use gets
//! its own key derived from the secret with a distinct label.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::email::EmailAddress;
use crate::ids::{AddressTag, ChallengeId};

type HmacSha256 = Hmac<Sha256>;

/// The minimum length of `code_hmac_key`, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// The server secret (`code_hmac_key`), split into purpose keys.
#[derive(Clone)]
pub struct ServerKey {
    code_key: [u8; 32],
    tag_key: [u8; 32],
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKey(redacted)")
    }
}

/// The secret is too short to be a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("code_hmac_key must be at least {MIN_SECRET_LEN} bytes, got {0}")]
pub struct WeakSecret(pub usize);

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

impl ServerKey {
    /// Derives the purpose keys from the configured secret.
    ///
    /// # Errors
    /// A secret shorter than [`MIN_SECRET_LEN`] bytes.
    pub fn new(secret: &[u8]) -> Result<Self, WeakSecret> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(WeakSecret(secret.len()));
        }
        Ok(Self {
            code_key: hmac(secret, &[b"edge-auth/code-mac/v1"]),
            tag_key: hmac(secret, &[b"edge-auth/address-tag/v1"]),
        })
    }

    /// The stored form of a code for one challenge.
    pub fn code_mac(&self, challenge: &ChallengeId, code: &str) -> CodeMac {
        CodeMac(hmac(
            &self.code_key,
            &[challenge.as_str().as_bytes(), &[0], code.as_bytes()],
        ))
    }

    /// The tag shared by every key of one address.
    pub fn address_tag(&self, email: &EmailAddress) -> AddressTag {
        let full = hmac(&self.tag_key, &[email.as_str().as_bytes()]);
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&full[..8]);
        AddressTag::from_bytes(tag)
    }
}

/// HMAC of a verification code; compare only with [`CodeMac::matches`].
#[derive(Clone, PartialEq, Eq)]
pub struct CodeMac([u8; 32]);

impl std::fmt::Debug for CodeMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeMac(redacted)")
    }
}

impl CodeMac {
    /// Lower-case hex, the stored form.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Constant-time equality.
    pub fn matches(&self, other: &CodeMac) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ServerKey {
        ServerKey::new(&[7u8; 32]).expect("long enough")
    }

    #[test]
    fn a_short_secret_is_refused() {
        assert_eq!(ServerKey::new(b"short").expect_err("weak"), WeakSecret(5));
    }

    #[test]
    fn the_mac_binds_the_code_to_its_challenge() {
        let a = ChallengeId::parse("c_0011223344556677_AAAAAAAAAAAAAAAAAAAAAA").expect("id");
        let b = ChallengeId::parse("c_0011223344556677_AQEBAQEBAQEBAQEBAQEBAQ").expect("id");
        let k = key();
        assert!(k.code_mac(&a, "123456").matches(&k.code_mac(&a, "123456")));
        assert!(!k.code_mac(&a, "123456").matches(&k.code_mac(&a, "123457")));
        assert!(!k.code_mac(&a, "123456").matches(&k.code_mac(&b, "123456")));
        assert_eq!(k.code_mac(&a, "123456").to_hex().len(), 64);
    }

    #[test]
    fn the_tag_depends_on_the_secret_and_the_normalised_address() {
        let one = EmailAddress::parse("A@Example.com").expect("valid");
        let same = EmailAddress::parse("a@example.com").expect("valid");
        let other = EmailAddress::parse("b@example.com").expect("valid");
        let k = key();
        assert_eq!(k.address_tag(&one), k.address_tag(&same));
        assert_ne!(k.address_tag(&one), k.address_tag(&other));
        let k2 = ServerKey::new(&[8u8; 32]).expect("long enough");
        assert_ne!(k.address_tag(&one), k2.address_tag(&one));
    }
}
