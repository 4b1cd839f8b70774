//! `GET /api/v1/public/gateway/keys` → the gateway's public keys as a JWKS (RFC 7517,
//! OKP / Ed25519): the current signing key, then the next and the previous one during a
//! rotation, signed by the current key and the previous one (clients pin by signature:
//! PROTOCOL.md, section 5.2). Cacheable for five minutes; with no signing key
//! configured, `503`.

// `#[http_component]` expands to the unsafe component-model export glue.
#![allow(unsafe_code)]

use edge_auth_spin::gateway::gateway_settings;
use edge_auth_spin::http::{Answer, Route, log_cause, serve};
use edge_auth_spin::public_errors;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

const ROUTE: Route = Route::public(false);

#[http_component]
async fn handle_gateway_keys(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, ROUTE, |_call| {
        let settings = gateway_settings().map_err(|e| {
            log_cause("gateway-keys", &e);
            public_errors::unavailable()
        })?;
        let Some(jwks) = settings.jwks() else {
            edge_auth_spin::request_log::error(
                "gateway-keys: gateway_signing_key is not set; answering 503",
            );
            return Err(public_errors::unavailable());
        };
        Ok(Answer::ok(&jwks)?.header("cache-control", "public, max-age=300"))
    })
    .await;
}
