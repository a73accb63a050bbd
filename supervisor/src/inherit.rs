//! The fast listener hand-off (`child.handoff = "inherit"`): the listening sockets stay
//! open across the child's exec, named in its environment.
//!
//! Pingora 0.9.1's upgrade receiver (`-u`, see [`crate::upgrade`]) sleeps one second when
//! its first `accept()` finds nobody waiting, and steward's connect practically always
//! comes after it: every start, crash recovery and reload cost a second. A child built with
//! steward-pingora needs no `-u`: every Pingora service starts with the bootstrap's shared
//! table of listening descriptors and binds only the addresses missing from it, and the
//! services made through `steward_pingora::Steward` fill it from the descriptors named in
//! [`LISTENERS_ENV`] first. So the child serves steward's own sockets (their backlogs
//! included) as soon as its services start.
//!
//! The protocol, which steward-pingora's `inherit` module reads:
//! - [`LISTENERS_ENV`] = `fd=key fd=key ...`: steward's listening sockets (non-blocking,
//!   as Pingora needs) with the configured keys, the same strings as in the upgrade
//!   hand-off (no whitespace; see [`crate::upgrade::validate`]).
//! - [`REPORT_ENV`] = the write end of a pipe. Once every service has claimed its keys, the
//!   child writes the keys it claimed on one line, closes the descriptors nobody claimed and
//!   closes the pipe. steward probes the child only after that line ([`await_report`]), so
//!   the key-by-key check after the probe (the child must hold every socket) cannot be
//!   passed by a descriptor the child merely inherited. A child that never reports (a stock
//!   Pingora binary, which knows nothing of this) fails its spawn with the reason.
//!
//! Only these descriptors lose close-on-exec, in the child between fork and exec
//! (`child::spawn`); steward's own copies stay close-on-exec, so no `-t` check or
//! other spawn inherits them.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::unistd::Pid;
use tokio::io::AsyncReadExt;

use crate::config::Handoff;
use crate::upgrade::{self, HandoffError};

/// `fd=key fd=key ...`: the listening sockets the child inherits.
pub const LISTENERS_ENV: &str = "STEWARD_LISTENERS";
/// The descriptor number of the pipe the child reports its claimed keys on.
pub const REPORT_ENV: &str = "STEWARD_LISTENERS_REPORT";

/// The longest report read: the keys of at most 32 listeners, as in the upgrade hand-off.
const REPORT_MAX: usize = 4096;

/// What one spawn passes on: the environment and the descriptors to leave open across
/// exec. Dropped after the spawn, which closes steward's write end of the report pipe.
#[derive(Debug)]
pub struct Passed {
    env: Vec<(&'static str, String)>,
    keep_open: Vec<RawFd>,
    _report_write: OwnedFd,
}

impl Passed {
    /// The variables the child gets.
    pub fn env(&self) -> &[(&'static str, String)] {
        &self.env
    }

    /// The descriptors whose close-on-exec flag the child clears before exec.
    pub fn keep_open(&self) -> &[RawFd] {
        &self.keep_open
    }
}

/// How a serving child gets steward's listening sockets.
pub enum Listeners<'a> {
    /// steward holds none: the child binds its own.
    Own,
    /// Pingora's `-u`: the child waits for them on its upgrade socket ([`crate::upgrade`]).
    Upgrade,
    /// Left open across exec and named in its environment (this module).
    Inherit(&'a crate::inherit::Passed),
}

/// The read end of a spawn's report pipe.
#[derive(Debug)]
pub struct Report(OwnedFd);

/// How one generation gets the listeners, decided before its spawn.
#[derive(Debug)]
pub enum Plan {
    /// steward holds no listener.
    Own,
    /// Pingora's `-u` hand-off ([`crate::upgrade::hand_off`] after the spawn).
    Upgrade,
    /// Inherited across exec; the report follows the spawn ([`await_report`]).
    Inherit(Passed, Report),
}

impl Plan {
    /// The plan for `handoff` with steward's listeners `keys` and `fds`.
    pub fn new(handoff: Handoff, keys: &[String], fds: &[RawFd]) -> Result<Plan, HandoffError> {
        if fds.is_empty() {
            return Ok(Plan::Own);
        }
        match handoff {
            Handoff::Upgrade => Ok(Plan::Upgrade),
            Handoff::Inherit => prepare(keys, fds).map(|(p, r)| Plan::Inherit(p, r)),
        }
    }

    /// What `child::spawn` is told.
    pub fn listeners(&self) -> Listeners<'_> {
        match self {
            Plan::Own => Listeners::Own,
            Plan::Upgrade => Listeners::Upgrade,
            Plan::Inherit(passed, _) => Listeners::Inherit(passed),
        }
    }

