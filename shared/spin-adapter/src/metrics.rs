//! Metrics: counters and one histogram, kept in Redis and read by
//! `GET /api/v1/internal/metrics` in Prometheus' text format.
//!
//! # Layout
//! One hash per client shard, `ea:{ea:c<0-f>}:metrics` (named by [`crate::keys`]): a field
//! per series, written as Prometheus writes it (`family{label="value",…}`), holding its
//! count. A histogram observation adds 1 to every `_bucket` field whose bound it is under,
//! to `_count`, and its microseconds to `_sum_us`, in one script: the fields stay
//! cumulative and consistent in every shard, so the scrape only adds shards up. A scrape
//! reads the 16 hashes ([`scrape`]); no single hash takes every write.
//!
//! The gauge of open push streams is the one value not kept as a count: each shard also
//! holds a set of live streams, `ea:{ea:c<0-f>}:push:live`, each stream in the shard its
//! id picks, scored by when it stops counting unless it ends (its maximum duration and
//! 15 s). A stream enters it once its first event is out and leaves it when it ends; one
//! that could not leave it (its instance died, or Redis failed as it ended) lapses. A
//! scrape counts the members not lapsed, so the gauge never drifts the way a pair of
//! opened/ended counters would. No write of a stream completes after its entry lapses
//! ([`crate::sse::SseWriter::new`]), so the gauge never misses a stream still open.
//!
//! # What a request pays
//! Counting adds no round trip before the response. A request counts into a tally of its
//! own (an instance serves one request). What is known when the request runs its client
//! shard script (`guard`, `command_client`) rides in that script, decided by the script's
//! own outcome (a client over its budget is counted there and costs nothing more). What
//! is learnt later is written after the response has been sent, by one script call on the
//! request's own connection ([`flush`]), into a shard picked at random. A push stream
//! pays one more call, right after its first event ([`stream_opened`]); its end rides in
//! that flush, in the stream's own shard.
//!
//! # Labels
//! Every label value comes from a closed set: message types are counted under their own
//! name only when the gateway routes them (else `unknown`), so a client cannot grow the
//! number of series, and revoke reasons only when they are in [`REVOKE_REASONS`] (else
//! `other`), so an internal caller cannot either. Requests refused before Redis (malformed
//! bodies, bad signatures) are not counted here: counting them would let anyone write to
//! Redis; the request log has them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use edge_auth_domain::challenge::ChallengeState;
use edge_auth_domain::gateway::ports::BudgetKind;

use crate::keys;
use crate::redis::{Arg, Reply, SpinRedis};

/// What Prometheus is told about a family.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A counter without labels: written as 0 until it moves.
    Counter,
    /// A counter with labels: no series until one moves.
    LabelledCounter,
    Histogram,
    /// The open push streams (see the module docs).
    LiveStreams,
}

/// Every family, in the order the scrape writes them.
const FAMILIES: &[Family] = &[
    Family {
        name: "edge_auth_challenges_created_total",
        help: "Login challenges created (delivered or, for a blocked address, suppressed).",
        kind: Kind::Counter,
    },
    Family {
        name: "edge_auth_deliveries_total",
        help: "Challenge deliveries by result: sent, suppressed (blocked address), failed.",
        kind: Kind::LabelledCounter,
    },
    Family {
        name: "edge_auth_confirm_attempts_total",
        help: "Confirm requests that reached the client budget check.",
        kind: Kind::Counter,
    },
    Family {
        name: "edge_auth_confirm_results_total",
        help: "Confirm results: created, repeat (idempotent), or the error code of a refusal.",
        kind: Kind::LabelledCounter,
    },
    Family {
        name: "edge_auth_sessions_created_total",
        help: "Device sessions created.",
        kind: Kind::Counter,
    },
    Family {
        name: "edge_auth_session_limit_rejections_total",
        help: "Confirms refused because the user is at the session limit.",
        kind: Kind::Counter,
    },
    Family {
        name: "edge_auth_sessions_revoked_total",
        help: "Device sessions revoked, by reason code.",
        kind: Kind::LabelledCounter,
    },
    Family {
        name: "edge_auth_user_resolutions_total",
        help: "User lookups and creations, by directory and outcome.",
        kind: Kind::LabelledCounter,
    },
    Family {
        name: "edge_auth_commands_total",
        help: "Signed commands past the signature check, by message type and result code.",
        kind: Kind::LabelledCounter,
    },
    Family {
        name: "edge_auth_rate_limited_total",
        help: "Requests refused or throttled by a budget, by route and budget.",
        kind: Kind::LabelledCounter,
    },
    Family {
        name: "edge_auth_push_streams_open",
        help: "Push streams open now (one that could not say it ended, its instance dead, stops counting 15 s after its maximum duration).",
        kind: Kind::LiveStreams,
    },
    Family {
        name: "edge_auth_push_streams_opened_total",
        help: "Push streams opened (counted once their first event is out).",
        kind: Kind::Counter,
    },
    Family {
        name: "edge_auth_push_streams_ended_total",
        help: "Push streams ended, by reason: the terminal event's, or client_gone.",
        kind: Kind::LabelledCounter,
    },
    Family {
        name: "edge_auth_push_events_published_total",
        help: "Events published by the backend, by target: user or device.",
        kind: Kind::LabelledCounter,
    },
    Family {
        name: "edge_auth_push_events_delivered_total",
        help: "Published events sent on push streams (one per stream that sent it; counted when the stream ends).",
        kind: Kind::Counter,
    },
    Family {
        name: "edge_auth_backend_latency_seconds",
        help: "Time from sending a command to the backend to its answer (or failure).",
        kind: Kind::Histogram,
    },
];

