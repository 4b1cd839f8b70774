//! The Upstash REST transport, whatever transport the rest of the run uses: these apps
//! always talk to Redis through the REST test server (`tests/upstash-rest`).
//! `EDGE_AUTH_TEST_REDIS_TRANSPORT=rest` runs the whole suite that way too.

use edge_auth_tests::{ApiResponse, Spawn, TestApp, round_trips};

async fn rest_app() -> TestApp {
    Spawn::default()
        .rest_transport()
        .variable("resend_interval_seconds", "0")
        .spawn()
        .await
}

fn rest_commands(app: &TestApp) -> u64 {
    app.rest
        .as_ref()
        .expect("the app talks to the REST server")
        .commands()
}

#[tokio::test]
async fn login_sessions_and_commands_run_over_the_rest_transport() {
    let app = rest_app().await;
    let before = rest_commands(&app);

    let device = app.device("ada@example.com", 1).await;
    let prepared = device.command("echo", b"over rest");
    let executed = app.execute(&prepared.command).await;
    assert_eq!(executed.status(), 200, "{}", executed.body);
    let session = app.get_session(&device.session).await;
    assert_eq!(session.status(), 200, "{}", session.body);
    app.revoke_as_admin(&device.session).await;
    let again = app.execute(&device.command("echo", b"x").command).await;
    assert_eq!(again.status(), 401, "revoked: {}", again.body);

    // Send, confirm, execute twice, get, revoke: at least one command each went to REST.
    assert!(
        rest_commands(&app) >= before + 6,
        "the REST server ran {} commands",
        rest_commands(&app) - before
    );
}

#[tokio::test]
#[cfg_attr(
    spin_runtime,
    ignore = "host only: reads our host's round-trip counter header"
)]
async fn each_rest_request_counts_as_one_redis_round_trip() {
    let app = rest_app().await;
    let before = rest_commands(&app);
    let health = app.get_health().await;
    assert_eq!(health.status(), 200);
    assert_eq!(round_trips(&health.headers), 1, "one PING");
    assert_eq!(rest_commands(&app), before + 1, "and it went over REST");
}

#[tokio::test]
async fn a_script_redis_no_longer_holds_is_sent_again_with_eval() {
    let app = rest_app().await;
    app.device("ada@example.com", 1).await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut app.redis())
        .expect("SCRIPT FLUSH");

    let device = app.device("ada@example.com", 2).await;
    let session = app.get_session(&device.session).await;
    assert_eq!(session.status(), 200, "{}", session.body);
}

#[tokio::test]
async fn a_wrong_rest_token_fails_closed_with_503_and_changes_nothing() {
    let app = Spawn::default()
        .rest_transport()
        .variable("redis_rest_token", "not-the-token")
        .spawn()
        .await;
    let before = app.snapshot();

    let health = app.get_health().await;
    assert_eq!(health.status(), 503);
    let sent = app.send_email_code("ada@example.com").await;
    assert_eq!(sent.error(), (503, "service_unavailable".into()));
    assert_eq!(app.snapshot(), before, "nothing was written");
    let logs = app.logs_with("Redis REST answered 401").await;
    assert!(
        logs.iter().any(|l| l.contains("Redis REST answered 401")),
        "the cause is logged: {logs:?}"
    );
    assert!(
        !logs.iter().any(|l| l.contains("not-the-token")),
        "never the token"
    );
}

#[tokio::test]
async fn a_rest_url_that_is_no_endpoint_fails_closed_naming_the_variable_not_its_value() {
    // Review finding: any value was taken, and the failure came from deep in the request
    // (or not at all: a token in the query went out), without naming the variable.
    for (url, why) in [
        (
            "https://db.example.invalid/?_token=secret-in-query",
            "it has a query",
        ),
        ("https://db.example.invalid/pipeline", "it has a path"),
        ("redis://db.example.invalid", "https://"),
        // Review finding (stop 38): the token went out in clear to any host.
        (
            "http://db.example.invalid",
            "the token would travel in clear",
        ),
    ] {
        let app = Spawn::default()
            .rest_transport()
            .variable("redis_rest_url", url)
            .spawn()
            .await;
        let before = app.snapshot();
        assert_eq!(app.get_health().await.status(), 503, "{url}");
        let sent = app.send_email_code("ada@example.com").await;
        assert_eq!(sent.error(), (503, "service_unavailable".into()), "{url}");
        assert_eq!(app.snapshot(), before, "nothing was written");
        let logs = app.logs_with("`redis_rest_url` is not").await;
        assert!(
            logs.iter()
                .any(|l| l.contains("`redis_rest_url` is not") && l.contains(why)),
            "{url}: {logs:?}"
        );
        assert!(
            !logs.iter().any(|l| l.contains("secret-in-query")),
            "never the value"
        );
    }
    // A good endpoint that `redis_rest_allowed_host` does not name: the log says which
    // variable to set.
    let app = Spawn::default()
        .rest_transport()
        .variable("redis_rest_url", "https://db.example.invalid")
        .spawn()
        .await;
    assert_eq!(app.get_health().await.status(), 503);
    let logs = app.logs_with("HttpRequestDenied").await;
    assert!(
        logs.iter()
            .any(|l| l.contains("HttpRequestDenied") && l.contains("`*_allowed_host`")),
        "{logs:?}"
    );
}

