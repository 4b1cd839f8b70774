//! The targets: each takes any bytes, must never panic, and checks the properties its
//! parser promises. Each returns an *outcome*: a small number naming what the input led
//! to (which error, which branch), so the driver keeps inputs that reach new outcomes.

use std::net::{IpAddr, SocketAddr};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use edge_auth_domain::client::{ClientAddr, ClientHops, ClientPolicy};
use edge_auth_domain::code::VerificationCode;
use edge_auth_domain::email::EmailAddress;
use edge_auth_domain::gateway::command::{MessageType, parse, verify};
use edge_auth_domain::gateway::execute::CommandError;
use edge_auth_domain::gateway::settings::BackendRoutes;
use edge_auth_domain::ids::{ChallengeId, DeviceSessionId, UserId};
use edge_auth_domain::public_key::ClientPublicKey;
use edge_auth_domain::push::ports::Position;
use edge_auth_domain::push::publish::Publication;
use edge_auth_domain::push::resume::resume_point;
use edge_auth_domain::push::settings::MAX_EVENT_PAYLOAD_BYTES;
use edge_auth_domain::rate_limit::{MAX_PERIOD_SECONDS, Rate};
use edge_auth_domain::sessions::auth::{InternalApiToken, MIN_TOKEN_CHARS, bearer_matches};
use edge_auth_domain::sessions::input::{
    BlockTarget, ChangeReason, GATEWAY_ACTORS, ReasonCode, UserRef,
    session_limit as session_limit_of,
};
use edge_auth_domain::sessions::model::MAX_PAGE;
use edge_auth_domain::sessions::usecases::page_size;
use edge_auth_protocol::canonical::{
    command_bytes, event_bytes, request_sha256, response_bytes, sha256_hex,
};
use edge_auth_protocol::rules::{is_message_type, is_request_id};
use edge_auth_protocol::verify::{KeyPin, KeySetError, key_of};
use edge_auth_protocol::wire::{
    CommandEnvelope, EventEnvelope, Jwk, Jwks, KeySetSignature, ResponseEnvelope,
};
use edge_auth_spin::request_log;

/// A fuzz target.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]) -> u64,
}

/// Every target, by name.
pub static TARGETS: [Target; 11] = [
    Target {
        name: "command",
        run: command,
    },
    Target {
        name: "canonical",
        run: canonical,
    },
    Target {
        name: "email",
        run: email,
    },
    Target {
        name: "ids",
        run: ids,
    },
    Target {
        name: "query",
        run: query,
    },
    Target {
        name: "client",
        run: client,
    },
    Target {
        name: "resume",
        run: resume,
    },
    Target {
        name: "publish",
        run: publish,
    },
    Target {
        name: "key_set",
        run: key_set,
    },
    Target {
        name: "internal",
        run: internal,
    },
    Target {
        name: "settings",
        run: settings,
    },
];