/// Upper bounds of the backend latency buckets, in seconds (`+Inf` follows).
const BACKEND_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BACKEND: &str = "edge_auth_backend_latency_seconds";

/// Which directory answered a user lookup.
#[derive(Debug, Clone, Copy)]
pub enum Directory {
    Redis,
    Rest,
}

/// What a user lookup found.
#[derive(Debug, Clone, Copy)]
pub enum Resolution {
    Existing,
    Created,
    Blocked,
    /// The directory has no user with that address (a block by e-mail, say).
    NotFound,
    /// The directory refuses a new user for the address (closed sign-ups).
    Refused,
    Failed,
}

/// One thing counted.
#[derive(Debug, Clone)]
pub enum Counter<'a> {
    ChallengeCreated,
    Delivery(ChallengeState),
    ConfirmAttempt,
    /// `created`, `repeat` or an error code.
    ConfirmResult(&'static str),
    SessionCreated,
    SessionLimitRejected,
    SessionsRevoked {
        reason: &'a str,
    },
    UserResolution(Directory, Resolution),
    /// `message_type` as [`command_label`] gives it.
    Command {
        message_type: &'a str,
        result: &'a str,
    },
    RateLimited {
        route: &'a str,
        budget: Budget,
    },
    PushStreamOpened,
    /// `reason`: the terminal event's, or `client_gone`.
    PushStreamEnded {
        reason: &'a str,
    },
    /// `target`: `user` or `device`.
    PushEventPublished {
        target: &'static str,
    },
    PushEventsDelivered,
}

/// Which budget refused or throttled.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// A client address's budget (any route).
    Client,
    /// A client address's wrong codes, across e-mail addresses (confirm).
    ClientWrongCodes,
    /// An e-mail address's send or confirm budget.
    Address,
    /// The resend interval of an address (send answers with the latest challenge).
    Resend,
    /// The cap of consecutive wrong codes of an address.
    WrongCodes,
    /// A command budget of the session's step.
    Command(BudgetKind),
}

impl Budget {
    fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::ClientWrongCodes => "client_wrong_codes",
            Self::Address => "address",
            Self::Resend => "resend",
            Self::WrongCodes => "wrong_codes",
            Self::Command(kind) => kind.as_str(),
        }
    }
}

