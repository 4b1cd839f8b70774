//! Chooses the runtime the end-to-end tests run on: `EDGE_AUTH_TEST_RUNTIME=spin` sets the
//! `spin_runtime` cfg (real Spin), unset or `host` leaves it off (our host). A build-time
//! choice lets host-only tests carry `#[cfg_attr(spin_runtime, ignore = "<why>")]`.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=EDGE_AUTH_TEST_RUNTIME");
    println!("cargo::rustc-check-cfg=cfg(spin_runtime)");
    match std::env::var("EDGE_AUTH_TEST_RUNTIME").as_deref() {
        Ok("spin") => println!("cargo::rustc-cfg=spin_runtime"),
        Ok("host" | "") | Err(_) => {}
        Ok(other) => panic!("EDGE_AUTH_TEST_RUNTIME must be `host` or `spin`, not {other:?}"),
    }
}
