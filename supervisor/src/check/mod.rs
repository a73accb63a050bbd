//! `steward check`: the contradictions between the three files that decide a stop (the
//! systemd unit, steward's TOML, Pingora's YAML), found before they bite.
//!
//! The failure this exists for: a Pingora grace period longer than the unit's stop timeout,
//! so that `systemctl stop` hangs and ends in systemd's SIGKILL. Its relatives: a unit that
//! does not fit the way steward (or Pingora alone) starts and stops, Pingora settings that do
//! nothing or harm under a supervisor, a readiness address that is not one of the child's
//! listeners, and files that do not parse.
//!
//! Reading ([`crate::unit`], [`crate::systemd`], [`pingora`]) is kept apart from judging
//! ([`rules`], pure functions; [`unit`](mod@unit) words what the unit reader found) and
//! from showing ([`report`]). `steward run` asks the same
//! rules at start-up through [`at_startup`] and stops with exit 78 on an error.

pub mod effective;
pub mod findings;
pub mod pingora;
pub mod report;
pub mod rules;
pub mod unit;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use findings::{Finding, Severity, ALL_IDS};
pub use rules::{PingoraVersion, PlatformTimeout};

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::deadline::{self, fmt_span, STOP_TIMEOUT_ENV};
use crate::duration::Span;
use crate::files::tidy;
use crate::unit::{UnitProps, SYSTEMD_DEFAULT_TIMEOUT_STOP};
use findings::{
    DEADLINE_BEYOND_TIMEOUT, GRACE_CLAMPED, LISTENER_MISMATCH, MARGIN_EXCEEDS_TIMEOUT, NO_UNIT,
    PARSE_ERROR, UNREADABLE,
};
use pingora::PingoraConf;
use rules::{StewardConfig, Surroundings};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// `steward check` options. Without any, it checks /etc/steward/steward.toml.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// A unit loaded in systemd, read live: its effective properties, drop-ins included
    /// (D-Bus, else `systemctl show`).
    #[arg(long, value_name = "NAME", conflicts_with = "unit_file")]
    pub unit: Option<String>,
    /// A unit file read offline, with the drop-ins in `<FILE>.d/`; when the file lies in one
    /// of systemd's unit directories, also `<name>.d/` and `service.d/` in all of them.
    #[arg(long, value_name = "FILE")]
    pub unit_file: Option<PathBuf>,
    /// Another drop-in directory for --unit-file (repeatable); its files outrank the others.
    #[arg(long, value_name = "DIR", requires = "unit_file")]
    pub dropin_dir: Vec<PathBuf>,
    /// steward's TOML (and the Pingora YAML it names). Default: the one the unit's
    /// `ExecStart=steward run --config ...` names, else /etc/steward/steward.toml.
    #[arg(
        long,
        short = 'c',
        value_name = "FILE",
        conflicts_with = "pingora_conf"
    )]
    pub config: Option<PathBuf>,
    /// A Pingora YAML for a server run without steward (its own unit, e.g. Pingora's
    /// documented Type=forking one). Default with such a unit: its ExecStart's `-c` file.
    #[arg(long, value_name = "FILE")]
    pub pingora_conf: Option<PathBuf>,
    /// The server's Pingora version; 0.8 and older wait out the shutdown timeout twice.
    #[arg(long, value_name = "VERSION", value_parser = PingoraVersion::parse)]
    pub pingora_version: Option<PingoraVersion>,
    /// Without a unit (a container): the platform's stop timeout, SIGTERM to SIGKILL
    /// (`30`, `30s`, `infinity`), checked against instead of systemd's default 90 s.
    /// Default: STEWARD_STOP_TIMEOUT from the environment, as `steward run` reads it.
    #[arg(
        long,
        value_name = "TIME",
        value_parser = parse_stop_timeout_arg,
        conflicts_with_all = ["unit", "unit_file"]
    )]
    pub stop_timeout: Option<Span>,
    /// `human` (one block per finding, worst first) or `json`.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Print what `steward run` would run with on standard output, as `nginx -T` does:
    /// steward's settings with every default filled in and the stop deadline resolved,
    /// then the effective Pingora YAML the child is given. The findings go to standard
    /// error; the exit status is the check's.
    #[arg(long, short = 'T')]
    pub print_effective: bool,
}

