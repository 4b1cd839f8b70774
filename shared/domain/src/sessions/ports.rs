//! The session store port. The Redis adapter implements each method as one Lua script
//! (one round trip, atomic); `revoke_batch` is bounded so callers loop.

use crate::ids::{AddressTag, DeviceSessionId};
use crate::sessions::input::{ChangeReason, UserRef};
use crate::sessions::model::{AuditRecord, Page, SessionRecord, StatusFilter};
use crate::time::Timestamp;

/// What revoking one session did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeOutcome {
    NotFound,
    /// Revoked now; the record after the change.
    Revoked(SessionRecord),
    /// Had already ended, and nothing was revoked: revoked before (the record keeps the
    /// first revoke's metadata) or expired (its life was over, perhaps found only now).
    Ended(SessionRecord),
}

/// Which raise of a user's block fence stands: each raise gets a greater mark than the
/// fence it replaces (the store's clock in microseconds), so an unblock can lower the
/// fence it read and leave one a later block raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FenceMark(pub u64);

/// A user's block fence as read, with the user's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFence {
    /// The address tags the user's index held.
    pub tags: Vec<AddressTag>,
    /// The fence standing (`None`: none).
    pub standing: Option<FenceMark>,
}

/// One bounded step of revoking every active session of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeBatch<'a> {
    pub tag: AddressTag,
    /// Whose sessions: only this user's (the address may have passed to another user in
    /// an external directory, and both users' sessions live in its sets); `None` for a
    /// block by address: the address's user's (the user its block suspends), or every
    /// session of the address when it has no user.
    pub user: Option<&'a UserRef>,
    pub reason: &'a ChangeReason,
    /// Sessions created at or before this time are revoked; later ones are new logins.
    /// `None` for the call's first batch: the store's "now". On an address's first batch
    /// (`after` is `None`) the store moves the bound on to the newest session there if
    /// that is dated later (made by a node whose clock ran ahead), and returns it as the
    /// bound for the batches that follow (a revoke-all passes its first address's bound,
    /// moved on by a clock-skew allowance, to the user's other addresses).
    pub created_up_to: Option<Timestamp>,
    pub batch_size: u32,
    /// Revoked by earlier batches of the same operation (for the audit record).
    pub revoked_so_far: u64,
    /// The audit action, e.g. `revoke_all` or `block`.
    pub action: &'static str,
    /// Where the previous batch stopped (its `next`); `None` for the first batch.
    pub after: Option<&'a str>,
    /// The user's active sessions earlier batches looked at (their `seen`): with none at
    /// all on an address that is not the user's, the last batch answers `UserNotFound`.
    pub seen_so_far: u64,
}

/// What one batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// The address is not the user's and holds no active session of the user (answered
    /// by the last batch; earlier ones changed nothing of the user's).
    UserNotFound,
    Revoked {
        count: u64,
        more: bool,
        /// The creation bound this batch used (pass it to the next one).
        bound: Timestamp,
        /// The store's cursor: where the next batch starts.
        next: String,
        /// The user's active sessions this batch looked at (revoked, or ended as expired);
        /// every session it looked at when no user was named.
        seen: u64,
    },
}

/// Block or unblock an address (and so its user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockChange<'a> {
    pub tag: AddressTag,
    pub user: Option<&'a UserRef>,
    /// Whose sessions a block suspends there: the external directory's user of an
    /// address blocked by address, which may not have logged in with it here yet (the
    /// address then still names its previous user, who is not blocked); `None`: the
    /// address's user as edge-auth knows it (every session when it has none).
    pub suspends: Option<&'a UserRef>,
    pub blocked: bool,
    pub reason: &'a ChangeReason,
    /// The external directory has made the change to `user`: an address that is no longer
    /// the user's is left as it is, but the change goes on its audit stream under the
    /// user (the user's audit reads it there), so that a block made in the directory
    /// alone is on record.
    pub directory_changed: bool,
    /// Only the audit record, the flag left as it is: an unblock that changed the
    /// directory and then found a block had overtaken it, whose flags stand.
    pub record_only: bool,
}

