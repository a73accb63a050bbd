//! Makes a [Pingora](https://github.com/cloudflare/pingora) 0.9.1 server stop well.
//!
//! A stock Pingora server, on SIGTERM, closes its listeners, drops every keep-alive
//! connection waiting for its next request at once (a client writing to one right then
//! gets an error), and then sleeps out `grace_period_seconds` however little is left to
//! do. With this crate the same server:
//!
//! - ends the moment its last connection is done after SIGTERM, instead of sleeping out the
//!   grace period (which still bounds the drain): [`Steward::run`] returns, so `main`
//!   returns and the process ends as any program does, destructors and Pingora's runtime
//!   shutdown included;
//! - closes keep-alive connections gracefully: a request arriving after SIGTERM is served
//!   and its response carries `Connection: close`, and connections still idle are closed
//!   [`CLEANUP_DELAY`] after the listeners close, not at once;
//! - answers `GET /health` on an address of its own: 200 while serving, 503 once draining,
//!   with an `X-Served-By-Pid` header naming the process. The next generation of a reload
//!   binds the same port (SO_REUSEPORT); a draining process that sees it there leaves the
//!   port to it, so a health check during the reload never reaches the process going away.
//! - under steward with `child.handoff = "inherit"`, listens on the sockets steward passed
//!   at exec ([`LISTENERS_ENV`]) instead of waiting for them on Pingora's upgrade socket,
//!   whose receiver polls once a second: each generation serves within milliseconds.
//!
//! It does nothing else with systemd: no `sd_notify`, no socket activation. Run the server under
//! [steward](https://docs.rs/steward) for that, or alone: `systemctl stop` of such a
//! server ends at its last request too.
//!
//! # Use
//!
//! One call on the [`Server`] after `bootstrap()`, the proxy service made by the returned
//! [`Steward`] in place of [`pingora::proxy::http_proxy_service`], and
//! [`steward.run(server)`](Steward::run) in place of `server.run_forever()`:
//!
//! ```no_run
//! use async_trait::async_trait;
//! use pingora::prelude::*;
//!
//! struct MyProxy;
//!
//! #[async_trait]
//! impl ProxyHttp for MyProxy {
//!     type CTX = ();
//!     fn new_ctx(&self) {}
//!
//!     async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
//!         Ok(Box::new(HttpPeer::new("127.0.0.1:8080", false, String::new())))
//!     }
//! }
//!
//! fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
//!     let mut server = Server::new(Some(Opt::parse_args()))?;
//!     server.bootstrap();
//!     // The one line:
//!     let steward = steward_pingora::install(&mut server, steward_pingora::Settings::health("127.0.0.1:6190"))?;
//!     let mut proxy = steward.http_proxy_service(&server.configuration, MyProxy);
//!     proxy.add_tcp("127.0.0.1:6188");
//!     server.add_service(proxy);
//!     steward.run(server);
//!     Ok(())
//! }
//! ```
//!
//! A server started with Pingora's own `server.run_forever()` still drains and ends at its
//! last connection, but there Pingora would sleep out its grace period after the drain and
//! gives the library no place to wait instead: a thread of the library ends the process
//! with `exit(0)`, which skips destructors, buffered output and Pingora's runtime shutdown.
//! Call `steward.run(server)` for the clean path.
//!
//! Pingora 0.9.1 gives no access to a service once it has been added to the server, so the
//! services whose connections must be counted and closed gracefully are made through the
//! [`Steward`]: [`Steward::http_proxy_service`] for a proxy, [`Steward::service`] for any
//! other app. A service added to the server directly is served as Pingora serves it, and
//! its connections do not hold the drain: the process may exit while it still has some.
//!
//! A complete program is `examples/graceful-proxy.rs` in the crate.

#![deny(missing_docs)]

mod drain;
#[doc(hidden)]
pub use drain::poll_cost as drain_poll_cost;
mod graceful;
mod health;
mod inherit;
mod listening;
mod run;
mod signal;

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::proxy::{HttpProxy, ProxyHttp};
use pingora::server::configuration::ServerConf;
use pingora::server::{ListenFds, Server, ShutdownWatch};
use pingora::services::listening::Service;
use pingora::services::Service as ServiceTrait;

use inherit::Inherited;

pub use graceful::{Graceful, CLEANUP_DELAY};
pub use inherit::{InheritError, LISTENERS_ENV, REPORT_ENV};
pub use listening::StewardService;

/// What [`install`] sets up besides the drain.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Settings {
    /// Where `GET /health` is answered (`host:port`); `None` for no health endpoint.
    pub health: Option<String>,
}

