//! The session use cases: parse, call the store, map the outcome.

use crate::crypto::ServerKey;
use crate::ids::{AddressTag, DeviceSessionId, UserId};
use crate::login::ports::UserDirectory;
use crate::push::ports::Position as RecordId;
use crate::sessions::input::{BlockTarget, ChangeReason, InvalidInput, UserRef};
use crate::sessions::model::{
    AuditRecord, DEFAULT_PAGE, MAX_PAGE, Page, SessionRecord, SessionStatus, StatusFilter,
};
use crate::sessions::ports::{BatchOutcome, BlockChange, RevokeBatch, RevokeOutcome, SessionStore};
use crate::time::Timestamp;

/// Sessions revoked per store call.
pub const REVOKE_BATCH: u32 = 500;

/// How far ahead of the node that began a revoke-all another Redis node's clock may run
/// (see [`revoke_all`]).
pub const CLOCK_SKEW_MS: u64 = 1_000;

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    InvalidRequest(#[from] InvalidInput),
    #[error("no such session")]
    SessionNotFound,
    #[error("no such user")]
    UserNotFound,
    /// An unblock that a block of the same user overtook: which of the two came last in
    /// the directory, and on the addresses, cannot be told, so the unblock says so (and
    /// leaves the flags, when it can tell before clearing them).
    /// (`unrecorded`: why the unblock's audit record of it could not be written; the
    /// answer stays this one, so that nobody repeats the unblock blindly.)
    #[error("a block of this user ran while this unblock did")]
    BlockedMeanwhile { unrecorded: Option<anyhow::Error> },
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

fn session_id(raw: &str) -> Result<DeviceSessionId, SessionError> {
    DeviceSessionId::parse(raw).map_err(|e| InvalidInput::SessionId(e).into())
}

/// Finds the address tags of a user: from the id itself for our own ids (one address),
/// else the index (a directory user may log in with several addresses). Sorted.
fn locate(store: &impl SessionStore, user: &UserRef) -> Result<Vec<AddressTag>, SessionError> {
    locate_with(user, |u| store.locate_user(u))
}

/// [`locate`] with the index read by `index` (for stores other than the session store).
///
/// # Errors
/// `UserNotFound` when the index knows no tag; the index's failure.
pub(crate) fn locate_with(
    user: &UserRef,
    index: impl FnOnce(&UserRef) -> anyhow::Result<Vec<AddressTag>>,
) -> Result<Vec<AddressTag>, SessionError> {
    if let Ok(own) = UserId::parse(user.as_str()) {
        return Ok(vec![own.tag()]);
    }
    let mut tags = index(user)?;
    tags.sort_by_key(|t| t.to_hex());
    tags.dedup();
    if tags.is_empty() {
        return Err(SessionError::UserNotFound);
    }
    Ok(tags)
}

/// Runs `op` on every address of a user; `UserNotFound` only if no address knows the
/// user.
fn on_every_tag<'a, I, T>(
    addresses: &'a [I],
    mut op: impl FnMut(&'a I) -> Result<T, SessionError>,
) -> Result<Vec<T>, SessionError> {
    let mut done = Vec::new();
    for address in addresses {
        match op(address) {
            Ok(value) => done.push(value),
            Err(SessionError::UserNotFound) => {}
            Err(e) => return Err(e),
        }
    }
    if done.is_empty() {
        return Err(SessionError::UserNotFound);
    }
    Ok(done)
}

/// Where a page across a user's addresses starts: an address and the store's cursor in
/// it. On the wire: `<tag hex>.<the store's cursor>` (empty after the dot: that address
/// from its start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position<'a> {
    tag: AddressTag,
    inner: Option<&'a str>,
}

/// Parses a cursor before any lookup (bad input never costs a store call).
fn position(raw: Option<&str>) -> Result<Option<Position<'_>>, InvalidInput> {
    let Some(c) = cursor(raw)? else {
        return Ok(None);
    };
    let malformed = || InvalidInput::Cursor;
    let (hex, inner) = c.split_once('.').ok_or_else(malformed)?;
    let tag = AddressTag::parse_hex(hex).ok_or_else(malformed)?;
    Ok(Some(Position {
        tag,
        inner: (!inner.is_empty()).then_some(inner),
    }))
}

