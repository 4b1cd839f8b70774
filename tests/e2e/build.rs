//! Chooses what the end-to-end tests run on, at build time, so tests that need one
//! choice can say so in an attribute (`#[cfg_attr(spin_runtime, ignore = "<why>")]`):
//! - `EDGE_AUTH_TEST_RUNTIME=spin` sets the `spin_runtime` cfg (real Spin); unset or
//!   `host` leaves it off (our host).
//! - `EDGE_AUTH_TEST_REDIS_TRANSPORT=rest` sets the `rest_transport` cfg: every app talks
//!   to Redis through the Upstash REST test server (push streams still wait on RESP);
//!   unset or `resp` leaves it off.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=EDGE_AUTH_TEST_RUNTIME");
    println!("cargo::rerun-if-env-changed=EDGE_AUTH_TEST_REDIS_TRANSPORT");
    println!("cargo::rustc-check-cfg=cfg(spin_runtime)");
    println!("cargo::rustc-check-cfg=cfg(rest_transport)");
    match std::env::var("EDGE_AUTH_TEST_RUNTIME").as_deref() {
        Ok("spin") => println!("cargo::rustc-cfg=spin_runtime"),
        Ok("host" | "") | Err(_) => {}
        Ok(other) => panic!("EDGE_AUTH_TEST_RUNTIME must be `host` or `spin`, not {other:?}"),
    }
    match std::env::var("EDGE_AUTH_TEST_REDIS_TRANSPORT").as_deref() {
        Ok("rest") => println!("cargo::rustc-cfg=rest_transport"),
        Ok("resp" | "") | Err(_) => {}
        Ok(other) => {
            panic!("EDGE_AUTH_TEST_REDIS_TRANSPORT must be `resp` or `rest`, not {other:?}")
        }
    }
}
