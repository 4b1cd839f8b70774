//! [`SlotWatch`]: fails a test whose Redis traffic would break on Redis Cluster.
//!
//! Redis Cluster (and sharded hosted Redis) runs a script on the node of its keys' hash
//! slot, so one script call must touch keys of one slot only. A single `redis-server`
//! does not check this (not even with `cluster-enabled`: a script without a `#!lua`
//! flags line may write a key of another slot there), so the watch reads the test
//! server's `MONITOR` feed, where every command a script runs follows the `EVAL` or
//! `EVALSHA` that started it, with its keys, and computes slots as Redis does: CRC16
//! (XMODEM) of the key's hash tag, modulo 16384.
//!
//! It also holds scripts to their `KEYS`: a script may derive a key only for an id it
//! found as it ran (a challenge, session record or projection: the layout prelude's
//! helpers); every other key it touches must be one its caller passed, as servers that
//! enforce declared keys require.
//!
//! Every [`crate::TestApp`] holds one; when it is dropped at the end of a test that
//! otherwise passed, it panics with every call that touched more than one slot, or a key
//! its caller knew and did not pass. After a
//! test restarts its server, the watch reconnects within about 50 ms: what is sent to the
//! new server before then goes unseen.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The marker [`SlotWatch`] sends to know it has read everything before it checks.
const END_MARKER: &str = "edge-auth-slot-watch-end";

/// Reads `MONITOR` of one `redis-server` until dropped; see the module docs.
#[derive(Debug)]
pub struct SlotWatch {
    port: u16,
    stop: Arc<AtomicBool>,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl SlotWatch {
    /// Starts watching the server on `127.0.0.1:<port>`, and returns once `MONITOR` is on.
    pub fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = {
            let stop = Arc::clone(&stop);
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || read_monitor(port, &stop, &lines, &ready_tx))
        };
        // The first connection is up before the test sends anything (later ones follow
        // a restarted server); a watch that never started would pass every test.
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("MONITOR did not start on port {port} within 5 s: {e}"));
        Self {
            port,
            stop,
            lines,
            reader: Some(reader),
        }
    }

    /// Every call seen so far that touched keys of more than one hash slot.
    pub fn violations(&self) -> Vec<String> {
        let lines = self.lines.lock().map(|l| l.clone()).unwrap_or_default();
        violations(&lines)
    }

    /// Waits (up to 10 s) until the feed has caught up with everything sent so far: it
    /// sends a marker and waits to read it back, sending it again every 200 ms in case
    /// the feed was still reconnecting to a restarted server when it went out.
    ///
    /// # Panics
    /// When the server answers but the feed never shows the marker: the watch would
    /// otherwise judge a test on part of its traffic.
    fn catch_up(&self) {
        let seen = || {
            self.lines
                .lock()
                .map(|l| l.iter().rev().any(|line| line.contains(END_MARKER)))
                .unwrap_or(true)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let Ok(mut conn) = TcpStream::connect(("127.0.0.1", self.port)) else {
                return; // The server is down: nothing more can arrive.
            };
            if conn
                .write_all(format!("ECHO {END_MARKER}\r\n").as_bytes())
                .is_err()
            {
                return; // It went down since: as above.
            }
            let resend = Instant::now() + Duration::from_millis(200);
            while Instant::now() < resend {
                if seen() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!(
            "the MONITOR feed of port {} did not catch up within 10 s",
            self.port
        );
    }
}

impl Drop for SlotWatch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.catch_up();
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        if std::thread::panicking() {
            return;
        }
        let found = self.violations();
        assert!(
            found.is_empty(),
            "{} Redis call(s) touched more than one hash slot (they would fail on Redis \
             Cluster):\n{}",
            found.len(),
            found.join("\n")
        );
        let lines = self.lines.lock().map(|l| l.clone()).unwrap_or_default();
        let stray = undeclared(&lines);
        assert!(
            stray.is_empty(),
            "{} script call(s) touched keys their caller knew but did not pass in KEYS:\n{}",
            stray.len(),
            stray.join("\n")
        );
    }
}

/// Reads the feed into `lines`, reconnecting after a server restart, until `stop`.
fn read_monitor(
    port: u16,
    stop: &AtomicBool,
    lines: &Mutex<Vec<String>>,
    ready: &std::sync::mpsc::Sender<()>,
) {
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
        if conn.write_all(b"MONITOR\r\n").is_err() {
            continue;
        }
        let mut reader = BufReader::new(conn);
        let mut line = String::new();
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            match reader.read_line(&mut line) {
                Ok(0) => break, // closed: the server stopped
                Ok(_) if line.ends_with('\n') => {
                    let text = line.trim_end().trim_start_matches('+');
                    if text == "OK" {
                        let _ = ready.send(());
                    } else if let Ok(mut all) = lines.lock() {
                        all.push(text.to_string());
                    }
                    line.clear();
                }
                // A partial line (read timed out mid-line): keep it and read on.
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
    }
}

