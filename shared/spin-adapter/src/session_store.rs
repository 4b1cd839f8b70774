//! [`SessionStore`] on Redis: one Lua script (or one command) per method.

use std::collections::HashMap;

use anyhow::{Context, bail};
use edge_auth_domain::ids::{AddressTag, DeviceSessionId};
use edge_auth_domain::public_key::StoredPublicKey;
use edge_auth_domain::sessions::input::{Actor, ReasonCode};
use edge_auth_domain::sessions::input::{ChangeReason, UserRef};
use edge_auth_domain::sessions::model::{
    AuditAction, AuditRecord, ExpireReason, Lifetime, Page, Revocation, SessionRecord,
    SessionStatus, StatusFilter,
};
use edge_auth_domain::sessions::ports::{
    BatchOutcome, BlockChange, FenceMark, RevokeBatch, RevokeOutcome, SessionStore, UserFence,
};
use edge_auth_domain::time::Timestamp;
use spin_sdk::redis::RedisResult;

use crate::keys::{self, AddressKeys};
use crate::metrics::{self, Counter};
use crate::redis::{Arg, Reply, SpinRedis, scripts};

fn optional(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn time(text: &str) -> anyhow::Result<Timestamp> {
    Ok(Timestamp(
        text.parse()
            .with_context(|| format!("bad timestamp {text:?}"))?,
    ))
}

/// How an error names a stored field that is there or not.
fn stored(present: bool) -> &'static str {
    if present { "stored" } else { "missing" }
}

/// Reads one record (the scripts' `RECORD_FIELDS`, in that order) from a reply.
fn record(reply: &mut Reply) -> anyhow::Result<SessionRecord> {
    let mut next = || -> anyhow::Result<String> { Ok(reply.text()?.unwrap_or_default()) };
    let device_session_id = DeviceSessionId::parse(&next()?).context("stored session id")?;
    let user_id = UserRef::parse(&next()?).context("stored user id")?;
    let client_public_key = StoredPublicKey::from_store(&next()?).context("stored device key")?;
    let status_text = next()?;
    let status = SessionStatus::parse(&status_text)
        .with_context(|| format!("bad session status {status_text:?}"))?;
    let created_at = time(&next()?)?;
    let revoked_at = optional(next()?).map(|t| time(&t)).transpose()?;
    let revoke_reason_code = optional(next()?)
        .map(|r| ReasonCode::parse(&r).context("stored reason code"))
        .transpose()?;
    let revoke_actor = optional(next()?)
        .map(|a| Actor::parse(&a).context("stored actor"))
        .transpose()?;
    let revocation = match (revoked_at, revoke_reason_code, revoke_actor) {
        (Some(at), Some(reason_code), Some(actor)) => Some(Revocation {
            at,
            reason_code,
            actor,
        }),
        (None, None, None) => None,
        // Which parts are there, not their values: an actor may name a person.
        (at, reason, actor) => bail!(
            "a revocation with missing parts: revoked_at {}, revoke_reason_code {}, \
             revoke_actor {}",
            stored(at.is_some()),
            stored(reason.is_some()),
            stored(actor.is_some())
        ),
    };
    let client_addr = next()?;
    let user_agent = next()?;
    let expires_at = optional(next()?).map(|t| time(&t)).transpose()?;
    let last_used_at = optional(next()?).map(|t| time(&t)).transpose()?;
    let idle_timeout_ms = optional(next()?)
        .map(|t| {
            t.parse::<u64>()
                .with_context(|| format!("bad idle timeout {t:?}"))
        })
        .transpose()?;
    let expired_at = optional(next()?).map(|t| time(&t)).transpose()?;
    let expire_reason = optional(next()?)
        .map(|r| ExpireReason::parse(&r).with_context(|| format!("bad expire reason {r:?}")))
        .transpose()?;
    let lifetime = match (expires_at, last_used_at, idle_timeout_ms) {
        (Some(expires_at), Some(last_used_at), Some(idle_timeout_ms)) => Some(Lifetime {
            expires_at,
            last_used_at,
            idle_timeout_ms,
        }),
        _ => None,
    };
    Ok(SessionRecord {
        device_session_id,
        user_id,
        client_public_key,
        status,
        created_at,
        revocation,
        client_addr,
        user_agent,
        lifetime,
        expired: expired_at.zip(expire_reason),
    })
}

