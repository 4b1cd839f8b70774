//! `edge-auth`: a command-line device for edge-auth.
//!
//! ```text
//! edge-auth [--url URL] [--home DIR] keygen   (optional: login makes a new key)
//! edge-auth [--url URL] [--home DIR] login --email ADDRESS [--code CODE]
//! edge-auth [--url URL] [--home DIR] command MESSAGE_TYPE [PAYLOAD | -- PAYLOAD | --file PATH | -]
//!   (no payload: standard input when it is piped, else empty)
//! edge-auth [--url URL] [--home DIR] subscribe [--from LAST_EVENT_ID]
//! edge-auth [--url URL] keys
//! ```
//!
//! `--url` (or `EDGE_AUTH_URL`) defaults to `http://127.0.0.1:3000`, where `infra/run`
//! serves; plain `http://` is refused except on loopback (`--insecure` allows it). `--home`
//! (or `EDGE_AUTH_HOME`) defaults to `~/.edge-auth`, which holds `device.key` (0600),
//! `session.json` (the session and the URL it belongs to) and `pin.json` (the gateway's
//! signed key set it trusts).
//!
//! Trust: `login` pins the gateway's JWKS (it must be signed by one of its own keys).
//! Before each command the CLI fetches the JWKS again and follows it only if a key it has
//! pinned signed it and it gives no pinned key id another key (a rotation's sets are
//! signed by a key clients already hold); a set a party on the path added a key to is
//! refused. `command` prints the verified response payload; any error, including an
//! answer whose signature does not verify, exits non-zero with a message.
//!
//! `subscribe` follows the session's push stream and prints each verified event as a JSON
//! line (`id`, `event_type`, `event_id`, `target`, `timestamp_ms`, `payload`), from the
//! newest event on, or after `--from`'s id (`--from 0-0`: every event since the login,
//! those published before the stream opened too). It resumes
//! from the last id by itself when the stream reaches its maximum duration, the
//! connection drops or the server cannot keep the stream (those last two after a pause,
//! five times in a row at most without an event), and exits non-zero on a terminal
//! `failed_precondition` (revoked, expired, blocked), printing that event first. When
//! the gateway rotates its key while it runs, it follows the new key set from its pin as
//! `command` does, rewrites `pin.json` and resumes.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use edge_auth_client::{Client, ClientError, DeviceKey, Followed};
use edge_auth_protocol::verify::{KeyPin, KeySetError};
use serde::{Deserialize, Serialize};

const USAGE: &str = "usage (--insecure allows plain http:// beyond this machine):
  edge-auth [--url URL] [--home DIR] keygen
  edge-auth [--url URL] [--home DIR] login --email ADDRESS [--code CODE]
  edge-auth [--url URL] [--home DIR] command MESSAGE_TYPE [PAYLOAD | -- PAYLOAD | --file PATH | -]
  edge-auth [--url URL] [--home DIR] subscribe [--from LAST_EVENT_ID]
  edge-auth [--url URL] keys";

#[derive(Serialize, Deserialize)]
struct SessionFile {
    url: String,
    device_session_id: String,
}

struct Options {
    url: String,
    home: PathBuf,
    insecure: bool,
    rest: Vec<String>,
}

fn options() -> anyhow::Result<Options> {
    let mut url = std::env::var("EDGE_AUTH_URL").unwrap_or_else(|_| "http://127.0.0.1:3000".into());
    let mut home = std::env::var_os("EDGE_AUTH_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map_or_else(|| PathBuf::from("."), PathBuf::from)
                .join(".edge-auth")
        });
    let mut rest = Vec::new();
    let mut insecure = false;
    // The global flags come before the command: what follows it is the command's own (a
    // payload of `--insecure` must not switch plain HTTP on).
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--url" => url = args.next().context("--url needs a value")?,
            "--home" => home = PathBuf::from(args.next().context("--home needs a value")?),
            "--insecure" => insecure = true,
            _ => {
                rest.push(arg);
                rest.extend(args);
                break;
            }
        }
    }
    Ok(Options {
        url,
        home,
        insecure,
        rest,
    })
}

