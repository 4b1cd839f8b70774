//! The host behaves like Spin 4 (see `../shared/spin-facts.md`), shown with the probe fixture.
//!
//! These tests run on real Spin too (`EDGE_AUTH_TEST_RUNTIME=spin`): there they check that
//! what the facts sheet and our host say of Spin is what Spin does.

use edge_auth_tests::{Runtime, Spawn, TestApp, memory_grows, round_trips};
use serde_json::{Value, json};

const FIXTURE: &str = "tests/fixtures/spin.toml";

fn fixture() -> Spawn {
    Spawn::manifest(FIXTURE).variable("unused_required", "set")
}

async fn spawn_fixture() -> TestApp {
    fixture().spawn().await
}

async fn json_of(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app.get(path).await;
    let status = response.status().as_u16();
    let body = response.json().await.expect("JSON body");
    (status, body)
}

/// All values of header `name` in the order the guest saw them.
fn header_values(headers: &Value, name: &str) -> Vec<String> {
    headers["headers"]
        .as_array()
        .expect("headers list")
        .iter()
        .filter(|pair| pair[0] == name)
        .map(|pair| pair[1].as_str().expect("text value").to_string())
        .collect()
}

fn one(headers: &Value, name: &str) -> String {
    let values = header_values(headers, name);
    assert_eq!(values.len(), 1, "{name}: {values:?}");
    values[0].clone()
}

#[tokio::test]
async fn a_wildcard_route_with_a_param_gets_spins_headers_and_values() {
    let app = spawn_fixture().await;
    let port = app.addr().port();

    let response = app
        .client
        .get(format!("{}/files/abc/d/e/?q=1", app.address))
        .header("spin-path-info", "from-client")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let h: Value = response.json().await.expect("JSON");

    assert_eq!(
        one(&h, "spin-full-url"),
        format!("http://127.0.0.1:{port}/files/abc/d/e/?q=1")
    );
    assert_eq!(
        header_values(&h, "spin-path-info"),
        ["from-client", "/d/e/"],
        "a client's spin-* header is kept and Spin's value appended"
    );
    assert_eq!(one(&h, "spin-matched-route"), "/files/:name/...");
    assert_eq!(one(&h, "spin-raw-component-route"), "/files/:name/...");
    assert_eq!(one(&h, "spin-component-route"), "/files/:name");
    assert_eq!(one(&h, "spin-base-path"), "/");
    assert!(one(&h, "spin-client-addr").starts_with("127.0.0.1:"));
    assert_eq!(one(&h, "spin-path-match-name"), "abc");
    let spins: Vec<&str> = h["headers"]
        .as_array()
        .expect("headers list")
        .iter()
        .filter_map(|pair| pair[0].as_str())
        .filter(|name| name.starts_with("spin-"))
        .collect();
    assert_eq!(
        spins,
        [
            // The client's value and Spin's, under the name's first place.
            "spin-path-info",
            "spin-path-info",
            "spin-path-match-name",
            "spin-full-url",
            "spin-matched-route",
            "spin-base-path",
            "spin-raw-component-route",
            "spin-component-route",
            "spin-client-addr",
        ],
        "the order real Spin 4.0.2 gives"
    );
    assert!(
        header_values(&h, "host").is_empty(),
        "host is a forbidden header"
    );
    assert_eq!(
        h["uri"],
        format!("http://127.0.0.1:{port}/files/abc/d/e/?q=1"),
        "the Host header arrives as the request authority"
    );
}

#[tokio::test]
async fn path_parameter_headers_turn_underscores_into_hyphens() {
    let app = spawn_fixture().await;

    let (status, h) = json_of(&app, "/snake/s_1/two").await;
    assert_eq!(status, 200);
    assert_eq!(one(&h, "spin-path-match-device-session-id"), "s_1");
    assert_eq!(one(&h, "spin-path-match-snake-case"), "two");
    assert!(
        header_values(&h, "spin-path-match-device_session_id").is_empty(),
        "Spin names every header it adds with hyphens only: {h}"
    );
}