impl Settings {
    /// The drain and a health endpoint on `addr` (`host:port`, for example
    /// `"127.0.0.1:6190"`).
    pub fn health(addr: impl Into<String>) -> Settings {
        Settings {
            health: Some(addr.into()),
        }
    }
}

/// Why [`install`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The health address is not a `host:port` that resolves.
    #[error("health endpoint {addr:?} is not a host:port address: {reason}")]
    HealthAddress {
        /// The address as given.
        addr: String,
        /// Why it does not resolve.
        reason: String,
    },
    /// The health address resolves but cannot be bound.
    #[error("health endpoint {addr}: {source}")]
    HealthBind {
        /// The address resolved.
        addr: SocketAddr,
        /// The error from `socket`, `bind` or `listen`.
        source: std::io::Error,
    },
    /// steward named inherited listeners (`child.handoff = "inherit"`) that cannot be
    /// taken.
    #[error("listeners inherited from steward: {0}")]
    Inherit(#[from] InheritError),
}

/// The drain [`install`] set up on a server: makes the services whose connections it
/// counts and closes gracefully.
#[derive(Clone)]
pub struct Steward {
    drain: Arc<drain::Drain>,
    health: Option<SocketAddr>,
    inherited: Arc<Inherited>,
    /// Pingora's table of listening sockets, once the server runs: what a graceful
    /// upgrade sends ([`Steward::run`]).
    listeners: Arc<OnceLock<ListenFds>>,
}

/// Sets `server` up to drain and exit as soon as its last connection is done, and to
/// answer health checks if `settings` asks for it.
///
/// Call it after [`Server::bootstrap`] (whose `-t` ends the process before the health
/// address is bound) and before running the server. The health address is bound here, so
/// a port already in use by another program fails now, with [`Error::HealthBind`]; another
/// process of the same server may hold it (SO_REUSEPORT), as the next generation does
/// during a reload.
///
/// Under steward with `child.handoff = "inherit"`, the listening sockets steward passed at
/// exec are taken here, and each service made through the returned [`Steward`] listens on
/// the ones under its own keys instead of binding (see [`LISTENERS_ENV`]); the health
/// endpoint answers only once every such service has claimed its listeners.
pub fn install(server: &mut Server, settings: Settings) -> Result<Steward, Error> {
    let inherited = Arc::new(Inherited::from_env()?);
    let drain = Arc::new(drain::Drain::default());
    let listener = settings.health.as_deref().map(bind_health).transpose()?;
    let health = listener.as_ref().and_then(|l| l.local_addr().ok());
    let listeners = Arc::new(OnceLock::new());
    server.add_service(Watch {
        drain: drain.clone(),
        health: Mutex::new(listener),
        inherited: inherited.clone(),
        listeners: listeners.clone(),
    });
    Ok(Steward {
        drain,
        health,
        inherited,
        listeners,
    })
}

fn bind_health(addr: &str) -> Result<TcpListener, Error> {
    let sa = addr
        .to_socket_addrs()
        .map_err(|e| e.to_string())
        .and_then(|mut a| a.next().ok_or_else(|| "it resolves to nothing".to_string()))
        .map_err(|reason| Error::HealthAddress {
            addr: addr.to_string(),
            reason,
        })?;
    health::bind_reuseport(sa).map_err(|source| Error::HealthBind { addr: sa, source })
}

impl Steward {
    /// A proxy service for `inner`, as [`pingora::proxy::http_proxy_service`] makes it,
    /// whose connections hold the drain and whose idle keep-alive connections are closed
    /// gracefully.
    pub fn http_proxy_service<SV>(
        &self,
        conf: &Arc<ServerConf>,
        inner: SV,
    ) -> StewardService<HttpProxy<SV>>
    where
        SV: ProxyHttp + Send + Sync + 'static,
        SV::CTX: Send + Sync,
    {
        self.service(
            "Pingora HTTP Proxy Service",
            pingora::proxy::http_proxy(conf, inner),
        )
    }

    /// A listening service named `name` for any Pingora app, whose connections hold the
    /// drain and whose idle keep-alive connections are closed gracefully. It is Pingora's
    /// listening [`Service`] (`add_tcp` and the rest reach it through `Deref`), which
    /// listens on the sockets inherited from steward under its keys, if any.
    pub fn service<A>(&self, name: &str, app: A) -> StewardService<A>
    where
        A: ServerApp + Send + Sync + 'static,
    {
        StewardService::new(
            Service::new(name.to_string(), Graceful::new(app, self.drain.clone())),
            self.inherited.clone(),
            self.drain.clone(),
        )
    }

