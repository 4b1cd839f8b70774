//! The stream's decisions against an in-memory store: what is sent, in which order, and
//! how each stream ends.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use ed25519_dalek::SigningKey;
use edge_auth_protocol::verify::verify_event;
use edge_auth_protocol::wire::{Jwk, Jwks, SignedEvent};

use crate::gateway::command::RequestId;
use crate::gateway::settings::GatewayKey;
use crate::ids::{AddressTag, DeviceSessionId};
use crate::push::ports::*;
use crate::push::publish::{Publication, PublishError};
use crate::push::settings::PushSettings;
use crate::push::stream::{Ran, STREAM_END as STREAM_END_TYPE, StreamEnd, Subscription, open, run};
use crate::random::Random;
use crate::sessions::input::UserRef;
use crate::time::Elapsed;

struct Counter(Cell<u8>);
impl Random for Counter {
    fn fill(&self, buf: &mut [u8]) -> anyhow::Result<()> {
        self.0.set(self.0.get().wrapping_add(1));
        buf.fill(self.0.get());
        Ok(())
    }
}

/// Reads answered in order; each wait moves the clock by its timeout (or by `wake_after`
/// when a read is queued to be woken for).
#[derive(Debug)]
struct Script {
    reads: RefCell<VecDeque<StreamRead>>,
    woken: RefCell<VecDeque<Wake>>,
    clock: Cell<u64>,
    waits: Cell<u32>,
    /// The `max_age_ms` of every read.
    read_ages: RefCell<Vec<u64>>,
    /// Where every read started.
    read_from: RefCell<Vec<ReadFrom>>,
    /// The claims released, and whether releasing fails.
    released: RefCell<Vec<String>>,
    release_fails: Cell<bool>,
}

impl PushStore for Script {
    fn locate_user(&self, _: &UserRef) -> anyhow::Result<Vec<AddressTag>> {
        Ok(vec![])
    }
    fn append(&self, _: AddressTag, _: &Append<'_>) -> anyhow::Result<AppendOutcome> {
        anyhow::bail!("not in these tests")
    }
    fn read(
        &self,
        _: &DeviceSessionId,
        from: ReadFrom,
        _: u32,
        age: u64,
    ) -> anyhow::Result<StreamRead> {
        self.read_ages.borrow_mut().push(age);
        self.read_from.borrow_mut().push(from);
        self.reads
            .borrow_mut()
            .pop_front()
            .ok_or_else(|| anyhow::anyhow!("store down"))
    }
    fn wait(&self, _: &DeviceSessionId, _: Position, _: Position, t: u64) -> anyhow::Result<Wake> {
        self.waits.set(self.waits.get() + 1);
        let wake = self
            .woken
            .borrow_mut()
            .pop_front()
            .unwrap_or(Wake::TimedOut);
        self.clock
            .set(self.clock.get() + if wake == Wake::TimedOut { t } else { 5 });
        Ok(wake)
    }
    fn release(&self, session: &DeviceSessionId, stream: &RequestId) -> anyhow::Result<()> {
        if self.release_fails.get() {
            anyhow::bail!("store down")
        }
        self.released
            .borrow_mut()
            .push(format!("{}/{}", session.as_str(), stream.as_str()));
        Ok(())
    }
}

#[derive(Debug)]
struct ScriptClock<'a>(&'a Script);
impl Elapsed for ScriptClock<'_> {
    fn elapsed_ms(&self) -> u64 {
        self.0.clock.get()
    }
}

#[derive(Default)]
struct Seen {
    items: Vec<(Option<Position>, Option<SignedEvent>)>,
}
impl Subscriber for Seen {
    fn event(&mut self, position: Position, event: &SignedEvent) -> Result<(), Gone> {
        self.items.push((Some(position), Some(event.clone())));
        Ok(())
    }
    fn heartbeat(&mut self) -> Result<(), Gone> {
        self.items.push((None, None));
        Ok(())
    }
}

