//! The JSON shapes on the wire. Unknown fields are refused in every signed envelope and
//! message, so a field a client thinks is signed can never be silently ignored; only the
//! JWKS and its signature entries ignore them (RFC 7517 asks so, and only their keys are
//! signed).
//!
//! Binary values (payloads, signatures) are standard base64 with padding; hashes are
//! lower-case hex; keys in a JWKS are unpadded base64url (RFC 8037).

use serde::{Deserialize, Serialize};

/// What a device signs (see [`crate::canonical::command_bytes`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandEnvelope {
    pub protocol_version: u32,
    pub device_session_id: String,
    /// The device key bound to the session at login (standard base64 of 32 bytes).
    pub client_public_key: String,
    pub message_type: String,
    pub request_id: String,
    /// The device's clock when it signed, in Unix milliseconds.
    pub timestamp_ms: u64,
    /// SHA-256 of the payload bytes, lower-case hex.
    pub payload_sha256: String,
}

/// `POST /api/v1/gateway/execute-command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCommand {
    pub envelope: CommandEnvelope,
    /// The payload bytes, standard base64.
    pub payload: String,
    /// Ed25519 over the envelope's canonical bytes, standard base64 (64 bytes).
    pub signature: String,
}

/// `status` of a response.
pub const STATUS_OK: &str = "ok";
pub const STATUS_ERROR: &str = "error";

/// What the gateway signs (see [`crate::canonical::response_bytes`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseEnvelope {
    pub protocol_version: u32,
    pub request_id: String,
    pub device_session_id: String,
    /// The gateway's clock (Redis' clock) when it answered, Unix milliseconds.
    pub timestamp_ms: u64,
    /// `ok` or `error`.
    pub status: String,
    /// `ok`, or the error code.
    pub result_code: String,
    /// The backend's HTTP status when a backend answered, else 0.
    pub backend_status: u16,
    /// SHA-256 of the response payload bytes, lower-case hex.
    pub payload_sha256: String,
    /// Binds the response to its request (see [`crate::canonical::request_sha256`]).
    pub request_sha256: String,
    /// The `kid` of the gateway key that signed.
    pub key_id: String,
}

/// A signed answer of the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedResponse {
    pub envelope: ResponseEnvelope,
    /// The payload bytes (the backend's body, or the gateway's JSON), standard base64.
    pub payload: String,
    /// Ed25519 over the envelope's canonical bytes, standard base64.
    pub signature: String,
}

/// What the gateway signs for each event of a push stream (see
/// [`crate::canonical::event_bytes`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventEnvelope {
    pub protocol_version: u32,
    /// The publisher's id of the event (`ev_…`), the same on every stream it reaches;
    /// for the gateway's own events, an id of their own.
    pub event_id: String,
    /// The backend's type, or one of the gateway's `gateway.*` types.
    pub event_type: String,
    /// The device session whose stream carries the event: an event signed for one device
    /// cannot be replayed into another's stream.
    pub device_session_id: String,
    /// The subscribe request's `request_sha256`: the event belongs to the one stream that
    /// request opened (an old stream's terminal event does not verify on a new one).
    pub request_sha256: String,
    /// The event's position (`<ms>-<seq>`, its SSE `id`), signed: where a client resumes.
    pub position: String,
    /// The event's number on its stream: 0 for the first (`gateway.server_time`), then one
    /// more for each event the stream sends. An event a party on the path drops leaves a
    /// gap a client sees at the next event.
    pub sequence: u64,
    /// `user` (every session of the user) or `device` (this session only).
    pub target: String,
    pub user_id: String,
    /// When the gateway took the event (Redis' clock), Unix milliseconds.
    pub timestamp_ms: u64,
    /// SHA-256 of the payload bytes, lower-case hex.
    pub payload_sha256: String,
    /// The `kid` of the gateway key that signed.
    pub key_id: String,
}

/// One event of a push stream, as the SSE `data` line carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedEvent {
    pub envelope: EventEnvelope,
    /// The payload bytes (JSON), standard base64.
    pub payload: String,
    /// Ed25519 over the envelope's canonical bytes, standard base64.
    pub signature: String,
}

/// One public key of the gateway (RFC 7517 / RFC 8037).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// `OKP`.
    pub kty: String,
    /// `Ed25519`.
    pub crv: String,
    /// The 32-byte public key, unpadded base64url.
    pub x: String,
    pub kid: String,
    /// `sig`.
    #[serde(rename = "use")]
    pub use_: String,
    /// `EdDSA`.
    pub alg: String,
}

/// `GET /api/v1/public/gateway/keys`: the current key, then the next and the previous one
/// during a rotation, and the gateway's signatures over the keys. Unknown members are
/// ignored here (RFC 7517 asks so of a JWK Set); what is trusted is only what is signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
    /// Ed25519 signatures over [`crate::canonical::key_set_bytes`] of `keys`: by the
    /// current key, and during a rotation's swap by the previous one too. A pinned client
    /// follows a new set only if a key it has pinned signed it
    /// ([`crate::verify::KeyPin`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<KeySetSignature>,
}

/// One signature over a key set. Unknown members are ignored, as in the set itself: they
/// are not signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySetSignature {
    /// The `kid` of the signing key, one of the set's own keys.
    pub kid: String,
    /// Ed25519 over the set's canonical bytes, standard base64 (64 bytes).
    pub signature: String,
}

impl Jwk {
    /// The JWK of an Ed25519 public key.
    pub fn ed25519(kid: &str, public_key: &[u8; 32]) -> Self {
        use base64::Engine;
        Self {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public_key),
            kid: kid.into(),
            use_: "sig".into(),
            alg: "EdDSA".into(),
        }
    }
}
