//! The unit's cgroup: so that nothing a generation starts can outlive its kill.
//!
//! A process group and the tree of descendants catch a child that ignores SIGTERM and its
//! ordinary children. They do not catch everything: a process that calls `setsid()` and
//! double-forks leaves both (steward, a subreaper, still adopts it, but can no longer tell
//! which generation it came from), and a fork bomb can outrun a scan of /proc. A cgroup
//! holds every process forked inside it, whatever it does, and cgroup v2's `cgroup.kill`
//! (Linux 5.14) kills them all in one write, forks racing the kill included.
//!
//! steward uses what it is allowed to:
//! - **Delegated** (a systemd unit with `Delegate=yes`): steward moves itself into
//!   `<unit>/supervisor` and starts each generation in its own `<unit>/gen-N`. A
//!   generation's kill is one write to its `cgroup.kill`, exact even during a reload, when
//!   two generations run side by side.
//! - **Unit** (a systemd service without delegation): the unit's cgroup is systemd's to
//!   arrange, so steward only reads it. On the way out it SIGKILLs every process listed in
//!   it but itself, until none is left.
//! - **Off** (outside systemd, no cgroup v2, or the cgroup is the root): the process group
//!   and the descendant tree only. The root cgroup holds the whole host and is never used.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::procfs;
use crate::worker::Io;

/// Where steward's own processes live once it has moved out of the unit's cgroup, which
/// must have no processes of its own once generations live in sub-cgroups.
const SUPERVISOR: &str = "supervisor";
const GEN_PREFIX: &str = "gen-";
/// How long a kill may take to empty a cgroup before steward gives up waiting.
const EMPTY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub enum Cgroups {
    Delegated { base: PathBuf },
    Unit { dir: PathBuf },
    Off { why: String },
}

/// A generation's cgroup, open for the child to enter between fork and exec.
pub struct GenCgroup {
    pub dir: PathBuf,
    procs: File,
}

impl GenCgroup {
    /// The `cgroup.procs` file a child writes "0" to, to move itself in before exec.
    pub fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }
}

/// The cgroup v2 hierarchy's mount point: /sys/fs/cgroup on a unified host,
/// /sys/fs/cgroup/unified on a hybrid one.
fn v2_mount() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| {
            nix::sys::statfs::statfs(p)
                .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
                .unwrap_or(false)
        })
}

/// steward's own cgroup v2 path, from a /proc/<pid>/cgroup listing ("0::/path").
pub fn v2_path(listing: &str) -> Option<&str> {
    listing.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The unit's own cgroup path within `own`, which may be a sub-cgroup of it.
fn unit_cgroup<'a>(own: &'a str, unit: &str) -> Option<&'a str> {
    let needle = format!("/{unit}");
    let i = own.rfind(&needle)?;
    let end = i + needle.len();
    (end == own.len() || own[end..].starts_with('/')).then(|| &own[..end])
}

impl Cgroups {
    /// Decides the mode. `unit` is the systemd unit steward runs in, if any; `delegated`
    /// whether that unit has `Delegate=yes`.
    pub fn setup(_: &Io, unit: Option<&str>, delegated: bool) -> Cgroups {
        let off = |why: &str| Cgroups::Off { why: why.into() };
        let Some(unit) = unit else {
            return off("not a systemd service");
        };
        let Some(mount) = v2_mount() else {
            return off("no cgroup v2 hierarchy is mounted");
        };
        let listing = match std::fs::read_to_string("/proc/self/cgroup") {
            Ok(l) => l,
            Err(e) => return off(&format!("cannot read /proc/self/cgroup: {e}")),
        };
        let Some(own) = v2_path(&listing) else {
            return off("no cgroup v2 entry in /proc/self/cgroup");
        };
        let own = own.trim_end_matches('/');
        // The unit's own cgroup, or a sub-cgroup of it steward was moved into before.
        let Some(unit_path) = unit_cgroup(own, unit) else {
            return off(&format!("steward's cgroup {own} is not unit {unit}'s"));
        };
        let dir = mount.join(unit_path.trim_start_matches('/'));
        if !delegated {
            return Cgroups::Unit { dir };
        }
        match enter_supervisor_leaf(&dir) {
            Ok(()) => Cgroups::Delegated { base: dir },
            Err(e) => {
                tracing::warn!(
                    "unit {unit} has Delegate=yes, but steward cannot use {}: {e}; falling back to the unit's cgroup",
                    dir.display()
                );
                Cgroups::Unit { dir }
            }
        }
    }

