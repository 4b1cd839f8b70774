//! [`PushStore`] on Redis: publishing and reading are one script each, in the address's
//! slot; waiting is one `XREAD BLOCK` on the slot's lifecycle and event streams together;
//! a stream's claim (made by the command gate) is released with one `ZREM`.

use std::cell::Cell;

use anyhow::{Context, bail};
use edge_auth_domain::gateway::command::RequestId;
use edge_auth_domain::ids::{AddressTag, DeviceSessionId};
use edge_auth_domain::push::ports::{
    Append, AppendOutcome, EndReason, Position, PushStore, ReadFrom, SessionState, StoredEvent,
    StreamRead, Wake,
};
use edge_auth_domain::sessions::input::UserRef;
use spin_sdk::redis::{Error as RedisError, RedisResult};

use crate::keys::{self, AddressKeys};
use crate::redis::{Reply, SpinRedis, scripts};

/// The push store on Redis. A stream's store must be on RESP
/// ([`SpinRedis::connect_resp`]): `XREAD BLOCK` occupies its connection while it waits.
#[derive(Debug)]
pub struct RedisPushStore {
    redis: SpinRedis,
    /// A wait ended by our host's shutdown left its `XREAD BLOCK` pending on the
    /// connection: Redis answers that connection's next command only once the block
    /// times out, so what follows goes over the request's next connection (the wait made
    /// the request forget this one).
    abandoned: Cell<bool>,
}

impl RedisPushStore {
    pub fn new(redis: SpinRedis) -> Self {
        Self {
            redis,
            abandoned: Cell::new(false),
        }
    }
}

/// How our host (`infra/host`, `redis_host::SHUTTING_DOWN`) answers a blocking command
/// once it has begun to shut down: the wait ends at once so the stream can send its
/// terminal event (`server_shutdown`) before the host stops. Real Spin has no such signal:
/// its streams are cut, and the client resumes from its last id just the same.
const HOST_SHUTTING_DOWN: &str = "edge-auth-host is shutting down";

/// Whether `error` is our host's shutdown answer (see [`HOST_SHUTTING_DOWN`]).
fn host_shutting_down(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<RedisError>(),
        Some(RedisError::Other(message)) if message == HOST_SHUTTING_DOWN
    )
}

fn position(reply: &mut Reply) -> anyhow::Result<Position> {
    let text = reply.required()?;
    Position::parse(&text).with_context(|| format!("stream id {text:?} from Redis"))
}

impl PushStore for RedisPushStore {
    fn locate_user(&self, user: &UserRef) -> anyhow::Result<Vec<AddressTag>> {
        crate::session_store::user_addresses(&self.redis, user)
    }

    fn append(&self, tag: AddressTag, e: &Append<'_>) -> anyhow::Result<AppendOutcome> {
        let k = AddressKeys::new(tag);
        let device = e.device.map_or("", DeviceSessionId::as_str);
        let guard = match e.device {
            Some(d) => k.projection(d.as_str()),
            None => k.user(),
        };
        let payload =
            String::from_utf8(e.payload.to_vec()).context("an event payload that is not UTF-8")?;
        let items = self.redis.run(
            &scripts::PUSH_APPEND,
            &[
                k.events(),
                k.events_meta(),
                k.user(),
                guard,
                k.active_sessions(),
            ],
            &[
                e.event_id.into(),
                e.event_type.into(),
                device.into(),
                e.user.as_str().into(),
                payload.into(),
                e.limits.max_len.into(),
                e.limits.max_age_ms.into(),
                (keys::EVENTS_META_TTL_MS + e.limits.max_age_ms).into(),
            ],
        )?;
        let mut reply = Reply::new("push_append", items);
        Ok(match reply.required()?.as_str() {
            "appended" => AppendOutcome::Appended {
                position: position(&mut reply)?,
            },
            "unknown_user" => AppendOutcome::UnknownUser,
            "unknown_session" => AppendOutcome::UnknownSession,
            other => bail!("`push_append` reply: unknown outcome {other:?}"),
        })
    }