/// What an operator writes and what the edge trusts from a request's headers: a rate
/// (`30/60`), the `backend_routes` table, a bearer header against a token (the internal
/// API's, and a backend's of any length), `x-request-id` and `traceparent`. Never a
/// panic; a rate that passes reads back as itself with a usable GCRA interval; every
/// entry of a table that passes routes its type to its method and path as written; a
/// header authorizes exactly when it is `Bearer` (in any case) and the token; a request
/// id or trace header is taken exactly when it is of the documented shape (else a fresh
/// id, and no trace header passed on).
pub fn settings(bytes: &[u8]) -> u64 {
    let choice = fields_choice(bytes);
    let mut fields = Fields { bytes };
    let (rate, token, scheme, request_id) =
        (fields.text(), fields.text(), fields.text(), fields.text());
    let trace = fields.text();
    let routes = String::from_utf8_lossy(fields.bytes).into_owned();
    let mut outcome = 0;

    match Rate::parse("rate", &rate) {
        Ok(parsed) => {
            let seconds = parsed.period.as_secs();
            assert!(parsed.limit >= 1 && (1..=MAX_PERIOD_SECONDS).contains(&seconds));
            assert!(parsed.interval_ms() >= 1);
            assert!(u128::from(parsed.tolerance_ms()) < parsed.period.as_millis());
            let again = Rate::parse("rate", &format!("{}/{seconds}", parsed.limit));
            assert_eq!(again, Ok(parsed), "{rate:?}");
            outcome |= 1;
        }
        Err(e) => outcome ^= class(&e.to_string()) << 8,
    }

    match BackendRoutes::parse(&routes) {
        Ok(table) if routes.trim() != "none" => {
            for entry in routes.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                let (name, target) = entry.split_once('=').expect("an entry has a =");
                let (method, path) = target.trim().split_once(' ').expect("a method");
                let name = MessageType::parse(name.trim()).expect("a message type");
                let route = table.route(&name).expect("every entry is routed");
                assert_eq!(route.method.as_str(), method, "{entry:?}");
                assert_eq!(route.path, path.trim(), "{entry:?}");
                assert!(route.path.starts_with('/'));
                assert!(!route.path.contains([' ', '?', '#', '%', '\\']));
            }
            outcome |= 2;
        }
        Ok(_) => outcome |= 4,
        Err(e) => outcome ^= class(&e.to_string()) << 16,
    }

    // Half the inputs present their own token, so the matching branch is reached.
    let header = if choice & 1 == 0 {
        format!("{scheme} {token}")
    } else {
        scheme.clone()
    };
    let credentials = header
        .split_once(' ')
        .filter(|(s, _)| s.eq_ignore_ascii_case("Bearer"))
        .map(|(_, c)| c.trim_start_matches(' '));
    let presents_token = credentials == Some(token.as_str());
    assert_eq!(
        bearer_matches(&token, Some(&header)),
        presents_token,
        "{header:?}"
    );
    assert!(!bearer_matches(&token, None));
    match InternalApiToken::parse(&token) {
        Ok(internal) => {
            assert!(token.chars().count() >= MIN_TOKEN_CHARS);
            assert_eq!(
                internal.authorizes(Some(&header)),
                presents_token,
                "{header:?}"
            );
            outcome |= 8;
        }
        Err(_) => assert!(token.chars().count() < MIN_TOKEN_CHARS),
    }
    if presents_token {
        outcome |= 16;
    }

    // A request id and trace header in the log and on outgoing calls: only of their
    // shape, which holds nothing that could break a header or a log line.
    let taken = request_log::begin(Some(&request_id), Some(&trace));
    let id_ok = (1..=128).contains(&request_id.len())
        && request_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    assert_eq!(request_log::valid_request_id(&request_id), id_ok);
    assert_eq!(taken == request_id, id_ok, "{request_id:?}");
    assert!(request_log::valid_request_id(&taken), "{taken:?}");
    let hex = |s: &[u8], n: usize| {
        s.len() == n
            && s.iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    let t = trace.as_bytes();
    let trace_ok = t.len() == 55
        && t.starts_with(b"00-")
        && t[35] == b'-'
        && t[52] == b'-'
        && hex(&t[3..35], 32)
        && t[3..35].iter().any(|&b| b != b'0')
        && hex(&t[36..52], 16)
        && t[36..52].iter().any(|&b| b != b'0')
        && hex(&t[53..], 2);
    assert_eq!(
        request_log::valid_traceparent(&trace),
        trace_ok,
        "{trace:?}"
    );
    let passed_on = request_log::outgoing_headers();
    assert_eq!(
        passed_on
            .iter()
            .any(|(name, value)| *name == "traceparent" && *value == trace),
        trace_ok
    );
    assert!(passed_on.contains(&("x-request-id", taken)));
    if id_ok {
        outcome |= 32;
    }
    if trace_ok {
        outcome |= 64;
    }
    outcome
}