/// Plain HTTP only to this machine (or with `--insecure`): the JWKS and the code travel
/// over it.
fn check_transport(url: &str, insecure: bool) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        bail!("{url:?}: credentials do not belong in the gateway's URL");
    }
    let loopback = match parsed.host() {
        Some(url::Host::Domain(name)) => name == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback || insecure => Ok(()),
        "http" => bail!(
            "refusing plain http:// to {}: use https://, or --insecure for a test setup",
            parsed.host_str().unwrap_or_default()
        ),
        other => bail!("{url:?}: the scheme must be https (or http on this machine), not {other}"),
    }
}

/// Writes `bytes` to `path` through a file beside it, on disk before it is renamed over
/// `path`: a run that reads `path` meanwhile (another command) sees the old content or the
/// new, never half of it, and neither does one after a crash.
fn write_replacing(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut partial = path.as_os_str().to_owned();
    partial.push(format!(".{}.partial", std::process::id()));
    let partial = PathBuf::from(partial);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&partial)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    write().with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, path)
        .with_context(|| format!("replacing {} with {}", path.display(), partial.display()))?;
    // The rename itself is on disk once the directory is. Best effort: not every system
    // can open or sync a directory, and the file is whole either way.
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Ok(dir) = std::fs::File::open(dir.unwrap_or_else(|| std::path::Path::new(".")))
        && let Err(e) = dir.sync_all()
    {
        eprintln!("note: {} may not be on disk yet: {e}", path.display());
    }
    Ok(())
}

/// Refuses what a command did not take from `args`.
fn no_more(args: &[String]) -> anyhow::Result<()> {
    match args.first() {
        Some(arg) => bail!("unexpected argument {arg:?}\n{USAGE}"),
        None => Ok(()),
    }
}

/// The value after `flag` in `args`, removed from it.
fn take(args: &mut Vec<String>, flag: &str) -> anyhow::Result<Option<String>> {
    let Some(i) = args.iter().position(|a| a == flag) else {
        return Ok(None);
    };
    if i + 1 >= args.len() {
        bail!("{flag} needs a value");
    }
    let value = args.remove(i + 1);
    args.remove(i);
    Ok(Some(value))
}

