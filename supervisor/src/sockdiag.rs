//! TCP socket facts from the kernel's `sock_diag` netlink interface (inet_diag).
//!
//! `/proc/net/tcp` is text the kernel formats for every socket of the namespace at each
//! read, and re-walks its hash for every chunk: on a host with 100,000 sockets one read
//! costs hundreds of milliseconds, whichever few of them steward cares about. inet_diag
//! answers the two questions steward asks without that:
//! - **who holds this connection?** an exact lookup by 4-tuple ([`SockDiag::lookup`]): a
//!   hash lookup in the kernel, whatever the host holds;
//! - **which connections does the child have on its ports?** a dump filtered in the kernel
//!   by TCP state and by port ([`SockDiag::dump`]): only the matching sockets cross into
//!   steward.
//!
//! The messages are built and parsed with `netlink-packet-sock-diag` (the request, the
//! response, the socket id) over a `netlink-sys` socket. Chosen because they are the
//! rust-netlink project's maintained crates (the same family as `rtnetlink`), are
//! synchronous (steward's I/O worker is a plain thread: see [`worker`](super::worker)), and carry
//! no runtime of their own. The one thing they do not model is the request's filter
//! program (`INET_DIAG_REQ_BYTECODE`), so [`bytecode`] builds it the way `ss` does and it
//! is appended to the crate's serialized request as one netlink attribute.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr as NlAddr};

pub use netlink_packet_sock_diag::constants::{TCP_CLOSE_WAIT, TCP_ESTABLISHED, TCP_LISTEN};

/// The request attribute that carries a filter program (linux/inet_diag.h).
const INET_DIAG_REQ_BYTECODE: u16 = 1;
/// "No cookie": an exact lookup matches by 4-tuple alone.
const NO_COOKIE: [u8; 8] = [0xff; 8];
/// A stuck reply must not stall the worker for long: every answer the kernel gives here
/// is immediate.
const RECV_TIMEOUT: Duration = Duration::from_secs(2);
/// Dump replies come in batches of at most 32 KiB.
const RECV_BUF: usize = 64 * 1024;

/// One TCP socket as the kernel describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpSock {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    /// The socket's inode: 0 while nobody holds it in a descriptor (a connection waiting
    /// in a listener's backlog, or one already closed by its process).
    pub inode: u64,
}

/// IPv4 and IPv6.
pub const BOTH: &[u8] = &[AF_INET, AF_INET6];
/// IPv4 alone.
pub const V4: &[u8] = &[AF_INET];

/// Bit for TCP state `s` in a request's state mask.
pub const fn state_bit(s: u8) -> u32 {
    1 << s
}

