//! Ports of the login use cases. The Redis adapter implements [`LoginStore`] with one
//! atomic script per method (so each method is one round trip).

use crate::challenge::ChallengeState;
use crate::code::VerificationCode;
use crate::crypto::{AddressMac, CodeMac};
use crate::email::EmailAddress;
use crate::ids::{AddressTag, ChallengeId, DeviceSessionId, UserId};
use crate::public_key::ClientPublicKey;
use crate::rate_limit::Budget;
use crate::time::Timestamp;

/// Spend edge budgets and read the settings a call needs.
#[derive(Debug, Clone)]
pub struct GuardRequest {
    /// Spent when every budget allows the call.
    pub budgets: Vec<Budget>,
    /// Must have room for one call, but are not spent (the call spends them later, if at
    /// all: a wrong code spends [`ConfirmAttempt::wrong_code_budget`]).
    pub held: Vec<Budget>,
    /// Also return the raw session-limit setting.
    pub read_session_limit: bool,
}

/// What [`LoginStore::guard`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardOutcome {
    /// All budgets allowed the call and were spent; the raw session limit, if asked for
    /// and set.
    Allowed { session_limit: Option<String> },
    /// At least one budget is exhausted; nothing was spent.
    Limited { retry_after_ms: u64 },
}

/// A challenge to store.
#[derive(Debug, Clone)]
pub struct NewChallenge {
    pub id: ChallengeId,
    /// The address in clear, kept only where the confirm needs it (`user_directory=rest`:
    /// the confirm hands it to the user service). Nothing else in Redis holds an address
    /// in clear.
    pub email: Option<EmailAddress>,
    /// The address's whole MAC (its tag is the MAC's start): a confirm with the built-in
    /// directory checks it against the one stored beside the address's user, so that an
    /// address sharing another's tag never logs in as that address's user.
    pub address_mac: AddressMac,
    pub code_mac: CodeMac,
    /// How long the code can be confirmed, from the store's clock.
    pub lifetime_ms: u64,
    /// The address's send budget, spent by the store in the address's own slot.
    pub address_budget: crate::rate_limit::Rate,
    pub max_attempts: u32,
    pub resend_interval_ms: u64,
    /// How long the record is kept: lifetime plus the idempotency window.
    pub keep_ms: u64,
}

/// What [`LoginStore::create_challenge`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// Stored as `pending` (deliver it) or `suppressed` (blocked address: never deliver),
    /// confirmable until `expires_at` (the store's clock decides).
    Created {
        state: ChallengeState,
        expires_at: Timestamp,
    },
    /// The address is within its resend interval and its newest challenge can still be
    /// confirmed (pending, sent or suppressed, not expired): nothing was stored, and
    /// `latest` is that challenge.
    Throttled { latest: ChallengeId },
    /// The address's send budget is spent: nothing was stored.
    RateLimited { retry_after_ms: u64 },
}

/// How to make room when a user is at the session limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitPolicy {
    Reject,
    EvictOldest,
}

/// A confirm to apply atomically.
#[derive(Debug, Clone)]
pub struct ConfirmAttempt {
    pub challenge_id: ChallengeId,
    pub code_mac: CodeMac,
    /// The same code under the previous code key, while a rotation keeps one: the code
    /// also matches a challenge made before the switch.
    pub previous_code_mac: Option<CodeMac>,
    pub client_public_key: ClientPublicKey,
    /// Used only if a session is created.
    pub new_session_id: DeviceSessionId,
    /// Who the session is for.
    pub user: UserChoice,
    pub session_limit: Option<u32>,
    pub limit_policy: LimitPolicy,
    pub client_addr: String,
    pub user_agent: String,
    pub idempotency_ms: u64,
    /// The address's confirm budget, spent only when a code is compared: for a live
    /// challenge, or one already confirmed (so neither forged challenge ids under a
    /// victim's tag nor dead ones can use it up).
    pub address_budget: crate::rate_limit::Rate,
    /// Consecutive wrong codes per address before confirms are refused.
    pub failure_cap: u32,
    /// How long the wrong-code count is kept after the last wrong code (ms).
    pub failure_lockout_ms: u64,
    /// The client's wrong-code budget, across addresses: a wrong code the store counts
    /// also spends it (see [`LoginStore::confirm`]).
    pub wrong_code_budget: Budget,
    /// A new session's absolute lifetime and idle timeout (ms).
    pub session_lifetime_ms: u64,
    pub session_idle_timeout_ms: u64,
}