const SESSION: &str = "s_abababababababab_AQEBAQEBAQEBAQEBAQEBAQ";
const REQUEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const STREAM: &str = "subscribe-0123456789";
const OTHER: &str = "s_abababababababab_AgICAgICAgICAgICAgICAg";

fn pos(text: &str) -> Position {
    Position::parse(text).expect("position")
}

fn stored(position: &str, device: Option<&str>) -> StoredEvent {
    StoredEvent {
        position: pos(position),
        event_id: format!("ev_{position}"),
        event_type: "note".into(),
        device: device.map(str::to_string),
        user_id: "u1".into(),
        at_ms: 1_000,
        payload: br#"{"n":1}"#.to_vec(),
    }
}

fn read(cursor: &str, state: SessionState, events: Vec<StoredEvent>) -> StreamRead {
    StreamRead {
        now_ms: 1_000,
        state,
        lifecycle: pos("1-0"),
        cursor: pos(cursor),
        gap: false,
        events,
    }
}

const ACTIVE: SessionState = SessionState::Active { ends_at_ms: None };

fn go(script: &Script, resume: Option<Position>, settings: PushSettings) -> (StreamEnd, Seen) {
    let (ran, seen) = try_go(script, resume, settings);
    ran.released.expect("the place is released");
    (ran.ended.expect("the stream runs"), seen)
}

fn try_go(script: &Script, resume: Option<Position>, settings: PushSettings) -> (Ran, Seen) {
    let mut seen = Seen::default();
    let ran = run_to(script, resume, settings, &mut seen);
    (ran, seen)
}

/// The test key, session and subscribe request id: what a [`Subscription`] borrows.
struct Parts {
    key: GatewayKey,
    session: DeviceSessionId,
    request: RequestId,
}

fn parts() -> Parts {
    Parts {
        key: GatewayKey {
            key: SigningKey::from_bytes(&[7; 32]),
            kid: "k1".into(),
        },
        session: DeviceSessionId::parse(SESSION).expect("session id"),
        request: RequestId::parse(STREAM).expect("request id"),
    }
}

/// `SESSION`'s subscribe `STREAM`.
fn subscription(parts: &Parts, resume: Option<Position>) -> Subscription<'_> {
    Subscription {
        session: &parts.session,
        user_id: "u1",
        request_id: &parts.request,
        request_sha256: REQUEST,
        resume,
        key: &parts.key,
    }
}

/// Opens and runs the scripted stream of `SESSION`'s subscribe `STREAM`, writing to `out`.
fn run_to(
    script: &Script,
    resume: Option<Position>,
    settings: PushSettings,
    out: &mut impl Subscriber,
) -> Ran {
    let parts = parts();
    let sub = subscription(&parts, resume);
    let opened = open(script, &settings, &sub, &ScriptClock(script)).expect("the first read");
    run(
        script,
        &Counter(Cell::new(0)),
        &settings,
        &sub,
        opened,
        &ScriptClock(script),
        out,
    )
}

fn script(reads: Vec<StreamRead>, woken: Vec<Wake>) -> Script {
    Script {
        reads: RefCell::new(reads.into()),
        woken: RefCell::new(woken.into()),
        clock: Cell::new(0),
        waits: Cell::new(0),
        read_ages: RefCell::default(),
        read_from: RefCell::default(),
        released: RefCell::default(),
        release_fails: Cell::new(false),
    }
}

fn types(seen: &Seen) -> Vec<String> {
    seen.items
        .iter()
        .map(|(_, e)| {
            e.as_ref()
                .map_or("heartbeat".into(), |e| e.envelope.event_type.clone())
        })
        .collect()
}

/// What `seen` got, and at which position: [`types`] beside each position.
fn types_at(seen: &Seen) -> Vec<(String, Option<Position>)> {
    types(seen)
        .into_iter()
        .zip(seen.items.iter().map(|(p, _)| *p))
        .collect()
}

fn jwks() -> Jwks {
    let key = SigningKey::from_bytes(&[7; 32]);
    Jwks {
        keys: vec![Jwk::ed25519("k1", key.verifying_key().as_bytes())],
        signatures: Vec::new(),
    }
}