/// What was checked, as the report shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inputs {
    /// "steward" (the unit runs `steward run`) or "pingora" (Pingora is the main process).
    pub mode: Option<&'static str>,
    pub unit: Option<UnitInput>,
    pub steward_config: Option<PathBuf>,
    pub pingora_conf: Option<PathBuf>,
    /// No Pingora conf is given: Pingora's defaults were checked.
    pub pingora_defaults: bool,
    pub proxy_config: Option<PathBuf>,
    pub pingora_version: String,
    /// Without a unit: the platform's stop timeout the stop checks used.
    pub stop_timeout: Option<StopTimeoutInput>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StopTimeoutInput {
    /// "30 s" or "infinity".
    pub value: String,
    /// "STEWARD_STOP_TIMEOUT" or "--stop-timeout".
    pub source: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnitInput {
    pub name: String,
    pub via: &'static str,
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Checked {
    pub inputs: Inputs,
    /// Worst first.
    pub findings: Vec<Finding>,
    /// With `--print-effective` under steward: [`effective::render`]'s documents.
    pub effective: Option<String>,
}

/// `steward check`: prints the report, returns 0 (clean or infos), 1 (warnings), 2 (errors).
pub fn command(args: CheckArgs) -> i32 {
    let checked = check(&args);
    let text = match args.format {
        // The report quotes the files it read (keys, values, paths): a control character
        // in one must not drive the operator's terminal or fake a line of the report.
        Format::Human => report::human(&checked)
            .split('\n')
            .map(crate::logging::escape_controls)
            .collect::<Vec<_>>()
            .join("\n"),
        // JSON escapes control characters itself.
        Format::Json => report::json(&checked),
    };
    if !args.print_effective {
        print!("{text}");
        return report::exit_status(&checked.findings);
    }
    // As nginx -T: the verdict on stderr, the configuration alone on stdout, so it can be
    // saved or diffed.
    eprint!("{text}");
    match &checked.effective {
        Some(e) => print!("{e}"),
        None => eprintln!(
            "steward check: nothing to print: {}",
            match checked.inputs.mode {
                Some("pingora") => "Pingora runs without steward, with its own YAML as it is",
                _ => "steward's configuration did not load (see the findings above)",
            }
        ),
    }
    report::exit_status(&checked.findings)
}

pub fn check(args: &CheckArgs) -> Checked {
    let version = args.pingora_version.unwrap_or(PingoraVersion::ASSUMED);
    let mut inputs = Inputs {
        pingora_version: version.to_string(),
        ..Inputs::default()
    };
    let mut out = Vec::new();
    let unit_requested = args.unit.is_some() || args.unit_file.is_some();
    let loaded = match (&args.unit, &args.unit_file) {
        (Some(name), _) => Some(live_unit(name)),
        (None, Some(path)) => Some(
            crate::unit::load_unit_file(path, &args.dropin_dir)
                .map_err(|e| Box::new(unit::unreadable(&e))),
        ),
        (None, None) => None,
    };
    let unit = match loaded {
        Some(Ok(u)) => Some(u),
        Some(Err(f)) => {
            out.push(*f);
            None
        }
        None => None,
    };
    if let Some(u) = &unit {
        inputs.unit = Some(UnitInput {
            name: u.name.clone(),
            via: u.via,
            files: u.files.iter().map(|f| tidy(f)).collect(),
        });
        out.extend(u.problems.iter().map(unit::finding));
    }
    // Only without a unit: with one, its TimeoutStopSec is the timer that fires, and the
    // environment of `steward check` is not the service's.
    let platform = match unit_requested {
        true => Ok(None),
        false => platform_timeout(args.stop_timeout),
    };
    // An unusable STEWARD_STOP_TIMEOUT: its error stands, and the stop is not compared
    // with a timeout the platform does not have.
    let (platform, timeout_unusable) = match platform {
        Ok(p) => (p, false),
        Err(f) => {
            out.push(*f);
            (None, true)
        }
    };
    inputs.stop_timeout = platform.map(|p| StopTimeoutInput {
        value: fmt_span(p.value),
        source: p.source,
    });
    if !unit_requested {
        out.push(no_unit(platform, timeout_unusable));
    }
    let mut effective = None;
    let s = Surroundings {
        unit: unit.as_ref(),
        assume_default_unit: !timeout_unusable,
        platform_timeout: platform,
        version,
    };
    match target(args, unit.as_ref(), unit_requested) {
        Some(Target::Steward(path)) => {
            inputs.mode = Some("steward");
            inputs.steward_config = Some(tidy(&path));
            match read_steward_config(&path) {
                Ok((config, text)) => {
                    out.extend(evaluate_steward(&config, &text, &s, &mut inputs));
                    if args.print_effective {
                        effective = Some(effective::render(
                            &config,
                            rules::deadline_in(&config, &s).as_ref(),
                            &runtime_dir_of(&config, unit.as_ref()),
                        ));
                    }
                }
                Err(f) => out.push(*f),
            }
        }
        Some(Target::Pingora(conf)) => {
            inputs.mode = Some("pingora");
            inputs.pingora_conf = conf.as_deref().map(tidy);
            inputs.pingora_defaults = conf.is_none();
            let pingora = match &conf {
                Some(path) => PingoraConf::load(path),
                None => Ok(PingoraConf::defaults()),
            };
            match pingora {
                Ok(p) => out.extend(rules::pingora_alone(&p, &s)),
                Err(f) => out.push(*f),
            }
        }
        None => {}
    }
    Checked {
        inputs,
        findings: worst_first(out),
        effective,
    }
}

/// The runtime directory `steward run` would use: `runtime_dir` from its TOML, else the
/// unit's first `RuntimeDirectory=` (systemd makes it under /run), else the default.
fn runtime_dir_of(config: &Config, unit: Option<&UnitProps>) -> PathBuf {
    let from_unit = unit
        .and_then(|u| u.runtime_directory.value.first())
        .map(|d| Path::new("/run").join(d));
    crate::runtime_dir::choose(config.runtime_dir.as_deref().or(from_unit.as_deref()))
}

/// `steward run`'s start-up check, the one way in from start-up: the findings of
/// [`startup_findings`], logged; `true` when one is an error, which must stop the start
/// (exit 78).
pub fn at_startup(config: &Config, unit: Option<&UnitProps>) -> bool {
    log_startup(&startup_findings(config, unit))
}

/// The checks `steward run` makes at start-up, after it has read its config and asked
/// systemd for the unit (`None` outside systemd). Findings that run already logs in its
/// own words, or that already stopped it, are left out.
fn startup_findings(config: &Config, unit: Option<&UnitProps>) -> Vec<Finding> {
    let text = crate::files::read_to_string(&config.path).unwrap_or_default();
    // run resolved STEWARD_STOP_TIMEOUT into its deadline already, and logged it.
    let s = Surroundings {
        unit,
        assume_default_unit: false,
        platform_timeout: None,
        version: PingoraVersion::ASSUMED,
    };
    let mut out = evaluate_steward(config, &text, &s, &mut Inputs::default());
    out.retain(|f| !REPORTED_BY_RUN.contains(&f.id));
    worst_first(out)
}

/// `steward run`'s own log lines already: the deadline record and its warning, the clamp
/// warnings, the margin error (exit 78 before the check runs), and unclaimed listeners
/// (found from the child's real sockets once it serves, exit 78 with the keys).
const REPORTED_BY_RUN: &[findings::Id] = &[
    GRACE_CLAMPED,
    DEADLINE_BEYOND_TIMEOUT,
    MARGIN_EXCEEDS_TIMEOUT,
    LISTENER_MISMATCH,
];

/// Logs start-up findings with `steward_check` and `steward_severity` fields; `true` when
/// one is an error, which must stop the start (exit 78).
fn log_startup(findings: &[Finding]) -> bool {
    for f in findings {
        let line = f.one_line();
        let severity = f.severity.as_str();
        match f.severity {
            Severity::Error => tracing::error!(
                steward_phase = "config",
                steward_check = f.id.as_str(),
                steward_severity = severity,
                "configuration error: {line}"
            ),
            Severity::Warning => tracing::warn!(
                steward_phase = "config",
                steward_check = f.id.as_str(),
                steward_severity = severity,
                "steward check: {line}"
            ),
            Severity::Info => tracing::info!(
                steward_phase = "config",
                steward_check = f.id.as_str(),
                steward_severity = severity,
                "steward check: {line}"
            ),
        }
    }
    findings.iter().any(|f| f.severity == Severity::Error)
}

fn worst_first(mut findings: Vec<Finding>) -> Vec<Finding> {
    // Stable: within a severity, the order the checks ran in (unit, stop, settings).
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    findings
}

enum Target {
    Steward(PathBuf),
    /// The conf Pingora is started with; `None`: its defaults.
    Pingora(Option<PathBuf>),
}

/// What runs as the unit's main process decides which rules apply; the options override it.
fn target(args: &CheckArgs, unit: Option<&UnitProps>, unit_requested: bool) -> Option<Target> {
    if let Some(c) = &args.config {
        return Some(Target::Steward(c.clone()));
    }
    if let Some(p) = &args.pingora_conf {
        return Some(Target::Pingora(Some(p.clone())));
    }
    match unit.and_then(UnitProps::main_command) {
        Some(cmd) if runs_steward(cmd) => Some(Target::Steward(
            flag_value(cmd, "--config", 'c')
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH)),
        )),
        Some(cmd) => Some(Target::Pingora(
            flag_value(cmd, "--conf", 'c').map(PathBuf::from),
        )),
        // A unit that failed to load, or one without ExecStart: nothing more to read.
        None if unit_requested => None,
        None => Some(Target::Steward(PathBuf::from(DEFAULT_CONFIG_PATH))),
    }
}