impl Counter<'_> {
    /// The field this counter increments.
    fn series(&self) -> String {
        match self {
            Self::ChallengeCreated => "edge_auth_challenges_created_total".into(),
            Self::Delivery(state) => {
                let result = match state {
                    ChallengeState::Sent => "sent",
                    ChallengeState::Suppressed => "suppressed",
                    ChallengeState::DeliveryFailed => "failed",
                    other => other.as_str(),
                };
                format!("edge_auth_deliveries_total{{result=\"{result}\"}}")
            }
            Self::ConfirmAttempt => "edge_auth_confirm_attempts_total".into(),
            Self::ConfirmResult(result) => {
                format!("edge_auth_confirm_results_total{{result=\"{result}\"}}")
            }
            Self::SessionCreated => "edge_auth_sessions_created_total".into(),
            Self::SessionLimitRejected => "edge_auth_session_limit_rejections_total".into(),
            Self::SessionsRevoked { reason } => {
                let reason = revoke_reason_label(reason);
                format!("edge_auth_sessions_revoked_total{{reason=\"{reason}\"}}")
            }
            Self::UserResolution(directory, resolution) => {
                let directory = match directory {
                    Directory::Redis => "redis",
                    Directory::Rest => "rest",
                };
                let outcome = match resolution {
                    Resolution::Existing => "existing",
                    Resolution::Created => "created",
                    Resolution::Blocked => "blocked",
                    Resolution::NotFound => "not_found",
                    Resolution::Refused => "refused",
                    Resolution::Failed => "failed",
                };
                format!(
                    "edge_auth_user_resolutions_total{{directory=\"{directory}\",outcome=\"{outcome}\"}}"
                )
            }
            Self::Command {
                message_type,
                result,
            } => format!(
                "edge_auth_commands_total{{message_type=\"{message_type}\",result=\"{result}\"}}"
            ),
            Self::RateLimited { route, budget } => format!(
                "edge_auth_rate_limited_total{{route=\"{route}\",budget=\"{}\"}}",
                budget.as_str()
            ),
            Self::PushStreamOpened => "edge_auth_push_streams_opened_total".into(),
            Self::PushStreamEnded { reason } => {
                format!("edge_auth_push_streams_ended_total{{reason=\"{reason}\"}}")
            }
            Self::PushEventPublished { target } => {
                format!("edge_auth_push_events_published_total{{target=\"{target}\"}}")
            }
            Self::PushEventsDelivered => "edge_auth_push_events_delivered_total".into(),
        }
    }
}

/// The label a message type is counted under: its own name when `routed` (the gateway
/// answers it or routes it to the backend), else `unknown`.
pub fn command_label(message_type: &str, routed: bool) -> &str {
    if routed { message_type } else { "unknown" }
}

/// Increments (field, amount) of the current request not written yet.
static TALLY: Mutex<Vec<(String, i64)>> = Mutex::new(Vec::new());

fn tally<T>(f: impl FnOnce(&mut Vec<(String, i64)>) -> T) -> T {
    let mut guard = TALLY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&mut guard)
}

/// The push stream the current request holds open in the gauge, if any (its member):
/// [`flush`] takes it out when the request ends.
static LIVE: Mutex<Option<String>> = Mutex::new(None);

fn live<T>(f: impl FnOnce(&mut Option<String>) -> T) -> T {
    let mut guard = LIVE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&mut guard)
}

/// Starts a request's tally (an instance serves one request at a time).
pub(crate) fn begin() {
    tally(Vec::clear);
    live(Option::take);
}

/// The push stream `stream` (`<session>/<request id>`) is open, its first event out:
/// counts it, enters it in the gauge until `counts_for_ms` from now unless it ends first,
/// and writes what the request counted so far, in one call. The request's [`flush`]
/// takes it out of the gauge again.
///
/// # Errors
/// Redis failed (the stream goes on regardless). The call may have run all the same, its
/// answer lost: the request's flush takes the stream out of the gauge in any case, and
/// writes the counts again unless the call's answer was lost over REST (which often means
/// it ran; [`flush`] does not retry there either).
pub fn stream_opened(redis: &SpinRedis, stream: &str, counts_for_ms: u64) -> anyhow::Result<()> {
    count(&Counter::PushStreamOpened);
    let pending = tally(std::mem::take);
    let mut args = vec![Arg::from("open"), stream.into(), counts_for_ms.into()];
    args.extend(triple_args(
        pending.iter().map(|(f, n)| (When::Always, f.clone(), *n)),
    ));
    let entered = redis.run(
        &crate::redis::scripts::PUSH_LIVE,
        &keys::live_stream_keys(stream),
        &args,
    );
    // In the gauge, or maybe: taken out at the end either way (taking out a stream that is
    // not in it changes nothing).
    live(|l| *l = Some(stream.to_string()));
    entered.map(drop).map_err(|cause| {
        if !redis.answer_lost_over_rest(&cause) {
            // Refused, or failed on its connection: its counts wait for the request's
            // flush.
            tally(|t| t.extend(pending));
        }
        cause.context("entering a push stream in the gauge")
    })
}

/// The script arguments of `(when, field, amount)` triples, for `count_metrics` of
/// `lib.lua`.
fn triple_args(triples: impl IntoIterator<Item = (When, String, i64)>) -> Vec<Arg> {
    triples
        .into_iter()
        .flat_map(|(when, field, n)| [when.as_str().into(), field.into(), Arg::Int(n)])
        .collect()
}

