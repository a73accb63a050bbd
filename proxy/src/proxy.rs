//! The reverse proxy itself: round robin over the configured upstreams, an access log line
//! per request, and an in-flight guard per request for the drain.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use pingora::prelude::*;

use crate::drain::{InFlight, State};

pub struct Proxy {
    pub upstreams: Arc<LoadBalancer<RoundRobin>>,
    pub state: Arc<State>,
}

pub struct Ctx {
    _in_flight: InFlight,
    started: Instant,
    upstream: Option<String>,
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            _in_flight: self.state.enter(),
            started: Instant::now(),
            upstream: None,
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let backend = self
            .upstreams
            .select(b"", 256)
            .ok_or_else(|| Error::explain(HTTPStatus(502), "no upstream available"))?;
        ctx.upstream = Some(backend.addr.to_string());
        Ok(Box::new(HttpPeer::new(backend, false, String::new())))
    }

    async fn logging(&self, session: &mut Session, e: Option<&pingora::Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let req = session.req_header();
        tracing::info!(
            target: "access",
            client = %session.client_addr().map(|a| a.to_string()).unwrap_or_default(),
            method = %req.method,
            path = %req.uri,
            status,
            upstream = ctx.upstream.as_deref().unwrap_or("-"),
            duration_ms = ctx.started.elapsed().as_millis() as u64,
            error = e.map(|e| e.to_string()).unwrap_or_default(),
            "{} {} {}",
            req.method,
            req.uri,
            status
        );
    }
}

/// How long the proxy keeps reading requests on connections it accepted just before its
/// listeners closed. Pingora's proxy drops, at shutdown, every connection still waiting for
/// its request header; a client that connected a moment before the listener closed has its
/// request on the wire, and would see its connection closed unanswered. With steward handing
/// the listeners to the next generation, that moment is every reload.
pub const CLEANUP_DELAY: std::time::Duration = std::time::Duration::from_millis(200);

/// Wraps a Pingora app to delay its shutdown clean-up by [`CLEANUP_DELAY`].
pub struct DelayedCleanup<A>(pub Arc<A>);

#[async_trait]
impl<A> pingora::apps::ServerApp for DelayedCleanup<A>
where
    A: pingora::apps::ServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        session: pingora::protocols::Stream,
        shutdown: &pingora::server::ShutdownWatch,
    ) -> Option<pingora::protocols::Stream> {
        self.0.process_new(session, shutdown).await
    }

    async fn cleanup(&self) {
        tokio::time::sleep(CLEANUP_DELAY).await;
        self.0.cleanup().await
    }
}
