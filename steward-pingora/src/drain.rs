//! Draining: stop accepting, finish what is in flight, leave as soon as nothing is.
//!
//! Pingora 0.9.1 on SIGTERM closes its listeners and then sleeps `grace_period_seconds`
//! however little is left. This keeps Pingora's first half and replaces the sleep: it counts
//! the connections being served and exits the moment none is left. The grace period still
//! bounds the drain, because Pingora's own shutdown continues underneath.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::socket::{getpeername, getsockname, SockaddrStorage};
use tokio::signal::unix::{signal, SignalKind};

/// How often the drain watcher looks at what is left.
const POLL: Duration = Duration::from_millis(5);
/// Polls in a row with nothing left before the process exits: a connection between its
/// accept and its first poll by the runtime is in neither count for a moment.
const IDLE_POLLS: u32 = 2;

/// What the process is serving, shared by the wrapped services, the health endpoint and
/// the drain watcher.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    draining: AtomicBool,
    next_id: AtomicU64,
    /// The connections the wrapped services are serving, by id: their peer, when it is an
    /// IP address.
    serving: Mutex<HashMap<u64, Option<SocketAddr>>>,
    /// Local ports of the connections the wrapped services accepted: the listening ports
    /// whose downstream sockets must be gone before exiting.
    ports: Mutex<HashSet<u16>>,
}

/// Held while a wrapped service serves a connection.
pub(crate) struct Serving {
    drain: Arc<Drain>,
    id: u64,
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Ok(mut s) = self.drain.serving.lock() {
            s.remove(&self.id);
        }
    }
}

impl Drain {
    pub(crate) fn enter(
        self: &Arc<Self>,
        local: Option<SocketAddr>,
        peer: Option<SocketAddr>,
    ) -> Serving {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut s) = self.serving.lock() {
            s.insert(id, peer);
        }
        if let (Some(local), Ok(mut p)) = (local, self.ports.lock()) {
            p.insert(local.port());
        }
        Serving {
            drain: self.clone(),
            id,
        }
    }

    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub(crate) fn connections(&self) -> usize {
        self.serving.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// The client connections left: those the wrapped services are serving, and those the
    /// process's own sockets show on the services' ports. A connection accepted just before
    /// the listeners closed may not have reached its service yet, so the services' count
    /// alone misses it; the sockets do not. Neither counts a connection from the process to
    /// itself (a proxy's upstream pool to a service of the same process, which Pingora does
    /// not close at shutdown when that service is not a proxy): it is no client.
    ///
    /// Each socket is asked for its own addresses, which costs one call per open socket,
    /// not a read of the namespace's whole TCP table (tens of thousands of TIME_WAIT rows
    /// on a busy host).
    fn clients(&self) -> usize {
        let ports = self.ports.lock().map(|p| p.clone()).unwrap_or_default();
        let pairs: Vec<(SocketAddr, SocketAddr)> = std::fs::read_dir("/proc/self/fd")
            .map(|dir| {
                dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
                    .filter_map(|fd| {
                        Some((addr(getsockname(fd).ok()?)?, addr(getpeername(fd).ok()?)?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let own: HashSet<SocketAddr> = pairs.iter().map(|(local, _)| *local).collect();
        let served = self
            .serving
            .lock()
            .map(|s| {
                s.values()
                    .filter(|peer| peer.is_none_or(|p| !own.contains(&p)))
                    .count()
            })
            .unwrap_or(0);
        let sockets = pairs
            .iter()
            .filter(|(local, peer)| ports.contains(&local.port()) && !own.contains(peer))
            .count();
        served.max(sockets)
    }

    /// Marks the drain as begun (the health endpoint answers 503) and starts the thread
    /// that ends the process once nothing is left.
    pub(crate) fn begin(self: &Arc<Self>) {
        if self.draining.swap(true, Ordering::SeqCst) {
            return;
        }
        log::info!(
            "draining: listeners close, exiting when the last request is done ({} connection(s) open)",
            self.connections()
        );
        let drain = self.clone();
        if let Err(e) = std::thread::Builder::new()
            .name("steward-drain".into())
            .spawn(move || watch(drain))
        {
            log::error!("cannot start the drain watcher: {e}; Pingora's grace period applies");
        }
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

/// Exits the process once no client connection has been left for [`IDLE_POLLS`] polls in a
/// row,
/// or at once on SIGINT (Pingora no longer listens for signals after the first one).
fn watch(drain: Arc<Drain>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("drain watcher: {e}; Pingora's grace period applies");
            return;
        }
    };
    rt.block_on(async move {
        let mut int = signal(SignalKind::interrupt()).ok();
        let started = Instant::now();
        let mut idle_polls = 0;
        loop {
            tokio::select! {
                _ = async { match int.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {
                    log::warn!("SIGINT while draining ({} connection(s) open): exiting now", drain.connections());
                    std::process::exit(0);
                }
                _ = tokio::time::sleep(POLL) => {}
            }
            if drain.clients() == 0 {
                idle_polls += 1;
            } else {
                idle_polls = 0;
            }
            if idle_polls >= IDLE_POLLS {
                log::info!(
                    "drained: no request in flight; exiting after {} ms",
                    started.elapsed().as_millis()
                );
                std::process::exit(0);
            }
        }
    });
}
