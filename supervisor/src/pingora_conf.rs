//! The child's effective Pingora configuration.
//!
//! steward never edits the operator's YAML. It reads it, and writes a copy into its own
//! runtime directory with three things changed where needed:
//! - `grace_period_seconds` and `graceful_shutdown_timeout_seconds` clamped so the child's
//!   own shutdown fits the stop deadline (Pingora 0.9.1 sleeps the whole grace period on
//!   SIGTERM, 300 s when the key is absent);
//! - `upgrade_sock` inside the runtime directory, which only the service can enter (Pingora
//!   chmods the socket 0666, so in /tmp any local user could hand it listeners);
//! - `daemon: false`, since a child that forks away is a child steward cannot supervise.
//!
//! Every other key is copied as it is, unknown ones included, so a newer Pingora's settings
//! survive.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use crate::config::ConfigError;

/// Pingora 0.9.1's defaults for absent keys (server/mod.rs: EXIT_TIMEOUT, unwrap_or(5)).
pub const PINGORA_DEFAULT_GRACE: u64 = 300;
pub const PINGORA_DEFAULT_SHUTDOWN_TIMEOUT: u64 = 5;

/// The effective conf's name in steward's runtime directory: the file the child is
/// started with (`-c`).
pub const EFFECTIVE_CONF: &str = "pingora.yaml";

/// The upgrade socket's name in steward's runtime directory: the effective conf's
/// `upgrade_sock`, where each generation waits for its listeners.
pub const UPGRADE_SOCK: &str = "upgrade.sock";

const GRACE: &str = "grace_period_seconds";
const SHUTDOWN_TIMEOUT: &str = "graceful_shutdown_timeout_seconds";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub yaml: String,
    pub grace: u64,
    pub shutdown_timeout: u64,
    pub upgrade_sock: PathBuf,
    /// Human-readable notes on what was changed, each logged as a warning.
    pub changes: Vec<String>,
}

/// Builds the effective copy from the operator's YAML text (`None`: no file, all defaults).
pub fn effective(
    source: Option<(&Path, &str)>,
    deadline: Option<Duration>,
    upgrade_sock: &Path,
) -> Result<Effective, ConfigError> {
    let mut map = match source {
        None => Mapping::new(),
        Some((path, text)) => parse(path, text)?,
    };
    let (file, text) = source.unwrap_or((Path::new("<none>"), ""));
    let grace = read_u64(&map, GRACE, file, text)?;
    let timeout = read_u64(&map, SHUTDOWN_TIMEOUT, file, text)?;
    let mut changes = Vec::new();

    let (grace, timeout) = clamp(
        grace.unwrap_or(PINGORA_DEFAULT_GRACE),
        timeout.unwrap_or(PINGORA_DEFAULT_SHUTDOWN_TIMEOUT),
        deadline,
        grace.is_none(),
        &mut changes,
    );
    map.insert(GRACE.into(), grace.into());
    map.insert(SHUTDOWN_TIMEOUT.into(), timeout.into());

    if let Some(old) = map.get("upgrade_sock").and_then(Value::as_str) {
        if Path::new(old) != upgrade_sock {
            changes.push(format!(
                "upgrade_sock {old} replaced by {} (a directory only the service can enter)",
                upgrade_sock.display()
            ));
        }
    }
    // YAML is text: a path that is not UTF-8 could only be written lossily, naming
    // another socket than the one steward waits on (config.rs refuses such a runtime_dir
    // with its line; this also covers $RUNTIME_DIRECTORY).
    let sock = upgrade_sock.to_str().ok_or_else(|| {
        ConfigError::new(
            upgrade_sock,
            "the runtime directory's path is not valid UTF-8, and the effective Pingora conf (YAML text) must name the upgrade socket in it exactly",
        )
        .with_fix("set runtime_dir (or RUNTIME_DIRECTORY) to a path of UTF-8 names")
    })?;
    map.insert("upgrade_sock".into(), sock.into());
    if map.get("daemon").and_then(Value::as_bool) == Some(true) {
        changes.push(
            "daemon: true replaced by false (a supervised child stays in the foreground)".into(),
        );
    }
    map.insert("daemon".into(), false.into());

    let yaml = serde_yaml::to_string(&Value::Mapping(map)).map_err(|e| {
        ConfigError::new(
            file,
            format!("cannot write the effective Pingora conf: {e}"),
        )
    })?;
    let header = match source {
        // The header is a YAML comment: a newline in the path would end it, and the rest
        // of the path would be read as keys. So the path must be UTF-8 (named exactly)
        // and has its control characters escaped.
        Some((p, _)) => format!(
            "# Written by steward from {}: do not edit; edit that file instead.\n",
            crate::logging::escape_controls(p.to_str().ok_or_else(|| {
                ConfigError::new(
                    p,
                    "the path of child.pingora_conf is not valid UTF-8, and the effective Pingora conf (YAML text) must name it exactly",
                )
                .with_fix("keep the Pingora YAML at a path of UTF-8 names")
            })?)
        ),
        None => "# Written by steward (no child.pingora_conf given): do not edit.\n".to_string(),
    };
    Ok(Effective {
        yaml: format!("{header}{yaml}"),
        grace,
        shutdown_timeout: timeout,
        upgrade_sock: upgrade_sock.to_path_buf(),
        changes,
    })
}