/// A netlink socket for inet_diag queries, owned by the I/O worker.
pub struct SockDiag {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl SockDiag {
    /// Opens the netlink socket. Fails where it is refused, for example under systemd's
    /// `RestrictAddressFamilies=` without `AF_NETLINK` or a seccomp filter.
    pub fn open() -> io::Result<SockDiag> {
        let mut sock = Socket::new(NETLINK_SOCK_DIAG)?;
        sock.bind_auto()?;
        sock.connect(&NlAddr::new(0, 0))?;
        // Marked close-on-exec by netlink-sys? Not documented: make sure no child inherits it.
        nix::fcntl::fcntl(
            sock.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(io::Error::from)?;
        let tv = nix::sys::time::TimeVal::new(RECV_TIMEOUT.as_secs() as i64, 0);
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
            .map_err(io::Error::from)?;
        let mut s = SockDiag {
            sock,
            seq: 0,
            buf: vec![0; RECV_BUF],
        };
        // A first query proves the kernel answers (inet_diag may be a module not loaded,
        // or refused by an LSM) before anything relies on it.
        s.dump(state_bit(TCP_LISTEN), &[0], V4)?;
        Ok(s)
    }

    /// The connection whose local end is `local` and remote end `remote`, if the kernel
    /// has one. An IPv4 pair also finds the socket of a dual-stack IPv6 listener.
    pub fn lookup(&mut self, local: SocketAddr, remote: SocketAddr) -> io::Result<Option<TcpSock>> {
        // A dual-stack socket's IPv4 connection, as its own getsockname shows it
        // (::ffff:a.b.c.d), is found by an IPv4 lookup.
        let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
        let (local, remote) = match (canonical(local), canonical(remote)) {
            (l @ SocketAddr::V4(_), r @ SocketAddr::V4(_)) => (l, r),
            _ => (local, remote),
        };
        let family = match local.ip() {
            IpAddr::V4(_) => AF_INET,
            IpAddr::V6(_) => AF_INET6,
        };
        let req = InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: SocketId {
                source_port: local.port(),
                destination_port: remote.port(),
                source_address: local.ip(),
                destination_address: remote.ip(),
                interface_id: 0,
                cookie: NO_COOKIE,
            },
        };
        let bytes = request_bytes(req, false, None, self.next_seq());
        let mut found = None;
        // With no such connection the kernel answers with the listener the 4-tuple would
        // reach, if any: that is not the connection asked for.
        let exact = |s: &TcpSock| same(s.remote, remote) && same(s.local, local);
        match self.exchange(&bytes, |s| found = Some(s).filter(exact)) {
            Ok(()) => Ok(found),
            // The kernel's answer to "no such socket".
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every TCP socket of `families` ([`BOTH`], or [`V4`] alone) in one of `states` (a
    /// mask of [`state_bit`]s) whose local or remote port is one of `ports`, filtered by
    /// the kernel. Each family is one walk of the kernel's whole connection hash (unless
    /// `states` is LISTEN alone, which walks only the listeners): ask for the families
    /// that matter.
    pub fn dump(
        &mut self,
        states: u32,
        ports: &[u16],
        families: &[u8],
    ) -> io::Result<Vec<TcpSock>> {
        let program = bytecode::any_port(ports);
        let mut out = vec![];
        for &family in families {
            let socket_id = match family {
                AF_INET => SocketId::new_v4(),
                _ => SocketId::new_v6(),
            };
            let req = InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::from_bits_truncate(states),
                socket_id,
            };
            let bytes = request_bytes(req, true, Some(&program), self.next_seq());
            self.exchange(&bytes, |s| out.push(s))?;
        }
        Ok(out)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends one request and feeds every socket of the answer to `each`, until the
    /// kernel says it is done (a dump) or has answered (a lookup).
    fn exchange(&mut self, request: &[u8], mut each: impl FnMut(TcpSock)) -> io::Result<()> {
        self.sock.send(request, 0)?;
        let seq = u32::from_ne_bytes([request[8], request[9], request[10], request[11]]);
        let dump = u16::from_ne_bytes([request[6], request[7]]) & NLM_F_DUMP != 0;
        loop {
            let n = self.sock.recv(&mut &mut self.buf[..], 0)?;
            match parse_batch(&self.buf[..n], seq, &mut each)? {
                Batch::Done => return Ok(()),
                Batch::More if !dump => return Ok(()),
                Batch::More => {}
            }
        }
    }
}

/// Whether two ends are one: an IPv4 address and its IPv4-mapped IPv6 form (a
/// dual-stack socket's view of it) are.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

/// What one datagram of replies said.
#[derive(Debug, PartialEq, Eq)]
enum Batch {
    /// The answer is complete.
    Done,
    /// More may follow (a dump not yet at its end).
    More,
}

/// The bytes of one request: the crate's serialized message, plus the filter program as
/// an `INET_DIAG_REQ_BYTECODE` attribute when there is one.
fn request_bytes(req: InetRequest, dump: bool, program: Option<&[u8]>, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(header, SockDiagMessage::InetRequest(req).into());
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    if let Some(program) = program.filter(|p| !p.is_empty()) {
        // rtattr: u16 length (header included), u16 type, then the payload, padded to 4.
        let attr_len = 4 + program.len();
        buf.extend_from_slice(&(attr_len as u16).to_ne_bytes());
        buf.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
        buf.extend_from_slice(program);
        buf.resize(buf.len().next_multiple_of(4), 0);
        let total = buf.len() as u32;
        buf[..4].copy_from_slice(&total.to_ne_bytes());
    }
    buf
}

/// Walks the netlink messages of one datagram.
fn parse_batch(mut bytes: &[u8], seq: u32, each: &mut impl FnMut(TcpSock)) -> io::Result<Batch> {
    while bytes.len() >= 16 {
        let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if len < 16 || len > bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("sock_diag: a message claims {len} bytes of {}", bytes.len()),
            ));
        }
        let msg_seq = u32::from_ne_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        let this = &bytes[..len];
        bytes = &bytes[len.next_multiple_of(4).min(bytes.len())..];
        // A late answer to an earlier request (one that timed out) is not this one's.
        if msg_seq != seq {
            continue;
        }
        let msg = NetlinkMessage::<SockDiagMessage>::deserialize(this)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {e}")))?;
        match msg.payload {
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                let h = &r.header;
                each(TcpSock {
                    local: SocketAddr::new(h.socket_id.source_address, h.socket_id.source_port),
                    remote: SocketAddr::new(
                        h.socket_id.destination_address,
                        h.socket_id.destination_port,
                    ),
                    state: h.state,
                    inode: u64::from(h.inode),
                });
            }
            NetlinkPayload::Done(_) => return Ok(Batch::Done),
            NetlinkPayload::Error(e) => {
                return match e.code {
                    Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                    None => Ok(Batch::Done),
                }
            }
            _ => {}
        }
    }
    Ok(Batch::More)
}

