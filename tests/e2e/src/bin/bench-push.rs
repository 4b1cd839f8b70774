//! `bench-push`: push streams under load, on the runtime the harness selects
//! (`EDGE_AUTH_TEST_RUNTIME=spin` for real Spin). Prints figures; asserts nothing.
//!
//! 1. Logs in `BENCH_SUBSCRIBERS` devices (default 200), one user each, and opens one
//!    stream per device; the runtime's resident memory before and after gives the memory
//!    per subscriber (our host runs inside this process, so its figure includes the
//!    benchmark's own client side; Spin's is its process tree alone).
//! 2. Publishes `BENCH_EVENTS` events (default 200) to random users, one at a time, and
//!    times publish call → event received.
//! 3. Meanwhile drives `GET /api/v1/health` and send + confirm logins with 8 connections
//!    for a few seconds: their p50/p99 with every stream open.
//! 4. Revokes `BENCH_REVOKES` sessions (default 50) one at a time and times revoke call →
//!    terminal event received, against the 1 s goal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge_auth_tests::{Device, RuntimeKind, SELECTED_RUNTIME, Spawn, TestApp};
use serde_json::json;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory (KiB) of `pid` and every process below it.
fn tree_rss_kib(pid: u32) -> u64 {
    let mut parents: HashMap<u32, u32> = HashMap::new();
    let mut rss: HashMap<u32, u64> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{p}/status")) else {
            continue;
        };
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("PPid:") {
                parents.insert(p, v.trim().parse().unwrap_or(0));
            }
            if let Some(v) = line.strip_prefix("VmRSS:") {
                rss.insert(
                    p,
                    v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0),
                );
            }
        }
    }
    let in_tree = |mut p: u32| loop {
        if p == pid {
            return true;
        }
        match parents.get(&p) {
            Some(&parent) if parent > 1 => p = parent,
            _ => return false,
        }
    };
    rss.iter()
        .filter(|(p, _)| in_tree(**p))
        .map(|(_, k)| k)
        .sum()
}

fn runtime_rss_kib(app: &TestApp) -> u64 {
    match &app.runtime {
        edge_auth_tests::Runtime::Spin(spin) => tree_rss_kib(spin.pid()),
        edge_auth_tests::Runtime::Host(_) => tree_rss_kib(std::process::id()),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<34} n={:<5} p50 {:>8.1} ms   p99 {:>8.1} ms   max {:>8.1} ms",
        samples.len(),
        percentile(&samples, 50.0).as_secs_f64() * 1000.0,
        percentile(&samples, 99.0).as_secs_f64() * 1000.0,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
    );
}

/// What each stream saw: event id → when, and when it ended.
#[derive(Default)]
struct Seen {
    events: HashMap<String, Instant>,
    ended: Option<Instant>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let subscribers = env_usize("BENCH_SUBSCRIBERS", 200);
    let events = env_usize("BENCH_EVENTS", 200);
    let revokes = env_usize("BENCH_REVOKES", 50).min(subscribers);
    let app = Arc::new(
        Spawn::default()
            .variable("resend_interval_seconds", "0")
            .variable("rate_limit_per_client", "1000000/1")
            .variable("rate_limit_per_address", "1000000/1")
            .variable("command_rate_limit_per_client", "1000000/1")
            .variable("push_max_duration_seconds", "600")
            .variable("push_heartbeat_seconds", "10")
            .spawn()
            .await,
    );
    let runtime = match SELECTED_RUNTIME {
        RuntimeKind::Host => "our host",
        RuntimeKind::Spin => "Spin",
    };
    println!("== push streams on {runtime}: {subscribers} subscribers ==");

    let mut devices: Vec<(Device, String)> = Vec::with_capacity(subscribers);
    for n in 0..subscribers {
        let device = app.device(&format!("bench{n}@example.com"), 1).await;
        let user = app.get_session(&device.session).await.field("user_id");
        devices.push((device, user));
    }
    // Warm every component once, then measure the idle runtime.
    let _ = app.get_health().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = runtime_rss_kib(&app);

    let seen: Vec<Arc<Mutex<Seen>>> = (0..subscribers).map(|_| Arc::default()).collect();
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(subscribers);
    for (i, (device, _)) in devices.iter().enumerate() {
        let app = app.clone();
        let device = device.clone();
        let seen = seen[i].clone();
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(mut stream) = app.subscribe(&device, None).await else {
                eprintln!("a stream did not open");
                let _ = ready.send(()).await;
                return;
            };
            let _hello = stream.next(Duration::from_secs(60)).await;
            let _ = ready.send(()).await;
            while let Some(event) = stream.next(Duration::from_secs(600)).await {
                let mut s = seen.lock().expect("lock");
                if event.event == "gateway.stream_end" {
                    s.ended = Some(Instant::now());
                    break;
                }
                s.events
                    .insert(event.signed.envelope.event_id.clone(), Instant::now());
            }
        }));
    }
    for _ in 0..subscribers {
        ready_rx.recv().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = runtime_rss_kib(&app);
    println!(
        "runtime resident memory: {:.1} MB idle, {:.1} MB with {subscribers} streams: {:.2} MB per subscriber",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / 1024.0 / subscribers as f64
    );

    // Other routes under this load, while events are published.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..8 {
        let app = app.clone();
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let (mut health, mut confirm) = (Vec::new(), Vec::new());
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let _ = app.get_health().await;
                health.push(t.elapsed());
                let email = format!("load{worker}-{n}@example.com");
                n += 1;
                let challenge = app.new_challenge(&email).await;
                let code = app.mailed_code(&challenge).await;
                let t = Instant::now();
                let key = edge_auth_tests::device_key(7);
                let _ = app.confirm_email_code(&challenge, &code, &key).await;
                confirm.push(t.elapsed());
            }
            (health, confirm)
        }));
    }

    let mut publish_latency = Vec::new();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..events {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let target = usize::try_from(rng % subscribers as u64).unwrap_or(0);
        let (_, user) = &devices[target];
        let started = Instant::now();
        let published = app
            .publish(&json!({"user_id": user, "event_type": "bench", "payload": {"at": 1}}))
            .await;
        let id = published.field("event_id");
        let deadline = started + Duration::from_secs(10);
        loop {
            if let Some(at) = seen[target].lock().expect("lock").events.get(&id) {
                publish_latency.push(at.duration_since(started));
                break;
            }
            if Instant::now() > deadline {
                eprintln!("event {id} not received within 10 s");
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut health, mut confirm) = (Vec::new(), Vec::new());
    for worker in load {
        let (h, c) = worker.await?;
        health.extend(h);
        confirm.extend(c);
    }
    summary("publish -> received", publish_latency);
    summary("health, with the streams open", health);
    summary("confirm, with the streams open", confirm);

    let mut revoke_latency = Vec::new();
    for (i, (device, _)) in devices.iter().enumerate().take(revokes) {
        let started = Instant::now();
        let _ = app
            .revoke_session(
                &device.session,
                &json!({"reason_code": "bench", "actor": "admin:bench"}),
            )
            .await;
        let deadline = started + Duration::from_secs(10);
        loop {
            if let Some(at) = seen[i].lock().expect("lock").ended {
                revoke_latency.push(at.duration_since(started));
                break;
            }
            if Instant::now() > deadline {
                eprintln!("stream {i} did not end within 10 s of its revocation");
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    summary("revoke -> terminal event (goal 1 s)", revoke_latency);
    for task in tasks {
        task.abort();
    }
    Ok(())
}
