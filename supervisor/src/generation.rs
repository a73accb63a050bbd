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
use tracing::{debug, info};

use crate::config::Probe;
use crate::lifecycle::{Event, GenId, Unclaimed};
use crate::tcp::{self, DrainCount, Snapshot};
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

/// What the side work found: one of these, once (the hand-off itself is only logged).
#[derive(Debug)]
pub enum Progress {
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
            Ok(_) => info!(
                steward_event = "handed-over",
                steward_generation = gen,
                "generation {gen}: listeners handed over ({})",
                listeners
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
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
                    Ok(Some(keys)) => info!(
                        steward_event = "handed-over",
                        steward_generation = gen,
                        "generation {gen}: listeners handed over ({})",
                        keys.join(" ")
                    ),
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

/// What the driver holds of each running generation: its child's pid, what it serves,
/// the configuration it runs when that is a reload's candidate, and its side work.
#[derive(Default)]
pub struct Generations(std::collections::HashMap<GenId, Held>);

struct Held {
    pid: Pid,
    /// What it serves (ports, listeners), taken once it serves or before its SIGTERM:
    /// its requests in flight are its downstream connections on these ports.
    snap: Option<Snapshot>,
    /// Adopted as the running configuration once the reload that started it succeeds.
    candidate: Option<crate::config::Config>,
    /// Dropping it cancels the side work.
    work: Option<Work>,
}

impl Generations {
    pub fn insert(
        &mut self,
        gen: GenId,
        pid: Pid,
        candidate: Option<crate::config::Config>,
        work: Option<Work>,
    ) {
        let held = Held {
            pid,
            snap: None,
            candidate,
            work,
        };
        self.0.insert(gen, held);
    }

    pub fn contains(&self, gen: GenId) -> bool {
        self.0.contains_key(&gen)
    }

    /// The generation whose child `pid` is, taken out of the table.
    pub fn remove_child(&mut self, pid: Pid) -> Option<GenId> {
        let gen = self.0.iter().find(|(_, h)| h.pid == pid).map(|(g, _)| *g)?;
        self.0.remove(&gen);
        Some(gen)
    }

    /// Takes the generation out of the table; its child's pid.
    pub fn remove(&mut self, gen: GenId) -> Option<Pid> {
        self.0.remove(&gen).map(|h| h.pid)
    }

    /// What it serves is known now (the first snapshot stays); `false`: no such generation.
    pub fn snapshot(&mut self, gen: GenId, snap: Snapshot) -> bool {
        let Some(h) = self.0.get_mut(&gen) else {
            return false;
        };
        h.snap.get_or_insert(snap);
        true
    }

    /// It serves: its side work ends, and what that work found is the machine's event,
    /// ready or (listeners of `config` it did not claim) rejected.
    pub fn served(
        &mut self,
        gen: GenId,
        snap: Snapshot,
        unclaimed: Vec<String>,
        config: &std::path::Path,
    ) -> Event {
        self.snapshot(gen, snap);
        self.settle(gen);
        if unclaimed.is_empty() {
            return Event::Ready { gen };
        }
        let listeners = Unclaimed {
            keys: unclaimed,
            config: config.to_path_buf(),
        };
        Event::Unclaimed { gen, listeners }
    }

    /// A drain poll's counts as events, for the generations still here (one that exited
    /// meanwhile has nothing left to count).
    pub fn drain_events(&self, counts: Vec<(GenId, DrainCount)>) -> Vec<Event> {
        counts
            .into_iter()
            .filter(|(gen, _)| self.contains(*gen))
            .map(|(gen, count)| Event::Drain {
                gen,
                in_flight: count.in_flight,
                closed: count.closed,
            })
            .collect()
    }

    /// Its side work ends (it served, drains or is killed); its pid, and whether what it
    /// serves is still unknown.
    pub fn settle(&mut self, gen: GenId) -> Option<(Pid, bool)> {
        let h = self.0.get_mut(&gen)?;
        h.work = None;
        Some((h.pid, h.snap.is_none()))
    }

    /// The configuration it runs, if it was a reload's candidate.
    pub fn take_candidate(&mut self, gen: GenId) -> Option<crate::config::Config> {
        self.0.get_mut(&gen)?.candidate.take()
    }

    /// Pid and snapshot of each of `gens` whose snapshot has arrived.
    pub fn drain_targets(&self, gens: impl Iterator<Item = GenId>) -> Vec<(GenId, i32, Snapshot)> {
        gens.filter_map(|g| {
            let h = self.0.get(&g)?;
            Some((g, h.pid.as_raw(), h.snap.clone()?))
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn table(gens: &[GenId]) -> Generations {
        let mut t = Generations::default();
        for &gen in gens {
            t.insert(gen, Pid::from_raw(1000 + gen as i32), None, None);
        }
        t
    }

    #[test]
    fn a_generation_that_serves_and_claimed_every_listener_is_ready() {
        let mut t = table(&[1]);
        let ev = t.served(
            1,
            Snapshot::default(),
            vec![],
            Path::new("/etc/steward.toml"),
        );
        assert_eq!(ev, Event::Ready { gen: 1 });
    }

    #[test]
    fn a_generation_that_serves_but_left_listeners_unclaimed_is_reported_with_them() {
        let mut t = table(&[2]);
        let keys = vec!["0.0.0.0:8080".to_string()];
        let ev = t.served(2, Snapshot::default(), keys.clone(), Path::new("/c.toml"));
        let listeners = Unclaimed {
            keys,
            config: "/c.toml".into(),
        };
        assert_eq!(ev, Event::Unclaimed { gen: 2, listeners });
    }

    #[test]
    fn a_drain_count_for_a_generation_that_exited_meanwhile_is_dropped() {
        let t = table(&[3]);
        let count = |in_flight| DrainCount {
            in_flight,
            closed: false,
        };
        let events = t.drain_events(vec![(3, count(4)), (2, count(7))]);
        assert_eq!(
            events,
            vec![Event::Drain {
                gen: 3,
                in_flight: 4,
                closed: false
            }]
        );
    }
}
