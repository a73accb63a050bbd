//! `steward man`: the manual page `steward(1)`, generated from the clap definition.
//!
//! One page holds everything, so `man steward` shows every command: the top command's
//! synopsis, description and options as clap_mangen renders them, then one subsection
//! per visible subcommand (its synopsis, description and options, rendered the same
//! way), then the sections clap does not know about: exit status, signals, environment,
//! files. Those come from the tables below, which `steward run --help` prints too, so the
//! page and the help cannot disagree. docs/steward.1 is this output, committed; the test
//! supervisor/tests/man_page.rs fails when it is stale.

use clap_mangen::roff::{bold, italic, roman, Roff};
use clap_mangen::Man;

use crate::config::DEFAULT_CONFIG_PATH;
use crate::exit;

/// `steward run`'s exit statuses: (status, meaning).
pub fn run_exit_statuses() -> Vec<(String, String)> {
    vec![
        (
            exit::OK.to_string(),
            "A clean stop: the child drained and ended, or was killed at the stop deadline, or \
             ended by SIGTERM, SIGINT or SIGKILL during the stop. Also when a stop signal \
             arrived before the child was started."
                .into(),
        ),
        (
            "the child's code, or 128+N".into(),
            "The child ended on its own with that code (or by signal N): before it first \
             served, or during a stop with a non-zero code or another signal, or more often \
             than restart.max_crashes allows within restart.window, or at all when \
             restart.max_crashes = 0. systemd's Restart=on-failure then restarts the unit."
                .into(),
        ),
        (exit::USAGE.to_string(), "Bad command-line usage.".into()),
        (
            exit::UNAVAILABLE.to_string(),
            "The child never served: it exited with status 0 before its readiness probe \
             passed, or ready.timeout passed and steward killed it."
                .into(),
        ),
        (
            exit::SOFTWARE.to_string(),
            "The child kept exiting with status 0 on its own, more often than \
             restart.max_crashes allows within restart.window."
                .into(),
        ),
        (
            exit::OSERR.to_string(),
            "The operating system refused something steward needs: the signal handlers, its \
             async runtime, binding a sockets.listen address, or starting the child for a \
             reason other than a missing or non-executable program."
                .into(),
        ),
        (
            exit::CANTCREAT.to_string(),
            "The runtime directory cannot be created, is not steward's own, cannot be made \
             private, or the effective Pingora conf cannot be written in it."
                .into(),
        ),
        (
            exit::CONFIG.to_string(),
            "A configuration error: steward's TOML or the Pingora YAML is refused, the \
             start-up check found an error, stop.margin is not below the unit's \
             TimeoutStopSec, the child program cannot be found or run, or the child did not \
             take the listeners steward handed it. One log line names the file, the line and \
             the fix. The shipped unit has RestartPreventExitStatus=78."
                .into(),
        ),
    ]
}

/// The client commands' (`status`, `reload`, `restart`) exit statuses.
pub fn client_exit_statuses() -> Vec<(String, String)> {
    vec![
        (
            exit::OK.to_string(),
            "Done: the status was printed, the reload's new generation serves, the restart \
             began."
                .into(),
        ),
        (
            "1".into(),
            "steward answered with an error, printed on standard error: the reload failed \
             (the old generation keeps serving), a restart or reload is not possible in the \
             current state, or the caller is neither root nor steward's user."
                .into(),
        ),
        (
            exit::NOT_RUNNING.to_string(),
            "steward status only: steward is not running (its control socket does not exist, \
             or nothing listens on it), as systemctl status says."
                .into(),
        ),
        (exit::USAGE.to_string(), "Bad command-line usage.".into()),
        (
            exit::UNAVAILABLE.to_string(),
            "steward cannot be reached on its control socket (reload and restart: also when \
             it is not running; status: when the socket cannot be opened, say for want of \
             permission), does not answer within 10 s (630 s for reload), or its answer is \
             malformed or longer than 4 MiB."
                .into(),
        ),
        (
            exit::OSERR.to_string(),
            "The async runtime cannot be started.".into(),
        ),
    ]
}

/// `steward check`'s exit statuses.
pub fn check_exit_statuses() -> Vec<(String, String)> {
    vec![
        ("0".into(), "No finding, or infos only.".into()),
        ("1".into(), "Warnings, no error.".into()),
        ("2".into(), "At least one error.".into()),
        (
            exit::USAGE.to_string(),
            "Bad options (for example --config with --pingora-conf).".into(),
        ),
    ]
}