#[tokio::test]
async fn routes_take_spins_precedence() {
    let app = spawn_fixture().await;

    let (_, h) = json_of(&app, "/p/b/c").await;
    assert_eq!(
        one(&h, "spin-matched-route"),
        "/p/b/...",
        "the literal segment decides before the tail"
    );
    let (_, h) = json_of(&app, "/p/x/c").await;
    assert_eq!(one(&h, "spin-matched-route"), "/p/:x/c");
    let (_, h) = json_of(&app, "/exact/headers/").await;
    assert_eq!(one(&h, "spin-matched-route"), "/exact/headers");
    assert_eq!(one(&h, "spin-path-info"), "");

    let missing = app.get("/nothing/here").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-length"], "0");
    assert!(missing.bytes().await.expect("body").is_empty());
}

#[tokio::test]
async fn reserved_and_static_routes_answer_without_running_wasm() {
    let app = spawn_fixture().await;

    let health = app.get("/.well-known/spin/health").await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.expect("text"), "OK");
    let (status, info) = json_of(&app, "/.well-known/spin/info").await;
    assert_eq!(status, 200);
    assert_eq!(info, json!({ "name": "probe-app", "version": "1.2.3" }));
    assert_eq!(app.get("/.well-known/spin/other").await.status(), 404);

    let teapot = app.get("/static").await;
    assert_eq!(teapot.status(), 418);
    assert_eq!(teapot.headers()["x-static"], "yes");
    assert_eq!(teapot.text().await.expect("text"), "short and stout");
}

#[tokio::test]
async fn a_private_component_is_reached_only_by_service_chaining() {
    let app = spawn_fixture().await;

    let (_, out) = json_of(
        &app,
        "/probe/http?http://backstage.spin.internal/headers?x=1",
    )
    .await;
    assert_eq!(out["status"], 200, "{out}");
    let inner: Value = serde_json::from_str(out["body"].as_str().expect("body")).expect("JSON");
    assert_eq!(one(&inner, "spin-client-addr"), "0.0.0.0:0");
    assert_eq!(one(&inner, "spin-matched-route"), "/...");
    assert_eq!(one(&inner, "spin-raw-component-route"), "/...");
    assert_eq!(one(&inner, "spin-component-route"), "");
    assert_eq!(one(&inner, "spin-path-info"), "/headers");
    assert_eq!(one(&inner, "spin-full-url"), "http://localhost/headers?x=1");

    let (_, other_port) = json_of(
        &app,
        "/probe/http?http://backstage.spin.internal:8080/counter",
    )
    .await;
    assert!(
        other_port["error"]
            .as_str()
            .is_some_and(|e| e.contains("HttpRequestDenied")),
        "{other_port}"
    );
    let (_, not_allowed) =
        json_of(&app, "/denied/http?http://backstage.spin.internal/counter").await;
    assert!(
        not_allowed["error"]
            .as_str()
            .is_some_and(|e| e.contains("HttpRequestDenied")),
        "{not_allowed}"
    );
    // `http://*.spin.internal` stands for `http://<component>.spin.internal` for each
    // component: not another scheme, not an unknown id, not a deeper name.
    for target in [
        "https://backstage.spin.internal:80/counter",
        "http://ghost.spin.internal/counter",
        "http://a.backstage.spin.internal/counter",
        // A port that is no number is no URL, not the default port.
        "http://backstage.spin.internal:99999/counter",
    ] {
        let (_, out) = json_of(&app, &format!("/probe/http?{target}")).await;
        assert!(
            out["error"]
                .as_str()
                .is_some_and(|e| e.contains("HttpRequestDenied")),
            "{target}: {out}"
        );
    }
}

/// Sends `request` as raw bytes (see [`TestApp::raw`]).
async fn raw(app: &TestApp, request: &str) -> String {
    app.raw(request.as_bytes()).await
}

