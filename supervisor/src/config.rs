//! Steward's own configuration: the TOML file named by `--config`.
//!
//! Every key is optional except `child.command`; unknown keys are an error, because a
//! misspelt `deadlin = "10s"` that silently falls back to the default is exactly the kind
//! of surprise that makes a stop hang. Errors carry the file, the line and a fix.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::duration::{parse_span, Span};
use crate::limits::{NofileSetting, MIN_NOFILE};

/// Where `steward run` looks when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/steward/steward.toml";

/// The stop deadline used outside systemd when `deadline = "auto"`.
pub const DEFAULT_FALLBACK_DEADLINE: Duration = Duration::from_secs(25);
const DEFAULT_MARGIN: Duration = Duration::from_secs(5);
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// A poll is a few hash lookups in the kernel once the child's listeners are closed
/// (netlink sock_diag): cheap enough to poll often, so the stop ends within milliseconds
/// of the last response.
const DEFAULT_DRAIN_POLL: Duration = Duration::from_millis(5);
const DEFAULT_DRAIN_QUIET: Duration = Duration::from_millis(50);
const DEFAULT_MAX_CRASHES: u32 = 5;
const DEFAULT_CRASH_WINDOW: Duration = Duration::from_secs(300);
const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(100);
const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(10);
const DEFAULT_STABLE_AFTER: Duration = Duration::from_secs(60);
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_HEALTH_FAILURES: u32 = 3;

/// Durations beyond these are almost certainly a unit mistake ("300" meant as ms, a year
/// typed as seconds); refusing them is kinder than a stop that waits for a day.
const MAX_DEADLINE: Duration = Duration::from_secs(24 * 3600);
const MAX_MARGIN: Duration = Duration::from_secs(3600);
/// Every other duration key: a timer set from one is an `Instant` plus it, and that
/// addition panics past the clock's range ("18446744073709551615" parses as seconds).
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The shortest value of each duration key. A timer that fires too often is a loop that
/// burns a core (`health.interval = "1ns"` took 79 % of one), and a limit no child can
/// meet makes every start or probe fail; each minimum is far below any useful value and
/// says why. `stop.margin` may be zero (no margin at all) and has none.
pub mod min {
    use std::time::Duration;

    /// A stop deadline (`stop.deadline`, `stop.fallback_deadline`): Pingora counts its
    /// grace period and shutdown timeout in whole seconds, so under a second its own
    /// shutdown gets nothing and every stop ends in a kill.
    pub const DEADLINE: Duration = Duration::from_secs(1);
    /// `ready.timeout`: a start is a fork, an exec and a bind; below this no real child
    /// passes its probe, and every start fails.
    pub const START_TIMEOUT: Duration = Duration::from_millis(100);
    /// `ready.interval`: each attempt is a connect plus a look at the kernel's tables; at
    /// 10 ms that is at most 100 attempts a second, for the start only (default 20 ms).
    pub const PROBE_INTERVAL: Duration = Duration::from_millis(10);
    /// `health.interval`: the probe repeats for the child's whole life, so ten a second
    /// is the most steward will spend on it.
    pub const HEALTH_INTERVAL: Duration = Duration::from_millis(100);
    /// `health.timeout`: a loopback answer takes well under a millisecond, but under
    /// 10 ms a busy host's scheduling delay alone fails a healthy child.
    pub const HEALTH_TIMEOUT: Duration = Duration::from_millis(10);
    /// `stop.drain_poll`: one poll is a few lookups in the kernel (default 5 ms); below a
    /// millisecond the loop is all overhead.
    pub const DRAIN_POLL: Duration = Duration::from_millis(1);
    /// `stop.drain_quiet`: the quiet time must span a few polls to mean "no connection
    /// came" rather than "none in this one poll" (default 50 ms).
    pub const DRAIN_QUIET: Duration = Duration::from_millis(10);
    /// `restart.backoff_min` and `restart.backoff_max`: the pause before a crashed child
    /// is started again; a crash loop restarts at most 100 times a second.
    pub const BACKOFF: Duration = Duration::from_millis(10);
    /// `restart.window`: shorter than a child's start, it could never hold two crashes,
    /// so `max_crashes` would never stop a crash loop.
    pub const CRASH_WINDOW: Duration = Duration::from_secs(1);
    /// `restart.stable_after`: a child must serve this long before its crashes are
    /// forgotten; less, and a crash loop never backs off beyond `backoff_min`.
    pub const STABLE_AFTER: Duration = Duration::from_secs(1);
}

/// A configuration problem: which file, where, what, and how to fix it.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// Where on the line, when the parser knows. Not in the one-line `Display` form the log
    /// and the exit-78 message use; `steward check` shows it.
    pub column: Option<usize>,
    pub message: String,
    pub fix: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, " (fix: {fix})")?;
        }
        Ok(())
    }
}