    /// One line for the log: what a kill at the deadline reaches.
    pub fn describe(&self) -> String {
        match self {
            Cgroups::Delegated { base } => format!(
                "each generation in its own cgroup under {} (Delegate=yes): a kill is cgroup.kill, nothing escapes it",
                base.display()
            ),
            Cgroups::Unit { dir } => format!(
                "unit cgroup {} (no Delegate=yes): a generation's kill reaches its process group and descendants; steward's exit kills everything left in the cgroup",
                dir.display()
            ),
            Cgroups::Off { why } => format!(
                "no cgroup ({why}): kills reach the process group and descendants, and steward's exit kills every orphan it adopted"
            ),
        }
    }

    pub fn tag(&self) -> &'static str {
        match self {
            Cgroups::Delegated { .. } => "delegated",
            Cgroups::Unit { .. } => "unit",
            Cgroups::Off { .. } => "off",
        }
    }

    /// Creates generation `gen`'s cgroup (delegated mode only).
    pub fn prepare_generation(&self, gen: u64) -> io::Result<Option<GenCgroup>> {
        let Cgroups::Delegated { base } = self else {
            return Ok(None);
        };
        let dir = base.join(format!("{GEN_PREFIX}{gen}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let procs = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(dir.join("cgroup.procs"))?;
        Ok(Some(GenCgroup { dir, procs }))
    }

    /// Whether `pid` runs in generation `gen`'s cgroup (it moved itself in before exec).
    pub fn holds(&self, _: &Io, gen: u64, pid: i32) -> bool {
        let Cgroups::Delegated { .. } = self else {
            return false;
        };
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .as_deref()
            .and_then(v2_path)
            .is_some_and(|p| {
                p.trim_end_matches('/')
                    .ends_with(&format!("/{GEN_PREFIX}{gen}"))
            })
    }

    /// Kills everything in generation `gen`'s cgroup and waits until it is empty. Returns
    /// how many processes it held, or None where generations have no cgroup.
    pub fn kill_generation(&self, io: &Io, gen: u64) -> Option<usize> {
        let Cgroups::Delegated { base } = self else {
            return None;
        };
        let dir = base.join(format!("{GEN_PREFIX}{gen}"));
        if !dir.exists() {
            return Some(0);
        }
        Some(kill_cgroup(io, &dir))
    }

    /// Removes generation `gen`'s cgroup once it is empty; a busy one is left for the next
    /// call (the kernel refuses to remove a populated cgroup).
    pub fn remove_generation(&self, gen: u64) {
        if let Cgroups::Delegated { base } = self {
            let _ = std::fs::remove_dir(base.join(format!("{GEN_PREFIX}{gen}")));
        }
    }

    /// On the way out: kills every process of the unit but steward itself. Returns how
    /// many were signalled.
    pub fn kill_all_but_self(&self, io: &Io) -> usize {
        match self {
            Cgroups::Delegated { base } => {
                let mut n = 0;
                for dir in gen_dirs(base) {
                    n += kill_cgroup(io, &dir);
                    let _ = std::fs::remove_dir(&dir);
                }
                n
            }
            Cgroups::Unit { dir } => {
                kill_listed_until_empty(io, dir, nix::unistd::getpid().as_raw())
            }
            Cgroups::Off { .. } => 0,
        }
    }
}

/// Moves steward into `<dir>/supervisor`, so `<dir>` may hold generation cgroups.
fn enter_supervisor_leaf(dir: &Path) -> io::Result<()> {
    let leaf = dir.join(SUPERVISOR);
    match std::fs::create_dir(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    // Writing the pid moves the whole process, every thread of it.
    let mut f = OpenOptions::new()
        .write(true)
        .open(leaf.join("cgroup.procs"))?;
    f.write_all(std::process::id().to_string().as_bytes())
}

fn gen_dirs(base: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(base) else {
        return vec![];
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(GEN_PREFIX))
        .map(|e| e.path())
        .collect()
}

/// Every pid listed in `dir` and its sub-cgroups.
fn listed_pids(dir: &Path) -> Vec<i32> {
    let mut out: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(listed_pids(&e.path()));
            }
        }
    }
    out
}