/// Counts `counter` once.
pub fn count(counter: &Counter<'_>) {
    count_n(counter, 1);
}

/// Takes back one count of `counter` this request made and has not written yet (a
/// result its use case then turned into another one): `false`, and nothing changes, if
/// there is none (a counter never goes down: Prometheus would read a reset).
pub fn uncount(counter: &Counter<'_>) -> bool {
    let series = counter.series();
    tally(
        |t| match t.iter().rposition(|(s, n)| *s == series && *n > 0) {
            Some(i) => {
                if t[i].1 == 1 {
                    t.remove(i);
                } else {
                    t[i].1 -= 1;
                }
                true
            }
            None => false,
        },
    )
}

/// Takes back the success a confirm counted (`created`, or `repeat` for a retry), if this
/// request holds one: its login ended otherwise after all.
pub fn uncount_confirmed() {
    if !uncount(&Counter::ConfirmResult("created")) {
        uncount(&Counter::ConfirmResult("repeat"));
    }
}

/// Counts `counter` `n` times.
pub fn count_n(counter: &Counter<'_>, n: u64) {
    if n > 0 {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        tally(|t| t.push((counter.series(), n)));
    }
}

/// Records how long a backend call took.
pub fn observe_backend(took: Duration) {
    let seconds = took.as_secs_f64();
    let micros = i64::try_from(took.as_micros()).unwrap_or(i64::MAX);
    tally(|t| {
        for bound in BACKEND_BUCKETS.iter().filter(|b| seconds <= **b) {
            t.push((format!("{BACKEND}_bucket{{le=\"{bound}\"}}"), 1));
        }
        t.push((format!("{BACKEND}_bucket{{le=\"+Inf\"}}"), 1));
        t.push((format!("{BACKEND}_count"), 1));
        t.push((format!("{BACKEND}_sum_us"), micros));
    });
}

/// When a riding increment is counted, by the outcome of the script it rides in.
#[derive(Debug, Clone, Copy)]
pub enum When {
    /// Whatever the script decides.
    Always,
    /// The script refused for a budget (`guard`: any budget; `command_client`: the
    /// client's).
    Limited,
    /// `command_client` found the command stale.
    Stale,
    /// `guard` refused for a held budget only (the client's wrong-code budget).
    Held,
}

impl When {
    fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Limited => "limited",
            Self::Stale => "stale",
            Self::Held => "held",
        }
    }
}

/// Increments that ride in a client-shard script: the script's metrics key and its
/// arguments, `(when, field, amount)` triples for `count_metrics` of `lib.lua`.
#[derive(Debug, Default)]
pub struct Ride {
    triples: Vec<(When, String, i64)>,
}

impl Ride {
    /// Counts `counter` when the script's outcome is `when`.
    #[must_use]
    pub fn on(mut self, when: When, counter: &Counter<'_>) -> Self {
        self.triples.push((when, counter.series(), 1));
        self
    }

    /// The script arguments: these triples and everything the request has counted so far
    /// (which is then written).
    pub(crate) fn into_args(mut self) -> Vec<Arg> {
        let pending = tally(std::mem::take);
        self.triples
            .extend(pending.into_iter().map(|(f, n)| (When::Always, f, n)));
        triple_args(self.triples)
    }
}