/// Fits the child's own shutdown (grace + runtime shutdown timeout) inside the deadline.
/// The grace period keeps as much of the deadline as it can: a stock Pingora child cuts
/// its requests when its grace ends, and that must not be earlier than steward's deadline.
/// The runtime shutdown only waits for tasks tokio has already dropped, so it gives way.
fn clamp(
    grace: u64,
    timeout: u64,
    deadline: Option<Duration>,
    grace_was_default: bool,
    changes: &mut Vec<String>,
) -> (u64, u64) {
    let Some(deadline) = deadline else {
        return (grace, timeout);
    };
    let budget = deadline.as_secs();
    // Checked: u64::MAX seconds in the YAML must not wrap around to a sum that "fits".
    if grace.checked_add(timeout).is_some_and(|sum| sum <= budget) {
        return (grace, timeout);
    }
    let new_grace = grace.min(budget);
    let new_timeout = timeout.min(budget - new_grace);
    let what = if grace_was_default {
        format!("{GRACE} (absent: Pingora's default {grace})")
    } else {
        format!("{GRACE} {grace}")
    };
    changes.push(format!(
        "{what} + {SHUTDOWN_TIMEOUT} {timeout} exceed the stop deadline {} s: clamped to {GRACE} {new_grace} + {SHUTDOWN_TIMEOUT} {new_timeout} in the effective copy",
        budget
    ));
    (new_grace, new_timeout)
}

/// Reads the YAML as a mapping; an empty file is an empty mapping (all of Pingora's defaults).
pub fn parse(path: &Path, text: &str) -> Result<Mapping, ConfigError> {
    match serde_yaml::from_str::<Value>(text) {
        Ok(Value::Mapping(m)) => Ok(m),
        Ok(Value::Null) => Ok(Mapping::new()),
        Ok(_) => Err(
            ConfigError::new(path, "the Pingora conf is not a YAML mapping")
                .at_line(Some(1))
                .with_fix("write `key: value` lines, e.g. `version: 1`"),
        ),
        Err(e) => {
            let (line, column) = position(text, e.location());
            let msg = e.to_string();
            // serde_yaml appends " at line N column M"; the line is shown separately.
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            Err(ConfigError::new(path, format!("invalid YAML: {msg}"))
                .at_line(line)
                .at_column(column)
                .with_fix("fix the YAML syntax on that line"))
        }
    }
}

/// serde_yaml's error position, moved back inside the text: at the end of a file without a
/// final newline libyaml reports the line after the last one.
pub fn position(text: &str, at: Option<serde_yaml::Location>) -> (Option<usize>, Option<usize>) {
    let Some(at) = at else {
        return (None, None);
    };
    let lines: Vec<&str> = text.split('\n').collect();
    if at.line() <= lines.len() {
        return (Some(at.line()), Some(at.column()));
    }
    let last = lines.last().map_or(0, |l| l.chars().count());
    (Some(lines.len()), Some(last + 1))
}

/// A whole number of seconds, as Pingora's `Option<u64>` keys take it.
pub fn read_u64(
    map: &Mapping,
    key: &str,
    file: &Path,
    text: &str,
) -> Result<Option<u64>, ConfigError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            ConfigError::new(
                file,
                format!(
                    "{key} must be a whole number of seconds, not {}",
                    describe(v)
                ),
            )
            .at_line(key_line(text, key))
            .with_fix(format!("{key}: 30"))
        }),
    }
}

fn describe(v: &Value) -> String {
    serde_yaml::to_string(v)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "that value".into())
}

