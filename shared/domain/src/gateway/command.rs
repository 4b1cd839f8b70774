//! A signed command, parsed and verified before any I/O: shape and version, payload size
//! and hash, then the Ed25519 signature (`verify_strict`) over the canonical envelope.
//! Garbage therefore costs Redis nothing.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::Signature;
use edge_auth_protocol::canonical::{command_bytes, request_sha256, sha256_hex};
use edge_auth_protocol::wire::{CommandEnvelope, SignedCommand};
use edge_auth_protocol::{PROTOCOL_VERSION, RESERVED_PREFIX, rules};

use crate::gateway::execute::CommandError;
use crate::gateway::settings::MAX_PAYLOAD_LIMIT;
use crate::ids::DeviceSessionId;
use crate::public_key::ClientPublicKey;

/// A message type (see [`rules::is_message_type`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageType(String);

impl MessageType {
    /// Parses a message type.
    ///
    /// # Errors
    /// Not of the documented form.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if rules::is_message_type(raw) {
            Ok(Self(raw.to_string()))
        } else {
            Err(format!(
                "message_type must be 1-64 characters of a-z 0-9 . _ - starting with a letter, got {raw:?}"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A `gateway.*` type, answered by the gateway itself.
    pub fn is_reserved(&self) -> bool {
        self.0.starts_with(RESERVED_PREFIX)
    }
}

/// A client-chosen request id (see [`rules::is_request_id`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// A request id of the protocol's form, or `None`.
    pub fn parse(text: &str) -> Option<Self> {
        rules::is_request_id(text).then(|| Self(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A command whose signature verified with the key it names. Whether that key is the
/// session's is for the store to say.
#[derive(Debug, Clone)]
pub struct VerifiedCommand {
    /// The envelope as signed (every field checked).
    pub envelope: CommandEnvelope,
    pub session: DeviceSessionId,
    pub key: ClientPublicKey,
    pub message_type: MessageType,
    pub request_id: RequestId,
    pub payload: Vec<u8>,
    /// Binds the response to this exact request.
    pub request_sha256: String,
}

fn invalid(message: impl Into<String>) -> CommandError {
    CommandError::InvalidRequest(message.into())
}

/// Parses the request body: the protocol version first (so a client speaking another
/// version is told so, whatever else its envelope holds), then the exact shape.
///
/// # Errors
/// `UnsupportedVersion`, or `InvalidRequest` naming what is wrong.
pub fn parse(body: &[u8]) -> Result<SignedCommand, CommandError> {
    /// Only the envelope (small); the payload is skipped without being built. A map, not
    /// a struct: serde's derived structs also accept an array of their fields in order,
    /// and the protocol admits only objects (the body's own first byte is checked below,
    /// see [`crate::json`]).
    #[derive(serde::Deserialize)]
    struct Peek {
        envelope: Option<serde_json::Map<String, serde_json::Value>>,
    }
    if !crate::json::starts_an_object(body) {
        return Err(invalid("the body is not a JSON object"));
    }
    let peek: Peek = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the body is not a JSON object: {e}")))?;
    if let Some(version) = peek
        .envelope
        .as_ref()
        .and_then(|e| e.get("protocol_version"))
        .and_then(serde_json::Value::as_u64)
        && version != u64::from(PROTOCOL_VERSION)
    {
        return Err(CommandError::UnsupportedVersion(
            u32::try_from(version).unwrap_or(u32::MAX),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the body is not a signed command: {e}")))
}

/// Largest base64 text that can decode to `max` bytes.
const fn encoded_len(max: usize) -> usize {
    max.div_ceil(3).saturating_mul(4)
}

/// What a command's body may hold beside its payload: the envelope, the signature and the
/// JSON around them. The longest envelope takes under 1 KiB, and under 4 KiB with every
/// character escaped; the rest is room for the writer's spaces.
pub const ENVELOPE_ALLOWANCE: usize = 8 * 1024;

/// The most bytes a JSON writer spends on one character of the payload's base64: a `\u`
/// escape (.NET's default writer sends `+` as `\u002B`; PHP's sends `/` as `\/`).
const MAX_ESCAPED_CHAR_BYTES: usize = 6;

/// The longest command body read, whatever the settings: the base64 of the largest
/// payload the settings can allow, and [`ENVELOPE_ALLOWANCE`]. (A client whose writer
/// escapes characters sends payloads that large unescaped, or smaller ones.)
pub const MAX_COMMAND_BODY_BYTES: usize = encoded_len(MAX_PAYLOAD_LIMIT) + ENVELOPE_ALLOWANCE;

/// The longest body a command with a payload of at most `max_payload` bytes needs: its
/// base64 with every character escaped, and [`ENVELOPE_ALLOWANCE`]; at most
/// [`MAX_COMMAND_BODY_BYTES`]. A longer body cannot hold a payload the settings allow, so it is
/// refused (`413`) before it is parsed, and no more of it than this is read.
pub const fn max_body_bytes(max_payload: usize) -> usize {
    let escaped = encoded_len(max_payload)
        .saturating_mul(MAX_ESCAPED_CHAR_BYTES)
        .saturating_add(ENVELOPE_ALLOWANCE);
    if escaped < MAX_COMMAND_BODY_BYTES {
        escaped
    } else {
        MAX_COMMAND_BODY_BYTES
    }
}

/// Parses and verifies `command` (see the module docs for the order).
///
/// # Errors
/// `UnsupportedVersion`, `InvalidRequest`, `PayloadTooLarge`, `PayloadHashMismatch`,
/// `InvalidSignature`.
pub fn verify(
    command: &SignedCommand,
    max_payload: usize,
) -> Result<VerifiedCommand, CommandError> {
    let e = &command.envelope;
    if e.protocol_version != PROTOCOL_VERSION {
        return Err(CommandError::UnsupportedVersion(e.protocol_version));
    }
    let session = DeviceSessionId::parse(&e.device_session_id)
        .map_err(|err| invalid(format!("device_session_id: {err}")))?;
    let key =
        ClientPublicKey::parse(&e.client_public_key).map_err(|err| invalid(err.to_string()))?;
    let message_type = MessageType::parse(&e.message_type).map_err(invalid)?;
    if !rules::is_request_id(&e.request_id) {
        return Err(invalid(
            "request_id must be 16-128 characters of A-Z a-z 0-9 - _",
        ));
    }
    if e.timestamp_ms > rules::MAX_TIMESTAMP_MS {
        return Err(invalid("timestamp_ms must be at most 2^53 - 1"));
    }
    if !rules::is_sha256_hex(&e.payload_sha256) {
        return Err(invalid(
            "payload_sha256 must be 64 lower-case hex digits (SHA-256 of the payload)",
        ));
    }
    if command.payload.len() > encoded_len(max_payload) {
        return Err(CommandError::PayloadTooLarge { max: max_payload });
    }
    let payload = STANDARD
        .decode(&command.payload)
        .map_err(|err| invalid(format!("payload is not standard base64: {err}")))?;
    if payload.len() > max_payload {
        return Err(CommandError::PayloadTooLarge { max: max_payload });
    }
    if sha256_hex(&payload) != e.payload_sha256 {
        return Err(CommandError::PayloadHashMismatch);
    }
    let signature: [u8; 64] = STANDARD
        .decode(&command.signature)
        .map_err(|err| CommandError::InvalidSignature(format!("not standard base64: {err}")))?
        .try_into()
        .map_err(|bytes: Vec<u8>| {
            CommandError::InvalidSignature(format!("{} bytes, not 64", bytes.len()))
        })?;
    key.verifying_key()
        .verify_strict(&command_bytes(e), &Signature::from_bytes(&signature))
        .map_err(|err| CommandError::InvalidSignature(err.to_string()))?;
    Ok(VerifiedCommand {
        request_sha256: request_sha256(e, &signature),
        envelope: e.clone(),
        session,
        key,
        message_type,
        request_id: RequestId(e.request_id.clone()),
        payload,
    })
}
