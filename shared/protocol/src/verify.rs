//! A client's check of a signed response: the key named by `key_id` must be in the
//! gateway's JWKS, the signature must verify (strictly) over the canonical bytes, the
//! payload must match its hash, and the response must be bound to the request the client
//! sent (`request_sha256`) and carry its request id. And a client's check of a newly
//! fetched JWKS against the one it pinned ([`check_key_set`]).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, VerifyingKey};

use crate::PROTOCOL_VERSION;
use crate::canonical::{event_bytes, key_set_bytes, response_bytes, sha256_hex};
use crate::wire::{Jwks, SignedEvent, SignedResponse};

/// Why a response is not to be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("the response uses protocol version {0}, not 1")]
    Version(u32),
    #[error("the response was signed by key {0:?}, which the gateway's JWKS does not list")]
    UnknownKey(String),
    #[error("the JWKS entry {kid:?} is not an Ed25519 signing key: {why}")]
    BadKey { kid: String, why: String },
    #[error("the response signature is malformed: {0}")]
    MalformedSignature(String),
    #[error("the response signature does not verify: {0}")]
    BadSignature(String),
    #[error("the response payload is not base64: {0}")]
    MalformedPayload(String),
    #[error("the response payload does not match its hash")]
    PayloadMismatch,
    #[error("the response answers another request")]
    OtherRequest,
    #[error(
        "the event was signed for another stream (another device session or subscribe request)"
    )]
    OtherStream,
}

/// The verifying key of `kid` in `jwks`.
///
/// # Errors
/// No such key, a `kid` the set names twice, or not an Ed25519 signing key.
pub fn key_of(jwks: &Jwks, kid: &str) -> Result<VerifyingKey, ResponseError> {
    let mut named = jwks.keys.iter().filter(|k| k.kid == kid);
    let jwk = named
        .next()
        .ok_or_else(|| ResponseError::UnknownKey(kid.to_string()))?;
    let bad = |why: String| ResponseError::BadKey {
        kid: kid.to_string(),
        why,
    };
    // Two keys under one name: which one signs would depend on their order in the set.
    if named.next().is_some() {
        return Err(bad("the key set names it twice".into()));
    }
    if jwk.kty != "OKP" || jwk.crv != "Ed25519" || jwk.alg != "EdDSA" || jwk.use_ != "sig" {
        return Err(bad(
            "kty, crv, alg or use is not OKP, Ed25519, EdDSA, sig".into()
        ));
    }
    let bytes: [u8; 32] = URL_SAFE_NO_PAD
        .decode(&jwk.x)
        .map_err(|e| bad(format!("x is not base64url: {e}")))?
        .try_into()
        .map_err(|b: Vec<u8>| bad(format!("x is {} bytes, not 32", b.len())))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| bad(e.to_string()))
}

/// Why a fetched key set is not to be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySetError {
    #[error("the key set lists no key")]
    Empty,
    /// A key of the set is malformed or named twice ([`ResponseError::BadKey`]).
    #[error(transparent)]
    Key(ResponseError),
    #[error("the key set gives the pinned key id {0:?} another key")]
    Rebound(String),
    #[error("the key set carries a signature by {0:?}, a key it does not list")]
    UnknownSigner(String),
    #[error("the key set's signature by {kid:?} does not verify: {why}")]
    BadSignature { kid: String, why: String },
    #[error("no pinned key signed the key set")]
    NotSignedByPin,
    #[error("the key set is not signed by any of its own keys")]
    Unsigned,
}

