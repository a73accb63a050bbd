//! The I/O worker: the one thread that does steward's blocking work.
//!
//! steward's event loop is one thread (the child's parent-death signal is tied to the
//! thread that forked it), so anything slow on it delays signals, reaps, the stop
//! deadline and every probe. Reading the kernel's socket tables, `/proc`, cgroup files,
//! configuration files and a child's `-t` output can be slow on a busy host, or hang
//! outright (a FIFO at a configuration path). So all of it runs here: the loop sends a
//! job and awaits its answer with a timeout, and keeps serving meanwhile.
//!
//! The modules that block ([`procfs`](super::procfs), [`tcp`](super::tcp), [`sockdiag`](super::sockdiag), the
//! kill loops of [`child`](super::child) and [`cgroup`](super::cgroup)) take an [`Io`], which only
//! this thread owns: code on the loop has none to pass, so it cannot call them by
//! mistake. The thread is started before anything else and lives as long as steward: a
//! child that fills the unit's pids limit cannot leave steward unable to create it.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::sockdiag::SockDiag;
use crate::sockdiag::TcpSock;

type Job = Box<dyn FnOnce(&mut Io) + Send>;

/// The worker's context: what only the worker thread may use.
pub struct Io {
    /// The netlink socket, or why there is none (then `/proc/net/tcp` is read instead).
    pub(crate) diag: Result<SockDiag, String>,
    /// Per generation: the connections its drain still waits for.
    pub(crate) drains: HashMap<u64, DrainTrack>,
}

impl Io {
    fn new() -> Io {
        // An operator's way out, should netlink misbehave somewhere: STEWARD_SOCK_DIAG=off.
        let diag = match std::env::var("STEWARD_SOCK_DIAG").as_deref() {
            Ok("off") => Err("turned off by STEWARD_SOCK_DIAG=off".to_string()),
            _ => SockDiag::open().map_err(|e| e.to_string()),
        };
        if let Err(e) = &diag {
            tracing::warn!(
                steward_sockets = "procfs",
                "netlink sock_diag is not available ({e}): reading /proc/net/tcp instead, which costs more the more sockets the host has (allow AF_NETLINK in RestrictAddressFamilies=)"
            );
        }
        Io {
            diag,
            drains: HashMap::new(),
        }
    }

    /// An `Io` for tests, which run blocking code on their own thread.
    #[cfg(test)]
    pub fn for_tests() -> Io {
        Io::new()
    }

    /// An `Io` for tests of the `/proc/net/tcp` fallback.
    #[cfg(test)]
    pub fn for_tests_without_netlink() -> Io {
        Io {
            diag: Err("not in this test".into()),
            drains: HashMap::new(),
        }
    }

    /// Which source of socket facts this worker uses: "netlink" or "procfs".
    pub fn source(&self) -> &'static str {
        if self.diag.is_ok() {
            "netlink"
        } else {
            "procfs"
        }
    }
}

/// A draining generation's state between polls, kept here for [`tcp::drain`](super::tcp::drain).
#[derive(Debug, Default)]
pub struct DrainTrack {
    /// Once its listeners are closed, the connections still in flight: the only ones
    /// left to watch, each with one exact lookup per poll.
    pub(crate) pending: Option<Vec<TcpSock>>,
    /// While it still holds a listener: since when, and when its connections were last
    /// counted.
    pub(crate) open_since: Option<std::time::Instant>,
    pub(crate) counted_at: Option<std::time::Instant>,
}

/// Why a job gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkerError {
    #[error("steward's I/O worker did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("steward's I/O worker is gone")]
    Gone,
}

/// The loop's handle on the worker.
#[derive(Clone)]
pub struct Worker {
    tx: mpsc::Sender<Job>,
}

impl Worker {
    /// Starts the worker thread.
    pub fn start() -> std::io::Result<Worker> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("steward-io".into())
            .spawn(move || {
                let mut io = Io::new();
                while let Ok(job) = rx.recv() {
                    // A job that panics loses its answer (the caller sees Gone), not the
                    // worker: every later job still runs.
                    if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut io))).is_err() {
                        tracing::error!("a job of steward's I/O worker panicked");
                    }
                }
            })?;
        Ok(Worker { tx })
    }

    /// Runs `f` on the worker; its answer, or why there is none within `timeout`. A job
    /// that times out still runs to its end: jobs are bounded, and the next ones queue.
    pub async fn call<T, F>(&self, timeout: Duration, f: F) -> Result<T, WorkerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Io) -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Box::new(move |io| {
                let _ = tx.send(f(io));
            }))
            .map_err(|_| WorkerError::Gone)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(WorkerError::Gone),
            Err(_) => Err(WorkerError::Timeout(timeout)),
        }
    }

    /// Runs `f` on the worker without waiting for it.
    pub fn send<F>(&self, f: F)
    where
        F: FnOnce(&mut Io) + Send + 'static,
    {
        let _ = self.tx.send(Box::new(f));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_runs_on_the_worker_and_its_answer_comes_back() {
        let w = Worker::start().expect("worker");
        let main = std::thread::current().id();
        let other = w
            .call(Duration::from_secs(5), move |_| {
                std::thread::current().id() != main
            })
            .await;
        assert_eq!(other, Ok(true));
    }

    #[tokio::test]
    async fn a_slow_job_times_out_and_the_worker_keeps_answering() {
        let w = Worker::start().expect("worker");
        let slow = w
            .call(Duration::from_millis(20), |_| {
                std::thread::sleep(Duration::from_millis(200))
            })
            .await;
        assert_eq!(slow, Err(WorkerError::Timeout(Duration::from_millis(20))));
        assert_eq!(w.call(Duration::from_secs(5), |_| 7).await, Ok(7));
    }

    #[tokio::test]
    async fn a_job_that_panics_does_not_end_the_worker() {
        let w = Worker::start().expect("worker");
        let r: Result<(), _> = w
            .call(Duration::from_secs(5), |_| panic!("a bug in a job"))
            .await;
        assert_eq!(r, Err(WorkerError::Gone));
        assert_eq!(w.call(Duration::from_secs(5), |_| 1).await, Ok(1));
    }
}