/// How the confirm finds the user of the address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChoice {
    /// Redis user directory: the store's own address → user mapping, with this id for
    /// an address that has no user yet.
    Local { new_user_id: UserId },
    /// External directory, not asked yet: the store answers
    /// [`ConfirmOutcome::NeedUser`] once everything else checks out.
    ExternalUnresolved,
    /// External directory, resolved (and not blocked).
    External { user_id: String },
}

/// The result of a confirm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmOutcome {
    /// A new session, or the same session for an exact repeat of an earlier confirm
    /// (same code, same key, within the idempotency window: `repeat`), and its user's id
    /// (the directory's, with an external one).
    Confirmed {
        session_id: DeviceSessionId,
        user_id: String,
        repeat: bool,
    },
    NotFound,
    /// The address's confirm budget is spent; nothing was changed.
    RateLimited {
        retry_after_ms: u64,
    },
    /// The address reached its cap of consecutive wrong codes; nothing was changed.
    Locked {
        retry_after_ms: u64,
    },
    Expired,
    /// A newer challenge exists for the address.
    Superseded,
    /// Already confirmed, and this is not an exact repeat (`wrong_code`: the code was
    /// wrong, and counted against the address's cap).
    Consumed {
        wrong_code: bool,
    },
    /// An exact repeat of an earlier confirm whose session has been revoked since.
    SessionRevoked,
    /// An exact repeat of an earlier confirm whose session has reached its lifetime or
    /// idle timeout since (the store records that end, as every read of a session does).
    SessionExpired,
    InvalidCode {
        remaining_attempts: u32,
    },
    /// The challenge is dead of wrong codes (`wrong_code`: this call's was the last one,
    /// counted; otherwise it was dead already and no code was compared).
    TooManyAttempts {
        wrong_code: bool,
    },
    Blocked,
    SessionLimitExceeded,
    /// The code is right and nothing else stands in the way (a session limit of 0
    /// included: any other limit counts the user's sessions, so it waits for the user);
    /// resolve the user of this address in the external directory and confirm again.
    /// Only the address's confirm budget was spent (the confirm that follows spends
    /// nothing more), so a login the directory refuses still counts against it.
    NeedUser {
        email: EmailAddress,
    },
}

/// The login state store.
///
/// # Time
/// The store's clock decides every time it records or compares (challenge expiry,
/// idempotency windows, budgets, session creation), so that instances with skewed clocks
/// agree: callers pass durations, never "now".
pub trait LoginStore {
    /// Checks `budgets` and `held` in one step, spends `budgets` only, and only when
    /// every one of both has room; reads settings. Every budget is in the client's shard.
    ///
    /// # Errors
    /// The store is unreachable or answered something unexpected.
    fn guard(&self, request: &GuardRequest) -> anyhow::Result<GuardOutcome>;

    /// Records that the external directory's `user_id` logs in with the address `tag`
    /// (idempotent; the index only grows). Called before a session is created there.
    /// `Ok(false)`: indexed, but a block of the user is under way
    /// ([`SessionStore::raise_fence`](crate::sessions::ports::SessionStore::raise_fence)), so
    /// the directory's answer may predate it: no session may be created.
    ///
    /// # Errors
    /// The store is unreachable.
    fn index_user(&self, user_id: &str, tag: AddressTag) -> anyhow::Result<bool>;

