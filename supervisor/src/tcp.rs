//! The child's TCP connections: who accepted the probe, which ports it serves, how many
//! requests it still has in flight.
//!
//! Facts come from [`crate::sockdiag`] (netlink, filtered by the kernel), and from
//! `/proc/<pid>/net/tcp` only where netlink is refused or the child lives in another
//! network namespace than steward. Either way, a socket is the child's when one of the
//! processes of its group holds its inode in a descriptor ([`crate::procfs`]).
//!
//! Every function here blocks and takes the I/O worker's [`Io`].

use std::collections::HashSet;
use std::net::SocketAddr;

use crate::{peek, procfs};
use std::time::{Duration, Instant};

use crate::sockdiag::{state_bit, TcpSock, BOTH, TCP_CLOSE_WAIT, TCP_ESTABLISHED, TCP_LISTEN, V4};
use crate::worker::{DrainTrack, Io};

/// Who holds the server side of a probe's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// A process of the child's group accepted it.
    Child,
    /// Nobody yet: it waits in a listener's backlog.
    Queued,
    /// Another process accepted it (socket inode), or it is not the child's yet.
    Other(u64),
    /// The kernel has no such connection (it was reset or closed).
    Gone,
}

/// Who accepted the connection whose server end is `server` and client end `client`.
pub fn probe_owner(io: &mut Io, pgid: i32, server: SocketAddr, client: SocketAddr) -> Owner {
    if let Some(diag) = diag_for(io, pgid) {
        match diag.lookup(server, client) {
            Ok(None) => return Owner::Gone,
            Ok(Some(s)) if s.inode == 0 => return Owner::Queued,
            Ok(Some(s)) => {
                return if procfs::group_holds(io, pgid, s.inode) {
                    Owner::Child
                } else {
                    Owner::Other(s.inode)
                }
            }
            Err(e) => tracing::debug!("sock_diag lookup: {e}; reading /proc instead"),
        }
    }
    let rows = procfs::group_tcp_rows(io, pgid);
    if procfs::accepted_in(&rows, server.port(), client.port()) {
        Owner::Child
    } else {
        Owner::Other(0)
    }
}

/// What a generation serves, taken while its listeners are open: the ports whose
/// downstream connections are its requests in flight, and its listening sockets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub ports: HashSet<u16>,
    pub listeners: HashSet<u64>,
    /// Whether a listener is IPv6: its connections (IPv4 ones too, on a dual-stack
    /// socket) are then IPv6 sockets, and the drain must look at both families.
    pub v6: bool,
}

/// The ports the group listens on, plus `extra` (steward's own listeners and the probe's).
pub fn snapshot(io: &mut Io, pgid: i32, extra: &[u16]) -> Snapshot {
    let held = procfs::group_socket_inodes(io, pgid);
    let mut snap = Snapshot {
        ports: extra.iter().copied().collect(),
        listeners: HashSet::new(),
        v6: false,
    };
    let listening: Vec<(u16, u64, bool)> = match diag_for(io, pgid) {
        // Every listener of the host is few: no port filter needed to find the child's.
        Some(diag) => match diag.dump(state_bit(TCP_LISTEN), &[], BOTH) {
            Ok(socks) => socks
                .iter()
                .map(|s| (s.local.port(), s.inode, s.local.is_ipv6()))
                .collect(),
            Err(e) => {
                tracing::debug!("sock_diag dump: {e}; reading /proc instead");
                procfs_listening(io, pgid)
            }
        },
        None => procfs_listening(io, pgid),
    };
    for (port, inode, v6) in listening {
        if inode != 0 && held.contains(&inode) {
            snap.ports.insert(port);
            snap.listeners.insert(inode);
            snap.v6 |= v6;
        }
    }
    snap
}

fn procfs_listening(io: &mut Io, pgid: i32) -> Vec<(u16, u64, bool)> {
    procfs::group_tcp_rows(io, pgid)
        .into_iter()
        .filter(|r| r.state == procfs::TCP_LISTEN)
        .map(|r| (r.local_port, r.inode, r.local.len() > 13))
        .collect()
}

