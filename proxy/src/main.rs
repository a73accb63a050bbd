//! `steward-proxy`: a Pingora reverse proxy that stops well.
//!
//! It takes Pingora's standard flags (`-c`, `-u`, `-t`, `-d`) plus `--proxy-config` for
//! its own settings (listeners, upstreams, health endpoint, demo origin). On SIGTERM it
//! turns `/health` to 503, stops accepting, and exits as soon as its last request is done
//! instead of sleeping out Pingora's grace period, which still bounds the drain.

mod drain;
mod health;
mod origin;
mod proxy;
mod settings;

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use pingora::lb::LoadBalancer;
use pingora::server::configuration::Opt;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

/// Configuration errors exit with EX_CONFIG, like steward.
const EX_CONFIG: i32 = 78;

#[derive(Debug, Parser)]
#[command(
    name = "steward-proxy",
    version,
    about = "A Pingora reverse proxy that drains and exits as soon as its last request is done."
)]
struct Cli {
    /// steward-proxy's own settings: listeners, upstreams, health endpoint, demo origin.
    #[arg(long, default_value = settings::DEFAULT_PATH)]
    proxy_config: PathBuf,
    #[command(flatten)]
    pingora: Opt,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STEWARD_PROXY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let settings = match settings::Settings::load(&cli.proxy_config) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("configuration error: {e}");
            std::process::exit(EX_CONFIG);
        }
    };
    let mut server = match Server::new(Some(cli.pingora)) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("configuration error: Pingora conf: {e}");
            std::process::exit(EX_CONFIG);
        }
    };
    server.bootstrap();

    let state = Arc::new(drain::State::default());
    state.set_ports(
        settings
            .listen
            .iter()
            .chain(settings.origin.iter().map(|o| &o.listen))
            .filter_map(|a| a.rsplit_once(':').and_then(|(_, p)| p.parse().ok())),
    );
    let upstreams = match LoadBalancer::try_from_iter(settings.upstreams.iter().map(String::as_str))
    {
        Ok(lb) => Arc::new(lb),
        Err(e) => {
            tracing::error!(
                "configuration error: upstreams {:?}: {e}",
                settings.upstreams
            );
            std::process::exit(EX_CONFIG);
        }
    };
    let app = pingora::proxy::http_proxy(
        &server.configuration,
        proxy::Proxy {
            upstreams,
            state: state.clone(),
        },
    );
    let mut proxy = Service::new(
        "steward-proxy".to_string(),
        proxy::DelayedCleanup(Arc::new(app)),
    );
    for addr in &settings.listen {
        proxy.add_tcp(addr);
    }
    server.add_service(proxy);
    if let Some(o) = &settings.origin {
        let mut svc = Service::new(
            "demo origin".to_string(),
            origin::Origin {
                state: state.clone(),
            },
        );
        svc.add_tcp(&o.listen);
        server.add_service(svc);
    }
    server.add_service(background_service(
        "health",
        health::Health {
            listen: settings.health.listen.clone(),
            state: state.clone(),
        },
    ));
    tracing::info!(
        listen = ?settings.listen,
        upstreams = ?settings.upstreams,
        "steward-proxy pid {} starting",
        std::process::id()
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(drain::Signals { state }),
    });
    tracing::info!("grace period over; exiting");
    std::process::exit(0);
}