#[test]
fn a_stream_says_the_time_delivers_its_events_in_order_and_nothing_once_revoked() {
    let s = script(
        vec![
            read(
                "5-0",
                ACTIVE,
                vec![
                    stored("4-0", None),
                    stored("4-1", Some(OTHER)),
                    stored("5-0", Some(SESSION)),
                ],
            ),
            read(
                "7-0",
                SessionState::Ended(EndReason::SessionRevoked),
                vec![stored("6-0", Some(OTHER)), stored("7-0", None)],
            ),
        ],
        vec![Wake::Changed],
    );
    let settings = PushSettings {
        max_age_ms: 60_000,
        ..PushSettings::default()
    };
    let (end, seen) = go(&s, Some(pos("3-0")), settings);
    assert_eq!(end, StreamEnd::Ended(EndReason::SessionRevoked));
    assert_eq!(
        types(&seen),
        ["gateway.server_time", "note", "note", "gateway.stream_end"]
    );
    assert_eq!(
        *s.read_ages.borrow(),
        [60_000, 60_000],
        "every read is told how old an event may be"
    );
    let ids: Vec<String> = seen
        .items
        .iter()
        .map(|(p, _)| p.expect("every event has a position").to_string())
        .collect();
    // The hello stands at the resume point; the event for another device is passed over.
    // The read that finds the session revoked
    // delivers none of its events (7-0 may have been published after the revocation), and
    // the end stands where the client is.
    assert_eq!(ids, ["3-0", "4-0", "5-0", "5-0"]);
    for (_, event) in &seen.items {
        let event = event.as_ref().expect("no heartbeat in this stream");
        verify_event(event, &jwks(), SESSION, REQUEST).expect("signed for this stream");
        assert!(
            verify_event(event, &jwks(), SESSION, &"f".repeat(64)).is_err(),
            "and for no other subscribe request's"
        );
    }
    let last = seen
        .items
        .last()
        .and_then(|(_, e)| e.as_ref())
        .expect("a last event");
    let bytes = verify_event(last, &jwks(), SESSION, REQUEST).expect("verifies");
    let payload: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(payload["code"], "failed_precondition");
    assert_eq!(payload["reason"], "session_revoked");
}

#[test]
fn every_event_a_stream_sends_carries_the_next_number_so_a_dropped_one_leaves_a_gap() {
    let mut first = read(
        "5-0",
        ACTIVE,
        vec![stored("4-0", Some(OTHER)), stored("5-0", None)],
    );
    first.gap = true;
    let s = script(
        vec![
            first,
            read("6-0", ACTIVE, vec![stored("6-0", Some(SESSION))]),
            read(
                "7-0",
                SessionState::Ended(EndReason::SessionRevoked),
                vec![stored("7-0", None)],
            ),
        ],
        vec![Wake::TimedOut, Wake::Changed, Wake::Changed],
    );
    let settings = PushSettings {
        heartbeat_ms: 1,
        ..PushSettings::default()
    };
    let (end, seen) = go(&s, Some(pos("3-0")), settings);
    assert_eq!(end, StreamEnd::Ended(EndReason::SessionRevoked));
    let numbered: Vec<(String, u64)> = seen
        .items
        .iter()
        .map(|(_, e)| match e {
            Some(e) => (e.envelope.event_type.clone(), e.envelope.sequence),
            None => ("heartbeat".to_string(), u64::MAX),
        })
        .collect();
    // Gateway and backend events alike, one more each; heartbeats carry none, and an event
    // passed over (another device's) or withheld (found with the session's end) takes none.
    assert_eq!(
        numbered,
        [
            ("gateway.server_time".to_string(), 0),
            ("gateway.resync_required".to_string(), 1),
            ("note".to_string(), 2),
            ("heartbeat".to_string(), u64::MAX),
            ("note".to_string(), 3),
            ("gateway.stream_end".to_string(), 4),
        ]
    );
    for (_, event) in &seen.items {
        if let Some(event) = event {
            verify_event(event, &jwks(), SESSION, REQUEST).expect("the number is signed");
            let mut renumbered = event.clone();
            renumbered.envelope.sequence += 1;
            assert!(
                verify_event(&renumbered, &jwks(), SESSION, REQUEST).is_err(),
                "a number changed on the way does not verify"
            );
        }
    }
}

