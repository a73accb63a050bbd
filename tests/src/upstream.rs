//! The proxy logic of the tests' own Pingora servers: every request to one fixed origin, as
//! the simplest user's proxy does. Plain Pingora, nothing of Steward.

use async_trait::async_trait;
use pingora::prelude::*;

/// A `ProxyHttp` that sends every request to `upstream` (`host:port`, plain HTTP).
pub struct FixedUpstream {
    pub upstream: String,
}

#[async_trait]
impl ProxyHttp for FixedUpstream {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}