/// The line that sets `key` (serde_yaml's values carry no positions).
pub fn key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.trim_start().starts_with(&format!("{key}:")))
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOCK: &str = "/run/steward/upgrade.sock";
    fn eff(text: &str, deadline_s: Option<u64>) -> Result<Effective, ConfigError> {
        effective(
            Some((Path::new("pingora.yaml"), text)),
            deadline_s.map(Duration::from_secs),
            Path::new(SOCK),
        )
    }

    #[test]
    fn grace_longer_than_the_deadline_is_clamped_with_a_note() {
        let e = eff("version: 1\ngrace_period_seconds: 300\n", Some(25)).expect("ok");
        assert_eq!((e.grace, e.shutdown_timeout), (25, 0));
        assert!(e.changes[0].contains("300"), "{:?}", e.changes);
        assert!(e.yaml.contains("grace_period_seconds: 25"));
    }

    #[test]
    fn absent_grace_is_pingoras_300_and_is_clamped() {
        let e = eff("version: 1\n", Some(25)).expect("ok");
        assert_eq!(e.grace, 25);
        assert!(e.changes[0].contains("default 300"));
    }

    #[test]
    fn grace_that_fits_is_kept() {
        let e = eff(
            "grace_period_seconds: 10\ngraceful_shutdown_timeout_seconds: 2\n",
            Some(25),
        )
        .expect("ok");
        assert_eq!((e.grace, e.shutdown_timeout), (10, 2));
        assert!(e.changes.is_empty());
    }

    #[test]
    fn no_deadline_keeps_the_grace() {
        let e = eff("grace_period_seconds: 300\n", None).expect("ok");
        assert_eq!(e.grace, 300);
    }

    #[test]
    fn upgrade_sock_moves_into_the_runtime_directory() {
        let e = eff("upgrade_sock: /tmp/pingora_upgrade.sock\n", Some(25)).expect("ok");
        assert!(e.yaml.contains(SOCK));
        assert!(e
            .changes
            .iter()
            .any(|c| c.contains("/tmp/pingora_upgrade.sock")));
    }

    #[test]
    fn an_upgrade_socket_path_that_is_not_utf8_is_refused() {
        use std::os::unix::ffi::OsStrExt;
        let sock = Path::new(std::ffi::OsStr::from_bytes(b"/run/st\xffward/upgrade.sock"));
        let e = effective(None, Some(Duration::from_secs(25)), sock).expect_err("refused");
        assert!(e.message.contains("not valid UTF-8"), "{e}");
    }

    #[test]
    fn a_pingora_conf_path_that_is_not_utf8_is_refused() {
        use std::os::unix::ffi::OsStrExt;
        let conf = Path::new(std::ffi::OsStr::from_bytes(b"/etc/st\xffward/pingora.yaml"));
        let e = effective(
            Some((conf, "version: 1\n")),
            Some(Duration::from_secs(25)),
            Path::new("/run/steward/upgrade.sock"),
        )
        .expect_err("refused");
        assert!(
            e.message.contains("child.pingora_conf is not valid UTF-8"),
            "{e}"
        );
    }

    #[test]
    fn a_newline_in_the_pingora_conf_path_stays_inside_the_header_comment() {
        let conf = Path::new("/etc/x\nupgrade_sock: /tmp/evil.sock\ndaemon: true\n.yaml");
        let e = effective(
            Some((conf, "version: 1\n")),
            Some(Duration::from_secs(25)),
            Path::new("/run/steward/upgrade.sock"),
        )
        .expect("ok");
        let header = e.yaml.lines().next().unwrap_or_default();
        assert!(header.contains("/etc/x\\nupgrade_sock"), "{}", e.yaml);
        let body = e.yaml.replacen(header, "", 1);
        assert!(!body.contains("evil"), "{body}");
        let map: Mapping = serde_yaml::from_str(&e.yaml).expect("yaml");
        assert_eq!(
            map.get("upgrade_sock").and_then(Value::as_str),
            Some("/run/steward/upgrade.sock")
        );
    }

    #[test]
    fn daemon_is_forced_off() {
        let e = eff("daemon: true\n", Some(25)).expect("ok");
        assert!(e.yaml.contains("daemon: false"));
    }

    #[test]
    fn unknown_keys_are_copied() {
        let e = eff("threads: 4\nsome_future_key: abc\n", Some(25)).expect("ok");
        assert!(e.yaml.contains("some_future_key: abc"));
        assert!(e.yaml.contains("threads: 4"));
    }

    #[test]
    fn malformed_yaml_names_the_line() {
        let err = eff("version: 1\ngrace_period_seconds: [1\n", Some(25)).unwrap_err();
        assert!(err.line.is_some(), "{err}");
    }

    #[test]
    fn non_numeric_grace_is_refused_with_the_value_it_found() {
        let err = eff("grace_period_seconds: soon\n", Some(25)).unwrap_err();
        assert!(err.message.contains("whole number"), "{err}");
        assert!(err.message.ends_with("not soon"), "{err}");
    }

    #[test]
    fn an_error_past_the_end_of_a_file_without_a_final_newline_points_after_its_last_character() {
        // libyaml reports such an error on the line after the last one.
        let text = "version: 1\ngrace_period_seconds: [1";
        let err = eff(text, Some(25)).unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert_eq!(
            err.column,
            Some("grace_period_seconds: [1".len() + 1),
            "{err}"
        );
    }

    #[test]
    fn shutdown_timeout_gives_way_before_the_grace_period() {
        let e = eff(
            "grace_period_seconds: 20\ngraceful_shutdown_timeout_seconds: 10\n",
            Some(25),
        )
        .expect("ok");
        assert_eq!((e.grace, e.shutdown_timeout), (20, 5));
    }
}
