//! The state a steward hands to its successor when it re-executes itself in place (a new
//! steward binary was installed, and a reload asked for it: reexec.rs).
//!
//! The successor is the same process (same pid, so systemd's MAINPID never changes) running
//! the new program image: everything in memory is gone, every descriptor without
//! close-on-exec is still open under the same number. So the hand-over is a small,
//! self-describing JSON document in a memfd, whose descriptor number the successor finds
//! in [`ENV`]; the descriptors it names (listeners, the control socket, the control
//! connections waiting for the reload's answer) are referenced by number and checked to
//! be open before anything is built on them.
//!
//! Re-exec happens only from a steady state (serving, one generation, nothing pending), so
//! the state is small: the listeners, the one running generation, the counters the crash
//! limit and `steward status` use, and who waits for the answer. Everything else (the
//! deadline, the cgroups, the runtime directory, the configuration) the successor derives
//! again as at any start.
//!
//! The document carries a `version`. A successor refuses one it does not know with a clear
//! error ([`HandoverError::Unsupported`]); since a refusal after the exec would lose the
//! steward, the old steward first asks the new binary, out of process, whether it accepts
//! this version (`steward handover-check`), and execs only when it does.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The format this build writes and reads.
pub const VERSION: u32 = 1;
/// The environment variable naming the hand-over's descriptor in the successor.
pub const ENV: &str = "STEWARD_HANDOVER_FD";
/// The largest hand-over read: a few listeners and waiters are a few hundred bytes.
const MAX_SIZE: u64 = 1024 * 1024;

/// A listening socket steward owns, under its hand-off key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    pub key: String,
    pub fd: RawFd,
    pub port: u16,
}

/// The generation that serves, adopted as it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub id: u64,
    /// The child's pid, also its process group (each generation has its own).
    pub pid: u32,
    /// How long ago it was spawned, and has served.
    pub spawned_ms_ago: u64,
    pub serving_ms: u64,
}

/// The counters that outlive a re-exec, as the crash limit and `steward status` use them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// The last generation number given: the successor's next one follows it.
    pub last_gen: u64,
    pub restarts: u32,
    pub consecutive_crashes: u32,
    /// When each crash counted by the crash limit happened, as ages in ms.
    pub crash_ages_ms: Vec<u64>,
    pub health_passed: u64,
    pub health_failed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    pub version: u32,
    /// The configuration file the predecessor ran with (the successor's argv names it too).
    pub config: PathBuf,
    /// How long steward (the process) has run, for `steward status`.
    pub uptime_ms: u64,
    /// The control socket's listening descriptor.
    pub control_fd: RawFd,
    pub listeners: Vec<Listener>,
    pub generation: Generation,
    pub counters: Counters,
    /// Control connections waiting for the answer of the reload that caused the re-exec:
    /// the successor answers them when its reload is over.
    pub waiters: Vec<RawFd>,
}

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("hand-over format version {found} is not one this steward reads (it reads version {VERSION})")]
    Unsupported { found: u64 },
    #[error("the hand-over is not a steward hand-over: {0}")]
    Malformed(String),
    #[error("the hand-over names descriptor {fd} ({what}), which {problem}")]
    BadFd {
        fd: RawFd,
        what: String,
        problem: &'static str,
    },
    #[error("{ENV}={0:?} is not a descriptor number")]
    BadEnv(String),
    #[error("cannot {action} the hand-over: {source}")]
    Io {
        action: &'static str,
        source: std::io::Error,
    },
}

