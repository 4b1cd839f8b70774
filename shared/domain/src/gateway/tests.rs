//! The gateway's rules with in-memory ports: order of checks, what each refusal costs,
//! signed answers, and that no byte of a signed command can change unnoticed.

use std::cell::{Cell, RefCell};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;
use edge_auth_protocol::canonical::{request_sha256, sha256_hex, sign_command};
use edge_auth_protocol::verify::{KeySetError, check_key_set, verify_response};
use edge_auth_protocol::wire::{CommandEnvelope, SignedCommand};

use crate::gateway::command::{MAX_COMMAND_BODY_BYTES, MessageType, max_body_bytes, verify};
use crate::gateway::execute::{
    Admission, CommandError, Gateway, Refusal, SUBSCRIBE, admit, check_executable_type,
    execute_command, prepare, refuse,
};
use crate::gateway::ports::{
    Backend, BackendReply, BackendRequest, ClientAdmission, ClientOutcome, CommandGate,
    SessionAdmission, SessionOutcome, StreamClaim,
};
use crate::gateway::settings::{
    GatewaySettings, GatewaySettingsError, MAX_PAYLOAD_LIMIT, max_payload_setting,
};
use crate::ids::{AddressTag, DeviceSessionId};
use crate::sessions::input::{ChangeReason, UserRef};
use crate::sessions::model::{AuditRecord, Page, SessionRecord, StatusFilter};
use crate::sessions::ports::{
    BatchOutcome, BlockChange, FenceMark, RevokeBatch, RevokeOutcome, SessionStore, UserFence,
};
use crate::time::Elapsed;

/// The reserved types are tested end to end; here no session store is ever reached.
struct NoSessions;

impl SessionStore for NoSessions {
    fn get(&self, _: &DeviceSessionId) -> anyhow::Result<Option<SessionRecord>> {
        anyhow::bail!("not used")
    }
    fn locate_user(&self, _: &UserRef) -> anyhow::Result<Vec<AddressTag>> {
        anyhow::bail!("not used")
    }
    fn raise_fence(&self, _: &UserRef) -> anyhow::Result<Vec<AddressTag>> {
        anyhow::bail!("not used")
    }
    fn read_fence(&self, _: &UserRef) -> anyhow::Result<UserFence> {
        anyhow::bail!("not used")
    }
    fn lower_fence(&self, _: &UserRef, _: Option<FenceMark>) -> anyhow::Result<bool> {
        anyhow::bail!("not used")
    }
    fn list(
        &self,
        _: AddressTag,
        _: &UserRef,
        _: StatusFilter,
        _: Option<&str>,
        _: u32,
    ) -> anyhow::Result<Option<Page<SessionRecord>>> {
        anyhow::bail!("not used")
    }
    fn revoke(&self, _: &DeviceSessionId, _: &ChangeReason) -> anyhow::Result<RevokeOutcome> {
        anyhow::bail!("not used")
    }
    fn revoke_batch(&self, _: &RevokeBatch<'_>) -> anyhow::Result<BatchOutcome> {
        anyhow::bail!("not used")
    }
    fn set_blocked(&self, _: &BlockChange<'_>) -> anyhow::Result<bool> {
        anyhow::bail!("not used")
    }
    fn set_session_limit(&self, _: Option<u32>) -> anyhow::Result<()> {
        anyhow::bail!("not used")
    }
    fn audit(
        &self,
        _: AddressTag,
        _: &UserRef,
        _: Option<&str>,
        _: u32,
    ) -> anyhow::Result<Option<Page<AuditRecord>>> {
        anyhow::bail!("not used")
    }
}

const SESSION: &str = "s_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAA";

fn device() -> SigningKey {
    SigningKey::from_bytes(&[1; 32])
}

fn settings() -> GatewaySettings {
    GatewaySettings::from_settings(|name| match name {
        "gateway_signing_key" => Some(STANDARD.encode([7u8; 32])),
        "gateway_key_id" => Some("gw-1".into()),
        "backend_url" => Some("http://backend.test".into()),
        _ => None,
    })
    .expect("valid settings")
}