/// An audit stream entry, typed.
fn audit_record(id: String, mut fields: HashMap<String, String>) -> anyhow::Result<AuditRecord> {
    let action_text = fields.remove("action").unwrap_or_default();
    let action = AuditAction::parse(&action_text)
        .with_context(|| format!("audit record {id}: unknown action {action_text:?}"))?;
    let at = time(&fields.remove("at").unwrap_or_default())
        .with_context(|| format!("audit record {id}"))?;
    // A field that is absent or empty is none; one that is there must parse.
    fn field<T, E>(
        fields: &mut HashMap<String, String>,
        id: &str,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> anyhow::Result<Option<T>>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        fields
            .remove(name)
            .filter(|v| !v.is_empty())
            .map(|v| parse(&v))
            .transpose()
            .with_context(|| format!("audit record {id}: {name}"))
    }
    let revoked_count = field(&mut fields, &id, "revoked_count", str::parse::<u64>)?;
    let device_session_id = field(
        &mut fields,
        &id,
        "device_session_id",
        DeviceSessionId::parse,
    )?;
    let user_id = field(&mut fields, &id, "user_id", UserRef::parse)?;
    let reason_code = field(&mut fields, &id, "reason_code", ReasonCode::parse)?;
    let actor = field(&mut fields, &id, "actor", Actor::parse)?;
    Ok(AuditRecord {
        action,
        at,
        device_session_id,
        user_id,
        reason_code,
        actor,
        revoked_count,
        id,
    })
}

/// Every address tag an external directory's user has logged in with (the user index),
/// read by the session and the push stores alike.
///
/// # Errors
/// Redis failed, or the index holds something that is no tag.
pub(crate) fn user_addresses(redis: &SpinRedis, user: &UserRef) -> anyhow::Result<Vec<AddressTag>> {
    address_tags(Reply::new(
        "SMEMBERS user index",
        redis.command("SMEMBERS", &[keys::user_index(user.as_str()).into()])?,
    ))
}

/// The address tags of a user index reply (`SMEMBERS`, or a script returning it).
fn address_tags(mut reply: Reply) -> anyhow::Result<Vec<AddressTag>> {
    reply
        .rest()?
        .into_iter()
        .map(|hex| {
            AddressTag::parse_hex(&hex)
                .with_context(|| format!("bad address tag {hex:?} in the user index"))
        })
        .collect()
}

/// The stream arguments of the scripts that may end expired sessions as they read.
fn stream_args() -> Vec<Arg> {
    vec![
        keys::LIFECYCLE_TTL_MS.into(),
        keys::LIFECYCLE_MAXLEN.into(),
        keys::AUDIT_TTL_MS.into(),
        keys::AUDIT_MAXLEN.into(),
    ]
}

/// Runs `revoke.lua` on one session (the revoke route, and a login withdrawing the session
/// it made for a user a block reached) and counts a revocation. Returns the outcome
/// (`not_found`, `revoked` or `already`) and the rest of the reply (the record).
///
/// # Errors
/// Redis failed.
pub(crate) fn run_revoke(
    redis: &SpinRedis,
    id: &DeviceSessionId,
    reason: &ChangeReason,
) -> anyhow::Result<(String, Reply)> {
    let k = AddressKeys::new(id.tag());
    let mut args = common(reason);
    args.push(keys::AUDIT_TTL_MS.into());
    args.push(keys::AUDIT_MAXLEN.into());
    let keys_ = [
        k.session(id.as_str()),
        k.active_sessions(),
        k.revoked_sessions(),
        k.lifecycle(),
        k.audit(),
        k.expired_sessions(),
        k.projection(id.as_str()),
    ];
    let mut reply = Reply::new("revoke", redis.run(&scripts::REVOKE, &keys_, &args)?);
    let outcome = reply.required()?;
    if outcome == "revoked" {
        metrics::count(&Counter::SessionsRevoked {
            reason: reason.reason_code.as_str(),
        });
    }
    Ok((outcome, reply))
}

/// The arguments every revoking script starts with.
fn common(reason: &ChangeReason) -> Vec<Arg> {
    vec![
        reason.reason_code.as_str().into(),
        reason.actor.as_str().into(),
        keys::REVOKED_RETENTION_MS.into(),
        keys::LIFECYCLE_TTL_MS.into(),
        keys::LIFECYCLE_MAXLEN.into(),
    ]
}

/// The session store on a Spin Redis connection.
#[derive(Debug)]
pub struct RedisSessionStore {
    redis: std::cell::OnceCell<SpinRedis>,
}

impl RedisSessionStore {
    /// Wraps an open connection.
    pub fn new(redis: SpinRedis) -> Self {
        Self {
            redis: std::cell::OnceCell::from(redis),
        }
    }

