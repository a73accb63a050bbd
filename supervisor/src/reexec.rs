//! In-place re-execution of steward when its own binary was upgraded.
//!
//! A package upgrade replaces steward's binary on disk while the old one runs (its
//! `/proc/self/exe` then ends in "(deleted)", or the path names another inode). On the next
//! reload (`systemctl reload`, SIGHUP, `steward reload`), from the steady state only
//! (serving, one generation, nothing pending: [`crate::lifecycle::Lifecycle::steady`]),
//! steward:
//!
//! 1. runs the new binary out of process as `steward handover-check` ([`check`]): it must
//!    start, read this steward's hand-over version and load the current configuration.
//!    Any refusal happens here, while the old steward still runs: the reload fails with
//!    the reason and nothing else changes;
//! 2. writes the [`Handover`] into a memfd and calls `execve` on the new binary, with the
//!    same argv and the same pid ([`exec`]). Only the descriptors the hand-over names keep
//!    close-on-exec cleared; the handled signals are blocked first, so one that arrives
//!    during the exec stays pending and reaches the successor's handlers;
//! 3. the successor (`steward run` again) finds the hand-over, adopts the listeners, the
//!    control socket and the running generation instead of binding and spawning, and runs
//!    the reload that was asked for, as usual: its new generation is started by the new
//!    steward, and the waiting `steward reload` gets that reload's answer.
//!
//! What makes the child survive: its parent-death signal (SIGKILL) fires when the *thread*
//! that forked it ends. Every child is forked by the main thread, which `execve` keeps (it
//! ends every other thread; called from another thread it would end the main one, so
//! [`exec`] refuses that). The subreaper flag is kept across `execve` and set again anyway;
//! a child that exits during the exec stays a zombie until the successor reaps it, and the
//! SIGCHLD stays pending. systemd sees the same MAINPID throughout and gets no second
//! READY=1 until the reload's new generation serves.
//!
//! What is left: a successor that fails after the exec (it cannot read what [`check`]
//! accepted, say, because the disk changed in between) exits, its generation gets its
//! parent-death signal, and systemd's `Restart=` starts steward again with the listeners
//! from the fd store.

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::signal::SigSet;
use tokio::io::AsyncReadExt;

use crate::config::Config;
use crate::exit;
use crate::handover::{self, Handover};

/// The hidden subcommand a new binary answers before it is exec'd.
pub const CHECK_SUBCOMMAND: &str = "handover-check";
/// The line that says the new binary accepts the hand-over; anything else is a refusal.
const CHECK_OK: &str = "steward handover-check: ok";
/// How long the new binary may take to answer.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of its output is read.
const CHECK_OUTPUT_MAX: u64 = 64 * 1024;
/// Variables that describe this process image's inheritance, not the successor's: systemd's
/// socket-activation ones name descriptors by position, which mean nothing after the exec.
const NOT_INHERITED: [&str; 4] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", handover::ENV];

/// The binary steward was started from: the path to exec, and the file that runs.
#[derive(Debug, Clone)]
pub struct Exe {
    /// argv[0] made absolute (not resolved through symlinks, so a package that repoints a
    /// symlink counts as a new binary), or `/proc/self/exe`'s target without a slash.
    pub path: PathBuf,
    /// (device, inode) of the running image.
    running: (u64, u64),
}

impl Exe {
    /// Recorded at start; `None` when the running image cannot be identified.
    pub fn at_start() -> Option<Exe> {
        let running = std::fs::metadata("/proc/self/exe").ok()?;
        let argv0 = std::env::args_os().next().map(PathBuf::from);
        let path = match argv0 {
            Some(p) if p.as_os_str().as_bytes().contains(&b'/') => {
                if p.is_absolute() {
                    p
                } else {
                    std::env::current_dir().ok()?.join(p)
                }
            }
            _ => std::env::current_exe().ok()?,
        };
        Some(Exe {
            path,
            running: (running.dev(), running.ino()),
        })
    }

    /// Whether the file at [`Exe::path`] is another file than the running image: `Some`
    /// with why. A path that no longer exists is not an upgrade (nothing to exec).
    pub fn replaced(&self) -> Option<String> {
        let now = std::fs::metadata(&self.path).ok()?;
        if (now.dev(), now.ino()) == self.running {
            return None;
        }
        let deleted = std::fs::read_link("/proc/self/exe")
            .map(|p| p.as_os_str().as_bytes().ends_with(b" (deleted)"))
            .unwrap_or(false);
        Some(format!(
            "steward's binary {} was replaced on disk ({})",
            self.path.display(),
            if deleted {
                "the running one is deleted"
            } else {
                "it is another file now"
            }
        ))
    }
}

/// `steward handover-check`, run in the NEW binary by the old one: says whether this build
/// reads hand-over `version` and loads `config`. The old steward execs only after the
/// line [`CHECK_OK`].
pub fn check_command(version: u32, config: &Path) -> i32 {
    if version != handover::VERSION {
        eprintln!(
            "steward handover-check: this steward reads hand-over version {}, not {version}; upgrade with a stop and start",
            handover::VERSION
        );
        return exit::CONFIG;
    }
    if let Err(e) = Config::load(config) {
        eprintln!("steward handover-check: configuration error: {e}");
        return exit::CONFIG;
    }
    println!(
        "{CHECK_OK}: hand-over version {version}, {} loads",
        config.display()
    );
    exit::OK
}

