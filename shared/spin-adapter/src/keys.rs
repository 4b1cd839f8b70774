//! Redis key names. Everything of one e-mail address shares the hash tag `{a:<tag>}`, so
//! one script can touch all of it on Redis Cluster; edge budgets and global settings
//! share `{ea:g}`.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `ea:{ea:g}:config:session_limit` | string | max active sessions per user (absent: no limit) |
//! | `ea:{ea:g}:rl:<route>:client:<ip>` | string | GCRA time of a client address budget |
//! | `ea:{ea:g}:rl:<route>:address:<tag>` | string | GCRA time of an e-mail address budget (send) |
//! | `ea:{a:<tag>}:ch:<challenge_id>` | hash | challenge (state, code MAC, times, attempts) |
//! | `ea:{a:<tag>}:latest` | string | the address's newest challenge id |
//! | `ea:{a:<tag>}:resend` | string | resend-throttle marker (expires) |
//! | `ea:{a:<tag>}:blocked` | string | present when the address is blocked |
//! | `ea:{a:<tag>}:rl:confirm` | string | GCRA time of the address's confirm budget (spent only for existing challenges) |
//! | `ea:{a:<tag>}:failures` | string | consecutive wrong codes of the address; expires `failed_confirm_lockout_seconds` after the last one |
//! | `ea:{a:<tag>}:user` | string | the address's user id |
//! | `ea:{a:<tag>}:sessions:active` | zset | active sessions (member `<created_at:016>\|<id>`, score 0) |
//! | `ea:{a:<tag>}:sessions:revoked` | zset | revoked sessions (same members) |
//! | `ea:{a:<tag>}:sessions:all` | zset | every session (same members) |
//! | `ea:{a:<tag>}:s:<session_id>` | hash | session record (source of truth); revoked ones expire |
//! | `ea:{a:<tag>}:gw:<session_id>` | hash | gateway projection: user_id, client_public_key, status, created_at, revoked_at |
//! | `ea:{a:<tag>}:lifecycle` | stream | session_created / session_revoked / user_blocked / user_unblocked |
//! | `ea:{a:<tag>}:audit` | stream | who did what, when, why |
//! | `ea:{ea:g}:user:<user_id>` | string | address tag of an external directory's user |

use edge_auth_domain::ids::AddressTag;
use edge_auth_domain::rate_limit::{Budget, BudgetSubject};

/// The global slot's key prefix.
pub const GLOBAL: &str = "ea:{ea:g}:";

/// The operator-set session limit.
pub fn session_limit() -> String {
    format!("{GLOBAL}config:session_limit")
}

/// The bucket of one budget.
pub fn budget(budget: &Budget) -> String {
    match &budget.subject {
        BudgetSubject::Client(ip) => format!("{GLOBAL}rl:{}:client:{ip}", budget.route),
        BudgetSubject::Address(tag) => {
            format!("{GLOBAL}rl:{}:address:{}", budget.route, tag.to_hex())
        }
    }
}

/// Where an external directory's user lives (ids of our own carry their tag).
pub fn user_index(user_id: &str) -> String {
    format!("{GLOBAL}user:{user_id}")
}

/// The sorted-set member of a session: creation order, then id.
pub fn session_member(created_at_ms: u64, session_id: &str) -> String {
    format!("{created_at_ms:016}|{session_id}")
}

/// How long revoked session records and projections are kept.
pub const REVOKED_RETENTION_MS: u64 = 30 * 24 * 3600 * 1000;
/// Lifecycle stream: kept 30 days after its last record, about 10,000 records.
pub const LIFECYCLE_TTL_MS: u64 = 30 * 24 * 3600 * 1000;
pub const LIFECYCLE_MAXLEN: u64 = 10_000;
/// Audit stream: kept 400 days after its last record, about 100,000 records.
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

    /// The common prefix (scripts derive per-session keys from it).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn challenge(&self, id: &str) -> String {
        format!("{}ch:{id}", self.prefix)
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
    pub fn confirm_budget(&self) -> String {
        format!("{}rl:confirm", self.prefix)
    }
    pub fn failures(&self) -> String {
        format!("{}failures", self.prefix)
    }
    pub fn user(&self) -> String {
        format!("{}user", self.prefix)
    }
    pub fn active_sessions(&self) -> String {
        format!("{}sessions:active", self.prefix)
    }
    pub fn revoked_sessions(&self) -> String {
        format!("{}sessions:revoked", self.prefix)
    }
    pub fn lifecycle(&self) -> String {
        format!("{}lifecycle", self.prefix)
    }
    pub fn audit(&self) -> String {
        format!("{}audit", self.prefix)
    }
    pub fn all_sessions(&self) -> String {
        format!("{}sessions:all", self.prefix)
    }
    pub fn session(&self, id: &str) -> String {
        format!("{}s:{id}", self.prefix)
    }
    pub fn projection(&self, id: &str) -> String {
        format!("{}gw:{id}", self.prefix)
    }
}