fn runs_steward(cmd: &[String]) -> bool {
    let program = cmd.first().map(|p| Path::new(p).file_name());
    program.flatten().is_some_and(|n| n == "steward") && cmd.get(1).is_some_and(|a| a == "run")
}

/// `--long VALUE`, `--long=VALUE`, `-s VALUE` or `-sVALUE` among a command's arguments.
fn flag_value<'a>(cmd: &'a [String], long: &str, short: char) -> Option<&'a str> {
    let short = format!("-{short}");
    let mut args = cmd.iter().skip(1);
    while let Some(a) = args.next() {
        if *a == long || *a == short {
            return args.next().map(String::as_str);
        }
        if let Some(v) = a.strip_prefix(long).and_then(|r| r.strip_prefix('=')) {
            return Some(v);
        }
        if let Some(v) = a
            .strip_prefix(&short)
            .filter(|v| !v.is_empty() && !a.starts_with("--"))
        {
            return Some(v);
        }
    }
    None
}

fn read_steward_config(path: &Path) -> Result<(Config, String), Box<Finding>> {
    let text = crate::files::read_to_string(path)
        .map_err(|e| Finding::unreadable(path, "steward configuration", e))?;
    let config = Config::parse(path, &text).map_err(|e| {
        Finding::from_config_error(&e, "steward refuses to start with this file (exit 78)")
    })?;
    Ok((config, text))
}

