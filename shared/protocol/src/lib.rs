//! The signed-command protocol between a device, the gateway and its clients.
//!
//! A device signs every command with the Ed25519 key it bound at login; the gateway
//! checks it and signs its answer with its own key, published as a JWKS. This crate is
//! the one definition of what is signed: the gateway and the Rust client both encode
//! through it, so they cannot drift. `shared/protocol/PROTOCOL.md` is the same contract in prose,
//! for third-party clients, and `test-vectors.json` pins the exact bytes.
//!
//! # Layout
//! - [`wire`]: the JSON shapes on the wire (request, response, pushed event, signed JWKS).
//! - [`canonical`]: the byte strings that are signed, and the hashes that bind them.
//! - [`rules`]: what a well-formed field is (request ids, message types, hashes).
//! - [`verify`]: a client's check of a signed response or event against the gateway's
//!   JWKS, and of a newly fetched JWKS against the pinned one.

pub mod canonical;
pub mod rules;
pub mod verify;
pub mod wire;

/// The only protocol version there is.
pub const PROTOCOL_VERSION: u32 = 1;

/// Domain separation tag of a command's canonical encoding.
pub const COMMAND_TAG: &[u8] = b"edge-auth/command/v1";

/// Domain separation tag of a response's canonical encoding.
pub const RESPONSE_TAG: &[u8] = b"edge-auth/response/v1";

/// Domain separation tag of a pushed event's canonical encoding.
pub const EVENT_TAG: &[u8] = b"edge-auth/event/v1";

/// Domain separation tag of a key set's canonical encoding (what the gateway signs in its
/// JWKS, so a pinned client can tell the gateway's own new set from one a party on the
/// path put a key into).
pub const KEY_SET_TAG: &[u8] = b"edge-auth/key-set/v1";

/// Message types starting with this are the gateway's own (never sent to a backend).
pub const RESERVED_PREFIX: &str = "gateway.";
