//! `POST /api/v1/gateway/subscribe-events`: a signed command of type `gateway.subscribe`
//! (payload `{"last_event_id"}` or empty; a `Last-Event-ID` header must name the same) →
//! `200 text/event-stream`, the device session's push stream (see `edge_auth_domain::push`).
//!
//! Every check of a command applies before the stream opens, with the same errors: plain
//! ones before the session is proven, signed refusals after; and a session holds at most
//! `push_max_streams_per_session` open streams (`429 too_many_streams`, signed).

// `#[http_component]` expands to the unsafe component-model export glue.
#![allow(unsafe_code)]

use edge_auth_domain::gateway::command::{VerifiedCommand, parse, verify};
use edge_auth_domain::gateway::execute::{Admission, CommandError, SUBSCRIBE, admit, refuse};
use edge_auth_domain::gateway::settings::GatewayKey;
use edge_auth_domain::push::ports::{EndReason, Position, PushStore};
use edge_auth_domain::push::resume::resume_point;
use edge_auth_domain::push::stream::{self, StreamEnd, Subscription};
use edge_auth_domain::random::OsRandom;
use edge_auth_spin::clock::Since;
use edge_auth_spin::command_gate::{RedisCommandGate, count_command};
use edge_auth_spin::gateway::{gateway_settings, plain_error};
use edge_auth_spin::http::{Answer, Route, log_cause, serve};
use edge_auth_spin::public_errors;
use edge_auth_spin::push_store::{RedisPushStore, push_settings};
use edge_auth_spin::redis::SpinRedis;
use edge_auth_spin::sse::{Live, SseWriter};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

/// A subscribe command carries at most a resume position.
const ROUTE: Route = Route::public(true).max_body(4 * 1024);

/// What a stream keeps of its admitted subscribe: its [`Subscription`] before answering
/// (the first read) and after (the stream).
struct Subscribed {
    command: VerifiedCommand,
    user_id: String,
    resume: Option<Position>,
    key: GatewayKey,
}

impl Subscribed {
    fn subscription(&self) -> Subscription<'_> {
        Subscription {
            session: &self.command.session,
            user_id: &self.user_id,
            request_id: &self.command.request_id,
            request_sha256: &self.command.request_sha256,
            resume: self.resume,
            key: &self.key,
        }
    }
}

#[http_component]
async fn handle_subscribe_events(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, ROUTE, |call| {
        let fail = |e: CommandError| plain_error("subscribe-events", &e);
        let command = parse(call.body()).map_err(fail)?;
        let settings = gateway_settings().map_err(|e| fail(e.into()))?;
        let Some(key) = settings.signing.clone() else {
            return Err(fail(CommandError::NotConfigured("gateway_signing_key")));
        };
        // As `prepare` does for a command, without its backend check: this route never
        // calls the backend.
        let command = verify(&command, settings.max_payload).map_err(fail)?;
        if command.message_type.as_str() != SUBSCRIBE {
            return Err(fail(CommandError::InvalidRequest(format!(
                "this route opens a push stream: message_type must be {SUBSCRIBE}"
            ))));
        }
        let resume = resume_point(&command.payload, call.header("last-event-id")).map_err(fail)?;
        let push = push_settings().map_err(|e| fail(e.into()))?;
        call.note("device_session_id", command.session.as_str());
        call.note("message_type", command.message_type.as_str());
        call.note("command_request_id", command.request_id.as_str());
        let client = settings
            .clients
            .budget_key(&settings.clients.resolve(&call.caller.client));
        // Once it reaches Redis, a failure is counted, as confirm counts its 503s.
        let unavailable = |e: anyhow::Error| {
            count_command(SUBSCRIBE, true, "service_unavailable");
            call.note("result_code", "service_unavailable");
            fail(e.into())
        };
        let redis = SpinRedis::connect().map_err(|e| fail(e.into()))?;
        let gate = RedisCommandGate::new(&redis);
        let claim = push.claim();
        let admission = match admit(&gate, &settings, &client, &command, Some(claim)) {
            Ok(admission) => admission,
            Err(CommandError::Unexpected(cause)) => {
                // Every 503 counts as `service_unavailable`, even when the step whose
                // answer was lost may have counted a refusal (README, `commands_total`).
                //
                // The session step may have run and claimed the stream's place, its answer
                // lost (a REST timeout, a connection reset): give the place back (releasing
                // a place not held changes nothing). A copy of a live stream's subscribe
                // that fails so would free that stream's place early: a place too many
                // for at most that stream's life, which a lost answer otherwise costs. A
                // request that reaches Redis only after this release still leaks its
                // place until it lapses.
                let released =
                    RedisPushStore::new(redis).release(&command.session, &command.request_id);
                if let Err(e) = released {
                    log_cause("subscribe-events: releasing the stream's place", &e);
                }
                return Err(unavailable(cause));
            }
            Err(other) => return Err(fail(other)),
        };
        let user_id = match admission {
            Admission::Refused { now_ms, refusal } => {
                // The gate counted its refusal.
                let refused = refuse(&key, &command, now_ms, refusal.clone());
                call.note("result_code", refusal.code());
                let (status, retry_after) = public_errors::refusal(&refusal);
                let answer = Answer::json(status, &refused.response)?.error_code(refusal.code());
                return Ok(match retry_after {
                    Some(seconds) => answer.header("retry-after", seconds.to_string()),
                    None => answer,
                });
            }
            Admission::Admitted { user_id, .. } => user_id,
        };
        // The stream's clock starts with its place (claimed by the admission).
        let since = Since::now();
        // The stream waits in `XREAD BLOCK`, which only RESP can do (the gate may have
        // run on REST): with RESP as the transport this is the same connection.
        let store = match SpinRedis::connect_resp() {
            Ok(resp) => RedisPushStore::new(resp),
            Err(e) => {
                // The gate claimed the stream's place: give it back over the gate's
                // connection, as a stream would at its end.
                let claim =
                    RedisPushStore::new(redis).release(&command.session, &command.request_id);
                if let Err(cause) = claim {
                    log_cause("subscribe-events: releasing the stream's place", &cause);
                }
                return Err(unavailable(e));
            }
        };
        let subscribed = Subscribed {
            command,
            user_id,
            resume,
            key,
        };
        // Before answering: a store that fails now gets a plain 503 (and the place back).
        let opened =
            stream::open(&store, &push, &subscribed.subscription(), &since).map_err(unavailable)?;
        count_command(SUBSCRIBE, true, "ok");
        call.note("result_code", "ok");
        Ok(Answer::stream("text/event-stream", move |body| {
            let sub = subscribed.subscription();
            let live = Live {
                stream: format!("{}/{}", sub.session.as_str(), sub.request_id.as_str()),
                ends_in_ms: claim.ends_in_ms,
                grace_ms: claim.grace_ms,
            };
            let mut sse = SseWriter::new(body, live, &since);
            let ran = stream::run(&store, &OsRandom, &push, &sub, opened, &since, &mut sse);
            let end = match &ran.ended {
                Ok(StreamEnd::Ended(reason)) => reason.as_str(),
                Ok(StreamEnd::ClientGone) => "client_gone",
                // It sent its terminal event if it could.
                Err(_) => EndReason::StoreUnavailable.as_str(),
            };
            edge_auth_spin::request_log::note("stream_end", end);
            sse.ended(end);
            if let Err(cause) = ran.ended {
                log_cause("subscribe-events", &cause);
            }
            if let Err(cause) = ran.released {
                log_cause("subscribe-events", &cause);
            }
        })
        .header("x-accel-buffering", "no"))
    })
    .await;
}
