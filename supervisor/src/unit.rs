//! The systemd unit a Pingora server runs in: the few properties that decide how a start,
//! a stop and a restart go, each with the line that set it where that is known. The bottom
//! of the crate: it reads and names what is there; `steward check` judges it and
//! `steward run` acts on it.
//!
//! Two sources give the same [`UnitProps`]:
//! - the live unit, which systemd's own module asks over D-Bus or through `systemctl show`
//!   ([`UnitProps::from_systemctl_show`] reads that text): systemd's effective values,
//!   drop-ins and `system.conf` defaults included. The values are systemd's; the lines that
//!   set them are then looked up in the fragment and drop-ins systemd names
//!   ([`UnitProps::locate_in_files`]), for the fix.
//! - unit files on disk ([`load_unit_file`]), read offline the way systemd reads them:
//!   `[Service]` assignments in order, drop-ins sorted by file name after the unit, an empty
//!   assignment resetting a list, a line systemd would ignore kept as a [`Problem`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::duration::{parse_systemd_span, Span};
use crate::files::Location;
use crate::limits::Nofile;

/// systemd's `DefaultTimeoutStopSec=` as shipped; a unit file alone cannot know a changed
/// `system.conf`, the live unit can.
pub const SYSTEMD_DEFAULT_TIMEOUT_STOP: Duration = Duration::from_secs(90);

/// Directories systemd reads system units from, highest priority first: a drop-in file name
/// found in several of them is taken from the first.
const SYSTEM_UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// One property: its value and where it was set.
#[derive(Debug, Clone, PartialEq)]
pub struct Prop<T> {
    pub value: T,
    /// The line that set it, when known.
    pub at: Option<Location>,
    /// No unit file or drop-in sets it: the value is systemd's default.
    pub is_default: bool,
}

impl<T> Prop<T> {
    fn default_value(value: T) -> Prop<T> {
        Prop {
            value,
            at: None,
            is_default: true,
        }
    }

    /// A value systemd reports for the live unit; where it was set is looked up after.
    pub fn live(value: T) -> Prop<T> {
        Prop {
            value,
            at: None,
            is_default: false,
        }
    }
}

/// A command line as systemd runs it: the program, then its arguments.
pub type Command = Vec<String>;

#[derive(Debug, Clone, PartialEq)]
pub struct UnitProps {
    pub name: String,
    /// "D-Bus", "systemctl show" or "unit file".
    pub via: &'static str,
    /// The unit file and drop-ins that define it, in the order systemd applies them.
    pub files: Vec<PathBuf>,
    pub service_type: Prop<String>,
    pub kill_mode: Prop<String>,
    pub notify_access: Prop<String>,
    pub timeout_stop: Prop<Span>,
    pub timeout_stop_failure_mode: Prop<String>,
    pub restart: Prop<String>,
    pub restart_prevent_exit_status: Prop<Vec<String>>,
    pub watchdog: Prop<Span>,
    pub runtime_directory: Prop<Vec<String>>,
    pub pid_file: Prop<Option<String>>,
    pub exec_start: Prop<Vec<Command>>,
    pub exec_reload: Prop<Vec<Command>>,
    /// `Delegate=`: yes (a controller list included) lets steward give each generation its
    /// own cgroup and end it with `cgroup.kill`.
    pub delegate: Prop<bool>,
    /// `LimitNOFILE=`: the open-file limits steward starts with, from which
    /// `child.nofile` gives the child its own.
    pub limit_nofile: Prop<Nofile>,
    /// `FileDescriptorStoreMax=`: how many descriptors steward may keep in systemd's
    /// store across its own restart (the listeners).
    pub fd_store_max: Prop<u64>,
    /// What in the unit's files systemd would not apply, in the order it was read.
    pub problems: Vec<Problem>,
}

/// Something in the unit's files that systemd would not apply. The reader says what and
/// where; `steward check` words it as a finding.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// A line that is neither a `[Section]` header nor a `Key=value` inside one: systemd
    /// skips it and loads the rest.
    Syntax {
        at: Location,
        line: String,
        /// What would have been read: `Key=value`, `a section header such as [Service]`.
        expected: &'static str,
    },
    /// An assignment whose value systemd refuses: the previous value or the default stays.
    Ignored {
        at: Location,
        key: String,
        value: String,
        /// The values systemd takes there: "expected one of ...", "a number", a span error.
        expected: String,
    },
    /// A drop-in that could not be read.
    Unreadable(Unreadable),
}

/// A file of the unit that could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot read the {what} {}: {error}", file.display())]
pub struct Unreadable {
    pub file: PathBuf,
    /// "unit file" or "drop-in".
    pub what: &'static str,
    /// Why, as the system said it.
    pub error: String,
}

