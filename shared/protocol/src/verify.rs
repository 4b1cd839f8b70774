//! A client's check of a signed response: the key named by `key_id` must be in the
//! gateway's JWKS, the signature must verify (strictly) over the canonical bytes, the
//! payload must match its hash, and the response must be bound to the request the client
//! sent (`request_sha256`) and carry its request id. And a client's pin of the gateway's
//! keys, which follows a newly fetched JWKS only when a pinned key signed it ([`KeyPin`]).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::PROTOCOL_VERSION;
use crate::canonical::{event_bytes, key_set_bytes, response_bytes, sha256_hex};
use crate::rules::sound_public_key;
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
    // A weak key would let a verifier that is not strict accept forgeries under its kid.
    sound_public_key(&bytes).map_err(|fault| bad(fault.to_string()))
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
    #[error(
        "the key set holds {keys} keys and {signatures} signatures, more than {MAX_KEY_SET} of either"
    )]
    TooLarge { keys: usize, signatures: usize },
    #[error(
        "the pinned key set is malformed or not signed ({0}): log in again to pin the \
         gateway's keys"
    )]
    BadPin(Box<KeySetError>),
}

/// The most keys, and the most signatures, a key set may hold: the gateway sends at most 3
/// and 2. Without a cap a party on the path could make a client hash a set of megabytes
/// once per signature.
pub const MAX_KEY_SET: usize = 16;

/// Checks a key set: at most [`MAX_KEY_SET`] keys and signatures, well-formed keys, each
/// `kid` once, every signature by a key of the
/// set and valid (strictly) over [`key_set_bytes`] of the set, and at least one by a
/// key of `pinned` (the same public key, under whatever `kid`), or with no pin by one of
/// its own keys. With a pin, no pinned `kid` may name another key.
///
/// Clients follow the gateway's keys with [`KeyPin`].
///
/// # Errors
/// See [`KeySetError`].
pub fn check_key_set(fresh: &Jwks, pinned: Option<&Jwks>) -> Result<(), KeySetError> {
    if fresh.keys.is_empty() {
        return Err(KeySetError::Empty);
    }
    if fresh.keys.len() > MAX_KEY_SET || fresh.signatures.len() > MAX_KEY_SET {
        return Err(KeySetError::TooLarge {
            keys: fresh.keys.len(),
            signatures: fresh.signatures.len(),
        });
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
        // Trust follows the key, not its name: an operator who let the old key's `kid`
        // change at the swap still has it vouch for the new set.
        trusted |= pinned.is_none_or(|p| {
            p.keys.iter().any(|k| {
                URL_SAFE_NO_PAD
                    .decode(&k.x)
                    .is_ok_and(|x| x.as_slice() == key.as_bytes())
            })
        });
    }
    match (trusted, pinned) {
        (true, _) => Ok(()),
        (false, Some(_)) => Err(KeySetError::NotSignedByPin),
        (false, None) => Err(KeySetError::Unsigned),
    }
}

/// What a client keeps of the gateway's keys between fetches (PROTOCOL.md, section 5.2):
/// the signed set it trusts. It follows a newly fetched set only when a pinned key signed
/// it, so a set a party on the path made never takes its place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPin {
    /// The trusted set: responses and events verify against it.
    pub jwks: Jwks,
}

impl KeyPin {
    /// The pin of the first fetch, at login over HTTPS (trust on first use): the set must
    /// be well formed and signed by one of its own keys, which proves nothing about who
    /// answered but catches a malformed set.
    ///
    /// # Errors
    /// See [`check_key_set`].
    pub fn first(fresh: Jwks) -> Result<Self, KeySetError> {
        check_key_set(&fresh, None)?;
        Ok(Self { jwks: fresh })
    }

