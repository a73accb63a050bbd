//! Draining: stop accepting, finish what is in flight, leave as soon as nothing is.
//!
//! Pingora 0.9.1 on SIGTERM closes its listeners and then sleeps `grace_period_seconds`
//! however little is left. This keeps Pingora's first half and replaces the sleep: it counts
//! the connections being served and ends the wait the moment none is left.
//!
//! Two ways to end it. Under [`crate::Steward::run`] the wait is [`Drain::drained`], awaited
//! by the shutdown signal watch before it hands over to Pingora (see `run.rs`): `main`
//! returns. A server started with Pingora's own `run_forever()` gives the library no such
//! place, so there a thread waits and ends the process with `exit(0)`
//! ([`Drain::exit_when_drained`]); the grace period still bounds that drain, because
//! Pingora's own shutdown continues underneath.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::socket::{getpeername, getsockname, SockaddrStorage};
use tokio::signal::unix::SignalKind;
use tokio::sync::watch;

use crate::signal::{handler, received};

/// How often the drain watcher looks at what is left.
const POLL: Duration = Duration::from_millis(5);
/// Polls in a row with nothing left before the process exits: a connection between its
/// accept and its first poll by the runtime is in neither count for a moment.
const IDLE_POLLS: u32 = 2;
/// While the services still serve more connections than the process's own, the socket
/// scan is skipped (something is surely left) but still runs this often, so own
/// connections opened since the last scan delay the exit by at most this much...
const SCAN_AT_LEAST_EVERY: Duration = Duration::from_millis(100);
/// ...or, where one scan is slow (tens of thousands of sockets), this many times its
/// own length, so the skipped scans keep the watcher under a tenth of a core.
const SCAN_SPACING: u32 = 10;

/// What the process is serving, shared by the wrapped services, the health endpoint and
/// the drain watcher.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    draining: AtomicBool,
    /// Turns true when the drain begins: the services made through the `Steward` stop
    /// accepting on it (it stands in for Pingora's shutdown watch, which turns true only
    /// once the drain is over under [`crate::Steward::run`]).
    begun: watch::Sender<bool>,
    /// Set by [`crate::Steward::run`]: the process ends by `run` returning, so no thread
    /// may end it.
    run_owned: AtomicBool,
    exit_watcher: AtomicBool,
    next_id: AtomicU64,
    /// The connections the wrapped services are serving, by id: their local and peer
    /// addresses, when both are IP addresses.
    serving: Mutex<HashMap<u64, Option<(SocketAddr, SocketAddr)>>>,
    /// Local ports of the connections the wrapped services accepted: the listening ports
    /// whose downstream sockets must be gone before exiting.
    ports: Mutex<HashSet<u16>>,
    /// How many times the process's sockets were scanned (what a drain costs).
    scans: AtomicU64,
}