impl ConfigError {
    pub fn new(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: None,
            column: None,
            message: message.into(),
            fix: None,
        }
    }

    pub fn at_line(mut self, line: Option<usize>) -> Self {
        self.line = line;
        self
    }

    pub fn at_column(mut self, column: Option<usize>) -> Self {
        self.column = column;
        self
    }

    pub fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    child: RawChild,
    #[serde(default)]
    ready: RawReady,
    #[serde(default)]
    stop: RawStop,
    #[serde(default)]
    sockets: RawSockets,
    #[serde(default)]
    restart: RawRestart,
    #[serde(default)]
    health: RawHealth,
    runtime_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSockets {
    #[serde(default)]
    listen: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestart {
    max_crashes: Option<u32>,
    window: Option<String>,
    backoff_min: Option<String>,
    backoff_max: Option<String>,
    stable_after: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    interval: Option<String>,
    timeout: Option<String>,
    failures: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChild {
    command: Vec<String>,
    pingora_conf: Option<PathBuf>,
    working_directory: Option<PathBuf>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// "max", "inherit" or a number: a TOML string or integer, told apart in
    /// [`nofile_key`].
    nofile: Option<toml::Value>,
    handoff: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReady {
    tcp: Option<String>,
    http: Option<String>,
    timeout: Option<String>,
    interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStop {
    deadline: Option<String>,
    margin: Option<String>,
    fallback_deadline: Option<String>,
    drain: Option<String>,
    drain_poll: Option<String>,
    drain_quiet: Option<String>,
}

/// How steward learns that the child has served its last request after SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainMode {
    /// Watch the child's downstream TCP connections on its listening ports; once none is
    /// left and the child holds no listener (or, while it still holds one, once none has
    /// remained for `drain_quiet`), the child has nothing left to do and steward ends it.
    Connections,
    /// Wait for the child to exit by itself, up to the deadline.
    Exit,
}

/// What tells steward the child really serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connect to this address succeeds.
    Tcp(String),
    /// `GET` of this URL answers 200.
    Http(HttpUrl),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub authority: String,
    pub path: String,
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

/// The stop deadline as configured; resolved against systemd by [`super::deadline`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineSetting {
    Auto,
    Fixed(Duration),
    Infinity,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub child: ChildConfig,
    pub ready: ReadyConfig,
    pub stop: StopConfig,
    /// Listeners steward binds once and hands to every generation (Pingora's `-u`).
    pub sockets: Vec<String>,
    pub restart: RestartConfig,
    pub health: HealthConfig,
    pub runtime_dir: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct RestartConfig {
    /// Crashes tolerated within `window` before steward gives up; 0 disables restarts.
    pub max_crashes: u32,
    pub window: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub stable_after: Duration,
}

#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub interval: Duration,
    pub timeout: Duration,
    /// Failed probes in a row before the child is replaced; 0 disables the replacement.
    pub failures: u32,
}

#[derive(Debug, Clone)]
pub struct ChildConfig {
    /// Absolute path of the program and its arguments (without the `-c` steward adds).
    pub program: PathBuf,
    pub args: Vec<String>,
    pub pingora_conf: Option<PathBuf>,
    pub working_directory: PathBuf,
    pub env: BTreeMap<String, String>,
    /// `child.nofile`: the child's soft open-file limit, decided against steward's own
    /// limits at each spawn ([`crate::limits`]).
    pub nofile: NofileSetting,
    /// `child.handoff`: how each generation gets steward's listening sockets.
    pub handoff: Handoff,
}

/// `child.handoff`: how a generation gets the listening sockets of `sockets.listen`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Handoff {
    /// Pingora's own graceful-upgrade hand-off: the child is started with `-u` and steward
    /// sends the sockets to its upgrade socket. Any Pingora 0.9 server takes it, but its
    /// receiver polls once a second, so every generation starts about 1 s late.
    #[default]
    Upgrade,
    /// The sockets stay open across exec and are named in the child's environment
    /// (steward's `inherit` module); no `-u`, no wait. Needs a server built with
    /// steward-pingora.
    Inherit,
}

#[derive(Debug, Clone)]
pub struct ReadyConfig {
    pub probe: Probe,
    pub timeout: Duration,
    pub interval: Duration,
}

#[derive(Debug, Clone)]
pub struct StopConfig {
    pub deadline: DeadlineSetting,
    pub margin: Duration,
    pub fallback_deadline: Duration,
    pub drain: DrainMode,
    pub drain_poll: Duration,
    pub drain_quiet: Duration,
}

impl Config {
    /// Reads and validates the file. Every failure is a [`ConfigError`] (exit 78).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        // A regular file of bounded size: a FIFO or a device at this path is an error
        // naming it, never a read that hangs or fills memory.
        let text = crate::files::read_text(path, crate::files::CONFIG_MAX).map_err(|e| {
            ConfigError::new(path, format!("cannot read the configuration: {e}"))
                .with_fix("check the path given to --config and that the service user can read it")
        })?;
        Config::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            let column = e.span().map(|s| column_of(text, s.start));
            let message = match e.message().trim() {
                // toml says nothing about a control character in a comment, say: name it.
                "" => match e
                    .span()
                    .and_then(|s| text.get(s.start..))
                    .and_then(|rest| rest.chars().next())
                {
                    Some(c) => format!("character {c:?} is not allowed here"),
                    None => "invalid TOML".to_string(),
                },
                m => m.replace('\n', "; "),
            };
            let fix = if message.contains("unknown field") {
                "remove or correct the key; docs/operators-guide.md lists every accepted key"
            } else {
                "correct the TOML syntax on that line"
            };
            ConfigError::new(path, message)
                .at_line(line)
                .at_column(column)
                .with_fix(fix)
        })?;
        let dir = config_dir(path);
        let line_for = |key: &str| find_key_line(text, key);
        let err = |key: &str, msg: String| ConfigError::new(path, msg).at_line(line_for(key));

        let child = build_child(&dir, raw.child, &err)?;
        let ready = build_ready(raw.ready, &err)?;
        let stop = build_stop(raw.stop, &err)?;
        let runtime_dir = raw.runtime_dir.map(|p| absolutize(&dir, &p));
        if let Some(rt) = &runtime_dir {
            yaml_path("runtime_dir", rt, &err)?;
        }
        for addr in &raw.sockets.listen {
            if addr.contains(char::is_whitespace)
                || std::net::ToSocketAddrs::to_socket_addrs(addr.as_str()).is_err()
            {
                return Err(err("listen", format!("sockets.listen {addr:?} is not a host:port address"))
                    .with_fix("write each listener exactly as the child's config does, e.g. \"127.0.0.1:6188\""));
            }
        }
        let r = raw.restart;
        let restart = RestartConfig {
            max_crashes: r.max_crashes.unwrap_or(DEFAULT_MAX_CRASHES),
            window: duration_key(
                r.window,
                "restart.window",
                DEFAULT_CRASH_WINDOW,
                min::CRASH_WINDOW,
                &err,
            )?,
            backoff_min: duration_key(
                r.backoff_min,
                "restart.backoff_min",
                DEFAULT_BACKOFF_MIN,
                min::BACKOFF,
                &err,
            )?,
            backoff_max: duration_key(
                r.backoff_max,
                "restart.backoff_max",
                DEFAULT_BACKOFF_MAX,
                min::BACKOFF,
                &err,
            )?,
            stable_after: duration_key(
                r.stable_after,
                "restart.stable_after",
                DEFAULT_STABLE_AFTER,
                min::STABLE_AFTER,
                &err,
            )?,
        };
        if restart.backoff_min > restart.backoff_max {
            return Err(err(
                "backoff_min",
                "restart.backoff_min is larger than restart.backoff_max".into(),
            )
            .with_fix("backoff_min = \"100ms\", backoff_max = \"10s\""));
        }
        let h = raw.health;
        let health = HealthConfig {
            interval: duration_key(
                h.interval,
                "health.interval",
                DEFAULT_HEALTH_INTERVAL,
                min::HEALTH_INTERVAL,
                &err,
            )?,
            timeout: duration_key(
                h.timeout,
                "health.timeout",
                DEFAULT_HEALTH_TIMEOUT,
                min::HEALTH_TIMEOUT,
                &err,
            )?,
            failures: h.failures.unwrap_or(DEFAULT_HEALTH_FAILURES),
        };
        Ok(Config {
            path: path.to_path_buf(),
            child,
            ready,
            stop,
            sockets: raw.sockets.listen,
            restart,
            health,
            runtime_dir,
        })
    }
}

