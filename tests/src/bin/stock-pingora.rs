//! A stock Pingora reverse proxy that knows nothing of Steward: `Opt::parse_args()`,
//! `Server::new`, one proxy service, `run_forever()`. It sleeps out its grace period on
//! SIGTERM like any Pingora 0.9.1 server, which is what steward must cope with.
//!
//! Environment (tests set it on steward, the child inherits it):
//! `STOCK_LISTEN` (default 127.0.0.1:6288), `STOCK_UPSTREAM` (default 127.0.0.1:6289).

use pingora::prelude::*;
use steward_e2e::FixedUpstream;

fn main() {
    let listen = std::env::var("STOCK_LISTEN").unwrap_or_else(|_| "127.0.0.1:6288".into());
    let upstream = std::env::var("STOCK_UPSTREAM").unwrap_or_else(|_| "127.0.0.1:6289".into());
    let mut server = Server::new(Some(Opt::parse_args())).expect("server");
    server.bootstrap();
    let mut proxy =
        pingora::proxy::http_proxy_service(&server.configuration, FixedUpstream { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