#[test]
fn events_passed_over_do_not_hold_back_heartbeats() {
    // Review finding (push review, stop 37): any event read, even one for another device
    // that was passed over, counted as traffic; with such events more often than the
    // heartbeat, the stream wrote nothing until its maximum duration.
    let reads = (1..=40)
        .map(|i| {
            let at = format!("{i}-0");
            read(&at, ACTIVE, vec![stored(&at, Some(OTHER))])
        })
        .collect::<Vec<_>>();
    let mut all = vec![read("0-0", ACTIVE, vec![])];
    all.extend(reads);
    let s = script(all, vec![Wake::Changed; 40]);
    let settings = PushSettings {
        max_duration_ms: 150,
        heartbeat_ms: 20,
        ..PushSettings::default()
    };
    let (end, seen) = go(&s, None, settings);
    assert_eq!(end, StreamEnd::Ended(EndReason::MaxDuration));
    let kinds = types(&seen);
    assert!(
        kinds.iter().filter(|t| *t == "heartbeat").count() >= 5,
        "{kinds:?}"
    );
    assert!(
        !kinds.contains(&"note".to_string()),
        "nothing for another device"
    );
}

#[test]
fn an_idle_stream_sends_heartbeats_and_ends_at_its_maximum_duration() {
    let s = script(vec![read("0-0", ACTIVE, vec![])], vec![]);
    let settings = PushSettings {
        max_duration_ms: 25_000,
        heartbeat_ms: 10_000,
        ..PushSettings::default()
    };
    let (end, seen) = go(&s, None, settings);
    assert_eq!(end, StreamEnd::Ended(EndReason::MaxDuration));
    assert_eq!(
        types(&seen),
        [
            "gateway.server_time",
            "heartbeat",
            "heartbeat",
            "gateway.stream_end"
        ]
    );
    assert_eq!(s.clock.get(), 25_000, "waited exactly up to the maximum");
    assert_eq!(
        s.waits.get(),
        3,
        "one store wait per heartbeat interval, no polling"
    );
    // The hello tells the client how long to wait for the end at most: the maximum
    // duration, plus the grace the last write may take.
    let hello = seen.items[0].1.as_ref().expect("the hello");
    let bytes = verify_event(hello, &jwks(), SESSION, REQUEST).expect("verifies");
    let payload: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(payload["server_time_ms"], 1_000);
    assert_eq!(payload["ends_within_ms"], 25_000 + 4_000);
}

/// A client that takes `per_write_ms` of the script's clock to take each event.
struct Slow<'a> {
    script: &'a Script,
    per_write_ms: u64,
    seen: Seen,
}
impl Subscriber for Slow<'_> {
    fn event(&mut self, position: Position, event: &SignedEvent) -> Result<(), Gone> {
        let clock = &self.script.clock;
        clock.set(clock.get() + self.per_write_ms);
        self.seen.event(position, event)
    }
    fn heartbeat(&mut self) -> Result<(), Gone> {
        self.seen.heartbeat()
    }
}

