//! The `steward` command line. Errors end here as one line and a sysexits code.

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};
use steward::config::{Config, DEFAULT_CONFIG_PATH};
use steward::control::{self, Reply};
use steward::effects::System;
use steward::handover::Handover;
use steward::logging::{self, LogTarget};
use steward::run::{Driver, Setup, Upgrade};
use steward::{exit, runtime_dir, startup};

#[derive(Debug, Parser)]
#[command(
    name = "steward",
    version,
    about = "Supervise a Pingora server under systemd: READY when it serves, stop within the unit's deadline, never by systemd's SIGKILL.",
    long_about = "steward runs as a systemd service's main process (Type=notify, KillMode=mixed) and \
starts a Pingora server as its child. It sends READY=1 only once the child serves, forwards \
SIGTERM, ends the child as soon as no request is left in flight, and at its own stop \
deadline (the unit's TimeoutStopSec minus a margin) SIGKILLs the child's whole process \
tree itself, so systemd never has to. It also reloads and restarts the child without \
refusing a connection, restarts it after a crash, and checks a set-up for contradictions.\n\n\
`steward run` is the supervisor; `status`, `reload` and `restart` talk to a running one \
over its control socket; `check` reads the unit, steward's TOML and Pingora's YAML together."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the child and supervise it until it stops (the unit's ExecStart).
    #[command(
        long_about = "Start the child and supervise it until it stops: the unit's ExecStart.\n\n\
steward reads its TOML (an error exits 78 with the file, the line and the fix), asks systemd \
for the unit's TimeoutStopSec and derives the stop deadline from it, checks the unit and the \
files together as `steward check` does, writes the effective Pingora conf into its runtime \
directory, binds the listeners of sockets.listen, and starts the child with `-c` on that \
copy (and `-u` when it hands over listeners). READY=1 goes to systemd once the readiness \
probe passes on a connection the child itself accepted.\n\n\
While serving it repeats the probe (and feeds systemd's watchdog), restarts a crashed \
child with exponential backoff, and reloads on SIGHUP or `steward reload`. On SIGTERM or \
SIGINT it drains the child and exits 0 before systemd's timer.",
        after_long_help = steward::manpage::run_after_help()
    )]
    Run {
        /// steward's TOML configuration. Relative paths inside it are relative to its
        /// directory.
        #[arg(long, short = 'c', value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Where log records go: journald (with STEWARD_* fields), stderr, or auto
        /// (journald when systemd connected stderr to the journal, i.e. stderr is the
        /// device and inode JOURNAL_STREAM names). STEWARD_LOG sets the filter, e.g. debug.
        #[arg(long, value_enum, default_value_t = LogTarget::Auto)]
        log_target: LogTarget,
    },
    /// Show the running steward's state, generation, child, restarts and last timeline.
    #[command(
        long_about = "Show the running steward's state, generation, child, restarts and last timeline.\n\n\
Prints steward's pid and state (starting, serving, reloading, backoff, stopping), the \
current generation and its child pid, the uptimes (with the time each began, in UTC), the restart count, the connections in \
flight, the health probes passed and failed (with the last failure's reason), the stop \
deadline and where it came from, every generation, and the timeline of the last reload or \
stop. Exit 0; 3 when steward is not running (no control socket, or nothing listening on \
it), as systemctl status; 69 when it cannot be reached otherwise or does not answer within 10 s."
    )]
    Status {
        /// Print the raw JSON reply (ok, status: state, pid, generation, child_pid,
        /// uptime_s, child_uptime_s, restarts, in_flight, generations, deadline,
        /// last_event, timeline, health: passed, failed, last_failure).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Reload: check the new configuration, start the next generation, retire the old one.
    #[command(
        long_about = "Reload: check the new configuration, start the next generation, retire the old one. \
The unit's ExecReload.\n\n\
steward re-reads its TOML, writes the next effective Pingora conf, runs the child program \
with `-t` on it, starts the next generation (the program now on disk: this is how a new \
binary is rolled out), hands it the listeners and waits until it serves; then the old \
generation drains as in a stop. The command blocks until then and exits 0. It exits 1 with \
the reason when the reload failed, and the old generation keeps serving, untouched. \
sockets.listen cannot change in a reload. Exit 69 when steward cannot be reached or does not \
answer within 630 s (steward itself gives up on a reload after 600 s)."
    )]
    Reload {
        #[command(flatten)]
        target: Target,
    },
    /// Restart the child, keeping the listening sockets.
    #[command(long_about = "Restart the child, keeping the listening sockets.\n\n\
