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
    loop {
        let (client, _) = listener.accept().await.context("accepting a connection")?;
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::join!(
                pipe(client_read, server_write, one_way),
                pipe(server_read, client_write, one_way),
            );
        });
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read.
async fn pipe(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin + Send + 'static,
    delay: Duration,
) {
    let (sender, mut receiver) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((read_at, chunk)) = receiver.recv().await {
            tokio::time::sleep_until(read_at + delay).await;
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

    /// The fastest of `tries` ping-pongs through `addr`.
    async fn best_round_trip(addr: SocketAddr, tries: u32) -> Duration {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut best = Duration::MAX;
        for _ in 0..tries {
            let started = std::time::Instant::now();
            stream.write_all(b"ping").await.expect("write");
            let mut buf = [0u8; 4];
            stream.read_exact(&mut buf).await.expect("read");
            best = best.min(started.elapsed());
        }
        best
    }

    #[tokio::test]
    async fn the_proxy_adds_the_round_trip_it_claims_and_no_more() {
        let upstream = echo_server().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let proxy = listener.local_addr().expect("addr");
        tokio::spawn(serve(listener, upstream, Duration::from_millis(10)));

        let direct = best_round_trip(upstream, 5).await;
        let proxied = best_round_trip(proxy, 5).await;
        let added = proxied.saturating_sub(direct);
        assert!(added >= Duration::from_millis(20), "added only {added:?}");
        assert!(
            added < Duration::from_millis(35),
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