/// One page of a listing that spans the user's addresses, one address per call (one
/// store call, one slot); a page may be short (even empty) where one address ends and
/// the next begins.
fn page_across<T>(
    tags: &[AddressTag],
    start: Option<Position<'_>>,
    fetch: impl FnOnce(AddressTag, Option<&str>) -> anyhow::Result<Option<Page<T>>>,
) -> Result<Page<T>, SessionError> {
    let (index, inner) = match start {
        None => (0, None),
        Some(p) => {
            let index = tags
                .iter()
                .position(|t| *t == p.tag)
                .ok_or(InvalidInput::Cursor)?;
            (index, p.inner)
        }
    };
    let tag = tags[index];
    let next_tag = || tags.get(index + 1).map(|t| format!("{}.", t.to_hex()));
    match fetch(tag, inner)? {
        Some(page) => Ok(Page {
            next_cursor: page
                .next_cursor
                .map(|c| format!("{}.{c}", tag.to_hex()))
                .or_else(next_tag),
            items: page.items,
        }),
        None if tags.len() == 1 => Err(SessionError::UserNotFound),
        None => Ok(Page {
            items: Vec::new(),
            next_cursor: next_tag(),
        }),
    }
}

/// Parses a page size (default 100, at most 500): decimal digits only (`u32`'s own parse
/// would also take a sign, `+5`).
///
/// # Errors
/// Not a number from 1 to 500.
pub fn page_size(raw: Option<&str>) -> Result<u32, InvalidInput> {
    match raw {
        None => Ok(DEFAULT_PAGE),
        Some(text) => Some(text)
            .filter(|t| t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse::<u32>().ok())
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or(InvalidInput::Limit),
    }
}

/// Checks a cursor's shape (the store defines its content).
fn cursor(raw: Option<&str>) -> Result<Option<&str>, InvalidInput> {
    match raw {
        None | Some("") => Ok(None),
        Some(c) if c.len() <= 200 && c.bytes().all(|b| b.is_ascii_graphic()) => Ok(Some(c)),
        Some(_) => Err(InvalidInput::Cursor),
    }
}

/// `GET /sessions/:id`.
///
/// # Errors
/// See [`SessionError`].
pub fn get_session(store: &impl SessionStore, raw_id: &str) -> Result<SessionRecord, SessionError> {
    store
        .get(&session_id(raw_id)?)?
        .ok_or(SessionError::SessionNotFound)
}

/// `GET /users/:user_id/sessions`.
///
/// # Errors
/// See [`SessionError`].
pub fn list_sessions(
    store: &impl SessionStore,
    raw_user: &str,
    status: Option<&str>,
    raw_cursor: Option<&str>,
    limit: Option<&str>,
) -> Result<Page<SessionRecord>, SessionError> {
    let user = UserRef::parse(raw_user)?;
    let filter = match status {
        None => StatusFilter::All,
        Some(s) => StatusFilter::parse(s).ok_or(InvalidInput::StatusFilter)?,
    };
    let limit = page_size(limit)?;
    let start = position(raw_cursor)?;
    // Inside an address, the listing's cursor is the last session looked at there, in the
    // listing's order (`SessionStore::list`). Anything else (an audit cursor, one cut
    // off) would sort somewhere among the sessions and page on from there.
    if start.is_some_and(|p| {
        p.inner
            .is_some_and(|inner| !session_member_at(inner, p.tag))
    }) {
        return Err(InvalidInput::Cursor.into());
    }
    let tags = locate(store, &user)?;
    page_across(&tags, start, |tag, inner| {
        Ok(known_at(
            &user,
            store.list(tag, &user, filter, inner, limit)?,
        ))
    })
}

/// `inner` is a session as a listing orders them at the address of `tag`:
/// `<created_at in ms, 16 digits>|<a session id of that address>`.
fn session_member_at(inner: &str, tag: AddressTag) -> bool {
    inner.split_once('|').is_some_and(|(created, id)| {
        created.len() == 16
            && created.bytes().all(|b| b.is_ascii_digit())
            && DeviceSessionId::parse(id).is_ok_and(|id| id.tag() == tag)
    })
}

/// A store's page of `user` at one of its addresses, where `None` means the address is
/// not the user's. The index names only addresses the user has logged in with: for a
/// directory user such an address has at most passed to another user since, and is an
/// empty page, whatever is listed. Our own ids name their address, which is theirs or
/// nobody's.
fn known_at<T>(user: &UserRef, page: Option<Page<T>>) -> Option<Page<T>> {
    let indexed = UserId::parse(user.as_str()).is_err();
    page.or_else(|| {
        indexed.then(|| Page {
            items: Vec::new(),
            next_cursor: None,
        })
    })
}