/// Writes what the request counted and has not written yet: one script call on the
/// request's connection (opened if the request had none; a new one if that call fails),
/// into a random shard, or, for a push stream, its own shard as it leaves the gauge. Called
/// by [`crate::http::serve`] after the response is sent; a failure is logged, never
/// answered.
pub(crate) fn flush() {
    // The request's tally as script arguments, as a ride would carry it.
    let args = Ride::default().into_args();
    // A push stream leaves the gauge in its shard, with the rest of its counts.
    let (script, keys, args) = match live(Option::take) {
        Some(stream) => {
            let mut end = vec![Arg::from("end"), stream.as_str().into(), Arg::Int(0)];
            end.extend(args);
            (
                &crate::redis::scripts::PUSH_LIVE,
                keys::live_stream_keys(&stream).to_vec(),
                end,
            )
        }
        None if args.is_empty() => return,
        None => {
            let mut byte = [0u8; 1];
            if let Err(e) = getrandom::fill(&mut byte) {
                crate::request_log::error(&format!(
                    "metrics not written: picking a metrics shard: {e}"
                ));
                return;
            }
            let shard = byte[0] % keys::CLIENT_SHARDS;
            (
                &crate::redis::scripts::METRICS,
                vec![keys::metrics_shard(shard)],
                args,
            )
        }
    };
    let write = || SpinRedis::connect().and_then(|redis| redis.run(script, &keys, &args));
    if let Err(first) = write() {
        // Over RESP the request's connection may be what failed (a stream that ended
        // because the store failed): once more, on a new one. Over REST there is none to
        // replace, and a write whose answer timed out may have run: again would count
        // twice.
        // (The request's transport, opened already: no round trip.)
        if SpinRedis::connect().is_ok_and(|redis| redis.over_rest()) {
            crate::request_log::error(&format!(
                "metrics not written (a push stream lapses from the gauge): {first:#}"
            ));
            return;
        }
        crate::redis::forget_connections();
        if let Err(cause) = write() {
            crate::request_log::error(&format!(
                "metrics not written (a push stream lapses from the gauge): {cause:#}; before that: {first:#}"
            ));
        }
    }
}

/// The metrics of every shard, added up, in Prometheus' text format (version 0.0.4).
/// Costs one round trip per shard.
///
/// # Errors
/// Redis is unreachable or answered something unexpected.
pub fn scrape(redis: &SpinRedis) -> anyhow::Result<String> {
    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    let mut live = 0;
    for shard in 0..keys::CLIENT_SHARDS {
        let key = keys::metrics_shard(shard);
        let items = redis.run(
            &crate::redis::scripts::METRICS_SCRAPE,
            &[key.clone(), keys::live_streams_shard(shard)],
            &[],
        )?;
        let mut reply = Reply::new("metrics_scrape", items);
        live += reply.int()?;
        add_shard(&mut totals, &key, &reply.rest()?)?;
    }
    Ok(render(&totals, live))
}

/// Adds one shard's `HGETALL` (`items`: field, value, …) of `key` to `totals`.
fn add_shard(
    totals: &mut BTreeMap<String, i64>,
    key: &str,
    items: &[String],
) -> anyhow::Result<()> {
    for pair in items.chunks(2) {
        let [field, value] = pair else {
            anyhow::bail!("HGETALL of {key}: an odd number of items");
        };
        let n: i64 = value
            .parse()
            .with_context(|| format!("metrics field {field:?} holds {value:?}"))?;
        *totals.entry(field.clone()).or_default() += n;
    }
    Ok(())
}

/// Writes the families in [`FAMILIES`] order; a counter family without labels that has
/// not moved is written as 0, a histogram that has not is written with empty buckets.
/// `live`: the open push streams.
fn render(totals: &BTreeMap<String, i64>, live: i64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for family in FAMILIES {
        let kind = match family.kind {
            Kind::Histogram => "histogram",
            Kind::Counter | Kind::LabelledCounter => "counter",
            Kind::LiveStreams => "gauge",
        };
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {kind}", family.name);
        if family.kind == Kind::Histogram {
            render_histogram(&mut out, family.name, totals);
            continue;
        }
        if family.kind == Kind::LiveStreams {
            let _ = writeln!(out, "{} {live}", family.name);
            continue;
        }
        let series: Vec<(&String, &i64)> = totals
            .iter()
            .filter(|(field, _)| {
                field.as_str() == family.name
                    || field
                        .strip_prefix(family.name)
                        .is_some_and(|rest| rest.starts_with('{'))
            })
            .collect();
        if series.is_empty() && family.kind == Kind::Counter {
            let _ = writeln!(out, "{} 0", family.name);
        }
        for (field, n) in series {
            let _ = writeln!(out, "{field} {n}");
        }
    }
    out
}

fn render_histogram(out: &mut String, name: &str, totals: &BTreeMap<String, i64>) {
    use std::fmt::Write as _;
    let get = |field: String| totals.get(&field).copied().unwrap_or(0);
    for bound in BACKEND_BUCKETS {
        let n = get(format!("{name}_bucket{{le=\"{bound}\"}}"));
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
    }
    let n = get(format!("{name}_bucket{{le=\"+Inf\"}}"));
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
    #[allow(clippy::cast_precision_loss)]
    let sum = get(format!("{name}_sum_us")) as f64 / 1e6;
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {}", get(format!("{name}_count")));
}