/// What the drain watcher remembers between polls.
#[derive(Debug, Default)]
struct Watch {
    /// Connections the services serve that the last scan found to be the process's own.
    own_served: usize,
    last_scan: Option<Instant>,
    /// How long the last scan took.
    scan_took: Duration,
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
            s.insert(id, local.zip(peer));
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
        self.scan().0
    }

    /// The client connections left, as [`Self::clients`] counts them, without scanning
    /// every socket of the process at each poll: at tens of thousands of connections a
    /// scan costs two calls per socket, and a drain polls every few milliseconds. While
    /// the services serve more connections than the last scan found to be the process's
    /// own, at least one client is surely left and the scan waits (up to
    /// [`SCAN_AT_LEAST_EVERY`], or ten times as long as a scan takes). Only a scan ever
    /// answers 0, so the exit is decided on a full count.
    fn left(&self, watch: &mut Watch, now: Instant) -> usize {
        let served = self.connections();
        let spacing = SCAN_AT_LEAST_EVERY.max(watch.scan_took * SCAN_SPACING);
        let due = watch
            .last_scan
            .is_none_or(|t| now.saturating_duration_since(t) >= spacing);
        if served > watch.own_served && !due {
            return served - watch.own_served;
        }
        let began = Instant::now();
        let (clients, own_served) = self.scan();
        *watch = Watch {
            own_served,
            last_scan: Some(now),
            scan_took: began.elapsed(),
        };
        clients
    }

    /// The client connections left, and how many of the served connections are the
    /// process's own.
    fn scan(&self) -> (usize, usize) {
        self.scans.fetch_add(1, Ordering::Relaxed);
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
        // A connection is the process's own when the process also holds its other end: a
        // socket whose (local, peer) is this one's (peer, local). Comparing the peer with
        // the process's local addresses alone is not enough: Linux gives the same ephemeral
        // port to connections to different destinations, so a client's port may also be
        // the local port of one of the process's upstream connections.
        let own: HashSet<(SocketAddr, SocketAddr)> = pairs.iter().copied().collect();
        let is_own = |local: SocketAddr, peer: SocketAddr| own.contains(&(peer, local));
        let (served, own_served) = self
            .serving
            .lock()
            .map(|s| {
                let own = s
                    .values()
                    .filter(|pair| pair.is_some_and(|(local, peer)| is_own(local, peer)))
                    .count();
                (s.len() - own, own)
            })
            .unwrap_or((0, 0));
        let sockets = pairs
            .iter()
            .filter(|(local, peer)| ports.contains(&local.port()) && !is_own(*local, *peer))
            .count();
        (served.max(sockets), own_served)
    }

    /// Marks the drain as begun: the health endpoint answers 503, and the services made
    /// through the `Steward` stop accepting and close their idle keep-alive connections.
    /// Whether this call began it.
    pub(crate) fn begin(&self) -> bool {
        if self.draining.swap(true, Ordering::SeqCst) {
            return false;
        }
        log::info!(
            "draining: listeners close, exiting when the last request is done ({} connection(s) open)",
            self.connections()
        );
        self.begun.send_replace(true);
        true
    }

    /// A receiver that turns true when the drain begins. Its first `changed()` returns at
    /// once (Pingora's accept loop then reads the value and goes on if it is false), so a
    /// drain begun before the receiver was made is not missed.
    pub(crate) fn begun(&self) -> watch::Receiver<bool> {
        let mut rx = self.begun.subscribe();
        rx.mark_changed();
        rx
    }

    /// From now on the process ends by [`crate::Steward::run`] returning.
    pub(crate) fn set_run_owned(&self) {
        self.run_owned.store(true, Ordering::SeqCst);
    }

    pub(crate) fn run_owned(&self) -> bool {
        self.run_owned.load(Ordering::SeqCst)
    }

    /// Waits until no client connection has been left for [`IDLE_POLLS`] polls in a row
    /// (true), or until `bound` has passed since the call (false).
    pub(crate) async fn drained(&self, bound: Option<Duration>) -> bool {
        let started = Instant::now();
        let mut idle_polls = 0;
        let mut watch = Watch::default();
        loop {
            tokio::time::sleep(POLL).await;
            if self.left(&mut watch, Instant::now()) == 0 {
                idle_polls += 1;
            } else {
                idle_polls = 0;
            }
            if idle_polls >= IDLE_POLLS {
                log::info!(
                    "drained: no request in flight; exiting after {} ms ({} socket scans)",
                    started.elapsed().as_millis(),
                    self.scans.load(Ordering::Relaxed)
                );
                return true;
            }
            if bound.is_some_and(|b| started.elapsed() >= b) {
                log::warn!(
                    "grace period over with {} connection(s) still open: Pingora's shutdown ends them",
                    self.connections()
                );
                return false;
            }
        }
    }

    /// For a server started with Pingora's `run_forever()`, which sleeps out its grace
    /// period after the drain and offers no place to wait instead: starts the thread that
    /// ends the process with `exit(0)` once nothing is left, or at once on SIGINT. Once.
    pub(crate) fn exit_when_drained(self: &Arc<Self>) {
        if self.exit_watcher.swap(true, Ordering::SeqCst) {
            return;
        }
        let drain = self.clone();
        if let Err(e) = std::thread::Builder::new()
            .name("steward-drain".into())
            .spawn(move || exit_when_drained(drain))
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

/// Exits the process once [`Drain::drained`], or at once on SIGINT (Pingora no longer
/// listens for signals after the first one). Only for servers started with Pingora's
/// `run_forever()`: the exit skips destructors and Pingora's runtime shutdown, which
/// [`crate::Steward::run`] does not.
fn exit_when_drained(drain: Arc<Drain>) {
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
        let mut int = handler(SignalKind::interrupt(), "SIGINT");
        tokio::select! {
            _ = received(&mut int) => {
                log::warn!("SIGINT while draining ({} connection(s) open): exiting now", drain.connections());
            }
            _ = drain.drained(None) => {}
        }
    });
    std::process::exit(0);
}

