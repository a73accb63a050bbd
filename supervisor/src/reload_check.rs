//! A reload's check of its new configuration, before any generation runs it.
//!
//! The configuration is read again and its effective Pingora conf written off the loop
//! (the files are the operator's: one may be a FIFO, or huge), then the child program
//! runs with `-t` on it. Its exit is the answer; when it fails, why is at the end of its
//! output, so only the tail is read back, through the descriptor steward created.
//! The machine times the check ([`crate::lifecycle::CHECK_TIMEOUT`]).

use std::path::{Path, PathBuf};

use nix::unistd::Pid;
use tracing::info;

use crate::config::Config;
use crate::deadline::Deadline;
use crate::lifecycle::{ChildStatus, CHECK_TIMEOUT};
use crate::runtime_dir::RuntimeDir;
use crate::startup::{child_nofile, write_effective, FILE_TIMEOUT};
use crate::worker::Worker;
use crate::{child, files};

/// The candidate's Pingora conf in the runtime directory, beside the effective one.
pub const NEXT_CONF: &str = "pingora.next.yaml";
const CHECK_OUTPUT: &str = "check.log";
/// How much of a `-t` run's output steward reads: its last lines say why it failed.
const CHECK_OUTPUT_TAIL: u64 = 64 * 1024;
/// The longest line of `-t` output steward repeats in a log line or a reply.
const CHECK_LINE_MAX: usize = 512;

/// The candidate configuration and its Pingora conf, or why there is none.
pub type Prepared = Result<(Box<Config>, PathBuf), String>;

/// Reads the configuration at `running.path` again and writes the candidate's Pingora
/// conf; `answer` hears the outcome.
pub fn prepare(
    running: &Config,
    deadline: &Deadline,
    dir: &RuntimeDir,
    worker: &Worker,
    answer: impl FnOnce(Prepared) + 'static,
) {
    let path = running.path.clone();
    let sockets = running.sockets.clone();
    let (deadline, dir, worker) = (deadline.clone(), dir.clone(), worker.clone());
    tokio::task::spawn_local(async move {
        let prepared = async {
            let new = worker
                .call(FILE_TIMEOUT, move |_| {
                    Config::load(&path).map_err(|e| format!("configuration error: {e}"))
                })
                .await
                .map_err(|e| format!("configuration error: {e}"))??;
            // A reload that asks for more than the hard limit fails here, with the
            // running generation untouched, rather than at its spawn.
            child_nofile(&new)?;
            if new.sockets != sockets {
                return Err("sockets.listen changed; a reload keeps the listeners: restart steward to change them".to_string());
            }
            let conf = write_effective(&worker, &new, &deadline, &dir, NEXT_CONF)
                .await
                .map_err(|(_, msg)| msg)?;
            Ok((Box::new(new), conf))
        };
        answer(prepared.await);
    });
}

/// A `child -t` run checking a reload's configuration.
pub struct CheckRun {
    pub pid: Pid,
    program: String,
    /// The run's stdout and stderr, created by steward in its runtime directory: the
    /// tail is read back through this descriptor, not by path.
    output: std::fs::File,
}

impl CheckRun {
    pub fn start(new: &Config, conf: &Path, dir: &RuntimeDir) -> Result<CheckRun, String> {
        let output = dir
            .create_private(CHECK_OUTPUT)
            .map_err(|e| e.to_string())?;
        // The `-t` run only reads its configuration: steward's own limits do.
        let pid = child::spawn(
            &new.child,
            conf,
            child::SpawnMode::Test { output: &output },
            None,
            None,
        )
        .map_err(|e| format!("cannot run {} -t: {e}", new.child.program.display()))?;
        info!(
            steward_phase = "reloading",
            "checking the new configuration: {} -t (pid {pid})",
            new.child.program.display()
        );
        Ok(CheckRun {
            pid,
            program: new.child.program.display().to_string(),
            output,
        })
    }

    /// The run exited: `answer` hears whether the configuration passed, or why not.
    pub fn finished(
        self,
        status: ChildStatus,
        worker: &Worker,
        answer: impl FnOnce(Result<(), String>) + 'static,
    ) {
        if status == ChildStatus::Code(0) {
            return answer(Ok(()));
        }
        // Why it failed is at the end of its output, which may be huge: only the tail
        // is read, on the worker.
        let worker = worker.clone();
        tokio::task::spawn_local(async move {
            let CheckRun {
                program, output, ..
            } = self;
            let output = worker
                .call(FILE_TIMEOUT, move |_| {
                    files::read_tail_of(output, CHECK_OUTPUT_TAIL)
                        .unwrap_or_else(|e| format!("(its output: {e})"))
                })
                .await
                .unwrap_or_else(|e| format!("(its output: {e})"));
            answer(Err(format!(
                "`{program} -t` failed ({}): {}",
                status.describe(),
                last_lines(&output, 3)
            )));
        });
    }
}

/// Why a check the machine's timer ended failed.
pub fn timed_out(cfg: &Config) -> String {
    format!(
        "`{} -t` did not finish within {} s",
        cfg.child.program.display(),
        CHECK_TIMEOUT.as_secs()
    )
}

/// The last `n` non-empty lines of a child's output, each cut to [`CHECK_LINE_MAX`]
/// characters, joined with " | ".
fn last_lines(output: &str, n: usize) -> String {
    let mut tail: Vec<String> = output
        .lines()
        .filter(|l| !l.trim().is_empty())
        .rev()
        .take(n)
        .map(|l| match l.char_indices().nth(CHECK_LINE_MAX) {
            Some((at, _)) => format!("{}...", &l[..at]),
            None => l.to_string(),
        })
        .collect();
    tail.reverse();
    tail.join(" | ")
}