A new generation starts at once with the same configuration (no re-read, no `-t` check) and \
the old one drains. Accepted while starting or serving; otherwise exit 1. Exit 69 when \
steward cannot be reached or does not answer within 10 s.")]
    Restart {
        #[command(flatten)]
        target: Target,
    },
    /// Check the unit, steward's TOML and Pingora's YAML for contradictions (a grace period
    /// longer than the stop timeout, ...). Exit 0 clean, 1 warnings, 2 errors.
    #[command(
        long_about = "Check the unit, steward's TOML and Pingora's YAML for contradictions, like nginx -t.\n\n\
A stop that hangs and ends in systemd's SIGKILL is a contradiction between the unit \
(TimeoutStopSec), steward's TOML (the deadline) and Pingora's YAML (the grace period). \
check reads them together and prints each finding (error, warning or info) with what will \
happen, why, and the line to change. It also checks Pingora run without steward. With no \
option it checks /etc/steward/steward.toml. Without --config or --pingora-conf the unit \
decides: an ExecStart running `steward run` is checked under steward with the --config it \
names, any other as Pingora itself with its -c file.\n\n\
Exit 0: no finding, or infos only; 1: warnings; 2: at least one error; 64: bad options."
    )]
    Check(steward::check::CheckArgs),
    /// Asked of a new steward binary by the running one before it re-executes into it:
    /// whether this build reads the running one's hand-over and loads its configuration.
    #[command(name = "handover-check", hide = true)]
    HandoverCheck {
        #[arg(long, value_name = "N")]
        handover_version: u32,
        #[arg(long, short = 'c', value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Print this manual page (roff) on standard output: `steward man | man -l -`.
    #[command(hide = true)]
    Man,
    /// Print a shell completion script: `steward completions bash > /usr/share/bash-completion/completions/steward`.
    #[command(
        long_about = "Print a completion script for SHELL on standard output.\n\n\
The package installs them (bash: /usr/share/bash-completion/completions/steward, zsh: \
/usr/share/zsh/vendor-completions/_steward, fish: /usr/share/fish/vendor_completions.d/steward.fish); \
elsewhere, for one shell session: `source <(steward completions bash)`."
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Which steward to talk to.
#[derive(Debug, Args)]
struct Target {
    /// The control socket [default: control.sock in the runtime directory of --config]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// steward's configuration, whose runtime directory holds the control socket
    /// (runtime_dir, else $RUNTIME_DIRECTORY, else /run/steward as root). A file that
    /// does not load is reported on stderr; its runtime_dir is still used if readable.
    #[arg(long, short = 'c', value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
}

impl Target {
    /// The control socket. A configuration that fails to load is said on stderr (an
    /// operator looking at "cannot reach steward" needs to know the socket may be the
    /// wrong one, and why), then its `runtime_dir` is still used when it can be read.
    fn socket_path(&self) -> PathBuf {
        if let Some(s) = &self.socket {
            return s.clone();
        }
        let err = match Config::load(&self.config) {
            Ok(c) => {
                return runtime_dir::choose(c.runtime_dir.as_deref()).join(control::SOCKET_NAME)
            }
            Err(e) => e,
        };
        eprintln!("steward: configuration error: {}", shown(&err.to_string()));
        let configured = steward::config::runtime_dir_only(&self.config)
            .ok()
            .flatten();
        let path = runtime_dir::choose(configured.as_deref()).join(control::SOCKET_NAME);
        eprintln!(
            "steward: trying {} ({})",
            shown(&path.display().to_string()),
            match configured {
                Some(_) => "its runtime_dir nevertheless",
                None => "the default runtime directory",
            }
        );
        path
    }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let code = match cli.command {
        Command::Run { config, log_target } => {
            // Before anything else, so a SIGHUP or SIGTERM during the configuration read
            // waits for steward's handlers instead of killing it (signals::block_early).
            if let Err(e) = steward::signals::block_early() {
                eprintln!("steward: cannot block signals until their handlers exist: {e}");
            }
            // Before any thread exists: it edits the environment.
            let handover = steward::handover::Handover::from_env();
            logging::init(log_target);
            match (Config::load(&config), handover) {
                (_, Some(Err(e))) => {
                    tracing::error!(
                        steward_phase = "config",
                        "cannot take over from the previous steward binary: {e}"
                    );
                    exit::SOFTWARE
                }
                (Ok(cfg), handover) => run_supervisor(cfg, handover.and_then(Result::ok)),
                (Err(e), _) => {
                    tracing::error!(steward_phase = "config", "configuration error: {e}");
                    exit::CONFIG
                }
            }
        }
        Command::Status { json, target } => client(&target, control::Command::Status, json),
        Command::Reload { target } => client(&target, control::Command::Reload, false),
        Command::Restart { target } => client(&target, control::Command::Restart, false),
        Command::Check(args) => steward::check::command(args),
        Command::HandoverCheck {
            handover_version,
            config,
        } => steward::reexec::check_command(handover_version, &config),
        Command::Man => {
            print!("{}", steward::manpage::render(Cli::command()));
            exit::OK
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "steward",
                &mut std::io::stdout(),
            );
            exit::OK
        }
    };
    logging::before_exit(code);
    std::process::exit(code);
}

