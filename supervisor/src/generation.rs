//! A generation's side work, from its spawn until it serves, as ONE task.
//!
//! Three things happen between a child's spawn and the moment it counts as serving:
//! steward hands it the listeners over its upgrade socket, probes it until it answers on
//! a connection its own processes accepted, and then reads which sockets it holds and
//! what it serves (the snapshot its drain is later counted against). They used to be
//! separate futures in the driver, each cancelled by hand wherever a generation could
//! end; here they are one task owned by the generation's [`Work`] handle, and dropping
//! the handle aborts it. So a generation that exits, drains, is killed or failed to start
//! can never be reported ready, whichever path ended it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use nix::unistd::Pid;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::config::Probe;
use crate::lifecycle::GenId;
use crate::tcp::{self, Snapshot};
use crate::upgrade::{self, HandoffError};
use crate::worker::{Worker, WorkerError};
use crate::{inherit, probe, procfs};

/// How long a child may take to open its upgrade socket (Pingora itself gives up after ~6 s).
pub const HANDOFF_TIMEOUT: Duration = Duration::from_secs(8);
/// One readiness attempt; short, so a connection the old generation took costs little.
const READY_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one look at a generation's sockets may take on the I/O worker.
pub const FACTS_TIMEOUT: Duration = Duration::from_secs(5);

/// The running side work of one generation; dropping it aborts the work.
pub struct Work(JoinHandle<()>);

impl Drop for Work {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the side work found; each is reported at most once, in this order.
#[derive(Debug)]
pub enum Progress {
    /// The child took these listeners over its upgrade socket.
    HandedOver { keys: Vec<String> },
    /// The child answered its probe. `unclaimed`: listeners steward handed over that no
    /// process of the generation holds (a key that matched none of its own addresses).
    Served {
        unclaimed: Vec<String>,
        snap: Snapshot,
    },
    /// The side work cannot go on: the generation did not start.
    Failed { reason: String, code: i32 },
}

/// The hand-off: steward's listeners, and where the child's upgrade socket will be.
pub struct Handoff {
    /// Reaches the socket (see `RuntimeDir::reach`).
    pub path: PathBuf,
    /// Names it in messages.
    pub shown: PathBuf,
    pub keys: Vec<String>,
    pub fds: Vec<std::os::fd::RawFd>,
}

/// Everything the side work needs, taken at spawn.
pub struct Plan {
    pub gen: GenId,
    pub pid: Pid,
    pub handoff: Option<Handoff>,
    pub probe: Probe,
    pub interval: Duration,
    /// Each listener steward handed over, with its socket inode.
    pub listeners: Vec<(String, u64)>,
    /// Ports that are the generation's besides what it binds itself.
    pub extra_ports: Vec<u16>,
    /// With inherited listeners (`child.handoff = "inherit"`), the pipe the child reports
    /// the keys it claimed on; the probe waits for that report ([`crate::inherit`]).
    pub inherited: Option<inherit::Report>,
}

/// Starts the side work on the current `LocalSet`; `report` hears its progress.
pub fn start(plan: Plan, worker: Worker, report: impl Fn(GenId, Progress) + 'static) -> Work {
    let gen = plan.gen;
    Work(tokio::task::spawn_local(async move {
        side_work(plan, worker, |p| report(gen, p)).await
    }))
}

async fn side_work(plan: Plan, worker: Worker, report: impl Fn(Progress)) {
    let Plan {
        gen,
        pid,
        handoff,
        probe,
        interval,
        listeners,
        extra_ports,
        inherited,
    } = plan;
    // Inherited listeners are held from exec on, claimed or not: nothing may count as
    // served (the probe, the check that every listener is held) before the child has
    // closed those it did not claim and said so.
    if let Some(r) = inherited {
        match inherit::await_report(r, pid, HANDOFF_TIMEOUT).await {
            Ok(_) => report(Progress::HandedOver {
                keys: listeners.iter().map(|(k, _)| k.clone()).collect(),
            }),
            Err(e) => return report(failed(e)),
        }
    }
    let handed = async {
        match &handoff {
            Some(h) => upgrade::hand_off(&h.path, &h.shown, &h.keys, &h.fds, pid, HANDOFF_TIMEOUT)
                .await
                .map(|()| Some(h.keys.clone())),
            None => Ok(None),
        }
    };
    let ready = wait_ready(probe, interval, pid.as_raw(), &worker);
    tokio::pin!(handed, ready);
    // Both run at once: a child may answer its probe on a port of its own before it
    // takes steward's listeners. What it holds is read once both are over.
    let (mut handed_done, mut ready_done) = (false, false);
    while !(handed_done && ready_done) {
        tokio::select! {
            r = &mut handed, if !handed_done => {
                handed_done = true;
                match r {
                    Ok(Some(keys)) => report(Progress::HandedOver { keys }),
                    Ok(None) => {}
                    Err(e) => return report(failed(e)),
                }
            }
            () = &mut ready, if !ready_done => ready_done = true,
        }
    }
    report(served(&worker, gen, pid, &listeners, extra_ports).await);
}

fn failed(e: HandoffError) -> Progress {
    Progress::Failed {
        reason: format!("socket hand-off failed: {e}"),
        code: crate::exit::CONFIG,
    }
}

/// After a passed probe: the sockets the generation's group holds, and what it serves.
async fn served(
    worker: &Worker,
    gen: GenId,
    pid: Pid,
    listeners: &[(String, u64)],
    extra: Vec<u16>,
) -> Progress {
    let pid = pid.as_raw();
    let facts: Result<(HashSet<u64>, Snapshot), WorkerError> = worker
        .call(FACTS_TIMEOUT, move |io| {
            (
                procfs::group_socket_inodes(io, pid),
                tcp::snapshot(io, pid, &extra),
            )
        })
        .await;
    match facts {
        Ok((held, snap)) => Progress::Served {
            unclaimed: listeners
                .iter()
                .filter(|(_, ino)| !held.contains(ino))
                .map(|(k, _)| k.clone())
                .collect(),
            snap,
        },
        Err(e) => Progress::Failed {
            reason: format!("cannot read generation {gen}'s sockets: {e}"),
            code: crate::exit::OSERR,
        },
    }
}

/// Probes until the generation serves on a connection its own processes accepted.
async fn wait_ready(probe: Probe, interval: Duration, pgid: i32, worker: &Worker) {
    let mut last = String::new();
    loop {
        match probe::attempt_owned(&probe, pgid, READY_ATTEMPT_TIMEOUT, worker).await {
            Ok(()) => return,
            Err(e) => {
                if e != last {
                    debug!("readiness probe: {e}");
                    last = e;
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}