/// Reads what steward's config names (the Pingora YAML, steward-proxy's settings) and runs
/// the under-steward rules.
fn evaluate_steward(
    config: &Config,
    text: &str,
    s: &Surroundings<'_>,
    inputs: &mut Inputs,
) -> Vec<Finding> {
    let mut out = Vec::new();
    inputs.pingora_conf = config.child.pingora_conf.as_deref().map(tidy);
    inputs.pingora_defaults = config.child.pingora_conf.is_none();
    let pingora = match &config.child.pingora_conf {
        None => Some(PingoraConf::defaults()),
        Some(path) => match PingoraConf::load(path) {
            Ok(p) => Some(p),
            Err(f) => {
                let f = if f.id == UNREADABLE {
                    f.fix(format!("child.pingora_conf in {}", config.path.display()))
                } else {
                    *f
                };
                out.push(f);
                None
            }
        },
    };
    let is_proxy = config
        .child
        .program
        .file_name()
        .is_some_and(|n| n == "steward-proxy");
    let listeners = pingora::proxy_config_arg(&config.child.args)
        .filter(|_| is_proxy)
        .map(|arg| config.child.working_directory.join(arg))
        .and_then(|path| {
            inputs.proxy_config = Some(tidy(&path));
            match pingora::proxy_listeners(&path) {
                Ok(listeners) => Some(listeners),
                Err(f) => {
                    out.push(*f);
                    None
                }
            }
        });
    let cfg = StewardConfig { config, text };
    out.extend(rules::under_steward(
        &cfg,
        pingora.as_ref(),
        listeners.as_ref(),
        s,
    ));
    if config.child.handoff == crate::config::Handoff::Inherit {
        out.extend(rules::handoff(&cfg, inherits(&config.child.program)));
    }
    out
}