impl Unreadable {
    fn new(file: &Path, what: &'static str, error: impl std::fmt::Display) -> Unreadable {
        Unreadable {
            file: file.to_path_buf(),
            what,
            error: error.to_string(),
        }
    }
}

impl UnitProps {
    /// The fragment: where a setting that no file makes yet is best added.
    pub fn fragment(&self) -> Option<&Path> {
        self.files.first().map(PathBuf::as_path)
    }

    /// The main process's command line.
    pub fn main_command(&self) -> Option<&Command> {
        self.exec_start.value.last()
    }

    /// Whether `WatchdogSec=` asks for keep-alives (0 and infinity switch it off).
    pub fn watchdog_interval(&self) -> Option<Duration> {
        match self.watchdog.value {
            Span::Finite(d) if !d.is_zero() => Some(d),
            _ => None,
        }
    }

    /// A unit that sets nothing: systemd's defaults, for a reader to fill in.
    pub fn defaults(name: String, via: &'static str, files: Vec<PathBuf>) -> UnitProps {
        UnitProps {
            name,
            via,
            files,
            service_type: Prop::default_value("simple".into()),
            kill_mode: Prop::default_value("control-group".into()),
            notify_access: Prop::default_value("none".into()),
            timeout_stop: Prop::default_value(Span::Finite(SYSTEMD_DEFAULT_TIMEOUT_STOP)),
            timeout_stop_failure_mode: Prop::default_value("terminate".into()),
            restart: Prop::default_value("no".into()),
            restart_prevent_exit_status: Prop::default_value(Vec::new()),
            watchdog: Prop::default_value(Span::Finite(Duration::ZERO)),
            runtime_directory: Prop::default_value(Vec::new()),
            pid_file: Prop::default_value(None),
            exec_start: Prop::default_value(Vec::new()),
            exec_reload: Prop::default_value(Vec::new()),
            delegate: Prop::default_value(false),
            limit_nofile: Prop::default_value(SYSTEMD_DEFAULT_NOFILE),
            fd_store_max: Prop::default_value(0),
            problems: Vec::new(),
        }
    }

    /// Folds `[Service]` assignments, in order, the way systemd applies them.
    fn from_assignments(
        name: String,
        via: &'static str,
        files: Vec<PathBuf>,
        assignments: &[Assignment],
    ) -> UnitProps {
        let mut u = UnitProps::defaults(name, via, files);
        let mut notify_access_set = false;
        for a in assignments.iter().filter(|a| a.section == "Service") {
            let problem = match a.key.as_str() {
                "Type" => set_choice(&mut u.service_type, a, TYPES),
                "KillMode" => set_choice(&mut u.kill_mode, a, KILL_MODES),
                "NotifyAccess" => {
                    notify_access_set = true;
                    set_choice(&mut u.notify_access, a, NOTIFY_ACCESSES)
                }
                "TimeoutStopFailureMode" => {
                    set_choice(&mut u.timeout_stop_failure_mode, a, FAILURE_MODES)
                }
                "Restart" => set_choice(&mut u.restart, a, RESTARTS),
                "TimeoutStopSec" | "TimeoutSec" => match parse_systemd_span(&a.value) {
                    // systemd reads 0 as "no timeout" here.
                    Ok(Span::Finite(d)) if d.is_zero() => {
                        set(&mut u.timeout_stop, a, Span::Infinity)
                    }
                    Ok(s) => set(&mut u.timeout_stop, a, s),
                    Err(e) => Some(e.to_string()),
                },
                "WatchdogSec" => match parse_systemd_span(&a.value) {
                    Ok(s) => set(&mut u.watchdog, a, s),
                    Err(e) => Some(e.to_string()),
                },
                "RestartPreventExitStatus" => {
                    extend(&mut u.restart_prevent_exit_status, a, words(&a.value))
                }
                "RuntimeDirectory" => extend(&mut u.runtime_directory, a, words(&a.value)),
                "PIDFile" => set(
                    &mut u.pid_file,
                    a,
                    Some(a.value.clone()).filter(|v| !v.is_empty()),
                ),
                "ExecStart" => extend(&mut u.exec_start, a, command_of(&a.value)),
                "ExecReload" => extend(&mut u.exec_reload, a, command_of(&a.value)),
                "Delegate" => set(&mut u.delegate, a, delegate_of(&a.value)),
                "FileDescriptorStoreMax" => match a.value.trim().parse() {
                    Ok(n) => set(&mut u.fd_store_max, a, n),
                    Err(_) => Some("a number".into()),
                },
                "LimitNOFILE" => match nofile_of(&a.value) {
                    Some(n) => set(&mut u.limit_nofile, a, n),
                    None => Some("a number, SOFT:HARD or infinity".into()),
                },
                _ => None,
            };
            if let Some(expected) = problem {
                u.problems.push(ignored_line(a, expected));
            }
        }
        let configured = notify_access_set.then(|| u.notify_access.value.clone());
        u.notify_access.value =
            effective_notify_access(&u.service_type.value, configured.as_deref());
        u
    }

