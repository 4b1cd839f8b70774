//! Redis key names: this module is the one owner of the key layout. Everything of one
//! e-mail address shares the hash tag `{a:<tag>}`, so one script can touch all of it on
//! Redis Cluster; client budgets and the settings read with them are spread over 16
//! shard slots `{ea:c<0-f>}` by client.
//!
//! Scripts get every key they touch in `KEYS`, built here, whenever the caller knows it.
//! Where a script finds ids only as it runs (the sessions of a batch revoke, the session
//! of a replayed confirm, the newest challenge of a resend), it derives their keys with
//! the helpers of [`lua_prelude`], generated here from the same names, from a `KEYS`
//! entry of the same address, so it cannot reach another slot. The end-to-end tests
//! watch Redis with `MONITOR` and fail any script call that touches more than one slot,
//! or a key its caller knew without passing it.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `ea:{ea:c<0-f>}:config:session_limit` | string | max active sessions a user holds per address (absent: no limit); one copy per client shard, all written by `POST /api/v1/internal/config/session-limit` |
//! | `ea:{ea:c<0-f>}:config:session_limit_version` | string | the version of the copy beside it: a copy is written only by a call with a newer version |
//! | `ea:{ea:c0}:config:session_limit_calls` | string (counter) | the versions set-session-limit calls take, in the order they reach Redis |
//! | `ea:{ea:c<0-f>}:metrics` | hash | metrics counted in this shard: a field per series (`family{labels}`), its count (see `metrics.rs`); the scrape adds the 16 up |
//! | `ea:{ea:c<0-f>}:push:live` | zset | push streams open in this shard (member `<session_id>/<request_id>`, the shard its SHA-256 picks; score: until when it counts unless it ends, its maximum duration and 15 s on); the gauge of open streams counts them at each scrape |
//! | `ea:{ea:c<0-f>}:rl:<route>:client:<client>` | string | GCRA time of a client budget (`<route>`: send, confirm, or `wrong_code`, the wrong codes a client gives across addresses; `<client>`: IPv4 address or IPv6 prefix) |
//! | `ea:{a:<tag>}:ch:<challenge_id>` | hash | challenge (state, code MAC, the address's whole keyed MAC, times, attempts, and, with `user_directory=rest` only, the address, which the confirm hands the directory); kept for the code's lifetime and the idempotency window |
//! | `ea:{a:<tag>}:latest` | string | the address's newest challenge id; expires with the code's lifetime and the idempotency window |
//! | `ea:{a:<tag>}:resend` | string | resend-throttle marker (expires) |
//! | `ea:{a:<tag>}:blocked` | hash (`blocked_at`, `reason_code`, `actor`, `by_user`, `u:<user id>` per user it suspends, `u:` for all) | present when the address is blocked |
//! | `ea:{a:<tag>}:rl:send` | string | GCRA time of the address's send budget |
//! | `ea:{a:<tag>}:rl:variants` | string | GCRA time of the send budget the variants of the address's inbox share (`+` tags, Gmail's forms), beside their own |
//! | `ea:{a:<tag>}:rl:confirm` | string | GCRA time of the address's confirm budget (spent only by confirms that compare a code: of a live challenge, or one already confirmed) |
//! | `ea:{a:<tag>}:failures` | string | consecutive wrong codes of the address; expires `failed_confirm_lockout_seconds` after the last one |
//! | `ea:{a:<tag>}:user` | string | the address's user id (with `user_directory=rest`: the user of the address's latest login, rewritten by each) |
//! | `ea:{a:<tag>}:user:address` | string | the whole keyed MAC (hex) of the address that user id is for: the tag is its first 64 bits, and a login at another address with the same tag is refused (built-in directory) |
//! | `ea:{a:<tag>}:sessions:active` | zset | active sessions (member `<created_at:016>\|<id>`, score 0) |
//! | `ea:{a:<tag>}:sessions:revoked` | zset | revoked sessions (same members) |
//! | `ea:{a:<tag>}:sessions:expired` | zset | sessions whose lifetime or idle timeout ran out (same members; moved there when next read) |
//! | `ea:{a:<tag>}:sessions:all` | zset | every session (same members) |
//! | `ea:{a:<tag>}:s:<session_id>` | hash | session record (source of truth; `events_from`: the address's newest push event at the login, where its stream starts); gone 30 days after the session's end |
//! | `ea:{a:<tag>}:gw:<session_id>` | hash | gateway projection: user_id, client_public_key, status, created_at, expires_at, last_used_at, idle_timeout_ms, revoked_at / expired_at; expires with the record |
//! | `ea:{a:<tag>}:lifecycle` | stream | session_created / session_revoked / session_expired / user_blocked / user_unblocked (a command's use of a session rewrites its record and projection, and writes no entry) |
//! | `ea:{a:<tag>}:audit` | stream | who did what, when, why |
//! | `ea:{a:<tag>}:events` | stream | pushed events of the address's user (fields event_id, type, device ('' = every session), user_id, at, payload); bounded by `push_stream_max_len` and `push_stream_max_age_seconds`, expires that long after the last publish |
//! | `ea:{a:<tag>}:events:meta` | hash | dropped (newest id trimmed away), newest (newest id appended): how a resume learns of a gap; kept a year, a day and the max age after the last publish (longer than any session could resume) |
//! | `ea:{a:<tag>}:gw:<session_id>:streams` | zset | the session's open push streams: member the subscribe's request id, score when the stream ends by itself (store clock, ms); the stream removes its member when it ends, a member 15 s past its score no longer counts; expires with its last member |
//! | `ea:{a:<tag>}:gw:<session_id>:rp:<request_id>` | string | replay reservation of a signed command; expires 2 × freshness window + 5 s after it was made (a subscribe's: at least `push_max_duration_seconds` + 15 s, as long as its stream's claim can count) |
//! | `ea:{a:<tag>}:rl:cmd:s:<session_id>` | string | GCRA time of a session's command budget |
//! | `ea:{a:<tag>}:rl:cmd:user` | string | GCRA time of the address's user's command budget |
//! | `ea:{a:<tag>}:rl:cmd:t:<message_type>` | string | GCRA time of the address's user's budget for one message type |
//! | `ea:{ea:c<0-f>}:rl:command:client:<client>` | string | GCRA time of a client's command budget (a client budget like the login routes') |
//! | `ea:{x:<h>}:profile` | string | the example backend's profile of a user (`<h>` as for `tags`); not the gateway's data |
//! | `ea:{u:<h>}:tags` | set | address tags an external directory's user has logged in with (`<h>`: first 16 hex digits of SHA-256 of the user id, so any id makes a clean hash tag); written before a session is created under a tag; no expiry, and a tag the user no longer logs in with stays |
//! | `ea:{u:<h>}:blocking` | string, TTL 15 min | the user's block fence, its value a mark (Redis's clock in µs at the raise, greater than the mark it replaces): set (with a read of `:tags`) by a block of the user; read by an unblock before it changes the directory and cleared after if still that mark; a confirm that indexes an address while it stands is refused |
//!
//! The four `sessions:*` sets of an address expire no earlier than the last record of
//! their members could (a member's absolute expiry, or its revocation, plus the
//! retention): an address nobody logs in with again leaves no set behind. A set written
//! before sets expired keeps no expiry. While an address is in use, each login drops the
//! members whose records are gone among the four oldest of each set: behind four old
//! sessions still alive, members of sessions long over stay until those end (a member per
//! login, at most as many as the send budget allows).

