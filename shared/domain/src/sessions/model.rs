//! Session records and what listing returns.

use crate::ids::DeviceSessionId;
use crate::public_key::StoredPublicKey;
use crate::sessions::input::{Actor, ReasonCode, UserRef};
use crate::time::Timestamp;

/// Whether a session may still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    Active,
    Revoked,
    /// Its absolute lifetime or idle timeout ran out.
    Expired,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "active" => Some(Self::Active),
            "revoked" => Some(Self::Revoked),
            "expired" => Some(Self::Expired),
            _ => None,
        }
    }
}

/// Why a session expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireReason {
    AbsoluteLifetime,
    IdleTimeout,
}

impl ExpireReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AbsoluteLifetime => "absolute_lifetime",
            Self::IdleTimeout => "idle_timeout",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "absolute_lifetime" => Some(Self::AbsoluteLifetime),
            "idle_timeout" => Some(Self::IdleTimeout),
            _ => None,
        }
    }
}

/// How long a session lives: at most `expires_at`, and no longer than `idle_timeout`
/// after its last use (creation, or an accepted signed command or subscribe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub expires_at: Timestamp,
    pub last_used_at: Timestamp,
    pub idle_timeout_ms: u64,
}

impl Lifetime {
    /// When the session ends if it stays unused.
    pub fn idle_deadline(&self) -> Timestamp {
        Timestamp(self.last_used_at.0.saturating_add(self.idle_timeout_ms))
    }

    /// When the session ends and why: the earlier of its absolute expiry and its idle
    /// deadline. The store applies the same rule (`session_end` in the scripts' lib).
    pub fn end(&self) -> (Timestamp, ExpireReason) {
        let idle_end = self.idle_deadline();
        if self.expires_at <= idle_end {
            (self.expires_at, ExpireReason::AbsoluteLifetime)
        } else {
            (idle_end, ExpireReason::IdleTimeout)
        }
    }
}

/// When, why and by whom a session was revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub at: Timestamp,
    pub reason_code: ReasonCode,
    pub actor: Actor,
}

/// The source-of-truth record of one device session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub device_session_id: DeviceSessionId,
    pub user_id: UserRef,
    pub client_public_key: StoredPublicKey,
    pub status: SessionStatus,
    pub created_at: Timestamp,
    /// Set once it is revoked (the first revoke's metadata is kept).
    pub revocation: Option<Revocation>,
    /// The client's IP address at confirm, as recorded.
    pub client_addr: String,
    pub user_agent: String,
    /// `None` for a record made before sessions expired.
    pub lifetime: Option<Lifetime>,
    /// When and why it expired, once it has.
    pub expired: Option<(Timestamp, ExpireReason)>,
}

/// Which sessions a listing returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Active,
    Revoked,
    Expired,
    All,
}

impl StatusFilter {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "active" => Some(Self::Active),
            "revoked" => Some(Self::Revoked),
            "expired" => Some(Self::Expired),
            "all" => Some(Self::All),
            _ => None,
        }
    }
}

/// One page of a listing, oldest first; `next_cursor` is `None` on the last page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// What an audit record says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    SessionCreated,
    RevokeSession,
    RevokeAll,
    BlockRevoke,
    UserBlocked,
    UserUnblocked,
    /// An unblock that a block of the same user overtook: the flags stand as the block
    /// set them, though the unblock may have changed the directory.
    UnblockOvertaken,
    SessionExpired,
}

impl AuditAction {
    pub const ALL: [Self; 8] = [
        Self::SessionCreated,
        Self::RevokeSession,
        Self::RevokeAll,
        Self::BlockRevoke,
        Self::UserBlocked,
        Self::UserUnblocked,
        Self::UnblockOvertaken,
        Self::SessionExpired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionCreated => "session_created",
            Self::RevokeSession => "revoke_session",
            Self::RevokeAll => "revoke_all",
            Self::BlockRevoke => "block_revoke",
            Self::UserBlocked => "user_blocked",
            Self::UserUnblocked => "user_unblocked",
            Self::UnblockOvertaken => "unblock_overtaken",
            Self::SessionExpired => "session_expired",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == raw)
    }
}

/// One audit record: who did what, to which session or user, when and why. Fields an
/// action does not have are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// The stream id.
    pub id: String,
    pub action: AuditAction,
    pub at: Timestamp,
    pub device_session_id: Option<DeviceSessionId>,
    pub user_id: Option<UserRef>,
    pub reason_code: Option<ReasonCode>,
    pub actor: Option<Actor>,
    /// Sessions a revoke-all or a block revoked.
    pub revoked_count: Option<u64>,
}

/// The most a page may hold, and the default.
pub const MAX_PAGE: u32 = 500;
pub const DEFAULT_PAGE: u32 = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_at_the_earlier_of_its_lifetime_and_its_idle_deadline() {
        let life = Lifetime {
            expires_at: Timestamp(10_000),
            last_used_at: Timestamp(1_000),
            idle_timeout_ms: 5_000,
        };
        assert_eq!(life.end(), (Timestamp(6_000), ExpireReason::IdleTimeout));
        let used_late = Lifetime {
            last_used_at: Timestamp(8_000),
            ..life
        };
        assert_eq!(
            used_late.end(),
            (Timestamp(10_000), ExpireReason::AbsoluteLifetime)
        );
    }
}