fn signed(message_type: &str, payload: &[u8]) -> (SignedCommand, String) {
    let key = device();
    let envelope = CommandEnvelope {
        protocol_version: 1,
        device_session_id: SESSION.into(),
        client_public_key: STANDARD.encode(key.verifying_key().as_bytes()),
        message_type: message_type.into(),
        request_id: "AAECAwQFBgcICQoLDA0ODw".into(),
        timestamp_ms: 1_795_000_000_000,
        payload_sha256: sha256_hex(payload),
    };
    let (raw, signature) = sign_command(&key, &envelope);
    let hash = request_sha256(&envelope, &raw);
    (
        SignedCommand {
            envelope,
            payload: STANDARD.encode(payload),
            signature,
        },
        hash,
    )
}

/// A gate that answers as told and counts its calls.
struct Gate {
    client: ClientOutcome,
    session: SessionOutcome,
    calls: RefCell<Vec<&'static str>>,
    /// The stream claim each session step was given.
    claims: RefCell<Vec<Option<StreamClaim>>>,
    /// Whether each session step was told the type is known.
    known: RefCell<Vec<bool>>,
    /// How long each session step was told to reserve the request id.
    reserved_ms: RefCell<Vec<u64>>,
}

impl Gate {
    fn admitting() -> Self {
        Self {
            client: ClientOutcome::Admitted,
            session: SessionOutcome::Admitted {
                now_ms: 1_795_000_000_005,
                user_id: "u_1".into(),
            },
            calls: RefCell::new(Vec::new()),
            claims: RefCell::new(Vec::new()),
            known: RefCell::new(Vec::new()),
            reserved_ms: RefCell::new(Vec::new()),
        }
    }
}

impl CommandGate for Gate {
    fn admit_client(&self, _: &ClientAdmission<'_>) -> anyhow::Result<ClientOutcome> {
        self.calls.borrow_mut().push("client");
        Ok(self.client)
    }
    fn admit_session(&self, a: &SessionAdmission<'_>) -> anyhow::Result<SessionOutcome> {
        self.calls.borrow_mut().push("session");
        self.claims.borrow_mut().push(a.stream);
        self.known.borrow_mut().push(a.known_type);
        self.reserved_ms.borrow_mut().push(a.replay_ttl_ms);
        Ok(self.session.clone())
    }
}

/// A backend answering `status` with the request body.
struct Echo {
    status: u16,
    calls: RefCell<u32>,
}

impl Echo {
    fn answering(status: u16) -> Self {
        Self {
            status,
            calls: RefCell::new(0),
        }
    }
}

impl Backend for Echo {
    fn call(&self, request: &BackendRequest<'_>) -> BackendReply {
        *self.calls.borrow_mut() += 1;
        BackendReply::Answered {
            status: self.status,
            body: request.payload.to_vec(),
        }
    }
}

fn run(
    gate: &Gate,
    backend: &Echo,
    command: &SignedCommand,
) -> Result<crate::gateway::execute::Executed, CommandError> {
    let settings = settings();
    let verified = prepare(&settings, command)?;
    let gw = Gateway {
        gate,
        backend,
        sessions: &NoSessions,
        settings: &settings,
        clock: &Clock::default(),
    };
    execute_command(&gw, "203.0.113.9", &verified)
}

/// A monotonic clock the test moves.
#[derive(Debug, Default)]
struct Clock(Cell<u64>);

impl Elapsed for Clock {
    fn elapsed_ms(&self) -> u64 {
        self.0.get()
    }
}

#[test]
fn the_answer_is_stamped_when_it_is_signed_after_the_backend_call() {
    // Review finding: stamped at admission, the answer of a slow backend was early by the
    // backend's time; a client setting its clock by it then dated every command stale.
    struct Slow<'a>(&'a Clock);
    impl Backend for Slow<'_> {
        fn call(&self, request: &BackendRequest<'_>) -> BackendReply {
            self.0.0.set(self.0.0.get() + 2_500);
            BackendReply::Answered {
                status: 200,
                body: request.payload.to_vec(),
            }
        }
    }
    let settings = settings();
    let (command, hash) = signed("echo", b"x");
    let verified = prepare(&settings, &command).expect("prepared");
    let clock = Clock(Cell::new(40));
    let gw = Gateway {
        gate: &Gate::admitting(),
        backend: &Slow(&clock),
        sessions: &NoSessions,
        settings: &settings,
        clock: &clock,
    };
    let executed = execute_command(&gw, "203.0.113.9", &verified).expect("executed");
    assert_eq!(
        executed.response.envelope.timestamp_ms,
        1_795_000_000_005 + 2_500,
        "admitted at ...005 by the store's clock, signed 2.5 s later"
    );
    verify_response(
        &executed.response,
        &settings.jwks().expect("a key"),
        &command.envelope.request_id,
        &hash,
    )
    .expect("the stamp is signed");
}

