//! The driver with a fake child behind [`Effects`]: signals, the control socket and the
//! child's answers go in, and what the driver did to the (fake) world comes out. Time is
//! paused, so deadlines and backoffs pass without waiting.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::*;
use crate::deadline::Source;
use crate::effects::{BoxFuture, NotStarted, Spawned};
use crate::exit;
use crate::lifecycle::ChildStatus;
use crate::startup;
use crate::tcp::{DrainCount, Snapshot};

/// The fake world: what the driver did, in order, and a child that behaves as told.
#[derive(Default)]
struct World {
    did: Vec<String>,
    exits: Vec<(Pid, ChildStatus)>,
    /// The child exits by itself on SIGTERM (else only a kill ends it).
    exit_on_term: bool,
    /// Requests each drain count finds in flight.
    in_flight: usize,
    /// The reload's `-t` run fails with this.
    check_fails: Option<String>,
}

struct Fake {
    world: Rc<RefCell<World>>,
    done: mpsc::UnboundedSender<Done>,
    sigchld: mpsc::UnboundedSender<Received>,
}

fn pid_of(gen: GenId) -> Pid {
    Pid::from_raw(1000 + gen as i32)
}

impl Fake {
    fn did(&self, what: String) {
        self.world.borrow_mut().did.push(what);
    }

    fn exit(&self, pid: Pid, status: ChildStatus) {
        self.world.borrow_mut().exits.push((pid, status));
        let _ = self.sigchld.send(Received::Child);
    }
}

impl Effects for Fake {
    fn spawn(
        &mut self,
        gen: GenId,
        why: Why,
        cfg: &Config,
        conf: Conf,
    ) -> Result<Spawned, NotStarted> {
        self.did(format!(
            "spawn {gen} {why:?} {conf:?} {}",
            cfg.child.program.display()
        ));
        Ok(Spawned {
            pid: pid_of(gen),
            work: None,
        })
    }
    fn terminate(&mut self, gen: GenId, pid: Pid, _: &Config, _: bool) {
        self.did(format!("SIGTERM {gen}"));
        if self.world.borrow().exit_on_term {
            self.exit(pid, ChildStatus::Code(0));
        }
    }
    fn kill(&mut self, kill: Kill) {
        let reason = kill.reason.map(|r| r.as_str()).unwrap_or("failed start");
        self.did(format!("SIGKILL {} ({reason})", kill.gen));
        let _ = self.done.send(Done::Killed(kill, Ok(1)));
        self.exit(Pid::from_raw(kill.pid), ChildStatus::Signal(9));
    }
    fn reap(&mut self) -> Vec<(Pid, ChildStatus)> {
        std::mem::take(&mut self.world.borrow_mut().exits)
    }
    fn forget(&mut self, _: GenId) {}
    fn count_drain(&mut self, targets: Vec<(GenId, i32, Snapshot)>) {
        let in_flight = self.world.borrow().in_flight;
        let counts = targets
            .into_iter()
            .map(|(gen, _, _)| {
                (
                    gen,
                    DrainCount {
                        in_flight,
                        closed: true,
                    },
                )
            })
            .collect();
        let _ = self.done.send(Done::Drained(counts));
    }
    fn notify(&mut self, notice: Notice<'_>) {
        if notice != Notice::Watchdog {
            self.did(format!("{notice:?}"));
        }
    }
    fn prepare_check(&mut self, cfg: &Config) {
        let mut new = cfg.clone();
        new.child.program = PathBuf::from("/bin/new");
        let prepared = Ok((Box::new(new), PathBuf::from("next.yaml")));
        let _ = self.done.send(Done::CheckPrepared(prepared));
    }
    fn run_check(&mut self, cfg: &Config, _: &Path) -> Result<(), String> {
        self.did(format!("check {}", cfg.child.program.display()));
        let result = self.world.borrow().check_fails.clone().map_or(Ok(()), Err);
        let _ = self.done.send(Done::Event(Event::ConfigChecked(result)));
        Ok(())
    }
    fn abandon_check(&mut self, _: &Config) {}
    fn health_probe(&mut self, _: &Config, _: u32) -> BoxFuture<Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    fn forward(&mut self, sig: Signal, pid: Option<u32>) {
        self.did(format!("forward {sig} to {pid:?}"));
    }
    fn close_sockets(&mut self) {
        self.did("close listeners".into());
    }
    fn install_next_conf(&mut self) {
        self.did("install next conf".into());
    }
    fn final_cleanup(&mut self) -> BoxFuture<(usize, usize)> {
        Box::pin(async { (0, 0) })
    }
}