/// What a drain poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainCount {
    /// Downstream connections the generation still holds.
    pub in_flight: usize,
    /// The generation holds none of its listeners any more: it cannot accept another
    /// connection, so a count of zero is final.
    pub closed: bool,
}

/// How long a generation may hold its listeners after SIGTERM before its connections
/// are counted anyway (Pingora closes them within milliseconds; a child that keeps them
/// open is then drained by `drain_quiet`).
const OPEN_GRACE: Duration = Duration::from_millis(50);
/// How often the connections of a generation that still holds a listener are counted:
/// each count walks the kernel's whole connection table.
const OPEN_RECOUNT: Duration = Duration::from_millis(100);

/// Counts the generation's requests in flight; None when this poll did not count.
///
/// A poll first asks whether it still holds a listener (a dump of listeners alone, which
/// the kernel answers without walking its connections). The moment it holds none, its
/// connections are listed once (a dump filtered by state and port): that list can only
/// shrink, so later polls look up just those connections, a few hash lookups in the
/// kernel whatever the host holds. While it still holds a listener its connections are
/// counted only after `OPEN_GRACE`, and then every `OPEN_RECOUNT`.
pub fn drain(io: &mut Io, gen: u64, pgid: i32, snap: &Snapshot) -> Option<DrainCount> {
    let mut track = io.drains.remove(&gen).unwrap_or_default();
    let count = drain_with(io, &mut track, pgid, snap);
    io.drains.insert(gen, track);
    count
}

/// Forgets a generation that exited.
pub fn forget(io: &mut Io, gen: u64) {
    io.drains.remove(&gen);
}

fn drain_with(
    io: &mut Io,
    track: &mut DrainTrack,
    pgid: i32,
    snap: &Snapshot,
) -> Option<DrainCount> {
    if let Some(pending) = &mut track.pending {
        if let Some(diag) = diag_for(io, pgid) {
            let mut failed = false;
            pending.retain(|c| match diag.lookup(c.local, c.remote) {
                Ok(Some(now)) => {
                    now.inode == c.inode
                        && (now.state == TCP_ESTABLISHED || now.state == TCP_CLOSE_WAIT)
                }
                Ok(None) => false,
                Err(_) => {
                    failed = true;
                    true
                }
            });
            if !failed {
                return Some(DrainCount {
                    in_flight: pending.len(),
                    closed: true,
                });
            }
        }
    }
    let families = if snap.v6 { BOTH } else { V4 };
    let ports: Vec<u16> = snap.ports.iter().copied().collect();
    let held = procfs::group_socket_inodes(io, pgid);
    let Some(diag) = diag_for(io, pgid) else {
        return Some(count_from_proc(io, pgid, snap, &held));
    };
    let listening = match diag.dump(state_bit(TCP_LISTEN), &ports, families) {
        Ok(l) => l,
        Err(_) => return Some(count_from_proc(io, pgid, snap, &held)),
    };
    let closed = !listening
        .iter()
        .any(|s| s.inode != 0 && held.contains(&s.inode));
    let now = Instant::now();
    if !closed {
        let since = *track.open_since.get_or_insert(now);
        let due =
            now >= since + OPEN_GRACE && track.counted_at.is_none_or(|t| now >= t + OPEN_RECOUNT);
        if !due {
            return None;
        }
        track.counted_at = Some(now);
    }
    // The child's own sockets, asked one by one; the host's table only where the kernel
    // refuses that.
    let mine: Vec<TcpSock> = match peek::group_tcp_sockets(io, pgid) {
        Ok(socks) => socks,
        Err(e) => {
            tracing::debug!("pidfd_getfd: {e}; listing the host's connections instead");
            let Some(diag) = diag_for(io, pgid) else {
                return Some(count_from_proc(io, pgid, snap, &held));
            };
            let states = state_bit(TCP_ESTABLISHED) | state_bit(TCP_CLOSE_WAIT);
            match diag.dump(states, &ports, families) {
                Ok(socks) => socks
                    .into_iter()
                    .filter(|s| s.inode != 0 && held.contains(&s.inode))
                    .collect(),
                Err(_) => return Some(count_from_proc(io, pgid, snap, &held)),
            }
        }
    };
    let downstream = downstream(&mine, &snap.ports);
    let in_flight = downstream.len();
    if closed {
        track.pending = Some(downstream);
    }
    Some(DrainCount { in_flight, closed })
}