    /// A store that connects when it is first used: a use case that refuses its input
    /// first (a malformed id, a bad cursor) then opens no connection, and answers its
    /// `400` even while Redis is unreachable.
    pub fn connecting() -> Self {
        Self {
            redis: std::cell::OnceCell::new(),
        }
    }

    /// The connection (opened now, for a store made by [`RedisSessionStore::connecting`]
    /// that has not used it yet), also for another store of the same request.
    ///
    /// # Errors
    /// As [`SpinRedis::connect`].
    pub fn redis(&self) -> anyhow::Result<&SpinRedis> {
        if let Some(redis) = self.redis.get() {
            return Ok(redis);
        }
        let redis = SpinRedis::connect()?;
        Ok(self.redis.get_or_init(|| redis))
    }

    /// Runs `fence_user.lua` on the user's fence in `mode` (`raise`, `read` or `lower`).
    fn fence(&self, user: &UserRef, mode: &str, arg: Arg) -> anyhow::Result<Vec<RedisResult>> {
        self.redis()?.run(
            &scripts::FENCE_USER,
            &[
                keys::user_index(user.as_str()),
                keys::user_block_fence(user.as_str()),
            ],
            &[mode.into(), arg],
        )
    }

    /// Writes `limit` ('' = none) to every copy with a new version from the counter;
    /// the newest version a copy refused it for, if any.
    fn write_limit_copies(&self, limit: &str) -> anyhow::Result<Option<i64>> {
        let mut reply = Reply::new(
            "INCR session-limit calls",
            self.redis()?
                .command("INCR", &[keys::SESSION_LIMIT_CALLS.into()])?,
        );
        let version = reply.int()?.to_string();
        let mut newest = None;
        // One call per copy: each lives in its own shard slot.
        for (copy, copy_version) in keys::session_limit_copies()
            .into_iter()
            .zip(keys::session_limit_version_copies())
        {
            let mut reply = Reply::new(
                "set_limit_copy",
                self.redis()?.run(
                    &scripts::SET_LIMIT_COPY,
                    &[copy, copy_version],
                    &[version.as_str().into(), limit.into()],
                )?,
            );
            if reply.int()? == 0 {
                let theirs = reply.int()?;
                newest = Some(newest.map_or(theirs, |n: i64| n.max(theirs)));
            }
        }
        Ok(newest)
    }
}

impl SessionStore for RedisSessionStore {
    fn get(&self, id: &DeviceSessionId) -> anyhow::Result<Option<SessionRecord>> {
        let k = AddressKeys::new(id.tag());
        let keys_ = [
            k.session(id.as_str()),
            k.active_sessions(),
            k.expired_sessions(),
            k.lifecycle(),
            k.audit(),
            k.projection(id.as_str()),
        ];
        let items = self
            .redis()?
            .run(&scripts::GET_SESSION, &keys_, &stream_args())?;
        if items.is_empty() {
            return Ok(None);
        }
        record(&mut Reply::new("get_session", items)).map(Some)
    }

    fn locate_user(&self, user: &UserRef) -> anyhow::Result<Vec<AddressTag>> {
        user_addresses(self.redis()?, user)
    }

    fn raise_fence(&self, user: &UserRef) -> anyhow::Result<Vec<AddressTag>> {
        let items = self.fence(user, "raise", keys::USER_BLOCK_FENCE_MS.into())?;
        address_tags(Reply::new("fence_user", items))
    }

    fn read_fence(&self, user: &UserRef) -> anyhow::Result<UserFence> {
        let mut reply = Reply::new("fence_user", self.fence(user, "read", "".into())?);
        let standing = match reply.required()?.as_str() {
            "" => None,
            mark => Some(FenceMark(
                mark.parse()
                    .with_context(|| format!("bad block fence mark {mark:?}"))?,
            )),
        };
        Ok(UserFence {
            tags: address_tags(reply)?,
            standing,
        })
    }

    fn lower_fence(&self, user: &UserRef, read: Option<FenceMark>) -> anyhow::Result<bool> {
        let read = read.map_or_else(String::new, |mark| mark.0.to_string());
        let mut reply = Reply::new("fence_user", self.fence(user, "lower", read.into())?);
        Ok(reply.int()? == 1)
    }