#[test]
fn a_batch_too_slow_to_write_ends_at_the_maximum_duration_where_the_client_stands() {
    // Review finding: a batch was written whole, however long a slow client took, so a
    // stream could run past a platform's request limit and be cut without its end.
    // Each write outlasts the recheck interval, so every event after the first of a read
    // is read again (with the session's state) before it is written.
    let events = |from: usize| -> Vec<StoredEvent> {
        ["2-0", "3-0", "4-0"][from..]
            .iter()
            .map(|p| stored(p, None))
            .collect()
    };
    let s = script(
        vec![
            read("4-0", ACTIVE, events(0)),
            read("4-0", ACTIVE, events(0)),
            read("4-0", ACTIVE, events(1)),
        ],
        vec![],
    );
    let settings = PushSettings {
        max_duration_ms: 25_000,
        ..PushSettings::default()
    };
    let mut slow = Slow {
        script: &s,
        per_write_ms: 10_000,
        seen: Seen::default(),
    };
    let ran = run_to(&s, Some(pos("1-0")), settings, &mut slow);
    assert_eq!(
        ran.ended.expect("the stream runs"),
        StreamEnd::Ended(EndReason::MaxDuration)
    );
    ran.released.expect("the place is released");
    // The hello and two events take 30 s: the third is not started, and the end stands
    // at the last event sent, where the client resumes.
    assert_eq!(
        types_at(&slow.seen),
        [
            ("gateway.server_time".to_string(), Some(pos("1-0"))),
            ("note".to_string(), Some(pos("2-0"))),
            ("note".to_string(), Some(pos("3-0"))),
            ("gateway.stream_end".to_string(), Some(pos("3-0"))),
        ]
    );
    assert_eq!(s.waits.get(), 0, "it ended without waiting");
    // The hello alone outlasts the recheck: read again from the resume point, then after
    // the event sent.
    assert_eq!(
        *s.read_from.borrow(),
        [
            ReadFrom::After(pos("1-0")),
            ReadFrom::After(pos("1-0")),
            ReadFrom::After(pos("2-0")),
        ],
        "read again after each slow write, from where the client stands"
    );
}

#[test]
fn a_revoke_while_a_slow_client_takes_its_batch_ends_the_stream_within_a_second() {
    // Review finding (stop 37): a batch read before a revoke went on to a slow client for
    // as long as it took to write, up to the stream's maximum duration.
    let s = script(
        vec![
            read(
                "6-0",
                ACTIVE,
                ["2-0", "3-0", "4-0", "5-0", "6-0"]
                    .iter()
                    .map(|p| stored(p, None))
                    .collect(),
            ),
            read(
                "6-0",
                SessionState::Ended(EndReason::SessionRevoked),
                vec![stored("3-0", None)],
            ),
        ],
        vec![],
    );
    let mut slow = Slow {
        script: &s,
        per_write_ms: 600,
        seen: Seen::default(),
    };
    let ran = run_to(&s, Some(pos("1-0")), PushSettings::default(), &mut slow);
    assert_eq!(
        ran.ended.expect("the stream runs"),
        StreamEnd::Ended(EndReason::SessionRevoked)
    );
    // The hello and one event take 1.2 s: the session is read again before the next
    // event, found revoked, and the stream ends where the client stands.
    assert_eq!(
        types_at(&slow.seen),
        [
            ("gateway.server_time".to_string(), Some(pos("1-0"))),
            ("note".to_string(), Some(pos("2-0"))),
            ("gateway.stream_end".to_string(), Some(pos("2-0"))),
        ]
    );
    assert_eq!(
        *s.read_from.borrow(),
        [ReadFrom::After(pos("1-0")), ReadFrom::After(pos("2-0"))],
        "read again from the event sent"
    );
}

#[test]
fn events_for_another_user_of_the_same_address_are_never_delivered() {
    let mut theirs = stored("5-0", None);
    theirs.user_id = "u2".into();
    let s = script(
        vec![
            read(
                "6-0",
                ACTIVE,
                vec![stored("4-0", None), theirs, stored("6-0", None)],
            ),
            read(
                "6-0",
                SessionState::Ended(EndReason::SessionRevoked),
                vec![],
            ),
        ],
        vec![Wake::Changed],
    );
    let (_, seen) = go(&s, Some(pos("3-0")), PushSettings::default());
    let ids: Vec<String> = seen
        .items
        .iter()
        .filter_map(|(p, _)| p.map(|p| p.to_string()))
        .collect();
    assert_eq!(ids, ["3-0", "4-0", "6-0", "6-0"], "u2's event is skipped");
}

