//! A client's check of a signed response: the key named by `key_id` must be in the
//! gateway's JWKS, the signature must verify (strictly) over the canonical bytes, the
//! payload must match its hash, and the response must be bound to the request the client
//! sent (`request_sha256`) and carry its request id.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, VerifyingKey};

use crate::PROTOCOL_VERSION;
use crate::canonical::{event_bytes, response_bytes, sha256_hex};
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