#[tokio::test]
async fn the_reserved_paths_answer_without_a_host_and_a_routed_request_needs_one_authority() {
    let app = spawn_fixture().await;

    // A load balancer's HTTP/1.0 probe names no host.
    let probe = raw(&app, "GET /.well-known/spin/health HTTP/1.0\r\n\r\n").await;
    assert!(
        probe.starts_with("HTTP/1.0 200") && probe.ends_with("OK"),
        "{probe:?}"
    );
    let missing = raw(&app, "GET /nothing/here HTTP/1.0\r\n\r\n").await;
    assert!(missing.starts_with("HTTP/1.0 404"), "{missing:?}");
    // A routed request without one, or with two that differ, gets no answer.
    let routed = raw(&app, "GET /probe/headers HTTP/1.0\r\n\r\n").await;
    assert_eq!(routed, "", "no Host");
    let two = raw(
        &app,
        "GET http://evil.example/probe/headers HTTP/1.1\r\nHost: good.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(two, "", "a Host that differs from the target's authority");
    let same = raw(
        &app,
        "GET http://good.example/probe/headers HTTP/1.1\r\nHost: good.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(same.starts_with("HTTP/1.1 200"), "{same:?}");
    assert!(
        same.contains(r#"["spin-full-url","http://good.example/probe/headers"]"#),
        "{same:?}"
    );
    // Without Host the target's authority serves, but the full URL says `localhost`.
    let absolute = raw(
        &app,
        "GET http://good.example/probe/headers HTTP/1.0\r\n\r\n",
    )
    .await;
    assert!(absolute.starts_with("HTTP/1.0 200"), "{absolute:?}");
    assert!(
        absolute.contains(r#"["spin-full-url","http://localhost/probe/headers"]"#),
        "{absolute:?}"
    );

    // A chaining name in Host is dropped before anything else: the health probe still
    // answers, a routed request has no host left.
    let chained_health = raw(
        &app,
        "GET /.well-known/spin/health HTTP/1.1\r\nHost: backstage.spin.internal:80\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        chained_health.starts_with("HTTP/1.1 200"),
        "{chained_health:?}"
    );
    let chained = raw(
        &app,
        "GET /probe/headers HTTP/1.1\r\nHost: backstage.spin.internal:80\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(chained, "", "a chaining Host is no host");

    // A header value in UTF-8 beyond ASCII reaches the component (only bytes that are
    // not UTF-8 fail a request).
    let accented = raw(
        &app,
        "GET /probe/headers HTTP/1.1\r\nHost: good.example\r\nX-Name: José\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(accented.starts_with("HTTP/1.1 200"), "{accented:?}");
    assert!(accented.contains(r#"["x-name","José"]"#), "{accented:?}");

    // Info is pretty JSON, typed.
    let info = app.get("/.well-known/spin/info").await;
    assert_eq!(info.headers()["content-type"], "application/json");
    let text = info.text().await.expect("text");
    assert!(text.contains("\n  \"name\": \"probe-app\""), "{text:?}");
}

#[tokio::test]
async fn variables_resolve_from_templates_defaults_and_the_environment() {
    let app = spawn_fixture().await;
    let (status, v) = json_of(&app, "/probe/var/greeting").await;
    assert_eq!((status, v["value"].clone()), (200, json!("hello, world")));

    let (status, v) = json_of(&app, "/probe/var/nope").await;
    assert_eq!(status, 404);
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("Undefined")),
        "{v}"
    );
    let (_, v) = json_of(&app, "/probe/var/Bad-Name").await;
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("InvalidName")),
        "{v}"
    );
    let (_, v) = json_of(&app, "/denied/var/greeting").await;
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("Undefined")),
        "a component sees only its own variables: {v}"
    );

    let overridden = fixture().variable("greeting", "hi").spawn().await;
    let (_, v) = json_of(&overridden, "/probe/var/greeting").await;
    assert_eq!(v["value"], "hi, world");
}

#[tokio::test]
async fn wasi_config_reads_the_components_own_variables_as_spin_does() {
    let app = spawn_fixture().await;
    let (status, v) = json_of(&app, "/probe/config/greeting").await;
    assert_eq!((status, v["value"].clone()), (200, json!("hello, world")));
    for absent in ["nope", "Bad-Name"] {
        let (status, v) = json_of(&app, &format!("/probe/config/{absent}")).await;
        assert_eq!(
            (status, v["value"].clone()),
            (200, Value::Null),
            "{absent}: {v}"
        );
    }
    let (status, v) = json_of(&app, "/probe/config").await;
    assert_eq!(status, 200, "{v}");
    let mut all: Vec<(String, String)> =
        serde_json::from_value(v["all"].clone()).unwrap_or_else(|e| panic!("{e}: {v}"));
    all.sort();
    let names: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["greeting", "redis_url"], "{v}");
    assert_eq!(all[0].1, "hello, world");
    let (_, v) = json_of(&app, "/denied/config/greeting").await;
    assert_eq!(
        v["value"],
        Value::Null,
        "a component sees only its own variables: {v}"
    );
}

#[tokio::test]
async fn a_missing_required_variable_stops_start_up_and_is_named() {
    let err = Spawn::manifest(FIXTURE)
        .try_spawn()
        .await
        .expect_err("start-up must fail");
    let message = format!("{err:#}");
    assert!(message.contains("Key(\"unused_required\")"), "{message}");
}

#[tokio::test]
async fn disallowed_redis_and_http_hosts_are_refused_like_spin() {
    let app = spawn_fixture().await;
    let port = app.redis.port();

    let (status, v) = json_of(&app, "/denied/redis/all").await;
    assert_eq!(status, 500);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("InvalidAddress")),
        "no allowed hosts: {v}"
    );
    let (_, v) = json_of(&app, &format!("/probe/redis/open?redis://localhost:{port}")).await;
    assert_eq!(v["opened"], false, "hosts compare as literals, no DNS: {v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("InvalidAddress")),
        "{v}"
    );
    let (_, v) = json_of(&app, &format!("/probe/redis/open?redis://127.0.0.1:{port}")).await;
    assert_eq!(v, json!({ "opened": true }));

    let (_, v) = json_of(&app, "/denied/http?http://127.0.0.1:1/").await;
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("HttpRequestDenied")),
        "{v}"
    );
    let (_, v) = json_of(&app, "/probe/http?http://127.0.0.1:1/").await;
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("ConnectionRefused")),
        "an allowed host is tried for real: {v}"
    );
    let logs = app
        .logs_with("Outbound network destination not allowed")
        .await;
    assert!(
        logs.iter()
            .any(|l| l.contains("Outbound network destination not allowed")),
        "{logs:?}"
    );
}

