//! What `/proc` tells about the child's process tree and the sockets it holds.
//!
//! Which processes make up a generation, which socket inodes they hold in descriptors,
//! and, where netlink is refused ([`tcp`](super::tcp)), their rows of `/proc/<pid>/net/tcp`.
//! Every read here blocks: the functions that read take the I/O worker's [`Io`].

use std::collections::{HashMap, HashSet};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::sockdiag::TcpSock;
use crate::worker::Io;

/// A process as `/proc/<pid>/stat` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    pub pgrp: i32,
}

/// Parses `/proc/<pid>/stat`; the command name may itself contain spaces and parentheses.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let pid = text.split_whitespace().next()?.parse().ok()?;
    let after = &text[text.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    let _state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(ProcStat { pid, ppid, pgrp })
}

/// Every process visible in `/proc`.
pub fn all_processes(_: &Io) -> Vec<ProcStat> {
    all_processes_unchecked()
}

fn all_processes_unchecked() -> Vec<ProcStat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let name = e.file_name();
        let name = name.to_str()?;
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        parse_stat(&fs::read_to_string(format!("/proc/{name}/stat")).ok()?)
    })
    .collect()
}

/// The processes of process group `pgid`.
pub fn group_members(procs: &[ProcStat], pgid: i32) -> Vec<i32> {
    procs
        .iter()
        .filter(|p| p.pgrp == pgid)
        .map(|p| p.pid)
        .collect()
}

/// Every descendant of `root` (not `root` itself).
pub fn descendants(procs: &[ProcStat], root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut out = vec![];
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for &c in children.get(&pid).map(Vec::as_slice).unwrap_or(&[]) {
            out.push(c);
            stack.push(c);
        }
    }
    out
}

/// One row of `/proc/<pid>/net/tcp{,6}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpRow {
    /// The kernel's hex `address:port` strings, compared as they are.
    pub local: String,
    pub remote: String,
    pub local_port: u16,
    pub state: u8,
    pub inode: u64,
}

pub const TCP_ESTABLISHED: u8 = 0x01;
pub const TCP_CLOSE_WAIT: u8 = 0x08;
pub const TCP_LISTEN: u8 = 0x0A;

/// Parses the kernel's text table (header line first).
pub fn parse_tcp_table(text: &str) -> Vec<TcpRow> {
    text.lines().skip(1).filter_map(parse_tcp_row).collect()
}

/// One line of the table; None for the header or a line that does not parse.
fn parse_tcp_row(line: &str) -> Option<TcpRow> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let local = f.get(1)?;
    let remote = f.get(2)?;
    let port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
    let state = u8::from_str_radix(f.get(3)?, 16).ok()?;
    let inode = f.get(9)?.parse().ok()?;
    Some(TcpRow {
        local: local.to_string(),
        remote: remote.to_string(),
        local_port: port,
        state,
        inode,
    })
}

/// The socket inode a table line names (its tenth field), read without parsing the rest.
fn row_inode(line: &str) -> Option<u64> {
    line.split_whitespace().nth(9)?.parse().ok()
}

fn socket_inodes(pid: i32) -> impl Iterator<Item = u64> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let target = fs::read_link(e.ok()?.path()).ok()?;
            let t = target.to_str()?;
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
}

fn stat_of(pid: i32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn children_of(pid: i32) -> Vec<i32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return vec![];
    };
    tasks
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// The processes of process group `pgid`, whose leader is steward's child `pgid`.
///
/// Found from the leader down (`/proc/<pid>/task/<tid>/children`) plus steward's own
/// children (orphans of the group re-parented to steward): a few reads for a generation
/// of one process, where a scan of `/proc` costs as many reads as the host has processes.
pub fn group_pids(_: &Io, pgid: i32) -> Vec<i32> {
    if !std::path::Path::new(&format!("/proc/{pgid}/task/{pgid}/children")).exists() {
        // A kernel without CONFIG_PROC_CHILDREN: the whole scan.
        return group_members(&all_processes_unchecked(), pgid);
    }
    let mut out = vec![];
    let mut seen = HashSet::new();
    let me = std::process::id() as i32;
    let mut stack: Vec<i32> = std::iter::once(pgid).chain(children_of(me)).collect();
    while let Some(pid) = stack.pop() {
        if !seen.insert(pid) {
            continue;
        }
        if stat_of(pid).is_some_and(|s| s.pgrp == pgid) {
            out.push(pid);
            stack.extend(children_of(pid));
        }
    }
    out
}

/// The socket descriptors of each process of the group: (pid, [(fd, inode)]).
pub fn group_socket_fds(io: &Io, pgid: i32) -> Vec<(i32, Vec<(i32, u64)>)> {
    group_pids(io, pgid)
        .into_iter()
        .map(|pid| {
            let fds = fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .filter_map(|e| {
                    let e = e.ok()?;
                    let fd: i32 = e.file_name().to_str()?.parse().ok()?;
                    let target = fs::read_link(e.path()).ok()?;
                    let inode = target
                        .to_str()?
                        .strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .parse()
                        .ok()?;
                    Some((fd, inode))
                })
                .collect();
            (pid, fds)
        })
        .collect()
}

/// Socket inodes any process of the group holds.
pub fn group_socket_inodes(io: &Io, pgid: i32) -> HashSet<u64> {
    group_pids(io, pgid)
        .into_iter()
        .flat_map(socket_inodes)
        .collect()
}

/// Whether a process of the group holds socket `inode`; stops at the first that does.
pub fn group_holds(io: &Io, pgid: i32, inode: u64) -> bool {
    group_pids(io, pgid)
        .into_iter()
        .any(|p| socket_inodes(p).any(|i| i == inode))
}