/// The same count from `/proc/<pid>/net/tcp`: every socket of the namespace, read whole.
fn count_from_proc(io: &mut Io, pgid: i32, snap: &Snapshot, held: &HashSet<u64>) -> DrainCount {
    let mine: Vec<TcpSock> = procfs::group_tcp_rows(io, pgid)
        .into_iter()
        .filter_map(|r| r.to_sock())
        .filter(|s| held.contains(&s.inode))
        .collect();
    let closed = !mine
        .iter()
        .any(|s| s.state == TCP_LISTEN && snap.ports.contains(&s.local.port()));
    DrainCount {
        in_flight: downstream(&mine, &snap.ports).len(),
        closed,
    }
}

/// The group's downstream connections among its sockets: on one of `ports`, and not a
/// connection the group made to itself (a proxy and its built-in origin, whose pooled
/// keep-alive connection would otherwise look like a client forever). Upstream
/// connections have ephemeral local ports and are not counted.
pub fn downstream(mine: &[TcpSock], ports: &HashSet<u16>) -> Vec<TcpSock> {
    let ends: HashSet<(SocketAddr, SocketAddr)> =
        mine.iter().map(|s| (s.local, s.remote)).collect();
    mine.iter()
        .filter(|s| {
            (s.state == TCP_ESTABLISHED || s.state == TCP_CLOSE_WAIT)
                && ports.contains(&s.local.port())
                && !ends.contains(&(s.remote, s.local))
        })
        .copied()
        .collect()
}