/// What each signal does to `steward run`: (signal, effect).
pub fn signals() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "SIGTERM",
            "Graceful stop: STOPPING=1, steward closes its copies of the listeners, sends \
             SIGTERM to every generation and watches the drain; at the stop deadline it \
             SIGKILLs what is left. A SIGTERM during a stop is logged and changes nothing.",
        ),
        (
            "SIGINT",
            "The same graceful stop. A SIGINT while a stop is under way (Ctrl-C twice) \
             SIGKILLs every generation's process tree at once.",
        ),
        (
            "SIGHUP",
            "Reload, as steward reload does, with no one to answer. During a reload it is \
             coalesced into one more reload; before the child serves (start-up, restart, \
             crash backoff) it is coalesced into one reload once the child serves; during a \
             stop it is refused with a warning.",
        ),
        ("SIGCHLD", "Reaps exited children and orphaned descendants."),
        (
            "SIGUSR1, SIGUSR2, SIGWINCH",
            "Forwarded to the current generation's child, as tini does.",
        ),
        (
            "SIGQUIT",
            "Ignored, with a warning: to Pingora it means a graceful upgrade, which steward \
             performs itself on reload; SIGTERM stops.",
        ),
        (
            "others",
            "Their default action (as a container's PID 1: dropped by the kernel). If \
             steward dies by SIGKILL, each generation's main process receives SIGKILL through \
             its parent-death signal; under systemd KillMode=mixed ends the rest of the \
             unit's cgroup, and as PID 1 the kernel ends the whole PID namespace.",
        ),
    ]
}

/// The child's open-file limit (`child.nofile`).
pub const OPEN_FILES: &str = "steward sets its child's soft open-file limit (RLIMIT_NOFILE) \
     between fork and exec, as child.nofile says: \"max\" (the default) raises it to the hard \
     limit steward was started with (the unit's LimitNOFILE=), \"inherit\" leaves steward's \
     own (systemd's default soft limit is 1024, at which a proxy fails at a few hundred \
     concurrent requests), a number (at least 64) sets that soft limit. A number above the \
     hard limit is a configuration error (exit 78 at start; a failed reload). steward's own \
     limit is unchanged. The log says at start: child open-file limit N (soft; hard M).";

/// Environment variables steward reads: (name, meaning).
pub fn environment() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "STEWARD_LOG",
            "The log filter (tracing's EnvFilter syntax, e.g. debug); default info.",
        ),
        (
            "JOURNAL_STREAM",
            "Set by systemd when standard error goes to the journal (the stream's \
             DEVICE:INODE); with --log-target auto, steward logs to journald with structured \
             fields when its standard error is that stream.",
        ),
        (
            "INVOCATION_ID",
            "Set by systemd: steward asks systemd for its unit's TimeoutStopUSec and checks \
             the unit at start-up. Without it, stop.fallback_deadline applies to \
             stop.deadline = \"auto\".",
        ),
        (
            "STEWARD_STOP_TIMEOUT",
            "The platform's stop timeout where there is no systemd to ask (Kubernetes' \
             terminationGracePeriodSeconds, docker stop -t): with stop.deadline = \"auto\" \
             the deadline is this minus stop.margin. Seconds or a duration (30, 30s, 1min \
             30s) or infinity; an unusable value is exit 78.",
        ),
        (
            "STEWARD_SOCK_DIAG",
            "off: read the child's sockets from /proc/net/tcp instead of netlink sock_diag \
             (slower on a host with many sockets; for a kernel or sandbox where netlink \
             misbehaves). steward falls back by itself, with a warning, where netlink is \
             refused.",
        ),
        (
            "NOTIFY_SOCKET",
            "Where READY=1, RELOADING=1, STOPPING=1, STATUS= and WATCHDOG=1 go; without it \
             nothing is sent.",
        ),
        (
            "WATCHDOG_USEC, WATCHDOG_PID",
            "systemd's watchdog: WATCHDOG=1 is sent while the child passes its health probe.",
        ),
        (
            "LISTEN_FDS, LISTEN_PID",
            "Socket activation: a passed socket whose address matches a sockets.listen entry \
             is used instead of binding it; the others are closed with a warning.",
        ),
        (
            "RUNTIME_DIRECTORY",
            "The runtime directory when runtime_dir is not set (its first entry).",
        ),
        (
            "XDG_RUNTIME_DIR",
            "For a non-root steward without runtime_dir or RUNTIME_DIRECTORY: the runtime \
             directory is $XDG_RUNTIME_DIR/steward, else /tmp/steward-UID.",
        ),
        (
            "PATH",
            "Where a bare child.command program name is looked up.",
        ),
    ]
}

/// Files steward reads and writes: (path, meaning).
pub fn files() -> Vec<(String, String)> {
    vec![
        (
            DEFAULT_CONFIG_PATH.to_string(),
            "steward's configuration, unless --config names another.".into(),
        ),
        (
            "RUNTIME_DIR".into(),
            "runtime_dir from the configuration, else $RUNTIME_DIRECTORY, else /run/steward \
             as root, else $XDG_RUNTIME_DIR/steward or /tmp/steward-UID. Mode 0700, owned by \
             steward's user."
                .into(),
        ),
        (
            "RUNTIME_DIR/pingora.yaml".into(),
            "The effective Pingora conf the child runs with (-c), mode 0600.".into(),
        ),
        (
            "RUNTIME_DIR/pingora.next.yaml".into(),
            "The effective conf a reload is checking; renamed to pingora.yaml when the \
             reload succeeds."
                .into(),
        ),
        (
            "RUNTIME_DIR/upgrade.sock".into(),
            "The child's upgrade_sock, through which steward hands it the listeners.".into(),
        ),
        (
            "RUNTIME_DIR/control.sock".into(),
            "The control socket of steward status, reload and restart, mode 0600.".into(),
        ),
        (
            "RUNTIME_DIR/check.log".into(),
            "The output of the last reload's child -t run.".into(),
        ),
    ]
}