/// Whether `pid` lives in steward's own network namespace, the one its netlink socket
/// answers for.
pub fn same_netns(_: &Io, pid: i32) -> bool {
    match (
        fs::read_link(format!("/proc/{pid}/ns/net")),
        fs::read_link("/proc/self/ns/net"),
    ) {
        (Ok(a), Ok(b)) => a == b,
        // Cannot tell: assume the common case.
        _ => true,
    }
}

/// TCP rows of `/proc/<pid>/net/tcp{,6}` whose socket a process of the group holds.
pub fn group_tcp_rows(io: &Io, pgid: i32) -> Vec<TcpRow> {
    let members = group_pids(io, pgid);
    let Some(&first) = members.first() else {
        return vec![];
    };
    let inodes: HashSet<u64> = members.iter().flat_map(|&p| socket_inodes(p)).collect();
    // One network namespace for the whole group: one table read is enough. Read line by
    // line and keep only the group's rows: with tens of thousands of TIME_WAIT entries the
    // whole table is megabytes, and such buffers would stay in the worker's malloc arena.
    let mut rows = vec![];
    for t in ["tcp", "tcp6"] {
        let Ok(f) = fs::File::open(format!("/proc/{first}/net/{t}")) else {
            continue;
        };
        for line in std::io::BufRead::lines(std::io::BufReader::new(f)).map_while(Result::ok) {
            if row_inode(&line).is_some_and(|i| i != 0 && inodes.contains(&i)) {
                rows.extend(parse_tcp_row(&line));
            }
        }
    }
    rows
}

/// Whether `rows` hold the server side of the connection from client port `client_port`
/// to `port`: that is, the group accepted it.
pub fn accepted_in(rows: &[TcpRow], port: u16, client_port: u16) -> bool {
    rows.iter().any(|r| {
        r.local_port == port
            && r.state == TCP_ESTABLISHED
            && r.remote
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
                == Some(client_port)
    })
}

/// Whether `pid` is gone: no longer in /proc, or dead and waiting to be reaped.
pub fn is_gone(_: &Io, pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = &s[s.rfind(')')? + 1..];
            after
                .split_whitespace()
                .next()
                .map(|st| st == "Z" || st == "X")
        })
        .unwrap_or(true)
}

/// Whether `pid` belongs to process group `pgid`.
pub fn in_group(_: &Io, pid: i32, pgid: i32) -> bool {
    pid == pgid || stat_of(pid).is_some_and(|s| s.pgrp == pgid)
}

impl TcpRow {
    /// The row as sock_diag would describe it.
    pub fn to_sock(&self) -> Option<TcpSock> {
        Some(TcpSock {
            local: parse_hex_addr(&self.local)?,
            remote: parse_hex_addr(&self.remote)?,
            state: self.state,
            inode: self.inode,
        })
    }
}

/// The kernel's `address:port` in hex: the address as the kernel stores it (32-bit words
/// in host order), the port big-endian as text.
fn parse_hex_addr(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(|w| w.to_ne_bytes());
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(addr.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_the_name_is_parsed() {
        let s = parse_stat("1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 ...").expect("ok");
        assert_eq!(
            s,
            ProcStat {
                pid: 1234,
                ppid: 1,
                pgrp: 1234
            }
        );
    }

    #[test]
    fn descendants_follow_the_whole_tree() {
        let p = |pid, ppid| ProcStat {
            pid,
            ppid,
            pgrp: pid,
        };
        let procs = [p(10, 1), p(11, 10), p(12, 11), p(13, 1), p(14, 12)];
        let mut d = descendants(&procs, 10);
        d.sort();
        assert_eq!(d, vec![11, 12, 14]);
    }

    #[test]
    fn tcp_table_rows_are_parsed() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1A0B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 55123 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:1A0B 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 55124 1 0000000000000000 20 4 30 10 -1\n";
        let rows = parse_tcp_table(text);
        assert_eq!(
            rows,
            vec![
                TcpRow {
                    local: "0100007F:1A0B".into(),
                    remote: "00000000:0000".into(),
                    local_port: 0x1A0B,
                    state: TCP_LISTEN,
                    inode: 55123
                },
                TcpRow {
                    local: "0100007F:1A0B".into(),
                    remote: "0100007F:D431".into(),
                    local_port: 0x1A0B,
                    state: TCP_ESTABLISHED,
                    inode: 55124
                }
            ]
        );
    }

    #[test]
    fn a_table_row_reads_as_the_socket_netlink_would_describe() {
        let row = parse_tcp_table(
            "  sl  local_address rem_address   st\n   1: 0100007F:1A0B 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 55124 1\n",
        );
        let s = row[0].to_sock().expect("parses");
        assert_eq!(s.local, "127.0.0.1:6667".parse().expect("addr"));
        assert_eq!(s.remote, "127.0.0.1:54321".parse().expect("addr"));
        assert_eq!((s.state, s.inode), (TCP_ESTABLISHED, 55124));
    }

    #[test]
    fn an_ipv6_table_address_is_read_word_by_word() {
        // ::1 as /proc/net/tcp6 prints it on a little-endian host.
        let a = parse_hex_addr("00000000000000000000000001000000:1A0B").expect("parses");
        if cfg!(target_endian = "little") {
            assert_eq!(a, "[::1]:6667".parse().expect("addr"));
        }
        assert_eq!(parse_hex_addr("0100007F"), None);
        assert_eq!(parse_hex_addr("01007F:0050"), None);
    }
}
