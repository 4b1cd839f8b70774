//! The device's Ed25519 public key, as sent by the client at confirm.
//!
//! Wire form: the raw 32-byte key in standard base64 with padding (44 characters).
//! Refused: other lengths, bad or non-canonical base64, encodings that are not a valid
//! point, non-canonical point encodings, and small-order ("weak") points, which would let
//! anyone forge signatures that verify.
//!
//! Two types: [`ClientPublicKey`] is a key checked in full (curve arithmetic included),
//! as confirm checks a new device's key before storing it; [`StoredPublicKey`] is a key
//! read back from a session record, which was checked that way before it was written, so
//! reading it back checks only its shape. The internal API reads a record on every call
//! and up to a page of them on a list: the full check was about a third of get-session's
//! own CPU time (in the guest, measured on our host).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::VerifyingKey;
use edge_auth_protocol::rules::{KeyFault, sound_public_key};

/// A validated device public key.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientPublicKey {
    key: VerifyingKey,
    encoded: String,
}

impl std::fmt::Debug for ClientPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientPublicKey({})", self.encoded)
    }
}

/// Why a key was refused; all map to the public `invalid_client_public_key`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicKeyError {
    /// With the decoder's error when it refused the text (`None`: it decoded, but not
    /// from the canonical text).
    #[error("client_public_key is not canonical standard base64 with padding")]
    NotBase64(#[source] Option<base64::DecodeError>),
    #[error("client_public_key must decode to exactly 32 bytes, got {0}")]
    WrongLength(usize),
    #[error("client_public_key is not a valid Ed25519 point")]
    NotAPoint,
    #[error("client_public_key is not canonically encoded")]
    NonCanonical,
    #[error("client_public_key is a small-order point")]
    SmallOrder,
}

impl ClientPublicKey {
    /// Parses and validates the wire form.
    ///
    /// # Errors
    /// See [`PublicKeyError`].
    pub fn parse(encoded: &str) -> Result<Self, PublicKeyError> {
        let bytes = canonical_bytes(encoded)?;
        let key = sound_public_key(&bytes).map_err(|fault| match fault {
            KeyFault::NotAPoint => PublicKeyError::NotAPoint,
            KeyFault::NonCanonical => PublicKeyError::NonCanonical,
            KeyFault::SmallOrder => PublicKeyError::SmallOrder,
        })?;
        Ok(Self {
            key,
            encoded: encoded.to_string(),
        })
    }

    /// The canonical wire form.
    pub fn as_str(&self) -> &str {
        &self.encoded
    }

    /// The key, for signature checks.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }
}

/// A device key as a session record holds it: checked in full as a [`ClientPublicKey`]
/// before it was stored, so [`StoredPublicKey::from_store`] checks only its shape.
/// Nothing verifies a signature with it: the gateway verifies a command with the key the
/// command carries (a [`ClientPublicKey`]), and Redis compares that key's text with the
/// one stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPublicKey(String);

impl StoredPublicKey {
    /// Reads a stored key: canonical standard base64 of 32 bytes. No curve arithmetic.
    ///
    /// # Errors
    /// [`PublicKeyError::NotBase64`] or [`PublicKeyError::WrongLength`]: the store holds
    /// something confirm never wrote.
    pub fn from_store(encoded: &str) -> Result<Self, PublicKeyError> {
        canonical_bytes(encoded)?;
        Ok(Self(encoded.to_string()))
    }

    /// The canonical wire form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&ClientPublicKey> for StoredPublicKey {
    fn from(key: &ClientPublicKey) -> Self {
        Self(key.encoded.clone())
    }
}