    /// Fills in, for live values, the lines of the unit's files that set them.
    pub fn locate_in_files(&mut self) {
        let mut parsed = Parsed::default();
        for f in &self.files {
            if let Ok(text) = crate::files::read_to_string(f) {
                parse_text(f, &text, &mut parsed);
            }
        }
        let last = |keys: &[&str]| {
            parsed
                .assignments
                .iter()
                .rev()
                .find(|a| a.section == "Service" && keys.contains(&a.key.as_str()))
                .map(|a| a.at.clone())
        };
        macro_rules! locate {
            ($prop:expr, $($key:literal),+) => {{
                let at = last(&[$($key),+]);
                $prop.is_default = at.is_none();
                $prop.at = at;
            }};
        }
        locate!(self.service_type, "Type");
        locate!(self.kill_mode, "KillMode");
        locate!(self.notify_access, "NotifyAccess");
        locate!(self.timeout_stop, "TimeoutStopSec", "TimeoutSec");
        locate!(self.timeout_stop_failure_mode, "TimeoutStopFailureMode");
        locate!(self.restart, "Restart");
        locate!(self.restart_prevent_exit_status, "RestartPreventExitStatus");
        locate!(self.watchdog, "WatchdogSec");
        locate!(self.runtime_directory, "RuntimeDirectory");
        locate!(self.pid_file, "PIDFile");
        locate!(self.exec_start, "ExecStart");
        locate!(self.exec_reload, "ExecReload");
        locate!(self.delegate, "Delegate");
        locate!(self.limit_nofile, "LimitNOFILE");
        locate!(self.fd_store_max, "FileDescriptorStoreMax");
    }

    /// From `systemctl show -p <PROPERTIES> <unit>`: `Key=value` lines, one per element for
    /// the `Exec*` lists.
    pub fn from_systemctl_show(text: &str) -> Result<UnitProps, String> {
        let mut values: HashMap<&str, Vec<&str>> = HashMap::new();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                values.entry(k).or_default().push(v);
            }
        }
        let one = |key: &str| -> Result<&str, String> {
            values
                .get(key)
                .and_then(|v| v.last().copied())
                .ok_or_else(|| format!("systemctl show printed no {key}"))
        };
        let span = |key: &str| -> Result<Span, String> {
            let v = one(key)?;
            parse_systemd_span(v).map_err(|e| format!("{key}: {e}"))
        };
        let list = |key: &str| -> Vec<String> { one(key).map(words).unwrap_or_default() };
        let execs = |key: &str| -> Vec<Command> {
            values
                .get(key)
                .map(|v| v.iter().filter_map(|e| argv_of_show(e)).collect())
                .unwrap_or_default()
        };
        let name = one("Id")?.to_string();
        check_loaded(&name, one("LoadState")?)?;
        let files: Vec<PathBuf> = one("FragmentPath")
            .ok()
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .into_iter()
            .chain(list("DropInPaths").into_iter().map(PathBuf::from))
            .collect();
        Ok(UnitProps {
            service_type: Prop::live(one("Type")?.to_string()),
            kill_mode: Prop::live(one("KillMode")?.to_string()),
            notify_access: Prop::live(one("NotifyAccess")?.to_string()),
            timeout_stop: Prop::live(span("TimeoutStopUSec")?),
            timeout_stop_failure_mode: Prop::live(
                one("TimeoutStopFailureMode")
                    .unwrap_or("terminate")
                    .to_string(),
            ),
            restart: Prop::live(one("Restart")?.to_string()),
            restart_prevent_exit_status: Prop::live(list("RestartPreventExitStatus")),
            watchdog: Prop::live(span("WatchdogUSec")?),
            runtime_directory: Prop::live(list("RuntimeDirectory")),
            pid_file: Prop::live(
                one("PIDFile")
                    .ok()
                    .filter(|p| !p.is_empty())
                    .map(str::to_string),
            ),
            exec_start: Prop::live(execs("ExecStart")),
            exec_reload: Prop::live(execs("ExecReload")),
            // systemctl prints the boolean as yes/no.
            delegate: Prop::live(one("Delegate").is_ok_and(|v| v == "yes")),
            limit_nofile: Prop::live(Nofile {
                soft: one("LimitNOFILESoft").map_or(Ok(SYSTEMD_DEFAULT_NOFILE.soft), rlimit)?,
                hard: one("LimitNOFILE").map_or(Ok(SYSTEMD_DEFAULT_NOFILE.hard), rlimit)?,
            }),
            fd_store_max: Prop::live(
                one("FileDescriptorStoreMax")
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0),
            ),
            ..UnitProps::defaults(name, "systemctl show", files)
        })
    }
}

