//! The wrapper around a service's app: it counts the connections being served, for the
//! drain, and closes idle keep-alive connections late enough that no request is cut.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use crate::drain::Drain;

/// How long after its listeners close a wrapped service keeps its idle keep-alive
/// connections open.
///
/// Pingora 0.9.1 closes every connection waiting for its next request the moment a service
/// stops listening. A client that is sending that request right then sees its connection
/// closed unanswered (Python's `RemoteDisconnected`, a reset). In this window a request on
/// such a connection is still served, and its response carries `Connection: close`
/// (Pingora disables keep-alive once shutdown has begun), so an active client leaves on a
/// response instead of an error; after it, the connections still idle are those of clients
/// that have sent nothing for this long.
pub const CLEANUP_DELAY: Duration = Duration::from_millis(200);

/// A Pingora app, as [`Steward::service`](crate::Steward::service) and
/// [`Steward::http_proxy_service`](crate::Steward::http_proxy_service) wrap it: it serves as
/// the app does, counts its connections for the drain, and closes idle keep-alive
/// connections [`CLEANUP_DELAY`] after the listeners close instead of at once.
pub struct Graceful<A> {
    app: Arc<A>,
    drain: Arc<Drain>,
}

impl<A> Graceful<A> {
    pub(crate) fn new(app: A, drain: Arc<Drain>) -> Graceful<A> {
        Graceful {
            app: Arc::new(app),
            drain,
        }
    }
}

#[async_trait]
impl<A> ServerApp for Graceful<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let digest = session.get_socket_digest();
        let inet = |a: Option<&pingora::protocols::l4::socket::SocketAddr>| a?.as_inet().copied();
        let _serving = self.drain.enter(
            digest.as_ref().and_then(|d| inet(d.local_addr())),
            digest.as_ref().and_then(|d| inet(d.peer_addr())),
        );
        self.app.process_new(session, shutdown).await
    }

    async fn cleanup(&self) {
        tokio::time::sleep(CLEANUP_DELAY).await;
        self.app.cleanup().await
    }
}
