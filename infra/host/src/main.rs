//! `edge-auth-host`: serve a `spin.toml` like `spin up`, when the Spin CLI is absent.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use edge_auth_host::{HostOptions, start};

const USAGE: &str = "\
usage: edge-auth-host [--from spin.toml] [--listen 127.0.0.1:3000] [--variable k=v]...
                      [--expose-redis-round-trips] [--redis-rest-origin URL]

Serves the HTTP components of a Spin manifest as Spin 4 does. Variables come from
--variable, SPIN_VARIABLE_<NAME> in the environment, ./.env, then manifest defaults.";

fn parse_args() -> anyhow::Result<HostOptions> {
    let mut options = HostOptions::new("spin.toml");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-f" | "--from" | "--manifest" => options.manifest = PathBuf::from(value(&arg)?),
            "--listen" => {
                let text = value("--listen")?;
                options.listen = text.parse::<SocketAddr>().with_context(|| {
                    format!("--listen {text}: not an address like 127.0.0.1:3000")
                })?;
            }
            "--variable" => {
                let pair = value("--variable")?;
                let Some((k, v)) = pair.split_once('=') else {
                    // Not echoed: a value given without its key is a secret as often
                    // as not.
                    bail!("--variable: expected key=value (the argument is not shown)");
                };
                options.variables.insert(k.to_string(), v.to_string());
            }
            "--expose-redis-round-trips" => options.expose_redis_round_trips = true,
            "--redis-rest-origin" => {
                options.redis_rest_origin = Some(value("--redis-rest-origin")?);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    Ok(options)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let options = parse_args()?;
    let mut host = start(options).await?;
    println!("Serving {}", host.url());
    println!("Available Routes:");
    for (route, target) in host.routes() {
        println!("  {target}: {}{route}", host.url());
    }
    shutdown_signal().await;
    eprintln!("Shutting down...");
    host.shutdown().await;
    Ok(())
}
