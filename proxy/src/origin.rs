//! The built-in demo origin: lets the shipped configuration run with no other program.
//!
//! `GET /` says hello; `GET /delay/<ms>` answers after that many milliseconds (at most a
//! minute), which is how the demo and the tests keep a request in flight during a stop.

use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

const MAX_DELAY_MS: u64 = 60_000;

pub struct Origin;

#[async_trait]
impl ServeHttp for Origin {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let (status, body) = route(&path).await;
        http::Response::builder()
            .status(status)
            .header("Content-Type", "text/plain")
            .header("Content-Length", body.len())
            .body(body.into_bytes())
            .unwrap_or_default()
    }
}

async fn route(path: &str) -> (u16, String) {
    if path == "/" {
        return (
            200,
            format!(
                "hello from steward-proxy's demo origin (pid {})\n",
                std::process::id()
            ),
        );
    }
    if let Some(ms) = path.strip_prefix("/delay/") {
        return match ms.parse::<u64>() {
            Ok(ms) if ms <= MAX_DELAY_MS => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                (200, format!("slept {ms} ms\n"))
            }
            _ => (400, format!("/delay/<ms> takes 0..={MAX_DELAY_MS}\n")),
        };
    }
    (404, "not found\n".into())
}
