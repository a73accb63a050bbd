//! Readiness: does the child really serve?
//!
//! A TCP connect that succeeds, or a `GET` that answers 200, on a connection the child's
//! own process group accepted (see [`attempt_owned`]).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{HttpUrl, Probe};
use crate::procfs;
use std::sync::atomic::{AtomicU8, Ordering};

/// How long an accepted probe connection may take to show up in the child's `/proc`.
const OWNER_WAIT: Duration = Duration::from_millis(200);
const OWNER_POLL: Duration = Duration::from_millis(2);

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
pub async fn attempt_owned(probe: &Probe, pgid: i32, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, attempt_inner(probe, Some(pgid))).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// Whether the HTTP health endpoint names the process that answered (`X-Served-By-Pid`,
/// as steward-proxy's does): 0 not known yet, 1 it does, 2 it does not.
static ENDPOINT_NAMES_PID: AtomicU8 = AtomicU8::new(0);
const PID_HEADER: &str = "x-served-by-pid";

async fn attempt_inner(probe: &Probe, owner: Option<i32>) -> Result<(), String> {
    let authority = match probe {
        Probe::Tcp(a) => a.as_str(),
        Probe::Http(u) => u.authority.as_str(),
    };
    let mut s = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    // Cheapest proof of who serves: the answer names its process. Otherwise the accepted
    // connection is looked up in the child's sockets before anything is sent, since the
    // server closes it right after answering.
    if let (Probe::Http(url), Some(pgid)) = (probe, owner) {
        if ENDPOINT_NAMES_PID.load(Ordering::Relaxed) != 2 {
            let (code, pid) = http_get(&mut s, url).await?;
            return match pid {
                Some(pid) => {
                    ENDPOINT_NAMES_PID.store(1, Ordering::Relaxed);
                    if !procfs::in_group(pid, pgid) {
                        Err(format!(
                            "{url} was answered by pid {pid}, not by child pid {pgid}"
                        ))
                    } else if code != 200 {
                        Err(format!("{url} answered {code}"))
                    } else {
                        Ok(())
                    }
                }
                None => {
                    ENDPOINT_NAMES_PID.store(2, Ordering::Relaxed);
                    Err(format!(
                        "{url} does not say which process answered; checking connections instead"
                    ))
                }
            };
        }
    }
    if let (Some(pgid), Some(port)) = (owner, probe.port()) {
        let client_port = s
            .local_addr()
            .map(|a| a.port())
            .map_err(|e| e.to_string())?;
        // Wall-clock: on a busy host each look at the TCP tables takes a while itself.
        let deadline = tokio::time::Instant::now() + OWNER_WAIT;
        while !procfs::accepted_by(pgid, port, client_port) {
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "{authority} took the connection, but child pid {pgid} did not accept it within {} ms",
                    OWNER_WAIT.as_millis()
                ));
            }
            tokio::time::sleep(OWNER_POLL).await;
        }
    }
    match probe {
        Probe::Tcp(_) => Ok(()),
        Probe::Http(url) => {
            let (code, _) = http_get(&mut s, url).await?;
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

    #[tokio::test]
    async fn owned_probe_fails_when_someone_else_accepts() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        // This test process holds the listener; pid 1's group does not.
        let r = attempt_owned(&Probe::Tcp(addr), 1, Duration::from_secs(1)).await;
        assert!(r.is_err(), "{r:?}");
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