/// The properties `systemctl show -p` is asked for (what [`UnitProps::from_systemctl_show`]
/// reads).
pub const SHOW_PROPERTIES: &str = "Id,LoadState,FragmentPath,DropInPaths,Type,KillMode,NotifyAccess,TimeoutStopUSec,TimeoutStopFailureMode,Restart,RestartPreventExitStatus,WatchdogUSec,RuntimeDirectory,PIDFile,ExecStart,ExecReload,Delegate,LimitNOFILE,LimitNOFILESoft,FileDescriptorStoreMax";

/// A unit systemd could not load (not found, masked, bad) has no properties to read.
pub fn check_loaded(name: &str, load_state: &str) -> Result<(), String> {
    match load_state {
        "loaded" => Ok(()),
        other => Err(format!("systemd has no unit {name} (LoadState={other})")),
    }
}

const TYPES: &[&str] = &[
    "simple",
    "exec",
    "forking",
    "oneshot",
    "dbus",
    "notify",
    "notify-reload",
    "idle",
];
const KILL_MODES: &[&str] = &["control-group", "process", "mixed", "none"];
const NOTIFY_ACCESSES: &[&str] = &["none", "main", "exec", "all"];
const FAILURE_MODES: &[&str] = &["terminate", "abort", "kill"];
const RESTARTS: &[&str] = &[
    "no",
    "on-success",
    "on-failure",
    "on-abnormal",
    "on-watchdog",
    "on-abort",
    "always",
];

/// systemd's rule: notify units accept their main process's messages, even when told
/// `NotifyAccess=none` (service.c raises none to main for them).
fn effective_notify_access(service_type: &str, configured: Option<&str>) -> String {
    match (service_type, configured) {
        ("notify" | "notify-reload", None | Some("none")) => "main".into(),
        (_, Some(c)) => c.into(),
        (_, None) => "none".into(),
    }
}

fn set<T>(p: &mut Prop<T>, a: &Assignment, value: T) -> Option<String> {
    p.value = value;
    p.at = Some(a.at.clone());
    p.is_default = false;
    None
}

/// A value from a fixed set; anything else is ignored by systemd, with a message.
fn set_choice(p: &mut Prop<String>, a: &Assignment, allowed: &[&str]) -> Option<String> {
    if allowed.contains(&a.value.as_str()) {
        set(p, a, a.value.clone())
    } else {
        Some(format!("expected one of {}", allowed.join(", ")))
    }
}

/// `Delegate=` as systemd reads it (systemd.resource-control(5)): a boolean, or a list of
/// controllers, which turns delegation on too; the empty string also turns it on (it only
/// resets the controller list). So only a false boolean turns it off, and no value is
/// ignored: systemd skips unknown controller names but keeps delegation on.
fn delegate_of(value: &str) -> bool {
    !matches!(
        value.to_ascii_lowercase().as_str(),
        "0" | "no" | "n" | "false" | "f" | "off"
    )
}

/// A list setting: each assignment appends, an empty one empties the list.
fn extend<T>(p: &mut Prop<Vec<T>>, a: &Assignment, items: Vec<T>) -> Option<String> {
    if a.value.trim().is_empty() {
        p.value.clear();
    } else {
        p.value.extend(items);
    }
    p.at = Some(a.at.clone());
    p.is_default = false;
    None
}

fn ignored_line(a: &Assignment, expected: String) -> Problem {
    Problem::Ignored {
        at: a.at.clone(),
        key: a.key.clone(),
        value: a.value.clone(),
        expected,
    }
}

/// systemd 252's `DefaultLimitNOFILE=` (1024:524288): the soft limit stays low for
/// programs that still use `select()`, the hard one lets the others raise it.
pub const SYSTEMD_DEFAULT_NOFILE: Nofile = Nofile {
    soft: 1024,
    hard: 524_288,
};

/// A `LimitNOFILE=` value as systemd reads it: `N` (both limits), `SOFT:HARD`, with
/// `infinity` for either (`RLIM_INFINITY`). A soft limit above the hard one is refused.
fn nofile_of(value: &str) -> Option<Nofile> {
    let one = |v: &str| rlimit(v.trim()).ok();
    let (soft, hard) = match value.split_once(':') {
        Some((s, h)) => (one(s)?, one(h)?),
        None => {
            let n = one(value)?;
            (n, n)
        }
    };
    (soft <= hard).then_some(Nofile { soft, hard })
}

