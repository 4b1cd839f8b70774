//! A TCP proxy that adds a fixed delay to each direction, so that a local Redis behaves
//! like a hosted one a network round trip away (`infra/bench --redis-rtt-ms N`). The
//! kernel here has no `netem` qdisc and toxiproxy is not packaged, hence this.
//!
//! Each direction is a pipeline: bytes are read as they come, stamped, and written out
//! once their delay has passed, so the delay is added to every round trip without
//! limiting throughput (a request sent while another is in flight is not held behind it).
//!
//! # Layout
//! - [`serve`]: accepts connections and proxies each one;
//! - `main.rs`: the command line (`delay-proxy LISTEN UPSTREAM RTT_MS`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Proxies every connection accepted on `listener` to `upstream`, delaying each
/// direction by `one_way` (half the round trip it adds).
///
/// # Errors
/// Accepting failed; single connections that fail are dropped.
pub async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    one_way: Duration,
) -> anyhow::Result<()> {
    let lateness = Arc::new(Lateness::default());
    loop {
        let (client, _) = listener.accept().await.context("accepting a connection")?;
        let lateness = lateness.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::join!(
                pipe(client_read, server_write, one_way, lateness.clone()),
                pipe(server_read, client_write, one_way, lateness),
            );
        });
    }
}

/// How late a proxy's waits have woken, on average: each wait aims that much early.
#[derive(Debug, Default)]
struct Lateness {
    average_ns: AtomicU64,
}

/// A wait counts at most this late toward the average, so one stall (a descheduled
/// thread) cannot make the waits after it aim so early that the delay is gone: no wait
/// aims more than this before its time.
const MAX_LATENESS: Duration = Duration::from_micros(200);

impl Lateness {
    /// Waits until `due`, to within tens of microseconds on average. Tokio's timer counts
    /// whole milliseconds and rounds a wait up (half of a 1 ms round trip took up to 1.5
    /// ms), so the wait is an OS thread's sleep on tokio's pool of blocking threads, aimed
    /// early by how late such waits have woken (handing a wait to a thread and waking it
    /// take time).
    async fn wait_until(&self, due: Instant) {
        let early = Duration::from_nanos(self.average_ns.load(Ordering::Relaxed));
        let aim = due.checked_sub(early).unwrap_or(due);
        let now = Instant::now();
        if aim <= now {
            return;
        }
        // A sleep cut short by a pool that is shutting down only sends the bytes sooner.
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(aim - now)).await;
        let late = Instant::now()
            .saturating_duration_since(aim)
            .min(MAX_LATENESS);
        let late = u64::try_from(late.as_nanos()).unwrap_or(0);
        // An average over the last few dozen waits.
        let old = self.average_ns.load(Ordering::Relaxed);
        self.average_ns
            .store(old - old / 32 + late / 32, Ordering::Relaxed);
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read.
async fn pipe(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin + Send + 'static,
    delay: Duration,
    lateness: Arc<Lateness>,
) {
    let (sender, mut receiver) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((read_at, chunk)) = receiver.recv().await {
            lateness.wait_until(read_at + delay).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if sender.send((Instant::now(), buffer[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(sender);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server: what it reads, it writes back.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    /// The median of `tries` ping-pongs through `addr`.
    async fn median_round_trip(addr: SocketAddr, tries: usize) -> Duration {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut times = Vec::with_capacity(tries);
        for _ in 0..tries {
            let started = std::time::Instant::now();
            stream.write_all(b"ping").await.expect("write");
            let mut buf = [0u8; 4];
            stream.read_exact(&mut buf).await.expect("read");
            times.push(started.elapsed());
        }
        times.sort();
        times[tries / 2]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_bench_round_trips_of_one_to_five_ms_are_added_as_claimed() {
        // Review finding: tokio's timer counts whole milliseconds and rounds a wait up, so
        // half of 1 ms each way added about 2 ms to a round trip.
        let upstream = echo_server().await;
        let direct = median_round_trip(upstream, 41).await;
        for rtt_us in [0_u32, 1_000, 2_000, 5_000] {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let proxy = listener.local_addr().expect("addr");
            tokio::spawn(serve(
                listener,
                upstream,
                Duration::from_micros(u64::from(rtt_us / 2)),
            ));
            // Within 0.4 ms: below, two waits (one each way) that each woke up to 0.2 ms
            // early (`MAX_LATENESS`); above, the proxy's own hop. A machine busy with
            // other work delays every wake-up: one of three medians must be in range.
            let claimed = i128::from(rtt_us);
            let mut medians = Vec::new();
            for _ in 0..3 {
                let added = median_round_trip(proxy, 41).await.as_micros();
                let added = i128::try_from(added).unwrap_or(i128::MAX)
                    - i128::try_from(direct.as_micros()).unwrap_or(0);
                medians.push(added);
                if (claimed - 400..claimed + 400).contains(&added) {
                    break;
                }
            }
            assert!(
                medians
                    .iter()
                    .any(|added| (claimed - 400..claimed + 400).contains(added)),
                "{rtt_us} us claimed; added (medians of 41): {medians:?} us"
            );
        }
    }

    #[tokio::test]
    async fn the_proxy_adds_the_round_trip_it_claims_and_no_more() {
        let upstream = echo_server().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let proxy = listener.local_addr().expect("addr");
        tokio::spawn(serve(listener, upstream, Duration::from_millis(10)));

        let direct = median_round_trip(upstream, 5).await;
        let proxied = median_round_trip(proxy, 5).await;
        let added = proxied.saturating_sub(direct);
        // Each of the two waits may wake up to 0.2 ms early (see `MAX_LATENESS`).
        assert!(
            added >= Duration::from_micros(19_600),
            "added only {added:?}"
        );
        assert!(
            added < Duration::from_millis(25),
            "added {added:?}, not about 20 ms"
        );
    }

    #[tokio::test]
    async fn requests_in_flight_are_not_held_behind_each_other() {
        let upstream = echo_server().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let proxy = listener.local_addr().expect("addr");
        tokio::spawn(serve(listener, upstream, Duration::from_millis(25)));

        // Ten pipelined pings: with a pipeline they take about one round trip, not ten.
        let mut stream = TcpStream::connect(proxy).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let started = std::time::Instant::now();
        for _ in 0..10 {
            stream.write_all(b"ping").await.expect("write");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut buf = [0u8; 40];
        stream.read_exact(&mut buf).await.expect("read");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(50), "{took:?}");
        assert!(
            took < Duration::from_millis(150),
            "{took:?}: held behind each other"
        );
    }
}
