//! Keyed hashing with the server secret: verification-code MACs and address tags.
//!
//! Codes are never stored: only HMAC-SHA256(code key, challenge_id ‖ 0 ‖ code). The
//! address tag (the Redis hash tag of everything that belongs to one address) is an HMAC
//! of the normalised e-mail, so key names never hold an address in clear. Each use gets
//! its own key derived from a secret with a distinct label.
//!
//! # Rotation
//! The two uses rotate differently. A code lives minutes, so the code key can change
//! at any time: during a rotation the previous secret (`code_hmac_previous_key`) still
//! checks the codes sent before the switch. An address tag lives as long as the
//! address's data, so the tag key must never change: `address_tag_key` pins it (it
//! defaults to `code_hmac_key`, so a deployment sets it to its first `code_hmac_key`
//! before the first rotation and the tags stay what they were).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::email::EmailAddress;
use crate::ids::{AddressTag, ChallengeId};

type HmacSha256 = Hmac<Sha256>;

/// The minimum length of each secret (`code_hmac_key`, `code_hmac_previous_key`,
/// `address_tag_key`), in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// The server secrets, as purpose keys: the code key (and, during a rotation, the
/// previous one) and the tag key.
#[derive(Clone)]
pub struct ServerKey {
    code_key: [u8; 32],
    previous_code_key: Option<[u8; 32]>,
    tag_key: [u8; 32],
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKey(redacted)")
    }
}

/// A secret is too short to be a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name} must be at least {MIN_SECRET_LEN} bytes, got {len}")]
pub struct WeakSecret {
    /// The variable that holds it.
    pub name: &'static str,
    pub len: usize,
}

fn checked<'a>(name: &'static str, secret: &'a [u8]) -> Result<&'a [u8], WeakSecret> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(WeakSecret {
            name,
            len: secret.len(),
        });
    }
    Ok(secret)
}

fn code_key(secret: &[u8]) -> [u8; 32] {
    hmac(secret, &[b"edge-auth/code-mac/v1"])
}

fn code_mac(key: &[u8; 32], challenge: &ChallengeId, code: &str) -> CodeMac {
    CodeMac(hmac(
        key,
        &[challenge.as_str().as_bytes(), &[0], code.as_bytes()],
    ))
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

impl ServerKey {
    /// Derives every purpose key from one secret (`code_hmac_key`, nothing else set).
    ///
    /// # Errors
    /// A secret shorter than [`MIN_SECRET_LEN`] bytes.
    pub fn new(secret: &[u8]) -> Result<Self, WeakSecret> {
        Self::from_secrets(secret, None, None)
    }

    /// Derives the purpose keys from a deployment's secrets: `code` (`code_hmac_key`)
    /// keys new code MACs; `previous` (`code_hmac_previous_key`, during a rotation) keys
    /// the MACs of codes sent before it; `tag` (`address_tag_key`) keys the address tags,
    /// `code` when absent.
    ///
    /// # Errors
    /// A secret shorter than [`MIN_SECRET_LEN`] bytes, named by its variable.
    pub fn from_secrets(
        code: &[u8],
        previous: Option<&[u8]>,
        tag: Option<&[u8]>,
    ) -> Result<Self, WeakSecret> {
        let code = checked("code_hmac_key", code)?;
        let previous = previous
            .map(|p| checked("code_hmac_previous_key", p))
            .transpose()?;
        let tag = tag.map(|t| checked("address_tag_key", t)).transpose()?;
        Ok(Self {
            code_key: code_key(code),
            previous_code_key: previous.map(code_key),
            tag_key: hmac(tag.unwrap_or(code), &[b"edge-auth/address-tag/v1"]),
        })
    }

    /// The stored form of a code for one challenge.
    pub fn code_mac(&self, challenge: &ChallengeId, code: &str) -> CodeMac {
        code_mac(&self.code_key, challenge, code)
    }

    /// The stored form of the code under the previous code key, while a rotation keeps
    /// one: what a challenge made before the switch holds.
    pub fn previous_code_mac(&self, challenge: &ChallengeId, code: &str) -> Option<CodeMac> {
        self.previous_code_key
            .map(|key| code_mac(&key, challenge, code))
    }

    /// The tag shared by every key of one address.
    pub fn address_tag(&self, email: &EmailAddress) -> AddressTag {
        self.address_mac(email).tag()
    }

    /// The address's whole keyed MAC, of which its tag is the start: what tells two
    /// addresses apart that share a tag.
    pub fn address_mac(&self, email: &EmailAddress) -> AddressMac {
        AddressMac(hmac(&self.tag_key, &[email.as_str().as_bytes()]))
    }
}

/// The keyed MAC of an e-mail address (HMAC-SHA-256 under the tag key). Its first 8 bytes
/// are the address's [`AddressTag`]: 64 bits, so among very many addresses two may share a
/// tag (a chance of about 3·10⁻⁶ among 10^7 addresses), and the whole MAC, stored beside the
/// address's user, keeps one from logging in as the other.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AddressMac([u8; 32]);

impl std::fmt::Debug for AddressMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AddressMac(redacted)")
    }
}

