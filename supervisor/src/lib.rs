//! # Steward: a supervisor that makes a Pingora server's stop fast, bounded and visible
//!
//! ## Theory of operation
//!
//! steward runs as a systemd service's main process (`Type=notify`, `KillMode=mixed`) and
//! starts one Pingora server as its child. Everything it does follows from one rule:
//! **systemd must never have to kill anything.** Pingora 0.9.1 answers SIGTERM by closing
//! its listeners and then sleeping `grace_period_seconds` (300 s by default) whatever is
//! left to do, so under a stock unit `systemctl stop` hangs until systemd's own
//! `TimeoutStopSec` (90 s) fires and SIGKILLs the lot at a random moment.
//!
//! 1. **Start.** [`config`] reads the TOML; [`startup`] then runs the start-up as a
//!    pipeline of plain steps, each a function of the previous step's value, that ends in
//!    the plan the driver runs (or an exit code). [`systemd`] asks systemd for the unit's
//!    `TimeoutStopUSec` (or the environment states the platform's stop timeout) and
//!    [`deadline`] turns it into steward's own stop deadline (timeout minus a margin),
//!    logged with its provenance. [`systemd`] also reads the unit's other properties into
//!    a [`unit::UnitProps`], for [`check`]'s start-up rules (the same rules as
//!    `steward check`). [`pingora_conf`] writes an
//!    effective copy of the operator's Pingora YAML into the private [`runtime_dir`], with
//!    the grace period clamped to fit the deadline and the upgrade socket moved out of
//!    /tmp. [`sockets`] binds `sockets.listen` once (or takes them from systemd), and every
//!    generation gets those same sockets: through Pingora's `-u` hand-off ([`upgrade`]),
//!    whose receiver polls once a second, or, for a server built with steward-pingora,
//!    left open across exec and named in its environment ([`inherit`]), served within
//!    milliseconds. [`child`] spawns the server in its own process group with a parent-death
//!    signal and the open-file limit [`limits`] decided (by default the soft limit raised to
//!    the hard limit); steward is a child subreaper, so no descendant can escape as an
//!    orphan.
//!    With `Delegate=yes` in the unit, [`cgroup`] also gives each generation a cgroup of
//!    its own, entered before exec, so not even a `setsid()` and double fork leaves it.
//! 2. **Ready.** [`probe`] polls the child's listener (TCP connect or a health URL that
//!    must answer 200) and checks the port is the child's own; only then [`notify`] sends
//!    `READY=1`. `STATUS=` tracks every phase.
//! 3. **Stop.** On SIGTERM or SIGINT steward sends `STOPPING=1`, forwards SIGTERM, and
//!    watches the drain: [`tcp`] counts the child's downstream TCP connections on the
//!    listening ports it had when it began serving ([`sockdiag`] for the host's listeners
//!    and exact lookups, [`peek`] for the child's own sockets). Once it holds no listener
//!    and no connection (or none for `drain_quiet` while it still holds a listener), the
//!    child has nothing left to do: if it has not exited by itself
//!    (steward-proxy does; a stock Pingora sleeps), steward ends it. At the deadline it
//!    SIGKILLs the generation (`cgroup.kill` of its cgroup where delegated, else its
//!    process group and every descendant, repeated until none is left), reaps them and
//!    exits, all before systemd's timer.
//! 4. **Exit.** 0 after a stop; the child's own code (128+N for signal N) when it exits on
//!    its own, so `Restart=on-failure` works; 78 for configuration errors, which the unit
//!    lists in `RestartPreventExitStatus=` ([`exit`]).
//!
//! 5. **Containers.** The same binary is a container's entrypoint ([`container`]). As
//!    PID 1 of a PID namespace every orphan is re-parented to steward, which reaps it on
//!    the next SIGCHLD and forgets it (only its generations' pids feed the lifecycle). The
//!    kernel drops a signal PID 1 has no handler for, so [`signals`] names every one an
//!    operator plausibly sends: SIGTERM/SIGINT stop, SIGHUP reloads, SIGUSR1/SIGUSR2/
//!    SIGWINCH go to the current child as tini would pass them, SIGQUIT (Pingora's
//!    upgrade) is ignored with a warning. With no systemd to ask, `deadline = "auto"`
//!    takes the platform's stop timeout from `STEWARD_STOP_TIMEOUT` (Kubernetes'
//!    `terminationGracePeriodSeconds`, `docker stop -t`) minus the same margin. A `/proc`
//!    of another PID namespace is refused: the drain and the kills read it.
//!
//! The lifecycle itself is [`lifecycle::Lifecycle`]: a state machine with no I/O whose
//! transitions are plain functions of (state, event, now). Each of its modes carries the
//! data that exists only there (a reload its old and next generation and who waits for
//! it, a backoff its end, a stop when it began and why), so a transition builds the next
//! mode whole and a state no transition should reach cannot be written down; a proptest
//! drives random event sequences through it and checks what none may break (one current
//! generation at most, no exit while a generation is left, every waiter answered once, no
//! kill before the deadline unless drained, a deadline that never moves later). It
//! decides everything: signals that arrive while start-up is still preparing (a stop
//! exits before any child, a SIGHUP becomes one reload once generation 1 serves), the
//! answer to a `restart` (through waiters, as a reload's), when a reload's check has run
//! out of time (a timer of its own, in `next_wakeup`), and that a generation serving
//! without every listener steward handed it did not start. Its actions carry facts
//! (which generation, which pid, why, how long, how many), and [`render`] alone puts
//! them into words: the journal's messages, `STATUS=`, the control socket's replies and
//! `steward status` say one thing one way.
//!
//! [`run`] is the thin driver: one loop over signals, the control socket, timers and
//! work finished off the loop, feeding events in and carrying actions out through the
//! [`effects::Effects`] trait. [`effects::System`] is the real world; the driver's tests
//! put a fake child behind the same trait. What happens between a generation's spawn and
//! its first served request (the listener hand-off, the probe, reading what it holds) is
//! one task per generation ([`generation`]), cancelled by dropping it, so a generation
//! that exits, drains or is killed is never reported ready. A reload's configuration
//! check is [`reload_check`]; health probes, which alone feed the watchdog while serving,
//! are [`health`]; the drain count's rhythm is [`drain_poll`]; `steward status`'s memory
//! of the last reload or stop is [`timeline`]; [`kills`] holds a reap back until the kill
//! that caused it has reported, so the kill's line comes before the exit's.
//! Nothing slow runs on the loop: every blocking read (`/proc`, netlink, cgroup files,
//! configuration files, a `-t` run's output) and every kill loop runs on the one I/O
//! thread of [`worker`], whose context the blocking modules require, so the loop cannot
//! call them; [`files`] reads operator files as regular files of bounded size. Logs go
//! through `tracing`, to journald with `STEWARD_*` fields under systemd ([`logging`]).
//!
//! **Upgrading steward itself.** A reload that finds steward's own binary replaced on disk,
//! while serving one generation with nothing pending, runs the new binary's
//! `handover-check` out of process and then re-executes steward in place ([`reexec`]):
//! same pid, the listeners, the control socket, the serving generation and the waiting
//! `steward reload` handed over in a versioned document ([`handover`]). The successor's
//! start adopts them (`Lifecycle::adopt`) instead of spawning, then runs the reload.
//!
//! **Reading the unit.** [`unit`](mod@unit) is the bottom of the reading side and uses
//! none of the modules above it: a [`unit::UnitProps`] holds the properties that decide a
//! start, a stop and a restart, each with the line that set it, read offline from a unit
//! file and its drop-ins or from the text `systemctl show` prints. [`systemd`] asks systemd
//! (D-Bus, then `systemctl show`) and decodes its answer into the same `UnitProps`;
//! [`check`] judges them, and never the other way round (the ◀ below).
//!
//! ```text
//!  main ─ config ─ startup ──(Plan)──▶ run (driver) ◀──events── signals, control, timers
//!           │        │                   │    │
//!           │        ├ systemd ─ unit ◀┐ │    └─ lifecycle (no I/O) ─ render (words)
//!           │        ├ deadline        │ │
//!           │        ├ check (findings)┘ └─ effects (System | fake) ─┬─ generation ─ upgrade, probe
//!           │        ├ runtime_dir,                                  ├─ reload_check, health
//!           │        │ pingora_conf                                  ├─ child, cgroup, notify
//!           │        ├ sockets, limits                               └─ worker ─ tcp, sockdiag,
//!           │        └ container                                                 procfs, peek
//! ```

pub mod cgroup;
pub mod check;
pub mod child;
pub mod config;
pub mod container;
pub mod control;
pub mod deadline;
pub mod drain_poll;
pub mod duration;
pub mod effects;
pub mod exit;
pub mod files;
pub mod generation;
pub mod handover;
pub mod health;
pub mod inherit;
pub mod kills;
pub mod lifecycle;
pub mod limits;
pub mod logging;
pub mod manpage;
pub mod notify;
pub mod peek;
pub mod pingora_conf;
pub mod probe;
pub mod procfs;
pub mod reexec;
pub mod reload_check;
pub mod render;
pub mod run;
pub mod runtime_dir;
pub mod signals;
pub mod sockdiag;
pub mod sockets;
pub mod startup;
pub mod systemd;
pub mod tcp;
pub mod timeline;
pub mod unit;
pub mod upgrade;
pub mod worker;