#[test]
fn an_admitted_command_reaches_the_backend_and_the_answer_verifies() {
    let (command, hash) = signed("echo", b"hello");
    let gate = Gate::admitting();
    let backend = Echo::answering(200);
    let executed = run(&gate, &backend, &command).expect("executed");
    assert_eq!(*gate.calls.borrow(), ["client", "session"]);
    assert_eq!(*backend.calls.borrow(), 1);
    assert!(executed.refusal.is_none());
    let jwks = settings().jwks().expect("a key");
    let payload = verify_response(
        &executed.response,
        &jwks,
        &command.envelope.request_id,
        &hash,
    )
    .expect("verifies");
    assert_eq!(payload, b"hello");
}

#[test]
fn changing_any_byte_of_any_field_the_payload_or_the_signature_is_refused() {
    let (good, _) = signed("echo", b"payload bytes");
    let max = 65_536;
    assert!(verify(&good, max).is_ok());
    let mut variants: Vec<SignedCommand> = Vec::new();
    let text_fields: [fn(&mut CommandEnvelope) -> &mut String; 5] = [
        |e| &mut e.device_session_id,
        |e| &mut e.client_public_key,
        |e| &mut e.message_type,
        |e| &mut e.request_id,
        |e| &mut e.payload_sha256,
    ];
    for field in text_fields {
        let len = field(&mut good.envelope.clone()).len();
        for i in 0..len {
            for flip in [1u8, 0x20] {
                let mut c = good.clone();
                let text = field(&mut c.envelope);
                let mut bytes = text.clone().into_bytes();
                bytes[i] ^= flip;
                if let Ok(changed) = String::from_utf8(bytes) {
                    *text = changed;
                    variants.push(c);
                }
            }
        }
    }
    for bit in 0..64 {
        let mut c = good.clone();
        c.envelope.timestamp_ms ^= 1 << bit;
        variants.push(c);
    }
    let mut c = good.clone();
    c.envelope.protocol_version = 2;
    variants.push(c);
    for (which, encoded) in [(0, &good.payload), (1, &good.signature)] {
        let bytes = STANDARD.decode(encoded).expect("base64");
        for i in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[i] ^= 1;
            let mut c = good.clone();
            if which == 0 {
                c.payload = STANDARD.encode(&changed);
            } else {
                c.signature = STANDARD.encode(&changed);
            }
            variants.push(c);
        }
    }
    assert!(variants.len() > 400, "{}", variants.len());
    for variant in variants {
        assert!(verify(&variant, max).is_err(), "accepted: {variant:?}");
    }
}

#[test]
fn garbage_never_reaches_the_gate() {
    let (mut command, _) = signed("echo", b"x");
    command.signature = STANDARD.encode([0u8; 64]);
    let gate = Gate::admitting();
    let backend = Echo::answering(200);
    let err = run(&gate, &backend, &command).expect_err("refused");
    assert!(matches!(err, CommandError::InvalidSignature(_)), "{err}");
    assert!(gate.calls.borrow().is_empty());
}