/// Filter programs for `INET_DIAG_REQ_BYTECODE`, built as `ss` builds them.
///
/// The kernel runs a program of 4-byte ops (`code`, `yes`, `no`): when an op's condition
/// holds it moves `yes` bytes on, otherwise `no` bytes; the socket matches when the
/// program ends exactly at its end, and not when it jumps 4 bytes past it. A port test
/// is two ops, the second carrying the port in its `no` field. A block of length `L`
/// therefore "passes" by running off its end and "fails" by jumping to `L + 4`, so two
/// blocks make an OR with a jump between them, and an AND by concatenation with the
/// first block's failures moved past the second. The kernel checks (`inet_diag_bc_audit`)
/// that every jump lands on an op on the path of `yes` moves, which these do.
pub mod bytecode {
    pub const NOP: u8 = 0;
    pub const JMP: u8 = 1;
    pub const S_GE: u8 = 2;
    pub const S_LE: u8 = 3;
    pub const D_GE: u8 = 4;
    pub const D_LE: u8 = 5;

    fn op(code: u8, yes: u8, no: u16) -> [u8; 4] {
        let n = no.to_ne_bytes();
        [code, yes, n[0], n[1]]
    }

    /// One comparison of a port: `code` is S_GE, S_LE, D_GE or D_LE.
    fn compare(code: u8, port: u16) -> Vec<u8> {
        [op(code, 8, 12), op(0, 0, port)].concat()
    }

    /// `a` and then `b`.
    fn and(mut a: Vec<u8>, b: Vec<u8>) -> Vec<u8> {
        // Every failure exit of `a` (a jump to its end + 4) now goes past `b`.
        let len = a.len();
        let mut at = 0;
        while at < len {
            let no = u16::from_ne_bytes([a[at + 2], a[at + 3]]) as usize;
            if a[at] != NOP && at + no == len + 4 {
                let moved = ((no + b.len()) as u16).to_ne_bytes();
                a[at + 2] = moved[0];
                a[at + 3] = moved[1];
            }
            at += a[at + 1] as usize;
        }
        a.extend(b);
        a
    }

    /// `a` or `b`.
    fn or(mut a: Vec<u8>, b: Vec<u8>) -> Vec<u8> {
        a.extend(op(JMP, 4, (b.len() + 4) as u16));
        a.extend(b);
        a
    }

    fn port_is(source: bool, port: u16) -> Vec<u8> {
        let (ge, le) = if source { (S_GE, S_LE) } else { (D_GE, D_LE) };
        and(compare(ge, port), compare(le, port))
    }

    /// Sockets whose local or remote port is one of `ports`: the child's side of its
    /// downstream connections, and the client side of the ones it made to itself.
    /// Empty when `ports` is empty: no filter, every socket.
    pub fn any_port(ports: &[u16]) -> Vec<u8> {
        let mut tests = ports
            .iter()
            .flat_map(|&p| [port_is(true, p), port_is(false, p)]);
        let Some(first) = tests.next() else {
            return vec![];
        };
        // Right-nested, like ss: each failure falls through to the next test.
        let rest: Vec<Vec<u8>> = tests.collect();
        std::iter::once(first)
            .chain(rest)
            .rev()
            .reduce(|acc, t| or(t, acc))
            .unwrap_or_default()
    }

    /// The kernel's interpreter (`inet_diag_bc_run`), for tests.
    #[cfg(test)]
    pub fn run(program: &[u8], sport: u16, dport: u16) -> bool {
        let mut at: isize = 0;
        let mut len = program.len() as isize;
        while len > 0 {
            let i = at as usize;
            let code = program[i];
            let yes = program[i + 1] as isize;
            let no = u16::from_ne_bytes([program[i + 2], program[i + 3]]) as isize;
            let port = || u16::from_ne_bytes([program[i + 6], program[i + 7]]);
            let pass = match code {
                NOP => true,
                JMP => false,
                S_GE => sport >= port(),
                S_LE => sport <= port(),
                D_GE => dport >= port(),
                D_LE => dport <= port(),
                _ => panic!("op {code} not supported"),
            };
            let step = if pass { yes } else { no };
            at += step;
            len -= step;
        }
        len == 0
    }