async fn run() -> anyhow::Result<()> {
    let Options {
        url,
        home,
        insecure,
        rest,
    } = options()?;
    let mut args = rest;
    if args.is_empty() {
        bail!("{USAGE}");
    }
    let command = args.remove(0);
    if matches!(command.as_str(), "login" | "keys") {
        check_transport(&url, insecure)?;
    }
    let client = Client::new(&url)?;
    let key_path = home.join("device.key");
    let session_path = home.join("session.json");
    let pin_path = home.join("pin.json");
    match command.as_str() {
        "keygen" => {
            no_more(&args)?;
            std::fs::create_dir_all(&home)
                .with_context(|| format!("creating {}", home.display()))?;
            let key = DeviceKey::generate()?;
            key.save(&key_path)?;
            println!("{}", key.public_key());
            eprintln!("device key written to {} (0600)", key_path.display());
        }
        "login" => {
            let email = take(&mut args, "--email")?.context("login needs --email ADDRESS")?;
            let code = take(&mut args, "--code")?;
            no_more(&args)?;
            // A new key for every login: a key taken from this device (with the session id,
            // which is no secret) is then of no use once the user has revoked that
            // session and logged in again. It replaces `device.key` only once the login
            // has succeeded.
            let key = DeviceKey::generate()?;
            let challenge = client.send_email_code(&email).await?;
            eprintln!("a code was sent to {email} (challenge {challenge})");
            let code = match code {
                Some(code) => code,
                None => {
                    eprint!("code: ");
                    std::io::stderr().flush().ok();
                    let mut line = String::new();
                    std::io::stdin()
                        .lock()
                        .read_line(&mut line)
                        .context("reading the code")?;
                    line.trim().to_string()
                }
            };
            let session = client.confirm_email_code(&challenge, &code, &key).await?;
            // Trust on first use: the keys this session's answers must be signed with.
            // Fetched before anything is written: a login that fails here leaves the
            // device as it was, its last session still signing with its key.
            let pin = client.follow_keys(None).await?;
            std::fs::create_dir_all(&home)
                .with_context(|| format!("creating {}", home.display()))?;
            key.replace(&key_path)?;
            write_replacing(&pin_path, &serde_json::to_vec_pretty(&pin)?)?;
            let file = SessionFile {
                url: url.clone(),
                device_session_id: session.clone(),
            };
            write_replacing(&session_path, &serde_json::to_vec_pretty(&file)?)?;
            println!("{session}");
        }
        "command" => {
            if args.is_empty() {
                bail!("command needs a MESSAGE_TYPE\n{USAGE}");
            }
            let message_type = args.remove(0);
            let file = take(&mut args, "--file")?;
            let text = match args.as_slice() {
                [] => None,
                [separator, text] if separator == "--" => Some(text.as_str()),
                [text] if text.starts_with("--") => {
                    bail!("unknown option {text:?} (a payload that starts with -- goes after --)")
                }
                [text] => Some(text.as_str()),
                [_, extra, ..] => bail!(
                    "unexpected argument {extra:?}: give the payload as one argument (quote it)"
                ),
            };
            let payload = match (file, text) {
                (Some(path), None) => {
                    std::fs::read(&path).with_context(|| format!("reading {path}"))?
                }
                // No payload and nobody piping one in: an empty payload.
                (None, None) if std::io::stdin().is_terminal() => Vec::new(),
                (None, Some("-")) | (None, None) => {
                    let mut bytes = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut bytes)
                        .context("reading stdin")?;
                    bytes
                }
                (None, Some(text)) => text.as_bytes().to_vec(),
                (Some(_), Some(_)) => bail!("give the payload as an argument or --file, not both"),
            };
            let (key, session, client, pin) =
                signed_in(&key_path, &session_path, &pin_path, insecure).await?;
            let result = client
                .execute(
                    &key,
                    &session.device_session_id,
                    &message_type,
                    &payload,
                    &pin.jwks,
                )
                .await?;
            // Flushed here, so that a write that fails (a full disk, a closed pipe) fails
            // the command instead of being lost at exit.
            let mut out = std::io::stdout().lock();
            out.write_all(&result.payload)
                .and_then(|()| out.flush())
                .context("writing the answer")?;
        }
        "subscribe" => {
            let from = take(&mut args, "--from")?;
            no_more(&args)?;
            let (key, session, client, mut pin) =
                signed_in(&key_path, &session_path, &pin_path, insecure).await?;
            let mut print = |followed: Followed<'_>| {
                let event = match followed {
                    Followed::Event(event) => event,
                    // The gateway rotated its key while this ran: keep the pin it followed
                    // to, which the rotation's next step may need.
                    Followed::Keys(pin) => {
                        let stored = serde_json::to_vec_pretty(pin)
                            .map_err(anyhow::Error::from)
                            .and_then(|bytes| write_replacing(&pin_path, &bytes));
                        if let Err(e) = stored {
                            eprintln!(
                                "edge-auth: the gateway's keys changed, and {} could not be \
                                 updated: {e:#}",
                                pin_path.display()
                            );
                        }
                        return;
                    }
                };
                let kind = event.envelope.event_type.as_str();
                let resumable = kind == "gateway.stream_end"
                    && serde_json::from_slice::<serde_json::Value>(&event.payload)
                        .is_ok_and(|v| v["code"] == "unavailable");
                // The hello and the resumable ends are the stream's business, not the user's.
                if kind == "gateway.server_time" || resumable {
                    return;
                }
                let payload: serde_json::Value = serde_json::from_slice(&event.payload)
                    .unwrap_or_else(|_| {
                        serde_json::Value::String(String::from_utf8_lossy(&event.payload).into())
                    });
                let line = serde_json::json!({
                    "id": event.id,
                    "event_type": kind,
                    "event_id": event.envelope.event_id,
                    "target": event.envelope.target,
                    "timestamp_ms": event.envelope.timestamp_ms,
                    "payload": payload,
                });
                // A reader that went away (`subscribe | head`) ends the run; output that
                // cannot be written fails it.
                let mut out = std::io::stdout().lock();
                if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        std::process::exit(0);
                    }
                    eprintln!("edge-auth: writing an event: {e}");
                    std::process::exit(1);
                }
            };
            let closed = client
                .subscribe(
                    &key,
                    &session.device_session_id,
                    from,
                    &mut pin,
                    5,
                    &mut print,
                )
                .await?;
            bail!("the stream ended: {closed:?}");
        }
        "keys" => {
            no_more(&args)?;
            let jwks = client.jwks().await?;
            println!("{}", serde_json::to_string_pretty(&jwks)?);
        }
        other => bail!("unknown command {other:?}\n{USAGE}"),
    }
    Ok(())
}