#[tokio::test]
async fn an_allowed_host_malformed_by_a_providers_value_denies_at_request_time() {
    // Spin checks a templated entry at load with the variables' defaults only; the value
    // a provider gives is checked per instance, and a malformed one denies everything.
    let app = fixture()
        .variable("http_allowed", "not a host")
        .spawn()
        .await;
    let (_, v) = json_of(&app, "/probe/http?http://127.0.0.1:1/").await;
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("HttpRequestDenied")),
        "{v}"
    );
}

#[tokio::test]
async fn every_redis_operation_round_trips_against_a_real_server() {
    let app = spawn_fixture().await;

    let response = app.get("/probe/redis/all").await;
    assert_eq!(response.status(), 200);
    let v: Value = response.json().await.expect("JSON");

    assert_eq!(v["set"], "Ok(())");
    assert_eq!(v["get"], json!({ "Ok": "value" }));
    assert_eq!(v["get_missing"], json!({ "Ok": true }));
    assert_eq!(v["incr"], json!([{ "Ok": 1 }, { "Ok": 2 }]));
    assert!(
        v["incr_wrong_type"]["Err"]
            .as_str()
            .is_some_and(|e| e.contains("not an integer")),
        "{v}"
    );
    assert_eq!(v["sadd"], json!({ "Ok": 2 }));
    assert_eq!(v["smembers"], json!({ "Ok": ["a", "b"] }));
    assert_eq!(v["srem"], json!({ "Ok": 1 }));
    assert_eq!(v["publish"], "Ok(())");
    assert_eq!(v["del"], json!({ "Ok": 1 }));
    assert_eq!(
        v["eval"],
        json!({ "Ok": [
            { "int64": 1 }, { "binary": "arg" }, { "nil": null }, { "binary": "k1" },
            { "int64": 42 }, { "status": "FINE" }, { "binary": "tail" }
        ] }),
        "nested arrays are flattened in order"
    );
    assert!(
        v["execute_error"]["Err"]
            .as_str()
            .is_some_and(|e| e.contains("unknown command")),
        "{v}"
    );

    let mut redis = app.redis.connection().expect("direct connection");
    let counter: String = redis::cmd("GET")
        .arg("{probe}:counter")
        .query(&mut redis)
        .expect("GET");
    assert_eq!(counter, "2");
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg("{probe}:set")
        .query(&mut redis)
        .expect("SMEMBERS");
    assert_eq!(members, ["b"]);
}

