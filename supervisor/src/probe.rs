//! Readiness: does the child really serve?
//!
//! A TCP connect that succeeds, or a `GET` that answers 200, on a connection the child's
//! own process group accepted (see [`attempt_owned`]).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{HttpUrl, Probe};
use crate::procfs;
use crate::tcp::{self, Owner};
use crate::worker::Worker;

/// How long an accepted probe connection may take to show up in the child's `/proc`.
const OWNER_WAIT: Duration = Duration::from_millis(200);
/// How long a connection another process accepted is looked at again: only the instant
/// between `accept()` giving the socket its inode and the descriptor landing in the
/// accepting process's table. During a reload the retired generation still accepts on the
/// health port it shares (SO_REUSEPORT) with the new one, and the kernel hands it about
/// half of the probe's connections: waiting the full [`OWNER_WAIT`] on each of those made
/// a reload 200 ms longer per miss. A new attempt, on a new connection, comes sooner.
const OTHER_WAIT: Duration = Duration::from_millis(20);
const OWNER_POLL: Duration = Duration::from_millis(2);
/// One look at the kernel's tables takes microseconds; a worker that is this late is stuck.
const WORKER_WAIT: Duration = Duration::from_secs(1);

impl Probe {
    pub fn describe(&self) -> String {
        match self {
            Probe::Tcp(a) => format!("tcp {a}"),
            Probe::Http(u) => format!("GET {u} = 200"),
        }
    }

    /// The port the probe talks to.
    pub fn port(&self) -> Option<u16> {
        let authority = match self {
            Probe::Tcp(a) => a.as_str(),
            Probe::Http(u) => u.authority.as_str(),
        };
        authority.rsplit_once(':')?.1.parse().ok()
    }
}

/// One attempt that counts only if the child's own process group accepted the probe's
/// connection. A TCP connect alone proves little: when steward holds the listening socket
/// the kernel completes the handshake into the backlog whoever accepts, and during a reload
/// the old generation may answer. `Err` says why it failed.
pub async fn attempt_owned(
    probe: &Probe,
    pgid: i32,
    timeout: Duration,
    worker: &Worker,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, attempt_inner(probe, Some((pgid, worker)))).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// steward-proxy's health answer names the process that wrote it. That is a claim, not a
/// proof: any local user can read the child's pid in /proc and write it in a header of
/// their own. It only ever adds a reason to fail (see [`attempt_inner`]).
const PID_HEADER: &str = "x-served-by-pid";

async fn attempt_inner(probe: &Probe, owner: Option<(i32, &Worker)>) -> Result<(), String> {
    let authority = match probe {
        Probe::Tcp(a) => a.as_str(),
        Probe::Http(u) => u.authority.as_str(),
    };
    let mut s = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    // The proof of who serves is the kernel's: which process holds the accepted end of
    // this very connection. It is looked up before anything is sent, since the server
    // closes the connection right after answering.
    if let Some((pgid, worker)) = owner {
        let (client, server) = match (s.local_addr(), s.peer_addr()) {
            (Ok(c), Ok(p)) => (c, p),
            (Err(e), _) | (_, Err(e)) => return Err(e.to_string()),
        };
        let began = tokio::time::Instant::now();
        loop {
            let owner = worker
                .call(WORKER_WAIT, move |io| {
                    tcp::probe_owner(io, pgid, server, client)
                })
                .await
                .map_err(|e| e.to_string())?;
            let why = match owner {
                Owner::Child => break,
                Owner::Gone => {
                    return Err(format!(
                        "{authority} closed the connection before anyone accepted it"
                    ))
                }
                Owner::Queued => "nobody accepted it",
                // The accepting process may not have installed the descriptor yet.
                Owner::Other(_) => "another process accepted it",
            };
            // Other(0) is the /proc fallback's "not among the child's sockets", which
            // also covers a connection still queued: only a known inode is another's.
            let limit = match owner {
                Owner::Other(inode) if inode != 0 => OTHER_WAIT,
                _ => OWNER_WAIT,
            };
            if began.elapsed() >= limit {
                return Err(format!(
                    "{authority} took the connection, but child pid {pgid} did not accept it within {} ms ({why})",
                    limit.as_millis()
                ));
            }
            tokio::time::sleep(OWNER_POLL).await;
        }
    }
    match probe {
        Probe::Tcp(_) => Ok(()),
        Probe::Http(url) => {
            let (code, pid) = http_get(&mut s, url).await?;
            // A consistency check on top of the kernel's answer, never instead of it: the
            // child's group accepted, so an answer naming a process outside that group
            // means something between them is not what the operator thinks.
            if let (Some(pid), Some((pgid, worker))) = (pid, owner) {
                let ours = worker
                    .call(WORKER_WAIT, move |io| procfs::in_group(io, pid, pgid))
                    .await
                    .map_err(|e| e.to_string())?;
                if !ours {
                    return Err(format!(
                        "{url} was answered by pid {pid}, not by child pid {pgid}'s group"
                    ));
                }
            }
            if code == 200 {
                Ok(())
            } else {
                Err(format!("{url} answered {code}"))
            }
        }
    }
}

