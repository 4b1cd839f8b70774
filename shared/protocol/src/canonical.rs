//! The byte strings that are signed: a domain-separation tag, then every field in a fixed
//! order, each as a 4-byte big-endian length and its bytes. Text fields are their UTF-8
//! bytes; integers are 8-byte big-endian. Nothing is ambiguous: no separator can be
//! forged inside a field, and a command's bytes can never be read as a response's.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

use crate::wire::{CommandEnvelope, EventEnvelope, Jwk, KeySetSignature, ResponseEnvelope};
use crate::{COMMAND_TAG, EVENT_TAG, KEY_SET_TAG, RESPONSE_TAG};

fn put(out: &mut Vec<u8>, field: &[u8]) {
    // Fields are bounded by the request size limit, far below 4 GiB.
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

fn put_int(out: &mut Vec<u8>, value: u64) {
    put(out, &value.to_be_bytes());
}

/// The bytes a device signs.
pub fn command_bytes(e: &CommandEnvelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    put(&mut out, COMMAND_TAG);
    put_int(&mut out, u64::from(e.protocol_version));
    put(&mut out, e.device_session_id.as_bytes());
    put(&mut out, e.client_public_key.as_bytes());
    put(&mut out, e.message_type.as_bytes());
    put(&mut out, e.request_id.as_bytes());
    put_int(&mut out, e.timestamp_ms);
    put(&mut out, e.payload_sha256.as_bytes());
    out
}

/// The bytes the gateway signs.
pub fn response_bytes(e: &ResponseEnvelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(320);
    put(&mut out, RESPONSE_TAG);
    put_int(&mut out, u64::from(e.protocol_version));
    put(&mut out, e.request_id.as_bytes());
    put(&mut out, e.device_session_id.as_bytes());
    put_int(&mut out, e.timestamp_ms);
    put(&mut out, e.status.as_bytes());
    put(&mut out, e.result_code.as_bytes());
    put_int(&mut out, u64::from(e.backend_status));
    put(&mut out, e.payload_sha256.as_bytes());
    put(&mut out, e.request_sha256.as_bytes());
    put(&mut out, e.key_id.as_bytes());
    out
}

/// The bytes the gateway signs for a pushed event.
pub fn event_bytes(e: &EventEnvelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(320);
    put(&mut out, EVENT_TAG);
    put_int(&mut out, u64::from(e.protocol_version));
    put(&mut out, e.event_id.as_bytes());
    put(&mut out, e.event_type.as_bytes());
    put(&mut out, e.device_session_id.as_bytes());
    put(&mut out, e.request_sha256.as_bytes());
    put(&mut out, e.position.as_bytes());
    put_int(&mut out, e.sequence);
    put(&mut out, e.target.as_bytes());
    put(&mut out, e.user_id.as_bytes());
    put_int(&mut out, e.timestamp_ms);
    put(&mut out, e.payload_sha256.as_bytes());
    put(&mut out, e.key_id.as_bytes());
    out
}

/// The bytes the gateway signs for its key set: the number of keys, then every member of
/// each key in the set's order (`kid`, `kty`, `crv`, `x`, `use`, `alg`), so no key can be
/// added, dropped, moved or changed in any member without breaking the signature.
pub fn key_set_bytes(keys: &[Jwk]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + 128 * keys.len());
    put(&mut out, KEY_SET_TAG);
    put_int(&mut out, keys.len() as u64);
    for k in keys {
        put(&mut out, k.kid.as_bytes());
        put(&mut out, k.kty.as_bytes());
        put(&mut out, k.crv.as_bytes());
        put(&mut out, k.x.as_bytes());
        put(&mut out, k.use_.as_bytes());
        put(&mut out, k.alg.as_bytes());
    }
    out
}

/// `bytes` in lower-case hex: two digits per byte, one allocation (the one hex encoder of
/// the workspace; ids, tags, MACs and digests all go through it).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// `request_sha256`: SHA-256 of the command's canonical bytes followed by its 64
/// signature bytes, lower-case hex. The envelope carries the payload's hash, so this
/// binds a response to one exact request: envelope, payload and signature.
pub fn request_sha256(envelope: &CommandEnvelope, signature: &[u8; 64]) -> String {
    let mut bytes = command_bytes(envelope);
    bytes.extend_from_slice(signature);
    sha256_hex(&bytes)
}

/// Signs a command: the signature, raw and in standard base64.
pub fn sign_command(key: &SigningKey, envelope: &CommandEnvelope) -> ([u8; 64], String) {
    let signature = key.sign(&command_bytes(envelope)).to_bytes();
    (signature, STANDARD.encode(signature))
}

/// Signs a response envelope; the signature in standard base64.
pub fn sign_response(key: &SigningKey, envelope: &ResponseEnvelope) -> String {
    STANDARD.encode(key.sign(&response_bytes(envelope)).to_bytes())
}

/// Signs an event envelope; the signature in standard base64.
pub fn sign_event(key: &SigningKey, envelope: &EventEnvelope) -> String {
    STANDARD.encode(key.sign(&event_bytes(envelope)).to_bytes())
}

/// Signs a key set with the key `kid` names.
pub fn sign_key_set(key: &SigningKey, kid: &str, keys: &[Jwk]) -> KeySetSignature {
    KeySetSignature {
        kid: kid.to_string(),
        signature: STANDARD.encode(key.sign(&key_set_bytes(keys)).to_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_writes_two_lower_case_digits_per_byte() {
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff, 0x5c]), "000fa0ff5c");
        // SHA-256 of "hello", as every other implementation writes it.
        assert_eq!(
            sha256_hex(b"hello"),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
    }

    fn envelope() -> CommandEnvelope {
        CommandEnvelope {
            protocol_version: 1,
            device_session_id: "s_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAA".into(),
            client_public_key: "key".into(),
            message_type: "echo".into(),
            request_id: "r".repeat(22),
            timestamp_ms: 1_700_000_000_000,
            payload_sha256: sha256_hex(b"hello"),
        }
    }

    #[test]
    fn moving_bytes_between_fields_changes_the_encoding() {
        let a = envelope();
        let mut b = envelope();
        b.message_type = "ech".into();
        b.request_id = format!("o{}", a.request_id);
        assert_ne!(command_bytes(&a), command_bytes(&b));
    }

    #[test]
    fn the_encoding_starts_with_its_tag() {
        let bytes = command_bytes(&envelope());
        assert_eq!(&bytes[..4], &[0, 0, 0, 20]);
        assert_eq!(&bytes[4..24], COMMAND_TAG);
    }
}