    /// Revokes a session confirm has just created, whose user a block reached meanwhile
    /// (reason `user_blocked`, actor `system`; audited and on the lifecycle stream like any
    /// revocation). Idempotent.
    ///
    /// # Errors
    /// The store is unreachable.
    fn withdraw(&self, session: &DeviceSessionId) -> anyhow::Result<()>;

    /// Spends one call of the send budget that the variants of the inbox at the address
    /// `tag` share ([`EmailAddress::mailbox`]), kept at that address apart from its own
    /// budget (which [`create_challenge`](Self::create_challenge) spends), so that
    /// variants neither flood the inbox nor spend the budget of the inbox's own address.
    /// `Some(wait in ms)` when the budget is spent: then nothing changed.
    ///
    /// # Errors
    /// As [`LoginStore::guard`].
    fn spend_send_budget(
        &self,
        tag: AddressTag,
        budget: crate::rate_limit::Rate,
    ) -> anyhow::Result<Option<u64>>;

    /// Stores a challenge unless the address is within its resend interval with a newest
    /// challenge that can still be confirmed; makes it the address's newest challenge.
    /// A newest challenge that is confirmed, exhausted, expired or `delivery_failed`
    /// holds nothing back.
    ///
    /// # Errors
    /// As [`LoginStore::guard`]; nothing was stored.
    fn create_challenge(&self, challenge: &NewChallenge) -> anyhow::Result<CreateOutcome>;

    /// Records the delivery outcome of a `pending` challenge (no-op in any other state)
    /// where a later step must see it: a challenge whose mail failed holds no resend
    /// back. A store may keep a mailed challenge as it was, since a `pending` one is
    /// already open to confirms and holds resends back.
    ///
    /// # Errors
    /// As [`LoginStore::guard`].
    fn record_delivery(&self, id: &ChallengeId, state: ChallengeState) -> anyhow::Result<()>;

    /// Applies a confirm: checks, counts a wrong code, creates the session and its
    /// gateway projection, all at once. A wrong code it counts then also spends
    /// `attempt.wrong_code_budget`, whether or not it has room (a second step, in the
    /// client's shard): one that fails is logged and the outcome stands, since the wrong
    /// code is counted everywhere else and the guard saw room (at most one guess goes
    /// unspent).
    ///
    /// # Errors
    /// As [`LoginStore::guard`]; then nothing changed.
    fn confirm(&self, attempt: &ConfirmAttempt) -> anyhow::Result<ConfirmOutcome>;
}

/// A user as the external user directory knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub user_id: String,
    pub blocked: bool,
}

/// An external user directory (the team's user service).
pub trait UserDirectory {
    /// Looks a user up by normalised address.
    ///
    /// # Errors
    /// The directory is unreachable or answered something unexpected (after retries).
    fn resolve(&self, email: &EmailAddress) -> anyhow::Result<Option<DirectoryUser>>;

    /// Creates the user of an address (the directory makes this idempotent per address).
    /// `Ok(None)`: the directory refuses a user for this address (its sign-ups are closed,
    /// or the address was not invited), and the login is refused.
    ///
    /// # Errors
    /// As [`UserDirectory::resolve`].
    fn create(&self, email: &EmailAddress) -> anyhow::Result<Option<DirectoryUser>>;

    /// Blocks or unblocks a user in the directory (idempotent). `Ok(false)`: no such user.
    ///
    /// # Errors
    /// As [`UserDirectory::resolve`].
    fn set_blocked(&self, user_id: &str, blocked: bool) -> anyhow::Result<bool>;
}

/// One code to deliver.
#[derive(Debug, Clone)]
pub struct MailMessage {
    pub to: EmailAddress,
    pub code: VerificationCode,
    pub challenge_id: ChallengeId,
    pub expires_at: Timestamp,
    pub locale: String,
}

/// Delivers verification codes.
pub trait MailSender {
    /// Hands one message to the mail system.
    ///
    /// # Errors
    /// Refused, failed or timed out: the challenge becomes `delivery_failed`. The error
    /// must not contain the code.
    fn send(&self, message: &MailMessage) -> anyhow::Result<()>;
}
