//! Container PID 1 mode: the same binary as a container's entrypoint.
//!
//! As PID 1 of a PID namespace steward inherits init's duties. Every orphan of the
//! namespace is re-parented to it (as child subreaper it already collects its own
//! children's orphans; as PID 1 it collects all), and it reaps them as they exit, on each
//! SIGCHLD, with `waitpid(-1)` ([`super::child::reap_exited`]); a pid that is none of its
//! generations is logged and forgotten. The kernel delivers a signal to PID 1 only when a
//! handler is installed, so a signal steward does not name is dropped silently: every
//! signal a platform or operator plausibly sends has a handler and a documented effect
//! ([`super::signals`]), the same whether or not steward is PID 1. When steward exits the
//! kernel SIGKILLs whatever is left in the namespace; steward has killed and reaped the
//! child's tree before, and its exit status is the container's.
//!
//! There is no systemd to ask for the stop timeout: [`super::deadline`] reads it from
//! `STEWARD_STOP_TIMEOUT`.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::{error, info, warn};

use crate::exit;

/// Checks made once at start: is steward PID 1, and does `/proc` describe the PID
/// namespace steward lives in. `Err` is the exit code.
pub fn startup() -> Result<(), i32> {
    let me = nix::unistd::getpid().as_raw();
    if let Err(why) = proc_matches_namespace(me) {
        error!(
            steward_phase = "config",
            "{why}; steward finds the child's connections and descendants in /proc, and would count and kill the wrong processes (fix: mount a /proc for this PID namespace: `unshare --pid --fork --mount-proc`, or a container runtime, which always does)"
        );
        return Err(exit::OSERR);
    }
    if me == 1 {
        info!(
            steward_pid1 = true,
            "steward is PID 1 of its PID namespace (container init): it reaps every orphan, forwards SIGUSR1, SIGUSR2 and SIGWINCH to the child, ignores SIGQUIT; when it exits the kernel ends the namespace"
        );
    }
    Ok(())
}

/// `/proc/self` must name steward's own pid: a `/proc` mounted for another PID namespace
/// (`unshare --pid --fork` without `--mount-proc`) shows other processes under the pids
/// steward sees.
fn proc_matches_namespace(me: i32) -> Result<(), String> {
    let link =
        std::fs::read_link("/proc/self").map_err(|e| format!("/proc is not usable ({e})"))?;
    match link.to_str().and_then(|s| s.parse::<i32>().ok()) {
        Some(p) if p == me => Ok(()),
        _ => Err(format!(
            "/proc belongs to another PID namespace: /proc/self is {} but steward's pid is {me}",
            link.display()
        )),
    }
}

/// Passes a signal steward has no meaning for on to the current generation's child, as
/// tini does (to the child itself, not its process group: the child decides what its own
/// processes get). Without a child (starting, backing off) it is dropped, with a record.
pub fn forward(sig: Signal, child: Option<u32>) {
    let Some(pid) = child.and_then(|p| i32::try_from(p).ok()) else {
        info!(
            steward_signal = sig.as_str(),
            "{sig} received with no child running; dropped"
        );
        return;
    };
    match kill(Pid::from_raw(pid), sig) {
        Ok(()) => info!(
            steward_signal = sig.as_str(),
            steward_child_pid = pid,
            "{sig} forwarded to child pid {pid}"
        ),
        Err(e) => warn!(
            steward_signal = sig.as_str(),
            steward_child_pid = pid,
            "cannot forward {sig} to child pid {pid}: {e}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_of_this_namespace_is_accepted() {
        assert_eq!(proc_matches_namespace(std::process::id() as i32), Ok(()));
    }

    #[test]
    fn proc_naming_another_pid_is_refused() {
        let e = proc_matches_namespace(1 << 30).unwrap_err();
        assert!(e.contains("another PID namespace"), "{e}");
    }
}