/// One line of the feed: who sent it (`lua` for a script's own commands) and the words.
#[derive(Debug, PartialEq, Eq)]
struct Command {
    from_script: bool,
    words: Vec<String>,
}

/// Parses `1700000000.123456 [0 127.0.0.1:5555] "SET" "k" "v"`.
fn parse_line(line: &str) -> Option<Command> {
    let open = line.find('[')?;
    let close = open + line[open..].find(']')?;
    let source = &line[open + 1..close];
    let from_script = source.split_whitespace().nth(1) == Some("lua");
    let mut words = Vec::new();
    let mut chars = line[close + 1..].chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut word = Vec::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => word.push(b'\n'),
                    'r' => word.push(b'\r'),
                    't' => word.push(b'\t'),
                    'a' => word.push(7),
                    'b' => word.push(8),
                    'x' => {
                        let hex: String = [chars.next()?, chars.next()?].iter().collect();
                        word.push(u8::from_str_radix(&hex, 16).ok()?);
                    }
                    other => word.extend(other.to_string().as_bytes()),
                },
                other => word.extend(other.to_string().as_bytes()),
            }
        }
        words.push(String::from_utf8_lossy(&word).into_owned());
    }
    Some(Command { from_script, words })
}

/// The keys a command names, by Redis' key positions for the commands we send.
fn keys_of(words: &[String]) -> Vec<&str> {
    let Some(name) = words.first() else {
        return Vec::new();
    };
    let args = &words[1..];
    match name.to_ascii_uppercase().as_str() {
        "EVAL" | "EVALSHA" | "EVAL_RO" | "EVALSHA_RO" | "FCALL" | "FCALL_RO" => {
            let n: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(0);
            args.iter().skip(2).take(n).map(String::as_str).collect()
        }
        "DEL" | "UNLINK" | "EXISTS" | "TOUCH" | "MGET" | "WATCH" => {
            args.iter().map(String::as_str).collect()
        }
        "TIME" | "PING" | "ECHO" | "SELECT" | "INFO" | "SCRIPT" | "FLUSHALL" | "FLUSHDB"
        | "DBSIZE" | "MONITOR" | "CLIENT" | "CONFIG" | "COMMAND" | "SHUTDOWN" | "SAVE"
        | "HELLO" | "AUTH" | "QUIT" | "DEBUG" | "KEYS" | "SCAN" | "MULTI" | "EXEC" | "DISCARD"
        | "PUBLISH" => Vec::new(),
        _ => args.first().map(String::as_str).into_iter().collect(),
    }
}

/// Redis Cluster's hash slot of a key: CRC16 of its hash tag (the text between the first
/// `{` and the next `}`, when not empty), else of the whole key, modulo 16384.
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(bytes)) % 16384
}

/// CRC16-CCITT (XMODEM), the checksum Redis Cluster uses.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// One client command and what the script it started (if any) ran.
struct Call {
    /// The command, cut to 60 characters.
    what: String,
    /// The keys the client named (a script's `KEYS`).
    declared: Vec<String>,
    /// The keys the script's own commands touched.
    touched: Vec<String>,
}

/// Groups the feed into calls: a client command and the script commands after it.
fn calls(lines: &[String]) -> Vec<Call> {
    let mut calls: Vec<Call> = Vec::new();
    for command in lines.iter().filter_map(|l| parse_line(l)) {
        let keys = keys_of(&command.words).into_iter().map(str::to_string);
        if command.from_script {
            if let Some(call) = calls.last_mut() {
                call.touched.extend(keys);
            }
        } else {
            let mut what: String = command.words.join(" ").chars().take(60).collect();
            if what.len() == 60 {
                what.push('…');
            }
            calls.push(Call {
                what,
                declared: keys.collect(),
                touched: Vec::new(),
            });
        }
    }
    calls
}

/// Describes each call whose keys span more than one slot.
fn violations(lines: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for call in calls(lines) {
        let keys: Vec<&String> = call.declared.iter().chain(&call.touched).collect();
        let slots: BTreeSet<u16> = keys.iter().map(|k| key_slot(k)).collect();
        if slots.len() > 1 {
            found.push(format!("  {}: keys {keys:?} in slots {slots:?}", call.what));
        }
    }
    found
}

/// The id of a key a script may derive itself, with the layout prelude's helpers
/// (`keys.rs`): a challenge, session record or gateway projection of one address.
fn derived_id(key: &str) -> Option<&str> {
    let (_, rest) = key.strip_prefix("ea:{a:")?.split_once("}:")?;
    ["ch:", "s:", "gw:"]
        .iter()
        .find_map(|kind| rest.strip_prefix(kind))
        // An id has no `:`; `gw:<id>:streams` is a key of its own, never derived.
        .filter(|id| !id.contains(':'))
}

