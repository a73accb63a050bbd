//! What `steward check` reports: one [`Finding`] per problem, each with what will happen,
//! why, and the line that fixes it.

use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::config::ConfigError;
use crate::files::{tidy, Location};

/// How sure the outcome is. Ordered so that the worst sorts last (`max()` is the verdict).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; nothing goes wrong because of it.
    Info,
    /// A risk: it goes wrong under some circumstances (a long request, a crash, a hostile user).
    Warning,
    /// It will go wrong: a stop that ends in systemd's SIGKILL, a start that cannot succeed.
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Declares the finding ids once: the [`Id`] enum, a constant per id for the rules, its
/// text (what the report, the JSON and the journal's `STEWARD_CHECK` show) and
/// [`ALL_IDS`], in the order the README documents them.
macro_rules! finding_ids {
    ($($variant:ident / $constant:ident => $text:literal,)*) => {
        /// What a finding is about; stable across releases, as scripts match on it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Id {
            $($variant,)*
        }

        impl Id {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Id::$variant => $text,)*
                }
            }
        }

        $(pub const $constant: Id = Id::$variant;)*

        /// Every finding id. Tests hold each to a fixture that raises it and one that does not.
        pub const ALL_IDS: &[Id] = &[$(Id::$variant,)*];
    };
}

finding_ids! {
    StopTimeoutExceeded / STOP_TIMEOUT_EXCEEDED => "stop-timeout-exceeded",
    StopWaitsGrace / STOP_WAITS_GRACE => "stop-waits-grace",
    GraceClamped / GRACE_CLAMPED => "grace-clamped",
    MarginExceedsTimeout / MARGIN_EXCEEDS_TIMEOUT => "margin-exceeds-timeout",
    MarginTooSmall / MARGIN_TOO_SMALL => "margin-too-small",
    DeadlineBeyondTimeout / DEADLINE_BEYOND_TIMEOUT => "deadline-beyond-timeout",
    ServiceType / SERVICE_TYPE => "service-type",
    NotifyAccess / NOTIFY_ACCESS => "notify-access",
    KillMode / KILL_MODE => "kill-mode-not-mixed",
    DelegateMissing / DELEGATE_MISSING => "delegate-missing",
    NofileAboveHard / NOFILE_ABOVE_HARD => "nofile-above-hard",
    NofileLow / NOFILE_LOW => "nofile-low",
    StopFailureModeAbort / STOP_FAILURE_MODE_ABORT => "stop-failure-mode-abort",
    RestartPrevent78 / RESTART_PREVENT_78 => "restart-prevent-78-missing",
    WatchdogWithoutProbe / WATCHDOG_WITHOUT_PROBE => "watchdog-without-probe",
    WatchdogTooShort / WATCHDOG_TOO_SHORT => "watchdog-too-short",
    NoRuntimeDirectory / NO_RUNTIME_DIRECTORY => "no-runtime-directory",
    PidFileMismatch / PID_FILE_MISMATCH => "pid-file-mismatch",
    DaemonIgnored / DAEMON_IGNORED => "daemon-ignored",
    ForegroundOnly / FOREGROUND_ONLY => "foreground-only",
    UserIgnored / USER_IGNORED => "user-ignored",
    UpgradeSockSharedDir / UPGRADE_SOCK_SHARED_DIR => "upgrade-sock-shared-dir",
    ReadyNotAListener / READY_NOT_A_LISTENER => "ready-not-a-listener",
    ListenerMismatch / LISTENER_MISMATCH => "listener-mismatch",
    HandoffUnsupported / HANDOFF_UNSUPPORTED => "handoff-unsupported",
    ParseError / PARSE_ERROR => "parse-error",
    Unreadable / UNREADABLE => "unreadable",
    NoUnit / NO_UNIT => "no-unit",
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub id: Id,
    pub severity: Severity,
    /// What will happen, in the operator's terms ("systemctl stop will wait 90 s ...").
    pub what: String,
    /// The settings that cause it, with their values and where they come from.
    pub why: String,
    /// The line to write, at [`Finding::at`] when that is known.
    pub fix: String,
    #[serde(flatten, serialize_with = "serialize_at")]
    pub at: Option<Location>,
}

fn serialize_at<S: serde::Serializer>(at: &Option<Location>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(3))?;
    m.serialize_entry("file", &at.as_ref().map(|a| &a.file))?;
    m.serialize_entry("line", &at.as_ref().and_then(|a| a.line))?;
    m.serialize_entry("column", &at.as_ref().and_then(|a| a.column))?;
    m.end()
}

impl Finding {
    pub fn new(id: Id, severity: Severity, what: impl Into<String>) -> Finding {
        Finding {
            id,
            severity,
            what: what.into(),
            why: String::new(),
            fix: String::new(),
            at: None,
        }
    }

    pub fn why(mut self, why: impl Into<String>) -> Finding {
        self.why = why.into();
        self
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Finding {
        self.fix = fix.into();
        self
    }

    pub fn at(mut self, at: Option<Location>) -> Finding {
        self.at = at;
        self
    }

    /// A file steward or Pingora refuses, at the parser's position, in the parser's words.
    pub fn from_config_error(e: &ConfigError, why: &str) -> Finding {
        Finding::new(PARSE_ERROR, Severity::Error, e.message.clone())
            .why(why)
            .fix(e.fix.clone().unwrap_or_default())
            .at(Some(Location {
                file: tidy(&e.file),
                line: e.line,
                column: e.column,
            }))
    }

    pub fn unreadable(file: &Path, what: &str, error: impl fmt::Display) -> Finding {
        Finding::new(
            UNREADABLE,
            Severity::Error,
            format!("cannot read the {what}: {error}"),
        )
        .at(Some(Location::file(file)))
    }

    /// One line for the journal: `file:line: what; why (fix: ...)`.
    pub fn one_line(&self) -> String {
        let mut s = String::new();
        if let Some(at) = &self.at {
            s.push_str(&format!("{at}: "));
        }
        s.push_str(&self.what);
        if !self.why.is_empty() {
            s.push_str(&format!("; {}", self.why));
        }
        if !self.fix.is_empty() {
            s.push_str(&format!(" (fix: {})", self.fix));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_sort_above_warnings_above_infos() {
        assert!(Severity::Error > Severity::Warning && Severity::Warning > Severity::Info);
    }

    #[test]
    fn one_line_puts_the_fix_last() {
        let f = Finding::new(KILL_MODE, Severity::Warning, "what")
            .why("why")
            .fix("KillMode=mixed")
            .at(Some(Location::line(Path::new("u.service"), Some(3))));
        assert_eq!(f.one_line(), "u.service:3: what; why (fix: KillMode=mixed)");
    }

    #[test]
    fn id_texts_are_unique() {
        let mut ids: Vec<&str> = ALL_IDS.iter().map(|i| i.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), ALL_IDS.len());
    }
}