    fn list(
        &self,
        tag: AddressTag,
        user: &UserRef,
        filter: StatusFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> anyhow::Result<Option<Page<SessionRecord>>> {
        let k = AddressKeys::new(tag);
        let set = match filter {
            StatusFilter::Active => k.active_sessions(),
            StatusFilter::Revoked => k.revoked_sessions(),
            StatusFilter::Expired => k.expired_sessions(),
            StatusFilter::All => k.all_sessions(),
        };
        let mut args: Vec<Arg> = vec![
            user.as_str().into(),
            cursor.unwrap_or_default().into(),
            limit.into(),
        ];
        args.extend(stream_args());
        let keys_ = [
            set,
            k.user(),
            k.active_sessions(),
            k.expired_sessions(),
            k.lifecycle(),
            k.audit(),
        ];
        let mut reply = Reply::new(
            "list_sessions",
            self.redis()?.run(&scripts::LIST_SESSIONS, &keys_, &args)?,
        );
        match reply.required()?.as_str() {
            "user_not_found" => return Ok(None),
            "ok" => {}
            other => bail!("`list_sessions` reply: unexpected {other:?}"),
        }
        let next_cursor = optional(reply.required()?);
        let n = reply.int()?;
        let items = (0..n)
            .map(|_| record(&mut reply))
            .collect::<anyhow::Result<_>>()?;
        Ok(Some(Page { items, next_cursor }))
    }

    fn revoke(&self, id: &DeviceSessionId, reason: &ChangeReason) -> anyhow::Result<RevokeOutcome> {
        let (outcome, mut reply) = run_revoke(self.redis()?, id, reason)?;
        Ok(match outcome.as_str() {
            "not_found" => RevokeOutcome::NotFound,
            "revoked" => RevokeOutcome::Revoked(record(&mut reply)?),
            "already" => RevokeOutcome::Ended(record(&mut reply)?),
            other => bail!("`revoke` reply: unexpected {other:?}"),
        })
    }

    fn revoke_batch(&self, b: &RevokeBatch<'_>) -> anyhow::Result<BatchOutcome> {
        let k = AddressKeys::new(b.tag);
        let mut args = common(b.reason);
        args.push(b.batch_size.into());
        args.push(
            b.created_up_to
                .map(|t| t.0.to_string())
                .unwrap_or_default()
                .into(),
        );
        args.push(b.user.map(UserRef::as_str).unwrap_or_default().into());
        args.push(b.revoked_so_far.into());
        args.push(b.action.into());
        args.push(keys::AUDIT_TTL_MS.into());
        args.push(keys::AUDIT_MAXLEN.into());
        args.push(b.after.unwrap_or_default().into());
        args.push(b.seen_so_far.into());
        let mut reply = Reply::new(
            "revoke_batch",
            self.redis()?.run(
                &scripts::REVOKE_BATCH,
                &[
                    k.active_sessions(),
                    k.user(),
                    k.revoked_sessions(),
                    k.lifecycle(),
                    k.audit(),
                    k.expired_sessions(),
                ],
                &args,
            )?,
        );
        Ok(match reply.required()?.as_str() {
            "user_not_found" => BatchOutcome::UserNotFound,
            "ok" => {
                let count = u64::try_from(reply.int()?)?;
                metrics::count_n(
                    &Counter::SessionsRevoked {
                        reason: b.reason.reason_code.as_str(),
                    },
                    count,
                );
                BatchOutcome::Revoked {
                    count,
                    more: reply.int()? > 0,
                    bound: Timestamp(u64::try_from(reply.int()?)?),
                    next: reply.text()?.unwrap_or_default(),
                    seen: u64::try_from(reply.int()?)?,
                }
            }
            other => bail!("`revoke_batch` reply: unexpected {other:?}"),
        })
    }

    fn set_blocked(&self, c: &BlockChange<'_>) -> anyhow::Result<bool> {
        let k = AddressKeys::new(c.tag);
        let args: [Arg; 11] = [
            c.reason.reason_code.as_str().into(),
            c.reason.actor.as_str().into(),
            (if c.blocked { "1" } else { "0" }).into(),
            c.user.map(UserRef::as_str).unwrap_or_default().into(),
            keys::LIFECYCLE_TTL_MS.into(),
            keys::LIFECYCLE_MAXLEN.into(),
            keys::AUDIT_TTL_MS.into(),
            keys::AUDIT_MAXLEN.into(),
            (if c.directory_changed { "1" } else { "0" }).into(),
            c.suspends.map(UserRef::as_str).unwrap_or_default().into(),
            (if c.record_only { "1" } else { "0" }).into(),
        ];
        let mut reply = Reply::new(
            "block",
            self.redis()?.run(
                &scripts::BLOCK,
                &[
                    k.blocked(),
                    k.user(),
                    k.failures(),
                    k.lifecycle(),
                    k.audit(),
                ],
                &args,
            )?,
        );
        match reply.required()?.as_str() {
            "ok" => Ok(true),
            "user_not_found" => Ok(false),
            other => bail!("`block` reply: unexpected {other:?}"),
        }
    }

    fn set_session_limit(&self, limit: Option<u32>) -> anyhow::Result<()> {
        let limit = limit.map(|n| n.to_string()).unwrap_or_default();
        let newest = self.write_limit_copies(&limit)?;
        // A copy newer than this call: a newer call, or a counter that went back (a
        // failover of its node, a deleted key) below a version written, which would make
        // every later call lose everywhere. Only the second leaves the counter below that
        // version: move it past, and write again. (A copy at exactly this call's version
        // took the write: see set_limit_copy.lua.)
        if let Some(newest) = newest {
            let mut reply = Reply::new(
                "GET session-limit calls",
                self.redis()?
                    .command("GET", &[keys::SESSION_LIMIT_CALLS.into()])?,
            );
            // No counter yet counts as 0; one that is not a number is corrupt, not 0.
            let counter = match reply.text()? {
                None => 0,
                Some(n) => n
                    .parse::<i64>()
                    .with_context(|| format!("the session-limit call counter holds {n:?}"))?,
            };
            if counter < newest {
                self.redis()?.command(
                    "INCRBY",
                    &[
                        keys::SESSION_LIMIT_CALLS.into(),
                        (newest - counter).to_string().as_str().into(),
                    ],
                )?;
                self.write_limit_copies(&limit)?;
            }
        }
        Ok(())
    }

    fn audit(
        &self,
        tag: AddressTag,
        user: &UserRef,
        cursor: Option<&str>,
        limit: u32,
    ) -> anyhow::Result<Option<Page<AuditRecord>>> {
        let k = AddressKeys::new(tag);
        let args: [Arg; 3] = [
            user.as_str().into(),
            cursor.unwrap_or_default().into(),
            limit.into(),
        ];
        let mut reply = Reply::new(
            "audit",
            self.redis()?
                .run(&scripts::AUDIT, &[k.audit(), k.user()], &args)?,
        );
        match reply.required()?.as_str() {
            "user_not_found" => return Ok(None),
            "ok" => {}
            other => bail!("`audit` reply: unexpected {other:?}"),
        }
        let next_cursor = optional(reply.required()?);
        let n = reply.int()?;
        let mut items = Vec::new();
        for _ in 0..n {
            let id = reply.required()?;
            let pairs = reply.int()?;
            let mut fields = HashMap::new();
            for _ in 0..pairs {
                fields.insert(reply.required()?, reply.required()?);
            }
            items.push(audit_record(id, fields)?);
        }
        Ok(Some(Page { items, next_cursor }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored record's reply: `RECORD_FIELDS` in order, each `(field, value)` given
    /// here set and the rest empty.
    fn reply(set: &[(&str, &str)]) -> Reply {
        const FIELDS: [&str; 15] = [
            "device_session_id",
            "user_id",
            "client_public_key",
            "status",
            "created_at",
            "revoked_at",
            "revoke_reason_code",
            "revoke_actor",
            "client_addr",
            "user_agent",
            "expires_at",
            "last_used_at",
            "idle_timeout_ms",
            "expired_at",
            "expire_reason",
        ];
        let items = FIELDS
            .iter()
            .map(|field| {
                let value = set.iter().find(|(f, _)| f == field).map_or("", |(_, v)| v);
                RedisResult::Binary(value.as_bytes().to_vec())
            })
            .collect();
        Reply::new("test", items)
    }

    #[test]
    fn a_revocation_with_missing_parts_is_refused_without_quoting_the_actor() {
        // Review finding: the error printed the parts it found, an actor that may name a
        // person (`admin:alice@example.com`) among them, into the log.
        let err = record(&mut reply(&[
            (
                "device_session_id",
                "s_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAA",
            ),
            ("user_id", "u_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAA"),
            // Ed25519's base point.
            (
                "client_public_key",
                "WGZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY=",
            ),
            ("status", "revoked"),
            ("created_at", "1700000000000"),
            ("revoke_reason_code", "lost_device"),
            ("revoke_actor", "admin:alice@example.com"),
        ]))
        .expect_err("a revocation without its time");
        let text = format!("{err:#}");
        assert!(!text.contains("alice"), "{text}");
        assert!(
            text.contains("revoked_at missing") && text.contains("revoke_actor stored"),
            "{text}"
        );
    }
}