/// The internal API's inputs (a reason and actor, a block target, a page size, a session
/// limit): never a panic; an actor the gateway records its own changes with is refused in
/// any case (else the audit could be forged through the API); a user id that passes can
/// sit in a key's hash tag and a log line (no braces, spaces or controls); what passes
/// reads back as itself.
pub fn internal(bytes: &[u8]) -> u64 {
    let mut fields = Fields { bytes };
    let (reason, actor, user, email) = (fields.text(), fields.text(), fields.text(), fields.text());
    let limit = fields.text();
    let session_limit = String::from_utf8_lossy(fields.bytes).into_owned();
    let mut outcome = 0;
    match ChangeReason::parse(&reason, &actor) {
        Ok(parsed) => {
            assert!(
                !GATEWAY_ACTORS
                    .iter()
                    .any(|own| own.eq_ignore_ascii_case(parsed.actor.as_str())),
                "{actor:?}"
            );
            assert_eq!(parsed.reason_code.as_str(), reason);
            assert_eq!(parsed.actor.as_str(), actor);
            assert!(!actor.starts_with(' ') && !actor.ends_with(' '));
            outcome |= 1;
        }
        Err(e) => outcome ^= class(&e.to_string()) << 8,
    }
    let user = (fields_choice(bytes) & 1 == 0).then_some(user.as_str());
    let email = (fields_choice(bytes) & 2 == 0).then_some(email.as_str());
    match BlockTarget::parse(email, user) {
        Ok(BlockTarget::User(id)) => {
            assert!(id.as_str().len() <= 128);
            assert!(
                id.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"{}\"".contains(&b)),
                "{id:?}"
            );
            assert_eq!(UserRef::parse(id.as_str()).as_ref(), Ok(&id));
            outcome |= 2;
        }
        Ok(BlockTarget::Email(address)) => {
            assert_eq!(EmailAddress::parse(address.as_str()).as_ref(), Ok(&address));
            outcome |= 4;
        }
        Err(_) => outcome |= 8,
    }
    if let Ok(n) = page_size(Some(&limit)) {
        assert!((1..=MAX_PAGE).contains(&n));
        assert!(limit.bytes().all(|b| b.is_ascii_digit()), "{limit:?}");
        outcome |= 16;
    }
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(&session_limit) {
        match session_limit_of(&value) {
            Ok(Some(n)) => {
                assert_eq!(value.as_f64(), Some(f64::from(n)), "{session_limit:?}");
                outcome |= 32;
            }
            Ok(None) => {
                assert!(value.is_null());
                outcome |= 64;
            }
            Err(_) => outcome |= 128,
        }
    }
    outcome
}

/// Which of a block's two fields an `internal` input sends (from its first byte).
fn fields_choice(bytes: &[u8]) -> u8 {
    bytes.first().copied().unwrap_or(0) >> 6
}

/// The pin the `key_set` target follows from: the test vectors' signed gateway key set.
fn vectors_pin() -> KeyPin {
    KeyPin {
        jwks: Jwks {
            keys: vec![Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: "T9CZzNR9eJPf6ewkQU7LDZtUICMqrTDZHEZb4zy-ZcQ".into(),
                kid: "gw-test-1".into(),
                use_: "sig".into(),
                alg: "EdDSA".into(),
            }],
            signatures: vec![KeySetSignature {
                kid: "gw-test-1".into(),
                signature: "PsNlyTEfLthfFynFE6tUYCbhCutvQ+4Jmcl28cQ7nuQhuNtgpV54zSXHPYwBO2sY5qXUz4Q+nSxvJ52sLNltBQ==".into(),
            }],
        },
    }
}

/// A fetched JWKS, as a client pins it at login and follows its pin to it: never a
/// panic; a set it accepts has only well-formed keys each named once, and a pin follows
/// only to a set signed by the pinned key, which it lists unchanged (a fuzzer cannot
/// forge a signature, so only the genuine set's bytes pass, whatever else the JSON holds).
pub fn key_set(bytes: &[u8]) -> u64 {
    let Ok(fresh) = serde_json::from_slice::<Jwks>(bytes) else {
        return 1;
    };
    let pin = vectors_pin();
    let first = KeyPin::first(fresh.clone());
    let later = pin.follow(fresh.clone());
    for accepted in [&first, &later].into_iter().flatten() {
        assert_eq!(accepted.jwks, fresh);
        for jwk in &fresh.keys {
            assert!(key_of(&fresh, &jwk.kid).is_ok(), "accepted a bad key");
        }
    }
    if later.is_ok() {
        // A signer of the set is the pinned key (trust follows the key, not its kid).
        let pinned = &pin.jwks.keys[0];
        let signed_by_pin = fresh
            .signatures
            .iter()
            .any(|s| fresh.keys.iter().any(|k| k.kid == s.kid && k.x == pinned.x));
        assert!(signed_by_pin, "followed a set no pinned key signed");
        assert!(
            first.is_ok(),
            "a set the pin vouches for is one of its own keys signed"
        );
    }
    let outcome = |result: Result<&KeyPin, &KeySetError>| match result {
        Ok(_) => 2,
        Err(e) => 4 ^ class(&e.to_string()),
    };
    outcome(first.as_ref()) ^ (outcome(later.as_ref()) << 8)
}

