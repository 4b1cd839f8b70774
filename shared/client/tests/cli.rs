//! The `edge-auth` binary's own behaviour, without a gateway: usage, refusals, `keygen`.
//! (Its flows against a running gateway are end-to-end tests in `tests/e2e`, which also
//! run this binary: building it here, with the workspace's test build, spares them a
//! `cargo build` of their own.)

use std::process::{Command, Output};

use base64::Engine;

fn edge_auth(home: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edge-auth"))
        .env_remove("EDGE_AUTH_URL")
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .expect("the CLI runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn without_a_command_it_prints_its_usage_and_fails() {
    let home = tempfile::tempdir().expect("a directory");
    let output = edge_auth(home.path(), &[]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("usage"), "{}", stderr(&output));
}

#[test]
fn an_unknown_command_is_named_and_fails() {
    let home = tempfile::tempdir().expect("a directory");
    let output = edge_auth(home.path(), &["frobnicate"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("unknown command \"frobnicate\""),
        "{}",
        stderr(&output)
    );
}

#[test]
fn login_over_plain_http_beyond_this_machine_is_refused_before_any_request() {
    let home = tempfile::tempdir().expect("a directory");
    let output = edge_auth(
        home.path(),
        &[
            "--url",
            "http://gateway.example.invalid",
            "login",
            "--email",
            "ada@example.com",
        ],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("refusing plain http://"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn keygen_writes_a_private_key_file_and_prints_the_public_key() {
    let home = tempfile::tempdir().expect("a directory");
    let output = edge_auth(home.path(), &["keygen"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let public = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&public)
        .expect("base64");
    assert_eq!(bytes.len(), 32, "an Ed25519 public key: {public}");
    let key = home.path().join("device.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key)
            .expect("device.key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "only its owner reads the key");
    }
    #[cfg(not(unix))]
    assert!(key.exists());
}

#[test]
fn keygen_refuses_to_replace_a_key_and_leaves_nothing_half_written() {
    let home = tempfile::tempdir().expect("a directory");
    assert!(edge_auth(home.path(), &["keygen"]).status.success());
    let key = std::fs::read(home.path().join("device.key")).expect("device.key");
    let again = edge_auth(home.path(), &["keygen"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("exists"), "{}", stderr(&again));
    assert_eq!(
        std::fs::read(home.path().join("device.key")).expect("device.key"),
        key,
        "the first key stands"
    );
    let names: Vec<String> = std::fs::read_dir(home.path())
        .expect("the directory")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names, ["device.key"], "no partial file is left behind");
}

#[test]
fn arguments_after_the_command_are_the_command_s_and_extra_ones_are_refused() {
    // Review finding (stop 38): global flags were taken from anywhere, so a payload of
    // `--insecure` switched plain HTTP on, and words past the payload were dropped.
    let home = tempfile::tempdir().expect("a directory");
    for (args, says) in [
        (
            &["command", "echo", "hello", "world"][..],
            "unexpected argument \"world\"",
        ),
        (
            &["command", "note", "--insecure"][..],
            "unknown option \"--insecure\"",
        ),
        (&["keygen", "now"][..], "unexpected argument \"now\""),
        (
            &["keys", "--insecure"][..],
            "unexpected argument \"--insecure\"",
        ),
        (
            &["login", "--email", "ada@example.com", "--insecure"][..],
            "unexpected argument \"--insecure\"",
        ),
    ] {
        let output = edge_auth(home.path(), args);
        assert!(!output.status.success(), "{args:?}");
        assert!(
            stderr(&output).contains(says),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    assert!(
        std::fs::read_dir(home.path())
            .expect("the directory")
            .next()
            .is_none(),
        "nothing was written"
    );
}
