//! `rediss://` end to end: Redis over TLS with a CA and server certificates made here
//! (rcgen), trusted the way Spin trusts them (the system store, or `SSL_CERT_FILE`). A
//! representative subset runs over TLS (login, a session read, a signed command, a
//! revocation); a certificate from another CA, or for another name, fails closed: 503 and
//! the cause in the log, nothing written.
//!
//! One test in this binary: it sets `SSL_CERT_FILE` for the whole process (our host runs
//! in it), before any other thread could read the environment.

use std::net::{IpAddr, Ipv4Addr};

use edge_auth_tests::tls::TestCa;
use edge_auth_tests::{Spawn, TestApp};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn spawn_over_tls(tls: edge_auth_tests::redis_server::ServerTls, ca: &std::path::Path) -> Spawn {
    let mut spawn = Spawn::default()
        .variable("resend_interval_seconds", "0")
        .redis_tls(tls, ca.to_path_buf());
    // RESP over TLS here, whatever transport the run selected.
    spawn.rest_transport = false;
    spawn
}

async fn fails_closed(app: &TestApp, what: &str) {
    let before = app.snapshot();
    let health = app.get_health().await;
    assert_eq!(health.status(), 503, "{what}: health");
    let sent = app.send_email_code("ada@example.com").await;
    assert_eq!(sent.error(), (503, "service_unavailable".into()), "{what}");
    assert_eq!(app.snapshot(), before, "{what}: nothing written");
    let logs = app.logs_with("opening the Redis connection").await;
    let causes: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("opening the Redis connection"))
        .collect();
    assert!(!causes.is_empty(), "{what}: the cause is logged: {logs:?}");
    eprintln!("{what}: {}", causes[0]);
}

#[tokio::test]
async fn rediss_serves_login_sessions_and_commands_and_fails_closed_on_a_wrong_ca_or_name() {
    let dir = tempfile::tempdir().expect("a directory");
    let trusted = TestCa::new("edge-auth test CA").expect("a CA");
    let ca = trusted.write(&dir.path().join("ca.pem")).expect("CA file");
    // SAFETY: the only test of this binary sets it before starting anything, so no other
    // thread reads the environment meanwhile. Spin children get it through their own
    // environment (Spawn::redis_tls).
    #[expect(
        unsafe_code,
        reason = "our host, in this process, trusts CAs as Spin does: through the environment"
    )]
    unsafe {
        std::env::set_var("SSL_CERT_FILE", &ca);
    }

    let good = trusted
        .server(&["localhost"], &[LOCALHOST], dir.path(), "good")
        .expect("server certificate");
    let app = spawn_over_tls(good, &ca).spawn().await;
    assert_eq!(app.get_health().await.status(), 200, "health over TLS");
    let device = app.device("ada@example.com", 1).await;
    let session = app.get_session(&device.session).await;
    assert_eq!(session.status(), 200, "{}", session.body);
    let executed = app
        .execute(&device.command("echo", b"over tls").command)
        .await;
    assert_eq!(executed.status(), 200, "{}", executed.body);
    app.revoke_as_admin(&device.session).await;
    drop(app);

    let other = TestCa::new("a CA nobody trusts").expect("a CA");
    let untrusted = other
        .server(&["localhost"], &[LOCALHOST], dir.path(), "untrusted")
        .expect("server certificate");
    fails_closed(&spawn_over_tls(untrusted, &ca).spawn().await, "another CA").await;

    let misnamed = trusted
        .server(&["redis.example.net"], &[], dir.path(), "misnamed")
        .expect("server certificate");
    fails_closed(&spawn_over_tls(misnamed, &ca).spawn().await, "another name").await;
}