/// A subscribe's resume point: its signed payload, and a `Last-Event-ID` header (the
/// first byte gives the header's length): never a panic; a point it accepts is a position
/// that reads back as itself, and a header, when there is one, names that very point.
pub fn resume(bytes: &[u8]) -> u64 {
    let (header, payload) = match bytes.split_first() {
        Some((&n, rest)) => {
            let (header, payload) = rest.split_at(usize::from(n % 32).min(rest.len()));
            (Some(String::from_utf8_lossy(header).into_owned()), payload)
        }
        None => (None, bytes),
    };
    let header = header.as_deref();
    let named = header.map(str::trim).filter(|h| !h.is_empty());
    match resume_point(payload, header) {
        Ok(None) => {
            assert!(
                named.is_none(),
                "a header without a signed point: {header:?}"
            );
            1
        }
        Ok(Some(at)) => {
            assert_eq!(Position::parse(&at.to_string()).ok(), Some(at));
            if let Some(named) = named {
                assert_eq!(Position::parse(named).ok(), Some(at), "{named:?}");
            }
            2
        }
        Err(e) => 3 ^ class(&e.to_string()),
    }
}

/// The publish route's checks (user id; no device session, a valid one or any text; the
/// event type; then the payload's bytes): never a panic; what passes is JSON within the
/// size limit, under an event type that is not the gateway's own.
pub fn publish(bytes: &[u8]) -> u64 {
    let mut fields = Fields { bytes };
    let user = fields.text();
    let device = match fields.small() % 3 {
        0 => None,
        1 => Some("s_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAA".to_string()),
        _ => Some(fields.text()),
    };
    let event_type = fields.text();
    let payload = fields.bytes.to_vec();
    match Publication::parse(&user, device.as_deref(), &event_type, payload) {
        Ok(publication) => {
            assert!(publication.payload.len() <= MAX_EVENT_PAYLOAD_BYTES);
            assert!(serde_json::from_slice::<serde_json::Value>(&publication.payload).is_ok());
            assert!(is_message_type(&publication.event_type));
            assert!(!publication.event_type.starts_with("gateway."));
            1
        }
        Err(e) => 2 ^ class(&e.to_string()),
    }
}