/// A limit as `systemctl show` prints it and a unit file writes it: a number or
/// `infinity` (`RLIM_INFINITY`).
fn rlimit(text: &str) -> Result<u64, String> {
    match text {
        "infinity" => Ok(u64::MAX),
        n => n
            .parse()
            .map_err(|_| format!("expected an open-file limit, got {n:?}")),
    }
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

/// An `Exec*=` value as a command: prefixes (`-`, `@`, `:`, `+`, `!`, `!!`) stripped, words
/// split with systemd's quoting. With `@`, the second word is argv[0] and not an argument.
fn command_of(value: &str) -> Vec<Command> {
    let v = value.trim_start();
    let prefix_len = v
        .find(|c: char| !matches!(c, '-' | '@' | ':' | '+' | '!'))
        .unwrap_or(v.len());
    let (prefix, rest) = v.split_at(prefix_len);
    let mut argv = split_words(rest);
    if prefix.contains('@') && argv.len() >= 2 {
        argv.remove(1);
    }
    if argv.is_empty() {
        Vec::new()
    } else {
        vec![argv]
    }
}

/// Words separated by blanks; "double" and 'single' quotes group, a backslash escapes.
pub fn split_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// `{ path=/bin/x ; argv[]=/bin/x -c y ; ignore_errors=no ; ... }` as systemctl prints it.
fn argv_of_show(entry: &str) -> Option<Command> {
    let start = entry.find("argv[]=")? + "argv[]=".len();
    let rest = &entry[start..];
    let end = rest.find(" ; ").unwrap_or(rest.len());
    let argv = split_words(&rest[..end]);
    (!argv.is_empty()).then_some(argv)
}

/// One `Key=value` line of a unit file or drop-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub section: String,
    pub key: String,
    pub value: String,
    pub at: Location,
}

#[derive(Debug, Default)]
struct Parsed {
    assignments: Vec<Assignment>,
    problems: Vec<Problem>,
}

/// Reads a unit file and its drop-ins offline. Drop-ins: `<file>.d/*.conf` next to it, the
/// `--dropin-dir` directories, and, when the file sits in one of systemd's unit directories,
/// `<name>.d/` and `service.d/` in all of them, as systemd would; a file name found twice is
/// taken from the first directory in that order.
pub fn load_unit_file(path: &Path, dropin_dirs: &[PathBuf]) -> Result<UnitProps, Unreadable> {
    let text =
        crate::files::read_to_string(path).map_err(|e| Unreadable::new(path, "unit file", e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let mut parsed = Parsed::default();
    parse_text(path, &text, &mut parsed);
    let mut files = vec![path.to_path_buf()];
    for dropin in dropin_files(path, &name, dropin_dirs) {
        match crate::files::read_to_string(&dropin) {
            Ok(t) => parse_text(&dropin, &t, &mut parsed),
            Err(e) => parsed
                .problems
                .push(Problem::Unreadable(Unreadable::new(&dropin, "drop-in", e))),
        }
        files.push(dropin);
    }
    let mut props = UnitProps::from_assignments(name, "unit file", files, &parsed.assignments);
    parsed.problems.append(&mut props.problems);
    props.problems = parsed.problems;
    Ok(props)
}

fn dropin_files(unit_file: &Path, name: &str, extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = extra.to_vec();
    dirs.push(PathBuf::from(format!("{}.d", unit_file.display())));
    let in_system_dir = unit_file
        .parent()
        .is_some_and(|p| SYSTEM_UNIT_DIRS.iter().any(|d| p == Path::new(d)));
    if in_system_dir {
        // A unit's own drop-ins outrank the ones for every service.
        for sub in [format!("{name}.d"), "service.d".to_string()] {
            dirs.extend(SYSTEM_UNIT_DIRS.iter().map(|d| Path::new(d).join(&sub)));
        }
    }
    let mut chosen: BTreeMap<std::ffi::OsString, PathBuf> = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "conf") {
                chosen.entry(entry.file_name()).or_insert(p);
            }
        }
    }
    chosen.into_values().collect()
}