#[test]
fn a_stale_command_stops_at_the_client_step_with_the_server_time() {
    let (command, _) = signed("echo", b"x");
    let gate = Gate {
        client: ClientOutcome::Stale { now_ms: 42 },
        ..Gate::admitting()
    };
    let backend = Echo::answering(200);
    let err = run(&gate, &backend, &command).expect_err("stale");
    assert!(
        matches!(
            err,
            CommandError::Stale {
                server_time_ms: 42,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(*gate.calls.borrow(), ["client"]);
}

#[test]
fn a_command_stale_by_the_session_nodes_clock_is_a_plain_stale_error() {
    let (command, _) = signed("echo", b"x");
    let gate = Gate {
        session: SessionOutcome::Stale { now_ms: 7 },
        ..Gate::admitting()
    };
    let backend = Echo::answering(200);
    let err = run(&gate, &backend, &command).expect_err("stale");
    assert!(
        matches!(
            err,
            CommandError::Stale {
                server_time_ms: 7,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(*backend.calls.borrow(), 0);
}

#[test]
fn refusals_after_the_session_step_are_signed_and_skip_the_backend() {
    for (outcome, refusal) in [
        (
            SessionOutcome::Revoked { now_ms: 1 },
            Refusal::SessionRevoked,
        ),
        (
            SessionOutcome::Expired { now_ms: 1 },
            Refusal::SessionExpired,
        ),
        (SessionOutcome::Blocked { now_ms: 1 }, Refusal::UserBlocked),
        (SessionOutcome::Replayed { now_ms: 1 }, Refusal::Replayed),
    ] {
        let (command, hash) = signed("echo", b"x");
        let gate = Gate {
            session: outcome,
            ..Gate::admitting()
        };
        let backend = Echo::answering(200);
        let executed = run(&gate, &backend, &command).expect("signed");
        assert_eq!(executed.refusal.as_ref(), Some(&refusal));
        assert_eq!(executed.response.envelope.result_code, refusal.code());
        assert_eq!(*backend.calls.borrow(), 0);
        let jwks = settings().jwks().expect("a key");
        assert!(
            verify_response(
                &executed.response,
                &jwks,
                &command.envelope.request_id,
                &hash
            )
            .is_ok()
        );
    }
}

#[test]
fn a_command_claims_no_stream_and_a_subscribe_over_its_cap_is_a_signed_refusal_with_a_wait() {
    let gate = Gate::admitting();
    let (command, _) = signed("echo", b"x");
    run(&gate, &Echo::answering(200), &command).expect("executed");
    assert_eq!(*gate.claims.borrow(), [None]);

    let claim = StreamClaim {
        max_streams: 3,
        ends_in_ms: 25_000,
        grace_ms: 15_000,
    };
    let full = Gate {
        session: SessionOutcome::TooManyStreams {
            now_ms: 1_795_000_000_005,
            retry_after_ms: 7_250,
        },
        ..Gate::admitting()
    };
    let (command, hash) = signed(SUBSCRIBE, b"");
    let settings = settings();
    let verified = verify(&command, settings.max_payload).expect("verifies");
    let admission = admit(&full, &settings, "203.0.113.9", &verified, Some(claim)).expect("gate");
    assert_eq!(*full.claims.borrow(), [Some(claim)]);
    let Admission::Refused { now_ms, refusal } = admission else {
        panic!("admitted over the cap: {admission:?}");
    };
    assert_eq!(
        refusal,
        Refusal::TooManyStreams {
            retry_after_ms: 7_250
        }
    );
    assert!(refusal.by_gate(), "the gate counts it");
    let key = settings.signing.as_ref().expect("a key");
    let refused = refuse(key, &verified, now_ms, refusal);
    assert_eq!(refused.response.envelope.result_code, "too_many_streams");
    let jwks = settings.jwks().expect("a key");
    let payload = verify_response(
        &refused.response,
        &jwks,
        &command.envelope.request_id,
        &hash,
    )
    .expect("signed");
    let error: serde_json::Value = serde_json::from_slice(&payload).expect("json");
    assert_eq!(error["error"]["code"], "too_many_streams");
    assert_eq!(error["error"]["retry_after_ms"], 7_250);
}

#[test]
fn backend_statuses_map_to_ok_rejected_and_unavailable() {
    for (status, refusal) in [
        (201, None),
        (404, Some(Refusal::BackendRejected { status: 404 })),
        (503, Some(Refusal::BackendUnavailable)),
        (302, Some(Refusal::BackendUnavailable)),
    ] {
        let (command, _) = signed("echo", b"x");
        let backend = Echo::answering(status);
        let executed = run(&Gate::admitting(), &backend, &command).expect("signed");
        assert_eq!(executed.refusal, refusal, "{status}");
        assert_eq!(executed.response.envelope.backend_status, status);
    }
}

#[test]
fn no_signing_key_or_no_backend_is_not_configured() {
    let (command, _) = signed("echo", b"x");
    let no_key = GatewaySettings::from_settings(|_| None).expect("defaults");
    assert!(matches!(
        prepare(&no_key, &command),
        Err(CommandError::NotConfigured("gateway_signing_key"))
    ));
    let no_backend = GatewaySettings::from_settings(|name| {
        (name == "gateway_signing_key").then(|| STANDARD.encode([7u8; 32]))
    })
    .expect("valid");
    assert!(matches!(
        prepare(&no_backend, &command),
        Err(CommandError::NotConfigured("backend_url"))
    ));
    // Reserved types need no backend.
    let (logout, _) = signed("gateway.logout", b"");
    assert!(prepare(&no_backend, &logout).is_ok());
}

#[test]
fn a_bad_backend_url_is_a_settings_error_that_never_quotes_it() {
    let with_url = |url: &str| {
        GatewaySettings::from_settings(|name| match name {
            "gateway_signing_key" => Some(STANDARD.encode([7u8; 32])),
            "backend_url" => Some(url.to_string()),
            _ => None,
        })
    };
    for good in [
        "http://example-backend.spin.internal",
        "https://api.example.com/v1/",
        " https://[::1]:8443 ",
        "HTTPS://api.example.com:443",
        "http://10.0.0.7:8080/base",
    ] {
        let settings = with_url(good).expect(good);
        let url = settings.backend.expect("a backend").url;
        assert!(!url.ends_with('/') && !url.starts_with(' '), "{url:?}");
        assert!(
            url.starts_with("http://") || url.starts_with("https://"),
            "{url:?}"
        );
    }
    for bad in [
        "ftp://backend.test",
        "backend.test",
        "http://",
        "http:///path",
        "https://ops:s3cret@backend.test",
        "https://backend.test/v1?tenant=s3cret",
        "https://backend.test/#s3cret",
        "https://backend.test/a b",
        "http://:8080",
        "http://backend.test:abc",
        "http://backend.test:/x",
        "https://[]:443",
    ] {
        let err = with_url(bad).expect_err(bad).to_string();
        assert!(err.starts_with("backend_url must be"), "{bad}: {err}");
        assert!(
            !err.contains("s3cret") && !err.contains("backend.test"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn a_backend_table_of_none_routes_nothing() {
    use crate::gateway::settings::BackendRoutes;
    let none = BackendRoutes::parse(" none ").expect("valid");
    let echo = crate::gateway::command::MessageType::parse("echo").expect("a type");
    assert!(none.route(&echo).is_none());
    assert!(
        BackendRoutes::parse("")
            .expect("valid")
            .route(&echo)
            .is_none()
    );
    assert!(
        BackendRoutes::parse("none, echo=POST /echo").is_err(),
        "none stands alone"
    );
}

#[test]
fn the_backend_table_names_its_bad_entry() {
    use crate::gateway::settings::BackendRoutes;
    assert!(BackendRoutes::parse("echo=POST /echo, a.b=GET /x/y").is_ok());
    for (raw, bad) in [
        ("echo=POST /echo, oops", "oops"),
        ("echo=FETCH /echo", "echo=FETCH /echo"),
        ("gateway.logout=POST /x", "gateway.logout=POST /x"),
        ("echo=POST echo", "echo=POST echo"),
        ("echo=POST /a, echo=GET /b", "echo=GET /b"),
    ] {
        let err = BackendRoutes::parse(raw).expect_err(raw).to_string();
        assert!(err.contains(&format!("{bad:?}")), "{err}");
    }
}

#[test]
fn execute_command_refuses_a_subscribe_before_its_gate_and_takes_every_other_type() {
    let settings = settings();
    let (subscribe, _) = signed(SUBSCRIBE, b"");
    let subscribe = verify(&subscribe, settings.max_payload).expect("verifies");
    assert!(matches!(
        check_executable_type(&subscribe),
        Err(CommandError::InvalidRequest(m)) if m.contains("subscribe-events")
    ));
    for other in [
        "echo",
        "gateway.logout",
        "gateway.sessions",
        "gateway.made_up",
    ] {
        let (command, _) = signed(other, b"");
        let command = verify(&command, settings.max_payload).expect("verifies");
        assert!(check_executable_type(&command).is_ok(), "{other}");
    }
}

#[test]
fn a_subscribe_admitted_without_a_stream_is_an_unknown_type_that_spends_no_type_budget() {
    // Review finding: it spent the push route's `gateway.subscribe` budget, then got 404
    // (execute-command now refuses one before its gate; the gate still does not count it).
    let settings = settings();
    let (command, _) = signed(SUBSCRIBE, b"");
    let verified = verify(&command, settings.max_payload).expect("verifies");
    let gate = Gate::admitting();
    admit(&gate, &settings, "203.0.113.9", &verified, None).expect("gate");
    let claim = StreamClaim {
        max_streams: 3,
        ends_in_ms: 25_000,
        grace_ms: 15_000,
    };
    admit(&gate, &settings, "203.0.113.9", &verified, Some(claim)).expect("gate");
    assert_eq!(
        *gate.known.borrow(),
        [false, true],
        "unknown through execute-command, known where it opens a stream"
    );
}

#[test]
fn a_subscribes_request_id_stays_reserved_as_long_as_its_stream_can_count() {
    // Review finding: the reservation lapsed while a longer stream was open, and a fresh
    // subscribe reusing the id moved that stream's claim instead of taking a place.
    let settings = settings();
    let (command, _) = signed(SUBSCRIBE, b"");
    let verified = verify(&command, settings.max_payload).expect("verifies");
    let gate = Gate::admitting();
    let long = StreamClaim {
        max_streams: 3,
        ends_in_ms: 3_600_000,
        grace_ms: 15_000,
    };
    let short = StreamClaim {
        ends_in_ms: 1_000,
        ..long
    };
    for claim in [Some(long), Some(short), None] {
        admit(&gate, &settings, "203.0.113.9", &verified, claim).expect("gate");
    }
    let window = settings.replay_ttl_ms();
    assert!(window < 3_615_000 && window > 16_000, "{window}");
    assert_eq!(*gate.reserved_ms.borrow(), [3_615_000, window, window]);
}

#[test]
fn only_routed_and_reserved_types_are_known_so_invented_types_share_one_label() {
    let settings = settings();
    let known = |raw: &str| settings.knows(&MessageType::parse(raw).expect("a valid type"), false);
    assert!(known("echo"), "routed by default");
    assert!(known("gateway.logout") && known("gateway.sessions"));
    assert!(!known("gateway.anything_else"));
    assert!(!known("never.routed"));
    let subscribe = MessageType::parse(SUBSCRIBE).expect("a valid type");
    assert!(
        settings.knows(&subscribe, true) && !settings.knows(&subscribe, false),
        "known only where it opens a stream"
    );
}

/// `command` as a JSON writer that escapes every `+` and `/` as `\u` sends it (.NET's
/// default escapes `+`), pretty-printed.
fn escaped_body(command: &SignedCommand) -> String {
    serde_json::to_string_pretty(command)
        .expect("serialises")
        .replace('+', "\\u002B")
        .replace('/', "\\u002F")
}

/// The longest envelope: every field at its longest.
fn longest(mut command: SignedCommand) -> SignedCommand {
    command.envelope.request_id = "R".repeat(128);
    command.envelope.timestamp_ms = 9_007_199_254_740_991;
    command
}

#[test]
fn a_body_with_the_largest_payload_and_the_longest_envelope_fits_the_body_limit_with_room() {
    // Bytes whose base64 is all `+`: the costliest to escape.
    let pluses = |n: usize| {
        [0xfb, 0xef, 0xbe]
            .into_iter()
            .cycle()
            .take(n)
            .collect::<Vec<_>>()
    };
    for max_payload in [1, 1024, 65_536, 170_000] {
        let (command, _) = signed(&"m".repeat(64), &pluses(max_payload));
        let command = longest(command);
        // All `+`, but for the last group of an uneven length.
        let others = command.payload.bytes().filter(|b| !b"+=".contains(b));
        assert!(others.count() <= 2, "{}", command.payload);
        let body = escaped_body(&command);
        let limit = max_body_bytes(max_payload);
        assert!(
            body.len() + 4 * 1024 <= limit,
            "{max_payload}: a body of {} bytes against a limit of {limit}",
            body.len()
        );
    }
    // Past about 170 KiB the limit is the largest payload's, unescaped.
    for max_payload in [200_000, MAX_PAYLOAD_LIMIT] {
        assert_eq!(max_body_bytes(max_payload), MAX_COMMAND_BODY_BYTES);
    }
    let (command, _) = signed(&"m".repeat(64), &pluses(MAX_PAYLOAD_LIMIT));
    let body = serde_json::to_vec_pretty(&longest(command)).expect("serialises");
    assert!(body.len() + 6 * 1024 <= MAX_COMMAND_BODY_BYTES);
    // The limit only grows with the setting.
    let limits: Vec<usize> = (0..=20).map(|i| max_body_bytes(1 << i)).collect();
    assert!(limits.windows(2).all(|w| w[0] <= w[1]), "{limits:?}");
}

#[test]
fn the_payload_limit_reads_alone_as_the_settings_read_it() {
    for raw in [None, Some("1"), Some("4096"), Some("1048576")] {
        let get = |name: &str| {
            (name == "command_max_payload_bytes")
                .then(|| raw.map(str::to_string))
                .flatten()
        };
        let alone = max_payload_setting(&get).expect("valid");
        let all = settings_of(
            &raw.map(|r| ("command_max_payload_bytes", r.to_string()))
                .into_iter()
                .collect::<Vec<_>>(),
        )
        .expect("valid")
        .max_payload;
        assert_eq!(alone, all, "{raw:?}");
    }
    for raw in ["0", "1048577", "64k"] {
        let get = |name: &str| (name == "command_max_payload_bytes").then(|| raw.to_string());
        assert!(max_payload_setting(&get).is_err(), "{raw}");
    }
}

/// Settings from `(name, value)` pairs; every other variable unset.
fn settings_of(vars: &[(&str, String)]) -> Result<GatewaySettings, GatewaySettingsError> {
    GatewaySettings::from_settings(|name| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    })
}

fn public_b64(seed: u8) -> String {
    STANDARD.encode(
        SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .as_bytes(),
    )
}

#[test]
fn the_key_set_lists_each_key_once_and_is_signed_by_the_current_and_the_previous_key() {
    let swap = settings_of(&[
        ("gateway_signing_key", STANDARD.encode([2u8; 32])),
        ("gateway_key_id", "gw-2".into()),
        ("gateway_previous_signing_key", STANDARD.encode([1u8; 32])),
        ("gateway_previous_key_id", "gw-1".into()),
        // The old runbook's swap: the old key as "next" too, which is the same key.
        ("gateway_next_public_key", public_b64(1)),
        ("gateway_next_key_id", "gw-1".into()),
    ])
    .expect("valid");
    let jwks = swap.jwks().expect("a key");
    let kids: Vec<&str> = jwks.keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, ["gw-2", "gw-1"]);
    let signers: Vec<&str> = jwks.signatures.iter().map(|s| s.kid.as_str()).collect();
    assert_eq!(signers, ["gw-2", "gw-1"]);
    // A client that pinned only the old key follows by the old key's signature.
    let old = settings_of(&[
        ("gateway_signing_key", STANDARD.encode([1u8; 32])),
        ("gateway_key_id", "gw-1".into()),
    ])
    .expect("valid")
    .jwks()
    .expect("a key");
    assert_eq!(check_key_set(&old, None), Ok(()));
    assert_eq!(check_key_set(&jwks, Some(&old)), Ok(()));
    // Without the previous seed only the new key signs, and that client must log in again.
    let swap_without_seed = settings_of(&[
        ("gateway_signing_key", STANDARD.encode([2u8; 32])),
        ("gateway_key_id", "gw-2".into()),
        ("gateway_next_public_key", public_b64(1)),
        ("gateway_next_key_id", "gw-1".into()),
    ])
    .expect("valid")
    .jwks()
    .expect("a key");
    assert_eq!(swap_without_seed.keys, jwks.keys);
    assert_eq!(
        check_key_set(&swap_without_seed, Some(&old)),
        Err(KeySetError::NotSignedByPin)
    );
}

#[test]
fn the_key_set_lists_the_current_then_the_next_then_the_previous_key() {
    let jwks = settings_of(&[
        ("gateway_signing_key", STANDARD.encode([2u8; 32])),
        ("gateway_key_id", "gw-2".into()),
        ("gateway_next_public_key", public_b64(3)),
        ("gateway_next_key_id", "gw-3".into()),
        ("gateway_previous_signing_key", STANDARD.encode([1u8; 32])),
        ("gateway_previous_key_id", "gw-1".into()),
    ])
    .expect("valid")
    .jwks()
    .expect("a key");
    let listed: Vec<(&str, &str)> = jwks
        .keys
        .iter()
        .map(|k| (k.kid.as_str(), k.x.as_str()))
        .collect();
    let x = |seed: u8| {
        edge_auth_protocol::wire::Jwk::ed25519(
            "",
            SigningKey::from_bytes(&[seed; 32])
                .verifying_key()
                .as_bytes(),
        )
        .x
    };
    let (x2, x3, x1) = (x(2), x(3), x(1));
    assert_eq!(
        listed,
        [
            ("gw-2", x2.as_str()),
            ("gw-3", x3.as_str()),
            ("gw-1", x1.as_str())
        ]
    );
    let signers: Vec<&str> = jwks.signatures.iter().map(|s| s.kid.as_str()).collect();
    assert_eq!(signers, ["gw-2", "gw-1"], "the next key has no seed here");
    assert_eq!(check_key_set(&jwks, None), Ok(()));
}

#[test]
fn a_next_public_key_that_is_no_sound_key_is_refused_and_named() {
    // Review finding: an all-zero placeholder decodes to a small-order point, which the
    // gateway then published in its signed key set for clients to pin.
    let current = ("gateway_signing_key", STANDARD.encode([1u8; 32]));
    let mut non_canonical = [0xff_u8; 32];
    non_canonical[0] = 0xed;
    non_canonical[31] = 0x7f;
    for (bytes, why) in [
        ([0u8; 32], "small-order"),
        (
            {
                let mut identity = [0u8; 32];
                identity[0] = 1;
                identity
            },
            "small-order",
        ),
        (non_canonical, "canonical"),
    ] {
        let vars = [
            current.clone(),
            ("gateway_next_public_key", STANDARD.encode(bytes)),
        ];
        match settings_of(&vars) {
            Err(GatewaySettingsError::Key { name, what }) => {
                assert_eq!(name, "gateway_next_public_key");
                assert!(what.contains(why), "{what}");
            }
            other => panic!("{bytes:?}: {other:?}"),
        }
    }
}

#[test]
fn one_key_id_for_two_different_keys_is_refused_whichever_two_variables_name_it() {
    let current = [
        ("gateway_signing_key", STANDARD.encode([1u8; 32])),
        ("gateway_key_id", "gw-same".to_string()),
    ];
    let next = [
        ("gateway_next_public_key", public_b64(2)),
        ("gateway_next_key_id", "gw-same".to_string()),
    ];
    let previous = [
        ("gateway_previous_signing_key", STANDARD.encode([3u8; 32])),
        ("gateway_previous_key_id", "gw-same".to_string()),
    ];
    let other_current = [("gateway_signing_key", STANDARD.encode([4u8; 32]))];
    for vars in [
        [&current[..], &next[..]].concat(),
        [&current[..], &previous[..]].concat(),
        [&other_current[..], &next[..], &previous[..]].concat(),
    ] {
        assert!(
            matches!(settings_of(&vars), Err(GatewaySettingsError::SameKeyId(kid)) if kid == "gw-same"),
            "{vars:?}"
        );
    }
    // A malformed previous seed is named, like the current one.
    let short = [
        &current[..],
        &[("gateway_previous_signing_key", STANDARD.encode([3u8; 31]))][..],
    ]
    .concat();
    assert!(matches!(
        settings_of(&short),
        Err(GatewaySettingsError::Key {
            name: "gateway_previous_signing_key",
            ..
        })
    ));
    // The same key under the same kid twice is one key, published once.
    let same = [
        &current[..],
        &[
            ("gateway_previous_signing_key", STANDARD.encode([1u8; 32])),
            ("gateway_previous_key_id", "gw-same".to_string()),
        ][..],
    ]
    .concat();
    let jwks = settings_of(&same).expect("valid").jwks().expect("a key");
    assert_eq!(jwks.keys.len(), 1);
    assert_eq!(jwks.signatures.len(), 1);
}
