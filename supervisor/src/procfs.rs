//! What `/proc` tells about the child's process tree and its TCP connections.
//!
//! This is how steward sees a stock Pingora child drain. Pingora 0.9.1 closes its listeners
//! and idle keep-alive connections at SIGTERM, then sleeps out its grace period whatever
//! is left; the requests still in flight are exactly the ESTABLISHED connections the child
//! holds on its listening ports. When that count reaches zero, nothing is left to wait for.

use std::collections::{HashMap, HashSet};
use std::fs;

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
pub fn all_processes() -> Vec<ProcStat> {
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

fn socket_inodes(pid: i32) -> HashSet<u64> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    dir.filter_map(|e| {
        let target = fs::read_link(e.ok()?.path()).ok()?;
        let t = target.to_str()?;
        t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
    })
    .collect()
}

/// TCP sockets owned by any process of the group: rows whose inode one of them holds.
fn group_sockets(pgid: i32) -> Vec<TcpRow> {
    let members = group_members(&all_processes(), pgid);
    let Some(&first) = members.first() else {
        return vec![];
    };
    let inodes: HashSet<u64> = members.iter().flat_map(|&p| socket_inodes(p)).collect();
    // One network namespace for the whole group: one table read is enough. Read line by
    // line and keep only the group's rows: with tens of thousands of TIME_WAIT entries the
    // whole table is megabytes, and on the blocking thread that reads it such buffers
    // stay in its malloc arena (steward's RSS would grow by tens of MiB).
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

/// Whether `pid` is gone: no longer in /proc, or dead and waiting to be reaped.
pub fn is_gone(pid: i32) -> bool {
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
pub fn in_group(pid: i32, pgid: i32) -> bool {
    pid == pgid
        || fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|t| parse_stat(&t))
            .is_some_and(|s| s.pgrp == pgid)
}

/// Whether the group holds the server side of the connection from client port
/// `client_port` to `port`: that is, one of its processes accepted it.
pub fn accepted_by(pgid: i32, port: u16, client_port: u16) -> bool {
    group_sockets(pgid).into_iter().any(|r| {
        r.local_port == port
            && r.state == TCP_ESTABLISHED
            && r.remote
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
                == Some(client_port)
    })
}

/// Socket inodes any process of the group holds.
pub fn group_socket_inodes(pgid: i32) -> HashSet<u64> {
    group_members(&all_processes(), pgid)
        .into_iter()
        .flat_map(socket_inodes)
        .collect()
}

/// Ports the group listens on.
pub fn listening_ports(pgid: i32) -> HashSet<u16> {
    group_sockets(pgid)
        .into_iter()
        .filter(|r| r.state == TCP_LISTEN)
        .map(|r| r.local_port)
        .collect()
}

/// Downstream connections the group still holds on `ports`: requests in flight, or about
/// to be closed. Upstream connections have ephemeral local ports and are not counted, nor
/// are connections the group made to itself (a proxy and its built-in origin, whose pooled
/// keep-alive connection would otherwise look like a client forever).
pub fn downstream_connections(pgid: i32, ports: &HashSet<u16>) -> usize {
    count_downstream(&group_sockets(pgid), ports)
}

fn count_downstream(rows: &[TcpRow], ports: &HashSet<u16>) -> usize {
    let own: HashSet<(&str, &str)> = rows
        .iter()
        .map(|r| (r.local.as_str(), r.remote.as_str()))
        .collect();
    rows.iter()
        .filter(|r| {
            (r.state == TCP_ESTABLISHED || r.state == TCP_CLOSE_WAIT)
                && ports.contains(&r.local_port)
                && !own.contains(&(r.remote.as_str(), r.local.as_str()))
        })
        .count()
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

    fn row(local: &str, remote: &str, state: u8) -> TcpRow {
        TcpRow {
            local: local.into(),
            remote: remote.into(),
            local_port: u16::from_str_radix(local.rsplit(':').next().unwrap_or("0"), 16)
                .unwrap_or(0),
            state,
            inode: 1,
        }
    }

    #[test]
    fn client_connections_on_listening_ports_are_counted() {
        let ports = HashSet::from([0x1A0B]);
        let rows = [
            row("0100007F:1A0B", "00000000:0000", TCP_LISTEN),
            row("0100007F:1A0B", "0100007F:D431", TCP_ESTABLISHED),
            row("0100007F:1A0B", "0100007F:D432", TCP_CLOSE_WAIT),
            // An upstream connection: ephemeral local port.
            row("0100007F:C000", "0100007F:0050", TCP_ESTABLISHED),
        ];
        assert_eq!(count_downstream(&rows, &ports), 2);
    }

    #[test]
    fn connections_to_itself_are_not_downstream() {
        // The proxy (ephemeral port D500) pools a keep-alive connection to its own origin
        // listening on 1A0C: both ends belong to the group.
        let ports = HashSet::from([0x1A0B, 0x1A0C]);
        let rows = [
            row("0100007F:D500", "0100007F:1A0C", TCP_ESTABLISHED),
            row("0100007F:1A0C", "0100007F:D500", TCP_ESTABLISHED),
        ];
        assert_eq!(count_downstream(&rows, &ports), 0);
    }
}