impl Handover {
    /// The JSON document.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain structs with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a document: the version first, so a newer format is refused as such rather
    /// than as garbage; then the whole, then every descriptor it names is checked.
    pub fn decode(bytes: &[u8]) -> Result<Handover, HandoverError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| HandoverError::Malformed(e.to_string()))?;
        let found = value
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| HandoverError::Malformed("no numeric \"version\" field".into()))?;
        if found != u64::from(VERSION) {
            return Err(HandoverError::Unsupported { found });
        }
        let h: Handover =
            serde_json::from_value(value).map_err(|e| HandoverError::Malformed(e.to_string()))?;
        h.validate_fds()?;
        Ok(h)
    }

    /// Every descriptor named must be open, above stdio, named once, and the listeners and
    /// the control socket must be sockets: a descriptor the successor would wrap in an
    /// owner must be exactly the one the predecessor meant.
    fn validate_fds(&self) -> Result<(), HandoverError> {
        let named = std::iter::once((self.control_fd, "the control socket".to_string()))
            .chain(
                self.listeners
                    .iter()
                    .map(|l| (l.fd, format!("listener {}", l.key))),
            )
            .chain(
                self.waiters
                    .iter()
                    .map(|&fd| (fd, "a waiting control connection".to_string())),
            );
        let mut seen = std::collections::HashSet::new();
        for (fd, what) in named {
            let bad = |problem| HandoverError::BadFd {
                fd,
                what: what.clone(),
                problem,
            };
            if fd <= 2 {
                return Err(bad("is standard input, output or error"));
            }
            if !seen.insert(fd) {
                return Err(bad("is named twice"));
            }
            let stat = nix::sys::stat::fstat(fd).map_err(|_| bad("is not open"))?;
            if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
                return Err(bad("is not a socket"));
            }
        }
        Ok(())
    }

    /// The descriptors the successor must inherit (close-on-exec cleared just before the
    /// exec).
    pub fn fds(&self) -> Vec<RawFd> {
        std::iter::once(self.control_fd)
            .chain(self.listeners.iter().map(|l| l.fd))
            .chain(self.waiters.iter().copied())
            .collect()
    }

    /// The document in a fresh memfd (close-on-exec, rewound), for [`ENV`] to name.
    pub fn to_memfd(&self) -> Result<OwnedFd, HandoverError> {
        let io = |action| move |source| HandoverError::Io { action, source };
        // SAFETY: memfd_create with a constant NUL-terminated name and flags; the result
        // is checked before it is owned.
        let raw = unsafe { libc::memfd_create(c"steward-handover".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io("create")(std::io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a descriptor just created and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut file = std::fs::File::from(fd);
        file.write_all(&self.encode()).map_err(io("write"))?;
        file.seek(SeekFrom::Start(0)).map_err(io("rewind"))?;
        Ok(OwnedFd::from(file))
    }

    /// Reads a hand-over from the descriptor `fd` (consumed and closed).
    pub fn read_fd(fd: OwnedFd) -> Result<Handover, HandoverError> {
        let mut bytes = vec![];
        std::fs::File::from(fd)
            .take(MAX_SIZE)
            .read_to_end(&mut bytes)
            .map_err(|source| HandoverError::Io {
                action: "read",
                source,
            })?;
        Handover::decode(&bytes)
    }

    /// The hand-over of a predecessor, if this process is a successor: [`ENV`] names its
    /// descriptor. The variable is removed, so no child and no later re-exec sees it.
    /// Call before any thread starts (the environment is changed).
    pub fn from_env() -> Option<Result<Handover, HandoverError>> {
        let value = std::env::var(ENV).ok()?;
        std::env::remove_var(ENV);
        let fd: RawFd = match value.parse() {
            Ok(fd) if fd > 2 => fd,
            _ => return Some(Err(HandoverError::BadEnv(value))),
        };
        if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_err() {
            return Some(Err(HandoverError::BadFd {
                fd,
                what: ENV.to_string(),
                problem: "is not open",
            }));
        }
        // SAFETY: the predecessor opened `fd` for this process alone and named it in ENV;
        // it was just checked to be open, and nothing in this process has taken it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        debug_assert_eq!(owned.as_raw_fd(), fd);
        Some(Handover::read_fd(owned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-over naming real, open sockets (kept alive by the returned owners).
    fn sample() -> (Handover, Vec<OwnedFd>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let control = OwnedFd::from(a);
        let waiter = OwnedFd::from(b);
        let listener = OwnedFd::from(listener);
        let h = Handover {
            version: VERSION,
            config: PathBuf::from("/etc/steward/steward.toml"),
            uptime_ms: 12_345,
            control_fd: control.as_raw_fd(),
            listeners: vec![Listener {
                key: format!("127.0.0.1:{port}"),
                fd: listener.as_raw_fd(),
                port,
            }],
            generation: Generation {
                id: 3,
                pid: 4242,
                spawned_ms_ago: 9000,
                serving_ms: 8000,
            },
            counters: Counters {
                last_gen: 3,
                restarts: 2,
                consecutive_crashes: 1,
                crash_ages_ms: vec![5000, 700],
                health_passed: 10,
                health_failed: 1,
            },
            waiters: vec![waiter.as_raw_fd()],
        };
        (h, vec![control, waiter, listener])
    }

    #[test]
    fn a_handover_reads_back_as_it_was_written() {
        let (h, _keep) = sample();
        assert_eq!(Handover::decode(&h.encode()).expect("decodes"), h);
    }

    #[test]
    fn a_handover_reads_back_through_its_memfd() {
        let (h, _keep) = sample();
        let fd = h.to_memfd().expect("memfd");
        assert_eq!(Handover::read_fd(fd).expect("reads"), h);
    }

    #[test]
    fn a_future_version_is_refused_as_such() {
        let (h, _keep) = sample();
        let mut v: serde_json::Value = serde_json::from_slice(&h.encode()).expect("json");
        v["version"] = serde_json::json!(2);
        // A future format may change every other field: only the version is read first.
        v["listeners"] = serde_json::json!("something else entirely");
        let err = Handover::decode(v.to_string().as_bytes()).expect_err("refused");
        assert!(
            matches!(err, HandoverError::Unsupported { found: 2 }),
            "{err}"
        );
        assert!(err.to_string().contains("version 2"), "{err}");
    }

    #[test]
    fn garbage_is_refused_cleanly() {
        for bytes in [
            &b""[..],
            b"\x00\xff not json",
            b"[1,2,3]",
            b"{\"version\":\"1\"}",
            b"{\"version\":1}",
        ] {
            let err = Handover::decode(bytes).expect_err("refused");
            assert!(matches!(err, HandoverError::Malformed(_)), "{err}");
        }
    }

    #[test]
    fn a_closed_descriptor_is_refused() {
        let (mut h, _keep) = sample();
        // A number no descriptor of this process can have (above its hard open-file
        // limit): closing a real one would race the other tests' threads, which may be
        // given the same number again at once.
        let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .expect("getrlimit");
        let closed = RawFd::try_from(hard)
            .unwrap_or(RawFd::MAX - 1)
            .min(RawFd::MAX - 1)
            + 1;
        h.waiters = vec![closed];
        let err = Handover::decode(&h.encode()).expect_err("refused");
        assert!(
            matches!(err, HandoverError::BadFd { fd, problem: "is not open", .. } if fd == closed),
            "{err}"
        );
    }

    #[test]
    fn a_descriptor_that_is_not_a_socket_is_refused() {
        let (mut h, _keep) = sample();
        let file = std::fs::File::open("/proc/self/status").expect("file");
        h.listeners[0].fd = file.as_raw_fd();
        let err = Handover::decode(&h.encode()).expect_err("refused");
        assert!(
            matches!(
                err,
                HandoverError::BadFd {
                    problem: "is not a socket",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_descriptor_named_twice_or_stdio_is_refused() {
        let (mut h, _keep) = sample();
        h.waiters = vec![h.control_fd];
        let err = Handover::decode(&h.encode()).expect_err("refused");
        assert!(
            matches!(
                err,
                HandoverError::BadFd {
                    problem: "is named twice",
                    ..
                }
            ),
            "{err}"
        );
        let (mut h, _keep) = sample();
        h.control_fd = 1;
        assert!(Handover::decode(&h.encode()).is_err());
    }
}
