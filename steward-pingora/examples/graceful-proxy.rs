//! A user's ordinary Pingora reverse proxy, plus the one line of steward-pingora.
//!
//! It is `tests/src/bin/stock-pingora.rs` (a stock Pingora server: `Opt::parse_args()`,
//! `Server::new`, one proxy service, `run_forever()`) with `steward_pingora::install` after
//! `bootstrap()`, the proxy service made by the `Steward` it returns, and `steward.run(server)`
//! in place of `run_forever()`. It takes Pingora's usual flags (`-c`, `-u`, `-t`, `-d`).
//!
//! Once stopped it says so on stderr and `main` returns.
//!
//! Environment: `LISTEN` (default 127.0.0.1:6188), `UPSTREAM` (default 127.0.0.1:6189),
//! `HEALTH` (default 127.0.0.1:6190).

use async_trait::async_trait;
use pingora::prelude::*;

struct MyProxy {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for MyProxy {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let env = |key: &str, default: &str| std::env::var(key).unwrap_or_else(|_| default.into());
    let listen = env("LISTEN", "127.0.0.1:6188");
    let upstream = env("UPSTREAM", "127.0.0.1:6189");
    let mut server = Server::new(Some(Opt::parse_args()))?;
    server.bootstrap();
    let steward = steward_pingora::install(
        &mut server,
        steward_pingora::Settings::health(env("HEALTH", "127.0.0.1:6190")),
    )?;
    let mut proxy = steward.http_proxy_service(&server.configuration, MyProxy { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    steward.run(server);
    eprintln!("graceful-proxy pid {}: stopped", std::process::id());
    Ok(())
}