/// The directory relative paths in the file at `path` are relative to.
fn config_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `runtime_dir` alone (resolved against the file's directory), from a file that does not
/// pass [`Config::load`]: a client that only needs the control socket must still find it
/// while the operator is mid-edit, or where the child's program is not in the client's
/// `PATH`. Errors only when the file cannot be read, is not TOML, or `runtime_dir` is not
/// a string.
pub fn runtime_dir_only(path: &Path) -> Result<Option<PathBuf>, ConfigError> {
    let text = crate::files::read_text(path, crate::files::CONFIG_MAX)
        .map_err(|e| ConfigError::new(path, format!("cannot read the configuration: {e}")))?;
    runtime_dir_in(path, &text)
}

fn runtime_dir_in(path: &Path, text: &str) -> Result<Option<PathBuf>, ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        ConfigError::new(path, e.message().replace('\n', "; "))
            .at_line(e.span().map(|s| line_of(text, s.start)))
    })?;
    match table.get("runtime_dir") {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(absolutize(&config_dir(path), Path::new(s)))),
        Some(_) => Err(ConfigError::new(path, "runtime_dir is not a string")
            .at_line(find_key_line(text, "runtime_dir"))),
    }
}

type KeyErr<'a> = dyn Fn(&str, String) -> ConfigError + 'a;

fn build_child(dir: &Path, raw: RawChild, err: &KeyErr<'_>) -> Result<ChildConfig, ConfigError> {
    let mut command = raw.command.into_iter();
    let Some(program) = command.next().filter(|p| !p.trim().is_empty()) else {
        return Err(err("command", "child.command is empty".into())
            .with_fix("command = [\"/usr/local/bin/steward-proxy\"]"));
    };
    let args: Vec<String> = command.collect();
    if let Some(flag) = args
        .iter()
        .find(|a| *a == "-c" || *a == "--conf" || a.starts_with("--conf=") || a.starts_with("-c"))
    {
        return Err(err(
            "command",
            format!("child.command passes its own Pingora conf ({flag}); steward passes `-c` with its effective copy"),
        )
        .with_fix("remove the flag and set child.pingora_conf to the file instead"));
    }
    if let Some(flag) = args
        .iter()
        .find(|a| *a == "-d" || *a == "--daemon" || *a == "-u" || *a == "--upgrade")
    {
        return Err(err(
            "command",
            format!("child.command has {flag}; a supervised child must stay in the foreground and start fresh"),
        )
        .with_fix(format!("remove {flag} from child.command")));
    }
    let working_directory = raw
        .working_directory
        .map(|p| absolutize(dir, &p))
        .unwrap_or_else(|| absolutize(&std::env::current_dir().unwrap_or_default(), dir));
    let program = resolve_program(&program, &working_directory).map_err(|msg| {
        err("command", msg).with_fix(
            "give an absolute path, or install the program where the service's PATH finds it",
        )
    })?;
    let pingora_conf = raw.pingora_conf.map(|p| absolutize(dir, &p));
    if let Some(conf) = &pingora_conf {
        yaml_path("pingora_conf", conf, err)?;
        if let Err(e) = std::fs::metadata(conf) {
            // The line comes from the text being parsed: the file on disk may have changed.
            return Err(err(
                "pingora_conf",
                format!("child.pingora_conf {}: {e}", conf.display()),
            )
            .with_fix("point child.pingora_conf at the Pingora YAML the child should use"));
        }
    }
    for key in raw.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(err(
                "env",
                format!("child.env has an invalid variable name {key:?}"),
            ));
        }
    }
    let nofile = nofile_key(raw.nofile, err)?;
    let handoff = match raw.handoff.as_deref() {
        None | Some("upgrade") => Handoff::Upgrade,
        Some("inherit") => Handoff::Inherit,
        Some(other) => {
            return Err(err(
                "handoff",
                format!("child.handoff = {other:?} is not \"upgrade\" or \"inherit\""),
            )
            .with_fix("handoff = \"inherit\" for a server built with steward-pingora (steward-proxy), \"upgrade\" for any other Pingora server"))
        }
    };
    Ok(ChildConfig {
        program,
        args,
        pingora_conf,
        working_directory,
        env: raw.env,
        nofile,
        handoff,
    })
}