/// Runs `new handover-check` and waits for its verdict (within [`CHECK_TIMEOUT`]).
/// `Err`: why the new binary may not be exec'd, for the reload's answer and the log.
///
/// Its exit status is not waited for: steward reaps every child with `waitpid(-1)` in its
/// loop, so only the output decides, read to its end through a pipe.
pub async fn check(new: &Path, config: &Path) -> Result<(), String> {
    let shown = new.display();
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("cannot check the new steward binary {shown}: pipe: {e}"))?;
    let mut cmd = Command::new(new);
    cmd.arg(CHECK_SUBCOMMAND)
        .arg("--handover-version")
        .arg(handover::VERSION.to_string())
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            write
                .try_clone()
                .map_err(|e| format!("cannot check {shown}: {e}"))?,
        ))
        .stderr(Stdio::from(write));
    // The check must not talk to systemd as steward, nor take steward's descriptors.
    for var in ["NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC"]
        .into_iter()
        .chain(NOT_INHERITED)
    {
        cmd.env_remove(var);
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("the new steward binary {shown} cannot be run: {e}"))?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Dropped without a wait: the loop reaps it.
    drop(child);
    drop(cmd);
    let mut output = vec![];
    let read = tokio::net::unix::pipe::Receiver::from_owned_fd(read)
        .map_err(|e| format!("cannot check {shown}: {e}"))?;
    let mut limited = read.take(CHECK_OUTPUT_MAX);
    let reading = limited.read_to_end(&mut output);
    match tokio::time::timeout(CHECK_TIMEOUT, reading).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("reading the check of {shown}: {e}")),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            return Err(format!(
                "the new steward binary {shown} did not answer `{CHECK_SUBCOMMAND}` within {} s",
                CHECK_TIMEOUT.as_secs()
            ));
        }
    }
    let text = String::from_utf8_lossy(&output);
    if text.lines().any(|l| l.starts_with(CHECK_OK)) {
        return Ok(());
    }
    let said: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    Err(format!(
        "the new steward binary {shown} refused the hand-over{}",
        match said.last() {
            Some(last) => format!(": {}", crate::logging::escape_controls(last)),
            None => " (it printed nothing: not a steward that can take over)".into(),
        }
    ))
}

/// Why an exec did not happen; the old steward keeps running.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("steward can re-execute only from its main thread (the children's parent-death signal is tied to it)")]
    NotMainThread,
    #[error("{0}")]
    Handover(#[from] handover::HandoverError),
    #[error("cannot prepare the exec: {0}")]
    Prepare(nix::Error),
    #[error("execve {path}: {source}")]
    Exec { path: String, source: nix::Error },
}

/// The handled signals blocked on the main thread (every other thread has them blocked
/// since [`crate::signals::block_early`]): from here on a signal stays pending, survives
/// the exec, and the successor's handlers receive it once installed
/// ([`crate::signals::Signals::install`]). The caller reads what its handlers already
/// took, then execs or [`Blocked::restore`]s.
pub struct Blocked(SigSet);

impl Blocked {
    pub fn block() -> std::io::Result<Blocked> {
        let old = SigSet::thread_get_mask().map_err(std::io::Error::from)?;
        crate::signals::block_early()?;
        Ok(Blocked(old))
    }

    pub fn restore(self) {
        let _ = self.0.thread_set_mask();
    }
}

/// Replaces this process image with `new`, handing over `h`. Returns only when the exec
/// failed, with every descriptor flag as it was (the signals stay blocked: `_blocked`'s
/// owner restores them).
pub fn exec(new: &Path, h: &Handover, _blocked: &Blocked) -> ExecError {
    match exec_inner(new, h) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn exec_inner(new: &Path, h: &Handover) -> Result<std::convert::Infallible, ExecError> {
    if nix::unistd::gettid() != nix::unistd::getpid() {
        return Err(ExecError::NotMainThread);
    }
    let memfd: OwnedFd = h.to_memfd()?;
    let cstr = |b: &[u8]| CString::new(b).map_err(|_| ExecError::Prepare(nix::Error::EINVAL));
    let path = cstr(new.as_os_str().as_bytes())?;
    let argv = std::env::args_os()
        .map(|a| cstr(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut env = vec![];
    for (k, v) in std::env::vars_os() {
        if NOT_INHERITED.iter().any(|n| k == *n) {
            continue;
        }
        let mut kv = OsString::from(&k);
        kv.push("=");
        kv.push(&v);
        env.push(cstr(kv.as_bytes())?);
    }
    env.push(cstr(
        format!("{}={}", handover::ENV, memfd.as_raw_fd()).as_bytes(),
    )?);
    let keep: Vec<RawFd> = h.fds().into_iter().chain([memfd.as_raw_fd()]).collect();
    let restore = |cleared: &[RawFd]| {
        for &fd in cleared {
            let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        }
    };
    let mut cleared = vec![];
    for &fd in &keep {
        if let Err(e) = fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())) {
            restore(&cleared);
            return Err(ExecError::Prepare(e));
        }
        cleared.push(fd);
    }
    let err = match nix::unistd::execve(&path, &argv, &env) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    restore(&cleared);
    Err(ExecError::Exec {
        path: new.display().to_string(),
        source: err,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_binary_is_not_replaced() {
        let exe = Exe::at_start().expect("identified");
        assert_eq!(exe.replaced(), None);
    }

    #[test]
    fn another_file_at_the_path_is_a_replaced_binary() {
        let dir = std::env::temp_dir().join(format!("steward-reexec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("steward");
        std::fs::write(&path, b"new").expect("write");
        let running = std::fs::metadata("/proc/self/exe").expect("exe");
        let exe = Exe {
            path: path.clone(),
            running: (running.dev(), running.ino()),
        };
        assert!(exe.replaced().is_some());
        std::fs::remove_file(&path).expect("rm");
        assert_eq!(exe.replaced(), None, "no file: nothing to exec");
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn a_handover_check_of_another_version_is_refused() {
        assert_eq!(
            check_command(handover::VERSION + 1, Path::new("/nonexistent")),
            exit::CONFIG
        );
    }
}
