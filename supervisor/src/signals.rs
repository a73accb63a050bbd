//! The signals steward acts on, as one stream. Installed before anything else, so a
//! SIGTERM that arrives during start-up is seen and handled instead of killing steward
//! with the default action.

use std::io;

use tokio::signal::unix::{signal, Signal, SignalKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    Term,
    Int,
    Hup,
    Child,
}

pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    chld: Signal,
}

impl Signals {
    pub fn install() -> io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            chld: signal(SignalKind::child())?,
        })
    }

    /// The next signal. Cancel-safe: nothing is lost when another branch wins a select.
    pub async fn next(&mut self) -> Received {
        tokio::select! {
            // SIGCHLD first: when the child exits during a stop, its exit decides the outcome.
            biased;
            _ = self.chld.recv() => Received::Child,
            _ = self.term.recv() => Received::Term,
            _ = self.int.recv() => Received::Int,
            _ = self.hup.recv() => Received::Hup,
        }
    }

    /// A signal that already arrived, without waiting.
    pub async fn pending(&mut self) -> Option<Received> {
        tokio::select! {
            biased;
            s = self.next() => Some(s),
            _ = std::future::ready(()) => None,
        }
    }
}