/// `child.nofile`: "max" (the default), "inherit", or a soft limit of at least
/// [`MIN_NOFILE`]. Whether a number fits under the hard limit is known only where steward
/// runs, so that is checked at start ([`crate::limits::decide`]).
fn nofile_key(raw: Option<toml::Value>, err: &KeyErr<'_>) -> Result<NofileSetting, ConfigError> {
    const FIX: &str = "nofile = \"max\" (the hard limit), \"inherit\", or a number such as 65536";
    match raw {
        None => Ok(NofileSetting::Max),
        Some(toml::Value::String(s)) if s == "max" => Ok(NofileSetting::Max),
        Some(toml::Value::String(s)) if s == "inherit" => Ok(NofileSetting::Inherit),
        Some(toml::Value::Integer(n)) => match u64::try_from(n) {
            Ok(n) if n >= MIN_NOFILE => Ok(NofileSetting::Soft(n)),
            _ => Err(err(
                "nofile",
                format!("child.nofile = {n} is below {MIN_NOFILE}: the child could not even start"),
            )
            .with_fix(FIX)),
        },
        Some(other) => Err(err(
            "nofile",
            format!("child.nofile = {other} is not \"max\", \"inherit\" or a number"),
        )
        .with_fix(FIX)),
    }
}

fn build_ready(raw: RawReady, err: &KeyErr<'_>) -> Result<ReadyConfig, ConfigError> {
    let probe = match (raw.tcp, raw.http) {
        (Some(_), Some(_)) => {
            return Err(err("http", "ready.tcp and ready.http are both set".into())
                .with_fix("keep one readiness probe"))
        }
        (Some(addr), None) => {
            if addr
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(err("tcp", format!("ready.tcp {addr:?} is not host:port"))
                    .with_fix("tcp = \"127.0.0.1:6188\""));
            }
            Probe::Tcp(addr)
        }
        (None, Some(url)) => Probe::Http(
            parse_http_url(&url)
                .map_err(|m| err("http", m).with_fix("http = \"http://127.0.0.1:6190/health\""))?,
        ),
        (None, None) => {
            return Err(err(
                "ready",
                "no readiness probe: set ready.tcp or ready.http".into(),
            )
            .with_fix("[ready] http = \"http://127.0.0.1:6190/health\""))
        }
    };
    let timeout = duration_key(
        raw.timeout,
        "ready.timeout",
        DEFAULT_START_TIMEOUT,
        min::START_TIMEOUT,
        err,
    )?;
    let interval = duration_key(
        raw.interval,
        "ready.interval",
        DEFAULT_PROBE_INTERVAL,
        min::PROBE_INTERVAL,
        err,
    )?;
    Ok(ReadyConfig {
        probe,
        timeout,
        interval,
    })
}

fn build_stop(raw: RawStop, err: &KeyErr<'_>) -> Result<StopConfig, ConfigError> {
    let deadline = match raw.deadline.as_deref().map(str::trim) {
        None | Some("auto") => DeadlineSetting::Auto,
        Some(s) => match parse_span(s) {
            Ok(Span::Infinity) => DeadlineSetting::Infinity,
            Ok(Span::Finite(d)) => DeadlineSetting::Fixed(d),
            Err(e) => {
                return Err(err("deadline", format!("stop.deadline: {e}"))
                    .with_fix("deadline = \"auto\", a duration such as \"25s\", or \"infinity\""))
            }
        },
    };
    if let DeadlineSetting::Fixed(d) = deadline {
        check_range("deadline", d, MAX_DEADLINE, err)?;
    }
    let margin = duration_key(
        raw.margin,
        "stop.margin",
        DEFAULT_MARGIN,
        Duration::ZERO,
        err,
    )?;
    if margin > MAX_MARGIN {
        return Err(err(
            "margin",
            format!("stop.margin {} is absurdly large", fmt_duration(margin)),
        )
        .with_fix("a few seconds is enough: margin = \"5s\""));
    }
    let fallback_deadline = duration_key(
        raw.fallback_deadline,
        "stop.fallback_deadline",
        DEFAULT_FALLBACK_DEADLINE,
        min::DEADLINE,
        err,
    )?;
    check_range("fallback_deadline", fallback_deadline, MAX_DEADLINE, err)?;
    let drain = match raw.drain.as_deref() {
        None | Some("connections") => DrainMode::Connections,
        Some("exit") => DrainMode::Exit,
        Some(other) => {
            return Err(
                err("drain", format!("stop.drain {other:?} is not a drain mode"))
                    .with_fix("drain = \"connections\" or drain = \"exit\""),
            )
        }
    };
    let drain_poll = duration_key(
        raw.drain_poll,
        "stop.drain_poll",
        DEFAULT_DRAIN_POLL,
        min::DRAIN_POLL,
        err,
    )?;
    let drain_quiet = duration_key(
        raw.drain_quiet,
        "stop.drain_quiet",
        DEFAULT_DRAIN_QUIET,
        min::DRAIN_QUIET,
        err,
    )?;
    Ok(StopConfig {
        deadline,
        margin,
        fallback_deadline,
        drain,
        drain_poll,
        drain_quiet,
    })
}