#[test]
fn a_runtime_shutting_down_ends_the_stream_with_a_terminal_event_to_resume_from() {
    let s = script(
        vec![read("4-0", ACTIVE, vec![stored("4-0", None)])],
        vec![Wake::ShuttingDown],
    );
    let (end, seen) = go(&s, Some(pos("3-0")), PushSettings::default());
    assert_eq!(end, StreamEnd::Ended(EndReason::ServerShutdown));
    assert_eq!(
        types(&seen),
        ["gateway.server_time", "note", "gateway.stream_end"]
    );
    let (position, last) = seen.items.last().expect("a terminal event");
    assert_eq!(
        *position,
        Some(pos("4-0")),
        "resume after what was delivered"
    );
    let bytes = verify_event(last.as_ref().expect("an event"), &jwks(), SESSION, REQUEST)
        .expect("verifies");
    let payload: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(payload["code"], "unavailable");
    assert_eq!(payload["reason"], "server_shutdown");
}

#[test]
fn a_session_due_to_expire_is_read_again_when_its_life_ends() {
    let s = script(
        vec![
            read(
                "0-0",
                SessionState::Active {
                    ends_at_ms: Some(4_000),
                },
                vec![],
            ),
            read(
                "0-0",
                SessionState::Ended(EndReason::SessionExpired),
                vec![],
            ),
        ],
        vec![],
    );
    let (end, _) = go(&s, None, PushSettings::default());
    assert_eq!(end, StreamEnd::Ended(EndReason::SessionExpired));
    assert_eq!(s.clock.get(), 3_000, "woke when the session's life ended");
}

#[test]
fn a_gap_is_announced_before_anything_else_is_delivered() {
    let mut first = read("9-0", ACTIVE, vec![]);
    first.gap = true;
    let s = script(
        vec![
            first,
            read("9-0", SessionState::Ended(EndReason::UserBlocked), vec![]),
        ],
        vec![Wake::Changed],
    );
    let (end, seen) = go(&s, Some(pos("2-0")), PushSettings::default());
    assert_eq!(end, StreamEnd::Ended(EndReason::UserBlocked));
    assert_eq!(
        types(&seen),
        [
            "gateway.server_time",
            "gateway.resync_required",
            "gateway.stream_end"
        ]
    );
    assert_eq!(
        seen.items[1].0,
        Some(pos("9-0")),
        "go on from the newest kept"
    );
}

#[test]
fn every_way_a_stream_ends_releases_its_claim_once() {
    let claim = format!("{SESSION}/{STREAM}");
    // Ended by the session, by its maximum duration, by a store failure.
    let revoked = script(
        vec![read(
            "0-0",
            SessionState::Ended(EndReason::SessionRevoked),
            vec![],
        )],
        vec![],
    );
    let short = PushSettings {
        max_duration_ms: 1_000,
        ..PushSettings::default()
    };
    let idle = script(vec![read("0-0", ACTIVE, vec![])], vec![]);
    let failing = script(vec![read("0-0", ACTIVE, vec![])], vec![Wake::Changed]);
    let shutdown = script(vec![read("0-0", ACTIVE, vec![])], vec![Wake::ShuttingDown]);
    for (s, settings, ended) in [
        (&revoked, PushSettings::default(), true),
        (&idle, short, true),
        (&failing, PushSettings::default(), false),
        (&shutdown, PushSettings::default(), true),
    ] {
        let (ran, _) = try_go(s, None, settings);
        assert_eq!(ran.ended.is_ok(), ended, "{:?}", ran.ended);
        assert!(ran.released.is_ok());
        assert_eq!(*s.released.borrow(), std::slice::from_ref(&claim));
    }

    // A client gone before the first event.
    struct Gone1;
    impl Subscriber for Gone1 {
        fn event(&mut self, _: Position, _: &SignedEvent) -> Result<(), Gone> {
            Err(Gone)
        }
        fn heartbeat(&mut self) -> Result<(), Gone> {
            Err(Gone)
        }
    }
    let gone = script(vec![read("0-0", ACTIVE, vec![])], vec![]);
    let ran = run_to(&gone, None, short, &mut Gone1);
    assert_eq!(ran.ended.expect("ends"), StreamEnd::ClientGone);
    assert_eq!(*gone.released.borrow(), [claim]);
}

