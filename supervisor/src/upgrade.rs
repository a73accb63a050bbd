//! Pingora's listener hand-off, from the sender's side.
//!
//! A child started with `-u` creates a unix socket at its `upgrade_sock`, accepts one
//! connection (polling once a second for about 6 s) and reads ONE message: the listener
//! keys joined by single spaces, with the descriptors in the same order as SCM_RIGHTS.
//! Pingora normally receives from its predecessor; steward plays that role for every
//! generation, so the listeners never close. See `../shared/pingora-0.9-facts.md`.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
use nix::unistd::Pid;

/// How often steward looks for the child's upgrade socket.
const POLL: Duration = Duration::from_millis(5);
/// Pingora's receiver limits (transfer_fd: MAX_FDS, payload buffer).
const MAX_FDS: usize = 32;
const MAX_PAYLOAD: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoffError {
    #[error("{0}")]
    Invalid(String),
    #[error("child pid {0} exited before it took the listeners")]
    ChildGone(i32),
    #[error("child pid {pid} did not open its upgrade socket {path} within {secs} s (is it a Pingora server, started with -u?)")]
    Timeout { pid: i32, path: String, secs: u64 },
    #[error("sending the listeners to {path}: {err}")]
    Send { path: String, err: String },
}

/// Checks the keys against Pingora's receiver before anything is sent: a mismatch would
/// panic the child or silently drop listeners.
pub fn validate(keys: &[String], fds: &[RawFd]) -> Result<String, HandoffError> {
    if keys.len() != fds.len() {
        return Err(HandoffError::Invalid(format!(
            "{} keys for {} descriptors",
            keys.len(),
            fds.len()
        )));
    }
    if fds.len() > MAX_FDS {
        return Err(HandoffError::Invalid(format!(
            "{} listeners; Pingora accepts at most {MAX_FDS}",
            fds.len()
        )));
    }
    if let Some(k) = keys
        .iter()
        .find(|k| k.is_empty() || k.contains(char::is_whitespace))
    {
        return Err(HandoffError::Invalid(format!(
            "listener key {k:?} is empty or has spaces; keys are joined by spaces"
        )));
    }
    let payload = keys.join(" ");
    if payload.len() > MAX_PAYLOAD {
        return Err(HandoffError::Invalid(format!(
            "listener keys take {} bytes; Pingora reads at most {MAX_PAYLOAD}",
            payload.len()
        )));
    }
    Ok(payload)
}

/// Waits for the child's upgrade socket and sends it the listeners.
pub async fn hand_off(
    path: &Path,
    keys: &[String],
    fds: &[RawFd],
    pid: Pid,
    timeout: Duration,
) -> Result<(), HandoffError> {
    let payload = validate(keys, fds)?;
    let end = tokio::time::Instant::now() + timeout;
    let stream = loop {
        match UnixStream::connect(path) {
            Ok(s) => break s,
            Err(e)
                if matches!(
                    e.raw_os_error().map(Errno::from_raw),
                    Some(Errno::ENOENT | Errno::ECONNREFUSED | Errno::EACCES)
                ) => {}
            Err(e) => {
                return Err(HandoffError::Send {
                    path: path.display().to_string(),
                    err: e.to_string(),
                })
            }
        }
        if nix::sys::signal::kill(pid, None).is_err() || has_exited(pid) {
            return Err(HandoffError::ChildGone(pid.as_raw()));
        }
        if tokio::time::Instant::now() >= end {
            return Err(HandoffError::Timeout {
                pid: pid.as_raw(),
                path: path.display().to_string(),
                secs: timeout.as_secs(),
            });
        }
        tokio::time::sleep(POLL).await;
    };
    let iov = [IoSlice::new(payload.as_bytes())];
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<UnixAddr>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).map_err(|e| {
        HandoffError::Send {
            path: path.display().to_string(),
            err: e.to_string(),
        }
    })?;
    Ok(())
}

/// Whether steward's child `pid` has exited (it may not be reaped yet); asks the kernel,
/// not /proc, and reaps nothing.
fn has_exited(pid: Pid) -> bool {
    // SAFETY: waitid only writes into the siginfo_t it is given, which lives on this
    // stack frame; WNOWAIT leaves the child to be reaped by the main loop.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid.as_raw() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // Not steward's child (r != 0, ECHILD): nothing to tell; the caller's kill(pid, 0)
    // knows whether it exists.
    // SAFETY: si_pid is set by waitid when a child changed state, and zero otherwise.
    r == 0 && unsafe { info.si_pid() } != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn keys_and_descriptors_must_pair_up() {
        assert!(validate(&["a:1".into()], &[3, 4]).is_err());
        assert_eq!(
            validate(&["a:1".into(), "b:2".into()], &[3, 4]),
            Ok("a:1 b:2".into())
        );
    }

    #[test]
    fn keys_with_spaces_are_refused() {
        assert!(validate(&["a 1".into()], &[3]).is_err());
    }

    #[tokio::test]
    async fn listeners_arrive_with_their_keys_in_one_message() {
        let dir = std::env::temp_dir().join(format!("steward-upgrade-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("upgrade.sock");
        let _ = std::fs::remove_file(&path);
        let l1 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let l2 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let keys = vec!["k1:1".to_string(), "k2:2".to_string()];
        let fds = [l1.as_raw_fd(), l2.as_raw_fd()];
        let receiver = UnixListener::bind(&path).expect("bind unix");
        let me = Pid::this();
        let (sent, received) = tokio::join!(
            hand_off(&path, &keys, &fds, me, Duration::from_secs(2)),
            tokio::task::spawn_blocking(move || {
                let (conn, _) = receiver.accept().expect("accept");
                let mut buf = [0u8; 64];
                let mut cmsg = nix::cmsg_space!([RawFd; 4]);
                let mut iov = [std::io::IoSliceMut::new(&mut buf)];
                let msg = nix::sys::socket::recvmsg::<UnixAddr>(
                    conn.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::empty(),
                )
                .expect("recvmsg");
                let n = msg.bytes;
                let fds: Vec<RawFd> = msg
                    .cmsgs()
                    .expect("cmsgs")
                    .flat_map(|c| match c {
                        nix::sys::socket::ControlMessageOwned::ScmRights(f) => f,
                        _ => vec![],
                    })
                    .collect();
                (String::from_utf8_lossy(&buf[..n]).into_owned(), fds.len())
            })
        );
        assert_eq!(sent, Ok(()));
        assert_eq!(received.expect("join"), ("k1:1 k2:2".to_string(), 2));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_child_that_never_listens_times_out_with_the_reason() {
        let path = std::env::temp_dir().join(format!("steward-nosock-{}", std::process::id()));
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let r = hand_off(
            &path,
            &["a:1".into()],
            &[l.as_raw_fd()],
            Pid::this(),
            Duration::from_millis(50),
        )
        .await;
        assert!(matches!(r, Err(HandoffError::Timeout { .. })), "{r:?}");
    }
}
