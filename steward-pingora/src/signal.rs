//! Signal handlers that may be missing: a handler that cannot be installed is logged and
//! its signal keeps its default action, and waiting on it waits forever.

use tokio::signal::unix::{signal, Signal, SignalKind};

pub(crate) fn handler(kind: SignalKind, name: &str) -> Option<Signal> {
    signal(kind)
        .map_err(|e| log::error!("cannot handle {name}: {e}; it keeps its default action"))
        .ok()
}

/// The next delivery of `s`; never, without a handler.
pub(crate) async fn received(s: &mut Option<Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