/// Up to `max` active sessions of a user, across its addresses (a device's own listing):
/// the user is located once, then pages are followed for at most `max_calls` store calls
/// (one round trip each); a user with sessions beyond that is listed in part.
///
/// # Errors
/// See [`SessionError`].
pub fn active_sessions(
    store: &impl SessionStore,
    raw_user: &str,
    max: usize,
    max_calls: usize,
) -> Result<Vec<SessionRecord>, SessionError> {
    let user = UserRef::parse(raw_user)?;
    let tags = locate(store, &user)?;
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..max_calls {
        let room = max.saturating_sub(items.len());
        if room == 0 {
            break;
        }
        let limit = u32::try_from(room).unwrap_or(MAX_PAGE).min(MAX_PAGE);
        let start = position(cursor.as_deref())?;
        let page = page_across(&tags, start, |tag, inner| {
            Ok(known_at(
                &user,
                store.list(tag, &user, StatusFilter::Active, inner, limit)?,
            ))
        })?;
        items.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    items.truncate(max);
    Ok(items)
}

/// `POST /sessions/:id/revoke`: `(record, already_revoked)`. A session whose life is
/// over is not revoked: its record says `expired`, and `already_revoked` is false.
///
/// # Errors
/// See [`SessionError`].
pub fn revoke_session(
    store: &impl SessionStore,
    raw_id: &str,
    reason: &ChangeReason,
) -> Result<(SessionRecord, bool), SessionError> {
    match store.revoke(&session_id(raw_id)?, reason)? {
        RevokeOutcome::NotFound => Err(SessionError::SessionNotFound),
        RevokeOutcome::Revoked(record) => Ok((record, false)),
        RevokeOutcome::Ended(record) => {
            let already_revoked = record.status == SessionStatus::Revoked;
            Ok((record, already_revoked))
        }
    }
}

/// Revokes every session of the address `tag` created up to `bound`, in bounded batches.
/// `None` until the first batch takes the store's "now"; the store moves the bound of an
/// address's first batch on to its newest session, if that is dated later (see
/// [`RevokeBatch::created_up_to`]). The bound then stands for the address's later batches
/// (a login there after the call began is a new login, and stays).
fn revoke_everything(
    store: &impl SessionStore,
    tag: AddressTag,
    user: Option<&UserRef>,
    reason: &ChangeReason,
    action: &'static str,
    bound: &mut Option<Timestamp>,
) -> Result<u64, SessionError> {
    let mut total = 0;
    let mut seen_so_far = 0;
    let mut after: Option<String> = None;
    loop {
        let outcome = store.revoke_batch(&RevokeBatch {
            tag,
            user,
            reason,
            created_up_to: *bound,
            batch_size: REVOKE_BATCH,
            revoked_so_far: total,
            action,
            after: after.as_deref(),
            seen_so_far,
        })?;
        match outcome {
            BatchOutcome::UserNotFound => return Err(SessionError::UserNotFound),
            BatchOutcome::Revoked {
                count,
                more,
                bound: used,
                next,
                seen,
            } => {
                total += count;
                seen_so_far += seen;
                *bound = Some(used);
                if !more {
                    return Ok(total);
                }
                after = Some(next);
            }
        }
    }
}

/// `POST /users/:user_id/sessions/revoke-all`: the number revoked.
///
/// # Errors
/// See [`SessionError`].
pub fn revoke_all(
    store: &impl SessionStore,
    raw_user: &str,
    reason: &ChangeReason,
) -> Result<u64, SessionError> {
    let user = UserRef::parse(raw_user)?;
    let tags = locate(store, &user)?;
    // The call begins at its first batch's "now": a login at another of the user's
    // addresses after that is a new login too. On a Redis Cluster that address may sit on
    // another node, whose clock may run a little ahead: there the bound is moved on by
    // CLOCK_SKEW_MS, so that no session from before the call is spared (one made within
    // that time after it may be revoked: the safe side for a call made in an incident).
    let mut began: Option<Timestamp> = None;
    let counts = on_every_tag(&tags, |&tag| {
        let mut bound = began.map(|t| Timestamp(t.0 + CLOCK_SKEW_MS));
        let revoked = revoke_everything(store, tag, Some(&user), reason, "revoke_all", &mut bound);
        if began.is_none() {
            began = bound;
        }
        revoked
    })?;
    Ok(counts.into_iter().sum())
}

/// An address a block applies to, and the user it must still belong to (`None`: whoever
/// it belongs to).
#[derive(Debug)]
struct BlockSite {
    tag: AddressTag,
    user: Option<UserRef>,
    /// See [`BlockChange::suspends`].
    suspends: Option<UserRef>,
}

/// The user an external directory blocks for `target`: the user named, or the one it has
/// for the address (`None`: no directory, or an address it has nobody for).
///
/// # Errors
/// The directory's failure.
fn directory_user(
    directory: Option<&dyn UserDirectory>,
    target: &BlockTarget,
) -> Result<Option<String>, SessionError> {
    let Some(directory) = directory else {
        return Ok(None);
    };
    Ok(match target {
        BlockTarget::User(user) => Some(user.as_str().to_string()),
        BlockTarget::Email(email) => directory.resolve(email)?.map(|u| u.user_id),
    })
}

/// The addresses a block applies to: every one of a user; for an e-mail address, that
/// address, and, when an external directory has a user for it, every other address of
/// that user (the directory blocks the whole user, so its sessions elsewhere must stop
/// too).
fn block_sites(
    store: &impl SessionStore,
    key: &ServerKey,
    target: &BlockTarget,
    directory_user: Option<&str>,
) -> Result<Vec<BlockSite>, SessionError> {
    let sites_of = |user: &UserRef, skip: Option<AddressTag>| -> Result<_, SessionError> {
        Ok(locate(store, user)?
            .into_iter()
            .filter(|&tag| Some(tag) != skip)
            .map(|tag| BlockSite {
                tag,
                user: Some(user.clone()),
                suspends: None,
            })
            .collect::<Vec<_>>())
    };
    match target {
        // A user no address here knows is not found, even if an external directory knows
        // them: nothing here could record the block (audit), and the directory is asked
        // only about ids it gave (the index holds them) or our own.
        BlockTarget::User(user) => sites_of(user, None),
        BlockTarget::Email(email) => {
            let own = key.address_tag(email);
            // An id that is no valid user reference has no sessions here: confirm refuses
            // such ids before it indexes the user.
            let directory_user = directory_user.and_then(|u| UserRef::parse(u).ok());
            // The address is flagged whoever it names here; the block is the directory's
            // user's when it has one.
            let mut sites = vec![BlockSite {
                tag: own,
                user: None,
                suspends: directory_user.clone(),
            }];
            if let Some(user) = &directory_user {
                match sites_of(user, Some(own)) {
                    Ok(more) => sites.extend(more),
                    // The user never logged in with another address.
                    Err(SessionError::UserNotFound) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(sites)
        }
    }
}

/// Sets or clears the block flag of one address: `false` if the address is not the
/// site's user's (then nothing changed).
fn set_block(
    store: &impl SessionStore,
    site: &BlockSite,
    blocked: bool,
    reason: &ChangeReason,
    directory_changed: bool,
) -> anyhow::Result<bool> {
    store.set_blocked(&block_change(site, blocked, reason, directory_changed))
}

/// The change of `site` a block (`blocked`) or an unblock makes.
fn block_change<'a>(
    site: &'a BlockSite,
    blocked: bool,
    reason: &'a ChangeReason,
    directory_changed: bool,
) -> BlockChange<'a> {
    BlockChange {
        tag: site.tag,
        user: site.user.as_ref(),
        suspends: site.suspends.as_ref(),
        blocked,
        reason,
        directory_changed,
        record_only: false,
    }
}

/// Puts an unblock that a block overtook on record at every address, the flags left as
/// the block set them: the call may have changed the directory, and the audit shows every
/// call an operator made.
fn record_overtaken_unblock(
    store: &impl SessionStore,
    sites: &[BlockSite],
    reason: &ChangeReason,
    directory_changed: bool,
) -> anyhow::Result<()> {
    for site in sites {
        store.set_blocked(&BlockChange {
            record_only: true,
            ..block_change(site, false, reason, directory_changed)
        })?;
    }
    Ok(())
}

/// Clears the block on every address; `UserNotFound` if none matched the user.
fn unblock_everywhere(
    store: &impl SessionStore,
    sites: &[BlockSite],
    reason: &ChangeReason,
    directory_changed: bool,
) -> Result<(), SessionError> {
    on_every_tag(sites, |site| {
        if set_block(store, site, false, reason, directory_changed)? {
            Ok(())
        } else {
            Err(SessionError::UserNotFound)
        }
    })?;
    Ok(())
}

/// Mirrors a block into the external user directory, when there is one and it has a user
/// for the target: `true` if the directory changed its user, `false` if there was none to
/// change (no directory, an address it has nobody for, or a user id it does not know).
///
/// A user id the directory does not know (deleted there, say) may still hold addresses
/// and sessions here, which the change must reach all the same: the caller goes on here
/// alone and answers `UserNotFound` only if it finds nothing here either. (The adapter
/// notes such an answer in the request's log line: a user service whose block route is
/// misconfigured answers every id so.)
///
/// # Errors
/// `UserNotFound` when the target is an address whose user the directory has just named
/// and then does not know (a contradiction: a deletion racing the call, or a misconfigured
/// service), before anything changes; the directory's failure.
fn mirror_block(
    directory: Option<&dyn UserDirectory>,
    user_id: Option<&str>,
    target: &BlockTarget,
    blocked: bool,
) -> Result<bool, SessionError> {
    let (Some(directory), Some(id)) = (directory, user_id) else {
        return Ok(false);
    };
    match (directory.set_blocked(id, blocked)?, target) {
        (true, _) => Ok(true),
        (false, BlockTarget::User(_)) => Ok(false),
        (false, BlockTarget::Email(_)) => Err(SessionError::UserNotFound),
    }
}

/// `sites` and every address the directory user's index holds (`tags`), each once.
fn with_index(mut sites: Vec<BlockSite>, user: &UserRef, tags: Vec<AddressTag>) -> Vec<BlockSite> {
    for tag in tags {
        if !sites.iter().any(|site| site.tag == tag) {
            sites.push(BlockSite {
                tag,
                user: Some(user.clone()),
                suspends: None,
            });
        }
    }
    sites
}

/// The directory's user as the key of their index and block fence; `None` without a
/// directory, or for an id that is no valid user reference (confirm refuses such ids
/// before it indexes the user, so nothing is indexed or fenced under it).
fn fence_owner(directory_user: Option<&str>) -> Option<UserRef> {
    directory_user.map(UserRef::parse).and_then(Result::ok)
}

/// `POST /users/block`: blocks (in Redis, and in the external directory if there is one),
/// then (if asked) revokes every session. Returns the number revoked.
///
/// # Errors
/// See [`SessionError`].
pub fn block(
    store: &impl SessionStore,
    directory: Option<&dyn UserDirectory>,
    key: &ServerKey,
    target: &BlockTarget,
    reason: &ChangeReason,
    revoke_sessions: bool,
) -> Result<u64, SessionError> {
    let user_id = directory_user(directory, target)?;
    let sites = block_sites(store, key, target, user_id.as_deref())?;
    // The directory first: a user it knows is blocked there, so the call has found its
    // user even when none of the user's addresses here is still theirs (then nothing is
    // left to do here). A user id it does not know is blocked here alone.
    let mirrored = mirror_block(directory, user_id.as_deref(), target, true)?;
    // A first login of the user at a new address may have asked the directory before the
    // change above: the fence makes it either refused or indexed in time to be read here.
    let sites = match fence_owner(user_id.as_deref()) {
        Some(user) => {
            let tags = store.raise_fence(&user)?;
            with_index(sites, &user, tags)
        }
        None => sites,
    };
    // Block before revoking: from here on no confirm can create a session.
    let flagged = sites
        .iter()
        .map(|site| set_block(store, site, true, reason, mirrored))
        .collect::<anyhow::Result<Vec<bool>>>()?;
    let mut found = mirrored || flagged.iter().any(|&f| f);
    let mut total = 0;
    for (site, flagged) in sites.iter().zip(flagged) {
        // An address of the user's that has passed to another user keeps its flag clear
        // (the flag would block that user); the blocked user's sessions there can only be
        // stopped by revoking them, asked or not.
        if flagged && !revoke_sessions {
            continue;
        }
        match revoke_everything(
            store,
            site.tag,
            // The sessions the block suspends there.
            site.user.as_ref().or(site.suspends.as_ref()),
            reason,
            "block_revoke",
            // Each address its own bound, taken after its block is in place: no session
            // can begin there later, and the bound of another address (another Redis
            // node's clock, on a cluster) could fall before one that began earlier.
            &mut None,
        ) {
            Ok(n) => {
                total += n;
                found = true;
            }
            Err(SessionError::UserNotFound) => {}
            Err(e) => return Err(e),
        }
    }
    if !found {
        return Err(SessionError::UserNotFound);
    }
    Ok(total)
}

/// `POST /users/unblock` (in Redis, and in the external directory if there is one): the
/// same addresses as [`block`].
///
/// # Errors
/// See [`SessionError`].
pub fn unblock(
    store: &impl SessionStore,
    directory: Option<&dyn UserDirectory>,
    key: &ServerKey,
    target: &BlockTarget,
    reason: &ChangeReason,
) -> Result<(), SessionError> {
    let user_id = directory_user(directory, target)?;
    let sites = block_sites(store, key, target, user_id.as_deref())?;
    // The fence is read before the directory changes and lowered after, only if no
    // block has raised it since: a block whose directory change lands after this
    // unblock's (so the user ends up blocked) raises its fence after this read, and it
    // stands. Lowered unread after the directory, a block racing in between could lose
    // its fence to this call while a first login its directory change came too late for
    // creates a session at an address the block never read.
    let owner = fence_owner(user_id.as_deref());
    let (sites, standing) = match &owner {
        Some(user) => {
            let fence = store.read_fence(user)?;
            (with_index(sites, user, fence.tags), fence.standing)
        }
        None => (sites, None),
    };
    // The directory next (a user id it does not know is unblocked here alone).
    let mirrored = mirror_block(directory, user_id.as_deref(), target, false)?;
    // A block raises its fence before it flags the addresses. A fence raised since the
    // read is a block that may have changed the directory after this unblock did: its
    // flags stand (clearing them would give a user the directory blocks working
    // sessions again).
    if let Some(user) = &owner
        && !store.lower_fence(user, standing)?
    {
        let unrecorded = record_overtaken_unblock(store, &sites, reason, mirrored).err();
        return Err(SessionError::BlockedMeanwhile { unrecorded });
    }
    let done = match unblock_everywhere(store, &sites, reason, mirrored) {
        // The directory's user, none of whose addresses here is still theirs.
        Err(SessionError::UserNotFound) if mirrored => Ok(()),
        // A failure is answered as such, whatever raced it.
        Err(SessionError::Unexpected(cause)) => return Err(SessionError::Unexpected(cause)),
        done => done,
    };
    // A fence raised after the lowering is a block that may have flagged the addresses
    // before the clearing: say so, so that the caller repeats the call that should win.
    if let Some(user) = &owner
        && store.read_fence(user)?.standing.is_some()
    {
        return Err(SessionError::BlockedMeanwhile { unrecorded: None });
    }
    done
}

/// `GET /audit?user_id=…`: newest first.
///
/// # Errors
/// See [`SessionError`].
pub fn audit(
    store: &impl SessionStore,
    raw_user: Option<&str>,
    raw_cursor: Option<&str>,
    limit: Option<&str>,
) -> Result<Page<AuditRecord>, SessionError> {
    let user = UserRef::parse(raw_user.ok_or(InvalidInput::MissingUserId)?)?;
    let limit = page_size(limit)?;
    let start = position(raw_cursor)?;
    // Inside an address, the audit's cursor is the id of the last record read (never
    // `0-0`, which no record has): anything else would make the store's range fail.
    let record_id = |inner: &str| RecordId::parse(inner).is_ok_and(|p| p != RecordId::START);
    if start
        .and_then(|p| p.inner)
        .is_some_and(|inner| !record_id(inner))
    {
        return Err(InvalidInput::Cursor.into());
    }
    let tags = locate(store, &user)?;
    page_across(&tags, start, |tag, inner| {
        Ok(known_at(&user, store.audit(tag, &user, inner, limit)?))
    })
}

/// `POST /config/session-limit`: the most active sessions a user may have (`None`: no
/// limit). Confirms read it at once.
///
/// # Errors
/// See [`SessionError`].
pub fn set_session_limit(
    store: &impl SessionStore,
    limit: Option<u32>,
) -> Result<(), SessionError> {
    store.set_session_limit(limit)?;
    Ok(())
}
