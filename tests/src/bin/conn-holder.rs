//! Holds established loopback TCP connections so the host's TCP tables are as full as a
//! busy proxy host's, for the scale bench and tests. Both ends of every connection are in
//! this process (2 sockets, 2 descriptors each); the connections stay idle.
//!
//! Usage:
//!   conn-holder --connections N --seconds S [--ip 127.A.B.C]
//!   conn-holder --capacity
//!
//! With `--connections`, it prints `holding N` on stdout once all N are established, then
//! exits 0 `S` seconds after it started (it always stops by itself), or earlier when killed
//! or when its parent dies. It exits 1 with a message on stderr when it cannot establish N.
//! `--capacity` prints how many connections one holder can keep open here and exits.
//!
//! Both ends use one address of 127.0.0.0/8 (default: derived from the pid, so holders
//! running at the same time never share one, and nothing else on the host uses it): the
//! source port is chosen at connect time per 4-tuple (`IP_BIND_ADDRESS_NO_PORT`), so the
//! holders take no port that 127.0.0.1 needs, for a `connect` or a `bind` alike.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockProtocol, SockType,
    SockaddrIn,
};
use nix::sys::time::{TimeVal, TimeValLike};

/// Descriptors kept free for stdio, the listener and what std opens.
const RESERVED_FDS: u64 = 32;
/// Connections set up between two rounds of accepts: well below any listen backlog (std
/// asks for 128, `net.core.somaxconn` caps it), so the kernel never drops a handshake for
/// a full accept queue (the client would then believe in a connection the server lacks).
const BATCH: usize = 64;
/// How long one connect or accept may take on loopback before the holder gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

fn main() {
    let started = Instant::now();
    match run(started) {
        Ok(()) => {}
        Err(Failure::Usage(msg)) => {
            eprintln!("conn-holder: {msg}\nusage: conn-holder --connections N --seconds S [--ip 127.A.B.C] | --capacity");
            std::process::exit(2);
        }
        Err(Failure::Failed(msg)) => {
            eprintln!("conn-holder: {msg}");
            std::process::exit(1);
        }
    }
}

enum Failure {
    Usage(String),
    Failed(String),
}

struct Args {
    connections: usize,
    seconds: u64,
    ip: Option<Ipv4Addr>,
    capacity: bool,
}

fn parse_args() -> Result<Args, Failure> {
    let mut args = Args {
        connections: 0,
        seconds: 0,
        ip: None,
        capacity: false,
    };
    let (mut connections, mut seconds) = (None, None);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| Failure::Usage(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--connections" => connections = Some(number(&value("--connections")?)?),
            "--seconds" => seconds = Some(number(&value("--seconds")?)?),
            "--ip" => {
                let v = value("--ip")?;
                let ip: Ipv4Addr = v
                    .parse()
                    .map_err(|_| Failure::Usage(format!("--ip {v:?} is not an IPv4 address")))?;
                if !ip.is_loopback() {
                    return Err(Failure::Usage(format!("--ip {ip} is not in 127.0.0.0/8")));
                }
                args.ip = Some(ip);
            }
            "--capacity" => args.capacity = true,
            other => return Err(Failure::Usage(format!("unknown argument {other:?}"))),
        }
    }
    if args.capacity {
        return Ok(args);
    }
    args.connections =
        connections.ok_or_else(|| Failure::Usage("--connections is required".into()))?;
    // Required so that a holder whose caller forgot it still ends by itself.
    args.seconds = seconds.ok_or_else(|| Failure::Usage("--seconds is required".into()))?;
    Ok(args)
}

fn number<T: std::str::FromStr>(v: &str) -> Result<T, Failure> {
    v.parse()
        .map_err(|_| Failure::Usage(format!("{v:?} is not a non-negative integer")))
}

fn run(started: Instant) -> Result<(), Failure> {
    let args = parse_args()?;
    let fds = raise_nofile()?;
    let capacity = capacity(fds);
    if args.capacity {
        return say(&capacity.to_string());
    }
    die_with_parent()?;
    if args.connections > capacity {
        return Err(Failure::Failed(format!(
            "cannot hold {} connections: at most {capacity} fit here ({fds} descriptors, \
             2 per connection; ephemeral ports {}); spread them over more processes",
            args.connections,
            port_range_text()
        )));
    }
    let deadline = started
        .checked_add(Duration::from_secs(args.seconds))
        .ok_or_else(|| Failure::Usage(format!("--seconds {} is too large", args.seconds)))?;
    let ip = args.ip.unwrap_or_else(|| ip_for(std::process::id()));
    let held = establish(ip, args.connections, deadline)?;
    say(&format!("holding {}", held.len()))?;
    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    // Dropping `held` closes every socket with a reset (SO_LINGER 0): no TIME_WAIT entry
    // outlives the holder and pads the tables of whatever is measured next.
    drop(held);
    Ok(())
}

/// One line on stdout, flushed at once: the caller waits for it.
fn say(line: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| Failure::Failed(format!("cannot write to stdout: {e}")))
}

