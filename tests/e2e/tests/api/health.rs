use edge_auth_tests::ApiResponse;
use edge_auth_tests::{round_trips, spawn_app, status_of};
use serde_json::json;

#[tokio::test]
async fn health_answers_200_ok_as_json() {
    let app = spawn_app().await;

    let response = app.get_health().await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "health answers JSON"
    );
    assert_eq!(response.body, json!({ "status": "ok" }));
}

#[tokio::test]
#[cfg_attr(
    spin_runtime,
    ignore = "host only: reads our host's round-trip counter header"
)]
async fn health_costs_exactly_one_redis_round_trip() {
    let app = spawn_app().await;

    let response = app.get_health().await;

    assert_eq!(response.status(), 200);
    assert_eq!(round_trips(&response.headers), 1);
}

#[tokio::test]
async fn health_answers_503_degraded_while_redis_is_down_and_recovers_after() {
    let mut app = spawn_app().await;

    app.redis.stop();
    let down = app.get_health().await;
    assert_eq!(down.status(), 503);
    assert_eq!(
        down.body,
        json!({ "status": "degraded", "redis": "unreachable" })
    );
    let logs = app.logs_with("Redis unreachable").await;
    assert!(
        logs.iter()
            .any(|l| l.starts_with("[health]") && l.contains("Redis unreachable")),
        "the cause is logged under the component id: {logs:?}"
    );

    app.redis.restart().expect("redis restarts");
    assert_eq!(app.get_health().await.status(), 200);
}

#[tokio::test]
async fn health_refuses_other_methods_with_a_json_405() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(format!("{}/api/v1/health", app.address))
        .send()
        .await
        .expect("request sent");

    let response = ApiResponse::checked(response, "/api/v1/health", "post").await;
    assert_eq!(response.status(), 405);
    assert_eq!(response.header("allow"), Some("GET, OPTIONS"));
    assert_eq!(response.body["error"]["code"], "method_not_allowed");
}

/// One HTTP/1.1 request written as raw bytes (clients escape non-ASCII; scripts do not
/// always): the answer's status code and whether it had a body.
async fn raw_get(app: &edge_auth_tests::TestApp, target: &[u8]) -> (u16, bool) {
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    let answer = app.raw(&request).await;
    let body = answer
        .split_once("\r\n\r\n")
        .is_some_and(|(_, body)| !body.is_empty());
    (status_of(&answer), body)
}

#[tokio::test]
async fn a_request_target_with_raw_non_ascii_bytes_is_refused_before_routing_as_spin_does() {
    let app = spawn_app().await;

    let in_query = raw_get(&app, "/api/v1/health?x=%a\u{20ac}".as_bytes()).await;
    let in_path = raw_get(&app, "/api/v1/internal/sessions/caf\u{e9}".as_bytes()).await;
    let escaped = raw_get(&app, b"/api/v1/health?x=%a%E2%82%AC&y=%zz").await;

    assert_eq!(
        in_query,
        (400, false),
        "Spin 4.0.2's parser refuses it, bare"
    );
    assert_eq!(in_path, (400, false));
    assert_eq!(escaped, (200, true), "escaped, and a stray %, are read");
}
