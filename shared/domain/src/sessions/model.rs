//! Session records and what listing returns.

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

/// The source-of-truth record of one device session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub device_session_id: String,
    pub user_id: String,
    pub client_public_key: String,
    pub status: SessionStatus,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub revoke_reason_code: Option<String>,
    pub revoke_actor: Option<String>,
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

/// One audit (or lifecycle) record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Stream id: also the cursor of the next page.
    pub id: String,
    pub fields: Vec<(String, String)>,
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