use edge_auth_domain::ids::AddressTag;
use edge_auth_domain::login::settings::MAX_SESSION_LIFETIME_SECONDS;
use edge_auth_domain::rate_limit::Budget;

// The names scripts derive and the Lua that derives them: in their own file, because
// build.rs includes it too, to assemble the scripts (and their SHA1s) at build time.
include!("key_names.rs");

/// Client budgets are spread over this many slots (`{ea:c0}` … `{ea:cf}`) by the client's
/// budget key, so no single slot takes every write; each shard keeps its own copy of the
/// operator settings the budget check reads in the same script.
pub const CLIENT_SHARDS: u8 = 16;

fn client_shard(client: &str) -> u8 {
    use sha2::{Digest, Sha256};
    Sha256::digest(client.as_bytes())[0] % CLIENT_SHARDS
}

fn shard_prefix(shard: u8) -> String {
    format!("ea:{{ea:c{shard:x}}}:")
}

/// The copy of the operator-set session limit read with `client`'s budgets.
pub fn session_limit_for(client: &str) -> String {
    format!("{}config:session_limit", shard_prefix(client_shard(client)))
}

/// The counter set-session-limit calls take their version from (one Redis, one order).
pub const SESSION_LIMIT_CALLS: &str = "ea:{ea:c0}:config:session_limit_calls";

