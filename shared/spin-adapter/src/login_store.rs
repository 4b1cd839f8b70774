//! [`LoginStore`] on Redis: one Lua script per operation, so each is one round trip and
//! atomic (see `scripts/`).

use anyhow::{Context, bail};
use edge_auth_domain::challenge::ChallengeState;
use edge_auth_domain::crypto::CodeMac;
use edge_auth_domain::email::EmailAddress;
use edge_auth_domain::ids::{AddressTag, ChallengeId, DeviceSessionId};
use edge_auth_domain::login::ports::{
    ConfirmAttempt, ConfirmOutcome, CreateOutcome, GuardOutcome, GuardRequest, LimitPolicy,
    LoginStore, NewChallenge, UserChoice,
};
use edge_auth_domain::rate_limit::{Budget as DomainBudget, Rate};
use edge_auth_domain::sessions::input::ChangeReason;
use edge_auth_domain::time::Timestamp;

use crate::keys::{self, AddressKeys};
use crate::metrics::{self, Budget, Counter, Directory, Resolution, Ride, When};
use crate::redis::{Arg, Reply, SpinRedis, scripts};
use crate::request_log;
use crate::session_store;

/// The login store on a Spin Redis connection.
#[derive(Debug)]
pub struct RedisLoginStore {
    redis: SpinRedis,
}

impl RedisLoginStore {
    /// Wraps an open connection.
    pub fn new(redis: SpinRedis) -> Self {
        Self { redis }
    }

    /// Spends one call of `budget` whether or not it has room (`spend.lua`): a call that
    /// happened already, a wrong code.
    fn spend(&self, budget: &DomainBudget) -> anyhow::Result<()> {
        let mut reply = Reply::new(
            "spend",
            self.redis.run(
                &scripts::SPEND,
                &[keys::budget(budget)],
                &[budget.rate.interval_ms().into()],
            )?,
        );
        reply.int()?;
        Ok(())
    }
}

impl LoginStore for RedisLoginStore {
    fn guard(&self, request: &GuardRequest) -> anyhow::Result<GuardOutcome> {
        let (client, route) = request
            .budgets
            .first()
            .map_or(("", ""), |b| (b.client.as_str(), b.route));
        // One script, so one slot: the client's shard.
        if let Some(other) = request
            .budgets
            .iter()
            .chain(&request.held)
            .find(|b| b.client != client)
        {
            bail!(
                "guard: budgets of two clients ({client:?}, {:?}) in one call",
                other.client
            );
        }
        let mut keys_ = vec![keys::session_limit_for(client), keys::metrics_for(client)];
        let budgets = request.budgets.len() + request.held.len();
        let mut args: Vec<Arg> = vec![
            (if request.read_session_limit { "1" } else { "0" }).into(),
            u32::try_from(budgets)?.into(),
            u32::try_from(request.budgets.len())?.into(),
        ];
        for budget in request.budgets.iter().chain(&request.held) {
            keys_.push(keys::budget(budget));
            args.push(budget.rate.interval_ms().into());
            args.push(budget.rate.tolerance_ms().into());
        }
        let mut ride = Ride::default().on(
            When::Limited,
            &Counter::RateLimited {
                route,
                budget: Budget::Client,
            },
        );
        // The one held budget is confirm's: the client's wrong codes.
        if !request.held.is_empty() {
            ride = ride.on(
                When::Held,
                &Counter::RateLimited {
                    route,
                    budget: Budget::ClientWrongCodes,
                },
            );
        }
        if route == "confirm" {
            ride = ride
                .on(When::Always, &Counter::ConfirmAttempt)
                .on(When::Limited, &Counter::ConfirmResult("rate_limited"))
                .on(When::Held, &Counter::ConfirmResult("rate_limited"));
        }
        args.extend(ride.into_args());
        let mut reply = Reply::new("guard", self.redis.run(&scripts::GUARD, &keys_, &args)?);
        let allowed = reply.int()?;
        let retry_after_ms = u64::try_from(reply.int()?)?;
        let session_limit = reply.text()?;
        Ok(if allowed == 1 {
            GuardOutcome::Allowed { session_limit }
        } else {
            GuardOutcome::Limited { retry_after_ms }
        })
    }