    fn read(
        &self,
        session: &DeviceSessionId,
        from: ReadFrom,
        max_events: u32,
        max_age_ms: u64,
    ) -> anyhow::Result<StreamRead> {
        let k = AddressKeys::new(session.tag());
        let id = session.as_str();
        let from = match from {
            ReadFrom::Now => String::new(),
            ReadFrom::After(p) => p.to_string(),
        };
        let items = self.redis.run(
            &scripts::PUSH_READ,
            &[
                k.projection(id),
                k.session(id),
                k.blocked(),
                k.active_sessions(),
                k.expired_sessions(),
                k.lifecycle(),
                k.audit(),
                k.events(),
                k.events_meta(),
                k.user(),
            ],
            &[
                id.into(),
                from.into(),
                max_events.into(),
                keys::LIFECYCLE_TTL_MS.into(),
                keys::LIFECYCLE_MAXLEN.into(),
                keys::AUDIT_TTL_MS.into(),
                keys::AUDIT_MAXLEN.into(),
                max_age_ms.into(),
            ],
        )?;
        let mut reply = Reply::new("push_read", items);
        let state = reply.required()?;
        let now_ms = u64::try_from(reply.int()?)?;
        let ends_at = reply.int()?;
        let state = match state.as_str() {
            "active" => SessionState::Active {
                ends_at_ms: u64::try_from(ends_at).ok(),
            },
            "session_revoked" => SessionState::Ended(EndReason::SessionRevoked),
            "session_expired" => SessionState::Ended(EndReason::SessionExpired),
            "user_blocked" => SessionState::Ended(EndReason::UserBlocked),
            other => bail!("`push_read` reply: unknown state {other:?}"),
        };
        let lifecycle = position(&mut reply)?;
        let cursor = position(&mut reply)?;
        let gap = reply.int()? == 1;
        let n = reply.int()?;
        let mut events = Vec::with_capacity(usize::try_from(n)?);
        for _ in 0..n {
            let position = position(&mut reply)?;
            let event_id = reply.required()?;
            let event_type = reply.required()?;
            let device = reply.required()?;
            let user_id = reply.required()?;
            let at_ms = u64::try_from(reply.int()?)?;
            let payload = reply.required()?.into_bytes();
            events.push(StoredEvent {
                position,
                event_id,
                event_type,
                device: (!device.is_empty()).then_some(device),
                user_id,
                at_ms,
                payload,
            });
        }
        Ok(StreamRead {
            now_ms,
            state,
            lifecycle,
            cursor,
            gap,
            events,
        })
    }

    fn wait(
        &self,
        session: &DeviceSessionId,
        lifecycle: Position,
        cursor: Position,
        timeout_ms: u64,
    ) -> anyhow::Result<Wake> {
        let k = AddressKeys::new(session.tag());
        let reply = self.redis.command(
            "XREAD",
            &[
                "COUNT".into(),
                1u32.into(),
                "BLOCK".into(),
                timeout_ms.max(1).into(),
                "STREAMS".into(),
                k.lifecycle().into(),
                k.events().into(),
                lifecycle.to_string().into(),
                cursor.to_string().into(),
            ],
        );
        let items = match reply {
            Err(e) if host_shutting_down(&e) => {
                self.abandoned.set(true);
                // Nothing else of this request may queue behind it either.
                crate::redis::forget_connections();
                return Ok(Wake::ShuttingDown);
            }
            Err(e) => {
                // The connection may be broken: what follows opens a new one.
                crate::redis::forget_connections();
                return Err(e);
            }
            Ok(items) => items,
        };
        // Flattened: a timeout is one nil; anything else is a record on either stream.
        Ok(if matches!(items.as_slice(), [] | [RedisResult::Nil]) {
            Wake::TimedOut
        } else {
            Wake::Changed
        })
    }

    fn release(&self, session: &DeviceSessionId, stream: &RequestId) -> anyhow::Result<()> {
        let k = AddressKeys::new(session.tag());
        let args = [k.streams(session.as_str()).into(), stream.as_str().into()];
        let zrem = |redis: &SpinRedis| redis.command("ZREM", &args).map(drop);
        // The stream's own connection, unless a wait was left pending on it. If that
        // fails (a stream that ended because the store failed), once more on the request's
        // next connection, which the metrics written after the body then reuse.
        if self.abandoned.get() {
            return SpinRedis::connect_resp().and_then(|redis| zrem(&redis));
        }
        zrem(&self.redis).or_else(|first| {
            crate::redis::forget_connections();
            SpinRedis::connect_resp()
                .and_then(|redis| zrem(&redis))
                .with_context(|| format!("and on the stream's connection: {first:#}"))
        })
    }
}

/// Reads and checks the push settings.
///
/// # Errors
/// A variable that cannot be read or a value out of range (the message names it).
pub fn push_settings() -> anyhow::Result<edge_auth_domain::push::settings::PushSettings> {
    use edge_auth_domain::push::settings::PushSettings;
    let mut values = std::collections::HashMap::new();
    for name in PushSettings::NAMES {
        if let Some(value) = crate::settings::optional(name)? {
            values.insert(name, value);
        }
    }
    PushSettings::from_settings(|name| values.get(name).cloned()).context("invalid push settings")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_hosts_exact_shutdown_answer_ends_a_wait_as_a_shutdown() {
        let shutdown = anyhow::Error::new(RedisError::Other(HOST_SHUTTING_DOWN.to_string()))
            .context("sending XREAD to Redis");
        assert!(host_shutting_down(&shutdown));
        let other = anyhow::Error::new(RedisError::Other(
            "connection reset; edge-auth-host is shutting down".to_string(),
        ));
        assert!(!host_shutting_down(&other));
        assert!(!host_shutting_down(&anyhow::anyhow!(HOST_SHUTTING_DOWN)));
    }
}
