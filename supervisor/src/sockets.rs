//! The listening sockets steward owns and hands to every generation of the child.
//!
//! Because steward keeps its copies, a connection that arrives while no child accepts
//! (a crash, a restart, the gap of a reload) waits in the kernel's backlog instead of being
//! refused. Sockets come from systemd socket activation (`LISTEN_FDS`) when a socket unit
//! passes them, else steward binds them itself. The hand-off keys are the configured
//! strings, since Pingora matches them byte for byte against its own `add_tcp` addresses.
//!
//! Under a unit with `FileDescriptorStoreMax=`, every socket steward binds also goes into
//! systemd's file descriptor store, named for its key ([`stored_name`]). When steward
//! itself crashes and `Restart=` starts it again, systemd passes them back in
//! `LISTEN_FDS`/`LISTEN_FDNAMES` and steward takes each by name before binding anything:
//! the listening socket never closed, so the connections that arrived meanwhile wait in
//! its backlog for the next generation instead of being refused. A stored socket the
//! configuration no longer names is closed and removed from the store; a stop removes
//! them all ([`Sockets::close`]), so systemd's copy does not keep a stopping service's
//! ports open.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{getsockname, SockaddrStorage};

use crate::notify::Notifier;

/// Where the names of steward's stored sockets begin: anything else in `LISTEN_FDNAMES`
/// came from a socket unit.
const STORE_PREFIX: &str = "steward-listen.";

/// The fd-store name of the listener `key`: systemd allows any printable ASCII but `:`
/// (the separator of `LISTEN_FDNAMES`) up to 255 bytes, so `:`, `%` and anything else are
/// percent-encoded; [`key_of_stored`] reverses it.
pub fn stored_name(key: &str) -> String {
    let mut name = String::from(STORE_PREFIX);
    for b in key.bytes() {
        match b {
            b':' | b'%' => name.push_str(&format!("%{b:02X}")),
            0x21..=0x7e => name.push(b as char),
            _ => name.push_str(&format!("%{b:02X}")),
        }
    }
    name
}

/// The listener key a stored name stands for; `None` for names steward did not give.
pub fn key_of_stored(name: &str) -> Option<String> {
    let encoded = name.strip_prefix(STORE_PREFIX)?;
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = tail.get(..2)?;
            bytes.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

#[derive(Debug, thiserror::Error)]
#[error("listener {addr}: {message}")]
pub struct SocketError {
    pub addr: String,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Sockets {
    entries: Vec<(String, OwnedFd, u16)>,
    /// The store holding copies of these sockets, to empty at [`Sockets::close`].
    store: Option<Notifier>,
}

/// Where a socket came from, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Bound,
    Activated,
    /// Kept in systemd's fd store by an earlier steward of this unit.
    Stored,
}

/// A descriptor systemd passed in `LISTEN_FDS`.
struct Inherited {
    addr: SocketAddr,
    /// Its `LISTEN_FDNAMES` entry.
    name: String,
    fd: OwnedFd,
}

impl Sockets {
    /// Opens every configured listener: steward's own from systemd's fd store first, then
    /// a socket unit's by address, else bound. With `store` (the unit has room in its fd
    /// store), every socket steward bound is stored, and stored ones no longer configured
    /// are removed.
    pub fn open(
        addrs: &[String],
        store: Option<&Notifier>,
    ) -> Result<(Sockets, Vec<(String, Origin)>), SocketError> {
        let inherited = take_inherited();
        let (mut stored, mut activated): (Vec<_>, Vec<_>) = inherited
            .into_iter()
            .partition(|i| key_of_stored(&i.name).is_some());
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
            let name = stored_name(addr);
            let from_store = stored
                .iter()
                .position(|i| i.name == name && wanted.contains(&i.addr));
            let from_unit = || activated.iter().position(|i| wanted.contains(&i.addr));
            let (fd, origin) = match (from_store, from_unit()) {
                (Some(i), _) => (stored.swap_remove(i).fd, Origin::Stored),
                (None, Some(i)) => (activated.swap_remove(i).fd, Origin::Activated),
                (None, None) => {
                    let fd = bind(addr)?;
                    if let Some(n) = store {
                        if let Err(e) = n.store_fd(&name, fd.as_fd()) {
                            tracing::warn!(
                                "listener {addr}: cannot put it in systemd's fd store ({e}); a crash of steward would close it"
                            );
                        }
                    }
                    (fd, Origin::Bound)
                }
            };
            let port = wanted.first().map(|a| a.port()).unwrap_or(0);
            entries.push((addr.clone(), fd, port));
            origins.push((addr.clone(), origin));
        }
        for i in stored {
            tracing::info!(
                "listener {} from systemd's fd store is no longer in sockets.listen: closed and removed from the store",
                i.addr
            );
            if let Some(n) = store {
                n.remove_fd(&i.name);
            }
        }
        for i in activated {
            tracing::warn!(
                "socket-activated listener {} matches no sockets.listen entry; closed",
                i.addr
            );
        }
        Ok((
            Sockets {
                entries,
                store: store.cloned(),
            },
            origins,
        ))
    }

    /// The listeners a predecessor handed over on re-exec (see [`crate::reexec`]): already
    /// in systemd's fd store when `store` is given, so not stored again.
    pub fn adopt(entries: Vec<(String, OwnedFd, u16)>, store: Option<&Notifier>) -> Sockets {
        Sockets {
            entries,
            store: store.cloned(),
        }
    }

    /// Each listener's key, descriptor and port, for a re-exec's hand-over.
    pub fn entries(&self) -> Vec<(String, RawFd, u16)> {
        self.entries
            .iter()
            .map(|(k, f, p)| (k.clone(), f.as_raw_fd(), *p))
            .collect()
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

    /// Drops steward's copies, and systemd's stored ones: from now on only the children
    /// hold the listeners, so the ports close with the last of them and new connections
    /// are refused at once rather than queued for a service that is stopping.
    pub fn close(&mut self) {
        if let Some(n) = &self.store {
            for (key, _, _) in &self.entries {
                n.remove_fd(&stored_name(key));
            }
        }
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

/// Descriptors systemd passed for this process (`LISTEN_PID`/`LISTEN_FDS`), with their
/// addresses and `LISTEN_FDNAMES` entries: a socket unit's, and steward's own from the fd
/// store.
fn take_inherited() -> Vec<Inherited> {
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
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|v| v.split(':').map(str::to_string).collect())
        .unwrap_or_default();
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
            let name = names
                .get((fd - 3) as usize)
                .cloned()
                .unwrap_or_else(|| "unknown".into());
            Some(Inherited {
                addr,
                name,
                fd: owned,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_hold_no_colon_and_give_the_key_back() {
        for key in [
            "127.0.0.1:6188",
            "[::1]:443",
            "localhost:80",
            "a%3Ab:1",
            "x y:é",
        ] {
            let name = stored_name(key);
            assert!(!name.contains(':'), "{name}");
            assert!(name.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{name}");
            assert_eq!(key_of_stored(&name).as_deref(), Some(key));
        }
    }

    #[test]
    fn a_socket_units_name_is_not_taken_for_a_stored_one() {
        assert_eq!(key_of_stored("steward-proxy.socket"), None);
        assert_eq!(key_of_stored("unknown"), None);
    }

    #[test]
    fn a_truncated_escape_is_not_a_key() {
        assert_eq!(key_of_stored("steward-listen.127.0.0.1%3"), None);
    }
}
