//! `upstash-rest <listen> <redis-url>`: the Upstash REST test server
//! (this crate's library) as a process, for the benchmark. The token is
//! `UPSTASH_REST_TOKEN` from the environment (required).

use anyhow::Context;
use upstash_rest::UpstashRest;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(redis_url)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: upstash-rest <listen address> <redis url>");
    };
    let token = std::env::var("UPSTASH_REST_TOKEN").context("UPSTASH_REST_TOKEN is not set")?;
    let listen = listen
        .parse()
        .with_context(|| format!("{listen}: not an address like 127.0.0.1:8080"))?;
    let server = UpstashRest::serve(&redis_url, listen, &token).await?;
    println!("Serving {}", server.url());
    std::future::pending::<()>().await;
    Ok(())
}
