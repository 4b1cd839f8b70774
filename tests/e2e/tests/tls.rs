//! TLS end to end, with a CA and server certificates made here (rcgen), trusted the way
//! Spin trusts them (the system store, or `SSL_CERT_FILE`):
//! - `rediss://`: a representative subset runs over TLS (login, a session read, a signed
//!   command, a revocation); a certificate from another CA, or for another name, fails
//!   closed: 503 and the cause in the log, nothing written.
//! - an `https://` backend whose CA only `SSL_CERT_FILE` holds: commands reach it (over
//!   HTTP/2, which both runtimes offer by ALPN, on one pooled connection); behind a
//!   certificate from another CA, it is `backend_unavailable` and gets nothing.
//!
//! The tests share one CA, which [`trust`] writes and puts in `SSL_CERT_FILE` for the
//! whole process (our host runs in it) before either test starts anything.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::OnceLock;

use edge_auth_tests::tls::TestCa;
use edge_auth_tests::{Spawn, TestApp};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The CA this process trusts, and a directory for the certificates it signs.
struct Trust {
    dir: tempfile::TempDir,
    ca: TestCa,
    file: PathBuf,
}

/// The trusted CA, made and put in `SSL_CERT_FILE` by the first test to ask.
fn trust() -> &'static Trust {
    static TRUST: OnceLock<Trust> = OnceLock::new();
    TRUST.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a directory");
        let ca = TestCa::new("edge-auth test CA").expect("a CA");
        let file = ca.write(&dir.path().join("ca.pem")).expect("CA file");
        // SAFETY: each test calls this first thing, and the other waits in `get_or_init`;
        // nothing of this process reads the environment meanwhile. Spin children get the
        // variable through their own environment (Spawn::trusted_ca).
        #[expect(
            unsafe_code,
            reason = "our host, in this process, trusts CAs as Spin does: through the environment"
        )]
        unsafe {
            std::env::set_var("SSL_CERT_FILE", &file);
        }
        Trust { dir, ca, file }
    })
}

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
    let Trust {
        dir,
        ca: trusted,
        file: ca,
    } = trust();
    let good = trusted
        .server(&["localhost"], &[LOCALHOST], dir.path(), "good")
        .expect("server certificate");
    let app = spawn_over_tls(good, ca).spawn().await;
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
    fails_closed(&spawn_over_tls(untrusted, ca).spawn().await, "another CA").await;

    let misnamed = trusted
        .server(&["redis.example.net"], &[], dir.path(), "misnamed")
        .expect("server certificate");
    fails_closed(&spawn_over_tls(misnamed, ca).spawn().await, "another name").await;
}

#[tokio::test]
async fn an_https_backend_is_trusted_through_ssl_cert_file_and_refused_behind_another_ca() {
    let Trust { dir, ca, file } = trust();
    let good = ca
        .server(&["localhost"], &[LOCALHOST], dir.path(), "backend-good")
        .expect("server certificate");
    let app = Spawn::default()
        .backend_tls(good, file.clone())
        .spawn()
        .await;
    let device = app.device("ada@example.com", 1).await;
    for n in 0..2 {
        let prepared = device.command("echo", format!("over https {n}").as_bytes());
        let executed = app.execute(&prepared.command).await;
        assert_eq!(executed.status(), 200, "{}", executed.body);
    }
    let calls = app.backend.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls.iter().all(|c| c.version == "HTTP/2.0"), "{calls:?}");
    assert_eq!(app.backend.connections(), 1, "one pooled connection");
    drop(app);

    let other = TestCa::new("a CA nobody trusts").expect("a CA");
    let untrusted = other
        .server(
            &["localhost"],
            &[LOCALHOST],
            dir.path(),
            "backend-untrusted",
        )
        .expect("server certificate");
    let app = Spawn::default()
        .backend_tls(untrusted, file.clone())
        .spawn()
        .await;
    let device = app.device("ada@example.com", 1).await;
    let refused = app.execute(&device.command("echo", b"x").command).await;
    assert_eq!(refused.status(), 502, "{}", refused.body);
    assert_eq!(
        refused.body["envelope"]["result_code"], "backend_unavailable",
        "{}",
        refused.body
    );
    assert!(
        app.backend.calls().is_empty(),
        "nothing reached the backend"
    );
}