/// Describes each script call that touched a key it was not given in `KEYS`, except the
/// challenge, record or projection of an id none of its `KEYS` names (one the script
/// found as it ran, which its caller could not know). Servers that hold scripts to their
/// declared keys (Dragonfly by default, kvrocks in strict mode) refuse the others.
fn undeclared(lines: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for call in calls(lines) {
        let named = |id: &str| call.declared.iter().any(|k| derived_id(k) == Some(id));
        let stray: BTreeSet<&String> = call
            .touched
            .iter()
            .filter(|key| !call.declared.contains(key))
            .filter(|key| derived_id(key).is_none_or(named))
            .collect();
        if !stray.is_empty() {
            found.push(format!(
                "  {}: touched {stray:?}, not in its KEYS {:?}",
                call.what, call.declared
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_computed_as_redis_cluster_does() {
        assert_eq!(crc16(b"123456789"), 0x31C3, "the XMODEM check value");
        assert_eq!(key_slot("foo"), 12182, "CLUSTER KEYSLOT foo");
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        // The three tag rules of the cluster spec, with the slots a cluster-enabled
        // redis-server 7 gives for them (`CLUSTER KEYSLOT`).
        assert_eq!(key_slot("foo{}{bar}"), 8363, "an empty tag hashes it all");
        assert_eq!(key_slot("foo{{bar}}zap"), 4015, "the tag is `{{bar`");
        assert_eq!(key_slot("foo{bar}{zap}"), 5061, "the first tag counts");
        assert_eq!(key_slot("foo{bar}{zap}"), key_slot("bar"));
        assert_eq!(key_slot("ea:{a:0123}:ch:x"), key_slot("ea:{a:0123}:latest"));
    }

    #[test]
    fn a_script_touching_two_slots_is_reported_and_one_slot_is_not() {
        let feed = [
            r#"1.0 [0 127.0.0.1:1] "EVALSHA" "abc" "1" "ea:{a:01}:x""#,
            r#"1.1 [0 lua] "SET" "ea:{a:01}:x" "v""#,
            r#"1.2 [0 lua] "TIME""#,
            r#"2.0 [0 127.0.0.1:1] "EVAL" "script" "1" "ea:{a:01}:x" "arg""#,
            r#"2.1 [0 lua] "HSET" "ea:{a:02}:y" "f" "v""#,
            r#"3.0 [0 127.0.0.1:2] "DEL" "a" "b""#,
            r#"4.0 [0 127.0.0.1:2] "GET" "a""#,
        ]
        .map(str::to_string);
        let found = violations(&feed);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found[0].contains("EVAL script"), "{found:#?}");
        assert!(found[1].contains("DEL a b"), "{found:#?}");
    }

    #[test]
    fn a_script_touching_a_key_its_caller_knew_but_did_not_pass_is_reported() {
        let feed = [
            // Given the record, it touches the same session's projection: reported.
            r#"1.0 [0 127.0.0.1:1] "EVALSHA" "abc" "2" "ea:{a:01}:s:s_1" "ea:{a:01}:active" "x""#,
            r#"1.1 [0 lua] "HGET" "ea:{a:01}:s:s_1" "status""#,
            r#"1.2 [0 lua] "HSET" "ea:{a:01}:gw:s_1" "status" "revoked""#,
            // A session and a challenge it found as it ran: not reported.
            r#"2.0 [0 127.0.0.1:1] "EVALSHA" "abc" "1" "ea:{a:01}:active""#,
            r#"2.1 [0 lua] "ZRANGE" "ea:{a:01}:active" "0" "-1""#,
            r#"2.2 [0 lua] "HSET" "ea:{a:01}:s:s_2" "status" "revoked""#,
            r#"2.3 [0 lua] "HSET" "ea:{a:01}:gw:s_2" "status" "revoked""#,
            r#"2.4 [0 lua] "HGET" "ea:{a:01}:ch:c_9" "state""#,
            // Any other key it was not given: reported (a key under a session's too).
            r#"3.0 [0 127.0.0.1:1] "EVAL" "script" "1" "ea:{a:01}:active""#,
            r#"3.1 [0 lua] "INCR" "ea:{a:01}:other""#,
            r#"3.2 [0 lua] "TIME""#,
            r#"3.3 [0 lua] "ZCARD" "ea:{a:01}:gw:s_3:streams""#,
            r#"4.0 [0 127.0.0.1:2] "GET" "ea:{a:01}:latest""#,
        ]
        .map(str::to_string);
        let found = undeclared(&feed);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found[0].contains(r#"{"ea:{a:01}:gw:s_1"}"#), "{found:#?}");
        assert!(
            found[1].contains(r#"{"ea:{a:01}:gw:s_3:streams", "ea:{a:01}:other"}"#),
            "{found:#?}"
        );
    }

    #[test]
    fn quoted_words_are_unescaped() {
        let command = parse_line(r#"1.0 [0 unix:/tmp/s] "SET" "a\"b" "\x01\\n""#).expect("parses");
        assert_eq!(command.words, ["SET", "a\"b", "\u{1}\\n"]);
        assert!(!command.from_script);
    }
}