fn check_range(key: &str, d: Duration, max: Duration, err: &KeyErr<'_>) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(err(key, format!("stop.{key} is zero")).with_fix(format!(
            "give stop.{key} a positive duration such as \"25s\""
        )));
    }
    if d < min::DEADLINE {
        return Err(
            err(key, too_short(&format!("stop.{key}"), d, min::DEADLINE))
                .with_fix(format!("stop.{key} = \"25s\"")),
        );
    }
    if d > max {
        return Err(err(
            key,
            format!(
                "stop.{key} {} is longer than the {} steward accepts",
                fmt_duration(d),
                fmt_duration(max)
            ),
        )
        .with_fix(format!(
            "use a duration in seconds or minutes, or stop.{key} = \"infinity\""
        )));
    }
    Ok(())
}

/// A finite duration key with a default, at least `min`, and positive unless `min` is
/// zero.
fn duration_key(
    value: Option<String>,
    key: &str,
    default: Duration,
    min: Duration,
    err: &KeyErr<'_>,
) -> Result<Duration, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    // Messages name the key as qualified; the fix is the line as written in its section.
    let short = key.rsplit('.').next().unwrap_or(key);
    let fix = format!("{short} = \"{}\"", fmt_duration(default));
    match parse_span(&text) {
        Ok(Span::Finite(d)) if d > MAX_DURATION => Err(err(
            key,
            format!(
                "{key} {} is longer than the {} steward accepts",
                fmt_duration(d),
                fmt_duration(MAX_DURATION)
            ),
        )
        .with_fix(fix)),
        Ok(Span::Finite(d)) if d.is_zero() && !min.is_zero() => {
            Err(err(key, format!("{key} is zero")).with_fix(fix))
        }
        Ok(Span::Finite(d)) if d < min => Err(err(key, too_short(key, d, min)).with_fix(fix)),
        Ok(Span::Finite(d)) => Ok(d),
        Ok(Span::Infinity) => Err(err(key, format!("{key} cannot be infinity")).with_fix(fix)),
        Err(e) => Err(err(key, format!("{key}: {e}")).with_fix(fix)),
    }
}

/// The message for a duration under its key's minimum: the key, the value as parsed (in
/// units small enough to show it, "1ns"), and the minimum.
fn too_short(key: &str, d: Duration, min: Duration) -> String {
    format!(
        "{key} {} is shorter than the minimum of {}",
        humantime::format_duration(d),
        fmt_duration(min)
    )
}

pub use crate::duration::fmt_duration;

fn parse_http_url(url: &str) -> Result<HttpUrl, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("ready.http {url:?} must start with http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .is_none()
    {
        return Err(format!("ready.http {url:?} needs host:port"));
    }
    Ok(HttpUrl {
        authority: authority.to_string(),
        path: path.to_string(),
    })
}

/// A path that steward writes into the effective Pingora conf (the upgrade socket in
/// `runtime_dir`; `pingora_conf`, named in its header) must be UTF-8: YAML is text, and a
/// lossy copy would name another file than the one steward uses. The TOML's own strings
/// are UTF-8, but a relative one is joined to the directory of `--config`, which may not be.
fn yaml_path(key: &str, path: &Path, err: &KeyErr<'_>) -> Result<(), ConfigError> {
    if path.to_str().is_some() {
        return Ok(());
    }
    Err(err(
        key,
        format!(
            "{key} {} is not valid UTF-8, and the effective Pingora conf (YAML text) must name it exactly",
            path.display()
        ),
    )
    .with_fix(format!(
        "give {key} as an absolute path of UTF-8 names, or keep steward's configuration in such a directory"
    )))
}

fn absolutize(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Resolves the child's program the way a shell would, but up front, so a typo is a
/// configuration error at start rather than a child that "exits" with ENOENT.
fn resolve_program(program: &str, cwd: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let check = |p: &Path| -> Result<PathBuf, String> {
        let meta =
            std::fs::metadata(p).map_err(|e| format!("child program {}: {e}", p.display()))?;
        if !meta.is_file() {
            return Err(format!("child program {} is not a file", p.display()));
        }
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(format!("child program {} is not executable", p.display()));
        }
        Ok(p.to_path_buf())
    };
    if program.contains('/') {
        return check(&absolutize(cwd, Path::new(program)));
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path_var) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return check(&absolutize(cwd, &candidate));
        }
    }
    Err(format!("child program {program:?} was not found in PATH"))
}

pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// 1-based, in characters, as editors count.
pub(crate) fn column_of(text: &str, offset: usize) -> usize {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    before[line_start..].chars().count() + 1
}

/// The first line that assigns `key`, for errors raised after parsing. A qualified
/// `section.key` is looked for inside `[section]` first, since several sections share
/// key names (`timeout`, `interval`).
pub fn find_key_line(text: &str, key: &str) -> Option<usize> {
    if let Some((section, bare)) = key.split_once('.') {
        let header = format!("[{section}]");
        let lines: Vec<&str> = text.lines().collect();
        if let Some(start) = lines.iter().position(|l| l.trim() == header) {
            let found = lines[start + 1..]
                .iter()
                .take_while(|l| !l.trim_start().starts_with('['))
                .position(|l| {
                    l.trim_start()
                        .strip_prefix(bare)
                        .is_some_and(|rest| rest.trim_start().starts_with('='))
                });
            if let Some(i) = found {
                return Some(start + 1 + i + 1);
            }
        }
        // Dotted or inline forms (`health.timeout = ...`, `health = { ... }`).
        return find_unqualified_key_line(text, key)
            .or_else(|| find_unqualified_key_line(text, section));
    }
    find_unqualified_key_line(text, key)
}

