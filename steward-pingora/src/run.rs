//! [`Steward::run`]: the server runs under Pingora's `Server::run`, and `run` returns once
//! the drain is over, so `main` returns and the process ends as any program does:
//! destructors run, buffers are flushed, Pingora shuts its runtimes down.
//!
//! Pingora 0.9.1's `Server::run` waits for a [`ShutdownSignalWatch`] to say how to shut
//! down, then broadcasts the shutdown (the listeners close), sleeps `grace_period_seconds`
//! unconditionally, and shuts the runtimes down. The watch here does the drain inside the
//! wait instead: on SIGTERM it begins the drain itself (the services made through the
//! `Steward` stop accepting on the drain's own watch, see `listening.rs`), waits until
//! nothing is left or the grace period is over, and only then answers. The server runs with
//! `grace_period_seconds: 0`, so Pingora's sleep does not come after it.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{ListenFds, RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{Signal, SignalKind};

use crate::drain::Drain;
use crate::signal::{handler, received};
use crate::Steward;

/// Pingora 0.9.1's grace period when `grace_period_seconds` is not set (`EXIT_TIMEOUT` in
/// `server/mod.rs`, private).
const PINGORA_GRACE: Duration = Duration::from_secs(300);
/// How long Pingora 0.9.1 goes on accepting after it has sent its listeners to a new
/// process (`CLOSE_TIMEOUT` in `server/mod.rs`, private): the new process's time to start
/// accepting on them.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

impl Steward {
    /// Runs `server` until it is told to stop and its drain is over, and returns: call it in
    /// place of `server.run_forever()`, as the last thing `main` does before returning.
    ///
    /// - SIGTERM: the drain begins at once (listeners close, idle keep-alive connections
    ///   close gracefully, `/health` answers 503) and `run` returns as soon as the last
    ///   connection is done, or when `grace_period_seconds` is over (Pingora's 300 s when
    ///   unset), after Pingora has ended what is left and shut its runtimes down.
    /// - SIGQUIT (Pingora's graceful upgrade to a process started with `-u`): the listening
    ///   sockets go to the new process over `upgrade_sock`, as Pingora sends them, this
    ///   process accepts for 5 s more, as Pingora does, and then drains as on SIGTERM.
    /// - SIGINT: Pingora's fast shutdown, at once, also while draining (in-flight requests
    ///   are cut).
    ///
    /// Other SIGTERMs and SIGQUITs while draining are ignored, as Pingora ignores them.
    /// Pingora's phase broadcast ([`Server::watch_execution_phase`]) shows a SIGQUIT as a
    /// graceful terminate, because the hand-off happens before Pingora is told.
    pub fn run(self, mut server: Server) {
        let grace = server
            .configuration
            .grace_period_seconds
            .map_or(PINGORA_GRACE, Duration::from_secs);
        // Once drained, Pingora's grace sleep has nothing left to wait for.
        let fast_after_drain = match without_grace_sleep(&server.configuration) {
            Some(conf) => {
                server.configuration = Arc::new(conf);
                false
            }
            None => {
                // Not seen with 0.9.1: then skip the sleep by a fast shutdown, which only
                // leaves Pingora's runtimes no time for their blocking tasks.
                log::warn!(
                    "cannot set grace_period_seconds to 0 for the end of the drain; the server ends with Pingora's fast shutdown once drained"
                );
                true
            }
        };
        self.drain.set_run_owned();
        let signals = Signals {
            drain: self.drain.clone(),
            listeners: self.listeners.clone(),
            upgrade_sock: server.configuration.upgrade_sock.clone(),
            grace,
            fast_after_drain,
        };
        server.run(RunArgs {
            shutdown_signal: Box::new(signals),
        });
    }
}

/// `conf` with `grace_period_seconds: 0`, and nothing else changed. `ServerConf` is not
/// `Clone`: this copies it through its own YAML form, and refuses a copy that differs.
fn without_grace_sleep(conf: &ServerConf) -> Option<ServerConf> {
    let mut copy = ServerConf::from_yaml(&conf.to_yaml()).ok()?;
    if copy != *conf {
        return None;
    }
    copy.grace_period_seconds = Some(0);
    Some(copy)
}