#[tokio::test]
async fn a_static_counter_does_not_survive_from_one_request_to_the_next() {
    let app = spawn_fixture().await;
    for _ in 0..3 {
        let (_, v) = json_of(&app, "/probe/counter").await;
        assert_eq!(v["counter"], 1, "every request gets a fresh instance");
    }
}

#[tokio::test]
#[cfg_attr(
    spin_runtime,
    ignore = "host only: the round-trip counter header is our host's"
)]
async fn redis_round_trips_are_counted_per_request() {
    let app = spawn_fixture().await;
    for n in [0, 1, 5] {
        let response = app.get(&format!("/probe/redis/gets/{n}")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(round_trips(response.headers()), n);
    }
    let all = app.get("/probe/redis/all").await;
    assert_eq!(all.status(), 200);
    assert_eq!(round_trips(all.headers()), 14, "one command per operation");
}

#[tokio::test]
#[cfg_attr(
    spin_runtime,
    ignore = "host only: the memory-growth counter header is our host's"
)]
async fn the_host_counts_the_guest_memory_growth_of_each_request() {
    let app = spawn_fixture().await;
    let small = app.get("/probe/counter").await;
    assert_eq!(small.status(), 200);
    assert_eq!(
        memory_grows(small.headers()),
        0,
        "a counter fits its memory"
    );

    // The probe reads the whole body into its heap: 1 MiB cannot fit the initial memory.
    let big = app
        .client
        .post(format!("{}/probe/body", app.address))
        .body(vec![b'x'; 1 << 20])
        .send()
        .await
        .expect("the request reaches the host");
    assert_eq!(big.status(), 200);
    assert!(memory_grows(big.headers()) >= 1, "a 1 MiB body grew it");

    let after = app.get("/probe/counter").await;
    assert_eq!(memory_grows(after.headers()), 0, "counted per request");
}

#[tokio::test]
async fn a_trapping_component_gets_an_empty_500_and_the_host_keeps_serving() {
    let app = spawn_fixture().await;

    let trapped = app.get("/probe/trap").await;
    assert_eq!(trapped.status(), 500);
    assert!(trapped.bytes().await.expect("body").is_empty());

    let (status, _) = json_of(&app, "/probe/counter").await;
    assert_eq!(status, 200);
    // The runtime's own line can come after the guest's (a CI run on Spin read the logs
    // between the two): wait for the runtime's, then look for both.
    let logs = app.logs_with("guest invocation failed").await;
    assert!(
        logs.iter()
            .any(|l| l.starts_with("[probe]") && l.contains("probe asked to trap")),
        "component output is prefixed with its id: {logs:?}"
    );
    assert!(
        logs.iter().any(|l| l.contains("guest invocation failed")),
        "the runtime logs the failure: {logs:?}"
    );
}

