//! `/health` on its own listener: 200 while serving, 503 once draining. The answer names
//! the process (`X-Served-By-Pid`), for people and tests reading it while two generations
//! share the port, and for steward's probe, which fails a probe whose answer names another
//! process. It proves nothing by itself: anyone can send the header. steward decides who
//! answered its probe from the kernel's view of the connection (who accepted it).
//!
//! It runs in a Pingora background service with its own socket rather than as a listening
//! service, because Pingora closes every listening service at SIGTERM and a load balancer
//! must see "503 draining", not "connection refused". SO_REUSEPORT lets the next
//! generation bind the same port while this process drains.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::time::Duration;

use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrStorage,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::drain::Drain;

/// A request head larger than this is not a health check.
const MAX_HEAD: usize = 2048;
/// A client that has not sent its request head by then is not a health check either.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Binds `addr` with SO_REUSEADDR and SO_REUSEPORT, non-blocking, close-on-exec.
pub(crate) fn bind_reuseport(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd: OwnedFd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(addr),
    )?;
    listen(&fd, Backlog::new(128).unwrap_or(Backlog::MAXCONN))?;
    Ok(TcpListener::from(fd))
}

/// Whether a listening socket other than this process's own is bound to `addr`: the
/// kernel's TCP table (`/proc/net/tcp`, or `tcp6`) lists more than one listener there.
/// Read once, when the drain begins.
pub(crate) fn successor_listens(addr: SocketAddr) -> bool {
    let table = if addr.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    std::fs::read_to_string(table)
        .map(|t| listeners_on(&t, addr) > 1)
        .unwrap_or(false)
}

/// How many rows of a `/proc/net/tcp` or `tcp6` table are listeners on exactly `addr`.
fn listeners_on(table: &str, addr: SocketAddr) -> usize {
    let want = proc_addr(addr);
    table
        .lines()
        .skip(1)
        .filter(|row| {
            let mut f = row.split_whitespace();
            let local = f.nth(1);
            // st is the fourth field: 0A is LISTEN.
            let state = f.nth(1);
            local == Some(want.as_str()) && state == Some("0A")
        })
        .count()
}

/// `addr` as the kernel's table writes it: the address's 32-bit words in host byte order,
/// in hex, then the port.
fn proc_addr(addr: SocketAddr) -> String {
    let words = |b: &[u8]| -> String {
        b.chunks(4)
            .map(|w| {
                let v = u32::from_ne_bytes([w[0], w[1], w[2], w[3]]);
                format!("{v:08X}")
            })
            .collect()
    };
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) => words(&v4.octets()),
        std::net::IpAddr::V6(v6) => words(&v6.octets()),
    };
    format!("{ip}:{:04X}", addr.port())
}

/// Answers health checks on `listener` until the process exits; it goes on answering
/// (503) while the process drains.
pub(crate) async fn serve(listener: TcpListener, drain: std::sync::Arc<Drain>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("health endpoint: {e}; it does not answer");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let drain = drain.clone();
                tokio::spawn(async move { answer(stream, &drain).await });
            }
            Err(e) => {
                log::warn!("health endpoint accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, drain: &Drain) {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        while len < buf.len() {
            match stream.read(&mut buf[len..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => len += n,
            }
            if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    if read.is_err() {
        return;
    }
    let (status, body) = reply(&buf[..len], drain.draining());
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Served-By-Pid: {}\r\nConnection: close\r\n\r\n{body}",
        body.len(),
        std::process::id()
    );
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The status line and body for a request head.
fn reply(head: &[u8], draining: bool) -> (&'static str, &'static str) {
    let head = String::from_utf8_lossy(head);
    match head.split_whitespace().nth(1) {
        Some("/health") if draining => ("503 Service Unavailable", "draining\n"),
        Some("/health") => ("200 OK", "ok\n"),
        _ => ("404 Not Found", "not found\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_200_while_serving() {
        assert_eq!(
            reply(b"GET /health HTTP/1.1\r\n\r\n", false),
            ("200 OK", "ok\n")
        );
    }

    #[test]
    fn health_is_503_while_draining() {
        assert_eq!(
            reply(b"GET /health HTTP/1.1\r\n\r\n", true).0,
            "503 Service Unavailable"
        );
    }

    #[test]
    fn other_paths_and_garbage_are_404() {
        assert_eq!(reply(b"GET / HTTP/1.1\r\n\r\n", false).0, "404 Not Found");
        assert_eq!(reply(b"\xff\xfe", false).0, "404 Not Found");
        assert_eq!(reply(b"", true).0, "404 Not Found");
    }

    #[test]
    fn two_processes_can_bind_the_same_health_port() {
        let first = bind_reuseport("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = first.local_addr().expect("local addr");
        let second = bind_reuseport(addr);
        assert!(second.is_ok(), "{second:?}");
    }

    #[test]
    fn a_lone_health_listener_has_no_successor() {
        let only = bind_reuseport("127.0.0.1:0".parse().expect("addr")).expect("bind");
        assert!(!successor_listens(only.local_addr().expect("local addr")));
    }

    #[test]
    fn a_second_listener_on_the_health_port_is_a_successor() {
        let first = bind_reuseport("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = first.local_addr().expect("local addr");
        let _second = bind_reuseport(addr).expect("bind the same port");
        assert!(successor_listens(addr));
    }

    #[test]
    fn the_kernel_table_writes_loopback_in_host_byte_order() {
        // As /proc/net/tcp shows 127.0.0.1:6190 on a little-endian machine.
        let addr: SocketAddr = "127.0.0.1:6190".parse().expect("addr");
        if cfg!(target_endian = "little") {
            assert_eq!(proc_addr(addr), "0100007F:182E");
        }
        let table = "  sl  local_address rem_address   st\n   0: 0100007F:182E 00000000:0000 0A 0\n   1: 0100007F:182E 0100007F:9C40 01 0\n";
        if cfg!(target_endian = "little") {
            assert_eq!(listeners_on(table, addr), 1);
        }
    }
}