/// What a drain's polling costs with `connections` client connections open in this
/// process (each a loopback TCP connection, so twice as many sockets), over `window` of
/// polls every [`POLL`]: time spent deciding, and socket scans, when every poll scans
/// (`every`) and with the scan skipped while clients are surely left (`throttled`). For
/// `bench/drain-scan`, which reports it; not part of the API.
#[doc(hidden)]
pub fn poll_cost(connections: usize, window: Duration) -> std::io::Result<[(Duration, u64); 2]> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    // The clients live in another process, as in a real drain (a connection whose both
    // ends are this process's is its own, never a client).
    let mut clients = std::process::Command::new("python3")
        .args([
            "-c",
            &format!(
                "import socket,sys\nk=[socket.create_connection(('127.0.0.1',{port})) for _ in range({connections})]\nsys.stdin.read()"
            ),
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    let drain = Arc::new(Drain::default());
    let mut held = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (server, peer) = listener.accept()?;
        held.push((drain.enter(server.local_addr().ok(), Some(peer)), server));
    }
    let measure = |throttle: bool| {
        let before = drain.scans.load(Ordering::Relaxed);
        let (mut busy, mut watch, end) =
            (Duration::ZERO, Watch::default(), Instant::now() + window);
        while Instant::now() < end {
            let t = Instant::now();
            let left = match throttle {
                true => drain.left(&mut watch, t),
                false => drain.clients(),
            };
            std::hint::black_box(left);
            busy += t.elapsed();
            std::thread::sleep(POLL);
        }
        (busy, drain.scans.load(Ordering::Relaxed) - before)
    };
    let cost = [measure(false), measure(true)];
    drop(clients.stdin.take());
    let _ = clients.wait();
    Ok(cost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::process::{Command, Stdio};

    use nix::sys::socket::{
        bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };

    /// A TCP socket of this process bound to `port` with SO_REUSEADDR, connected to `to`.
    fn connected_from(port: u16, to: SocketAddr) -> TcpStream {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        setsockopt(&fd, sockopt::ReuseAddr, &true).expect("SO_REUSEADDR");
        bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, port)).expect("bind");
        let SocketAddr::V4(v4) = to else {
            panic!("IPv4 expected")
        };
        connect(fd.as_raw_fd(), &SockaddrIn::from(v4)).expect("connect");
        TcpStream::from(fd)
    }

    #[test]
    fn a_client_whose_port_is_also_the_local_port_of_an_upstream_connection_is_a_client() {
        // The process's upstream connection: local 127.0.0.1:Q to an "origin" it serves
        // itself (both ends are the process's own).
        let origin = TcpListener::bind("127.0.0.1:0").expect("origin");
        let upstream = connected_from(0, origin.local_addr().expect("addr"));
        let q = upstream.local_addr().expect("addr").port();
        let (_origin_side, _) = origin.accept().expect("accept upstream");
        // A client in another process whose connection comes from the same port Q, as
        // Linux allows for connections to different destinations.
        let service = TcpListener::bind("127.0.0.1:0").expect("service");
        let target = service.local_addr().expect("addr");
        let mut client = Command::new("python3")
            .args([
                "-c",
                &format!(
                    "import socket,sys\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('127.0.0.1',{q}))\ns.connect(('127.0.0.1',{}))\nprint('connected',flush=True)\nsys.stdin.read()",
                    target.port()
                ),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let (served, peer) = service.accept().expect("accept the client");
        assert_eq!(
            peer.port(),
            q,
            "the client's port is the upstream's local port"
        );
        let drain = Arc::new(Drain::default());
        let _serving = drain.enter(served.local_addr().ok(), Some(peer));
        assert_eq!(drain.clients(), 1);
        drop(client.stdin.take());
        let _ = client.wait();
    }

    /// A served connection whose addresses are not IP (counted, never the process's own).
    fn serve_one(drain: &Arc<Drain>) -> Serving {
        drain.enter(None, None)
    }

    #[test]
    fn while_clients_are_served_the_sockets_are_not_scanned_at_every_poll() {
        let drain = Arc::new(Drain::default());
        let _a = serve_one(&drain);
        let _b = serve_one(&drain);
        let mut watch = Watch::default();
        let t0 = Instant::now();
        assert_eq!(drain.left(&mut watch, t0), 2);
        for ms in [5, 10, 50, 95] {
            assert!(drain.left(&mut watch, t0 + Duration::from_millis(ms)) >= 1);
        }
        assert_eq!(drain.scans.load(Ordering::Relaxed), 1);
        drain.left(&mut watch, t0 + SCAN_AT_LEAST_EVERY);
        assert_eq!(drain.scans.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn once_no_more_is_served_than_the_own_connections_every_poll_scans() {
        let drain = Arc::new(Drain::default());
        let served = serve_one(&drain);
        let mut watch = Watch::default();
        let t0 = Instant::now();
        drain.left(&mut watch, t0);
        drop(served);
        // Nothing served any more: the answer 0 must come from a scan, right away.
        assert_eq!(drain.left(&mut watch, t0 + Duration::from_millis(5)), 0);
        assert_eq!(drain.scans.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn an_own_connection_among_the_served_is_remembered_by_the_scan() {
        let service = TcpListener::bind("127.0.0.1:0").expect("service");
        let _own_client = TcpStream::connect(service.local_addr().expect("addr")).expect("connect");
        let (served, peer) = service.accept().expect("accept");
        let drain = Arc::new(Drain::default());
        let _serving = drain.enter(served.local_addr().ok(), Some(peer));
        let mut watch = Watch::default();
        let t0 = Instant::now();
        assert_eq!(drain.left(&mut watch, t0), 0);
        assert_eq!(watch.own_served, 1);
        // One served connection, and it is the process's own: each poll scans again.
        assert_eq!(drain.left(&mut watch, t0 + Duration::from_millis(5)), 0);
        assert_eq!(drain.scans.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_watch_made_after_the_drain_began_wakes_its_first_wait() {
        // Pingora's accept loop waits for a change before it reads the value: a receiver
        // that had already seen "true" would keep a service accepting through the drain.
        let drain = Drain::default();
        drain.begin();
        let mut late = drain.begun();
        assert!(late.has_changed().is_ok_and(|changed| changed));
        assert!(*late.borrow_and_update());
    }

    #[test]
    fn a_connection_from_the_process_to_itself_is_no_client() {
        let service = TcpListener::bind("127.0.0.1:0").expect("service");
        let _own_client = TcpStream::connect(service.local_addr().expect("addr")).expect("connect");
        let (served, peer) = service.accept().expect("accept");
        let drain = Arc::new(Drain::default());
        let _serving = drain.enter(served.local_addr().ok(), Some(peer));
        assert_eq!(drain.clients(), 0);
    }
}