/// Checks a freshly fetched key set before a client trusts it.
///
/// - `pinned: None` (the first fetch, at login, over HTTPS): the set must be well formed
///   and signed by one of its own keys. This pins on first use; it proves nothing about
///   who answered.
/// - `pinned: Some(set)`: the set must also carry a signature by a key of the pinned set
///   (same `kid`, same key) and must not give a pinned `kid` another key. A rotation's
///   sets are signed by a key the client already holds (PROTOCOL.md, section 9.2), so the
///   gateway's own new set passes; a set that a party on the path changed in any way, a
///   key added included, does not.
///
/// Every key must be a well-formed Ed25519 key under a `kid` named once, and every
/// signature must name a key of the set and verify (strictly) over
/// [`key_set_bytes`] of its keys. On success the caller pins `fresh` in place of the old
/// set.
///
/// # Errors
/// See [`KeySetError`].
pub fn check_key_set(fresh: &Jwks, pinned: Option<&Jwks>) -> Result<(), KeySetError> {
    if fresh.keys.is_empty() {
        return Err(KeySetError::Empty);
    }
    for jwk in &fresh.keys {
        key_of(fresh, &jwk.kid).map_err(KeySetError::Key)?;
    }
    if let Some(pinned) = pinned {
        for old in &pinned.keys {
            if fresh.keys.iter().any(|k| k.kid == old.kid && k.x != old.x) {
                return Err(KeySetError::Rebound(old.kid.clone()));
            }
        }
    }
    let bytes = key_set_bytes(&fresh.keys);
    let mut trusted = false;
    for sig in &fresh.signatures {
        let key = match key_of(fresh, &sig.kid) {
            Ok(key) => key,
            Err(ResponseError::UnknownKey(kid)) => return Err(KeySetError::UnknownSigner(kid)),
            Err(e) => return Err(KeySetError::Key(e)),
        };
        let bad = |why: String| KeySetError::BadSignature {
            kid: sig.kid.clone(),
            why,
        };
        let signature: [u8; 64] = STANDARD
            .decode(&sig.signature)
            .map_err(|e| bad(format!("not base64: {e}")))?
            .try_into()
            .map_err(|b: Vec<u8>| bad(format!("{} bytes, not 64", b.len())))?;
        key.verify_strict(&bytes, &Signature::from_bytes(&signature))
            .map_err(|e| bad(e.to_string()))?;
        // The signer's kid and key are the pinned ones: no pinned kid is rebound above.
        trusted |= pinned.is_none_or(|p| p.keys.iter().any(|k| k.kid == sig.kid));
    }
    match (trusted, pinned) {
        (true, _) => Ok(()),
        (false, Some(_)) => Err(KeySetError::NotSignedByPin),
        (false, None) => Err(KeySetError::Unsigned),
    }
}

/// Checks the signature of `envelope_bytes` by `kid` and decodes the payload against
/// its hash.
fn verified_payload(
    jwks: &Jwks,
    kid: &str,
    envelope_bytes: &[u8],
    signature: &str,
    payload: &str,
    payload_sha256: &str,
) -> Result<Vec<u8>, ResponseError> {
    let key = key_of(jwks, kid)?;
    let signature: [u8; 64] = STANDARD
        .decode(signature)
        .map_err(|e| ResponseError::MalformedSignature(e.to_string()))?
        .try_into()
        .map_err(|b: Vec<u8>| {
            ResponseError::MalformedSignature(format!("{} bytes, not 64", b.len()))
        })?;
    key.verify_strict(envelope_bytes, &Signature::from_bytes(&signature))
        .map_err(|e| ResponseError::BadSignature(e.to_string()))?;
    let payload = STANDARD
        .decode(payload)
        .map_err(|e| ResponseError::MalformedPayload(e.to_string()))?;
    if sha256_hex(&payload) != payload_sha256 {
        return Err(ResponseError::PayloadMismatch);
    }
    Ok(payload)
}

/// Checks a pushed `event` received on the stream that the subscribe request
/// `request_sha256` of `device_session_id` opened: version, key, signature, payload hash,
/// and that it was signed for this very stream. Returns the payload. The caller then
/// resumes from the signed `envelope.position` (see PROTOCOL.md, section 13).
///
/// # Errors
/// See [`ResponseError`]; `OtherStream` when it was signed for another session's stream
/// or another subscribe request's.
pub fn verify_event(
    event: &SignedEvent,
    jwks: &Jwks,
    device_session_id: &str,
    request_sha256: &str,
) -> Result<Vec<u8>, ResponseError> {
    let e = &event.envelope;
    if e.protocol_version != PROTOCOL_VERSION {
        return Err(ResponseError::Version(e.protocol_version));
    }
    let payload = verified_payload(
        jwks,
        &e.key_id,
        &event_bytes(e),
        &event.signature,
        &event.payload,
        &e.payload_sha256,
    )?;
    if e.device_session_id != device_session_id || e.request_sha256 != request_sha256 {
        return Err(ResponseError::OtherStream);
    }
    Ok(payload)
}