/// Sends `GET`; the status code and the pid the answer names, if it names one.
async fn http_get(s: &mut TcpStream, url: &HttpUrl) -> Result<(u16, Option<i32>), String> {
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: steward-probe\r\nConnection: close\r\n\r\n",
        url.path, url.authority
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("send to {url}: {e}"))?;
    let mut buf = vec![0u8; 2048];
    let mut len = 0;
    while len < buf.len() && !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s
            .read(&mut buf[len..])
            .await
            .map_err(|e| format!("read from {url}: {e}"))?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let head = &buf[..len];
    let code = parse_status(head).ok_or_else(|| format!("{url} sent no HTTP status line"))?;
    Ok((code, parse_pid_header(head)))
}

fn parse_pid_header(head: &[u8]) -> Option<i32> {
    let text = std::str::from_utf8(head).ok()?;
    text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        if name.trim().eq_ignore_ascii_case(PID_HEADER) {
            value.trim().parse().ok()
        } else {
            None
        }
    })
}

fn parse_status(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head).ok()?;
    let mut parts = text.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.get(..3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn the_answering_pid_is_read_from_its_header() {
        assert_eq!(
            parse_pid_header(b"HTTP/1.1 200 OK\r\nX-Served-By-Pid: 4242\r\n\r\n"),
            Some(4242)
        );
        assert_eq!(
            parse_pid_header(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n"),
            None
        );
    }

    #[test]
    fn status_line_is_parsed() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503 Service"), Some(503));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH"), None);
    }

    /// A listener in a process group of its own (a `python3` that accepts one
    /// connection when told), standing in for the child; the test process is "someone
    /// else".
    #[tokio::test]
    async fn an_owned_probe_passes_only_when_the_childs_group_accepts() {
        let worker = Worker::start().expect("worker");
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        l.set_nonblocking(true).expect("nonblocking");
        // The test process accepts every connection: the probe must fail, naming why.
        let accepter = std::thread::spawn(move || {
            let end = std::time::Instant::now() + Duration::from_secs(3);
            let mut held = vec![];
            while std::time::Instant::now() < end {
                if let Ok((s, _)) = l.accept() {
                    held.push(s);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            held.len()
        });
        let sleeper = std::process::Command::new("sleep")
            .arg("10")
            .process_group(0)
            .spawn()
            .expect("sleep");
        let r = attempt_owned(
            &Probe::Tcp(addr.clone()),
            sleeper.id() as i32,
            Duration::from_secs(2),
            &worker,
        )
        .await;
        let e = r.expect_err("accepted by someone else");
        assert!(e.contains("another process accepted it"), "{e}");
        // The same probe, with the accepting process as the child: it passes.
        let me = nix::unistd::getpgrp().as_raw();
        let r = attempt_owned(&Probe::Tcp(addr), me, Duration::from_secs(2), &worker).await;
        assert_eq!(r, Ok(()));
        let mut sleeper = sleeper;
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        assert!(accepter.join().expect("join") >= 2);
    }

    /// An HTTP server in the test process: answers the first connection within `secs`
    /// seconds with 200 and `header` (a whole header line, or ""), then ends.
    fn http_server(header: String, secs: u64) -> (String, std::thread::JoinHandle<()>) {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        l.set_nonblocking(true).expect("nonblocking");
        let server = std::thread::spawn(move || {
            let end = std::time::Instant::now() + Duration::from_secs(secs);
            while std::time::Instant::now() < end {
                let Ok((mut s, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                };
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
                let mut buf = [0u8; 1024];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\n{header}Content-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                );
                break;
            }
        });
        (addr, server)
    }

    fn http_probe(addr: &str) -> Probe {
        Probe::Http(HttpUrl {
            authority: addr.to_string(),
            path: "/health".into(),
        })
    }

    /// A process in a group of its own that never listens: the child of these tests.
    fn idle_child() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("10")
            .process_group(0)
            .spawn()
            .expect("sleep")
    }

    /// Finding 5 of issue 11: a listener that is not the child's, answering 200 and naming
    /// the child's pid (readable by anyone in /proc), must not make the child ready.
    #[tokio::test]
    async fn a_header_naming_the_child_does_not_pass_a_probe_someone_else_accepted() {
        let worker = Worker::start().expect("worker");
        let mut child = idle_child();
        let pid = child.id();
        let (addr, server) = http_server(format!("X-Served-By-Pid: {pid}\r\n"), 3);
        let r = attempt_owned(
            &http_probe(&addr),
            pid as i32,
            Duration::from_secs(2),
            &worker,
        )
        .await;
        let _ = child.kill();
        let _ = child.wait();
        let e = r.expect_err("the test process answered, not the child");
        assert!(e.contains("another process accepted it"), "{e}");
        server.join().expect("join");
    }

    #[tokio::test]
    async fn a_header_naming_a_process_outside_the_childs_group_fails_the_probe() {
        let worker = Worker::start().expect("worker");
        let mut other = idle_child();
        let (addr, server) = http_server(format!("X-Served-By-Pid: {}\r\n", other.id()), 3);
        let me = nix::unistd::getpgrp().as_raw();
        let r = attempt_owned(&http_probe(&addr), me, Duration::from_secs(2), &worker).await;
        let _ = other.kill();
        let _ = other.wait();
        let e = r.expect_err("the answer names another group's process");
        assert!(
            e.contains(&format!("answered by pid {}", other.id())),
            "{e}"
        );
        server.join().expect("join");
    }

    #[tokio::test]
    async fn an_http_probe_the_childs_group_accepts_and_answers_200_passes() {
        let worker = Worker::start().expect("worker");
        let (addr, server) = http_server(String::new(), 3);
        let me = nix::unistd::getpgrp().as_raw();
        let r = attempt_owned(&http_probe(&addr), me, Duration::from_secs(2), &worker).await;
        assert_eq!(r, Ok(()));
        server.join().expect("join");
    }

    #[tokio::test]
    async fn an_owned_probe_fails_while_nobody_accepts() {
        let worker = Worker::start().expect("worker");
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let me = nix::unistd::getpgrp().as_raw();
        let e = attempt_owned(&Probe::Tcp(addr), me, Duration::from_secs(2), &worker)
            .await
            .expect_err("never accepted");
        assert!(e.contains("nobody accepted it"), "{e}");
        drop(l);
    }

    #[tokio::test]
    async fn tcp_probe_fails_on_a_closed_port_and_passes_on_an_open_one() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        assert!(attempt_inner(&Probe::Tcp(addr.clone()), None).await.is_ok());
        drop(l);
        assert!(attempt_inner(&Probe::Tcp(addr), None).await.is_err());
    }
}
