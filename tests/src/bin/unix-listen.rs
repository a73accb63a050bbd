//! An attacker's listener for the attack tests: binds a unix stream socket at a path and
//! reports, on stdout, every connection it gets and what came with it, so a test can tell
//! whether steward handed it anything (the listener keys, and descriptors by SCM_RIGHTS).
//!
//! `unix-listen <socket path> [seconds]`: prints `listening <path>` once bound, then one
//! line per connection, `conn bytes=N fds=M payload=<text>`, and exits after `seconds`
//! (default 60). Descriptors it receives are closed at once: it reports, it does not serve.

use std::io::{IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: unix-listen <socket path> [seconds]");
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(60);
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            println!("cannot bind {path}: {e}");
            std::process::exit(1);
        }
    };
    listener.set_nonblocking(true).expect("non-blocking");
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening {path}");
    let _ = out.flush();
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        let conn = match listener.accept() {
            Ok((c, _)) => c,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
        };
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = vec![0u8; 65536];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 64]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let (bytes, fds) = match recvmsg::<UnixAddr>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut fds = 0;
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmRights(v) = c {
                            fds += v.len();
                            for fd in v {
                                // SAFETY: the kernel just installed fd in this process;
                                // nothing else owns it.
                                drop(unsafe { OwnedFd::from_raw_fd(fd) });
                            }
                        }
                    }
                }
                (msg.bytes, fds)
            }
            Err(_) => (0, 0),
        };
        let payload = String::from_utf8_lossy(&buf[..bytes]).into_owned();
        let _ = writeln!(out, "conn bytes={bytes} fds={fds} payload={payload:?}");
        let _ = out.flush();
    }
}