/// Checks `response` (see the module docs) and returns its payload bytes.
///
/// # Errors
/// See [`ResponseError`].
pub fn verify_response(
    response: &SignedResponse,
    jwks: &Jwks,
    request_id: &str,
    request_sha256: &str,
) -> Result<Vec<u8>, ResponseError> {
    let e = &response.envelope;
    if e.protocol_version != PROTOCOL_VERSION {
        return Err(ResponseError::Version(e.protocol_version));
    }
    let payload = verified_payload(
        jwks,
        &e.key_id,
        &response_bytes(e),
        &response.signature,
        &response.payload,
        &e.payload_sha256,
    )?;
    if e.request_sha256 != request_sha256 || e.request_id != request_id {
        return Err(ResponseError::OtherRequest);
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::canonical::sign_key_set;
    use crate::wire::Jwk;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn jwk(kid: &str, n: u8) -> Jwk {
        Jwk::ed25519(kid, key(n).verifying_key().as_bytes())
    }

    /// A set of `keys` (kid, key number), signed by each of `signers`.
    fn set(keys: &[(&str, u8)], signers: &[(&str, u8)]) -> Jwks {
        let keys: Vec<Jwk> = keys.iter().map(|&(kid, n)| jwk(kid, n)).collect();
        let signatures = signers
            .iter()
            .map(|&(kid, n)| sign_key_set(&key(n), kid, &keys))
            .collect();
        Jwks { keys, signatures }
    }

    #[test]
    fn every_set_of_a_rotation_passes_for_a_client_that_pinned_the_set_before_it() {
        let before = set(&[("a", 1)], &[("a", 1)]);
        let published = set(&[("a", 1), ("b", 2)], &[("a", 1)]);
        // The swap, signed by the new key and by the old one until it is retired.
        let swapped = set(&[("b", 2), ("a", 1)], &[("b", 2), ("a", 1)]);
        let retired = set(&[("b", 2)], &[("b", 2)]);
        assert_eq!(check_key_set(&before, None), Ok(()));
        assert_eq!(check_key_set(&published, Some(&before)), Ok(()));
        assert_eq!(check_key_set(&swapped, Some(&published)), Ok(()));
        // A client offline from publication to swap still follows, by the old key's signature.
        assert_eq!(check_key_set(&swapped, Some(&before)), Ok(()));
        assert_eq!(check_key_set(&retired, Some(&swapped)), Ok(()));
        // One that slept through the retirement must log in again.
        assert_eq!(
            check_key_set(&retired, Some(&before)),
            Err(KeySetError::NotSignedByPin)
        );
    }

    #[test]
    fn a_key_added_to_a_pinned_set_by_anyone_but_a_pinned_key_is_refused() {
        let pinned = set(&[("a", 1)], &[("a", 1)]);
        // The attacker lists the pinned key, adds its own and signs with its own.
        let added = set(&[("a", 1), ("evil", 9)], &[("evil", 9)]);
        assert_eq!(
            check_key_set(&added, Some(&pinned)),
            Err(KeySetError::NotSignedByPin)
        );
        // Or keeps the gateway's signature, which covers the old keys only.
        let mut spliced = set(&[("a", 1), ("evil", 9)], &[]);
        spliced.signatures = pinned.signatures.clone();
        assert!(matches!(
            check_key_set(&spliced, Some(&pinned)),
            Err(KeySetError::BadSignature { kid, .. }) if kid == "a"
        ));
        // A set that replaced the keys is refused as well.
        assert_eq!(
            check_key_set(&set(&[("evil", 9)], &[("evil", 9)]), Some(&pinned)),
            Err(KeySetError::NotSignedByPin)
        );
    }

    #[test]
    fn a_set_that_gives_a_pinned_kid_another_key_is_refused_even_when_signed() {
        let pinned = set(&[("a", 1)], &[("a", 1)]);
        let rebound = set(&[("a", 9)], &[("a", 9)]);
        assert_eq!(
            check_key_set(&rebound, Some(&pinned)),
            Err(KeySetError::Rebound("a".into()))
        );
    }

    #[test]
    fn unsigned_empty_doubled_or_malformed_sets_are_refused() {
        assert_eq!(
            check_key_set(&set(&[("a", 1)], &[]), None),
            Err(KeySetError::Unsigned)
        );
        assert_eq!(check_key_set(&set(&[], &[]), None), Err(KeySetError::Empty));
        assert!(matches!(
            check_key_set(&set(&[("a", 1), ("a", 2)], &[("a", 1)]), None),
            Err(KeySetError::Key(ResponseError::BadKey { .. }))
        ));
        let mut wrong_curve = set(&[("a", 1)], &[("a", 1)]);
        wrong_curve.keys[0].crv = "X25519".into();
        assert!(matches!(
            check_key_set(&wrong_curve, None),
            Err(KeySetError::Key(ResponseError::BadKey { .. }))
        ));
        // A signature by a key the set does not list, even a good one.
        let mut stranger = set(&[("a", 1)], &[("a", 1)]);
        stranger
            .signatures
            .push(sign_key_set(&key(2), "b", &stranger.keys));
        assert_eq!(
            check_key_set(&stranger, None),
            Err(KeySetError::UnknownSigner("b".into()))
        );
        let mut short = set(&[("a", 1)], &[("a", 1)]);
        short.signatures[0].signature = "AAAA".into();
        assert!(matches!(
            check_key_set(&short, None),
            Err(KeySetError::BadSignature { .. })
        ));
    }

    #[test]
    fn any_change_to_a_signed_member_or_to_the_order_breaks_the_signature() {
        let pinned = set(&[("a", 1)], &[("a", 1)]);
        let good = set(&[("a", 1), ("b", 2)], &[("a", 1)]);
        let mut moved = good.clone();
        moved.keys.reverse();
        let mut renamed = good.clone();
        renamed.keys[1].kid = "c".into();
        for changed in [moved, renamed] {
            assert!(matches!(
                check_key_set(&changed, Some(&pinned)),
                Err(KeySetError::BadSignature { .. })
            ));
        }
    }
}
