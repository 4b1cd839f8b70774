//! Writes signed `execute-command` bodies, one JSON per line, for load tests (each request
//! needs its own request id and a fresh timestamp, so they are made ahead of the run).
//!
//! ```text
//! cargo run --release -p edge-auth-protocol --example signed_commands -- \
//!     public-key                                   # the device's public key, for confirm
//! cargo run --release -p edge-auth-protocol --example signed_commands -- \
//!     <device_session_id> <message_type> <payload> <count> > commands.jsonl
//! ```
//!
//! The device key is fixed (seed 0x5b × 32): it is a benchmark device, nothing else.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::SigningKey;
use edge_auth_protocol::PROTOCOL_VERSION;
use edge_auth_protocol::canonical::{sha256_hex, sign_command};
use edge_auth_protocol::wire::{CommandEnvelope, SignedCommand};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = SigningKey::from_bytes(&[0x5b; 32]);
    let public = STANDARD.encode(key.verifying_key().as_bytes());
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("public-key") {
        println!("{public}");
        return Ok(());
    }
    let [session, message_type, payload, count] = args.as_slice() else {
        return Err(
            "usage: signed_commands public-key | <session> <message_type> <payload> <count>".into(),
        );
    };
    let count: u64 = count.parse()?;
    let now = u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    let payload_b64 = STANDARD.encode(payload.as_bytes());
    let payload_hash = sha256_hex(payload.as_bytes());
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for n in 0..count {
        let envelope = CommandEnvelope {
            protocol_version: PROTOCOL_VERSION,
            device_session_id: session.clone(),
            client_public_key: public.clone(),
            message_type: message_type.clone(),
            // The run's start time keeps ids unique across runs (a benchmark makes a batch
            // per round; the gateway keeps ids for its replay window).
            request_id: format!(
                "bench-{}-{}",
                URL_SAFE_NO_PAD.encode(now.to_be_bytes()),
                URL_SAFE_NO_PAD.encode(n.to_be_bytes())
            ),
            timestamp_ms: now,
            payload_sha256: payload_hash.clone(),
        };
        let (_, signature) = sign_command(&key, &envelope);
        let command = SignedCommand {
            envelope,
            payload: payload_b64.clone(),
            signature,
        };
        serde_json::to_writer(&mut out, &command)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}