/// A running driver and the ends of its inputs.
struct Harness {
    world: Rc<RefCell<World>>,
    signals: mpsc::UnboundedSender<Received>,
    control: mpsc::Sender<Request>,
    done: mpsc::UnboundedSender<Done>,
    driver: JoinHandle<i32>,
}

fn config() -> Config {
    let text = "[child]\ncommand = [\"/bin/sh\"]\n[ready]\ntcp = \"127.0.0.1:1\"\n";
    Config::parse(Path::new("/etc/steward/steward.toml"), text).expect("test config")
}

fn start(world: World) -> Harness {
    start_full(world, vec![])
}

/// A driver that heard `early` during its start-up.
fn start_with_early(early: Vec<Received>) -> Harness {
    start_full(World::default(), early)
}

fn start_full(world: World, early: Vec<Received>) -> Harness {
    let world = Rc::new(RefCell::new(world));
    let (sig_tx, sig_rx) = mpsc::unbounded_channel();
    let (ctl_tx, ctl_rx) = mpsc::channel(4);
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let fake = Fake {
        world: world.clone(),
        done: done_tx.clone(),
        sigchld: sig_tx.clone(),
    };
    let config = config();
    let deadline = Deadline {
        value: Some(Duration::from_secs(10)),
        margin: Duration::from_secs(5),
        source: Source::Config,
        warning: None,
    };
    let setup = Setup {
        policy: startup::policy(&config, &deadline),
        config,
        deadline,
        netlink: true,
        watchdog: None,
        early,
    };
    let driver = tokio::task::spawn_local(Driver::new(fake, setup).run(sig_rx, ctl_rx, done_rx));
    Harness {
        world,
        signals: sig_tx,
        control: ctl_tx,
        done: done_tx,
        driver,
    }
}

impl Harness {
    /// Lets the driver run until it waits (paused time moves on by a millisecond).
    async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    fn did(&self) -> Vec<String> {
        self.world.borrow().did.clone()
    }

    /// Where the first thing the driver did that starts with `prefix` is, if anywhere.
    fn position(&self, prefix: &str) -> Option<usize> {
        self.did().iter().position(|d| d.starts_with(prefix))
    }

    fn cleared(&self) {
        self.world.borrow_mut().did.clear();
    }

    /// Generation `gen` answers its probe and holds every listener except `unclaimed`.
    async fn serves(&self, gen: GenId, unclaimed: &[&str]) {
        let unclaimed = unclaimed.iter().map(|s| s.to_string()).collect();
        let snap = Snapshot::default();
        let _ = self
            .done
            .send(Done::Gen(gen, Progress::Served { unclaimed, snap }));
        self.settle().await;
    }

    /// Generation `gen`'s child exits with `code`, and steward hears SIGCHLD.
    async fn child_exits(&self, gen: GenId, code: i32) {
        self.world
            .borrow_mut()
            .exits
            .push((pid_of(gen), ChildStatus::Code(code)));
        let _ = self.signals.send(Received::Child);
        self.settle().await;
    }

    async fn request(&self, command: Command) -> oneshot::Receiver<Reply> {
        let (reply, rx) = oneshot::channel();
        // No connection behind it: only a re-exec reads `conn`, and the fake has none.
        let conn = -1;
        let _ = self
            .control
            .send(Request {
                command,
                reply,
                conn,
            })
            .await;
        self.settle().await;
        rx
    }