/// Sends one control request and prints the answer; the exit code says how it went.
fn client(target: &Target, command: control::Command, json: bool) -> i32 {
    let path = target.socket_path();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("steward: cannot start the async runtime: {e}");
            return exit::OSERR;
        }
    };
    let reply = match rt.block_on(control::request(&path, command)) {
        Ok(r) => r,
        // `status` tells "not running" apart, as `systemctl status` does (3), so a script
        // can ask whether steward runs; a steward that is there but silent past its
        // timeout, or answering endlessly, cannot be talked to, and exits as one that
        // cannot be reached otherwise (69).
        Err(e) => {
            eprintln!("steward {}: {e}", command.as_str());
            return match command {
                control::Command::Status if e.is_not_running() => exit::NOT_RUNNING,
                _ => exit::UNAVAILABLE,
            };
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&reply).unwrap_or_default()
        );
    } else {
        print_reply(&reply);
    }
    if reply.ok {
        exit::OK
    } else {
        1
    }
}

/// The reply's text as a terminal may show it: its strings carry what children and
/// probes said (a failure's reason, a check's output), so control characters are escaped
/// rather than let move the cursor or start a fake line.
fn shown(text: &str) -> String {
    steward::logging::escape_controls(text)
}

fn print_reply(reply: &Reply) {
    if let Some(e) = &reply.error {
        eprintln!("steward: {}", shown(e));
    }
    if let Some(m) = &reply.message {
        println!("{}", shown(m));
    }
    let Some(s) = &reply.status else {
        return;
    };
    let child = match s.child_pid {
        Some(p) => format!("generation {} (child pid {p})", s.generation),
        None => "no child".to_string(),
    };
    // Absolute times beside the relative ones, as `systemctl status` shows them: the
    // reply carries ages, which this end turns into points in time.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let since = |age: f64| steward::duration::utc_timestamp((now - age).max(0.0) as u64);
    println!(
        "steward pid {}: {}, {child}, up {:.1} s (since {}){}, {} restart{}{}",
        s.pid,
        shown(&s.state),
        s.uptime_s,
        since(s.uptime_s),
        s.child_uptime_s
            .map(|u| format!(", child serving for {u:.1} s (since {})", since(u)))
            .unwrap_or_default(),
        s.restarts,
        if s.restarts == 1 { "" } else { "s" },
        s.in_flight
            .map(|n| format!(", {n} connections in flight"))
            .unwrap_or_default()
    );
    println!(
        "health probes: {} passed, {} failed{}",
        s.health.passed,
        s.health.failed,
        s.health
            .last_failure
            .as_deref()
            .map(|w| format!(" (last: {})", shown(w)))
            .unwrap_or_default()
    );
    println!("{}", shown(&s.deadline));
    for g in &s.generations {
        println!(
            "  generation {}: {} (pid {})",
            g.generation,
            shown(&g.state),
            g.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into())
        );
    }
    if !s.timeline.is_empty() {
        println!("last reload or stop:");
        for t in &s.timeline {
            println!("  +{:>6} ms  {}", t.at_ms, shown(&t.event));
        }
    }
}

/// `steward run`: start-up's plan, handed to the driver with the real world behind its
/// effects; steward's exit code once the last child is gone.
/// With `handover`, this steward is the successor of an in-place re-exec
/// (`steward::reexec`): it adopts what its predecessor handed over.
async fn supervise(config: Config, handover: Option<Handover>) -> i32 {
    let plan = match startup::prepare(&config, handover.as_ref()).await {
        Ok(plan) => plan,
        Err(startup::Stop(code)) => return code,
    };
    let upgrade = Upgrade::new(plan.control_fd, &plan.sockets);
    let policy = plan.policy;
    let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel();
    let _control_file = plan.control_file;
    // The driver hears signals on a channel, as its tests feed them.
    let (signal_tx, signal_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut signals = plan.signals;
    tokio::task::spawn_local(async move { while signal_tx.send(signals.next().await).is_ok() {} });
    let effects = System {
        worker: plan.worker,
        done: done_tx,
        notifier: plan.notifier,
        dir: plan.dir,
        sockets: plan.sockets,
        cgroups: plan.cgroups,
        deadline: plan.deadline.clone(),
        nofile: plan.nofile,
        check: None,
    };
    let setup = Setup {
        config,
        deadline: plan.deadline,
        policy: plan.policy,
        netlink: plan.netlink,
        watchdog: plan.watchdog,
        early: plan.early,
    };
    let mut driver = Driver::new(effects, setup);
    driver.enable_upgrade(upgrade);
    if let Some(h) = handover {
        driver.adopt(h, policy);
    }
    driver.run(signal_rx, plan.control, done_rx).await
}

fn run_supervisor(cfg: Config, handover: Option<Handover>) -> i32 {
    // One thread: the child's parent-death signal is tied to the thread that forked it.
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(tokio::task::LocalSet::new().run_until(supervise(cfg, handover))),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            exit::OSERR
        }
    }
}