    /// After the spawn: steward's write end of the report pipe is closed (so the report
    /// ends when the child's does), and the read end, if any, is what is left to wait on.
    pub fn into_report(self) -> Option<Report> {
        match self {
            Plan::Inherit(_, report) => Some(report),
            Plan::Own | Plan::Upgrade => None,
        }
    }
}

/// Checks the keys as the upgrade hand-off does and opens the report pipe.
pub fn prepare(keys: &[String], fds: &[RawFd]) -> Result<(Passed, Report), HandoffError> {
    upgrade::validate(keys, fds)?;
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| HandoffError::Invalid(format!("cannot open the report pipe: {e}")))?;
    let listeners = fds
        .iter()
        .zip(keys)
        .map(|(fd, key)| format!("{fd}={key}"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut keep_open = fds.to_vec();
    keep_open.push(write.as_raw_fd());
    Ok((
        Passed {
            env: vec![
                (LISTENERS_ENV, listeners),
                (REPORT_ENV, write.as_raw_fd().to_string()),
            ],
            keep_open,
            _report_write: write,
        },
        Report(read),
    ))
}

/// Waits for the child `pid` to report the keys it claimed; they are returned as
/// reported (the probe and the key-by-key check that follow decide whether they suffice).
pub async fn await_report(
    report: Report,
    pid: Pid,
    timeout: Duration,
) -> Result<String, HandoffError> {
    let gone = || HandoffError::ChildGone(pid.as_raw());
    let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(report.0)
        .map_err(|e| HandoffError::Invalid(format!("cannot read the report pipe: {e}")))?;
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        loop {
            match rx.read(&mut chunk).await {
                // Every write end closed without a line: the child exited, or closed it.
                Ok(0) => return Err(gone()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => {
                    return Err(HandoffError::Invalid(format!(
                        "reading the report pipe: {e}"
                    )))
                }
            }
            if let Some(end) = buf.iter().position(|&b| b == b'\n') {
                return Ok(String::from_utf8_lossy(&buf[..end]).into_owned());
            }
            if buf.len() > REPORT_MAX {
                return Err(HandoffError::Invalid(format!(
                    "child pid {pid} reported more than {REPORT_MAX} bytes of listener keys"
                )));
            }
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(HandoffError::NoReport {
            pid: pid.as_raw(),
            secs: timeout.as_secs(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::FromRawFd;

    /// The report pipe's write end, as the child would hold it.
    fn child_end(passed: &Passed) -> std::fs::File {
        let fd = nix::unistd::dup(passed._report_write.as_raw_fd()).expect("dup");
        // SAFETY: a fresh duplicate owned by nothing else.
        std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    #[test]
    fn the_environment_names_each_descriptor_with_its_key_and_the_report_pipe() {
        let keys = vec!["127.0.0.1:6188".to_string(), "[::1]:443".to_string()];
        let (passed, _report) = prepare(&keys, &[7, 9]).expect("prepared");
        let w = passed._report_write.as_raw_fd();
        assert_eq!(
            passed.env(),
            &[
                (LISTENERS_ENV, "7=127.0.0.1:6188 9=[::1]:443".to_string()),
                (REPORT_ENV, w.to_string()),
            ]
        );
        assert_eq!(passed.keep_open(), &[7, 9, w]);
    }

    #[test]
    fn keys_are_checked_as_for_the_upgrade_hand_off() {
        assert!(prepare(&["a 1".into()], &[7]).is_err());
        assert!(prepare(&["a:1".into()], &[7, 8]).is_err());
    }

    #[tokio::test]
    async fn the_report_is_the_line_the_child_writes() {
        let (passed, report) = prepare(&["a:1".into()], &[7]).expect("prepared");
        let mut w = child_end(&passed);
        drop(passed);
        w.write_all(b"a:1\n").expect("write");
        let got = await_report(report, Pid::this(), Duration::from_secs(2)).await;
        assert_eq!(got, Ok("a:1".to_string()));
    }

    #[tokio::test]
    async fn a_child_that_closes_the_pipe_without_a_report_is_gone() {
        let (passed, report) = prepare(&["a:1".into()], &[7]).expect("prepared");
        let w = child_end(&passed);
        drop(passed);
        drop(w);
        let got = await_report(report, Pid::this(), Duration::from_secs(2)).await;
        assert!(matches!(got, Err(HandoffError::ChildGone(_))), "{got:?}");
    }

    #[tokio::test]
    async fn a_child_that_never_reports_times_out_with_the_reason() {
        let (passed, report) = prepare(&["a:1".into()], &[7]).expect("prepared");
        let _w = child_end(&passed);
        drop(passed);
        let got = await_report(report, Pid::this(), Duration::from_millis(50)).await;
        let e = got.expect_err("no report");
        assert!(matches!(e, HandoffError::NoReport { .. }), "{e:?}");
        assert!(e.to_string().contains("steward-pingora"), "{e}");
    }
}
