//! Readiness: does the child really serve?
//!
//! A TCP connect that succeeds, or a `GET` that answers 200. Either can be answered by
//! someone else holding the port (a leftover process, another service), so where `/proc`
//! tells, the port must also be one the child's own process group listens on.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{HttpUrl, Probe};

const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

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

/// One attempt. `Err` says why it failed, for the start-timeout message.
pub async fn attempt(probe: &Probe) -> Result<(), String> {
    match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt_inner(probe)).await {
        Ok(r) => r,
        Err(_) => Err("no answer within 1 s".into()),
    }
}

async fn attempt_inner(probe: &Probe) -> Result<(), String> {
    match probe {
        Probe::Tcp(addr) => TcpStream::connect(addr.as_str())
            .await
            .map(drop)
            .map_err(|e| format!("connect {addr}: {e}")),
        Probe::Http(url) => http_get_status(url).await.and_then(|code| {
            if code == 200 {
                Ok(())
            } else {
                Err(format!("{url} answered {code}"))
            }
        }),
    }
}

async fn http_get_status(url: &HttpUrl) -> Result<u16, String> {
    let mut s = TcpStream::connect(url.authority.as_str())
        .await
        .map_err(|e| format!("connect {}: {e}", url.authority))?;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: steward-probe\r\nConnection: close\r\n\r\n",
        url.path, url.authority
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("send to {url}: {e}"))?;
    let mut buf = [0u8; 64];
    let mut len = 0;
    while len < 12 {
        let n = s
            .read(&mut buf[len..])
            .await
            .map_err(|e| format!("read from {url}: {e}"))?;
        if n == 0 {
            break;
        }
        len += n;
    }
    parse_status(&buf[..len]).ok_or_else(|| format!("{url} sent no HTTP status line"))
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
    fn status_line_is_parsed() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503 Service"), Some(503));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH"), None);
    }

    #[tokio::test]
    async fn tcp_probe_fails_on_a_closed_port_and_passes_on_an_open_one() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        assert!(attempt(&Probe::Tcp(addr.clone())).await.is_ok());
        drop(l);
        assert!(attempt(&Probe::Tcp(addr)).await.is_err());
    }
}
