//! The words of steward's own in-place upgrade ([`crate::reexec`]).

use std::path::Path;

use crate::handover::Handover;
use crate::lifecycle::{GenId, Mode};

/// steward's binary was replaced, but a reload only re-executes from a steady state.
pub fn log_not_steady(why: &str) {
    tracing::warn!("{why}; steward re-executes only while serving one generation with nothing pending: this reload runs in the old binary, ask again once it is over");
}

pub fn log_checking(why: &str, path: &Path) {
    tracing::info!(
        steward_phase = "reloading",
        "{why}: checking it (`{} handover-check`) before re-executing in place",
        path.display()
    );
}

pub fn log_moved_on() {
    tracing::warn!("the new steward binary passed its check, but the state moved on (a crash, a stop or a restart): the reload runs in the old binary; reload again once it is over");
}

pub fn log_abandoned(path: &Path) {
    tracing::warn!("steward's upgrade to {} abandoned: the state moved on while the new binary was checked; the reload runs in the old binary, reload again once it is over", path.display());
}

pub fn log_reexecuting(path: &Path, h: &Handover) {
    tracing::info!(
        steward_phase = "reloading",
        steward_generation = h.generation.id,
        steward_child_pid = h.generation.pid,
        "re-executing in place as {} (pid {} unchanged): generation {} (child pid {}) keeps serving, {} listener(s) and the control socket handed over",
        path.display(),
        std::process::id(),
        h.generation.id,
        h.generation.pid,
        h.listeners.len()
    );
}

/// The upgrade failed: the reload fails with this text (journal, STATUS and the reply).
pub fn log_failed(path: &Path, reason: &str, gen: GenId, mode: Mode) -> String {
    let text = format!(
        "reload failed: steward's upgrade to {} failed: {reason}; the running steward (pid {}) and generation {gen} go on unchanged",
        path.display(),
        std::process::id()
    );
    tracing::warn!(steward_phase = mode.as_str(), "{text}");
    text
}

/// A `steward reload` handed over by the predecessor whose connection cannot take the
/// answer.
pub fn log_waiter_lost(e: &std::io::Error) {
    tracing::warn!("a waiting `steward reload` cannot be answered: {e}");
}

pub fn log_adopted(h: &Handover) {
    let (gen, pid) = (h.generation.id, h.generation.pid);
    tracing::info!(
        steward_phase = "serving",
        steward_generation = gen,
        steward_child_pid = pid,
        "re-executed in place (pid {} unchanged): adopted generation {gen} (child pid {pid}), {} listener(s) and the control socket; the reload continues",
        std::process::id(),
        h.listeners.len()
    );
}