/// The version of each copy of the session limit, beside it in its shard slot.
pub fn session_limit_version_copies() -> Vec<String> {
    (0..CLIENT_SHARDS)
        .map(|shard| format!("{}config:session_limit_version", shard_prefix(shard)))
        .collect()
}

/// Every copy of the session limit (the internal API writes them all).
pub fn session_limit_copies() -> Vec<String> {
    (0..CLIENT_SHARDS)
        .map(|shard| format!("{}config:session_limit", shard_prefix(shard)))
        .collect()
}

/// The metrics hash of shard `shard` (`0..CLIENT_SHARDS`).
pub fn metrics_shard(shard: u8) -> String {
    format!("{}metrics", shard_prefix(shard))
}

/// The metrics hash in `client`'s shard (where increments ride in its budget scripts).
pub fn metrics_for(client: &str) -> String {
    metrics_shard(client_shard(client))
}

/// The live push streams of shard `shard` (`0..CLIENT_SHARDS`).
pub fn live_streams_shard(shard: u8) -> String {
    format!("{}push:live", shard_prefix(shard))
}

/// The shard of the live stream `member`: its live-stream set and that shard's metrics.
pub fn live_stream_keys(member: &str) -> [String; 2] {
    let shard = client_shard(member);
    [metrics_shard(shard), live_streams_shard(shard)]
}

/// How the log names the session-limit setting.
pub const SESSION_LIMIT_KEYS: &str = "ea:{ea:c0..f}:config:session_limit";

/// The bucket of a client budget (in the client's shard).
pub fn budget(budget: &Budget) -> String {
    format!(
        "{}rl:{}:client:{}",
        shard_prefix(client_shard(&budget.client)),
        budget.route,
        budget.client
    )
}

/// The first 16 hex digits of SHA-256 of a user id: a clean hash tag for any id.
fn user_hash(user_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(user_id.as_bytes());
    edge_auth_protocol::canonical::hex(&digest[..8])
}

/// The address tags of an external directory's user (ids of our own carry their tag).
pub fn user_index(user_id: &str) -> String {
    format!("ea:{{u:{}}}:tags", user_hash(user_id))
}

/// The block fence of an external directory's user: stands while a block of the user is
/// under way ([`USER_BLOCK_FENCE_MS`]), beside [`user_index`] in the user's slot.
pub fn user_block_fence(user_id: &str) -> String {
    format!("ea:{{u:{}}}:blocking", user_hash(user_id))
}

/// How long a block fence stands: far longer than a confirm can take from the directory's
/// answer to its last look at the fence (a directory call may take three times the user
/// service timeout, at most 60 s, with its body; a paused instance more). While the user
/// stays blocked the directory refuses their logins anyway, and an unblock lowers it
/// unless a block has raised it since the unblock read it.
pub const USER_BLOCK_FENCE_MS: u64 = 15 * 60 * 1000;

/// The example backend's profile of a user (the backend is a demo of a team's service;
/// its one key lives here so the layout has one owner).
pub fn example_profile(user_id: &str) -> String {
    format!("ea:{{x:{}}}:profile", user_hash(user_id))
}