    async fn exit_code(self) -> i32 {
        tokio::time::timeout(Duration::from_secs(600), self.driver)
            .await
            .expect("steward exits")
            .expect("driver task")
    }
}

fn local<F: std::future::Future<Output = ()>>(test: F) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(tokio::task::LocalSet::new().run_until(test));
}

#[test]
fn ready_is_told_only_once_the_child_serves() {
    local(async {
        let h = start(World::default());
        h.settle().await;
        assert_eq!(h.position("spawn 1 Start Effective /bin/sh"), Some(0));
        assert_eq!(h.position("Ready("), None, "{:?}", h.did());
        h.serves(1, &[]).await;
        assert!(h.position("Ready(").is_some(), "{:?}", h.did());
    });
}

#[test]
fn sigterm_terminates_the_child_and_steward_exits_0_when_it_is_gone() {
    local(async {
        let h = start(World {
            exit_on_term: true,
            ..World::default()
        });
        h.serves(1, &[]).await;
        h.cleared();
        let _ = h.signals.send(Received::Term);
        h.settle().await;
        let (stopping, term) = (h.position("Stopping("), h.position("SIGTERM 1"));
        assert!(stopping.is_some() && stopping < term, "{:?}", h.did());
        assert_eq!(h.exit_code().await, exit::OK);
    });
}

#[test]
fn a_child_still_busy_at_the_deadline_is_killed_and_steward_exits() {
    local(async {
        let h = start(World {
            in_flight: 3,
            ..World::default()
        });
        h.serves(1, &[]).await;
        let _ = h.signals.send(Received::Term);
        h.settle().await;
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(
            !h.did().iter().any(|d| d.starts_with("SIGKILL")),
            "{:?}",
            h.did()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            h.did().contains(&"SIGKILL 1 (deadline)".to_string()),
            "{:?}",
            h.did()
        );
        h.exit_code().await;
    });
}

#[test]
fn a_drained_child_is_killed_without_waiting_for_the_deadline() {
    local(async {
        let h = start(World::default());
        h.serves(1, &[]).await;
        let _ = h.signals.send(Received::Term);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            h.did().contains(&"SIGKILL 1 (drained)".to_string()),
            "{:?}",
            h.did()
        );
        assert_eq!(h.exit_code().await, exit::OK);
    });
}

#[test]
fn a_first_child_that_left_a_listener_unclaimed_is_killed_and_steward_exits_78() {
    local(async {
        let h = start(World::default());
        h.serves(1, &["127.0.0.1:8080"]).await;
        assert!(
            h.position("SIGKILL 1 (failed start)").is_some(),
            "{:?}",
            h.did()
        );
        assert_eq!(h.position("Ready("), None, "{:?}", h.did());
        assert_eq!(h.exit_code().await, exit::CONFIG);
    });
}

#[test]
fn a_reload_runs_its_generation_on_the_checked_configuration_and_adopts_it() {
    local(async {
        let h = start(World::default());
        h.serves(1, &[]).await;
        h.cleared();
        let reply = h.request(Command::Reload).await;
        assert_eq!(
            h.did()[1..3],
            ["check /bin/new", "spawn 2 Reload Next /bin/new"]
        );
        h.serves(2, &[]).await;
        assert!(h.did().contains(&"SIGTERM 1".to_string()), "{:?}", h.did());
        assert!(h.did().contains(&"install next conf".to_string()));
        assert!(reply.await.expect("answered").ok);
        // A crash of the new generation restarts it on the adopted configuration.
        h.child_exits(2, 1).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            h.did()
                .contains(&"spawn 3 Crash Effective /bin/new".to_string()),
            "{:?}",
            h.did()
        );
    });
}

