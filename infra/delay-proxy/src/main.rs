//! `delay-proxy LISTEN UPSTREAM RTT_MS`: proxies TCP from LISTEN to UPSTREAM, adding
//! RTT_MS to every round trip (half each way). Benchmark tooling only.

use std::time::Duration;

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream, rtt_ms] = args.as_slice() else {
        anyhow::bail!("usage: delay-proxy LISTEN_ADDR UPSTREAM_ADDR RTT_MS");
    };
    let rtt: u64 = rtt_ms
        .parse()
        .context("RTT_MS must be a whole number of ms")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let upstream = upstream.parse().context("UPSTREAM_ADDR must be ip:port")?;
    eprintln!("delay-proxy: {listen} -> {upstream}, +{rtt} ms per round trip");
    delay_proxy::serve(listener, upstream, Duration::from_micros(rtt * 500)).await
}
