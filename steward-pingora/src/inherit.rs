//! Listening sockets inherited from steward at exec, put where Pingora looks first.
//!
//! Pingora 0.9.1 gives a new process its listeners through the upgrade socket (`-u`), and
//! its receiver sleeps a whole second when its first `accept()` finds nobody waiting, so
//! every start, crash recovery and reload took a second. But every listening service is
//! started with the bootstrap's shared table of descriptors (`ListenFds`) and binds an
//! address only when the table has no descriptor under its key. So steward (with
//! `child.handoff = "inherit"`) starts the child without `-u`, leaves its listening sockets
//! open across exec, and names them in the environment; each service made through
//! [`crate::Steward`] puts the ones under its own keys into the table just before it
//! listens. The child then serves steward's sockets, with their backlogs, at once.
//!
//! The protocol (steward's `inherit` module writes the other side):
//! - [`LISTENERS_ENV`]: `fd=key` pairs separated by single spaces, a key being the string
//!   given to `add_tcp` (keys hold no whitespace; a key may hold `=`, the fd is the digits
//!   before the first one). The descriptors are non-blocking listening sockets.
//! - [`REPORT_ENV`]: the write end of a pipe. Once every service made through the
//!   `Steward` has started, the keys they claimed go to it on one line, the descriptors no
//!   service claimed are closed, and the pipe is closed: steward waits for that line before
//!   it probes the child, so a listener the child does not serve is never counted as held.
//!
//! Both variables are removed from the environment when read, so no process the server
//! starts sees them.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use pingora::server::ListenFds;
use tokio::sync::watch;

/// The inherited listening sockets: `fd=key fd=key ...`.
pub const LISTENERS_ENV: &str = "STEWARD_LISTENERS";
/// The descriptor of the pipe the claimed keys are reported on.
pub const REPORT_ENV: &str = "STEWARD_LISTENERS_REPORT";

/// Why the inherited listeners could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum InheritError {
    /// The variable does not follow the protocol.
    #[error("{var}={value:?}: {reason}")]
    Malformed {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A descriptor named is not an open listening socket.
    #[error("{var}: descriptor {fd} ({key}) is not an open listening socket: {reason}")]
    NotListening {
        /// The variable.
        var: &'static str,
        /// The descriptor.
        fd: RawFd,
        /// Its key.
        key: String,
        /// What the kernel said.
        reason: String,
    },
}

#[derive(Default)]
struct State {
    /// Inherited and not yet claimed, by key.
    fds: HashMap<String, OwnedFd>,
    /// Where the claimed keys go; `None` once reported (or never asked for).
    report: Option<std::fs::File>,
    claimed: Vec<String>,
    /// Services made through the `Steward` and not dropped unstarted.
    services: usize,
    started: usize,
    /// Whether the background service is running: services made after it are not
    /// waited for (none are, in a server built before `run`).
    running: bool,
}

/// The listeners a process inherited, until the services that listen on them claim them.
pub(crate) struct Inherited {
    state: Mutex<State>,
    settled: watch::Sender<bool>,
}

