//! The signals steward acts on, as one stream. Installed before anything else, so a
//! SIGTERM that arrives during start-up is seen and handled instead of killing steward
//! with the default action.
//!
//! Every signal an operator or a platform plausibly sends has a handler, because as a
//! container's PID 1 a signal without one is dropped by the kernel, and outside a
//! container the default action (terminate, core) would end steward without ending the
//! child's tree:
//!
//! | signal | effect |
//! |---|---|
//! | SIGTERM, SIGINT | graceful stop ([`Received::Term`], [`Received::Int`]) |
//! | SIGHUP | reload |
//! | SIGCHLD | reap every exited process, orphans included |
//! | SIGUSR1, SIGUSR2, SIGWINCH | forwarded to the current generation's child, as tini does |
//! | SIGQUIT | ignored, with a warning: to Pingora it means "hand your listeners to a new process and exit", which steward does itself on reload; forwarding it would end the child behind steward's back |
//!
//! Others keep the kernel's default (as PID 1: dropped). SIGKILL cannot be caught: the
//! child's parent-death signal ends it, and as PID 1 the kernel ends the namespace.
//!
//! Until the handlers exist, `steward run` keeps these signals blocked ([`block_early`]):
//! a SIGHUP or SIGTERM that arrives while the configuration is read stays pending instead
//! of ending steward with the default action, and [`Signals::install`] then empties the
//! signal mask, so it (and any signal a parent left blocked and pending across `exec`) is
//! delivered to the new handlers. What each means before the first child serves is decided
//! in [`super::run`] and [`super::lifecycle`] (operator's guide, "Signals at odd moments").

use std::io;

use nix::sys::signal::{SigSet, SigmaskHow, Signal as Sig};
use tokio::signal::unix::{signal, Signal, SignalKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    Term,
    Int,
    Hup,
    Child,
    /// To be passed on to the current child ([`super::container::forward`]).
    Forward(Sig),
}

pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    chld: Signal,
    usr1: Signal,
    usr2: Signal,
    winch: Signal,
    quit: Signal,
}

/// The signals steward has handlers for.
const HANDLED: [Sig; 8] = [
    Sig::SIGTERM,
    Sig::SIGINT,
    Sig::SIGHUP,
    Sig::SIGCHLD,
    Sig::SIGUSR1,
    Sig::SIGUSR2,
    Sig::SIGWINCH,
    Sig::SIGQUIT,
];

/// Blocks the handled signals until [`Signals::install`]: one that arrives before the
/// handlers exist stays pending instead of taking the default action (for SIGHUP and
/// SIGTERM: steward dies, and as PID 1 it would be dropped). Call it first thing, before
/// any thread is started, so every thread inherits the mask. Child processes are not
/// affected: std's `Command` gives every child an empty mask.
pub fn block_early() -> io::Result<()> {
    let mut set = SigSet::empty();
    for s in HANDLED {
        set.add(s);
    }
    set.thread_block().map_err(io::Error::from)
}

impl Signals {
    pub fn install() -> io::Result<Signals> {
        let signals = Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            chld: signal(SignalKind::child())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
            winch: signal(SignalKind::window_change())?,
            quit: signal(SignalKind::quit())?,
        };
        // The handlers exist: whatever is pending (blocked by block_early, or left blocked
        // and pending across exec by a parent) is delivered to them now. A signal a parent
        // left blocked would otherwise never arrive: a SIGTERM could not stop steward.
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
            .map_err(io::Error::from)?;
        Ok(signals)
    }

    /// The next signal. Cancel-safe: nothing is lost when another branch wins a select.
    pub async fn next(&mut self) -> Received {
        loop {
            tokio::select! {
                // SIGCHLD first: when the child exits during a stop, its exit decides the outcome.
                biased;
                _ = self.chld.recv() => return Received::Child,
                _ = self.term.recv() => return Received::Term,
                _ = self.int.recv() => return Received::Int,
                _ = self.hup.recv() => return Received::Hup,
                _ = self.usr1.recv() => return Received::Forward(Sig::SIGUSR1),
                _ = self.usr2.recv() => return Received::Forward(Sig::SIGUSR2),
                _ = self.winch.recv() => return Received::Forward(Sig::SIGWINCH),
                _ = self.quit.recv() => tracing::warn!(
                    steward_signal = "SIGQUIT",
                    "SIGQUIT ignored: to Pingora it means a graceful upgrade, which steward performs itself (SIGHUP or `steward reload`); SIGTERM stops. If `docker stop` sent it, the image's STOPSIGNAL should be SIGTERM"
                ),
            }
        }
    }

    /// A signal that already arrived, without waiting.
    pub async fn pending(&mut self) -> Option<Received> {
        // One turn of the runtime first: a signal delivered a moment ago (when install
        // emptied the mask) is only seen once the driver has read its wake-up.
        tokio::task::yield_now().await;
        tokio::select! {
            biased;
            s = self.next() => Some(s),
            _ = std::future::ready(()) => None,
        }
    }
}