impl AddressMac {
    /// Lower-case hex, the stored form.
    pub fn to_hex(&self) -> String {
        edge_auth_protocol::canonical::hex(&self.0)
    }

    /// The address's tag: the MAC's first 8 bytes.
    pub fn tag(&self) -> AddressTag {
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&self.0[..8]);
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
        edge_auth_protocol::canonical::hex(&self.0)
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
        assert_eq!(
            ServerKey::new(b"short").expect_err("weak"),
            WeakSecret {
                name: "code_hmac_key",
                len: 5
            }
        );
        let weak_previous = ServerKey::from_secrets(&[7; 32], Some(b"short"), None);
        assert_eq!(
            weak_previous.expect_err("weak").name,
            "code_hmac_previous_key"
        );
        let weak_tag = ServerKey::from_secrets(&[7; 32], None, Some(b"short"));
        assert_eq!(weak_tag.expect_err("weak").name, "address_tag_key");
    }

    #[test]
    fn after_a_rotation_the_previous_key_makes_the_old_mac_and_tags_follow_the_tag_key() {
        let id = ChallengeId::parse("c_0011223344556677_AAAAAAAAAAAAAAAAAAAAAA").expect("id");
        let email = EmailAddress::parse("ada@example.com").expect("valid");
        let old = key();
        let rotated =
            ServerKey::from_secrets(&[9; 32], Some(&[7; 32]), Some(&[7; 32])).expect("long enough");
        assert!(
            !rotated
                .code_mac(&id, "123456")
                .matches(&old.code_mac(&id, "123456"))
        );
        let previous = rotated.previous_code_mac(&id, "123456").expect("kept");
        assert!(previous.matches(&old.code_mac(&id, "123456")));
        assert_eq!(rotated.address_tag(&email), old.address_tag(&email));
        assert!(old.previous_code_mac(&id, "123456").is_none());

        let unpinned = ServerKey::from_secrets(&[9; 32], Some(&[7; 32]), None).expect("ok");
        assert_ne!(
            unpinned.address_tag(&email),
            old.address_tag(&email),
            "without address_tag_key the tags follow code_hmac_key"
        );
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

    #[test]
    fn the_tag_is_the_start_of_the_address_mac_which_stays_out_of_debug_output() {
        let k = key();
        let ada = EmailAddress::parse("ada@example.com").expect("valid");
        let mac = k.address_mac(&ada);
        assert_eq!(mac.tag(), k.address_tag(&ada));
        let hex = mac.to_hex();
        assert_eq!(hex.len(), 64);
        assert!(hex.starts_with(&mac.tag().to_hex()));
        assert_eq!(format!("{mac:?}"), "AddressMac(redacted)");
        let bea = EmailAddress::parse("bea@example.com").expect("valid");
        assert_ne!(k.address_mac(&bea), mac);
    }
}