/// Whether `program` can take inherited listeners: a server built with steward-pingora
/// reads [`crate::inherit::REPORT_ENV`], so the variable's name is in its binary (a
/// stock Pingora server knows nothing of it). `None` when that cannot be told: the
/// program cannot be read, or it is a script (`#!`), a wrapper whose `exec` of the real
/// server passes the descriptors and the environment on.
fn inherits(program: &Path) -> Option<bool> {
    // A server binary is tens of MiB; anything larger is not read whole.
    const MAX: u64 = 512 << 20;
    let meta = std::fs::metadata(program).ok()?;
    if !meta.is_file() || meta.len() > MAX {
        return None;
    }
    let bytes = std::fs::read(program).ok()?;
    if bytes.starts_with(b"#!") {
        return None;
    }
    let marker = crate::inherit::REPORT_ENV.as_bytes();
    Some(bytes.windows(marker.len()).any(|w| w == marker))
}

/// `--stop-timeout`, read as `steward run` reads STEWARD_STOP_TIMEOUT.
fn parse_stop_timeout_arg(text: &str) -> Result<Span, String> {
    deadline::parse_stop_timeout(std::ffi::OsStr::new(text)).map_err(|e| match e {
        deadline::DeadlineError::BadEnv { why, .. } => why,
        other => other.to_string(),
    })
}

/// The platform's stop timeout for a check without a unit: `--stop-timeout`, else
/// STEWARD_STOP_TIMEOUT; a set but unusable variable is an error finding, as it stops
/// `steward run`.
fn platform_timeout(flag: Option<Span>) -> Result<Option<PlatformTimeout>, Box<Finding>> {
    if let Some(value) = flag {
        return Ok(Some(PlatformTimeout {
            value,
            source: "--stop-timeout",
        }));
    }
    match deadline::stop_timeout_from_env() {
        Ok(value) => Ok(value.map(|value| PlatformTimeout {
            value,
            source: STOP_TIMEOUT_ENV,
        })),
        Err(e) => Err(Box::new(
            Finding::new(PARSE_ERROR, Severity::Error, e.to_string())
                .why("steward run refuses to start with it (exit 78), and steward check cannot compare the stop with it; the stop checks are skipped")
                .fix(format!(
                    "set {STOP_TIMEOUT_ENV} to the platform's stop timeout in seconds, the same number as Kubernetes' terminationGracePeriodSeconds or docker stop -t (e.g. {STOP_TIMEOUT_ENV}=30), or unset it"
                )),
        )),
    }
}