/// The device key, the session, a client of the session's gateway and the pin of its
/// current JWKS, followed from the pinned keys (the pin is rewritten when the set changed).
async fn signed_in(
    key_path: &std::path::Path,
    session_path: &std::path::Path,
    pin_path: &std::path::Path,
    insecure: bool,
) -> anyhow::Result<(DeviceKey, SessionFile, Client, KeyPin)> {
    let key = DeviceKey::load(key_path)?;
    let session: SessionFile =
        serde_json::from_slice(&std::fs::read(session_path).with_context(|| {
            format!("reading {} (run `edge-auth login`)", session_path.display())
        })?)
        .context("session.json is damaged")?;
    // The session belongs to the gateway it was made at.
    check_transport(&session.url, insecure)?;
    let client = Client::new(&session.url)?;
    let pin: KeyPin = serde_json::from_slice(
        &std::fs::read(pin_path)
            .with_context(|| format!("reading {} (run `edge-auth login`)", pin_path.display()))?,
    )
    .with_context(|| format!("{} is damaged (run `edge-auth login`)", pin_path.display()))?;
    let followed = match client.follow_keys(Some(&pin)).await {
        Ok(followed) => followed,
        Err(ClientError::KeySet(e @ KeySetError::BadPin(_))) => {
            bail!("{}: {e}", pin_path.display())
        }
        Err(e @ ClientError::KeySet(_)) => bail!(
            "refusing the gateway's keys, which the pinned ones ({}) do not vouch for: {e}; \
             log in again if the gateway really replaced its keys",
            pin_path.display()
        ),
        Err(e) => return Err(e.into()),
    };
    if followed != pin {
        write_replacing(pin_path, &serde_json::to_vec_pretty(&followed)?)?;
    }
    Ok((key, session, client, followed))
}

/// The largest clock difference the CLI repeats from an unsigned `stale_request` as a
/// likely one (PROTOCOL 4.3 takes no correction larger than a few minutes).
const MAX_CLOCK_HINT_S: i128 = 300;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<ClientError>() {
                Some(ClientError::Api {
                    code,
                    server_time_ms: Some(server),
                    ..
                }) if code == "stale_request" => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| i128::try_from(d.as_millis()).unwrap_or(0));
                    let off_s = (now - i128::from(*server)) / 1000;
                    // The figure is unsigned (anyone on the path can write it), so it is
                    // only a hint, never a clock to set; and a plain answer does not prove
                    // the command did not run (PROTOCOL 4.3, 4.4).
                    let hint = if off_s.abs() <= MAX_CLOCK_HINT_S {
                        format!("this device's clock may be {off_s} s off the gateway's")
                    } else {
                        format!(
                            "the answer says this device's clock is {off_s} s off the gateway's, \
                             far more than clocks drift: distrust that figure"
                        )
                    };
                    eprintln!(
                        "edge-auth: {e}\n{hint} (an unsigned figure): check the clock against a \
                         trusted time source; an unsigned answer does not prove the command did \
                         not run, so make sure it did not before you send it again"
                    );
                }
                _ => eprintln!("edge-auth: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