/// The text `steward run --help` prints after its options.
pub fn run_after_help() -> String {
    let mut s = String::from("Exit status:\n");
    for (code, what) in run_exit_statuses() {
        s.push_str(&format!("  {code}: {what}\n"));
    }
    s.push_str("\nSignals:\n");
    for (sig, what) in signals() {
        s.push_str(&format!("  {sig}: {what}\n"));
    }
    s.push_str("\nThe manual page steward(1) and docs/operators-guide.md say more.");
    s
}

/// The whole page, as roff.
pub fn render(cmd: clap::Command) -> String {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let subs: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let man = Man::new(cmd.clone())
        .title("STEWARD")
        .manual("Steward Manual");

    let mut out = String::new();
    // The title, with roff's apostrophe preamble (printed once).
    out.push_str(&rendered(|w| man.render_title(w), false));
    out.push_str(&rendered(|w| man.render_name_section(w), true));

    out.push_str(".SH SYNOPSIS\n");
    out.push_str(&body(|w| man.render_synopsis_section(w)));
    for sub in &subs {
        out.push_str(".br\n");
        out.push_str(&body(|w| Man::new(sub.clone()).render_synopsis_section(w)));
    }

    out.push_str(&rendered(|w| man.render_description_section(w), true));
    out.push_str(&rendered(|w| man.render_options_section(w), true));

    out.push_str(".SH COMMANDS\n");
    for sub in &subs {
        let m = Man::new(sub.clone());
        let name = sub.get_bin_name().unwrap_or_else(|| sub.get_name());
        out.push_str(&Roff::new().control("SS", [name]).to_roff());
        out.push_str(&body(|w| m.render_synopsis_section(w)));
        out.push_str(".PP\n");
        out.push_str(&body(|w| m.render_description_section(w)));
        out.push_str(&body(|w| m.render_options_section(w)));
    }

    let mut extra = Roff::new();
    extra.control("SH", ["EXIT STATUS"]);
    extra.text([roman("steward run:")]);
    table(&mut extra, run_exit_statuses());
    extra.control("PP", []);
    extra.text([roman("steward status, steward reload, steward restart:")]);
    table(&mut extra, client_exit_statuses());
    extra.control("PP", []);
    extra.text([roman("steward check:")]);
    table(&mut extra, check_exit_statuses());

    extra.control("SH", ["SIGNALS"]);
    extra.text([roman(
        "steward run acts on these signals. The child runs in its own process group, so a \
         terminal's Ctrl-C reaches steward only.",
    )]);
    table(&mut extra, own(signals()));

    extra.control("SH", ["ENVIRONMENT"]);
    table(&mut extra, own(environment()));
    extra.control("PP", []);
    extra.text([roman(
        "The child gets steward's environment plus child.env, without NOTIFY_SOCKET, \
         WATCHDOG_USEC, WATCHDOG_PID, LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES.",
    )]);

    extra.control("SH", ["RESOURCE LIMITS"]);
    extra.text([roman(OPEN_FILES)]);

    extra.control("SH", ["FILES"]);
    for (path, what) in files() {
        extra.control("TP", []);
        extra.text([italic(path)]);
        extra.text([roman(what)]);
    }

    extra.control("SH", ["SEE ALSO"]);
    extra.text([
        bold("systemd.service"),
        roman("(5), "),
        bold("systemd.kill"),
        roman("(5), "),
        bold("sd_notify"),
        roman("(3), "),
        bold("journalctl"),
        roman(
            "(1). The operator's guide, docs/operators-guide.md, documents every \
               configuration key, the shipped unit and the journal fields.",
        ),
    ]);
    out.push_str(&extra.to_roff());
    out
}

fn own(rows: Vec<(&'static str, &'static str)>) -> Vec<(String, String)> {
    rows.into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn table(roff: &mut Roff, rows: Vec<(String, String)>) {
    for (key, what) in rows {
        roff.control("TP", []);
        roff.text([bold(key)]);
        roff.text([roman(what)]);
    }
}

/// A section rendered by clap_mangen; with `strip_preamble`, without roff's apostrophe
/// preamble, which the page carries once, before its title.
fn rendered(f: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>, strip_preamble: bool) -> String {
    let mut buf = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = f(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    if strip_preamble {
        text.lines()
            .filter(|l| !is_preamble(l))
            .map(|l| format!("{l}\n"))
            .collect()
    } else {
        text
    }
}

/// A section rendered by clap_mangen without its preamble and its `.SH` heading.
fn body(f: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> String {
    rendered(f, true)
        .lines()
        .filter(|l| !l.starts_with(".SH "))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn is_preamble(line: &str) -> bool {
    line.starts_with(".ie \\n(.g .ds Aq") || line.starts_with(".el .ds Aq")
}