/// `cgroup.kill` where the kernel has it, SIGKILL to each listed process where not; then
/// waits for the cgroup to empty. Returns how many processes it held.
fn kill_cgroup(io: &Io, dir: &Path) -> usize {
    let held = listed_pids(dir).len();
    let killed_at_once = OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.kill"))
        .and_then(|mut f| f.write_all(b"1"))
        .is_ok();
    if killed_at_once {
        wait_empty(io, dir);
        held
    } else {
        kill_listed_until_empty(io, dir, -1).max(held)
    }
}

fn wait_empty(io: &Io, dir: &Path) {
    let end = Instant::now() + EMPTY_TIMEOUT;
    while listed_pids(dir).iter().any(|&p| !procfs::is_gone(io, p)) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// SIGKILL to every living process listed in `dir` (but `spare`), repeated until none is
/// left or [`EMPTY_TIMEOUT`] has passed.
fn kill_listed_until_empty(io: &Io, dir: &Path, spare: i32) -> usize {
    let end = Instant::now() + EMPTY_TIMEOUT;
    crate::child::sigkill_until_none(
        io,
        None,
        || {
            listed_pids(dir)
                .into_iter()
                .filter(|&p| p != spare)
                .collect()
        },
        |_| Instant::now() >= end,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v2_path_is_read_from_a_hybrid_listing() {
        let listing =
            "9:name=systemd:/system.slice/a.service\n0::/system.slice/a.service/supervisor\n";
        assert_eq!(v2_path(listing), Some("/system.slice/a.service/supervisor"));
    }

    #[test]
    fn a_v1_only_listing_has_no_v2_path() {
        assert_eq!(v2_path("9:name=systemd:/system.slice/a.service\n"), None);
    }

    #[test]
    fn the_unit_cgroup_is_found_from_a_sub_cgroup() {
        let own = "/system.slice/a.service/supervisor";
        assert_eq!(
            unit_cgroup(own, "a.service"),
            Some("/system.slice/a.service")
        );
        assert_eq!(
            unit_cgroup("/system.slice/a.service", "a.service"),
            Some("/system.slice/a.service")
        );
        assert_eq!(unit_cgroup("/system.slice/a.service2", "a.service"), None);
        assert_eq!(unit_cgroup("/", "a.service"), None);
    }

    #[test]
    fn outside_systemd_there_is_no_cgroup_mode() {
        assert_eq!(Cgroups::setup(&Io::for_tests(), None, true).tag(), "off");
    }

    #[test]
    fn a_unit_steward_is_not_in_is_never_used() {
        // The test process's cgroup is not a unit called this, so it must not be claimed.
        let c = Cgroups::setup(
            &Io::for_tests(),
            Some("no-such-unit-for-steward-tests.service"),
            true,
        );
        assert_eq!(c.tag(), "off", "{c:?}");
    }

    #[test]
    fn only_a_delegated_cgroup_makes_generation_cgroups() {
        let c = Cgroups::Unit {
            dir: PathBuf::from("/nonexistent"),
        };
        assert!(c.prepare_generation(1).expect("no error").is_none());
        assert_eq!(c.kill_generation(&Io::for_tests(), 1), None);
    }
}
