//! Starting, signalling, killing and reaping the child.
//!
//! The child gets its own process group (so a terminal's Ctrl-C reaches steward only, and
//! the group can be killed as one), a parent-death signal (so it cannot outlive a steward
//! that was SIGKILLed), and a clean environment (no `NOTIFY_SOCKET`: only steward talks to
//! systemd). steward marks itself child subreaper, so grandchildren that lose their parent
//! are re-parented to steward, and killed and reaped with the rest of the tree.

use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::config::ChildConfig;
use crate::inherit::Listeners;
use crate::lifecycle::ChildStatus;
use crate::limits::Nofile;
use crate::procfs;
use crate::worker::Io;

/// Variables that belong to steward's relation with systemd, not the child's.
const PRIVATE_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

pub enum SpawnMode<'a> {
    Serve {
        listeners: Listeners<'a>,
    },
    /// `output` is the file the run's stdout and stderr go to, opened by the caller.
    Test {
        output: &'a std::fs::File,
    },
}

/// Marks every descriptor steward inherited (other than stdin, stdout and stderr)
/// close-on-exec, so none reaches a child: whoever started steward may have left a pipe or
/// a socket open (a shell, a CI runner, a test harness), and a child holding the write end
/// of someone's pipe keeps its reader waiting for ever. systemd's `LISTEN_FDS` sockets are
/// handed over explicitly (through the upgrade socket, or named in the child's environment
/// with only those left open), never by accident. Returns how many were marked.
pub fn close_inherited_on_exec() -> usize {
    let fds: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|&fd| fd > 2)
            .collect(),
        Err(_) => return 0,
    };
    let mut marked = 0;
    for fd in fds {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        // The directory listing's own descriptor is gone by now: EBADF, skipped.
        let Ok(flags) = fcntl(fd, FcntlArg::F_GETFD) else {
            continue;
        };
        let flags = FdFlag::from_bits_truncate(flags);
        if !flags.contains(FdFlag::FD_CLOEXEC)
            && fcntl(fd, FcntlArg::F_SETFD(flags | FdFlag::FD_CLOEXEC)).is_ok()
        {
            marked += 1;
        }
    }
    marked
}