#[test]
fn a_failed_reload_check_leaves_the_running_generation_and_configuration() {
    local(async {
        let h = start(World {
            check_fails: Some("`/bin/new -t` failed".into()),
            ..World::default()
        });
        h.serves(1, &[]).await;
        h.cleared();
        let reply = h.request(Command::Reload).await.await.expect("answered");
        assert!(!reply.ok);
        assert!(!h
            .did()
            .iter()
            .any(|d| d.starts_with("spawn") || d.starts_with("SIGTERM")));
        h.child_exits(1, 1).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            h.did()
                .contains(&"spawn 2 Crash Effective /bin/sh".to_string()),
            "{:?}",
            h.did()
        );
    });
}

#[test]
fn a_reload_whose_generation_left_a_listener_unclaimed_fails_and_keeps_the_old_one() {
    local(async {
        let h = start(World::default());
        h.serves(1, &[]).await;
        let reply = h.request(Command::Reload).await;
        h.cleared();
        h.serves(2, &["127.0.0.1:8080"]).await;
        let reply = reply.await.expect("answered");
        assert!(!reply.ok);
        assert!(reply
            .error
            .unwrap_or_default()
            .contains("did not claim listener(s) 127.0.0.1:8080"));
        assert!(
            h.did().contains(&"SIGKILL 2 (failed start)".to_string()),
            "{:?}",
            h.did()
        );
        assert!(!h.did().contains(&"SIGTERM 1".to_string()), "{:?}", h.did());
    });
}

#[test]
fn restart_is_answered_once_the_new_generation_is_spawned() {
    local(async {
        let h = start(World {
            exit_on_term: true,
            ..World::default()
        });
        h.serves(1, &[]).await;
        h.cleared();
        let reply = h.request(Command::Restart).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(reply.await.expect("answered").ok);
        assert!(
            h.did().iter().any(|d| d.starts_with("spawn 2 ")),
            "{:?}",
            h.did()
        );
    });
}

#[test]
fn a_forwarded_signal_reaches_the_current_child() {
    local(async {
        let h = start(World::default());
        h.serves(1, &[]).await;
        let _ = h.signals.send(Received::Forward(Signal::SIGUSR1));
        h.settle().await;
        assert!(
            h.did()
                .contains(&"forward SIGUSR1 to Some(1001)".to_string()),
            "{:?}",
            h.did()
        );
    });
}

#[test]
fn a_generations_exit_is_taken_from_the_reap_not_from_its_pid_alone() {
    local(async {
        let h = start(World::default());
        h.serves(1, &[]).await;
        // An orphan (not a generation's child) exits: nothing changes.
        h.world
            .borrow_mut()
            .exits
            .push((Pid::from_raw(4242), ChildStatus::Code(0)));
        let _ = h.signals.send(Received::Child);
        h.settle().await;
        assert!(
            !h.did().iter().any(|d| d.starts_with("spawn 2")),
            "{:?}",
            h.did()
        );
        // The generation's child exits: it is replaced.
        h.child_exits(1, 1).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            h.did().iter().any(|d| d.starts_with("spawn 2 Crash")),
            "{:?}",
            h.did()
        );
    });
}

#[test]
fn a_sigterm_during_start_up_exits_0_before_any_child() {
    local(async {
        let h = start_with_early(vec![Received::Hup, Received::Term]);
        let world = h.world.clone();
        assert_eq!(h.exit_code().await, exit::OK);
        assert!(!world.borrow().did.iter().any(|d| d.starts_with("spawn")));
    });
}

#[test]
fn a_sighup_during_start_up_reloads_once_generation_1_serves() {
    local(async {
        let h = start_with_early(vec![Received::Hup, Received::Hup]);
        h.settle().await;
        assert_eq!(h.position("check"), None, "{:?}", h.did());
        h.serves(1, &[]).await;
        assert!(
            h.position("spawn 2 Reload Next /bin/new").is_some(),
            "{:?}",
            h.did()
        );
        assert_eq!(h.did().iter().filter(|d| d.starts_with("check")).count(), 1);
    });
}
