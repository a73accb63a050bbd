//! Pingora's YAML read the way Pingora 0.9.1 reads it, and steward-proxy's listeners.
//!
//! Pingora deserializes its `ServerConf` with serde_yaml, `#[serde(default)]` and no
//! `deny_unknown_fields`: an absent key takes its default, an unknown key is ignored, and a
//! value of the wrong type stops the server before it starts. [`ServerConfShape`] has the
//! same fields with the same types, so the same serde_yaml rejects the same files, at the
//! same line and column.

use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use super::findings::{Finding, Severity, PARSE_ERROR};
use crate::config::{column_of, line_of};
use crate::files::Location;
use crate::pingora_conf::{self, key_line};

pub const GRACE: &str = "grace_period_seconds";
pub const SHUTDOWN_TIMEOUT: &str = "graceful_shutdown_timeout_seconds";
/// Pingora 0.9.1's `ServerConf::default()` values for the keys the checks read.
pub const DEFAULT_PID_FILE: &str = "/tmp/pingora.pid";
pub const DEFAULT_UPGRADE_SOCK: &str = "/tmp/pingora_upgrade.sock";

/// The settings of one Pingora YAML that matter under a supervisor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PingoraConf {
    /// `None`: no file, Pingora runs on its defaults.
    pub path: Option<PathBuf>,
    text: String,
    /// As written; `None` is Pingora's default ([`pingora_conf::PINGORA_DEFAULT_GRACE`]).
    pub grace: Option<u64>,
    pub shutdown_timeout: Option<u64>,
    pub daemon: bool,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub error_log: Option<String>,
    pub working_directory: Option<String>,
}

impl PingoraConf {
    /// No file: every key at Pingora's default.
    pub fn defaults() -> PingoraConf {
        PingoraConf::default()
    }