    /// The kernel's checks (`inet_diag_bc_audit` with `valid_cc`), for tests.
    #[cfg(test)]
    pub fn audit(program: &[u8]) -> Result<(), String> {
        let valid_cc = |cc: isize| {
            let mut len = program.len() as isize;
            let mut at = 0usize;
            while len >= 0 {
                if cc > len {
                    return false;
                }
                if cc == len {
                    return true;
                }
                let yes = program[at + 1] as isize;
                if yes < 4 || yes % 4 != 0 {
                    return false;
                }
                len -= yes;
                at += yes as usize;
            }
            false
        };
        let mut len = program.len() as isize;
        let mut at = 0usize;
        while len > 0 {
            let code = program[at];
            let yes = program[at + 1] as isize;
            let no = u16::from_ne_bytes([program[at + 2], program[at + 3]]) as isize;
            let min_len = match code {
                S_GE | S_LE | D_GE | D_LE => {
                    if len < 8 {
                        return Err(format!("port op at {at} is cut off"));
                    }
                    8
                }
                NOP | JMP => 4,
                c => return Err(format!("unknown op {c}")),
            };
            if code != NOP {
                if no < min_len || no > len + 4 || no % 4 != 0 {
                    return Err(format!("op at {at}: bad no {no}"));
                }
                if no < len && !valid_cc(len - no) {
                    return Err(format!("op at {at}: no {no} lands off the path"));
                }
            }
            if yes < min_len || yes > len + 4 || yes % 4 != 0 {
                return Err(format!("op at {at}: bad yes {yes}"));
            }
            at += yes as usize;
            len -= yes;
        }
        if len == 0 {
            Ok(())
        } else {
            Err(format!("ends {len} bytes off"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    #[test]
    fn the_port_filter_matches_a_listed_port_at_either_end_and_nothing_else() {
        let p = bytecode::any_port(&[80, 6188, 6190]);
        bytecode::audit(&p).expect("the kernel would accept the program");
        for port in [80, 6188, 6190] {
            assert!(bytecode::run(&p, port, 40000), "sport {port}");
            assert!(bytecode::run(&p, 40000, port), "dport {port}");
        }
        for port in [0, 79, 81, 6187, 6189, 6191, 65535] {
            assert!(!bytecode::run(&p, port, 40000), "sport {port}");
            assert!(!bytecode::run(&p, 40000, port), "dport {port}");
        }
    }

    #[test]
    fn a_one_port_filter_is_accepted_and_exact() {
        let p = bytecode::any_port(&[1]);
        bytecode::audit(&p).expect("valid");
        assert!(bytecode::run(&p, 1, 9));
        assert!(!bytecode::run(&p, 0, 2));
        assert!(!bytecode::run(&p, 2, 0));
    }

    #[test]
    fn no_ports_means_no_filter() {
        assert!(bytecode::any_port(&[]).is_empty());
    }

    #[test]
    fn a_request_carries_its_filter_as_one_attribute_counted_in_its_length() {
        let program = bytecode::any_port(&[6188]);
        let req = InetRequest {
            family: AF_INET,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::ESTABLISHED,
            socket_id: SocketId::new_v4(),
        };
        let bytes = request_bytes(req.clone(), true, Some(&program), 7);
        let bare = request_bytes(req, true, None, 7);
        // nlmsghdr (16) + inet_diag_req_v2 (56), then the attribute.
        assert_eq!(bare.len(), 72);
        assert_eq!(bytes.len(), 72 + 4 + program.len());
        assert_eq!(
            u32::from_ne_bytes(bytes[..4].try_into().expect("4")) as usize,
            bytes.len()
        );
        assert_eq!(
            u16::from_ne_bytes([bytes[72], bytes[73]]) as usize,
            4 + program.len()
        );
        assert_eq!(
            u16::from_ne_bytes([bytes[74], bytes[75]]),
            INET_DIAG_REQ_BYTECODE
        );
        assert_eq!(&bytes[76..], &program[..]);
        // Flags: a dump request; sequence number as given.
        let flags = u16::from_ne_bytes([bytes[6], bytes[7]]);
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().expect("4")), 7);
    }

    fn response(seq: u32, port: u16, inode: u32) -> Vec<u8> {
        use netlink_packet_sock_diag::inet::{InetResponse, InetResponseHeader};
        let mut id = SocketId::new_v4();
        id.source_port = port;
        id.destination_port = 50000;
        let header = InetResponseHeader {
            family: AF_INET,
            state: TCP_ESTABLISHED,
            timer: None,
            socket_id: id,
            recv_queue: 0,
            send_queue: 0,
            uid: 0,
            inode,
        };
        let mut h = NetlinkHeader::default();
        h.sequence_number = seq;
        let mut msg = NetlinkMessage::new(
            h,
            SockDiagMessage::InetResponse(Box::new(InetResponse {
                header,
                nlas: Default::default(),
            }))
            .into(),
        );
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf
    }

    #[test]
    fn replies_to_another_request_are_skipped() {
        let mut batch = response(3, 6188, 11);
        batch.extend(response(4, 6188, 12));
        let mut seen = vec![];
        let r = parse_batch(&batch, 4, &mut |s: TcpSock| seen.push(s.inode)).expect("parse");
        assert_eq!(r, Batch::More);
        assert_eq!(seen, vec![12]);
    }

    #[test]
    fn a_message_longer_than_its_datagram_is_an_error() {
        let mut batch = response(1, 6188, 11);
        batch.truncate(40);
        let r = parse_batch(&batch, 1, &mut |_| {});
        assert!(r.is_err(), "{r:?}");
    }

    fn socket_inode(fd: i32) -> u64 {
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).expect("fd link");
        link.to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse().ok())
            .expect("a socket")
    }