fn find_unqualified_key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .map(|rest| rest.trim_start().starts_with('=') || key.starts_with('['))
                .unwrap_or(false)
                || l == format!("[{key}]")
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/steward/steward.toml"), text)
    }

    const MINIMAL: &str = "[child]\ncommand = [\"/bin/sh\"]\n[ready]\ntcp = \"127.0.0.1:1\"\n";

    #[test]
    fn an_error_in_a_key_two_sections_share_names_the_line_in_its_own_section() {
        let text =
            format!("{MINIMAL}timeout = \"5s\"\n[health]\ninterval = \"1s\"\ntimeout = \"0s\"\n");
        let e = parse(&text).expect_err("zero health timeout");
        assert_eq!(e.line, Some(8), "{e}");
        assert!(e.message.contains("health.timeout is zero"), "{e}");
    }

    #[test]
    fn minimal_config_takes_documented_defaults() {
        let c = parse(MINIMAL).expect("valid");
        assert_eq!(c.stop.deadline, DeadlineSetting::Auto);
        assert_eq!(c.stop.margin, Duration::from_secs(5));
        assert_eq!(c.stop.drain, DrainMode::Connections);
        assert_eq!(c.ready.timeout, Duration::from_secs(60));
        assert_eq!(c.child.program, PathBuf::from("/bin/sh"));
        assert!(c.sockets.is_empty());
        assert_eq!(c.restart.max_crashes, 5);
        assert_eq!(c.restart.backoff_min, Duration::from_millis(100));
        assert_eq!(c.health.failures, 3);
    }

    fn with_nofile(value: &str) -> Result<Config, ConfigError> {
        parse(&format!(
            "[child]\ncommand = [\"/bin/sh\"]\nnofile = {value}\n[ready]\ntcp = \"127.0.0.1:1\"\n"
        ))
    }

    fn with_handoff(value: &str) -> Result<Config, ConfigError> {
        parse(&format!(
            "[child]\ncommand = [\"/bin/sh\"]\nhandoff = {value}\n[ready]\ntcp = \"127.0.0.1:1\"\n"
        ))
    }

    #[test]
    fn child_handoff_defaults_to_pingoras_upgrade_which_any_server_takes() {
        assert_eq!(parse(MINIMAL).unwrap().child.handoff, Handoff::Upgrade);
    }

    #[test]
    fn child_handoff_takes_upgrade_or_inherit() {
        assert_eq!(
            with_handoff("\"upgrade\"").unwrap().child.handoff,
            Handoff::Upgrade
        );
        assert_eq!(
            with_handoff("\"inherit\"").unwrap().child.handoff,
            Handoff::Inherit
        );
    }

    #[test]
    fn child_handoff_of_another_word_is_refused_on_its_line() {
        let e = with_handoff("\"fast\"").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("child.handoff"), "{e}");
    }

    #[test]
    fn child_nofile_defaults_to_max() {
        assert_eq!(parse(MINIMAL).unwrap().child.nofile, NofileSetting::Max);
    }

    #[test]
    fn child_nofile_takes_max_inherit_or_a_number() {
        assert_eq!(
            with_nofile("\"max\"").unwrap().child.nofile,
            NofileSetting::Max
        );
        assert_eq!(
            with_nofile("\"inherit\"").unwrap().child.nofile,
            NofileSetting::Inherit
        );
        assert_eq!(
            with_nofile("65536").unwrap().child.nofile,
            NofileSetting::Soft(65536)
        );
        assert_eq!(
            with_nofile("64").unwrap().child.nofile,
            NofileSetting::Soft(64)
        );
    }

    #[test]
    fn child_nofile_below_the_minimum_is_refused_on_its_line() {
        for value in ["63", "0", "-1"] {
            let e = with_nofile(value).unwrap_err();
            assert_eq!(e.line, Some(3), "{value}: {e}");
            assert!(e.message.contains("child.nofile"), "{e}");
            assert!(e.fix.as_deref().unwrap_or("").contains("inherit"), "{e}");
        }
    }

    #[test]
    fn child_nofile_of_another_word_or_type_is_refused() {
        for value in ["\"unlimited\"", "\"65536\"", "1.5", "true"] {
            let e = with_nofile(value).unwrap_err();
            assert!(e.message.contains("is not \"max\""), "{value}: {e}");
            assert_eq!(e.line, Some(3), "{value}: {e}");
        }
    }

    #[test]
    fn runtime_dir_only_is_read_from_a_file_that_fails_validation() {
        let path = Path::new("/etc/steward/steward.toml");
        let text = "runtime_dir = \"run\"\nbogus = 1\n[child]\ncommand = []\n";
        assert!(Config::parse(path, text).is_err());
        assert_eq!(
            runtime_dir_in(path, text).unwrap(),
            Some(PathBuf::from("/etc/steward/run"))
        );
    }

    #[test]
    fn runtime_dir_only_is_none_when_the_key_is_absent() {
        assert_eq!(
            runtime_dir_in(Path::new("s.toml"), "[child]\n").unwrap(),
            None
        );
    }

    #[test]
    fn runtime_dir_only_refuses_what_is_not_toml_naming_the_line() {
        let e = runtime_dir_in(Path::new("s.toml"), "x = 1\n[child\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = runtime_dir_in(Path::new("s.toml"), "runtime_dir = 3\n").unwrap_err();
        assert!(e.message.contains("not a string"), "{e}");
    }

    #[test]
    fn socket_addresses_are_checked() {
        let e = parse(&format!("{MINIMAL}[sockets]\nlisten = [\"nowhere\"]\n")).unwrap_err();
        assert!(e.message.contains("nowhere"), "{e}");
        let c = parse(&format!(
            "{MINIMAL}[sockets]\nlisten = [\"127.0.0.1:6188\"]\n"
        ))
        .expect("ok");
        assert_eq!(c.sockets, vec!["127.0.0.1:6188".to_string()]);
    }

    #[test]
    fn backoff_bounds_must_be_ordered() {
        let e = parse(&format!(
            "{MINIMAL}[restart]\nbackoff_min = \"20s\"\nbackoff_max = \"1s\"\n"
        ))
        .unwrap_err();
        assert!(e.message.contains("backoff_min"), "{e}");
    }

    #[test]
    fn unknown_key_names_the_line() {
        let e = parse(&format!("{MINIMAL}[stop]\ndeadlin = \"3s\"\n")).unwrap_err();
        assert_eq!(e.line, Some(6));
        assert!(e.message.contains("deadlin"), "{e}");
    }

    #[test]
    fn malformed_toml_names_the_line() {
        let e = parse("[child]\ncommand = [\"/bin/sh\"\n").unwrap_err();
        assert!(e.line.is_some(), "{e}");
    }

    #[test]
    fn toml_error_carries_the_column() {
        let e = parse("[child]\ncommand = [\"/bin/sh\"]\n[ready]\ntcp = 6188\n").unwrap_err();
        assert_eq!((e.line, e.column), (Some(4), Some(7)), "{e}");
    }

    #[test]
    fn zero_deadline_is_refused() {
        let e = parse(&format!("{MINIMAL}[stop]\ndeadline = \"0s\"\n")).unwrap_err();
        assert!(e.message.contains("zero"), "{e}");
        assert_eq!(e.line, Some(6));
    }

    #[test]
    fn absurd_deadline_is_refused() {
        let e = parse(&format!("{MINIMAL}[stop]\ndeadline = \"400days\"\n")).unwrap_err();
        assert!(e.message.contains("longer than"), "{e}");
    }

    #[test]
    fn a_nanosecond_health_interval_is_refused_naming_the_key_value_and_minimum() {
        let e = parse(&format!("{MINIMAL}[health]\ninterval = \"1ns\"\n")).unwrap_err();
        assert_eq!(e.line, Some(6), "{e}");
        assert!(
            e.message
                .contains("health.interval 1ns is shorter than the minimum of 100 ms"),
            "{e}"
        );
    }

    /// Every duration key with its minimum: just under is refused naming the key, exactly
    /// the minimum is accepted.
    #[test]
    fn every_duration_key_has_its_minimum() {
        let keys: [(&str, &str, Duration); 11] = [
            ("stop", "deadline", min::DEADLINE),
            ("stop", "fallback_deadline", min::DEADLINE),
            ("stop", "drain_poll", min::DRAIN_POLL),
            ("stop", "drain_quiet", min::DRAIN_QUIET),
            ("ready", "timeout", min::START_TIMEOUT),
            ("ready", "interval", min::PROBE_INTERVAL),
            ("health", "interval", min::HEALTH_INTERVAL),
            ("health", "timeout", min::HEALTH_TIMEOUT),
            ("restart", "window", min::CRASH_WINDOW),
            ("restart", "backoff_min", min::BACKOFF),
            ("restart", "stable_after", min::STABLE_AFTER),
        ];
        for (section, key, least) in keys {
            let under = least - Duration::from_micros(1);
            // [ready] is already in MINIMAL: its keys are added there.
            let text = |d: Duration| {
                let line = format!("{key} = \"{}us\"\n", d.as_micros());
                if section == "ready" {
                    format!("{MINIMAL}{line}")
                } else {
                    format!("{MINIMAL}[{section}]\n{line}")
                }
            };
            let e = parse(&text(under)).expect_err(key);
            assert!(e.message.contains(&format!("{section}.{key}")), "{e}");
            assert!(e.message.contains("shorter than the minimum"), "{e}");
            parse(&text(least)).unwrap_or_else(|e| panic!("{section}.{key} at its minimum: {e}"));
        }
    }

    #[test]
    fn a_backoff_max_under_the_minimum_is_refused() {
        let e = parse(&format!(
            "{MINIMAL}[restart]\nbackoff_min = \"10ms\"\nbackoff_max = \"5ms\"\n"
        ))
        .unwrap_err();
        assert!(
            e.message.contains("restart.backoff_max 5ms is shorter"),
            "{e}"
        );
    }

    #[test]
    fn a_zero_margin_is_still_accepted() {
        let c = parse(&format!("{MINIMAL}[stop]\nmargin = \"0s\"\n")).expect("valid");
        assert_eq!(c.stop.margin, Duration::ZERO);
    }

    #[test]
    fn infinity_deadline_is_accepted() {
        let c = parse(&format!("{MINIMAL}[stop]\ndeadline = \"infinity\"\n")).expect("valid");
        assert_eq!(c.stop.deadline, DeadlineSetting::Infinity);
    }

    #[test]
    fn missing_program_is_a_config_error() {
        let e = parse(
            "[child]\ncommand = [\"/nonexistent/pingora\"]\n[ready]\ntcp = \"127.0.0.1:1\"\n",
        )
        .unwrap_err();
        assert!(e.message.contains("/nonexistent/pingora"), "{e}");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn non_executable_program_is_a_config_error() {
        let file = std::env::temp_dir().join(format!("steward-noexec-{}", std::process::id()));
        std::fs::write(&file, "#!/bin/sh\n").expect("write");
        let e = parse(&format!(
            "[child]\ncommand = [\"{}\"]\n[ready]\ntcp = \"127.0.0.1:1\"\n",
            file.display()
        ))
        .unwrap_err();
        std::fs::remove_file(&file).ok();
        assert!(e.message.contains("not executable"), "{e}");
    }

    #[test]
    fn own_conf_flag_is_refused() {
        let e = parse(
            "[child]\ncommand = [\"/bin/sh\", \"-c\", \"x\"]\n[ready]\ntcp = \"127.0.0.1:1\"\n",
        )
        .unwrap_err();
        assert!(e.message.contains("-c"), "{e}");
    }

    #[test]
    fn probe_is_required() {
        let e = parse("[child]\ncommand = [\"/bin/sh\"]\n").unwrap_err();
        assert!(e.message.contains("readiness"), "{e}");
    }

    #[test]
    fn http_probe_is_parsed() {
        let c = parse(
            "[child]\ncommand = [\"/bin/sh\"]\n[ready]\nhttp = \"http://127.0.0.1:9/health\"\n",
        )
        .expect("valid");
        assert_eq!(
            c.ready.probe,
            Probe::Http(HttpUrl {
                authority: "127.0.0.1:9".into(),
                path: "/health".into()
            })
        );
    }

    #[test]
    fn bad_drain_mode_is_refused() {
        let e = parse(&format!("{MINIMAL}[stop]\ndrain = \"sometimes\"\n")).unwrap_err();
        assert!(e.message.contains("sometimes"), "{e}");
    }

    /// A config file in a directory whose name is not UTF-8 (`-c` is any path).
    fn in_non_utf8_dir() -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(std::ffi::OsStr::from_bytes(b"/etc/st\xffward/steward.toml"))
    }

    #[test]
    fn a_runtime_dir_that_is_not_utf8_is_refused() {
        let e = Config::parse(
            &in_non_utf8_dir(),
            &format!("runtime_dir = \"run\"\n{MINIMAL}"),
        )
        .expect_err("non-UTF-8 runtime_dir");
        assert_eq!(e.line, Some(1), "{e}");
        assert!(e.message.contains("runtime_dir"), "{e}");
        assert!(e.message.contains("not valid UTF-8"), "{e}");
    }

    #[test]
    fn a_pingora_conf_that_is_not_utf8_is_refused() {
        let text = "[child]\ncommand = [\"/bin/sh\"]\npingora_conf = \"pingora.yaml\"\n[ready]\ntcp = \"127.0.0.1:1\"\n";
        let e = Config::parse(&in_non_utf8_dir(), text).expect_err("non-UTF-8 pingora_conf");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("pingora_conf"), "{e}");
        assert!(e.message.contains("not valid UTF-8"), "{e}");
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let c = parse(&format!("runtime_dir = \"run\"\n{MINIMAL}")).expect("valid");
        assert_eq!(c.runtime_dir, Some(PathBuf::from("/etc/steward/run")));
    }

    // ----- What mutation testing found unpinned (cargo-mutants over config.rs) ----------

    fn with(section: &str) -> Result<Config, ConfigError> {
        parse(&format!("{MINIMAL}{section}"))
    }

    fn command(args: &str) -> Result<Config, ConfigError> {
        parse(&format!(
            "[child]\ncommand = [\"/bin/sh\", {args}]\n[ready]\ntcp = \"127.0.0.1:1\"\n"
        ))
    }

    #[test]
    fn a_deadline_of_exactly_a_day_is_the_longest_accepted() {
        assert!(with("[stop]\ndeadline = \"24h\"\n").is_ok());
        assert!(with("[stop]\ndeadline = \"86401s\"\n").is_err());
    }

    #[test]
    fn other_durations_may_reach_thirty_days_and_no_more() {
        assert!(with("[restart]\nwindow = \"720h\"\n").is_ok());
        assert!(with("[restart]\nwindow = \"2592001s\"\n").is_err());
    }

    #[test]
    fn a_margin_of_exactly_an_hour_is_the_longest_accepted() {
        assert!(with("[stop]\nmargin = \"1h\"\n").is_ok());
        let e = with("[stop]\nmargin = \"3601s\"\n").expect_err("refused");
        assert!(e.message.contains("stop.margin"), "{e}");
    }

    #[test]
    fn equal_backoff_bounds_are_accepted() {
        let c = with("[restart]\nbackoff_min = \"1s\"\nbackoff_max = \"1s\"\n").expect("valid");
        assert_eq!(c.restart.backoff_min, c.restart.backoff_max);
    }

    #[test]
    fn a_config_error_shows_file_line_message_and_fix() {
        let e = ConfigError {
            file: PathBuf::from("/etc/steward/steward.toml"),
            line: Some(7),
            column: Some(3),
            message: "stop.deadline is zero".into(),
            fix: Some("deadline = \"25s\"".into()),
        };
        assert_eq!(
            e.to_string(),
            "/etc/steward/steward.toml:7: stop.deadline is zero (fix: deadline = \"25s\")"
        );
    }

    #[test]
    fn an_http_probe_shows_as_its_url() {
        let url = HttpUrl {
            authority: "127.0.0.1:6190".into(),
            path: "/health".into(),
        };
        assert_eq!(url.to_string(), "http://127.0.0.1:6190/health");
    }

    #[test]
    fn every_form_of_the_childs_own_conf_flag_is_refused() {
        for flag in [
            "\"-c\", \"x\"",
            "\"--conf\", \"x\"",
            "\"--conf=x\"",
            "\"-cx\"",
        ] {
            assert!(command(flag).is_err(), "{flag}");
        }
    }

    #[test]
    fn every_daemon_and_upgrade_flag_is_refused() {
        for flag in ["-d", "--daemon", "-u", "--upgrade"] {
            let e = command(&format!("\"{flag}\"")).expect_err(flag);
            assert!(e.message.contains(flag), "{e}");
        }
    }

    #[test]
    fn an_ordinary_child_argument_is_accepted() {
        assert!(command("\"--proxy-config\", \"proxy.toml\"").is_ok());
    }

    #[test]
    fn an_env_name_with_an_equals_sign_is_refused() {
        let e = parse(
            "[child]\ncommand = [\"/bin/sh\"]\nenv = { \"A=B\" = \"1\" }\n[ready]\ntcp = \"127.0.0.1:1\"\n",
        )
        .expect_err("refused");
        assert!(e.message.contains("invalid variable name"), "{e}");
    }
}