/// How long session records and projections are kept after the session's end (or its
/// revocation). An address's session sets are kept by the retention their members had
/// when they were added (see `add_session` in `lib.lua`): were this ever raised, records
/// used after the upgrade could outlive their sets (never while their session lives), so
/// such a change must extend the sets as it moves a record.
pub const REVOKED_RETENTION_MS: u64 = 30 * 24 * 3600 * 1000;
/// Lifecycle stream: each record kept 30 days (each append trims the older ones), the
/// stream 30 days after its last record; about 10,000 records.
pub const LIFECYCLE_TTL_MS: u64 = 30 * 24 * 3600 * 1000;
pub const LIFECYCLE_MAXLEN: u64 = 10_000;
/// Event stream meta: kept this long plus the stream's max age after the last publish. A
/// session holds a position only while the events after it are still kept (at most max age
/// after they were published), and resumes within its life (a year at most): whenever a
/// resume could miss an event, the meta recording the loss is still there.
pub const EVENTS_META_TTL_MS: u64 = (MAX_SESSION_LIFETIME_SECONDS + 24 * 3600) * 1000;
/// Audit stream: each record kept 400 days (each append trims the older ones), the stream
/// 400 days after its last record; about 100,000 records.
pub const AUDIT_TTL_MS: u64 = 400 * 24 * 3600 * 1000;
pub const AUDIT_MAXLEN: u64 = 100_000;

/// Keys of one address.
#[derive(Debug, Clone)]
pub struct AddressKeys {
    prefix: String,
}

impl AddressKeys {
    /// The keys under `tag`.
    pub fn new(tag: AddressTag) -> Self {
        Self {
            prefix: format!("ea:{{a:{}}}:", tag.to_hex()),
        }
    }

    pub fn challenge(&self, id: &str) -> String {
        format!("{}{CHALLENGE}{id}", self.prefix)
    }
    pub fn latest(&self) -> String {
        format!("{}latest", self.prefix)
    }
    pub fn resend(&self) -> String {
        format!("{}resend", self.prefix)
    }
    pub fn blocked(&self) -> String {
        format!("{}blocked", self.prefix)
    }
    pub fn send_budget(&self) -> String {
        format!("{}rl:send", self.prefix)
    }
    pub fn variants_send_budget(&self) -> String {
        format!("{}rl:variants", self.prefix)
    }
    pub fn confirm_budget(&self) -> String {
        format!("{}rl:confirm", self.prefix)
    }
    pub fn failures(&self) -> String {
        format!("{}failures", self.prefix)
    }
    pub fn user(&self) -> String {
        format!("{}user", self.prefix)
    }
    /// The whole MAC of the address whose user [`AddressKeys::user`] holds (the built-in
    /// directory): a login at another address that shares the tag is refused.
    pub fn user_address(&self) -> String {
        format!("{}user:address", self.prefix)
    }
    pub fn active_sessions(&self) -> String {
        format!("{}sessions:active", self.prefix)
    }
    pub fn revoked_sessions(&self) -> String {
        format!("{}sessions:revoked", self.prefix)
    }
    pub fn expired_sessions(&self) -> String {
        format!("{}sessions:expired", self.prefix)
    }
    pub fn lifecycle(&self) -> String {
        format!("{}lifecycle", self.prefix)
    }
    pub fn audit(&self) -> String {
        format!("{}audit", self.prefix)
    }
    pub fn events(&self) -> String {
        format!("{}events", self.prefix)
    }
    pub fn events_meta(&self) -> String {
        format!("{}events:meta", self.prefix)
    }
    pub fn all_sessions(&self) -> String {
        format!("{}sessions:all", self.prefix)
    }
    pub fn session(&self, id: &str) -> String {
        format!("{}{SESSION_RECORD}{id}", self.prefix)
    }
    pub fn projection(&self, id: &str) -> String {
        format!("{}{SESSION_PROJECTION}{id}", self.prefix)
    }
    /// The replay reservation of `request_id` by session `id`.
    pub fn replay(&self, id: &str, request_id: &str) -> String {
        format!("{}{SESSION_PROJECTION}{id}:rp:{request_id}", self.prefix)
    }
    /// The open push streams of session `id`.
    pub fn streams(&self, id: &str) -> String {
        format!("{}{SESSION_PROJECTION}{id}:streams", self.prefix)
    }
    pub fn session_command_budget(&self, id: &str) -> String {
        format!("{}rl:cmd:s:{id}", self.prefix)
    }
    pub fn user_command_budget(&self) -> String {
        format!("{}rl:cmd:user", self.prefix)
    }
    pub fn message_type_budget(&self, message_type: &str) -> String {
        format!("{}rl:cmd:t:{message_type}", self.prefix)
    }
}