    /// Where the health endpoint listens, if there is one (the port the system chose when
    /// the address gave port 0).
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health
    }
}

/// The background service [`install`] adds: the health endpoint, the start of the drain
/// when Pingora's shutdown begins, and, for [`Steward::run`], Pingora's table of listening
/// sockets. A service of its own rather than Pingora's `background_service`, which does not
/// pass the table on.
struct Watch {
    drain: Arc<drain::Drain>,
    health: Mutex<Option<TcpListener>>,
    inherited: Arc<Inherited>,
    listeners: Arc<OnceLock<ListenFds>>,
}

#[async_trait]
impl ServiceTrait for Watch {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        if let Some(fds) = fds {
            let _ = self.listeners.set(fds);
        }
        self.start(shutdown).await
    }

    fn name(&self) -> &str {
        "BG steward-pingora"
    }

    fn threads(&self) -> Option<usize> {
        Some(1)
    }

    /// No listening address of its own, said so: `None` would keep Pingora from closing
    /// the inherited sockets no service claims, as Pingora's background services say.
    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(Vec::new())
    }
}

impl Watch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut begun = self.drain.begun();
        // Healthy means serving: not before every service has its inherited listeners
        // (a shutdown meanwhile ends the wait: the drain must still begin).
        self.inherited.running();
        tokio::select! {
            _ = self.inherited.settled() => {}
            _ = shutdown.wait_for(|&down| down) => {}
            _ = begun.wait_for(|&b| b) => {}
        }
        let listener = self.health.lock().ok().and_then(|mut l| l.take());
        let health = listener.map(|l| {
            let addr = l.local_addr().ok();
            (addr, tokio::spawn(health::serve(l, self.drain.clone())))
        });
        // The drain begins on SIGTERM under `Steward::run`; under Pingora's own
        // `run_forever()` when Pingora sets its watch: on SIGTERM, and on SIGQUIT once it
        // has handed its listeners over.
        tokio::select! {
            down = shutdown.wait_for(|&down| down) => {
                if down.is_err() {
                    return;
                }
            }
            _ = begun.wait_for(|&b| b) => {}
        }
        self.drain.begin();
        if !self.drain.run_owned() {
            self.drain.exit_when_drained();
        }
        // A successor bound to the same health port (a reload: it is ready before this
        // process is told to stop) answers for the server from now on. Were this process
        // to go on answering 503 beside it, the kernel would hand it about half the health
        // checks: a load balancer would see the server flap, and steward's probe, which
        // wants the successor to accept, would fail it.
        if let Some((Some(addr), task)) = health {
            // The kernel's TCP table can be large on a busy host: read it off the runtime
            // that answers the health checks.
            let successor = tokio::task::spawn_blocking(move || health::successor_listens(addr))
                .await
                .unwrap_or(false);
            if successor {
                log::info!(
                    "health endpoint {addr}: a successor listens there too; leaving the port to it"
                );
                task.abort();
            }
        }
        // Returning would not stop the health endpoint (a task of this runtime), but the
        // service stays as long as the process, like the endpoint.
        std::future::pending::<()>().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> Server {
        Server::new(None).expect("a Pingora server with the default configuration")
    }

    #[test]
    fn install_binds_the_health_endpoint_and_reports_where() {
        let steward = install(&mut server(), Settings::health("127.0.0.1:0")).expect("install");
        let addr = steward.health_addr().expect("a health address");
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    }

    #[test]
    fn install_without_health_has_no_health_endpoint() {
        let steward = install(&mut server(), Settings::default()).expect("install");
        assert_eq!(steward.health_addr(), None);
    }

    #[test]
    fn install_refuses_a_health_address_that_is_not_host_port() {
        let e = install(&mut server(), Settings::health("no-port-here")).err();
        assert!(
            matches!(e, Some(Error::HealthAddress { ref addr, .. }) if addr == "no-port-here"),
            "{e:?}"
        );
    }

    #[test]
    fn install_refuses_a_health_port_another_program_holds() {
        // A listener without SO_REUSEPORT, as another program would hold the port.
        let other = TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken = other.local_addr().expect("local addr");
        let e = install(&mut server(), Settings::health(taken.to_string())).err();
        assert!(
            matches!(e, Some(Error::HealthBind { addr, .. }) if addr == taken),
            "{e:?}"
        );
    }
}
