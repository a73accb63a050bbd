//! steward-pingora's example proxy as a user who keeps `server.run_forever()` writes it:
//! `steward_pingora::install`, the proxy service made by the `Steward`, and Pingora's own
//! `run_forever()` instead of `steward.run(server)`. The library's fallback ends it: a
//! thread that exits once the drain is over.
//!
//! Environment: `LISTEN`, `UPSTREAM`, `HEALTH`, as for the example.

use pingora::prelude::*;
use steward_e2e::FixedUpstream;

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let env = |key: &str, default: &str| std::env::var(key).unwrap_or_else(|_| default.into());
    let mut server = Server::new(Some(Opt::parse_args()))?;
    server.bootstrap();
    let steward = steward_pingora::install(
        &mut server,
        steward_pingora::Settings::health(env("HEALTH", "127.0.0.1:6190")),
    )?;
    let upstream = env("UPSTREAM", "127.0.0.1:6189");
    let mut proxy = steward.http_proxy_service(&server.configuration, FixedUpstream { upstream });
    proxy.add_tcp(&env("LISTEN", "127.0.0.1:6188"));
    server.add_service(proxy);
    server.run_forever();
}
