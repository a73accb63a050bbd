//! A generation's own TCP sockets, read through duplicates of its descriptors.
//!
//! What the child holds is what the drain needs to know, and listing the host's whole
//! connection table to find it costs as much as the host holds (one `sock_diag` dump
//! walks every connection of the kernel's hash: tens of milliseconds at 200,000). steward
//! is the child's parent, so it may take a duplicate of each of the child's socket
//! descriptors (`pidfd_getfd(2)`, Linux 5.6) and ask the socket itself: its protocol, its
//! TCP state, its two ends. That costs a few system calls per socket of the child's,
//! whatever else the host holds. The duplicate is closed at once; the child's socket is
//! unaffected. Where the kernel refuses (an older kernel, a child steward may not trace),
//! the caller falls back to a dump.

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{getpeername, getsockname, SockaddrLike, SockaddrStorage};

use crate::procfs;
use crate::sockdiag::TcpSock;
use crate::worker::Io;

/// Every TCP socket a process of the group holds, with its state and ends.
pub fn group_tcp_sockets(io: &Io, pgid: i32) -> io::Result<Vec<TcpSock>> {
    let mut out = vec![];
    let mut seen = HashSet::new();
    for (pid, fds) in procfs::group_socket_fds(io, pgid) {
        let pidfd = match pidfd_open(pid) {
            Ok(p) => p,
            // Exited meanwhile: it holds nothing any more.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => continue,
            Err(e) => return Err(e),
        };
        for (fd, inode) in fds {
            if !seen.insert(inode) {
                continue;
            }
            let dup = match pidfd_getfd(&pidfd, fd) {
                Ok(d) => d,
                // Closed (or the process gone) since its descriptors were listed.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBADF | libc::ESRCH)) => continue,
                Err(e) => return Err(e),
            };
            out.extend(describe(&dup, inode));
        }
    }
    Ok(out)
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn pidfd_getfd(pidfd: &OwnedFd, fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd takes a pidfd, a descriptor number in that process and flags,
    // and returns a new descriptor (close-on-exec) or -1.
    let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(dup as RawFd) })
}

fn int_opt(fd: &OwnedFd, level: libc::c_int, name: libc::c_int) -> Option<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `v`, which is that large.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            &mut v as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0).then_some(v)
}

/// The socket as sock_diag would describe it, if it is TCP.
fn describe(fd: &OwnedFd, inode: u64) -> Option<TcpSock> {
    if int_opt(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL)? != libc::IPPROTO_TCP {
        return None;
    }
    // SAFETY: tcp_info is plain data; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info`, which is that large.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut libc::tcp_info as *mut libc::c_void,
            &mut len,
        )
    };
    if r != 0 {
        return None;
    }
    let local = to_std(&getsockname::<SockaddrStorage>(fd.as_raw_fd()).ok()?)?;
    // A listener or an unconnected socket has no peer.
    let remote = getpeername::<SockaddrStorage>(fd.as_raw_fd())
        .ok()
        .and_then(|a| to_std(&a))
        .unwrap_or_else(|| SocketAddr::new(local.ip(), 0).unspecified_like());
    Some(TcpSock {
        local,
        remote,
        state: info.tcpi_state,
        inode,
    })
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    if let Some(v6) = a.as_sockaddr_in6() {
        return Some(SocketAddr::V6(SocketAddrV6::from(*v6)));
    }
    let _ = a.family();
    None
}

trait Unspecified {
    fn unspecified_like(self) -> SocketAddr;
}

impl Unspecified for SocketAddr {
    /// The "any" address of the same family, port 0: how sock_diag shows a missing peer.
    fn unspecified_like(self) -> SocketAddr {
        match self {
            SocketAddr::V4(_) => SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0),
            SocketAddr::V6(_) => SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sockdiag::{TCP_ESTABLISHED, TCP_LISTEN};

    #[test]
    fn the_groups_listener_and_connection_are_described_from_its_own_descriptors() {
        let io = Io::for_tests();
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (s, _) = l.accept().expect("accept");
        let me = nix::unistd::getpgrp().as_raw();
        let socks = group_tcp_sockets(&io, me).expect("pidfd_getfd");
        let listener = socks
            .iter()
            .find(|x| x.local == l.local_addr().expect("addr") && x.state == TCP_LISTEN);
        assert!(listener.is_some(), "{socks:?}");
        let server = socks.iter().find(|x| {
            x.local == s.local_addr().expect("local") && x.remote == s.peer_addr().expect("peer")
        });
        assert_eq!(server.map(|x| x.state), Some(TCP_ESTABLISHED), "{socks:?}");
        drop(c);
    }
}
