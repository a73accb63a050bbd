//! Where steward's records go: journald with structured fields under systemd, stderr
//! otherwise.
//!
//! Fields are named `steward_*` in the code; journald sees them upper-cased
//! (`STEWARD_PHASE`, `STEWARD_CHILD_PID`, `STEWARD_DEADLINE_MS`, ...), so
//! `journalctl -o json -u steward-proxy` can be filtered on them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use std::fmt::{self, Write as _};

use tracing::field::Field;
use tracing_journald::{Priority, PriorityMappings};
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{self, Writer};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

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
        LogTarget::Auto => stderr_is_the_journal(),
        LogTarget::Journald => true,
        LogTarget::Stderr => false,
    };
    if want_journal {
        // journald needs no escaping: each field travels as its own length-prefixed (or
        // `KEY=value` with no newline in it) item of a native-protocol datagram, so a
        // newline in a value stays inside that value and cannot add a field or a record.
        match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer
                    .with_field_prefix(None)
                    .with_syslog_identifier("steward".into())
                    .with_priority_mappings(priorities());
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
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::registry()
        .with(filter)
        .with(human_layer(std::io::stderr, ansi))
        .init();
}

/// journald priorities as syslog means them: tracing-journald's default puts INFO at 5
/// (notice, "normal but significant"), which would make every routine record stand out
/// in `journalctl -p notice` and leave nothing at 6 (info). DEBUG and TRACE are both 7.
fn priorities() -> PriorityMappings {
    PriorityMappings {
        error: Priority::Error,
        warn: Priority::Warning,
        info: Priority::Informational,
        debug: Priority::Debug,
        trace: Priority::Debug,
    }
}

/// Whether standard error is the journal stream systemd connected: `JOURNAL_STREAM` names
/// that stream's device and inode, and only when stderr still is that file (not
/// redirected by a wrapper, a shell or a test harness that inherited the variable) do
/// records belong in the journal (sd_journal_stream_fd(3), systemd.exec(5)).
fn stderr_is_the_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let stderr = nix::sys::stat::fstat(2)
        .ok()
        .map(|st| (st.st_dev, st.st_ino));
    journal_stream_is(&value.to_string_lossy(), stderr)
}

/// Whether `JOURNAL_STREAM`'s `DEVICE:INODE` (decimal) names `stderr`'s (device, inode).
fn journal_stream_is(value: &str, stderr: Option<(u64, u64)>) -> bool {
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    match (dev.parse::<u64>(), ino.parse::<u64>(), stderr) {
        (Ok(dev), Ok(ino), Some(stat)) => (dev, ino) == stat,
        _ => false,
    }
}

/// The text records: one line per record, whatever the values in it. A logged value (a
/// configuration path, a child's output, a request line) may hold a newline that would
/// start a fake record, or a terminal escape that moves the cursor or rewrites what an
/// operator sees. Every field, the message included, is written through [`Escaping`], so
/// the only control characters on the way out are the record's final newline and, on a
/// terminal, the colours the formatter itself adds around the level (fields are formatted
/// apart from those, so escaping them leaves the colours intact).
fn human_layer<S, W>(writer: W, ansi: bool) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(false)
        .with_ansi(ansi)
        .fmt_fields(format::debug_fn(escaped_field).delimited(" "))
}

/// One field as the default formatter writes it (`name=value`, the message bare), escaped.
fn escaped_field(w: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug) -> fmt::Result {
    let name = field.name();
    // Records forwarded from the `log` crate carry their metadata as `log.*` fields,
    // already shown in the record's own header.
    if name.starts_with("log.") {
        return Ok(());
    }
    if name != "message" {
        write!(Escaping(w), "{}=", name.trim_start_matches("r#"))?;
    }
    write!(Escaping(w), "{value:?}")
}

/// `text` with every control character as a visible escape (`\n`, `\u{1b}`): for text
/// shown on a terminal outside the log (the `steward status` client).
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Writing to a String cannot fail.
    let _ = write_escaped(&mut out, text);
    out
}

