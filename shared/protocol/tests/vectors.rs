//! The test vectors in `test-vectors.json` (for third-party clients) are reproduced here
//! from their inputs: canonical bytes, signatures and request hashes must match exactly.
//! `EDGE_AUTH_WRITE_VECTORS=1 cargo test -p edge-auth-protocol --test vectors` rewrites
//! the file (only when the encoding is meant to change; once the protocol has been released,
//! that needs a new version).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;
use edge_auth_protocol::canonical::{
    command_bytes, event_bytes, key_set_bytes, request_sha256, response_bytes, sha256_hex,
    sign_command, sign_event, sign_key_set, sign_response,
};
use edge_auth_protocol::verify::{check_key_set, verify_event, verify_response};
use edge_auth_protocol::wire::{
    CommandEnvelope, EventEnvelope, Jwk, Jwks, ResponseEnvelope, SignedCommand, SignedEvent,
    SignedResponse,
};
use serde_json::{Value, json};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn seed(byte: u8) -> [u8; 32] {
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = byte.wrapping_add(u8::try_from(i).expect("< 32"));
    }
    seed
}

/// Every vector, computed from the fixed inputs.
fn vectors() -> Value {
    let device = SigningKey::from_bytes(&seed(0x10));
    let gateway = SigningKey::from_bytes(&seed(0xa0));
    let device_public = STANDARD.encode(device.verifying_key().as_bytes());
    let mut cases = Vec::new();
    for (message_type, payload, request_id, timestamp_ms) in [
        (
            "echo",
            b"hello, edge-auth".to_vec(),
            "AAECAwQFBgcICQoLDA0ODw",
            1_795_000_000_000_u64,
        ),
        (
            "profile.update",
            br#"{"name":"Ada"}"#.to_vec(),
            "request-0000000000000002",
            1_795_000_000_123,
        ),
        (
            "gateway.sessions",
            Vec::new(),
            "rid_with-every_kind-0123456789",
            1_795_000_060_000,
        ),
    ] {
        let envelope = CommandEnvelope {
            protocol_version: 1,
            device_session_id: "s_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAA".into(),
            client_public_key: device_public.clone(),
            message_type: message_type.into(),
            request_id: request_id.into(),
            timestamp_ms,
            payload_sha256: sha256_hex(&payload),
        };
        let (raw, signature) = sign_command(&device, &envelope);
        let request_hash = request_sha256(&envelope, &raw);
        let command = SignedCommand {
            envelope: envelope.clone(),
            payload: STANDARD.encode(&payload),
            signature: signature.clone(),
        };
        let answer = format!("answer to {request_id}").into_bytes();
        let response_envelope = ResponseEnvelope {
            protocol_version: 1,
            request_id: request_id.into(),
            device_session_id: envelope.device_session_id.clone(),
            timestamp_ms: timestamp_ms + 42,
            status: "ok".into(),
            result_code: "ok".into(),
            // Reserved types are answered by the gateway itself: no backend status.
            backend_status: if message_type.starts_with("gateway.") {
                0
            } else {
                200
            },
            payload_sha256: sha256_hex(&answer),
            request_sha256: request_hash.clone(),
            key_id: "gw-test-1".into(),
        };
        let response = SignedResponse {
            envelope: response_envelope.clone(),
            payload: STANDARD.encode(&answer),
            signature: sign_response(&gateway, &response_envelope),
        };
        cases.push(json!({
            "command": command,
            "command_canonical_hex": hex(&command_bytes(&envelope)),
            "request_sha256": request_hash,
            "response": response,
            "response_canonical_hex": hex(&response_bytes(&response_envelope)),
        }));
    }
    // A push stream: the subscribe request that opens it, and two of its events (the
    // gateway's clock event first, then a backend event), bound to that request.
    let subscribe = CommandEnvelope {
        protocol_version: 1,
        device_session_id: "s_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAA".into(),
        client_public_key: device_public.clone(),
        message_type: "gateway.subscribe".into(),
        request_id: "subscribe-000000000000001".into(),
        timestamp_ms: 1_795_000_100_000,
        payload_sha256: sha256_hex(b""),
    };
    let (raw, signature) = sign_command(&device, &subscribe);
    let subscribe_hash = request_sha256(&subscribe, &raw);
    let mut events = Vec::new();
    for (sequence, (event_id, event_type, position, target, payload)) in (0..).zip([
        (
            "gw_0000000000000001",
            "gateway.server_time",
            "1795000100000-0",
            "device",
            // As the gateway writes it (section 13): its clock, and how long the client
            // may wait for the stream's end.
            br#"{"server_time_ms":1795000100005,"ends_within_ms":27000}"#.to_vec(),
        ),
        (
            "ev_0000000000000002",
            "order.shipped",
            "1795000100100-3",
            "user",
            br#"{"order":"A-17"}"#.to_vec(),
        ),
    ]) {
        let envelope = EventEnvelope {
            protocol_version: 1,
            event_id: event_id.into(),
            event_type: event_type.into(),
            device_session_id: subscribe.device_session_id.clone(),
            request_sha256: subscribe_hash.clone(),
            position: position.into(),
            sequence,
            target: target.into(),
            user_id: "u_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAA".into(),
            timestamp_ms: 1_795_000_100_005,
            payload_sha256: sha256_hex(&payload),
            key_id: "gw-test-1".into(),
        };
        let event = SignedEvent {
            signature: sign_event(&gateway, &envelope),
            payload: STANDARD.encode(&payload),
            envelope: envelope.clone(),
        };
        events.push(json!({
            "event": event,
            "event_canonical_hex": hex(&event_bytes(&envelope)),
        }));
    }
    let gateway_keys = vec![Jwk::ed25519(
        "gw-test-1",
        gateway.verifying_key().as_bytes(),
    )];
    let gateway_jwks = Jwks {
        signatures: vec![sign_key_set(&gateway, "gw-test-1", &gateway_keys)],
        keys: gateway_keys.clone(),
    };
    json!({
        "description": "edge-auth protocol v1 test vectors: see shared/protocol/PROTOCOL.md. Ed25519 signatures are deterministic (RFC 8032), so every value is reproducible from the seeds.",
        "device_seed_hex": hex(&seed(0x10)),
        "device_public_key": device_public,
        "gateway_seed_hex": hex(&seed(0xa0)),
        "gateway_jwks": gateway_jwks,
        "gateway_jwks_canonical_hex": hex(&key_set_bytes(&gateway_keys)),
        "cases": cases,
        "stream": {
            "subscribe": SignedCommand {
                envelope: subscribe.clone(),
                payload: String::new(),
                signature,
            },
            "request_sha256": subscribe_hash,
            "events": events,
        },
    })
}