impl Inherited {
    /// Takes the listeners named in the environment, if any, and removes the variables.
    pub(crate) fn from_env() -> Result<Inherited, InheritError> {
        let listeners = std::env::var(LISTENERS_ENV).ok();
        let report = std::env::var(REPORT_ENV).ok();
        std::env::remove_var(LISTENERS_ENV);
        std::env::remove_var(REPORT_ENV);
        let fds = match &listeners {
            Some(v) => parse_listeners(v)?,
            None => vec![],
        };
        let report = report
            .map(|v| {
                let fd = v
                    .parse::<RawFd>()
                    .ok()
                    .filter(|&fd| fd > 2)
                    .ok_or_else(|| InheritError::Malformed {
                        var: REPORT_ENV,
                        value: v.clone(),
                        reason: "not a descriptor number above 2".into(),
                    })?;
                check_open(fd).map_err(|reason| InheritError::Malformed {
                    var: REPORT_ENV,
                    value: v.clone(),
                    reason,
                })?;
                // SAFETY: steward left this descriptor open for this process to report on
                // (checked open above); nothing else here knows of it.
                Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
            })
            .transpose()?;
        let mut taken = HashMap::new();
        for (fd, key) in fds {
            is_listening(fd).map_err(|reason| InheritError::NotListening {
                var: LISTENERS_ENV,
                fd,
                key: key.clone(),
                reason,
            })?;
            // SAFETY: steward left this descriptor open for this process (checked to be a
            // listening socket above), and it is taken once: duplicate numbers were refused.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            // Not into the programs this server may start.
            let _ = nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
            taken.insert(key, owned);
        }
        let nothing_to_wait_for = taken.is_empty() && report.is_none();
        Ok(Inherited {
            state: Mutex::new(State {
                fds: taken,
                report,
                ..State::default()
            }),
            settled: watch::channel(nothing_to_wait_for).0,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock left plain data behind; it is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A service that will claim its keys was made.
    pub(crate) fn service_made(&self) {
        self.state().services += 1;
    }

    /// A service made was dropped without being started.
    pub(crate) fn service_dropped(&self) {
        let mut s = self.state();
        s.services = s.services.saturating_sub(1);
        self.settle_if_done(&mut s);
    }

    /// A service is about to listen on `keys`: the inherited descriptors under those keys
    /// go into Pingora's table, where its listeners look before binding.
    pub(crate) fn claim(&self, keys: &[String], table: Option<&ListenFds>) {
        let mut s = self.state();
        if let Some(table) = table {
            for key in keys {
                let Some(fd) = s.fds.remove(key) else {
                    continue;
                };
                let mut t = table.lock();
                if t.get(key).is_none() {
                    // Pingora's listener takes ownership of the raw descriptor.
                    t.add(key.clone(), fd.into_raw_fd());
                    s.claimed.push(key.clone());
                }
            }
        }
        s.started += 1;
        self.settle_if_done(&mut s);
    }

    /// The server is running: from now on, once every service made has claimed its keys,
    /// the rest are closed and the claims reported.
    pub(crate) fn running(&self) {
        let mut s = self.state();
        s.running = true;
        self.settle_if_done(&mut s);
    }

    /// Waits until the claims are settled (at once when nothing was inherited).
    pub(crate) async fn settled(&self) {
        let mut rx = self.settled.subscribe();
        let _ = rx.wait_for(|&done| done).await;
    }

    fn settle_if_done(&self, s: &mut State) {
        if !s.running || s.started < s.services || *self.settled.borrow() {
            return;
        }
        let unclaimed: Vec<String> = s.fds.drain().map(|(k, _)| k).collect();
        if !unclaimed.is_empty() {
            log::warn!(
                "inherited listener(s) {} claimed by no service made through steward_pingora::Steward: closed",
                unclaimed.join(", ")
            );
        }
        if let Some(mut report) = s.report.take() {
            if let Err(e) = writeln!(report, "{}", s.claimed.join(" ")) {
                log::warn!("cannot report the claimed listeners to steward: {e}");
            }
        }
        self.settled.send_replace(true);
    }
}

/// `fd=key fd=key ...`, every fd above 2 and named once.
fn parse_listeners(value: &str) -> Result<Vec<(RawFd, String)>, InheritError> {
    let bad = |reason: String| InheritError::Malformed {
        var: LISTENERS_ENV,
        value: value.to_string(),
        reason,
    };
    let mut out: Vec<(RawFd, String)> = vec![];
    for pair in value.split(' ').filter(|p| !p.is_empty()) {
        let (fd, key) = pair
            .split_once('=')
            .ok_or_else(|| bad(format!("{pair:?} is not fd=key")))?;
        let fd: RawFd = fd
            .parse()
            .ok()
            .filter(|&fd| fd > 2)
            .ok_or_else(|| bad(format!("{fd:?} is not a descriptor number above 2")))?;
        if key.is_empty() {
            return Err(bad(format!("descriptor {fd} has an empty key")));
        }
        if out.iter().any(|(f, k)| *f == fd || k == key) {
            return Err(bad(format!("descriptor {fd} or key {key} is named twice")));
        }
        out.push((fd, key.to_string()));
    }
    Ok(out)
}

fn check_open(fd: RawFd) -> Result<(), String> {
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn is_listening(fd: RawFd) -> Result<(), String> {
    check_open(fd)?;
    // SAFETY: only borrowed for the getsockopt call; the descriptor was checked open.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    match nix::sys::socket::getsockopt(&borrowed, nix::sys::socket::sockopt::AcceptConn) {
        Ok(true) => Ok(()),
        Ok(false) => Err("a socket, but not listening".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_name_a_descriptor_and_a_key_that_may_hold_colons() {
        assert_eq!(
            parse_listeners("7=127.0.0.1:6188 8=[::1]:443").expect("parsed"),
            vec![(7, "127.0.0.1:6188".into()), (8, "[::1]:443".into())]
        );
    }

    #[test]
    fn stdio_descriptors_and_repeats_are_refused() {
        assert!(parse_listeners("1=127.0.0.1:1").is_err());
        assert!(parse_listeners("5=a:1 5=b:2").is_err());
        assert!(parse_listeners("5=a:1 6=a:1").is_err());
        assert!(parse_listeners("five=a:1").is_err());
        assert!(parse_listeners("5=").is_err());
    }

    #[test]
    fn a_descriptor_that_is_not_listening_is_refused() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&a);
        assert!(is_listening(fd).is_err());
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        assert!(is_listening(std::os::fd::AsRawFd::as_raw_fd(&l)).is_ok());
    }
}
