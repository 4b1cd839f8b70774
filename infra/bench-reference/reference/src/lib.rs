//! The reference routes `infra/bench` measures the product against, on the same runtime
//! in the same run: `/constant` answers a fixed body (the cost of a request and a fresh
//! instance), `/incr` does one Redis `INCR` (plus a new Redis connection, as every product
//! route that touches Redis pays), and `/incr4` does four on one connection: the floor of
//! a route that sends four commands (send-email-code does, two of them after answering),
//! so the cost of a command can be read off the difference.

// `#[http_component]` expands to the unsafe component-model export glue.
#![allow(unsafe_code)]

use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;
use spin_sdk::redis::Connection;
use spin_sdk::variables;

fn reply(status: u16, body: &str) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}

#[http_component]
fn handle_reference(req: Request) -> Response {
    if req.path().ends_with("/constant") {
        return reply(200, r#"{"ok":true}"#);
    }
    let commands = if req.path().ends_with("/incr4") { 4 } else { 1 };
    let incremented = variables::get("redis_url")
        .map_err(|e| format!("{e:?}"))
        .and_then(|url| Connection::open(&url).map_err(|e| format!("{e:?}")))
        .and_then(|conn| {
            let mut n = 0;
            for _ in 0..commands {
                n = conn.incr("bench:counter").map_err(|e| format!("{e:?}"))?;
            }
            Ok(n)
        });
    match incremented {
        Ok(n) => reply(200, &format!(r#"{{"n":{n}}}"#)),
        Err(e) => {
            eprintln!("incr failed: {e}");
            reply(503, r#"{"ok":false}"#)
        }
    }
}
