//! Where steward's records go: journald with structured fields under systemd, stderr
//! otherwise.
//!
//! Fields are named `steward_*` in the code; journald sees them upper-cased
//! (`STEWARD_PHASE`, `STEWARD_CHILD_PID`, `STEWARD_DEADLINE_MS`, ...), so
//! `journalctl -o json -u steward-proxy` can be filtered on them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogTarget {
    /// journald when systemd connected stderr to the journal, else stderr.
    Auto,
    /// journald, with the STEWARD_* fields.
    Journald,
    /// Standard error, as text.
    Stderr,
}

static TO_JOURNAL: AtomicBool = AtomicBool::new(false);

/// journald learns a record's unit from the sender's cgroup, read from /proc when the
/// datagram is processed; a steward that exits at once after its last record (a
/// configuration error, say) can be gone by then, and `journalctl -u` would not show the
/// one line that says why. Waiting a moment before a failing exit closes that window.
pub fn before_exit(code: i32) {
    if code != 0 && TO_JOURNAL.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn init(target: LogTarget) {
    let filter = EnvFilter::try_from_env("STEWARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let want_journal = match target {
        LogTarget::Auto => std::env::var_os("JOURNAL_STREAM").is_some(),
        LogTarget::Journald => true,
        LogTarget::Stderr => false,
    };
    if want_journal {
        match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer
                    .with_field_prefix(None)
                    .with_syslog_identifier("steward".into());
                tracing_subscriber::registry()
                    .with(filter)
                    .with(layer)
                    .init();
                TO_JOURNAL.store(true, Ordering::Relaxed);
                return;
            }
            Err(e) => eprintln!("steward: journald unavailable ({e}); logging to stderr"),
        }
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
}