/// The session store.
///
/// # Time
/// The store's clock stamps every change (revoked_at, audit times, the bound of a
/// revoke-all), so that instances with skewed clocks agree.
pub trait SessionStore {
    /// One session record.
    ///
    /// # Errors
    /// The store is unreachable or holds something unreadable.
    fn get(&self, id: &DeviceSessionId) -> anyhow::Result<Option<SessionRecord>>;

    /// Every address tag an external directory's user has logged in with (empty: no such
    /// user). The index only grows, and is written before a session is created under a
    /// tag, so no session of the user is ever outside it.
    ///
    /// # Errors
    /// As [`SessionStore::get`].
    fn locate_user(&self, user: &UserRef) -> anyhow::Result<Vec<AddressTag>>;

    /// Raises the block fence of an external directory's user (a new [`FenceMark`]) and,
    /// in the same atomic step, reads the addresses the index holds. While the fence
    /// stands (a few minutes), a confirm that indexes an address for the user is refused
    /// ([`LoginStore::index_user`](crate::login::ports::LoginStore::index_user)): so a
    /// block sees every address a racing first login could create a session at.
    ///
    /// # Errors
    /// As [`SessionStore::get`].
    fn raise_fence(&self, user: &UserRef) -> anyhow::Result<Vec<AddressTag>>;

    /// Reads the user's block fence and the addresses the index holds, in one step.
    ///
    /// # Errors
    /// As [`SessionStore::get`].
    fn read_fence(&self, user: &UserRef) -> anyhow::Result<UserFence>;

    /// Lowers the user's block fence if it is still the one read (`read`; `None`: none
    /// stood). Returns `false`, and leaves the fence, when one raised since stands (a
    /// block that came after the read); `true` when none stands now, or the one read did
    /// and is lowered.
    ///
    /// # Errors
    /// As [`SessionStore::get`].
    fn lower_fence(&self, user: &UserRef, read: Option<FenceMark>) -> anyhow::Result<bool>;

    /// A page of a user's sessions at `tag`, oldest first (`None`: no such user at
    /// `tag`). Only the user's own records: with an external directory an address can
    /// pass to another user, and the sessions of its previous user live on in its sets.
    /// `cursor` and the page's `next_cursor` name the last session a page looked at, in
    /// the listing's order: `<its created_at in ms, 16 digits>|<its id>` (the caller
    /// checks a cursor's form before it comes here).
    ///
    /// # Errors
    /// As [`SessionStore::get`].
    fn list(
        &self,
        tag: AddressTag,
        user: &UserRef,
        filter: StatusFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> anyhow::Result<Option<Page<SessionRecord>>>;

    /// Revokes one session (idempotent).
    ///
    /// # Errors
    /// As [`SessionStore::get`]; then nothing changed.
    fn revoke(&self, id: &DeviceSessionId, reason: &ChangeReason) -> anyhow::Result<RevokeOutcome>;

    /// Looks at up to `batch_size` active sessions after `after` and revokes those of
    /// `user` (every one without a user); one whose life is already over is ended as
    /// expired instead, and not counted. Each batch that revokes writes an audit record of
    /// its own count; the last batch of a call that revoked nothing writes one with 0
    /// (none on an address that is not the user's).
    ///
    /// # Errors
    /// As [`SessionStore::get`]; earlier batches stay done.
    fn revoke_batch(&self, batch: &RevokeBatch<'_>) -> anyhow::Result<BatchOutcome>;

    /// Sets or clears the block of an address (`false`: the user does not match; then
    /// only an audit record is written, and only when `directory_changed`).
    ///
    /// # Errors
    /// As [`SessionStore::get`].
    fn set_blocked(&self, change: &BlockChange<'_>) -> anyhow::Result<bool>;

    /// Sets (or, with `None`, clears) the operator's session limit everywhere confirms
    /// read it.
    ///
    /// # Errors
    /// As [`SessionStore::get`]; a failure may leave some copies changed: repeat the call.
    fn set_session_limit(&self, limit: Option<u32>) -> anyhow::Result<()>;

    /// A page of audit records, newest first (`None`: no such user at `tag`).
    ///
    /// # Errors
    /// As [`SessionStore::get`].
    fn audit(
        &self,
        tag: AddressTag,
        user: &UserRef,
        cursor: Option<&str>,
        limit: u32,
    ) -> anyhow::Result<Option<Page<AuditRecord>>>;
}