    #[test]
    fn the_kernel_finds_an_accepted_connection_by_its_four_tuple() {
        let mut diag = SockDiag::open().expect("sock_diag");
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (local, remote) = (
            client.peer_addr().expect("peer"),
            client.local_addr().expect("local"),
        );
        // In the backlog, nobody holds it yet.
        let queued = diag.lookup(local, remote).expect("lookup").expect("found");
        assert_eq!(queued.state, TCP_ESTABLISHED);
        assert_eq!(queued.inode, 0);
        let (server, _) = l.accept().expect("accept");
        let accepted = diag.lookup(local, remote).expect("lookup").expect("found");
        assert_eq!(accepted.inode, socket_inode(server.as_raw_fd()));
        // The client's own end is another socket.
        let other = diag.lookup(remote, local).expect("lookup").expect("found");
        assert_eq!(other.inode, socket_inode(client.as_raw_fd()));
    }

    #[test]
    fn a_connection_that_does_not_exist_is_not_found() {
        let mut diag = SockDiag::open().expect("sock_diag");
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let local = l.local_addr().expect("addr");
        let remote: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        assert_eq!(diag.lookup(local, remote).expect("lookup"), None);
    }

    #[test]
    fn a_filtered_dump_returns_the_sockets_on_the_ports_and_no_others() {
        let mut diag = SockDiag::open().expect("sock_diag");
        let watched = TcpListener::bind("127.0.0.1:0").expect("bind");
        let other = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = watched.local_addr().expect("addr").port();
        let _c1 = TcpStream::connect(watched.local_addr().expect("a")).expect("connect");
        let _c2 = TcpStream::connect(other.local_addr().expect("a")).expect("connect");
        let (s1, _) = watched.accept().expect("accept");
        let (_s2, _) = other.accept().expect("accept");
        let est = diag
            .dump(state_bit(TCP_ESTABLISHED), &[port], BOTH)
            .expect("dump");
        // Both ends of the one connection on `port`; nothing of the other listener's.
        assert_eq!(est.len(), 2, "{est:?}");
        assert!(est.iter().any(|s| s.inode == socket_inode(s1.as_raw_fd())));
        assert!(est
            .iter()
            .all(|s| s.local.port() == port || s.remote.port() == port));
        let listening = diag
            .dump(state_bit(TCP_LISTEN), &[port], BOTH)
            .expect("dump");
        assert_eq!(listening.len(), 1, "{listening:?}");
        assert_eq!(listening[0].inode, socket_inode(watched.as_raw_fd()));
    }

    #[test]
    fn ipv6_sockets_are_dumped_too() {
        let Ok(l) = TcpListener::bind("[::1]:0") else {
            return; // No IPv6 loopback on this host.
        };
        let mut diag = SockDiag::open().expect("sock_diag");
        let port = l.local_addr().expect("addr").port();
        let listening = diag
            .dump(state_bit(TCP_LISTEN), &[port], BOTH)
            .expect("dump");
        assert_eq!(listening.len(), 1, "{listening:?}");
        assert!(listening[0].local.is_ipv6());
    }
}