fn no_unit(platform: Option<PlatformTimeout>, timeout_unusable: bool) -> Finding {
    let stop = match (platform, timeout_unusable) {
        (Some(p), _) => format!(
            "the stop checks use the platform's stop timeout {} from {}",
            fmt_span(p.value),
            p.source
        ),
        (None, true) => format!("the stop checks are skipped: {STOP_TIMEOUT_ENV} is unusable"),
        (None, false) => format!(
            "the stop checks assume TimeoutStopSec {} s, systemd's default",
            SYSTEMD_DEFAULT_TIMEOUT_STOP.as_secs()
        ),
    };
    let fix = match platform {
        Some(_) => "none needed in a container; under systemd, steward check --unit NAME (live) or --unit-file FILE (offline)".to_string(),
        None => format!("steward check --unit NAME (live) or --unit-file FILE (offline); in a container, set {STOP_TIMEOUT_ENV} (or --stop-timeout) to the platform's stop timeout"),
    };
    Finding::new(NO_UNIT, Severity::Info, "the systemd unit was not checked")
        .why(format!("no --unit or --unit-file was given; {stop}"))
        .fix(fix)
}

fn live_unit(name: &str) -> Result<UnitProps, Box<Finding>> {
    // Like systemctl: a bare name means a service.
    let name = if name.contains('.') {
        name.to_string()
    } else {
        format!("{name}.service")
    };
    let failed = |e: String| {
        Finding::new(
            UNREADABLE,
            Severity::Error,
            format!("cannot read unit {name} from systemd: {e}"),
        )
        .fix("check the name (systemctl list-units), or read the file offline with --unit-file")
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Box::new(failed(e.to_string())))?;
    rt.block_on(crate::systemd::named_unit(&name))
        .map_err(|e| Box::new(failed(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(s: &str) -> Vec<String> {
        crate::unit::split_words(s)
    }

    #[test]
    fn a_unit_running_steward_is_checked_under_steward() {
        assert!(runs_steward(&cmd(
            "/usr/local/bin/steward run --config /etc/s.toml"
        )));
        assert!(!runs_steward(&cmd("/bin/pingora -d -c /etc/pingora.conf")));
    }

    /// A unit read from a scratch file; `tag` keeps tests running in parallel apart.
    fn unit_file(tag: &str, text: &str) -> UnitProps {
        let dir = std::env::temp_dir().join(format!(
            "steward-check-startup-{}-{tag}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let path = dir.join("s.service");
        std::fs::write(&path, text).expect("unit file");
        let unit = crate::unit::load_unit_file(&path, &[]).expect("unit");
        let _ = std::fs::remove_dir_all(&dir);
        unit
    }

    const NO_DELEGATE: &str = "[Service]\nType=notify\nKillMode=mixed\nRuntimeDirectory=steward\nExecStart=/usr/local/bin/steward run\n";

    fn startup_config() -> Config {
        Config::parse(
            Path::new("/nonexistent/steward.toml"),
            "[child]\ncommand = [\"/bin/sh\"]\n[ready]\ntcp = \"127.0.0.1:1\"\n",
        )
        .expect("config")
    }

    #[test]
    fn start_up_reports_a_missing_delegate_once_as_a_warning() {
        let unit = unit_file("once", NO_DELEGATE);
        let found = startup_findings(&startup_config(), Some(&unit));
        let delegate: Vec<_> = found
            .iter()
            .filter(|f| f.id == findings::DELEGATE_MISSING)
            .collect();
        assert_eq!(delegate.len(), 1, "{found:?}");
        assert_eq!(delegate[0].severity, Severity::Warning);
    }

    #[test]
    fn a_missing_delegate_does_not_stop_the_start() {
        let unit = unit_file("go-on", NO_DELEGATE);
        assert!(!log_startup(&startup_findings(
            &startup_config(),
            Some(&unit)
        )));
    }

    #[test]
    fn flag_values_are_found_in_every_spelling() {
        let c = cmd("/bin/pingora -d -c /etc/pingora.conf");
        assert_eq!(flag_value(&c, "--conf", 'c'), Some("/etc/pingora.conf"));
        let c = cmd("/bin/pingora --conf=/etc/p.yaml");
        assert_eq!(flag_value(&c, "--conf", 'c'), Some("/etc/p.yaml"));
        let c = cmd("/bin/pingora -c/etc/p.yaml");
        assert_eq!(flag_value(&c, "--conf", 'c'), Some("/etc/p.yaml"));
        assert_eq!(flag_value(&cmd("/bin/pingora -d"), "--conf", 'c'), None);
    }
}
