//! `steward-proxy`: a Pingora reverse proxy that stops well.
//!
//! It takes Pingora's standard flags (`-c`, `-u`, `-t`, `-d`) plus `--proxy-config` for
//! its own settings (listeners, upstreams, health endpoint, demo origin). On SIGTERM it
//! turns `/health` to 503, stops accepting, and exits as soon as its last request is done
//! instead of sleeping out Pingora's grace period, which still bounds the drain. All of
//! that is the `steward-pingora` crate, which any Pingora binary can use the same way.

mod origin;
mod proxy;
mod settings;

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use pingora::lb::LoadBalancer;
use pingora::server::configuration::Opt;
use pingora::server::Server;

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

    // The drain, the graceful keep-alive close and /health: steward-pingora, as any user's
    // Pingora binary would have them.
    let steward = match steward_pingora::install(
        &mut server,
        steward_pingora::Settings::health(settings.health.listen.clone()),
    ) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("configuration error: {e}");
            std::process::exit(EX_CONFIG);
        }
    };
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
    let mut proxy = steward.service(
        "steward-proxy",
        pingora::proxy::http_proxy(&server.configuration, proxy::Proxy { upstreams }),
    );
    for addr in &settings.listen {
        proxy.add_tcp(addr);
    }
    server.add_service(proxy);
    if let Some(o) = &settings.origin {
        let mut svc = steward.service("demo origin", origin::Origin);
        svc.add_tcp(&o.listen);
        server.add_service(svc);
    }
    tracing::info!(
        listen = ?settings.listen,
        upstreams = ?settings.upstreams,
        "steward-proxy pid {} starting",
        std::process::id()
    );
    steward.run(server);
    // `run` returned: drained (or stopped by SIGINT); main returns, so the process ends
    // as any program does.
    tracing::info!("steward-proxy pid {} stopped", std::process::id());
}
