//! The reverse proxy itself: round robin over the configured upstreams and an access log
//! line per request.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use pingora::prelude::*;

pub struct Proxy {
    pub upstreams: Arc<LoadBalancer<RoundRobin>>,
}

pub struct Ctx {
    started: Instant,
    upstream: Option<String>,
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
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