    fn spend_send_budget(&self, tag: AddressTag, budget: Rate) -> anyhow::Result<Option<u64>> {
        let mut reply = Reply::new(
            "send_budget",
            self.redis.run(
                &scripts::SEND_BUDGET,
                &[AddressKeys::new(tag).variants_send_budget()],
                &[budget.interval_ms().into(), budget.tolerance_ms().into()],
            )?,
        );
        let wait = u64::try_from(reply.int()?)?;
        if wait == 0 {
            return Ok(None);
        }
        metrics::count(&Counter::RateLimited {
            route: "send",
            budget: Budget::Address,
        });
        Ok(Some(wait))
    }

    fn create_challenge(&self, c: &NewChallenge) -> anyhow::Result<CreateOutcome> {
        let k = AddressKeys::new(c.id.tag());
        let keys_ = [
            k.challenge(c.id.as_str()),
            k.latest(),
            k.resend(),
            k.blocked(),
            k.send_budget(),
        ];
        let args: [Arg; 10] = [
            c.id.as_str().into(),
            c.code_mac.to_hex().into(),
            // Empty: none kept (see `NewChallenge::email`).
            c.email.as_ref().map_or("", EmailAddress::as_str).into(),
            c.lifetime_ms.into(),
            c.max_attempts.into(),
            c.resend_interval_ms.into(),
            c.keep_ms.into(),
            c.address_budget.interval_ms().into(),
            c.address_budget.tolerance_ms().into(),
            c.address_mac.to_hex().into(),
        ];
        let mut reply = Reply::new("send", self.redis.run(&scripts::SEND, &keys_, &args)?);
        match reply.required()?.as_str() {
            "created" => {
                let state = reply.required()?;
                let Some(state) = ChallengeState::parse(&state) else {
                    bail!("`send` reply: unknown state {state:?}");
                };
                let expires_at = Timestamp(u64::try_from(reply.int()?)?);
                metrics::count(&Counter::ChallengeCreated);
                if state == ChallengeState::Suppressed {
                    metrics::count(&Counter::Delivery(state));
                }
                Ok(CreateOutcome::Created { state, expires_at })
            }
            "rate_limited" => {
                metrics::count(&Counter::RateLimited {
                    route: "send",
                    budget: Budget::Address,
                });
                Ok(CreateOutcome::RateLimited {
                    retry_after_ms: u64::try_from(reply.int()?)?,
                })
            }
            "throttled" => {
                metrics::count(&Counter::RateLimited {
                    route: "send",
                    budget: Budget::Resend,
                });
                let latest = reply
                    .text()?
                    .context("`send` reply: throttled without the newest challenge")?;
                Ok(CreateOutcome::Throttled {
                    latest: ChallengeId::parse(&latest)
                        .context("`send` reply: the newest challenge's id")?,
                })
            }
            other => bail!("`send` reply: unexpected {other:?}"),
        }
    }

    fn record_delivery(&self, id: &ChallengeId, state: ChallengeState) -> anyhow::Result<()> {
        // What happened to the mail, counted whether or not its record can be written.
        metrics::count(&Counter::Delivery(state));
        // Only a failed mail changes what a later step does (`send.lua` lets the next send
        // make a new challenge). A mailed challenge stays `pending`, which every script
        // reads as `sent`: writing `sent` would cost a round trip and change nothing.
        if state != ChallengeState::DeliveryFailed {
            return Ok(());
        }
        let k = AddressKeys::new(id.tag());
        self.redis.run(
            &scripts::RECORD_DELIVERY,
            &[k.challenge(id.as_str())],
            &[state.as_str().into()],
        )?;
        Ok(())
    }

    fn index_user(&self, user_id: &str, tag: AddressTag) -> anyhow::Result<bool> {
        let mut reply = Reply::new(
            "index_user",
            self.redis.run(
                &scripts::INDEX_USER,
                &[keys::user_index(user_id), keys::user_block_fence(user_id)],
                &[tag.to_hex().into()],
            )?,
        );
        Ok(reply.int()? == 1)
    }