/// The netlink socket, where it serves this child: it answers for steward's own network
/// namespace only.
fn diag_for(io: &mut Io, pgid: i32) -> Option<&mut crate::sockdiag::SockDiag> {
    if !procfs::same_netns(io, pgid) {
        return None;
    }
    io.diag.as_mut().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(local: &str, remote: &str, state: u8) -> TcpSock {
        TcpSock {
            local: local.parse().expect("addr"),
            remote: remote.parse().expect("addr"),
            state,
            inode: 1,
        }
    }

    #[test]
    fn client_connections_on_the_ports_are_downstream() {
        let ports = HashSet::from([6188]);
        let socks = [
            sock("127.0.0.1:6188", "0.0.0.0:0", TCP_LISTEN),
            sock("127.0.0.1:6188", "127.0.0.1:50001", TCP_ESTABLISHED),
            sock("127.0.0.1:6188", "127.0.0.1:50002", TCP_CLOSE_WAIT),
            // Upstream: an ephemeral local port.
            sock("127.0.0.1:50003", "127.0.0.1:80", TCP_ESTABLISHED),
        ];
        assert_eq!(downstream(&socks, &ports).len(), 2);
    }

    #[test]
    fn a_connection_the_group_made_to_itself_is_not_downstream() {
        let ports = HashSet::from([6188, 6189]);
        let socks = [
            sock("127.0.0.1:50500", "127.0.0.1:6189", TCP_ESTABLISHED),
            sock("127.0.0.1:6189", "127.0.0.1:50500", TCP_ESTABLISHED),
        ];
        assert!(downstream(&socks, &ports).is_empty());
    }

    #[test]
    fn a_child_that_closed_its_listeners_at_once_is_counted_at_once() {
        let mut io = Io::for_tests();
        let (mut group, _c, snap) = serving_group(&mut io);
        let pgid = group.pgid();
        group.next();
        assert!(eventually(|| snapshot(&mut io, pgid, &[])
            .listeners
            .is_empty()));
        // No waiting for OPEN_GRACE: the first poll that sees no listener counts.
        assert_eq!(
            drain(&mut io, 8, pgid, &snap),
            Some(DrainCount {
                in_flight: 1,
                closed: true
            })
        );
    }

    #[test]
    fn a_connection_being_closed_is_not_in_flight() {
        let ports = HashSet::from([6188]);
        let socks = [sock(
            "127.0.0.1:6188",
            "127.0.0.1:50001",
            4, /* FIN_WAIT1 */
        )];
        assert!(downstream(&socks, &ports).is_empty());
    }

    /// A "child" of its own process group holding sockets it inherited as fds 3 and 4,
    /// which closes them one at a time, each when told to on its stdin.
    struct Group {
        child: std::process::Child,
    }

    impl Group {
        fn holding(fd3: i32, fd4: i32) -> Group {
            use std::os::unix::process::CommandExt;
            let mut cmd = std::process::Command::new("bash");
            cmd.args([
                "-c",
                "read -r _; exec 3<&-; read -r _; exec 4<&-; read -r _",
            ])
            .stdin(std::process::Stdio::piped())
            .process_group(0);
            // SAFETY: fcntl and dup2 are async-signal-safe; nothing else runs between fork
            // and exec.
            unsafe {
                cmd.pre_exec(move || {
                    // Out of the way first: fd3 or fd4 may themselves be 3 or 4.
                    use nix::fcntl::{fcntl, FcntlArg};
                    let a = fcntl(fd3, FcntlArg::F_DUPFD(100))?;
                    let b = fcntl(fd4, FcntlArg::F_DUPFD(100))?;
                    nix::unistd::dup2(a, 3)?;
                    nix::unistd::dup2(b, 4)?;
                    nix::unistd::close(a)?;
                    nix::unistd::close(b)?;
                    Ok(())
                });
            }
            Group {
                child: cmd.spawn().expect("bash"),
            }
        }

        fn pgid(&self) -> i32 {
            self.child.id() as i32
        }

        fn next(&mut self) {
            use std::io::Write;
            let stdin = self.child.stdin.as_mut().expect("stdin");
            stdin.write_all(b"\n").expect("write");
            stdin.flush().expect("flush");
        }
    }

    impl Drop for Group {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Polls until `f` says yes; false after 10 s.
    fn eventually(mut f: impl FnMut() -> bool) -> bool {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < end {
            if f() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        false
    }

    fn server_pair() -> (
        std::net::TcpListener,
        std::net::TcpStream,
        std::net::TcpStream,
    ) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (s, _) = l.accept().expect("accept");
        (l, c, s)
    }

    /// A group that holds a listener and the server end of one connection (the client end
    /// is returned, held by this process), once its snapshot shows the listener.
    fn serving_group(io: &mut Io) -> (Group, std::net::TcpStream, Snapshot) {
        use std::os::fd::AsRawFd;
        let (l, c, s) = server_pair();
        let group = Group::holding(l.as_raw_fd(), s.as_raw_fd());
        let pgid = group.pgid();
        let mut snap = Snapshot::default();
        assert!(eventually(|| {
            snap = snapshot(io, pgid, &[]);
            !snap.listeners.is_empty()
        }));
        (group, c, snap)
    }

    #[test]
    fn a_probe_connection_is_queued_until_accepted_then_owned_by_the_accepting_group() {
        a_probe_connection_is_queued_until_accepted_then_owned_by_the_accepting_group_with(
            Io::for_tests(),
        );
    }

    #[test]
    fn a_probe_connection_is_queued_until_accepted_then_owned_by_the_accepting_group_from_proc_net_tcp(
    ) {
        a_probe_connection_is_queued_until_accepted_then_owned_by_the_accepting_group_with(
            Io::for_tests_without_netlink(),
        );
    }

    fn a_probe_connection_is_queued_until_accepted_then_owned_by_the_accepting_group_with(
        mut io: Io,
    ) {
        use std::os::fd::AsRawFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let server = l.local_addr().expect("addr");
        let c = std::net::TcpStream::connect(server).expect("connect");
        let client = c.local_addr().expect("local");
        let other = std::net::TcpStream::connect(server).expect("connect");
        let (s, _) = l.accept().expect("accept");
        let (s_other, _) = l.accept().expect("accept");
        // A group holding only the accepted socket of `c`.
        let group = Group::holding(s.as_raw_fd(), s.as_raw_fd());
        drop(s);
        let pgid = group.pgid();
        // /proc/net/tcp tells only whether the group holds it; netlink tells more.
        let exact = io.source() == "netlink";
        assert!(eventually(
            || probe_owner(&mut io, pgid, server, client) == Owner::Child
        ));
        // The other connection was accepted by this test process, not by the group.
        let other_client = other.local_addr().expect("local");
        let owner = probe_owner(&mut io, pgid, server, other_client);
        assert_ne!(owner, Owner::Child);
        if exact {
            assert!(matches!(owner, Owner::Other(i) if i != 0), "{owner:?}");
        }
        drop(s_other);
        // Not accepted by anyone yet.
        let queued = std::net::TcpStream::connect(server).expect("connect");
        let queued_client = queued.local_addr().expect("local");
        let owner = probe_owner(&mut io, pgid, server, queued_client);
        assert_ne!(owner, Owner::Child);
        if exact {
            assert_eq!(owner, Owner::Queued);
        }
    }

    #[test]
    fn a_connection_that_never_existed_is_gone() {
        let mut io = Io::for_tests();
        let me = nix::unistd::getpgrp().as_raw();
        let server: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let client: SocketAddr = "127.0.0.1:10".parse().expect("addr");
        assert_eq!(probe_owner(&mut io, me, server, client), Owner::Gone);
    }

    #[test]
    fn the_snapshot_names_the_groups_listeners_and_their_ports() {
        the_snapshot_names_the_groups_listeners_and_their_ports_with(Io::for_tests());
    }

    #[test]
    fn the_snapshot_names_the_groups_listeners_and_their_ports_from_proc_net_tcp() {
        the_snapshot_names_the_groups_listeners_and_their_ports_with(
            Io::for_tests_without_netlink(),
        );
    }

    fn the_snapshot_names_the_groups_listeners_and_their_ports_with(mut io: Io) {
        use std::os::fd::AsRawFd;
        let (l, _c, s) = server_pair();
        let port = l.local_addr().expect("addr").port();
        let group = Group::holding(l.as_raw_fd(), s.as_raw_fd());
        let pgid = group.pgid();
        let mut snap = Snapshot::default();
        assert!(eventually(|| {
            snap = snapshot(&mut io, pgid, &[1]);
            !snap.listeners.is_empty()
        }));
        assert_eq!(snap.ports, HashSet::from([port, 1]));
        assert_eq!(snap.listeners.len(), 1);
    }

    #[test]
    fn the_drain_counts_in_flight_connections_until_the_last_one_is_closed() {
        the_drain_counts_in_flight_connections_until_the_last_one_is_closed_with(Io::for_tests());
    }

    #[test]
    fn the_drain_counts_in_flight_connections_until_the_last_one_is_closed_from_proc_net_tcp() {
        the_drain_counts_in_flight_connections_until_the_last_one_is_closed_with(
            Io::for_tests_without_netlink(),
        );
    }

    fn the_drain_counts_in_flight_connections_until_the_last_one_is_closed_with(mut io: Io) {
        let (mut group, _c, snap) = serving_group(&mut io);
        let pgid = group.pgid();
        // Right after SIGTERM a child that still holds its listener is not counted yet;
        // once it has held it a while, it is.
        let open = DrainCount {
            in_flight: 1,
            closed: false,
        };
        assert!(eventually(|| drain(&mut io, 7, pgid, &snap) == Some(open)));
        // The listener closes (Pingora at SIGTERM): the request is still in flight.
        group.next();
        let closed = DrainCount {
            in_flight: 1,
            closed: true,
        };
        assert!(eventually(|| drain(&mut io, 7, pgid, &snap) == Some(closed)));
        // Its response sent, the child closes the connection: nothing is left, for good.
        group.next();
        let done = DrainCount {
            in_flight: 0,
            closed: true,
        };
        assert!(eventually(|| drain(&mut io, 7, pgid, &snap) == Some(done)));
        assert_eq!(drain(&mut io, 7, pgid, &snap), Some(done));
    }
}