    pub fn load(path: &Path) -> Result<PingoraConf, Box<Finding>> {
        let text = crate::files::read_to_string(path)
            .map_err(|e| Finding::unreadable(path, "Pingora conf", e))?;
        PingoraConf::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<PingoraConf, Box<Finding>> {
        let refused = "steward (exit 78) and Pingora refuse to start with this file";
        let map =
            pingora_conf::parse(path, text).map_err(|e| Finding::from_config_error(&e, refused))?;
        let grace = pingora_conf::read_u64(&map, GRACE, path, text)
            .map_err(|e| Finding::from_config_error(&e, refused))?;
        let shutdown_timeout = pingora_conf::read_u64(&map, SHUTDOWN_TIMEOUT, path, text)
            .map_err(|e| Finding::from_config_error(&e, refused))?;
        let shape: ServerConfShape = serde_yaml::from_str(text).map_err(|e| {
            let msg = e.to_string();
            // serde_yaml appends " at line N column M"; the location is shown on its own.
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            let (line, column) = pingora_conf::position(text, e.location());
            type_error(path, msg, line.zip(column))
        })?;
        shape.validate(path, text)?;
        let string = |key: &str| text_value(&map, key);
        Ok(PingoraConf {
            path: Some(path.to_path_buf()),
            text: text.to_string(),
            grace,
            shutdown_timeout,
            daemon: shape.daemon,
            pid_file: string("pid_file"),
            upgrade_sock: string("upgrade_sock"),
            user: string("user"),
            group: string("group"),
            error_log: string("error_log"),
            working_directory: string("working_directory"),
        })
    }

    /// Where `key` is set; the file alone when it is not; `None` without a file.
    pub fn at(&self, key: &str) -> Option<Location> {
        let path = self.path.as_deref()?;
        Some(Location::line(path, key_line(&self.text, key)))
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the file writes `key` at all (a `null` counts as absent, as for Pingora).
    pub fn sets(&self, key: &str) -> bool {
        self.path.is_some() && key_line(&self.text, key).is_some()
    }
}

fn text_value(map: &Mapping, key: &str) -> Option<String> {
    match map.get(key)? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => serde_yaml::to_string(other)
            .ok()
            .map(|s| s.trim().to_string()),
    }
}

fn type_error(path: &Path, message: String, line_col: Option<(usize, usize)>) -> Finding {
    Finding::new(
        PARSE_ERROR,
        Severity::Error,
        format!("Pingora 0.9.1 refuses this conf: {message}"),
    )
    .why("Pingora reads its YAML with serde and stops before serving when a value has the wrong type")
    .fix("give the key a value of the type named above")
    .at(Some(Location {
        line: line_col.map(|(l, _)| l),
        column: line_col.map(|(_, c)| c),
        ..Location::file(path)
    }))
}

/// pingora-core 0.9.1 `ServerConf`, field for field (without the `s2n` feature's key), so
/// that serde_yaml accepts and refuses exactly what Pingora does. Only the types matter.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
#[allow(dead_code)]
struct ServerConfShape {
    version: usize,
    daemon: bool,
    error_log: Option<String>,
    pid_file: String,
    upgrade_sock: String,
    user: Option<String>,
    group: Option<String>,
    working_directory: Option<PathBuf>,
    threads: usize,
    listener_tasks_per_fd: usize,
    work_stealing: bool,
    runtime_enable_alt_timer: bool,
    ca_file: Option<String>,
    grace_period_seconds: Option<u64>,
    graceful_shutdown_timeout_seconds: Option<u64>,
    client_bind_to_ipv4: Vec<String>,
    client_bind_to_ipv6: Vec<String>,
    upstream_keepalive_pool_size: usize,
    upstream_connect_offload_threadpools: Option<usize>,
    upstream_connect_offload_thread_per_pool: Option<usize>,
    downstream_tls_offload_threadpools: Option<usize>,
    downstream_tls_offload_thread_per_pool: Option<usize>,
    upstream_debug_ssl_keylog: bool,
    max_retries: usize,
    upgrade_sock_connect_accept_max_retries: Option<usize>,
    max_blocking_threads: Option<usize>,
    blocking_threads_ttl_seconds: Option<u64>,
    fast_timeout_to_tokio_threshold_seconds: Option<u64>,
    runtime_metrics_poll_time_histogram: bool,
    runtime_metrics_poll_time_histogram_scale: Option<HistogramScale>,
    runtime_metrics_poll_time_histogram_resolution_micros: Option<u64>,
    runtime_metrics_poll_time_histogram_buckets: Option<usize>,
    daemon_wait_for_ready: bool,
    daemon_ready_timeout_seconds: Option<NonZeroU64>,
    daemon_notify_timeout_seconds: Option<NonZeroU64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum HistogramScale {
    Linear,
    Log,
}

impl ServerConfShape {
    /// `ServerConf::validate()` of 0.9.1: the values it refuses after parsing.
    fn validate(&self, path: &Path, text: &str) -> Result<(), Box<Finding>> {
        let refuse = |key: &str, why: &str| {
            Err(Box::new(
                type_error(path, format!("{key} {why}"), None)
                    .at(Some(Location::line(path, key_line(text, key)))),
            ))
        };
        let zero = [
            (
                "max_blocking_threads",
                self.max_blocking_threads.map(|n| n as u64),
            ),
            (
                "runtime_metrics_poll_time_histogram_resolution_micros",
                self.runtime_metrics_poll_time_histogram_resolution_micros,
            ),
            (
                "runtime_metrics_poll_time_histogram_buckets",
                self.runtime_metrics_poll_time_histogram_buckets
                    .map(|n| n as u64),
            ),
        ];
        for (key, value) in zero {
            if value == Some(0) {
                return refuse(key, "must be greater than zero");
            }
        }
        if self
            .runtime_metrics_poll_time_histogram_buckets
            .is_some_and(|b| b > 1024)
        {
            return refuse(
                "runtime_metrics_poll_time_histogram_buckets",
                "must be at most 1024",
            );
        }
        Ok(())
    }
}

/// The `--proxy-config` file steward-proxy is given in `args`, if any.
pub fn proxy_config_arg(args: &[String]) -> Option<&str> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--proxy-config" {
            return it.next().map(String::as_str);
        }
        if let Some(v) = a.strip_prefix("--proxy-config=") {
            return Some(v);
        }
    }
    None
}

/// What steward-proxy's settings say it listens on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyListeners {
    pub path: PathBuf,
    /// Pingora listening services (`listen`, `origin.listen`): the keys of the hand-off.
    pub services: Vec<String>,
    /// `health.listen`: its own socket, outside Pingora's services and the hand-off.
    pub health: Option<String>,
}

