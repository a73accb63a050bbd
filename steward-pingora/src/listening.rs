//! The listening service [`crate::Steward`] makes: Pingora's own, which first claims the
//! listeners inherited from steward under its keys (see [`crate::inherit`]).

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::server::{ListenFds, RuntimeOpts, ShutdownWatch};
use pingora::services::listening::Service;
use pingora::services::Service as ServiceTrait;

use crate::drain::Drain;
use crate::graceful::Graceful;
use crate::inherit::Inherited;

/// A Pingora listening service for the app `A`, as [`crate::Steward::service`] makes it.
///
/// Everything Pingora's [`Service`] offers (`add_tcp`, `add_uds`, `threads`, ...) is
/// reached through `Deref`. When the server starts it, the listening sockets the process
/// inherited from steward under this service's keys go into Pingora's table of listeners
/// first, so Pingora listens on them instead of binding new ones.
///
/// It stops accepting when the drain begins, which is before Pingora's own shutdown under
/// [`crate::Steward::run`] (Pingora is told once the drain is over).
pub struct StewardService<A> {
    inner: Service<Graceful<A>>,
    inherited: Arc<Inherited>,
    drain: Arc<Drain>,
    started: bool,
}

impl<A> StewardService<A> {
    pub(crate) fn new(
        inner: Service<Graceful<A>>,
        inherited: Arc<Inherited>,
        drain: Arc<Drain>,
    ) -> Self {
        inherited.service_made();
        StewardService {
            inner,
            inherited,
            drain,
            started: false,
        }
    }
}

impl<A> Deref for StewardService<A> {
    type Target = Service<Graceful<A>>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl<A> DerefMut for StewardService<A> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl<A> Drop for StewardService<A> {
    fn drop(&mut self) {
        // A service never added to a server claims nothing: the others are not kept
        // waiting for it.
        if !self.started {
            self.inherited.service_dropped();
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServiceTrait for StewardService<A> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        _pingora_shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        self.started = true;
        let keys = ServiceTrait::listen_addresses(&self.inner).unwrap_or_default();
        self.inherited.claim(&keys, fds.as_ref());
        // The service's accept loops and its app (which turns keep-alive off once the
        // watch is true) see the drain's watch, not Pingora's: it turns true when the
        // drain begins. Pingora's shutdown begins the drain through the background
        // service `install` always adds (`Watch` in lib.rs), which waits on it.
        let begun = self.drain.begun();
        ServiceTrait::start_service(&mut self.inner, fds, begun, listeners_per_fd).await
    }

    fn name(&self) -> &str {
        ServiceTrait::name(&self.inner)
    }

    fn threads(&self) -> Option<usize> {
        ServiceTrait::threads(&self.inner)
    }

    fn runtime_opts_override(&self, global: &RuntimeOpts) -> Option<RuntimeOpts> {
        ServiceTrait::runtime_opts_override(&self.inner, global)
    }

    fn on_startup_delay(&self, time_waited: Duration) {
        ServiceTrait::on_startup_delay(&self.inner, time_waited)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        ServiceTrait::listen_addresses(&self.inner)
    }
}
