//! The `steward` command line. Errors end here as one line and a sysexits code.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use steward::config::{Config, DEFAULT_CONFIG_PATH};
use steward::control::{self, Reply};
use steward::logging::{self, LogTarget};
use steward::{exit, run, runtime_dir};

#[derive(Debug, Parser)]
#[command(
    name = "steward",
    version,
    about = "Supervise a Pingora server under systemd: READY when it serves, stop within the unit's deadline, never by systemd's SIGKILL."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the child and supervise it until it stops (the unit's ExecStart).
    Run {
        /// steward's TOML configuration.
        #[arg(long, short = 'c', default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Where log records go.
        #[arg(long, value_enum, default_value_t = LogTarget::Auto)]
        log_target: LogTarget,
    },
    /// Show the running steward's state, generation, child, restarts and last timeline.
    Status {
        /// Print the raw JSON reply.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Reload: check the new configuration, start the next generation, retire the old one.
    /// Blocks until done; exits 1 with the reason if the reload failed (the old generation
    /// then keeps serving). The unit's ExecReload.
    Reload {
        #[command(flatten)]
        target: Target,
    },
    /// Restart the child, keeping the listening sockets.
    Restart {
        #[command(flatten)]
        target: Target,
    },
    /// Check the unit, steward's TOML and Pingora's YAML for contradictions (a grace period
    /// longer than the stop timeout, ...). Exit 0 clean, 1 warnings, 2 errors.
    Check(steward::check::CheckArgs),
}

/// Which steward to talk to.
#[derive(Debug, Args)]
struct Target {
    /// The control socket [default: control.sock in the runtime directory of --config]
    #[arg(long)]
    socket: Option<PathBuf>,
    /// steward's configuration, whose runtime directory holds the control socket.
    #[arg(long, short = 'c', default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
}

impl Target {
    fn socket_path(&self) -> PathBuf {
        if let Some(s) = &self.socket {
            return s.clone();
        }
        // A config that cannot be read still leaves the default runtime directory.
        let configured = Config::load(&self.config).ok().and_then(|c| c.runtime_dir);
        runtime_dir::choose(configured.as_deref()).join(control::SOCKET_NAME)
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
            logging::init(log_target);
            match Config::load(&config) {
                Ok(cfg) => run_supervisor(cfg),
                Err(e) => {
                    tracing::error!(steward_phase = "config", "configuration error: {e}");
                    exit::CONFIG
                }
            }
        }
        Command::Status { json, target } => client(&target, control::Command::Status, json),
        Command::Reload { target } => client(&target, control::Command::Reload, false),
        Command::Restart { target } => client(&target, control::Command::Restart, false),
        Command::Check(args) => steward::check::command(args),
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
        Err(e) => {
            eprintln!("steward {}: {e}", command.as_str());
            return exit::UNAVAILABLE;
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

fn print_reply(reply: &Reply) {
    if let Some(e) = &reply.error {
        eprintln!("steward: {e}");
    }
    if let Some(m) = &reply.message {
        println!("{m}");
    }
    let Some(s) = &reply.status else {
        return;
    };
    let child = match s.child_pid {
        Some(p) => format!("generation {} (child pid {p})", s.generation),
        None => "no child".to_string(),
    };
    println!(
        "steward pid {}: {}, {child}, up {:.1} s{}, {} restart{}{}",
        s.pid,
        s.state,
        s.uptime_s,
        s.child_uptime_s
            .map(|u| format!(", child serving for {u:.1} s"))
            .unwrap_or_default(),
        s.restarts,
        if s.restarts == 1 { "" } else { "s" },
        s.in_flight
            .map(|n| format!(", {n} connections in flight"))
            .unwrap_or_default()
    );
    println!("{}", s.deadline);
    for g in &s.generations {
        println!(
            "  generation {}: {} (pid {})",
            g.generation,
            g.state,
            g.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into())
        );
    }
    if !s.timeline.is_empty() {
        println!("last reload or stop:");
        for t in &s.timeline {
            println!("  +{:>6} ms  {}", t.at_ms, t.event);
        }
    }
}

fn run_supervisor(cfg: Config) -> i32 {
    // One thread: the child's parent-death signal is tied to the thread that forked it.
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run::run(cfg)),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            exit::OSERR
        }
    }
}
