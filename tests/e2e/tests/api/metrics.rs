//! Metrics: counters move as the flows run, the route answers Prometheus' text format,
//! and counting adds no round trip before a response.

use edge_auth_tests::device::now_ms;
use edge_auth_tests::{Spawn, device_key, round_trips};
use serde_json::json;

#[tokio::test]
async fn an_unused_gateway_answers_zeroed_counters_and_empty_buckets() {
    let app = Spawn::default().spawn().await;
    let metrics = app.metrics().await;
    for name in [
        "edge_auth_challenges_created_total",
        "edge_auth_confirm_attempts_total",
        "edge_auth_sessions_created_total",
        "edge_auth_session_limit_rejections_total",
    ] {
        assert!(
            metrics
                .text
                .contains(&format!("# TYPE {name} counter\n{name} 0\n")),
            "{name}:\n{}",
            metrics.text
        );
    }
    let buckets = metrics.buckets("edge_auth_backend_latency_seconds");
    assert_eq!(buckets.len(), 12, "11 bounds and +Inf");
    assert!(buckets.iter().all(|b| b.count == 0.0));
    assert_eq!(
        metrics.plain("edge_auth_backend_latency_seconds_count"),
        0.0
    );
}

#[tokio::test]
async fn the_metrics_route_needs_the_internal_token() {
    let app = Spawn::default().spawn().await;
    let response = app
        .client
        .get(format!("{}/api/v1/internal/metrics", app.address))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn login_counters_move_as_codes_are_sent_and_confirmed() {
    let app = Spawn::default()
        .variable("resend_interval_seconds", "0")
        .spawn()
        .await;
    let challenge = app.new_challenge("ada@example.com").await;
    let code = app.mailed_code(&challenge).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let refused = app
        .confirm_email_code(&challenge, wrong, &device_key(1))
        .await;
    assert_eq!(refused.error().1, "invalid_code");
    let confirmed = app
        .confirm_email_code(&challenge, &code, &device_key(1))
        .await;
    let session = confirmed.field("device_session_id");
    let repeat = app
        .confirm_email_code(&challenge, &code, &device_key(1))
        .await;
    assert_eq!(repeat.field("device_session_id"), session);
    let revoked = app
        .revoke_session(
            &session,
            &json!({ "reason_code": "lost_device", "actor": "admin:tests" }),
        )
        .await;
    assert_eq!(revoked.status(), 200);

    let metrics = app
        .metrics_once(|m| {
            m.counter(
                "edge_auth_sessions_revoked_total",
                &[("reason", "lost_device")],
            ) == 1.0
                && m.counter("edge_auth_deliveries_total", &[("result", "sent")]) == 1.0
        })
        .await;
    let counter = |name: &str, labels: &[(&str, &str)]| metrics.counter(name, labels);
    assert_eq!(counter("edge_auth_challenges_created_total", &[]), 1.0);
    assert_eq!(
        counter("edge_auth_deliveries_total", &[("result", "sent")]),
        1.0
    );
    assert_eq!(counter("edge_auth_confirm_attempts_total", &[]), 3.0);
    for (result, n) in [("invalid_code", 1.0), ("created", 1.0), ("repeat", 1.0)] {
        assert_eq!(
            counter("edge_auth_confirm_results_total", &[("result", result)]),
            n,
            "{result}"
        );
    }
    assert_eq!(counter("edge_auth_sessions_created_total", &[]), 1.0);
    assert_eq!(
        counter(
            "edge_auth_user_resolutions_total",
            &[("directory", "redis"), ("outcome", "created")]
        ),
        1.0
    );
    assert_eq!(
        counter(
            "edge_auth_sessions_revoked_total",
            &[("reason", "lost_device")]
        ),
        1.0
    );

    // A second login of the same user finds the user.
    let _ = app.login("ada@example.com", &device_key(2)).await;
    let metrics = app
        .metrics_once(|m| m.counter("edge_auth_sessions_created_total", &[]) == 2.0)
        .await;
    assert_eq!(
        metrics.counter(
            "edge_auth_user_resolutions_total",
            &[("directory", "redis"), ("outcome", "existing")]
        ),
        1.0
    );
}

#[tokio::test]
async fn a_blocked_address_counts_a_suppressed_delivery_and_a_full_user_a_limit_rejection() {
    let app = Spawn::default()
        .variable("resend_interval_seconds", "0")
        .spawn()
        .await;
    let blocked = app
        .block(
            &json!({ "email": "eve@example.com", "reason_code": "fraud", "actor": "admin:tests" }),
        )
        .await;
    assert_eq!(blocked.status(), 200);
    let _ = app.new_challenge("eve@example.com").await;

    app.set_session_limit(Some(1)).await;
    let _ = app.login("amy@example.com", &device_key(1)).await;
    let challenge = app.new_challenge("amy@example.com").await;
    let code = app.mailed_code(&challenge).await;
    let refused = app
        .confirm_email_code(&challenge, &code, &device_key(2))
        .await;
    assert_eq!(refused.error().1, "session_limit_exceeded");

    let metrics = app
        .metrics_once(|m| m.counter("edge_auth_session_limit_rejections_total", &[]) == 1.0)
        .await;
    assert_eq!(
        metrics.counter("edge_auth_deliveries_total", &[("result", "suppressed")]),
        1.0
    );
    assert_eq!(
        metrics.counter("edge_auth_session_limit_rejections_total", &[]),
        1.0
    );
    assert_eq!(
        metrics.counter(
            "edge_auth_confirm_results_total",
            &[("result", "session_limit_exceeded")]
        ),
        1.0
    );
}

#[tokio::test]
async fn commands_are_counted_by_type_and_result_and_backend_calls_are_timed() {
    let app = Spawn::default().backend_stub().spawn().await;
    let device = app.device("ada@example.com", 1).await;
    let ok = device.command("echo", b"x");
    assert_eq!(app.execute(&ok.command).await.status(), 200);
    assert_eq!(app.execute(&ok.command).await.status(), 409, "a replay");
    let unknown = device.command("made.up", b"x");
    assert_eq!(app.execute(&unknown.command).await.status(), 404);
    let invented = device.command("gateway.made_up", b"x");
    assert_eq!(app.execute(&invented.command).await.status(), 404);
    // Opens a stream at subscribe-events only: refused here before the gate, uncounted.
    let subscribe = device.command("gateway.subscribe", b"");
    assert_eq!(app.execute(&subscribe.command).await.status(), 400);
    let stale = device.command_at("echo", b"x", now_ms() - 10 * 60 * 1000);
    assert_eq!(app.execute(&stale.command).await.status(), 401);
    let logout = device.command("gateway.logout", b"");
    assert_eq!(app.execute(&logout.command).await.status(), 200);

    let metrics = app
        .metrics_once(|m| {
            m.counter("edge_auth_sessions_revoked_total", &[("reason", "logout")]) == 1.0
        })
        .await;
    let command = |message_type: &str, result: &str| {
        metrics.counter(
            "edge_auth_commands_total",
            &[("message_type", message_type), ("result", result)],
        )
    };
    assert_eq!(command("echo", "ok"), 1.0);
    assert_eq!(command("echo", "replayed_request"), 1.0);
    assert_eq!(command("echo", "stale_request"), 1.0);
    assert_eq!(
        command("unknown", "unknown_message_type"),
        2.0,
        "a type the gateway neither routes nor answers is not a label of its own"
    );
    assert_eq!(command("gateway.logout", "ok"), 1.0);
    assert_eq!(command("gateway.subscribe", "unknown_message_type"), 0.0);
    assert!(!metrics.text.contains("made.up"));
    assert!(!metrics.text.contains("made_up"));
    assert_eq!(
        metrics.plain("edge_auth_backend_latency_seconds_count"),
        1.0
    );
    let buckets = metrics.buckets("edge_auth_backend_latency_seconds");
    assert_eq!(buckets.last().map(|b| b.count), Some(1.0));
    assert!(metrics.plain("edge_auth_backend_latency_seconds_sum") > 0.0);
}

#[tokio::test]
async fn budget_refusals_are_counted_by_route_and_budget() {
    let app = Spawn::default()
        .backend_stub()
        .variable("rate_limit_per_client", "1/60")
        .variable("command_rate_limit_per_session", "1/60")
        .spawn()
        .await;
    let device = app.device("ada@example.com", 1).await;
    assert_eq!(
        app.execute(&device.command("echo", b"1").command)
            .await
            .status(),
        200
    );
    let limited = app.execute(&device.command("echo", b"2").command).await;
    assert_eq!(limited.status(), 429);
    // Each login route has its own client budget: the login above spent send's only call.
    let send = app.send_email_code("bob@example.com").await;
    assert_eq!(send.error().1, "rate_limited");

    let metrics = app
        .metrics_once(|m| {
            m.counter(
                "edge_auth_rate_limited_total",
                &[("route", "command"), ("budget", "session")],
            ) == 1.0
        })
        .await;
    let limited = |route: &str, budget: &str| {
        metrics.counter(
            "edge_auth_rate_limited_total",
            &[("route", route), ("budget", budget)],
        )
    };
    assert_eq!(limited("command", "session"), 1.0);
    assert_eq!(limited("send", "client"), 1.0);
    assert_eq!(
        metrics.counter(
            "edge_auth_commands_total",
            &[("message_type", "echo"), ("result", "rate_limited")]
        ),
        1.0
    );
}

#[tokio::test]
#[cfg_attr(
    spin_runtime,
    ignore = "host only: reads our host's round-trip counter header"
)]
async fn counting_adds_no_round_trip_before_the_response() {
    let app = Spawn::default()
        .backend_stub()
        .variable("rate_limit_per_client", "3/60")
        .spawn()
        .await;
    // Every script once, so that Redis has them all cached (a first call costs one more
    // round trip: EVALSHA, then EVAL).
    let bob = app.device("bob@example.com", 2).await;
    assert_eq!(
        app.execute(&bob.command("echo", b"warm").command)
            .await
            .status(),
        200
    );

    // The same counts as before metrics existed: the increments ride in the client-shard
    // script or are written after the response.
    let send = app.send_email_code("ada@example.com").await;
    assert_eq!(round_trips(&send.headers), 2, "guard and send");
    let challenge = send.field("challenge_id");
    let code = app.mailed_code(&challenge).await;
    let confirm = app
        .confirm_email_code(&challenge, &code, &device_key(1))
        .await;
    assert_eq!(round_trips(&confirm.headers), 2, "guard and confirm");
    let device = edge_auth_tests::Device {
        key: edge_auth_client::DeviceKey::from_seed(&[1; 32]),
        session: confirm.field("device_session_id"),
    };
    let executed = app.execute(&device.command("echo", b"x").command).await;
    assert_eq!(executed.status(), 200);
    assert_eq!(
        round_trips(&executed.headers),
        2,
        "client and session steps"
    );
    let instantiate_us: u64 = executed
        .header(edge_auth_host::INSTANTIATE_HEADER)
        .and_then(|v| v.parse().ok())
        .expect("the host says how long instantiating took");
    assert!(instantiate_us > 0);

    // A client over its budget is counted by the script that refuses it: one round trip
    // and nothing written afterwards.
    let _ = app.send_email_code("ada@example.com").await;
    let limited = app.send_email_code("ada@example.com").await;
    assert_eq!(limited.error().1, "rate_limited");
    assert_eq!(round_trips(&limited.headers), 1, "the guard only");
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.counter(
            "edge_auth_rate_limited_total",
            &[("route", "send"), ("budget", "client")]
        ),
        1.0,
        "counted by the time the response arrived"
    );
}