/// systemd's unit file syntax: `[Section]`, `Key=value`, `#`/`;` comments, a trailing
/// backslash continuing the value on the next line (comment lines in between skipped).
fn parse_text(file: &Path, text: &str, out: &mut Parsed) {
    let mut section: Option<String> = None;
    let mut lines = text.lines().enumerate();
    while let Some((i, raw)) = lines.next() {
        let at = Location::line(file, Some(i + 1));
        let mut line = raw.trim().to_string();
        while line.ends_with('\\') {
            line.pop();
            line.push(' ');
            let Some((_, next)) = lines.next() else { break };
            let next = next.trim();
            if next.starts_with('#') || next.starts_with(';') {
                // systemd skips comments inside a continued value: keep continuing.
                line.push('\\');
            } else {
                line.push_str(next);
            }
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            match rest.strip_suffix(']') {
                Some(name) => section = Some(name.to_string()),
                None => out.problems.push(syntax_problem(
                    at,
                    line,
                    "a section header such as [Service]",
                )),
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            out.problems.push(syntax_problem(at, line, "Key=value"));
            continue;
        };
        let Some(section) = &section else {
            out.problems.push(syntax_problem(
                at,
                line,
                "a [Section] header before the first assignment",
            ));
            continue;
        };
        out.assignments.push(Assignment {
            section: section.clone(),
            key: key.trim().to_string(),
            value: value.trim().to_string(),
            at,
        });
    }
}

fn syntax_problem(at: Location, line: &str, expected: &'static str) -> Problem {
    Problem::Syntax {
        at,
        line: line.to_string(),
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(text: &str) -> UnitProps {
        let mut parsed = Parsed::default();
        parse_text(Path::new("x.service"), text, &mut parsed);
        let mut p = UnitProps::from_assignments(
            "x.service".into(),
            "unit file",
            vec![PathBuf::from("x.service")],
            &parsed.assignments,
        );
        p.problems.extend(parsed.problems);
        p
    }

    #[test]
    fn unset_properties_take_systemds_defaults() {
        let p = props("[Service]\nExecStart=/bin/true\n");
        assert_eq!(p.service_type.value, "simple");
        assert_eq!(p.kill_mode.value, "control-group");
        assert_eq!(p.timeout_stop.value, Span::Finite(Duration::from_secs(90)));
        assert!(p.timeout_stop.is_default);
        assert_eq!(p.notify_access.value, "none");
    }

    #[test]
    fn notify_units_accept_the_main_process_by_default() {
        assert_eq!(
            props("[Service]\nType=notify\n").notify_access.value,
            "main"
        );
    }

    #[test]
    fn notify_units_raise_notify_access_none_to_main() {
        let p = props("[Service]\nType=notify\nNotifyAccess=none\n");
        assert_eq!(p.notify_access.value, "main");
    }

    #[test]
    fn the_last_assignment_wins_and_is_located() {
        let p = props("[Service]\nKillMode=process\n\nKillMode=mixed\n");
        assert_eq!(p.kill_mode.value, "mixed");
        assert_eq!(p.kill_mode.at.and_then(|a| a.line), Some(4));
    }

    #[test]
    fn timeout_sec_sets_the_stop_timeout_and_zero_means_none() {
        assert_eq!(
            props("[Service]\nTimeoutSec=1min 30s\n").timeout_stop.value,
            Span::Finite(Duration::from_secs(90))
        );
        assert_eq!(
            props("[Service]\nTimeoutStopSec=0\n").timeout_stop.value,
            Span::Infinity
        );
    }

    #[test]
    fn an_empty_assignment_resets_a_list() {
        let p = props("[Service]\nExecStart=/a\nExecStart=\nExecStart=/b -c x\nRestartPreventExitStatus=1\nRestartPreventExitStatus=\n");
        assert_eq!(
            p.exec_start.value,
            vec![vec!["/b".to_string(), "-c".into(), "x".into()]]
        );
        assert!(p.restart_prevent_exit_status.value.is_empty());
    }

    #[test]
    fn exec_prefixes_and_quotes_are_understood() {
        assert_eq!(
            command_of("-@/bin/pingora pingora -c \"/etc/my conf.yaml\""),
            vec![vec![
                "/bin/pingora".to_string(),
                "-c".into(),
                "/etc/my conf.yaml".into()
            ]]
        );
    }

    #[test]
    fn a_continued_line_is_one_assignment() {
        let p = props("[Service]\nExecStart=/bin/pingora \\\n  -c /etc/p.yaml\n");
        assert_eq!(
            p.main_command().map(|c| c.join(" ")).as_deref(),
            Some("/bin/pingora -c /etc/p.yaml")
        );
    }

    /// The one problem `text` has: an ignored assignment's key and value, else a panic.
    fn ignored(p: &UnitProps) -> (&str, &str) {
        match p.problems.as_slice() {
            [Problem::Ignored { key, value, .. }] => (key, value),
            other => panic!("not one ignored assignment: {other:?}"),
        }
    }

    #[test]
    fn an_invalid_value_is_ignored_and_reported() {
        let p = props("[Service]\nKillMode=mixed\nKillMode=gentle\n");
        assert_eq!(p.kill_mode.value, "mixed");
        assert_eq!(ignored(&p), ("KillMode", "gentle"));
    }

    #[test]
    fn an_ignored_value_is_located_and_says_what_systemd_takes() {
        let p = props("[Service]\nKillMode=gentle\n");
        let [Problem::Ignored { at, expected, .. }] = p.problems.as_slice() else {
            panic!("{:?}", p.problems);
        };
        assert_eq!(*at, Location::line(Path::new("x.service"), Some(2)));
        assert_eq!(
            expected,
            "expected one of control-group, process, mixed, none"
        );
    }

    #[test]
    fn a_fractional_timeout_stop_sec_is_read_as_systemd_reads_it() {
        let p = props("[Service]\nTimeoutStopSec=30.5\n");
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(
            p.timeout_stop.value,
            Span::Finite(Duration::from_millis(30_500))
        );
    }

    #[test]
    fn microsecond_spans_in_any_spelling_are_not_reported_as_ignored() {
        for value in ["5us", "5\u{3bc}s", "5\u{b5}s"] {
            let p = props(&format!(
                "[Service]\nTimeoutStopSec={value}\nWatchdogSec={value}\n"
            ));
            assert!(p.problems.is_empty(), "{value}: {:?}", p.problems);
            assert_eq!(p.timeout_stop.value, Span::Finite(Duration::from_micros(5)));
            assert_eq!(p.watchdog.value, Span::Finite(Duration::from_micros(5)));
        }
    }

    #[test]
    fn a_span_systemd_refuses_is_still_reported_as_ignored() {
        let p = props("[Service]\nTimeoutStopSec=3.sec\n");
        assert_eq!(ignored(&p), ("TimeoutStopSec", "3.sec"));
        assert!(p.timeout_stop.is_default);
    }

    #[test]
    fn a_line_without_equals_is_ignored_and_reported_at_its_line() {
        let p = props("[Service]\nKillMode\n");
        assert_eq!(
            p.problems,
            vec![Problem::Syntax {
                at: Location::line(Path::new("x.service"), Some(2)),
                line: "KillMode".into(),
                expected: "Key=value",
            }]
        );
        assert!(p.kill_mode.is_default);
    }

    #[test]
    fn other_sections_do_not_count() {
        assert!(props("[Unit]\nType=notify\n").service_type.is_default);
    }

    #[test]
    fn systemctl_show_output_is_read() {
        let text = "Id=steward-proxy.service\nLoadState=loaded\nFragmentPath=/etc/systemd/system/steward-proxy.service\nDropInPaths=/etc/systemd/system/steward-proxy.service.d/50-kill.conf\nType=notify\nKillMode=control-group\nNotifyAccess=main\nTimeoutStopUSec=30s\nTimeoutStopFailureMode=terminate\nRestart=on-failure\nRestartPreventExitStatus=78\nWatchdogUSec=0\nRuntimeDirectory=steward\nPIDFile=\nExecStart={ path=/usr/local/bin/steward ; argv[]=/usr/local/bin/steward run --config /etc/steward/steward.toml ; ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }\nExecReload=\n";
        let p = UnitProps::from_systemctl_show(text).expect("parsed");
        assert_eq!(p.kill_mode.value, "control-group");
        assert_eq!(p.timeout_stop.value, Span::Finite(Duration::from_secs(30)));
        assert_eq!(p.restart_prevent_exit_status.value, vec!["78".to_string()]);
        assert_eq!(p.files.len(), 2);
        assert_eq!(p.pid_file.value, None);
        assert_eq!(p.main_command().map(|c| c[1].as_str()), Some("run"));
        assert!(p.exec_reload.value.is_empty());
    }

    #[test]
    fn delegate_is_off_by_default() {
        let p = props("[Service]\nExecStart=/bin/true\n");
        assert!(!p.delegate.value);
        assert!(p.delegate.is_default);
    }

    #[test]
    fn delegate_booleans_are_read_in_every_spelling() {
        for yes in ["yes", "true", "1", "on", "Y", "TRUE"] {
            assert!(
                props(&format!("[Service]\nDelegate={yes}\n"))
                    .delegate
                    .value,
                "{yes}"
            );
        }
        for no in ["no", "false", "0", "off", "N", "False"] {
            assert!(
                !props(&format!("[Service]\nDelegate={no}\n")).delegate.value,
                "{no}"
            );
        }
    }

    #[test]
    fn delegate_with_controllers_turns_delegation_on() {
        assert!(props("[Service]\nDelegate=cpu memory\n").delegate.value);
    }

    #[test]
    fn delegate_empty_turns_delegation_on() {
        assert!(props("[Service]\nDelegate=no\nDelegate=\n").delegate.value);
    }

    #[test]
    fn the_last_delegate_assignment_wins_and_is_located() {
        let p = props("[Service]\nDelegate=yes\nDelegate=no\n");
        assert!(!p.delegate.value);
        assert_eq!(p.delegate.at.and_then(|a| a.line), Some(3));
    }

    #[test]
    fn limit_nofile_is_systemds_default_when_unset() {
        let p = props("[Service]\nType=notify\n");
        assert_eq!(p.limit_nofile.value, SYSTEMD_DEFAULT_NOFILE);
        assert!(p.limit_nofile.is_default);
    }

    #[test]
    fn limit_nofile_is_read_in_every_spelling() {
        let n = |soft, hard| Nofile { soft, hard };
        for (text, want) in [
            ("4096", n(4096, 4096)),
            ("1024:524288", n(1024, 524_288)),
            ("infinity", n(u64::MAX, u64::MAX)),
            ("65536:infinity", n(65536, u64::MAX)),
        ] {
            let p = props(&format!("[Service]\nLimitNOFILE={text}\n"));
            assert_eq!(p.limit_nofile.value, want, "{text}");
            assert_eq!(p.limit_nofile.at.and_then(|a| a.line), Some(2));
        }
    }

    #[test]
    fn a_limit_nofile_systemd_ignores_is_a_problem_and_keeps_the_default() {
        for text in ["lots", "4096:1024", ""] {
            let p = props(&format!("[Service]\nLimitNOFILE={text}\n"));
            assert_eq!(p.limit_nofile.value, SYSTEMD_DEFAULT_NOFILE, "{text}");
            assert_eq!(p.problems.len(), 1, "{text}");
        }
    }

    #[test]
    fn systemctl_show_reads_the_open_file_limits() {
        let p = UnitProps::from_systemctl_show(
            "Id=x.service\nLoadState=loaded\nType=notify\nKillMode=mixed\nNotifyAccess=main\nTimeoutStopUSec=30s\nRestart=no\nWatchdogUSec=0\nLimitNOFILE=infinity\nLimitNOFILESoft=2048\n",
        )
        .expect("props");
        assert_eq!(
            p.limit_nofile.value,
            Nofile {
                soft: 2048,
                hard: u64::MAX
            }
        );
    }

    #[test]
    fn systemctl_show_reads_delegate() {
        let show = |d: &str| {
            UnitProps::from_systemctl_show(&format!(
                "Id=x.service\nLoadState=loaded\nType=notify\nKillMode=mixed\nNotifyAccess=main\nTimeoutStopUSec=30s\nRestart=no\nWatchdogUSec=0\nDelegate={d}\n"
            ))
            .map(|p| p.delegate.value)
        };
        assert_eq!(show("yes"), Ok(true));
        assert_eq!(show("no"), Ok(false));
    }

    /// A unit file `x.service` in a scratch directory of its own, with `dropins` in
    /// `x.service.d/` (a `None` text: a directory where the file would be).
    fn unit_dir(tag: &str, unit: &str, dropins: &[(&str, Option<&str>)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("steward-unit-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let d = dir.join("x.service.d");
        std::fs::create_dir_all(&d).expect("scratch dir");
        std::fs::write(dir.join("x.service"), unit).expect("unit file");
        for (name, text) in dropins {
            match text {
                Some(t) => std::fs::write(d.join(name), t).expect("drop-in"),
                None => std::fs::create_dir(d.join(name)).expect("drop-in dir"),
            }
        }
        dir
    }

    #[test]
    fn drop_ins_apply_after_the_unit_in_file_name_order() {
        let dir = unit_dir(
            "order",
            "[Service]\nKillMode=process\n",
            &[
                ("20-b.conf", Some("[Service]\nKillMode=mixed\n")),
                ("10-a.conf", Some("[Service]\nKillMode=none\n")),
            ],
        );
        let p = load_unit_file(&dir.join("x.service"), &[]).expect("unit");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(p.kill_mode.value, "mixed");
        let names: Vec<_> = p.files.iter().filter_map(|f| f.file_name()).collect();
        assert_eq!(names, ["x.service", "10-a.conf", "20-b.conf"]);
    }

    #[test]
    fn an_unreadable_drop_in_is_a_problem_and_the_others_still_apply() {
        let dir = unit_dir(
            "unreadable",
            "[Service]\nKillMode=process\n",
            &[
                ("10-a.conf", None),
                ("20-b.conf", Some("[Service]\nKillMode=mixed\n")),
            ],
        );
        let p = load_unit_file(&dir.join("x.service"), &[]).expect("unit");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(p.kill_mode.value, "mixed");
        let [Problem::Unreadable(u)] = p.problems.as_slice() else {
            panic!("{:?}", p.problems);
        };
        assert_eq!(
            (u.file.file_name(), u.what),
            (Some(std::ffi::OsStr::new("10-a.conf")), "drop-in")
        );
    }

    #[test]
    fn an_unreadable_unit_file_is_an_error_naming_it() {
        let path = Path::new("/nonexistent/x.service");
        let e = load_unit_file(path, &[]).expect_err("no such file");
        assert_eq!((e.file.as_path(), e.what), (path, "unit file"));
    }

    #[test]
    fn an_unknown_unit_is_an_error() {
        let e =
            UnitProps::from_systemctl_show("Id=nope.service\nLoadState=not-found\n").unwrap_err();
        assert!(e.contains("not-found"), "{e}");
    }
}