/// A stable number for a text (an error message's first words, a variant's name).
fn outcome_of(text: &str) -> u64 {
    // FNV-1a: only needs to tell outcomes apart.
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The class of an error message: its text up to the first detail (a `:`, `(`, quote,
/// backtick or digit), so that values quoted in it do not count as new outcomes.
fn class(message: &str) -> u64 {
    let cut = message
        .find(|c: char| ":(\"`".contains(c) || c.is_ascii_digit())
        .unwrap_or(message.len());
    outcome_of(&message[..cut.min(48)])
}

/// The most payload bytes the `command` target's gateway allows.
const MAX_PAYLOAD: usize = 65_536;

/// The execute-command body parser, then the CPU-only verification the gateway runs
/// before Redis: never a panic; whatever passes obeys the protocol's rules, is the
/// envelope as sent with a payload that hashes to its `payload_sha256`, and stops
/// passing when its payload or any signed field changes (a fuzzer cannot forge a
/// signature, so only the corpus's genuine commands reach this, mutated in what the
/// signature leaves out: spaces, field order, escapes).
pub fn command(bytes: &[u8]) -> u64 {
    let command = match parse(bytes) {
        Ok(command) => command,
        Err(e) => return 1 ^ class(&e.to_string()),
    };
    match verify(&command, MAX_PAYLOAD) {
        Ok(verified) => {
            assert!(is_message_type(verified.message_type.as_str()));
            assert!(is_request_id(verified.request_id.as_str()));
            assert!(DeviceSessionId::parse(verified.session.as_str()).is_ok());
            assert_eq!(verified.envelope, command.envelope);
            assert_eq!(verified.key.as_str(), command.envelope.client_public_key);
            assert!(verified.payload.len() <= MAX_PAYLOAD);
            assert_eq!(
                sha256_hex(&verified.payload),
                command.envelope.payload_sha256
            );
            let signature = STANDARD
                .decode(&command.signature)
                .ok()
                .and_then(|s| <[u8; 64]>::try_from(s).ok())
                .expect("a verified signature is 64 bytes of base64");
            assert_eq!(
                verified.request_sha256,
                request_sha256(&command.envelope, &signature)
            );
            // Another payload of the same size (one at the size limit stays within it).
            let mut other_payload = command.clone();
            let mut payload = verified.payload.clone();
            match payload.first_mut() {
                Some(first) => *first ^= 1,
                None => payload.push(b' '),
            }
            other_payload.payload = STANDARD.encode(&payload);
            assert!(
                matches!(
                    verify(&other_payload, MAX_PAYLOAD),
                    Err(CommandError::PayloadHashMismatch)
                ),
                "a changed payload passed"
            );
            let mut later = command.clone();
            later.envelope.timestamp_ms ^= 1;
            assert!(
                matches!(
                    verify(&later, MAX_PAYLOAD),
                    Err(CommandError::InvalidSignature(_))
                ),
                "a changed timestamp passed"
            );
            let mut other_type = command;
            other_type.envelope.message_type.push('x');
            assert!(
                verify(&other_type, MAX_PAYLOAD).is_err(),
                "a changed type passed"
            );
            2
        }
        Err(CommandError::InvalidSignature(_)) => 3,
        Err(e) => 4 ^ class(&e.to_string()),
    }
}

/// Reads length-prefixed fields from fuzz bytes (for building envelopes).
struct Fields<'a> {
    bytes: &'a [u8],
}

impl Fields<'_> {
    fn text(&mut self) -> String {
        let Some((&n, rest)) = self.bytes.split_first() else {
            return String::new();
        };
        // Up to 63 bytes: a full IPv6 address with brackets and a port, a message type
        // at its 64-character limit less one.
        let n = usize::from(n % 64).min(rest.len());
        let (field, rest) = rest.split_at(n);
        self.bytes = rest;
        String::from_utf8_lossy(field).into_owned()
    }

    /// A number from one byte: for a field in the middle of an envelope, so that short
    /// inputs still reach the fields after it.
    fn small(&mut self) -> u64 {
        let Some((&n, rest)) = self.bytes.split_first() else {
            return 0;
        };
        self.bytes = rest;
        u64::from(n)
    }

    fn number(&mut self) -> u64 {
        let n = self.bytes.len().min(8);
        let (field, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        field.iter().fold(0, |acc, b| (acc << 8) | u64::from(*b))
    }

    fn command(&mut self) -> CommandEnvelope {
        CommandEnvelope {
            protocol_version: u32::try_from(self.number() % 3).unwrap_or(0),
            device_session_id: self.text(),
            client_public_key: self.text(),
            message_type: self.text(),
            request_id: self.text(),
            timestamp_ms: self.number(),
            payload_sha256: self.text(),
        }
    }

    fn response(&mut self) -> ResponseEnvelope {
        ResponseEnvelope {
            protocol_version: u32::try_from(self.number() % 3).unwrap_or(0),
            request_id: self.text(),
            device_session_id: self.text(),
            timestamp_ms: self.number(),
            status: self.text(),
            result_code: self.text(),
            backend_status: u16::try_from(self.number() % 600).unwrap_or(0),
            payload_sha256: self.text(),
            request_sha256: self.text(),
            key_id: self.text(),
        }
    }

    fn event(&mut self) -> EventEnvelope {
        EventEnvelope {
            protocol_version: u32::try_from(self.number() % 3).unwrap_or(0),
            event_id: self.text(),
            event_type: self.text(),
            device_session_id: self.text(),
            request_sha256: self.text(),
            position: self.text(),
            sequence: self.small(),
            target: self.text(),
            user_id: self.text(),
            timestamp_ms: self.number(),
            payload_sha256: self.text(),
            key_id: self.text(),
        }
    }
}

/// The canonical encodings are injective: two different envelopes never sign the same
/// bytes (else a signature over one would pass for the other), and a command's, a
/// response's and an event's bytes are never one another's.
pub fn canonical(bytes: &[u8]) -> u64 {
    let (left, right) = bytes.split_at(bytes.len() / 2);
    let (a, b) = (
        Fields { bytes: left }.command(),
        Fields { bytes: right }.command(),
    );
    assert_eq!(
        a == b,
        command_bytes(&a) == command_bytes(&b),
        "{a:?} / {b:?}"
    );
    let (r, s) = (
        Fields { bytes: left }.response(),
        Fields { bytes: right }.response(),
    );
    assert_eq!(
        r == s,
        response_bytes(&r) == response_bytes(&s),
        "{r:?} / {s:?}"
    );
    let (e, f) = (
        Fields { bytes: left }.event(),
        Fields { bytes: right }.event(),
    );
    assert_eq!(e == f, event_bytes(&e) == event_bytes(&f), "{e:?} / {f:?}");
    assert_ne!(command_bytes(&a), response_bytes(&r));
    assert_ne!(event_bytes(&e), command_bytes(&a));
    assert_ne!(event_bytes(&e), response_bytes(&r));
    u64::from(a == b) | (u64::from(r == s) << 1) | (u64::from(e == f) << 2)
}

/// The e-mail parser: never a panic; what it accepts is normalised once and for all
/// (parsing the result gives it back) and fits the limits of an address. Its inbox's
/// address (the send budget's) is one too, its own inbox, and never longer.
pub fn email(bytes: &[u8]) -> u64 {
    let raw = String::from_utf8_lossy(bytes);
    match EmailAddress::parse(&raw) {
        Ok(address) => {
            let again = EmailAddress::parse(address.as_str()).expect("a parsed address parses");
            assert_eq!(again, address);
            assert!(address.as_str().len() <= 254);
            assert_eq!(address.as_str().matches('@').count(), 1);
            assert!(!address.as_str().chars().any(char::is_whitespace));
            match address.mailbox() {
                Some(inbox) => {
                    assert_ne!(inbox, address);
                    assert_eq!(EmailAddress::parse(inbox.as_str()).as_ref(), Ok(&inbox));
                    assert_eq!(inbox.mailbox(), None);
                    assert!(inbox.as_str().len() <= address.as_str().len());
                    4
                }
                None => 2,
            }
        }
        Err(e) => 1 ^ class(&e.to_string()),
    }
}

/// The id, code, key and reason parsers of the public and internal routes: never a
/// panic, and what they accept round-trips through its text.
pub fn ids(bytes: &[u8]) -> u64 {
    let Some((&which, rest)) = bytes.split_first() else {
        return 0;
    };
    let raw = String::from_utf8_lossy(rest);
    let ok = match which % 7 {
        0 => ChallengeId::parse(&raw)
            .map(|id| assert_eq!(ChallengeId::parse(id.as_str()), Ok(id.clone())))
            .is_ok(),
        1 => DeviceSessionId::parse(&raw)
            .map(|id| assert_eq!(DeviceSessionId::parse(id.as_str()), Ok(id.clone())))
            .is_ok(),
        2 => UserId::parse(&raw)
            .map(|id| assert_eq!(UserId::parse(id.as_str()), Ok(id.clone())))
            .is_ok(),
        // Only the one encoding of a point that is no small-order one.
        3 => ClientPublicKey::parse(&raw)
            .map(|key| {
                let point = key.verifying_key();
                assert_eq!(key.as_str(), STANDARD.encode(point.as_bytes()));
                assert_eq!(point.to_edwards().compress().to_bytes(), *point.as_bytes());
                assert!(!point.is_weak());
            })
            .is_ok(),
        4 => VerificationCode::parse(&raw, 6)
            .map(|code| assert_eq!(code.expose().len(), 6))
            .is_some(),
        5 => VerificationCode::parse(&raw, 8)
            .map(|code| assert!(code.expose().bytes().all(|b| b.is_ascii_digit())))
            .is_some(),
        _ => ReasonCode::parse(&raw)
            .map(|r| assert_eq!(r.as_str(), raw))
            .is_ok(),
    };
    u64::from(which % 7) << 1 | u64::from(ok)
}

/// Percent-encodes every byte of `text` but unreserved ones (how a client sends a value).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The query-string parser every route reads its parameters with: never a panic (raw
/// bytes, escapes cut short, `%` before a multi-byte character: a crash of every route
/// once); an encoded name and value come back as they were; and a query with no `%` is
/// taken as written.
pub fn query(bytes: &[u8]) -> u64 {
    let raw = String::from_utf8_lossy(bytes);
    let pairs = edge_auth_spin::http::query_pairs(&format!("/p?{raw}"));
    let mut outcome = u64::try_from(pairs.len().min(8)).unwrap_or(8);
    if !raw.contains('%') {
        for (name, value) in &pairs {
            assert!(raw.contains(name.as_str()) && raw.contains(value.as_str()));
        }
        outcome |= 1 << 4;
    }
    let mut middle = raw.len() / 2;
    while !raw.is_char_boundary(middle) {
        middle -= 1;
    }
    let (name, value) = raw.split_at(middle);
    let encoded = format!("/p?{}={}&x=1", encode(name), encode(value));
    let got = edge_auth_spin::http::query_pairs(&encoded);
    if !name.is_empty() {
        assert_eq!(
            got.first(),
            Some(&(name.to_string(), value.to_string())),
            "{encoded}"
        );
    }
    outcome
}

/// The client a request is attributed to (its budgets are keyed by it): never a panic;
/// a peer that is no trusted proxy is the client whatever the headers say (else a client
/// could pick its own budget); and a budget key is an address or an IPv6 prefix, never
/// text from a header.
pub fn client(bytes: &[u8]) -> u64 {
    let Some((&which, rest)) = bytes.split_first() else {
        return 0;
    };
    let mut fields = Fields { bytes: rest };
    let hops = ClientHops {
        peer: fields.text(),
        forwarded: vec![fields.text(), fields.text()],
        x_forwarded_for: vec![fields.text(), fields.text()],
    };
    let header = if which & 1 == 0 {
        "x-forwarded-for"
    } else {
        "forwarded"
    };
    let prefix = 32 + u32::from(which >> 1) % 97;
    let policy = ClientPolicy::from_settings(|name| match name {
        "trusted_proxies" => Some("10.0.0.0/8, 127.0.0.1, ::1".to_string()),
        "trusted_proxy_header" => Some(header.to_string()),
        "client_ipv6_prefix" => Some(prefix.to_string()),
        _ => None,
    })
    .expect("a valid policy");
    let trusted = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 10 || v4 == std::net::Ipv4Addr::LOCALHOST,
        IpAddr::V6(v6) => v6 == std::net::Ipv6Addr::LOCALHOST,
    };
    let client = policy.resolve(&hops);
    // The header the proxies are not said to maintain is never read: a client behind a
    // trusted proxy could write it.
    let mut only_configured = hops.clone();
    if which & 1 == 0 {
        only_configured.forwarded.clear();
    } else {
        only_configured.x_forwarded_for.clear();
    }
    assert_eq!(policy.resolve(&only_configured), client, "{hops:?}");
    // With nothing in it, the peer is the client.
    let mut no_headers = only_configured;
    no_headers.forwarded.clear();
    no_headers.x_forwarded_for.clear();
    if let Ok(peer) = hops.peer.parse::<SocketAddr>() {
        let peer = match peer.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        assert_eq!(
            policy.resolve(&no_headers),
            ClientAddr::Ip(peer),
            "{hops:?}"
        );
    }
    // An IPv4-mapped IPv6 peer is its IPv4 address.
    let peer = hops.peer.parse::<SocketAddr>().map(|peer| match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    });
    if let Ok(peer) = peer
        && !trusted(peer)
    {
        assert_eq!(client, ClientAddr::Ip(peer), "{hops:?}");
    }
    // The right-most untrusted hop wins: hops a client writes on the left, before any
    // proxy appends, change nothing (else a client could pick its own budget).
    if let ClientAddr::Ip(ip) = client
        && !trusted(ip)
    {
        let forged = match which >> 6 {
            0 => "203.0.113.9",
            1 => "2001:db8::1",
            2 => "10.1.2.3",
            _ => "unknown",
        };
        let mut spoofed = hops.clone();
        if which & 1 == 0 {
            spoofed.x_forwarded_for.insert(0, forged.to_string());
        } else {
            let quoted = if forged.contains(':') {
                format!("for=\"[{forged}]:4711\"")
            } else {
                format!("for={forged}")
            };
            spoofed.forwarded.insert(0, quoted);
        }
        assert_eq!(policy.resolve(&spoofed), client, "{spoofed:?}");
    }
    let key = policy.budget_key(&client);
    match &client {
        ClientAddr::Ip(IpAddr::V4(ip)) => {
            assert_eq!(key, ip.to_string());
            2 | u64::from(which & 1) << 3
        }
        ClientAddr::Ip(IpAddr::V6(_)) => {
            let (address, bits) = key.split_once('/').expect("a prefix");
            assert!(address.parse::<std::net::Ipv6Addr>().is_ok(), "{key}");
            assert_eq!(bits, prefix.to_string());
            4 | u64::from(which & 1) << 3
        }
        ClientAddr::Unreadable(raw) => {
            assert_eq!(&key, raw);
            assert_eq!(raw, &hops.peer);
            1 | u64::from(which & 1) << 3
        }
    }
}