/// Raises the soft open-file limit to the hard one; returns the limit now in force.
fn raise_nofile() -> Result<u64, Failure> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(Failure::Failed(format!(
            "getrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        )));
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(Failure::Failed(format!(
                "setrlimit(RLIMIT_NOFILE, {}): {}",
                lim.rlim_max,
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(lim.rlim_cur)
}

/// How many connections fit: the descriptors, and the source ports of one 4-tuple family
/// (one source address to one listening port).
fn capacity(fds: u64) -> usize {
    let by_fds = (fds.saturating_sub(RESERVED_FDS) / 2) as usize;
    // The range less one: the listener's own port is in it.
    let by_ports = port_range()
        .map(|(lo, hi)| usize::from(hi.saturating_sub(lo)))
        .unwrap_or(usize::MAX);
    by_fds.min(by_ports)
}

fn port_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    Some((it.next()?.ok()?, it.next()?.ok()?))
}

fn port_range_text() -> String {
    port_range()
        .map(|(lo, hi)| format!("{lo}-{hi}"))
        .unwrap_or_else(|| "unknown".into())
}

/// SIGKILL when the parent dies, so a killed bench or test leaves no holder behind.
/// Caveat of the kernel: "parent" is the thread that spawned us.
fn die_with_parent() -> Result<(), Failure> {
    // SAFETY: getppid cannot fail.
    let parent = unsafe { libc::getppid() };
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(Failure::Failed(format!(
            "prctl(PR_SET_PDEATHSIG): {}",
            std::io::Error::last_os_error()
        )));
    }
    // The parent may have died before the prctl: then we were re-parented already.
    // SAFETY: as above.
    if unsafe { libc::getppid() } != parent {
        return Err(Failure::Failed(
            "parent exited before the holder started".into(),
        ));
    }
    Ok(())
}

/// 127.64.0.0 to 127.127.255.255 from a pid (at most 22 bits on Linux): unique among
/// the processes alive, and clear of 127.0.0.1 and 127.0.0.53.
fn ip_for(pid: u32) -> Ipv4Addr {
    Ipv4Addr::new(
        127,
        64 | ((pid >> 16) & 63) as u8,
        (pid >> 8) as u8,
        pid as u8,
    )
}

/// Both ends of one connection.
struct Held {
    _client: OwnedFd,
    _server: TcpStream,
}

fn establish(ip: Ipv4Addr, n: usize, deadline: Instant) -> Result<Vec<Held>, Failure> {
    let fail = |what: String| Failure::Failed(format!("established {what}"));
    let listener = TcpListener::bind((ip, 0))
        .map_err(|e| Failure::Failed(format!("cannot listen on {ip}: {e}")))?;
    let target = match listener.local_addr() {
        Ok(std::net::SocketAddr::V4(a)) => a,
        Ok(other) => return Err(Failure::Failed(format!("listener on {other}, not IPv4"))),
        Err(e) => return Err(Failure::Failed(format!("listener address: {e}"))),
    };
    // A blocking accept that waits forever would hang the holder past its time limit
    // when a handshake was lost; SO_RCVTIMEO bounds it.
    setsockopt(&listener, sockopt::ReceiveTimeout, &timeval(STEP_TIMEOUT))
        .map_err(|e| Failure::Failed(format!("SO_RCVTIMEO on the listener: {e}")))?;
    let mut held = Vec::with_capacity(n);
    let mut clients = Vec::with_capacity(BATCH);
    while held.len() < n {
        if Instant::now() >= deadline {
            return Err(fail(format!(
                "only {} of {n} connections before the time limit",
                held.len()
            )));
        }
        let batch = BATCH.min(n - held.len());
        for _ in 0..batch {
            let c = connect_from(ip, target).map_err(|e| {
                fail(format!(
                    "{} of {n} connections, then {e}",
                    held.len() + clients.len()
                ))
            })?;
            clients.push(c);
        }
        for client in clients.drain(..) {
            let (server, _) = listener.accept().map_err(|e| {
                fail(format!(
                    "{} of {n} connections, then accept on {target}: {e}",
                    held.len()
                ))
            })?;
            set_reset_on_close(&server).map_err(|e| fail(format!("{}: {e}", held.len())))?;
            held.push(Held {
                _client: client,
                _server: server,
            });
        }
    }
    Ok(held)
}

fn connect_from(ip: Ipv4Addr, target: SocketAddrV4) -> Result<OwnedFd, String> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Tcp,
    )
    .map_err(|e| format!("socket(): {e} (descriptor or memory limit?)"))?;
    setsockopt(&fd, sockopt::IpBindAddressNoPort, &true)
        .map_err(|e| format!("IP_BIND_ADDRESS_NO_PORT: {e}"))?;
    // A blocking connect gives up after SO_SNDTIMEO on Linux.
    setsockopt(&fd, sockopt::SendTimeout, &timeval(STEP_TIMEOUT))
        .map_err(|e| format!("SO_SNDTIMEO: {e}"))?;
    set_reset_on_close(&fd)?;
    use std::os::fd::AsRawFd;
    bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(ip, 0)))
        .map_err(|e| format!("bind {ip}: {e}"))?;
    connect(fd.as_raw_fd(), &SockaddrIn::from(target)).map_err(|e| {
        format!(
            "connect {ip} -> {target}: {e} (ephemeral ports {})",
            port_range_text()
        )
    })?;
    Ok(fd)
}

fn set_reset_on_close<F: std::os::fd::AsFd>(fd: &F) -> Result<(), String> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    setsockopt(fd, sockopt::Linger, &linger).map_err(|e| format!("SO_LINGER: {e}"))
}

fn timeval(d: Duration) -> TimeVal {
    TimeVal::milliseconds(d.as_millis() as i64)
}