fn write_escaped(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    for c in s.chars() {
        if c.is_control() {
            for e in c.escape_default() {
                out.write_char(e)?;
            }
        } else {
            out.write_char(c)?;
        }
    }
    Ok(())
}

/// Writes text with every control character as a visible escape (`\n`, `\u{1b}`).
struct Escaping<'a, 'w>(&'a mut Writer<'w>);

impl fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_escaped(self.0, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Every record written, for the test to read.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    /// What `log` writes through the human-readable layer.
    fn logged(ansi: bool, log: impl FnOnce()) -> String {
        let out = Captured::default();
        let subscriber = tracing_subscriber::registry().with(human_layer(out.clone(), ansi));
        tracing::subscriber::with_default(subscriber, log);
        let bytes = out.0.lock().map(|v| v.clone()).unwrap_or_default();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn info_goes_to_the_journal_at_priority_6_not_notice() {
        // journald's PRIORITY field is the mapping's byte, an ASCII digit.
        assert_eq!(priorities().info as u8, b'6');
    }

    #[test]
    fn every_level_has_its_syslog_priority() {
        let p = priorities();
        let digits = [p.error, p.warn, p.info, p.debug, p.trace].map(|x| x as u8 - b'0');
        assert_eq!(digits, [3, 4, 6, 7, 7]);
    }

    #[test]
    fn journal_stream_naming_stderr_s_device_and_inode_is_the_journal() {
        assert!(journal_stream_is("8:12345", Some((8, 12345))));
    }

    #[test]
    fn journal_stream_naming_another_file_is_not_the_journal() {
        // Inherited by a process whose stderr was redirected since.
        assert!(!journal_stream_is("8:12345", Some((8, 999))));
        assert!(!journal_stream_is("8:12345", Some((9, 12345))));
        assert!(!journal_stream_is("8:12345", None));
    }

    #[test]
    fn a_malformed_journal_stream_is_not_the_journal() {
        for value in ["", "1", "8:", ":12345", "a:b", "8:12345:1", "-8:12345"] {
            assert!(!journal_stream_is(value, Some((8, 12345))), "{value:?}");
        }
    }

    const HOSTILE: &str = "/etc/x\nERROR fake record\r\u{1b}[2J\u{1b}]0;title\u{7}";

    #[test]
    fn escape_controls_leaves_no_control_character() {
        assert_eq!(escape_controls("a\nb\u{1b}[2Jc é"), "a\\nb\\u{1b}[2Jc é");
    }

    #[test]
    fn a_newline_in_a_message_cannot_start_another_record() {
        let text = logged(false, || tracing::error!("cannot read {HOSTILE}"));
        assert_eq!(text.lines().count(), 1, "{text:?}");
        assert!(text.ends_with('\n'), "{text:?}");
        assert!(
            text.contains("cannot read /etc/x\\nERROR fake record\\r"),
            "{text:?}"
        );
    }

    #[test]
    fn control_characters_in_fields_are_escaped() {
        let text = logged(
            false,
            || tracing::warn!(path = %HOSTILE, debug = ?HOSTILE, plain = HOSTILE, "x"),
        );
        assert_eq!(text.lines().count(), 1, "{text:?}");
        let body = text.trim_end_matches('\n');
        assert!(!body.chars().any(char::is_control), "{text:?}");
        assert!(body.contains("path=/etc/x\\nERROR"), "{text:?}");
    }

    #[test]
    fn on_a_terminal_only_the_formatters_own_colours_are_escape_sequences() {
        let text = logged(true, || tracing::info!(path = %HOSTILE, "{HOSTILE}"));
        assert_eq!(text.lines().count(), 1, "{text:?}");
        assert!(!text.contains("\u{1b}[2J"), "{text:?}");
        assert!(!text.contains("\u{1b}]0;"), "{text:?}");
        assert!(text.contains("\\u{1b}[2J"), "{text:?}");
        // The level is still coloured.
        assert!(text.contains("\u{1b}[32m"), "{text:?}");
    }
}