/// The reason codes `sessions_revoked_total` counts under their own name: the gateway's
/// own and common operator codes. Any other code (an operator's own vocabulary, a ticket
/// number) is counted as `other`, so callers of the internal API cannot grow the number
/// of series without bound; the audit trail keeps every code as given.
pub const REVOKE_REASONS: [&str; 16] = [
    "logout",
    "session_limit_evicted",
    "user_blocked",
    "user_logout",
    "user_request",
    "lost_device",
    "password_reset",
    "compromised",
    "fraud",
    "abuse",
    "security",
    "policy",
    "support",
    "admin",
    "account_deleted",
    "other",
];

/// The `reason` label of a revocation (see [`REVOKE_REASONS`]).
fn revoke_reason_label(code: &str) -> &str {
    if REVOKE_REASONS.contains(&code) {
        code
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operators_own_reason_code_is_counted_as_other() {
        let series = |reason| Counter::SessionsRevoked { reason }.series();
        assert_eq!(
            series("lost_device"),
            r#"edge_auth_sessions_revoked_total{reason="lost_device"}"#
        );
        assert_eq!(
            series("ticket-4711"),
            r#"edge_auth_sessions_revoked_total{reason="other"}"#
        );
    }

    #[test]
    fn an_unmoved_registry_writes_zeroes_and_empty_buckets() {
        let text = render(&BTreeMap::new(), 0);
        assert!(
            text.contains(
                "# TYPE edge_auth_push_streams_open gauge\nedge_auth_push_streams_open 0\n"
            )
        );
        assert!(text.contains("edge_auth_sessions_created_total 0\n"));
        assert!(text.contains("edge_auth_backend_latency_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(!text.contains("edge_auth_commands_total{"));
    }

    #[test]
    fn shards_add_up_per_series() {
        let series = Counter::Command {
            message_type: "echo",
            result: "ok",
        }
        .series();
        let mut totals = BTreeMap::new();
        let shard = |pairs: &[(&str, &str)]| -> Vec<String> {
            pairs
                .iter()
                .flat_map(|(f, v)| [f.to_string(), v.to_string()])
                .collect()
        };
        add_shard(&mut totals, "a", &shard(&[(&series, "2"), ("x", "1")])).expect("a shard");
        add_shard(&mut totals, "b", &shard(&[(&series, "3")])).expect("a shard");
        assert_eq!(totals.get(&series), Some(&5));
        assert_eq!(totals.get("x"), Some(&1));
        assert!(add_shard(&mut totals, "c", &["odd".to_string()]).is_err());
        assert!(add_shard(&mut totals, "d", &shard(&[("x", "one")])).is_err());
    }

    #[test]
    fn render_writes_each_series_its_sums_in_seconds_and_the_open_streams() {
        let mut totals = BTreeMap::new();
        totals.insert(
            Counter::Command {
                message_type: "echo",
                result: "ok",
            }
            .series(),
            5,
        );
        totals.insert(format!("{BACKEND}_sum_us"), 1_500_000);
        let text = render(&totals, 3);
        assert!(text.contains("edge_auth_push_streams_open 3\n"));
        assert!(text.contains("edge_auth_commands_total{message_type=\"echo\",result=\"ok\"} 5\n"));
        assert!(text.contains("edge_auth_backend_latency_seconds_sum 1.5\n"));
    }

    /// The tests that use the request's tally (process-wide) take turns.
    static TALLY_TESTS: Mutex<()> = Mutex::new(());

    #[test]
    fn a_slow_backend_call_lands_only_in_the_wider_buckets() {
        let _turn = TALLY_TESTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        begin();
        observe_backend(Duration::from_millis(30));
        let fields: Vec<String> = tally(std::mem::take).into_iter().map(|(f, _)| f).collect();
        assert!(!fields.iter().any(|f| f.contains("le=\"0.025\"")));
        assert!(fields.iter().any(|f| f.contains("le=\"0.05\"")));
        assert!(fields.iter().any(|f| f.contains("le=\"+Inf\"")));
    }

    #[test]
    fn a_count_is_taken_back_only_while_the_request_holds_it() {
        let _turn = TALLY_TESTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        begin();
        let created = Counter::ConfirmResult("created");
        count(&created);
        count(&Counter::SessionCreated);
        assert!(uncount(&created));
        assert!(!uncount(&created), "nothing left to take back");
        let left = tally(std::mem::take);
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(
            left.iter().all(|(_, n)| *n > 0),
            "never a decrement: {left:?}"
        );
    }
}
