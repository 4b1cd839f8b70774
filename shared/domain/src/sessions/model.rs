//! Session records and what listing returns.

use crate::time::Timestamp;

/// Whether a session may still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    Active,
    Revoked,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "active" => Some(Self::Active),
            "revoked" => Some(Self::Revoked),
            _ => None,
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
}

/// Which sessions a listing returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Active,
    Revoked,
    All,
}

impl StatusFilter {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "active" => Some(Self::Active),
            "revoked" => Some(Self::Revoked),
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
