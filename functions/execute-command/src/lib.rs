//! `POST /api/v1/gateway/execute-command` `{"envelope","payload","signature"}` → a signed
//! response `{"envelope","payload","signature"}` (see `shared/protocol/PROTOCOL.md`). Errors before
//! the session is proven are plain JSON errors; everything after is signed.

// `#[http_component]` expands to the unsafe component-model export glue.
#![allow(unsafe_code)]

use edge_auth_domain::gateway::command::{MAX_COMMAND_BODY_BYTES, parse};
use edge_auth_domain::gateway::execute::{
    CommandError, Gateway, Refusal, check_executable_type, execute_command, prepare,
};
use edge_auth_spin::backend::HttpBackend;
use edge_auth_spin::clock::Since;
use edge_auth_spin::command_gate::{RedisCommandGate, count_command};
use edge_auth_spin::gateway::{command_body_limit, gateway_settings, plain_error};
use edge_auth_spin::http::{Answer, Route, log_cause, serve};
use edge_auth_spin::public_errors;
use edge_auth_spin::redis::SpinRedis;
use edge_auth_spin::session_store::RedisSessionStore;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

/// The body may carry the largest payload the settings allow, in base64 (escaped, at
/// most), and its envelope: read no further, whatever the body says
/// (`command_max_payload_bytes` is checked again on the decoded payload).
const ROUTE: Route = Route::public(true)
    .max_body(MAX_COMMAND_BODY_BYTES)
    .body_limit(command_body_limit);

/// The result a command that failed with `503` is counted and logged under.
const UNAVAILABLE: &str = "service_unavailable";

#[http_component]
async fn handle_execute_command(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, ROUTE, |call| {
        let fail = |e: CommandError| plain_error("execute-command", &e);
        let command = parse(call.body()).map_err(fail)?;
        let settings = gateway_settings().map_err(|e| fail(e.into()))?;
        // Checked (signature included) before Redis is even connected to.
        let command = prepare(&settings, &command).map_err(fail)?;
        // Signed, but only with the key the envelope names: the session step proves the
        // key the session's (until then, `unknown_session` or `key_mismatch` in the same
        // line says the claim failed).
        call.note("device_session_id", command.session.as_str());
        call.note("message_type", command.message_type.as_str());
        call.note("command_request_id", command.request_id.as_str());
        check_executable_type(&command).map_err(fail)?;
        let client = settings
            .clients
            .budget_key(&settings.clients.resolve(&call.caller.client));
        let store = RedisSessionStore::new(SpinRedis::connect().map_err(|e| fail(e.into()))?);
        let gate = RedisCommandGate::new(store.redis().map_err(|e| fail(e.into()))?);
        let backend = HttpBackend {
            target: settings.backend.as_ref(),
        };
        let gateway = Gateway {
            gate: &gate,
            backend: &backend,
            sessions: &store,
            settings: &settings,
            clock: &Since::now(),
        };
        let executed = execute_command(&gateway, &client, &command).map_err(|e| {
            // Once it reaches Redis (a signing key and the backend's settings are
            // checked before), every 503 is counted, as confirm counts its 503s: even
            // one whose lost answer may have counted a refusal (README, `commands_total`).
            if matches!(e, CommandError::Unexpected(_)) {
                let known = settings.knows(&command.message_type, false);
                count_command(command.message_type.as_str(), known, UNAVAILABLE);
                call.note("result_code", UNAVAILABLE);
            }
            fail(e)
        })?;
        if let Some(cause) = &executed.cause {
            log_cause("execute-command: backend", cause);
        }
        let result_code = executed.response.envelope.result_code.clone();
        // The gate counted its own refusals.
        if !executed.refusal.as_ref().is_some_and(Refusal::by_gate) {
            let known = settings.knows(&command.message_type, false);
            count_command(command.message_type.as_str(), known, &result_code);
        }
        call.note("result_code", result_code);
        // What the backend answered, whatever became of it: a 401 from a mismatched
        // backend_token or a 404 from a wrong backend_routes path shows here, though the
        // device gets it as backend_rejected.
        let backend_status = executed.response.envelope.backend_status;
        if backend_status != 0 {
            call.note("backend_status", backend_status.to_string());
        }
        let (status, retry_after) = executed
            .refusal
            .as_ref()
            .map_or((200, None), public_errors::refusal);
        let mut answer = Answer::json(status, &executed.response)?;
        if let Some(refusal) = &executed.refusal {
            answer = answer.error_code(refusal.code());
        }
        Ok(match retry_after {
            Some(seconds) => answer.header("retry-after", seconds.to_string()),
            None => answer,
        })
    })
    .await;
}
