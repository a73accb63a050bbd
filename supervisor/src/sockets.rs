//! The listening sockets steward owns and hands to every generation of the child.
//!
//! Because steward keeps its copies, a connection that arrives while no child accepts
//! (a crash, a restart, the gap of a reload) waits in the kernel's backlog instead of being
//! refused. Sockets come from systemd socket activation (`LISTEN_FDS`) when a socket unit
//! passes them, else steward binds them itself. The hand-off keys are the configured
//! strings, since Pingora matches them byte for byte against its own `add_tcp` addresses.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{getsockname, SockaddrStorage};

#[derive(Debug, thiserror::Error)]
#[error("listener {addr}: {message}")]
pub struct SocketError {
    pub addr: String,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Sockets {
    entries: Vec<(String, OwnedFd, u16)>,
}

/// Where a socket came from, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Bound,
    Activated,
}

impl Sockets {
    /// Opens every configured listener, taking systemd's where they match.
    pub fn open(addrs: &[String]) -> Result<(Sockets, Vec<(String, Origin)>), SocketError> {
        let mut activated = take_activated();
        let mut entries = vec![];
        let mut origins = vec![];
        for addr in addrs {
            let wanted: Vec<SocketAddr> = addr
                .to_socket_addrs()
                .map_err(|e| SocketError {
                    addr: addr.clone(),
                    message: e.to_string(),
                })?
                .collect();
            let (fd, origin) = match activated.iter().position(|(sa, _)| wanted.contains(sa)) {
                Some(i) => (activated.swap_remove(i).1, Origin::Activated),
                None => (bind(addr)?, Origin::Bound),
            };
            let port = wanted.first().map(|a| a.port()).unwrap_or(0);
            entries.push((addr.clone(), fd, port));
            origins.push((addr.clone(), origin));
        }
        for (sa, _) in activated {
            tracing::warn!(
                "socket-activated listener {sa} matches no sockets.listen entry; closed"
            );
        }
        Ok((Sockets { entries }, origins))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn keys(&self) -> Vec<String> {
        self.entries.iter().map(|(k, _, _)| k.clone()).collect()
    }

    pub fn raw_fds(&self) -> Vec<RawFd> {
        self.entries.iter().map(|(_, f, _)| f.as_raw_fd()).collect()
    }

    pub fn ports(&self) -> HashSet<u16> {
        self.entries.iter().map(|(_, _, p)| *p).collect()
    }

    /// The kernel's inode of each socket, to check a child really claimed it.
    pub fn inodes(&self) -> Vec<(String, u64)> {
        self.entries
            .iter()
            .filter_map(|(k, f, _)| {
                let link = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).ok()?;
                let ino = link
                    .to_str()?
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()?;
                Some((k.clone(), ino))
            })
            .collect()
    }

    /// Drops steward's copies: from now on only the children hold the listeners.
    pub fn close(&mut self) {
        self.entries.clear();
    }
}

/// Non-blocking, because Pingora's receiver re-listens the descriptor without setting
/// O_NONBLOCK itself, and the flag travels with the open file description.
fn bind(addr: &str) -> Result<OwnedFd, SocketError> {
    let err = |e: std::io::Error| SocketError {
        addr: addr.to_string(),
        message: e.to_string(),
    };
    let l = TcpListener::bind(addr).map_err(err)?;
    l.set_nonblocking(true).map_err(err)?;
    Ok(OwnedFd::from(l))
}

/// Descriptors systemd passed for this process (`LISTEN_PID`/`LISTEN_FDS`), by address.
fn take_activated() -> Vec<(SocketAddr, OwnedFd)> {
    let pid_ok = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let n: i32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if !pid_ok || n <= 0 {
        return vec![];
    }
    (3..3 + n)
        .filter_map(|fd| {
            // SAFETY: systemd passed descriptors 3..3+LISTEN_FDS to this process (checked
            // through LISTEN_PID), and nothing else in steward has taken them.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let _ = nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
            let _ = nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            );
            let sa: SockaddrStorage = getsockname(fd).ok()?;
            let addr = if let Some(v4) = sa.as_sockaddr_in() {
                SocketAddr::from((v4.ip(), v4.port()))
            } else if let Some(v6) = sa.as_sockaddr_in6() {
                SocketAddr::from((v6.ip(), v6.port()))
            } else {
                tracing::warn!("socket-activated fd {fd} is not a TCP socket; closed");
                return None;
            };
            Some((addr, owned))
        })
        .collect()
}