impl ProxyListeners {
    /// Every address the child accepts connections on.
    pub fn all(&self) -> impl Iterator<Item = &String> {
        self.services.iter().chain(&self.health)
    }
}

/// Reads `listen`, `origin.listen` and `health.listen` as steward-proxy's settings write
/// them. Only the syntax is checked here; steward-proxy itself refuses a file with unknown
/// keys (exit 78) and says why.
pub fn proxy_listeners(path: &Path) -> Result<ProxyListeners, Box<Finding>> {
    let text = crate::files::read_to_string(path)
        .map_err(|e| Finding::unreadable(path, "steward-proxy settings", e))?;
    let value: toml::Value = toml::from_str(&text).map_err(|e| {
        let start = e.span().map(|s| s.start);
        Finding::new(
            PARSE_ERROR,
            Severity::Error,
            format!(
                "steward-proxy refuses its settings: {}",
                e.message().trim().replace('\n', "; ")
            ),
        )
        .why("the child exits 78 before it serves")
        .fix("correct the TOML syntax on that line")
        .at(Some(Location {
            line: start.map(|s| line_of(&text, s)),
            column: start.map(|s| column_of(&text, s)),
            ..Location::file(path)
        }))
    })?;
    let listen_of = |table: &str| {
        value
            .get(table)
            .and_then(|t| t.get("listen"))
            .and_then(toml::Value::as_str)
            .map(str::to_string)
    };
    let mut services: Vec<String> = value
        .get("listen")
        .and_then(toml::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(toml::Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    services.extend(listen_of("origin"));
    Ok(ProxyListeners {
        path: path.to_path_buf(),
        services,
        health: listen_of("health"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PingoraConf, Box<Finding>> {
        PingoraConf::parse(Path::new("p.yaml"), text)
    }

    #[test]
    fn absent_keys_are_pingoras_defaults() {
        let p = parse("version: 1\n").expect("valid");
        assert_eq!((p.grace, p.shutdown_timeout, p.daemon), (None, None, false));
        assert_eq!(p.upgrade_sock, None);
    }

    #[test]
    fn an_empty_file_is_all_defaults() {
        assert!(parse("").is_ok());
    }

    #[test]
    fn unknown_keys_are_ignored() {
        assert!(parse("version: 1\nmy_own_setting: [1, 2]\n").is_ok());
    }

    #[test]
    fn a_wrong_type_is_refused_at_its_line_and_column() {
        let f = parse("version: 1\nthreads: two\n").unwrap_err();
        assert_eq!(f.severity, Severity::Error);
        let at = f.at.expect("located");
        assert_eq!((at.line, at.column), (Some(2), Some(10)));
        assert!(f.what.contains("expected usize"), "{}", f.what);
    }

    #[test]
    fn a_yes_is_not_a_boolean_for_pingora() {
        assert!(parse("daemon: yes\n").is_err());
    }

    #[test]
    fn malformed_yaml_names_line_and_column() {
        let f = parse("version: 1\ngrace_period_seconds: [30\n").unwrap_err();
        let at = f.at.expect("located");
        assert!(at.line.is_some() && at.column.is_some(), "{at:?}");
        assert!(f.what.contains("invalid YAML"), "{}", f.what);
    }

    #[test]
    fn values_pingora_validates_are_refused() {
        let f = parse("max_blocking_threads: 0\n").unwrap_err();
        assert_eq!(f.at.and_then(|a| a.line), Some(1));
    }

    #[test]
    fn set_keys_are_located() {
        let p = parse("version: 1\ngrace_period_seconds: 30\n").expect("valid");
        assert_eq!(p.at(GRACE).and_then(|a| a.line), Some(2));
        assert_eq!(p.at("pid_file").and_then(|a| a.line), None);
        assert!(p.sets(GRACE) && !p.sets("pid_file"));
    }

    #[test]
    fn proxy_config_is_found_in_both_spellings() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            proxy_config_arg(&args(&["--proxy-config", "p.toml"])),
            Some("p.toml")
        );
        assert_eq!(
            proxy_config_arg(&args(&["--proxy-config=p.toml"])),
            Some("p.toml")
        );
        assert_eq!(proxy_config_arg(&args(&["-t"])), None);
    }
}
