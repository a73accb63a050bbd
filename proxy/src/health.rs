//! `/health` on its own listener: 200 while serving, 503 once draining. The answer names
//! the process (`X-Served-By-Pid`), for people and tests reading it while two generations
//! share the port. It proves nothing: anyone can send the header. steward decides who
//! answered its probe from the kernel's view of the connection (who accepted it).
//!
//! It runs as a Pingora background service with its own socket rather than as a listening
//! service, because Pingora closes every listening service at SIGTERM and a load balancer
//! must see "503 draining", not "connection refused". SO_REUSEPORT lets an upgrading
//! successor bind the same port while this process drains.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::drain::State;

pub struct Health {
    pub listen: String,
    pub state: Arc<State>,
}

#[async_trait]
impl BackgroundService for Health {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let listener = match bind(&self.listen) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("health listener {}: {e}; exiting", self.listen);
                std::process::exit(78);
            }
        };
        tracing::info!("health endpoint on http://{}/health", self.listen);
        // The shutdown watch is ignored on purpose: this keeps answering 503 until exit.
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let state = self.state.clone();
                    tokio::spawn(async move { answer(stream, &state).await });
                }
                Err(e) => {
                    tracing::warn!("health accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
    }
}

fn bind(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let sa = std::net::ToSocketAddrs::to_socket_addrs(addr)?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let sock = if sa.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.set_reuseport(true)?;
    sock.bind(sa)?;
    sock.listen(128)
}

async fn answer(mut stream: TcpStream, state: &State) {
    let mut buf = vec![0u8; 2048];
    let mut len = 0;
    let read = tokio::time::timeout(std::time::Duration::from_secs(2), async {
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
    let head = String::from_utf8_lossy(&buf[..len]);
    let path = head.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = match path {
        "/health" if state.draining() => ("503 Service Unavailable", "draining\n"),
        "/health" => ("200 OK", "ok\n"),
        _ => ("404 Not Found", "not found\n"),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Served-By-Pid: {}\r\nConnection: close\r\n\r\n{body}",
        body.len(),
        std::process::id()
    );
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.shutdown().await;
}