fn path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test-vectors.json")
}

#[test]
fn the_published_test_vectors_are_reproduced_exactly() {
    let computed = vectors();
    if std::env::var_os("EDGE_AUTH_WRITE_VECTORS").is_some() {
        let text = serde_json::to_string_pretty(&computed).expect("serialises") + "\n";
        std::fs::write(path(), text).expect("writes the vectors");
    }
    let text = std::fs::read_to_string(path()).expect("test-vectors.json is in the repo");
    let published: Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(published, computed);
}

#[test]
fn the_published_responses_verify_against_the_published_jwks() {
    let text = std::fs::read_to_string(path()).expect("test-vectors.json is in the repo");
    let published: Value = serde_json::from_str(&text).expect("valid JSON");
    let jwks: Jwks = serde_json::from_value(published["gateway_jwks"].clone()).expect("a JWKS");
    for case in published["cases"].as_array().expect("cases") {
        let response: SignedResponse =
            serde_json::from_value(case["response"].clone()).expect("a response");
        let request_id = case["command"]["envelope"]["request_id"]
            .as_str()
            .expect("id");
        let hash = case["request_sha256"].as_str().expect("hash");
        assert!(verify_response(&response, &jwks, request_id, hash).is_ok());
        // Bound to its request: another request's hash fails, and so does another
        // request id with the right hash (review finding, stop 43: untested).
        assert!(verify_response(&response, &jwks, request_id, &"0".repeat(64)).is_err());
        let other_id = format!("{request_id}-other");
        assert!(verify_response(&response, &jwks, &other_id, hash).is_err());
    }
}

#[test]
fn the_published_jwks_is_signed_by_its_key_over_the_published_bytes() {
    let text = std::fs::read_to_string(path()).expect("test-vectors.json is in the repo");
    let published: Value = serde_json::from_str(&text).expect("valid JSON");
    let jwks: Jwks = serde_json::from_value(published["gateway_jwks"].clone()).expect("a JWKS");
    assert_eq!(
        published["gateway_jwks_canonical_hex"],
        hex(&key_set_bytes(&jwks.keys))
    );
    assert_eq!(check_key_set(&jwks, None), Ok(()));
    assert_eq!(check_key_set(&jwks, Some(&jwks)), Ok(()));
}

#[test]
fn a_key_set_that_names_the_signing_key_twice_verifies_nothing() {
    let text = std::fs::read_to_string(path()).expect("test-vectors.json is in the repo");
    let published: Value = serde_json::from_str(&text).expect("valid JSON");
    let jwks: Jwks = serde_json::from_value(published["gateway_jwks"].clone()).expect("a JWKS");
    let case = &published["cases"][0];
    let response: SignedResponse =
        serde_json::from_value(case["response"].clone()).expect("a response");
    let request_id = case["command"]["envelope"]["request_id"]
        .as_str()
        .expect("id");
    let hash = case["request_sha256"].as_str().expect("hash");
    // The attacker's key first under the same name, the real one after it.
    let mut doubled = jwks.clone();
    let mut other = doubled.keys[0].clone();
    other.x = "A".repeat(43);
    doubled.keys.insert(0, other);
    let err = verify_response(&response, &doubled, request_id, hash)
        .expect_err("a doubled kid is refused");
    assert!(err.to_string().contains("twice"), "{err}");
    // The real key alone still verifies.
    assert!(verify_response(&response, &jwks, request_id, hash).is_ok());
}

#[test]
fn the_published_events_verify_on_their_own_stream_only() {
    let text = std::fs::read_to_string(path()).expect("test-vectors.json is in the repo");
    let published: Value = serde_json::from_str(&text).expect("valid JSON");
    let jwks: Jwks = serde_json::from_value(published["gateway_jwks"].clone()).expect("a JWKS");
    let stream = &published["stream"];
    let session = stream["subscribe"]["envelope"]["device_session_id"]
        .as_str()
        .expect("session");
    let hash = stream["request_sha256"].as_str().expect("hash");
    for case in stream["events"].as_array().expect("events") {
        let event: SignedEvent = serde_json::from_value(case["event"].clone()).expect("an event");
        assert!(verify_event(&event, &jwks, session, hash).is_ok());
        // Another stream of the same session (another subscribe request): refused.
        assert!(verify_event(&event, &jwks, session, &"0".repeat(64)).is_err());
    }
}