#[tokio::test]
async fn the_push_readiness_check_also_pings_the_connection_streams_wait_on() {
    // Review finding: with commands over REST, health PINGed REST alone, so the push
    // group's pods stayed ready with a wrong redis_url while every stream failed.
    let broken = Spawn::default()
        .rest_transport()
        .variable("redis_url", "redis://127.0.0.1:1")
        .variable("redis_allowed_host", "redis://127.0.0.1:1")
        .spawn()
        .await;
    assert_eq!(health(&broken, "").await.status(), 200, "REST answers");
    let push = health(&broken, "?check=push").await;
    assert_eq!(push.status(), 503, "{}", push.body);
    assert_eq!(push.body["status"], "degraded");
    assert_eq!(
        health(&broken, "?check=everything").await.error(),
        (400, "invalid_request".into())
    );

    let app = rest_app().await;
    assert_eq!(health(&app, "?check=push").await.status(), 200);
}

/// `GET /api/v1/health<query>`, checked against the spec.
async fn health(app: &TestApp, query: &str) -> ApiResponse {
    let path = format!("/api/v1/health{query}");
    ApiResponse::checked(app.get(&path).await, "/api/v1/health", "get").await
}

#[tokio::test]
async fn a_metrics_write_whose_answer_comes_too_late_is_not_written_again() {
    // Review finding: a metrics write after the answer was tried once more when it failed,
    // which over REST only repeats it: the first had run, its answer lost to the timeout.
    let app = rest_app().await;
    let device = app.device("ada@example.com", 1).await;
    let user = app.get_session(&device.session).await.field("user_id");
    let body = serde_json::json!({"user_id": user, "event_type": "e", "payload": {}});
    let published = |m: &edge_auth_tests::metrics::Metrics| {
        m.counter(
            "edge_auth_push_events_published_total",
            &[("target", "user")],
        )
    };
    assert_eq!(app.publish(&body).await.status(), 200);
    assert_eq!(
        published(&app.metrics_once(|m| published(m) == 1.0).await),
        1.0
    );

    // The next write to a metrics shard runs, and its answer comes after the client's 5 s.
    app.rest
        .as_ref()
        .expect("the app talks to the REST server")
        .answer_late("}:metrics", std::time::Duration::from_secs(6), 1);
    let late = app.publish(&body).await;
    assert_eq!(late.status(), 200);
    // Its log line is written once the work after the answer is done.
    app.request_line(late.header("x-request-id").expect("an id"))
        .await;
    assert_eq!(published(&app.metrics().await), 2.0, "counted once");
}

#[tokio::test]
async fn a_failed_mail_is_counted_even_when_its_record_fails() {
    // Review finding: the delivery was counted only once its record was written. (Only a
    // failed mail is recorded: a mailed challenge stays pending.)
    let app = rest_app().await;
    app.mail.answer_with(500);
    // The first failure loads the record's script (an unknown script's error answered
    // late would mean it never ran).
    let warm = app.send_email_code("warm@example.com").await;
    assert_eq!(warm.status(), 200);
    // Its line is written once its delivery is recorded.
    let line = app
        .request_line(warm.header("x-request-id").expect("an id"))
        .await;
    assert_eq!(line["delivery"], "delivery_failed", "{line}");
    // The next record runs, and its answer comes after the gateway's 5 s.
    app.rest
        .as_ref()
        .expect("the app talks to the REST server")
        .answer_late("\"delivery_failed\"", std::time::Duration::from_secs(6), 1);
    let send = app.send_email_code("ada@example.com").await;
    assert_eq!(send.status(), 200);
    let line = app
        .request_line(send.header("x-request-id").expect("an id"))
        .await;
    assert_eq!(line["delivery"], "not_recorded", "{line}");
    let failed = |m: &edge_auth_tests::metrics::Metrics| {
        m.counter("edge_auth_deliveries_total", &[("result", "failed")])
    };
    assert_eq!(failed(&app.metrics_once(|m| failed(m) == 2.0).await), 2.0);
}