/// Makes orphaned descendants steward's children instead of init's.
pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// Spawns the child with `-c <effective conf>` appended. Must be called from the thread
/// that lives as long as steward: the parent-death signal fires when the forking *thread*
/// exits, which is why steward runs a current-thread runtime.
/// With [`Listeners::Upgrade`], the child is started with Pingora's `-u` and waits for its
/// listeners on its upgrade socket; with [`Listeners::Inherit`], it inherits them across
/// exec (only they lose close-on-exec, in the child) and their variables. With `test`, it is started with `-t` (check the configuration
/// and exit) and its output goes to `output`.
/// With `cgroup_procs` (an open `cgroup.procs`), the child moves itself into that cgroup
/// before exec, so not one of its processes is ever forked outside it.
/// With `nofile` (decided by [`crate::limits::decide`] before the fork), the child sets
/// its own `RLIMIT_NOFILE` before exec; steward's stays as it is.
pub fn spawn(
    cfg: &ChildConfig,
    effective_conf: &Path,
    mode: SpawnMode,
    cgroup_procs: Option<RawFd>,
    nofile: Option<Nofile>,
) -> io::Result<Pid> {
    let mut cmd = Command::new(&cfg.program);
    cmd.args(&cfg.args);
    let mut keep_open: Vec<RawFd> = vec![];
    match &mode {
        SpawnMode::Serve {
            listeners: Listeners::Upgrade,
        } => {
            cmd.arg("-u");
        }
        SpawnMode::Serve {
            listeners: Listeners::Own,
        } => {}
        SpawnMode::Serve {
            listeners: Listeners::Inherit(passed),
        } => keep_open.extend_from_slice(passed.keep_open()),
        SpawnMode::Test { output } => {
            cmd.arg("-t");
            cmd.stdout(output.try_clone()?).stderr(output.try_clone()?);
        }
    }
    cmd.arg("-c")
        .arg(effective_conf)
        .current_dir(&cfg.working_directory)
        .envs(&cfg.env)
        .stdin(Stdio::null())
        .process_group(0);
    for var in PRIVATE_ENV {
        cmd.env_remove(var);
    }
    // Set here only: an operator's child.env or steward's own environment must not name
    // descriptors to a child that did not get them.
    for var in [crate::inherit::LISTENERS_ENV, crate::inherit::REPORT_ENV] {
        cmd.env_remove(var);
    }
    if let SpawnMode::Serve {
        listeners: Listeners::Inherit(passed),
    } = &mode
    {
        cmd.envs(passed.env().iter().map(|(k, v)| (k, v)));
    }
    let parent = nix::unistd::getpid();
    // Built before the fork: the closure only copies it.
    let rlimit = nofile.map(|n| libc::rlimit {
        rlim_cur: n.soft,
        rlim_max: n.hard,
    });
    // SAFETY: the closure runs between fork and exec in the child; it only makes
    // async-signal-safe syscalls (write, fcntl, setrlimit, prctl, getppid) on values
    // captured by move before the fork, and allocates nothing (a failed call's error is an
    // OS error code, which `io::Error` holds without allocating).
    unsafe {
        cmd.pre_exec(move || {
            // The listeners this child inherits: their flags are this process's own copy
            // of the descriptor table, so steward's stay close-on-exec.
            for &fd in &keep_open {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(fd) = cgroup_procs {
                // "0" is the writing process. A failure is not fatal: the parent sees
                // where the child ended up and falls back to process-group kills.
                let _ = libc::write(fd, b"0".as_ptr().cast(), 1);
            }
            // Fatal when it fails: the operator asked for this limit, and a child that
            // runs with less fails later, under load, far from the cause.
            if let Some(lim) = &rlimit {
                if libc::setrlimit(libc::RLIMIT_NOFILE, lim) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            // If steward died between fork and prctl, the signal will never come.
            if nix::unistd::getppid() != parent {
                return Err(io::Error::other("steward exited during spawn"));
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // The Child handle is dropped on purpose: steward reaps with waitpid(-1) (it is a
    // subreaper and must collect every orphan), so std must not wait on it.
    let pid = Pid::from_raw(child.id() as i32);
    drop(child);
    Ok(pid)
}

pub fn signal(pid: Pid, sig: Signal) -> nix::Result<()> {
    match kill(pid, sig) {
        Err(Errno::ESRCH) => Ok(()),
        other => other,
    }
}

/// SIGKILL to a generation's process group and every descendant of its child, repeated
/// until none is left, so a process that forks while being killed is caught too.
/// Returns how many processes were signalled.
pub fn kill_tree(io: &Io, pgid: Pid) -> usize {
    kill_until_gone(io, Some(pgid), pgid.as_raw())
}

/// SIGKILL to every descendant of steward: on the way out, orphans a generation left
/// behind were re-parented to steward and cannot be told apart.
pub fn kill_descendants(io: &Io) -> usize {
    kill_until_gone(io, None, nix::unistd::getpid().as_raw())
}

fn kill_until_gone(io: &Io, pgid: Option<Pid>, root: i32) -> usize {
    sigkill_until_none(
        io,
        pgid,
        || {
            let procs = procfs::all_processes(io);
            let mut targets = procfs::descendants(&procs, root);
            if let Some(g) = pgid {
                targets.extend(procfs::group_members(&procs, g.as_raw()));
                targets.push(g.as_raw());
            }
            targets.sort_unstable();
            targets.dedup();
            targets
        },
        |round| round >= 50,
    )
}

/// SIGKILL to every living pid that `candidates` names, round after round, until a round
/// finds none alive (a process forked while the list was read is caught in the next
/// one) or `give_up(round)` says so. Returns how many signals were delivered.
pub(crate) fn sigkill_until_none(
    io: &Io,
    group: Option<Pid>,
    mut candidates: impl FnMut() -> Vec<i32>,
    mut give_up: impl FnMut(usize) -> bool,
) -> usize {
    let mut signalled = 0;
    for round in 0.. {
        if give_up(round) {
            break;
        }
        // Zombies are already dead; only living ones need another signal.
        let living: Vec<i32> = candidates()
            .into_iter()
            .filter(|&p| !procfs::is_gone(io, p))
            .collect();
        if living.is_empty() {
            break;
        }
        // The whole group at once, so none of it forks meanwhile; then each one listed,
        // which also counts them (a killed process exists until it is reaped).
        if let Some(g) = group {
            let _ = killpg(g, Signal::SIGKILL);
        }
        for p in living {
            if kill(Pid::from_raw(p), Signal::SIGKILL).is_ok() {
                signalled += 1;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    signalled
}

/// Collects every child that has exited, without blocking.
pub fn reap_exited() -> Vec<(Pid, ChildStatus)> {
    let mut out = vec![];
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => out.push((pid, ChildStatus::Code(code))),
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                out.push((pid, ChildStatus::Signal(sig as i32)))
            }
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => continue,
        }
    }
    out
}

/// Waits (briefly) until steward has no child left; used on the way out.
pub async fn reap_all(timeout: std::time::Duration) -> Vec<(Pid, ChildStatus)> {
    let end = tokio::time::Instant::now() + timeout;
    let mut out = vec![];
    loop {
        out.extend(reap_exited());
        if let Err(Errno::ECHILD) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            return out;
        }
        if tokio::time::Instant::now() >= end {
            return out;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}