#[tokio::test]
async fn a_login_the_user_directory_refuses_counts_as_blocked_by_policy() {
    // Review finding: a confirm refused after the store's script (the directory's user is
    // blocked, or a block of them is under way) was counted nowhere.
    let app = Spawn::default()
        .variable("user_directory", "rest")
        .spawn()
        .await;
    app.users.link("zoe@example.com", "ext-zoe");
    app.users.block("zoe@example.com");
    let challenge = app.new_challenge("zoe@example.com").await;
    let code = app.mailed_code(&challenge).await;
    let refused = app
        .confirm_email_code(&challenge, &code, &device_key(1))
        .await;
    assert_eq!(refused.error(), (403, "blocked_by_policy".into()));

    let metrics = app
        .metrics_once(|m| {
            m.counter(
                "edge_auth_confirm_results_total",
                &[("result", "blocked_by_policy")],
            ) == 1.0
        })
        .await;
    assert_eq!(
        metrics.counter(
            "edge_auth_confirm_results_total",
            &[("result", "blocked_by_policy")]
        ),
        1.0
    );
    assert_eq!(
        metrics.counter("edge_auth_confirm_results_total", &[("result", "created")]),
        0.0
    );
}

#[tokio::test]
async fn a_login_that_fails_with_503_counts_as_service_unavailable() {
    // A confirm that could not finish (the user directory down) was counted nowhere.
    let app = Spawn::default()
        .variable("user_directory", "rest")
        .spawn()
        .await;
    let challenge = app.new_challenge("ula@example.com").await;
    let code = app.mailed_code(&challenge).await;
    app.users.fail_reads(10);
    let failed = app
        .confirm_email_code(&challenge, &code, &device_key(1))
        .await;
    assert_eq!(failed.error(), (503, "service_unavailable".into()));

    let metrics = app
        .metrics_once(|m| {
            m.counter(
                "edge_auth_confirm_results_total",
                &[("result", "service_unavailable")],
            ) == 1.0
        })
        .await;
    assert_eq!(
        metrics.counter(
            "edge_auth_confirm_results_total",
            &[("result", "service_unavailable")]
        ),
        1.0
    );
}