    /// The pin after a later fetch: `fresh` must pass [`check_key_set`] against the pinned
    /// set, and becomes the pin. Every set of a rotation is signed by a key the client
    /// already holds (PROTOCOL.md, section 9.2), so the gateway's own sets pass, in any
    /// order while a step rolls out; a set a party on the path added a key to does not.
    /// An older genuine set passes too, replayed or not, and from there the set before it:
    /// a pin can be led back to every key the gateway has used since its last rotation to
    /// a key no client pinned, which is why step 4 deletes the old seed and a leaked key,
    /// even a retired one, calls for such a rotation (every client logs in again;
    /// PROTOCOL.md, sections 5.2 and 9.2).
    ///
    /// # Errors
    /// [`KeySetError::BadPin`] when the pinned set itself is not signed (pinned by a
    /// client that did not check), else see [`check_key_set`].
    pub fn follow(&self, fresh: Jwks) -> Result<Self, KeySetError> {
        check_key_set(&self.jwks, None).map_err(|e| KeySetError::BadPin(Box::new(e)))?;
        check_key_set(&fresh, Some(&self.jwks))?;
        Ok(Self { jwks: fresh })
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

    // The sets of a rotation from key a to key b (PROTOCOL.md, section 9.2).
    fn before() -> Jwks {
        set(&[("a", 1)], &[("a", 1)])
    }
    fn published() -> Jwks {
        set(&[("a", 1), ("b", 2)], &[("a", 1)])
    }
    fn swapped() -> Jwks {
        set(&[("b", 2), ("a", 1)], &[("b", 2), ("a", 1)])
    }
    fn retired() -> Jwks {
        set(&[("b", 2)], &[("b", 2)])
    }

    #[test]
    fn every_set_of_a_rotation_is_followed_by_a_client_pinned_at_any_step_before_it() {
        let pin = KeyPin::first(before()).expect("self-signed");
        let pin = pin.follow(published()).expect("signed by a");
        let pin = pin.follow(swapped()).expect("signed by a and b");
        let pin = pin.follow(retired()).expect("signed by b");
        assert_eq!(pin.jwks, retired());
        // A client offline from publication to swap still follows, by the old key's signature.
        let asleep = KeyPin::first(before()).expect("self-signed");
        assert_eq!(asleep.follow(swapped()).map(|p| p.jwks), Ok(swapped()));
        // One that slept through the retirement must log in again.
        assert_eq!(
            asleep.follow(retired()).err(),
            Some(KeySetError::NotSignedByPin)
        );
    }

    #[test]
    fn old_and_new_instances_answering_in_turn_during_each_step_lock_no_client_out() {
        // Each step rolls out over a while (and caches keep the old set for minutes): the
        // old settings' set and the new one's are both served, in any order.
        let steps: [fn() -> Jwks; 4] = [before, published, swapped, retired];
        for step in 1..steps.len() {
            let mut pin = KeyPin::first(steps[step - 1]()).expect("self-signed");
            for turn in 0..10 {
                let which = if turn % 3 == 2 { step - 1 } else { step };
                pin = pin.follow(steps[which]()).expect("follows");
                assert_eq!(pin.jwks, steps[which](), "step {step}, turn {turn}");
            }
            // Once the step has rolled out everywhere, its set is pinned.
            pin = pin.follow(steps[step]()).expect("follows");
            assert_eq!(pin.jwks, steps[step]());
        }
    }

    #[test]
    fn an_old_set_signed_by_a_pinned_key_is_followed_so_a_leaked_key_needs_a_new_login() {
        let pin = KeyPin::first(retired()).expect("self-signed");
        // The swap's set, replayed after the retirement: b signed it, so the pin takes it
        // and trusts a again. Harmless while a is secret; if a leaks, PROTOCOL 9.2 has the
        // operator rotate to a key no client pinned.
        assert_eq!(pin.follow(swapped()).map(|p| p.jwks), Ok(swapped()));
        // After such a rotation (to c, no previous key) nothing old is followed.
        let after_leak = KeyPin::first(set(&[("c", 3)], &[("c", 3)])).expect("a new login");
        for old in [before(), published(), swapped(), retired()] {
            assert_eq!(
                after_leak.follow(old).err(),
                Some(KeySetError::NotSignedByPin)
            );
        }
    }

    #[test]
    fn a_pin_that_is_not_signed_is_not_followed() {
        // A set pinned by an older client, which a party on the path may have added to.
        let legacy = KeyPin {
            jwks: set(&[("a", 1), ("evil", 9)], &[]),
        };
        let forged = set(&[("evil", 9)], &[("evil", 9)]);
        assert_eq!(
            legacy.follow(forged).err(),
            Some(KeySetError::BadPin(Box::new(KeySetError::Unsigned)))
        );
    }

    #[test]
    fn the_old_key_vouches_for_the_swap_even_under_a_new_kid() {
        // The operator named the old key gw-1 and let the previous key's kid be derived.
        let pin = KeyPin::first(set(&[("gw-1", 1)], &[("gw-1", 1)])).expect("self-signed");
        let swapped = set(&[("b", 2), ("derived", 1)], &[("b", 2), ("derived", 1)]);
        assert!(pin.follow(swapped).is_ok());
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
        // A genuine new set stripped of its signatures, or of the pinned key's one.
        let mut stripped = set(&[("a", 1), ("b", 2)], &[("a", 1), ("b", 2)]);
        stripped.signatures.remove(0);
        assert_eq!(
            check_key_set(&stripped, Some(&pinned)),
            Err(KeySetError::NotSignedByPin)
        );
        stripped.signatures.clear();
        assert_eq!(
            check_key_set(&stripped, Some(&pinned)),
            Err(KeySetError::NotSignedByPin)
        );
        // A set that replaced the keys is refused as well.
        assert_eq!(
            check_key_set(&set(&[("evil", 9)], &[("evil", 9)]), Some(&pinned)),
            Err(KeySetError::NotSignedByPin)
        );
    }

    #[test]
    fn a_set_that_gives_a_pinned_kid_another_key_is_refused_even_when_signed() {
        let pinned = set(&[("a", 1), ("b", 2)], &[("a", 1)]);
        let rebound = set(&[("a", 9)], &[("a", 9)]);
        assert_eq!(
            check_key_set(&rebound, Some(&pinned)),
            Err(KeySetError::Rebound("a".into()))
        );
        // Even signed by the other pinned key.
        let rebound_by_b = set(&[("b", 2), ("a", 9)], &[("b", 2)]);
        assert_eq!(
            check_key_set(&rebound_by_b, Some(&pinned)),
            Err(KeySetError::Rebound("a".into()))
        );
    }

    #[test]
    fn a_set_over_the_size_cap_is_refused_before_any_signature_is_checked() {
        let keys: Vec<(String, u8)> = (0..=16u8).map(|n| (format!("k{n}"), n + 1)).collect();
        let named: Vec<(&str, u8)> = keys.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        assert_eq!(
            check_key_set(&set(&named, &[("k0", 1)]), None),
            Err(KeySetError::TooLarge {
                keys: 17,
                signatures: 1
            })
        );
        let mut many = set(&[("a", 1)], &[("a", 1)]);
        many.signatures = vec![many.signatures[0].clone(); 17];
        assert!(matches!(
            check_key_set(&many, None),
            Err(KeySetError::TooLarge { signatures: 17, .. })
        ));
        assert!(check_key_set(&set(&named[..16], &[("k0", 1)]), None).is_ok());
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
        // A signed set that lists a small-order key (an all-zero placeholder): a verifier
        // that is not strict would take forgeries under its kid.
        let mut weak = set(&[("a", 1)], &[]);
        weak.keys.push(Jwk::ed25519("zero", &[0; 32]));
        weak.signatures = vec![sign_key_set(&key(1), "a", &weak.keys)];
        assert!(matches!(
            check_key_set(&weak, None),
            Err(KeySetError::Key(ResponseError::BadKey { ref kid, ref why }))
                if kid == "zero" && why.contains("small-order")
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
        let mut swapped_key = good.clone();
        swapped_key.keys[1].x = jwk("b", 3).x;
        let mut dropped = good.clone();
        dropped.keys.pop();
        for changed in [moved, renamed, swapped_key, dropped] {
            assert!(matches!(
                check_key_set(&changed, Some(&pinned)),
                Err(KeySetError::BadSignature { .. })
            ));
        }
    }
}
