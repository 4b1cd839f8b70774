//! [`CommandGate`] on Redis: one script per step, each in one hash slot (the client's
//! shard, then the session's address), so an accepted command costs two round trips.

use anyhow::bail;
use edge_auth_domain::gateway::ports::{
    BudgetKind, ClientAdmission, ClientOutcome, CommandGate, SessionAdmission, SessionOutcome,
};

use crate::keys::{self, AddressKeys};
use crate::metrics::{self, Budget, Counter, Ride, When};
use crate::redis::{Arg, Reply, SpinRedis, scripts};

/// The command gate over a Redis connection.
#[derive(Debug)]
pub struct RedisCommandGate<'a> {
    redis: &'a SpinRedis,
}

impl<'a> RedisCommandGate<'a> {
    pub fn new(redis: &'a SpinRedis) -> Self {
        Self { redis }
    }
}

fn wait(reply: &mut Reply) -> anyhow::Result<u64> {
    Ok(u64::try_from(reply.int()?.max(0))?)
}

impl CommandGate for RedisCommandGate<'_> {
    fn admit_client(&self, a: &ClientAdmission<'_>) -> anyhow::Result<ClientOutcome> {
        let message_type = metrics::command_label(a.message_type.as_str(), a.known_type);
        let counted = |result| Counter::Command {
            message_type,
            result,
        };
        // A stale or over-budget command is counted by the script that refuses it.
        let ride = Ride::default()
            .on(When::Stale, &counted("stale_request"))
            .on(When::Limited, &counted("rate_limited"))
            .on(
                When::Limited,
                &Counter::RateLimited {
                    route: "command",
                    budget: Budget::Client,
                },
            );
        let mut args = vec![
            Arg::from(a.timestamp_ms),
            Arg::from(a.window_ms),
            Arg::from(a.budget.rate.interval_ms()),
            Arg::from(a.budget.rate.tolerance_ms()),
        ];
        args.extend(ride.into_args());
        let items = self.redis.run(
            &scripts::COMMAND_CLIENT,
            &[keys::budget(a.budget), keys::metrics_for(&a.budget.client)],
            &args,
        )?;
        let mut reply = Reply::new("command_client", items);
        Ok(match reply.required()?.as_str() {
            "ok" => ClientOutcome::Admitted,
            "stale" => ClientOutcome::Stale {
                now_ms: wait(&mut reply)?,
            },
            "rate_limited" => ClientOutcome::RateLimited {
                retry_after_ms: wait(&mut reply)?,
            },
            other => bail!("`command_client` reply: unknown outcome {other:?}"),
        })
    }

    fn admit_session(&self, a: &SessionAdmission<'_>) -> anyhow::Result<SessionOutcome> {
        let k = AddressKeys::new(a.session.tag());
        let id = a.session.as_str();
        let b = a.budgets;
        // A command that opens no stream claims none (max 0).
        let (max_streams, ends_in_ms, grace_ms) = a
            .stream
            .map_or((0, 0, 0), |c| (c.max_streams, c.ends_in_ms, c.grace_ms));
        let items = self.redis.run(
            &scripts::COMMAND_SESSION,
            &[
                k.projection(id),
                k.session(id),
                k.blocked(),
                k.replay(id, a.request_id.as_str()),
                k.session_command_budget(id),
                k.user_command_budget(),
                k.message_type_budget(a.message_type.as_str()),
                k.active_sessions(),
                k.expired_sessions(),
                k.lifecycle(),
                k.audit(),
                k.streams(id),
                k.user(),
            ],
            &[
                Arg::from(a.key.as_str()),
                Arg::from(a.replay_ttl_ms),
                Arg::from(b.per_session.interval_ms()),
                Arg::from(b.per_session.tolerance_ms()),
                Arg::from(b.per_user.interval_ms()),
                Arg::from(b.per_user.tolerance_ms()),
                Arg::from(b.per_message_type.interval_ms()),
                Arg::from(b.per_message_type.tolerance_ms()),
                Arg::from(if a.known_type { "1" } else { "0" }),
                Arg::from(keys::LIFECYCLE_TTL_MS),
                Arg::from(keys::LIFECYCLE_MAXLEN),
                Arg::from(keys::AUDIT_TTL_MS),
                Arg::from(keys::AUDIT_MAXLEN),
                Arg::from(a.timestamp_ms),
                Arg::from(a.window_ms),
                Arg::from(a.request_id.as_str()),
                Arg::from(max_streams),
                Arg::from(ends_in_ms),
                Arg::from(grace_ms),
                Arg::from(keys::REVOKED_RETENTION_MS),
            ],
        )?;
        let mut reply = Reply::new("command_session", items);
        let code = reply.required()?;
        let now_ms = wait(&mut reply)?;
        let outcome = match code.as_str() {
            "stale" => SessionOutcome::Stale { now_ms },
            "unknown_session" => SessionOutcome::UnknownSession,
            "key_mismatch" => SessionOutcome::KeyMismatch,
            "revoked" => SessionOutcome::Revoked { now_ms },
            "expired" => SessionOutcome::Expired { now_ms },
            "blocked" => SessionOutcome::Blocked { now_ms },
            "replayed" => SessionOutcome::Replayed { now_ms },
            "rate_limited" => {
                let retry_after_ms = wait(&mut reply)?;
                let budget = match reply.required()?.as_str() {
                    "session" => BudgetKind::Session,
                    "user" => BudgetKind::User,
                    "message_type" => BudgetKind::MessageType,
                    other => bail!("`command_session` reply: unknown budget {other:?}"),
                };
                metrics::count(&Counter::RateLimited {
                    route: "command",
                    budget: Budget::Command(budget),
                });
                SessionOutcome::RateLimited {
                    now_ms,
                    retry_after_ms,
                    budget,
                }
            }
            "too_many_streams" => SessionOutcome::TooManyStreams {
                now_ms,
                retry_after_ms: wait(&mut reply)?,
            },
            // Counted with its result once it has one (see `count_command`).
            "admitted" => {
                let user_id = reply.required()?;
                crate::request_log::note_user_id(&user_id);
                return Ok(SessionOutcome::Admitted { now_ms, user_id });
            }
            other => bail!("`command_session` reply: unknown outcome {other:?}"),
        };
        // A refusal of a proven session names its user last, for the request's line.
        if !matches!(
            outcome,
            SessionOutcome::Stale { .. }
                | SessionOutcome::UnknownSession
                | SessionOutcome::KeyMismatch
        ) && let Some(user_id) = reply.text()?
        {
            crate::request_log::note_user_id(&user_id);
        }
        metrics::count(&Counter::Command {
            message_type: metrics::command_label(a.message_type.as_str(), a.known_type),
            result: session_result(&outcome),
        });
        Ok(outcome)
    }
}

/// The `result` label of a command the session step refused: the `result_code` (or
/// plain error code) the client gets.
fn session_result(outcome: &SessionOutcome) -> &'static str {
    match outcome {
        SessionOutcome::Stale { .. } => "stale_request",
        SessionOutcome::UnknownSession => "unknown_session",
        SessionOutcome::KeyMismatch => "key_mismatch",
        SessionOutcome::Revoked { .. } => "session_revoked",
        SessionOutcome::Expired { .. } => "session_expired",
        SessionOutcome::Blocked { .. } => "user_blocked",
        SessionOutcome::Replayed { .. } => "replayed_request",
        SessionOutcome::RateLimited { .. } => "rate_limited",
        SessionOutcome::TooManyStreams { .. } => "too_many_streams",
        SessionOutcome::Admitted { .. } => "admitted",
    }
}

/// Counts the result of a command the session step admitted: `result_code` of its
/// response (refusals of the steps before are counted where they are decided).
pub fn count_command(message_type: &str, known_type: bool, result_code: &str) {
    metrics::count(&Counter::Command {
        message_type: metrics::command_label(message_type, known_type),
        result: result_code,
    });
}
