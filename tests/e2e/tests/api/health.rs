use edge_auth_tests::ApiResponse;
use edge_auth_tests::{round_trips, spawn_app};
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
    assert_eq!(response.header("allow"), Some("GET"));
    assert_eq!(response.body["error"]["code"], "method_not_allowed");
}