#[test]
fn a_first_read_that_fails_answers_nothing_yet_and_releases_the_place() {
    // Review finding: the first read ran after the 200 and its headers had gone out, so
    // its failure left an empty stream without a terminal event. Now it runs before the
    // subscribe answers, which can still be a plain error.
    let parts = parts();
    let sub = subscription(&parts, Some(pos("3-0")));
    let down = script(vec![], vec![]);
    let clock = ScriptClock(&down);
    let error = format!(
        "{:#}",
        open(&down, &PushSettings::default(), &sub, &clock).expect_err("the store is down")
    );
    assert!(
        error.contains("first read failed") && error.contains("store down"),
        "{error}"
    );
    assert_eq!(*down.released.borrow(), [format!("{SESSION}/{STREAM}")]);

    down.release_fails.set(true);
    let error = format!(
        "{:#}",
        open(&down, &PushSettings::default(), &sub, &clock).expect_err("still down")
    );
    assert!(error.contains("not released"), "{error}");
}

#[test]
fn a_place_that_cannot_be_released_is_an_error_for_the_log_beside_how_the_stream_ended() {
    let s = script(
        vec![read(
            "0-0",
            SessionState::Ended(EndReason::UserBlocked),
            vec![],
        )],
        vec![],
    );
    s.release_fails.set(true);
    let (ran, seen) = try_go(&s, None, PushSettings::default());
    assert_eq!(
        ran.ended.expect("ended"),
        StreamEnd::Ended(EndReason::UserBlocked)
    );
    let error = format!("{:#}", ran.released.expect_err("release failed"));
    assert!(error.contains("not released"), "{error}");
    assert_eq!(
        types(&seen).last().map(String::as_str),
        Some(STREAM_END_TYPE)
    );
}

#[test]
fn positions_parse_strictly_and_order_numerically() {
    assert!(pos("10-0") > pos("9-5"));
    assert_eq!(pos("0-0"), Position::START);
    for bad in [
        "",
        "1",
        "1-",
        "-1",
        "a-1",
        "1-1-1",
        "1 -1",
        "123456789012345678901-0",
    ] {
        assert!(Position::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_publication_refuses_gateway_types_bad_ids_and_large_payloads() {
    let ok = Publication::parse("u1", None, "profile.changed", b"{}".to_vec());
    assert!(ok.is_ok());
    let deepest = [&[b'['; 127][..], &[b']'; 127][..]].concat();
    assert!(Publication::parse("u1", None, "note", deepest).is_ok());
    for (user, device, event_type, payload) in [
        ("u1", None, "gateway.server_time", b"{}".to_vec()),
        ("u1", None, "Bad Type", b"{}".to_vec()),
        ("", None, "note", b"{}".to_vec()),
        ("u1", Some("s_nope"), "note", b"{}".to_vec()),
        ("u1", None, "note", vec![b' '; 16 * 1024 + 1]),
        ("u1", None, "note", b"{".to_vec()),
        ("u1", None, "note", b"".to_vec()),
        (
            "u1",
            None,
            "note",
            [&[b'['; 128][..], &[b']'; 128][..]].concat(),
        ),
    ] {
        let result = Publication::parse(user, device, event_type, payload);
        assert!(
            matches!(result, Err(PublishError::InvalidRequest(_))),
            "{user:?} {device:?} {event_type:?}"
        );
    }
}

#[test]
fn the_stream_cap_defaults_to_three_and_refuses_values_out_of_its_range() {
    let read = |value: &'static str| {
        PushSettings::from_settings(|name| {
            (name == "push_max_streams_per_session").then(|| value.to_string())
        })
    };
    assert_eq!(PushSettings::default().claim().max_streams, 3);
    let five = read("5").expect("in range");
    assert_eq!(five.claim().max_streams, 5);
    assert_eq!(five.claim().ends_in_ms, five.max_duration_ms);
    for bad in ["0", "101", "three"] {
        let error = read(bad).expect_err("out of range").to_string();
        assert!(error.contains("push_max_streams_per_session"), "{error}");
    }
}
