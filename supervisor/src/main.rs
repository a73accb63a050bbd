//! The `steward` command line. Errors end here as one line and a sysexits code.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use steward::config::{Config, DEFAULT_CONFIG_PATH};
use steward::logging::{self, LogTarget};
use steward::{exit, run};

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
    };
    std::process::exit(code);
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