/// The 32 bytes of canonical standard base64 with padding.
fn canonical_bytes(encoded: &str) -> Result<[u8; 32], PublicKeyError> {
    // The STANDARD engine requires canonical padding and rejects non-zero trailing bits.
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|e| PublicKeyError::NotBase64(Some(e)))?;
    if STANDARD.encode(&bytes) != encoded {
        return Err(PublicKeyError::NotBase64(None));
    }
    <[u8; 32]>::try_from(bytes).map_err(|bytes| PublicKeyError::WrongLength(bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn encode(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    #[test]
    fn a_real_key_is_accepted() {
        let key = SigningKey::from_bytes(&[42u8; 32]).verifying_key();
        let encoded = encode(key.as_bytes());
        assert_eq!(
            ClientPublicKey::parse(&encoded).expect("valid").as_str(),
            encoded
        );
    }

    #[test]
    fn bad_encodings_are_refused() {
        let key = SigningKey::from_bytes(&[42u8; 32]).verifying_key();
        let good = encode(key.as_bytes());
        let unpadded = good.trim_end_matches('=').to_string();
        let url_safe = base64::engine::general_purpose::URL_SAFE.encode([0xfb; 32]);
        for bad in [unpadded.as_str(), url_safe.as_str(), "not base64!"] {
            assert!(
                matches!(
                    ClientPublicKey::parse(bad),
                    Err(PublicKeyError::NotBase64(Some(_)))
                ),
                "{bad}: the decoder's error is kept"
            );
        }
        assert_eq!(
            ClientPublicKey::parse(""),
            Err(PublicKeyError::WrongLength(0))
        );
        assert_eq!(
            ClientPublicKey::parse(&encode(&[1u8; 31])),
            Err(PublicKeyError::WrongLength(31))
        );
        // Non-zero trailing bits: the last character differs from the canonical one.
        let mut chars: Vec<char> = good.chars().collect();
        let last = chars.len() - 2;
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let index = alphabet.find(chars[last]).expect("base64 char");
        chars[last] = alphabet.chars().nth(index ^ 1).expect("in range");
        let non_canonical: String = chars.into_iter().collect();
        assert!(matches!(
            ClientPublicKey::parse(&non_canonical),
            Err(PublicKeyError::NotBase64(Some(_)))
        ));
    }

    #[test]
    fn a_stored_key_is_read_back_as_it_was_stored() {
        let key = SigningKey::from_bytes(&[42u8; 32]).verifying_key();
        let checked = ClientPublicKey::parse(&encode(key.as_bytes())).expect("valid");
        let stored = StoredPublicKey::from_store(checked.as_str()).expect("its shape holds");
        assert_eq!(stored, StoredPublicKey::from(&checked));
        assert_eq!(stored.as_str(), checked.as_str());
    }

    #[test]
    fn a_stored_key_of_the_wrong_shape_is_refused() {
        let good = encode(
            SigningKey::from_bytes(&[42u8; 32])
                .verifying_key()
                .as_bytes(),
        );
        let unpadded = good.trim_end_matches('=');
        assert!(matches!(
            StoredPublicKey::from_store(unpadded),
            Err(PublicKeyError::NotBase64(Some(_)))
        ));
        assert_eq!(
            StoredPublicKey::from_store(""),
            Err(PublicKeyError::WrongLength(0))
        );
        assert_eq!(
            StoredPublicKey::from_store(&encode(&[7u8; 33])),
            Err(PublicKeyError::WrongLength(33))
        );
    }

    #[test]
    fn small_order_points_are_refused() {
        // The identity point (y = 1) has order 1.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            ClientPublicKey::parse(&encode(&identity)),
            Err(PublicKeyError::SmallOrder)
        );
    }

    #[test]
    fn non_canonical_point_encodings_are_refused() {
        // y = p + 1 (p = 2^255 - 19) encodes the identity point non-canonically.
        let mut bytes = [0xffu8; 32];
        bytes[0] = 0xee;
        bytes[31] = 0x7f;
        assert_eq!(
            ClientPublicKey::parse(&encode(&bytes)),
            Err(PublicKeyError::NonCanonical)
        );
    }
}
