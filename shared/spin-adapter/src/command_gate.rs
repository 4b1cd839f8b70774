//! [`CommandGate`] on Redis: one script per step, each in one hash slot (the client's
//! shard, then the session's address), so an accepted command costs two round trips.

use std::sync::OnceLock;

use anyhow::bail;
use edge_auth_domain::gateway::ports::{
    BudgetKind, ClientAdmission, ClientOutcome, CommandGate, SessionAdmission, SessionOutcome,
};

use crate::keys::{self, AddressKeys};
use crate::redis::{Arg, Reply, Script, SpinRedis};

struct Scripts {
    client: Script,
    session: Script,
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        client: Script::new("command_client", include_str!("scripts/command_client.lua")),
        session: Script::new(
            "command_session",
            include_str!("scripts/command_session.lua"),
        ),
    })
}

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
        let script = &scripts().client;
        let items = self.redis.run(
            script,
            &[keys::budget(a.budget)],
            &[
                Arg::from(a.timestamp_ms),
                Arg::from(a.window_ms),
                Arg::from(a.budget.rate.interval_ms()),
                Arg::from(a.budget.rate.tolerance_ms()),
            ],
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
        let items = self.redis.run(
            &scripts().session,
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
            ],
        )?;
        let mut reply = Reply::new("command_session", items);
        let code = reply.required()?;
        let now_ms = wait(&mut reply)?;
        Ok(match code.as_str() {
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
                SessionOutcome::RateLimited {
                    now_ms,
                    retry_after_ms,
                    budget,
                }
            }
            "admitted" => SessionOutcome::Admitted {
                now_ms,
                user_id: reply.required()?,
            },
            other => bail!("`command_session` reply: unknown outcome {other:?}"),
        })
    }
}