/// The shutdown signal watch of [`Steward::run`].
struct Signals {
    drain: Arc<Drain>,
    /// Pingora's table of listening sockets, as the background service received it.
    listeners: Arc<OnceLock<ListenFds>>,
    upgrade_sock: String,
    grace: Duration,
    /// Whether Pingora is told to shut down fast once drained (its grace sleep could not
    /// be set to 0), instead of gracefully.
    fast_after_drain: bool,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let mut term = handler(SignalKind::terminate(), "SIGTERM");
        let mut int = handler(SignalKind::interrupt(), "SIGINT");
        let mut quit = handler(SignalKind::quit(), "SIGQUIT");
        tokio::select! {
            _ = received(&mut term) => {
                self.drain.begin();
                self.drain_or_interrupt(&mut int).await
            }
            _ = received(&mut int) => ShutdownSignal::FastShutdown,
            _ = received(&mut quit) => self.upgrade(&mut int).await,
        }
    }
}

impl Signals {
    /// Waits for the drain to end within the grace period; a SIGINT meanwhile ends the wait
    /// with a fast shutdown.
    async fn drain_or_interrupt(&self, int: &mut Option<Signal>) -> ShutdownSignal {
        tokio::select! {
            _ = received(int) => {
                log::warn!(
                    "SIGINT while draining ({} connection(s) open): stopping now",
                    self.drain.connections()
                );
                ShutdownSignal::FastShutdown
            }
            _ = self.drain.drained(Some(self.grace)) => self.after_drain(),
        }
    }

    fn after_drain(&self) -> ShutdownSignal {
        if self.fast_after_drain {
            ShutdownSignal::FastShutdown
        } else {
            ShutdownSignal::GracefulTerminate
        }
    }

    /// Pingora's graceful upgrade, up to its broadcast, then the drain. Pingora itself would
    /// broadcast, sleep the grace period (0 here) and shut its runtimes down, cutting what
    /// the drain had not finished; so the hand-off is done here, with Pingora's own sender
    /// ([`pingora::server::Fds::send_to_sock`]), and Pingora is told only once drained.
    async fn upgrade(&self, int: &mut Option<Signal>) -> ShutdownSignal {
        log::info!(
            "SIGQUIT: sending the listening sockets to {}",
            self.upgrade_sock
        );
        let sent = match self.listeners.get() {
            Some(table) if !table.lock().is_empty() => {
                let (table, path) = (table.clone(), self.upgrade_sock.clone());
                // It retries for up to 5 s when nobody listens yet: off this runtime, so a
                // SIGINT meanwhile is still seen.
                let send = tokio::task::spawn_blocking(move || table.lock().send_to_sock(&*path));
                tokio::select! {
                    _ = received(int) => return ShutdownSignal::FastShutdown,
                    r = send => match r {
                        Ok(Ok(_)) => log::info!("listening sockets sent"),
                        Ok(Err(e)) => log::error!("cannot send the listening sockets to {}: {e}", self.upgrade_sock),
                        Err(e) => log::error!("sending the listening sockets to {}: {e}", self.upgrade_sock),
                    },
                }
                true
            }
            _ => {
                log::info!("no listening sockets to send");
                false
            }
        };
        if sent {
            tokio::select! {
                _ = received(int) => return ShutdownSignal::FastShutdown,
                _ = tokio::time::sleep(CLOSE_TIMEOUT) => {}
            }
        }
        self.drain.begin();
        self.drain_or_interrupt(int).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_conf_differs_only_in_a_grace_period_of_0() {
        let conf = ServerConf::from_yaml(
            "---\nversion: 1\nthreads: 3\nupgrade_sock: /run/x/upgrade.sock\ngrace_period_seconds: 300\ngraceful_shutdown_timeout_seconds: 7\n",
        )
        .expect("conf");
        let mut copy = without_grace_sleep(&conf).expect("a copy");
        assert_eq!(copy.grace_period_seconds, Some(0));
        copy.grace_period_seconds = conf.grace_period_seconds;
        assert_eq!(copy, conf);
    }
}