    fn withdraw(&self, session: &DeviceSessionId) -> anyhow::Result<()> {
        let reason = ChangeReason::by_gateway("user_blocked", "system")
            .context("the withdrawal's reason")?;
        session_store::run_revoke(&self.redis, session, &reason)?;
        // The confirm that made the session counted it as its result (`created`, or
        // `repeat` for a retry that raced it); the login is refused instead (the confirm
        // route counts that). The session itself stays counted, as created and revoked.
        metrics::uncount_confirmed();
        Ok(())
    }

    fn confirm(&self, a: &ConfirmAttempt) -> anyhow::Result<ConfirmOutcome> {
        let k = AddressKeys::new(a.challenge_id.tag());
        let session = a.new_session_id.as_str();
        let keys_ = [
            k.challenge(a.challenge_id.as_str()),
            k.latest(),
            k.blocked(),
            k.user(),
            k.active_sessions(),
            k.all_sessions(),
            k.session(session),
            k.projection(session),
            k.confirm_budget(),
            k.failures(),
            k.revoked_sessions(),
            k.lifecycle(),
            k.audit(),
            k.expired_sessions(),
            k.events(),
            k.events_meta(),
            k.user_address(),
        ];
        let policy = match a.limit_policy {
            LimitPolicy::Reject => "reject",
            LimitPolicy::EvictOldest => "evict_oldest",
        };
        let (user_id, user_mode) = match &a.user {
            UserChoice::Local { new_user_id } => (new_user_id.as_str(), "local"),
            UserChoice::External { user_id } => (user_id.as_str(), "external"),
            UserChoice::ExternalUnresolved => ("", "external_unresolved"),
        };
        let args: [Arg; 23] = [
            a.challenge_id.as_str().into(),
            a.code_mac.to_hex().into(),
            a.client_public_key.as_str().into(),
            session.into(),
            user_id.into(),
            a.session_limit
                .map(|n| n.to_string())
                .unwrap_or_default()
                .into(),
            policy.into(),
            a.client_addr.as_str().into(),
            a.user_agent.as_str().into(),
            a.idempotency_ms.into(),
            user_mode.into(),
            keys::REVOKED_RETENTION_MS.into(),
            keys::LIFECYCLE_TTL_MS.into(),
            keys::LIFECYCLE_MAXLEN.into(),
            keys::AUDIT_TTL_MS.into(),
            keys::AUDIT_MAXLEN.into(),
            a.address_budget.interval_ms().into(),
            a.address_budget.tolerance_ms().into(),
            a.failure_cap.into(),
            a.failure_lockout_ms.into(),
            a.session_lifetime_ms.into(),
            a.session_idle_timeout_ms.into(),
            a.previous_code_mac
                .as_ref()
                .map(CodeMac::to_hex)
                .unwrap_or_default()
                .into(),
        ];
        let mut reply = Reply::new("confirm", self.redis.run(&scripts::CONFIRM, &keys_, &args)?);
        let outcome = match reply.required()?.as_str() {
            "ok" => {
                let id = reply.required()?;
                let kind = reply.required()?;
                let user_id = reply.required()?;
                request_log::note_user_id(&user_id);
                if kind == "created" {
                    metrics::count(&Counter::ConfirmResult("created"));
                    metrics::count(&Counter::SessionCreated);
                    metrics::count_n(
                        &Counter::SessionsRevoked {
                            reason: "session_limit_evicted",
                        },
                        u64::try_from(reply.int()?)?,
                    );
                    if matches!(a.user, UserChoice::Local { .. }) {
                        let resolution = if reply.int()? == 1 {
                            Resolution::Created
                        } else {
                            Resolution::Existing
                        };
                        metrics::count(&Counter::UserResolution(Directory::Redis, resolution));
                    }
                } else {
                    metrics::count(&Counter::ConfirmResult("repeat"));
                }
                return Ok(ConfirmOutcome::Confirmed {
                    session_id: DeviceSessionId::parse(&id)?,
                    user_id,
                    repeat: kind != "created",
                });
            }
            "need_user" => {
                return Ok(ConfirmOutcome::NeedUser {
                    email: EmailAddress::parse(&reply.required()?)?,
                });
            }
            "not_found" => ConfirmOutcome::NotFound,
            "rate_limited" => {
                metrics::count(&Counter::RateLimited {
                    route: "confirm",
                    budget: Budget::Address,
                });
                ConfirmOutcome::RateLimited {
                    retry_after_ms: u64::try_from(reply.int()?)?,
                }
            }
            "locked" => {
                metrics::count(&Counter::RateLimited {
                    route: "confirm",
                    budget: Budget::WrongCodes,
                });
                ConfirmOutcome::Locked {
                    retry_after_ms: u64::try_from(reply.int()?)?,
                }
            }
            "expired" => ConfirmOutcome::Expired,
            "superseded" => ConfirmOutcome::Superseded,
            "consumed" => ConfirmOutcome::Consumed {
                wrong_code: reply.int()? == 1,
            },
            "session_revoked" => ConfirmOutcome::SessionRevoked,
            "session_expired" => ConfirmOutcome::SessionExpired,
            "invalid_code" => ConfirmOutcome::InvalidCode {
                remaining_attempts: u32::try_from(reply.int()?)?,
            },
            "too_many_attempts" => ConfirmOutcome::TooManyAttempts {
                wrong_code: reply.int()? == 1,
            },
            "blocked" => ConfirmOutcome::Blocked,
            "session_limit" => {
                metrics::count(&Counter::SessionLimitRejected);
                ConfirmOutcome::SessionLimitExceeded
            }
            // Never expected: an alarm, not an answer (the client gets a 503).
            "address_collision" => bail!(
                "`confirm`: the address shares its tag with the address of the user stored \
                 under it (their whole MACs differ), so this login is refused; the two \
                 addresses cannot both log in with user_directory=redis"
            ),
            other => bail!("`confirm` reply: unexpected {other:?}"),
        };
        if matches!(
            outcome,
            ConfirmOutcome::InvalidCode { .. }
                | ConfirmOutcome::TooManyAttempts { wrong_code: true }
                | ConfirmOutcome::Consumed { wrong_code: true }
        ) {
            // A wrong code, counted against the address: the client's budget counts it
            // too. The guard saw room, so a spend that fails costs one guess at most: the
            // outcome stands (a 503 now would hide the attempt it counted).
            if let Err(e) = self.spend(&a.wrong_code_budget) {
                request_log::error(&format!(
                    "confirm: the client's wrong-code budget was not spent: {e:#}"
                ));
            }
        }
        metrics::count(&Counter::ConfirmResult(result_code(&outcome)));
        Ok(outcome)
    }
}

/// The `result` label of a confirm: the error code the client gets, finer for a challenge
/// that can no longer be confirmed (expired, superseded or consumed).
fn result_code(outcome: &ConfirmOutcome) -> &'static str {
    match outcome {
        ConfirmOutcome::Confirmed { .. } => "created",
        ConfirmOutcome::NeedUser { .. } => "need_user",
        ConfirmOutcome::NotFound => "challenge_not_found",
        ConfirmOutcome::RateLimited { .. } => "rate_limited",
        ConfirmOutcome::Locked { .. } => "login_locked",
        ConfirmOutcome::Expired => "challenge_expired",
        ConfirmOutcome::Superseded => "challenge_superseded",
        ConfirmOutcome::Consumed { .. } => "challenge_consumed",
        ConfirmOutcome::SessionRevoked => "session_revoked",
        ConfirmOutcome::SessionExpired => "session_expired",
        ConfirmOutcome::InvalidCode { .. } => "invalid_code",
        ConfirmOutcome::TooManyAttempts { .. } => "too_many_attempts",
        ConfirmOutcome::Blocked => "blocked_by_policy",
        ConfirmOutcome::SessionLimitExceeded => "session_limit_exceeded",
    }
}
