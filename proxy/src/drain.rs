//! Draining: stop accepting, finish what is in flight, leave as soon as nothing is.
//!
//! Pingora 0.9.1 on SIGTERM closes its listeners and then sleeps `grace_period_seconds`
//! however little is left. steward-proxy keeps Pingora's first half and replaces the sleep:
//! it counts requests in flight itself and exits the moment the count reaches zero. The
//! grace period still bounds the drain, because Pingora's own shutdown continues underneath.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::socket::{getpeername, getsockname, SockaddrStorage};
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

/// How often the drain watcher looks at the in-flight count.
const POLL: Duration = Duration::from_millis(5);

#[derive(Debug, Default)]
pub struct State {
    draining: AtomicBool,
    in_flight: AtomicUsize,
    /// The listening ports whose downstream connections must be gone before exiting.
    ports: std::sync::Mutex<HashSet<u16>>,
}

/// Held while a request is being served; dropping it ends the request.
pub struct InFlight(Arc<State>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl State {
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn set_ports(&self, ports: impl IntoIterator<Item = u16>) {
        if let Ok(mut p) = self.ports.lock() {
            p.extend(ports);
        }
    }

    /// A connection accepted just before the listeners closed has no request yet, so the
    /// request count alone misses it; the process's own sockets do not. Each socket is
    /// asked for its own addresses, which costs one call per open socket, not a read of the
    /// namespace's whole TCP table (tens of thousands of TIME_WAIT rows on a busy host).
    fn connections(&self) -> usize {
        let ports = self.ports.lock().map(|p| p.clone()).unwrap_or_default();
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
            return 0;
        };
        let pairs: Vec<(SocketAddr, SocketAddr)> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
            .filter_map(|fd| Some((addr(getsockname(fd).ok()?)?, addr(getpeername(fd).ok()?)?)))
            .collect();
        let own: HashSet<SocketAddr> = pairs.iter().map(|(local, _)| *local).collect();
        pairs
            .iter()
            // A connection to itself (the proxy's pool to its own demo origin) is no client.
            .filter(|(local, peer)| ports.contains(&local.port()) && !own.contains(peer))
            .count()
    }
}

fn addr(sa: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = sa.as_sockaddr_in() {
        Some(SocketAddr::from((v4.ip(), v4.port())))
    } else {
        sa.as_sockaddr_in6()
            .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
    }
}

/// Pingora's shutdown signal source, replaced so the drain can end early.
pub struct Signals {
    pub state: Arc<State>,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (mut term, mut int, mut quit) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) {
            (Ok(t), Ok(i), Ok(q)) => (t, i, q),
            _ => {
                tracing::error!("cannot install signal handlers; shutting down");
                return ShutdownSignal::FastShutdown;
            }
        };
        let sig = tokio::select! {
            _ = term.recv() => ShutdownSignal::GracefulTerminate,
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
            _ = int.recv() => return ShutdownSignal::FastShutdown,
        };
        self.state.draining.store(true, Ordering::SeqCst);
        tracing::info!(
            in_flight = self.state.in_flight(),
            "draining: listeners close, exiting when the last request is done"
        );
        let state = self.state.clone();
        std::thread::Builder::new()
            .name("drain-watch".into())
            .spawn(move || watch_drain(state))
            .map_err(|e| tracing::error!("cannot start the drain watcher: {e}"))
            .ok();
        sig
    }
}

/// Exits the process once no request and no client connection has been left for two polls
/// in a row, or at
/// once on SIGINT (Pingora no longer listens for signals after the first one).
fn watch_drain(state: Arc<State>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("drain watcher: {e}; Pingora's grace period applies");
            return;
        }
    };
    rt.block_on(async move {
        let mut int = signal(SignalKind::interrupt()).ok();
        let started = std::time::Instant::now();
        let mut idle_polls = 0;
        loop {
            tokio::select! {
                _ = async { match int.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {
                    tracing::warn!(in_flight = state.in_flight(), "SIGINT while draining: exiting now");
                    std::process::exit(0);
                }
                _ = tokio::time::sleep(POLL) => {}
            }
            if state.in_flight() == 0 && state.connections() == 0 {
                idle_polls += 1;
            } else {
                idle_polls = 0;
            }
            if idle_polls >= 2 {
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "drained: no request in flight; exiting"
                );
                std::process::exit(0);
            }
        }
    });
}
