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
use nix::sys::socket::{getsockopt, sendmsg, sockopt, ControlMessage, MsgFlags, UnixAddr};
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
    /// A child started with inherited listeners (`child.handoff = "inherit"`) did not say
    /// which it claimed.
    #[error("child pid {pid} did not report the listeners it took within {secs} s (child.handoff = \"inherit\" needs a Pingora server built with steward-pingora; a stock Pingora server takes child.handoff = \"upgrade\")")]
    NoReport { pid: i32, secs: u64 },
    /// Someone other than the generation's own processes answered on its upgrade socket.
    #[error("the upgrade socket {path} is held by pid {peer} (uid {uid}), not by child pid {pid} or its process group: steward sent it nothing")]
    Peer {
        path: String,
        peer: i32,
        uid: u32,
        pid: i32,
    },
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

/// Waits for the child's upgrade socket and sends it the listeners, once the kernel says
/// the socket is the child's. `path` reaches the socket (see `RuntimeDir::reach`);
/// `shown` names it in messages.
pub async fn hand_off(
    path: &Path,
    shown: &Path,
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
                    path: shown.display().to_string(),
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
                path: shown.display().to_string(),
                secs: timeout.as_secs(),
            });
        }
        tokio::time::sleep(POLL).await;
    };
    // The listening sockets are steward's most precious descriptors: they go only to the
    // process that bound this socket if it is the child or one of its group (Pingora binds
    // it in its main process).
    let cred = getsockopt(&stream, sockopt::PeerCredentials).map_err(|e| HandoffError::Send {
        path: shown.display().to_string(),
        err: format!("cannot read the peer's credentials: {e}"),
    })?;
    if !is_generation(Pid::from_raw(cred.pid()), pid) {
        return Err(HandoffError::Peer {
            path: shown.display().to_string(),
            peer: cred.pid(),
            uid: cred.uid(),
            pid: pid.as_raw(),
        });
    }
    let iov = [IoSlice::new(payload.as_bytes())];
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<UnixAddr>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).map_err(|e| {
        HandoffError::Send {
            path: shown.display().to_string(),
            err: e.to_string(),
        }
    })?;
    Ok(())
}

/// Whether `peer` is the child `pid` or in its process group (the child is started as
/// the leader of its own group).
fn is_generation(peer: Pid, pid: Pid) -> bool {
    peer == pid || nix::unistd::getpgid(Some(peer)).is_ok_and(|g| g == pid)
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
    use std::os::unix::process::CommandExt;

    /// A fresh scratch directory and the path of an upgrade socket in it (not yet bound).
    fn socket_in_scratch(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("steward-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("upgrade.sock");
        (dir, path)
    }

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
        let (dir, path) = socket_in_scratch("upgrade");
        let l1 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let l2 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let keys = vec!["k1:1".to_string(), "k2:2".to_string()];
        let fds = [l1.as_raw_fd(), l2.as_raw_fd()];
        let receiver = UnixListener::bind(&path).expect("bind unix");
        let me = Pid::this();
        let (sent, received) = tokio::join!(
            hand_off(&path, &path, &keys, &fds, me, Duration::from_secs(2)),
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
            &path,
            &["a:1".into()],
            &[l.as_raw_fd()],
            Pid::this(),
            Duration::from_millis(50),
        )
        .await;
        assert!(matches!(r, Err(HandoffError::Timeout { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn listeners_go_only_to_the_childs_own_upgrade_socket() {
        let (dir, path) = socket_in_scratch("upgrade-peer");
        // The socket is this test process's; the "child" is another process.
        let receiver = UnixListener::bind(&path).expect("bind unix");
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("spawn sleep");
        let child = Pid::from_raw(other.id() as i32);
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let r = hand_off(
            &path,
            &path,
            &["a:1".into()],
            &[l.as_raw_fd()],
            child,
            Duration::from_secs(2),
        )
        .await;
        assert!(
            matches!(&r, Err(HandoffError::Peer { peer, .. }) if *peer == std::process::id() as i32),
            "{r:?}"
        );
        // Nothing arrived: the connection carries no message and no descriptor.
        let (mut conn, _) = receiver.accept().expect("accept");
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut conn, &mut buf).expect("read");
        assert!(buf.is_empty());
        let _ = other.kill();
        let _ = other.wait();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