#[tokio::test]
async fn a_guest_that_traps_mid_body_ends_it_cleanly_and_one_that_abandons_it_cuts_it() {
    let app = spawn_fixture().await;

    // Spin drops the trapped guest's store, and with it the body's finish sender: the
    // chunked body ends as if finished, short.
    let trapped = app.get("/probe/write-then-trap").await;
    assert_eq!(trapped.status(), 200);
    let body = trapped.bytes().await.expect("the body ends cleanly");
    assert_eq!(body.as_ref(), b"part");

    // A body dropped without `finish` is aborted: the client must not take it for whole.
    // (The cut can come before the head has left: then the request itself fails.)
    let abandoned = async {
        let response = app
            .client
            .get(format!("{}/probe/write-then-drop", app.address))
            .send()
            .await?;
        response.bytes().await
    }
    .await;
    assert!(abandoned.is_err(), "the connection is cut: {abandoned:?}");

    let (status, _) = json_of(&app, "/probe/counter").await;
    assert_eq!(status, 200, "the runtime keeps serving");
}

#[tokio::test]
async fn the_guest_sees_only_the_manifest_environment_and_no_args() {
    let app = spawn_fixture().await;
    let (_, v) = json_of(&app, "/probe/env").await;
    assert_eq!(v["env"], json!([["PROBE_ENV", "set-in-manifest"]]));
    assert_eq!(v["args"], 0);
}

#[tokio::test]
async fn a_bad_manifest_or_a_missing_component_stops_start_up_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        (
            "spin_manifest_version = 2\n[application]\nname = \"x\"\nbogus = 1\n",
            "bogus",
        ),
        (
            "spin_manifest_version = 2\n[application]\nname = \"x\"\n[[trigger.http]]\nroute = \"/\"\ncomponent = \"c\"\n[component.c]\nsource = \"missing.wasm\"\n",
            "failed to read component source from disk",
        ),
        (
            "spin_manifest_version = 2\n[application]\nname = \"x\"\n[[trigger.http]]\nroute = \"/\"\ncomponent = \"c\"\n[component.c]\nsource = \"missing.wasm\"\nallowed_outbound_hosts = [\"127.0.0.1:6379\"]\n",
            "does not contain a scheme",
        ),
    ];
    // A component without a trigger has its allowed hosts checked too (before any
    // component is loaded).
    tokio::task::spawn_blocking(edge_auth_tests::build::ensure_components_built)
        .await
        .expect("build task")
        .expect("components built");
    let probe = edge_auth_tests::workspace_root().join("target/wasm32-wasip2/release/probe.wasm");
    let untriggered = format!(
        "spin_manifest_version = 2\n[application]\nname = \"x\"\n[[trigger.http]]\nroute = \"/\"\ncomponent = \"c\"\n[component.c]\nsource = {probe:?}\n[component.d]\nsource = {probe:?}\nallowed_outbound_hosts = [\"127.0.0.1:6379\"]\n"
    );
    let cases = cases
        .into_iter()
        .map(|(text, expected)| (text.to_string(), expected))
        .chain([(untriggered, "does not contain a scheme")]);
    for (text, expected) in cases {
        let path = dir.path().join("spin.toml");
        std::fs::write(&path, text).expect("write manifest");
        let err = Runtime::start(&path, Default::default())
            .await
            .expect_err("start-up must fail");
        let message = format!("{err:#}");
        assert!(message.contains(expected), "{expected}: {message}");
    }
}

#[tokio::test]
#[cfg_attr(
    spin_runtime,
    ignore = "host only: shuts our host down through its Rust API"
)]
async fn shutdown_completes_and_frees_the_port() {
    let app = spawn_fixture().await;
    let addr = app.addr();
    let TestApp {
        runtime: Runtime::Host(mut host),
        ..
    } = app
    else {
        panic!("this test runs on our host only");
    };
    host.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
