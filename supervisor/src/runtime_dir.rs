//! steward's runtime directory: the effective Pingora conf and the upgrade socket live
//! here, in a directory only the service's user can enter (mode 0700).
//!
//! Nothing in it is trusted blindly. Every parent must be one only root or steward's user
//! can change (else another user could rename the directory away and put their own in its
//! place between two of steward's calls); the directory itself must be a real directory
//! (not a symlink) owned by steward's user. It is opened once, and every entry is created,
//! opened and removed relative to that descriptor (`*at()` calls, `O_NOFOLLOW`, `O_EXCL`
//! on creation, mode 0600). An entry in the way of one of steward's names is replaced only
//! when steward's user owns it. A symlink is removed, never followed; an entry of another
//! user is refused and left as it is, since only root can have planted it and deleting it
//! would hide whatever it was meant for.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{AccessFlags, UnlinkatFlags};

#[derive(Debug, thiserror::Error)]
#[error("runtime directory {path}: {message}")]
pub struct RuntimeDirError {
    pub path: PathBuf,
    pub message: String,
    /// A live steward already answers on this runtime directory's control socket.
    pub in_use: bool,
}

impl RuntimeDirError {
    fn new(path: &Path, message: String) -> RuntimeDirError {
        RuntimeDirError {
            path: path.to_path_buf(),
            message,
            in_use: false,
        }
    }
}

/// The directory to use: configured, else systemd's `RuntimeDirectory=`, else a per-user one.
pub fn choose(configured: Option<&Path>) -> PathBuf {
    if let Some(p) = configured {
        return p.to_path_buf();
    }
    if let Some(dirs) = std::env::var_os("RUNTIME_DIRECTORY") {
        // systemd passes several directories colon-separated; steward's is the first.
        if let Some(first) = std::env::split_paths(&dirs).next() {
            if !first.as_os_str().is_empty() {
                return first;
            }
        }
    }
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from("/run/steward");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(x) if !x.is_empty() => PathBuf::from(x).join("steward"),
        _ => PathBuf::from(format!("/tmp/steward-{uid}")),
    }
}

/// The fix an operator needs for an I/O error in the runtime directory.
fn hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error().map(nix::errno::Errno::from_raw) {
        Some(nix::errno::Errno::ENOSPC | nix::errno::Errno::EDQUOT) => {
            "; the file system is full: free space there (df) or choose another runtime_dir"
        }
        Some(nix::errno::Errno::EROFS) => {
            "; the file system is mounted read-only: choose a runtime_dir on a writable one (/run)"
        }
        Some(nix::errno::Errno::EACCES | nix::errno::Errno::EPERM) => {
            "; steward's user may not write there: fix its owner or mode (chmod 0700) or choose another runtime_dir"
        }
        _ => "",
    }
}

/// steward's runtime directory, opened once: every entry is then created, opened, renamed
/// and removed relative to this descriptor, never by re-resolving the path. Only the
/// child is given plain paths (its `-c` conf and `upgrade_sock`); [`RuntimeDir::open`]
/// has checked that nobody but root and steward's user can change what those name.
#[derive(Debug, Clone)]
pub struct RuntimeDir {
    path: PathBuf,
    fd: Arc<OwnedFd>,
    /// `/proc/self/fd/N`: a path that names the opened directory itself, for the calls
    /// that take no directory descriptor (bind and connect of a unix socket).
    by_fd: Option<PathBuf>,
}

/// Why an ancestor of the runtime directory is not trusted; `None` when it is.
///
/// An ancestor is safe when only root or steward's user can rename or replace what is in
/// it: owned by one of them and not writable by group or others, unless the sticky bit
/// (as on /tmp) keeps others from renaming entries they do not own.
pub fn ancestor_risk(owner: u32, mode: u32, me: u32) -> Option<String> {
    if owner != 0 && owner != me {
        return Some(format!(
            "is owned by uid {owner}, not by root or steward's uid {me}"
        ));
    }
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Some(format!(
            "is writable by {} (mode {:04o}) without the sticky bit",
            if mode & 0o002 != 0 {
                "every user"
            } else {
                "its group"
            },
            mode & 0o7777
        ));
    }
    None
}

fn o_path() -> OFlag {
    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

fn own(fd: std::os::fd::RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open(2) and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

impl RuntimeDir {
    /// Creates the directory if needed and makes sure nobody else can enter it or swap it:
    /// every ancestor is checked ([`ancestor_risk`]), walked one component at a time
    /// without following a symlink, and the directory itself must be steward's user's
    /// (mode 0700).
    pub fn open(path: &Path) -> Result<RuntimeDir, RuntimeDirError> {
        let err = |m: String| RuntimeDirError::new(path, m);
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| err(format!("cannot resolve a relative path: {e}")))?
                .join(path)
        };
        let (parent, name) = match (absolute.parent(), absolute.file_name()) {
            (Some(p), Some(n)) => (p, n),
            _ => return Err(err("is not a directory steward can create".into())),
        };
        // Symlinks among the ancestors (/var/run -> /run) are resolved once, here; the
        // walk below then refuses any symlink, so a later swap changes nothing.
        let (existing, missing) = split_existing(parent);
        let real = std::fs::canonicalize(&existing)
            .map_err(|e| err(format!("cannot resolve {}: {e}", existing.display())))?;
        let me = nix::unistd::geteuid().as_raw();
        let mut fd = own(nix::fcntl::openat(None, "/", o_path(), Mode::empty())
            .map_err(|e| err(format!("cannot open /: {e}")))?);
        let check = |fd: &OwnedFd, at: &Path| -> Result<(), RuntimeDirError> {
            let st = nix::sys::stat::fstat(fd.as_raw_fd())
                .map_err(|e| err(format!("cannot inspect {}: {e}", at.display())))?;
            match ancestor_risk(st.st_uid, st.st_mode, me) {
                None => Ok(()),
                Some(why) => Err(err(format!(
                    "its parent {} {why}: another user could replace the runtime directory under steward; choose a runtime_dir whose every parent only root or steward's user can write (such as /run/steward)",
                    at.display()
                ))),
            }
        };
        check(&fd, Path::new("/"))?;
        let mut walked = PathBuf::from("/");
        let components: Vec<_> = real
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(n) => Some(n.to_os_string()),
                _ => None,
            })
            .collect();
        let created_from = components.len();
        for (i, comp) in components.iter().chain(missing.iter()).enumerate() {
            walked.push(comp);
            if i >= created_from {
                match nix::sys::stat::mkdirat(
                    Some(fd.as_raw_fd()),
                    comp.as_os_str(),
                    Mode::from_bits_truncate(0o700),
                ) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => {
                        let e = std::io::Error::from(e);
                        return Err(err(format!(
                            "cannot create {}: {e}{}",
                            walked.display(),
                            hint(&e)
                        )));
                    }
                }
            }
            let next = nix::fcntl::openat(
                Some(fd.as_raw_fd()),
                comp.as_os_str(),
                o_path(),
                Mode::empty(),
            )
            .map_err(|e| match e {
                Errno::ELOOP | Errno::ENOTDIR => err(format!(
                    "its parent {} is not a directory (or became a symbolic link)",
                    walked.display()
                )),
                e => err(format!("cannot open its parent {}: {e}", walked.display())),
            })?;
            fd = own(next);
            check(&fd, &walked)?;
        }
        let parent_fd = fd;
        // A symlink planted where the directory belongs makes mkdirat answer EEXIST and
        // the O_NOFOLLOW open below fail: it is refused there, never followed.
        match nix::sys::stat::mkdirat(
            Some(parent_fd.as_raw_fd()),
            name,
            Mode::from_bits_truncate(0o700),
        ) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => {
                let e = std::io::Error::from(e);
                return Err(err(format!("cannot create it: {e}{}", hint(&e))));
            }
        }
        let fd = nix::fcntl::openat(
            Some(parent_fd.as_raw_fd()),
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            // With O_DIRECTORY, a symlink answers ENOTDIR rather than ELOOP.
            Errno::ELOOP | Errno::ENOTDIR => {
                match nix::fcntl::readlinkat(Some(parent_fd.as_raw_fd()), name) {
                    Ok(to) => err(format!(
                        "is a symbolic link (to {}); steward does not follow it: remove it, or set runtime_dir to a real directory",
                        Path::new(&to).display()
                    )),
                    Err(_) => err(
                        "is not a directory: remove it or choose another runtime_dir".into(),
                    ),
                }
            }
            e => {
                let e = std::io::Error::from(e);
                err(format!("cannot open it: {e}{}", hint(&e)))
            }
        })?;
        let fd = own(fd);
        let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| err(e.to_string()))?;
        if st.st_uid != me {
            return Err(err(format!(
                "is owned by uid {}, not by steward's uid {me}; steward leaves it alone: remove it or choose another runtime_dir",
                st.st_uid
            )));
        }
        if st.st_mode & 0o077 != 0 {
            nix::sys::stat::fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(0o700)).map_err(
                |e| {
                    let e = std::io::Error::from(e);
                    err(format!(
                        "cannot make it private (chmod 0700): {e}{}",
                        hint(&e)
                    ))
                },
            )?;
        }
        // Said now, with the fix, rather than as a failed write of the first file.
        // access() also answers EROFS for a read-only mount, which root's permissions do
        // not bypass.
        if let Err(e) = nix::unistd::faccessat(
            Some(fd.as_raw_fd()),
            ".",
            AccessFlags::W_OK | AccessFlags::X_OK,
            AtFlags::empty(),
        ) {
            let e = std::io::Error::from(e);
            return Err(err(format!("is not writable: {e}{}", hint(&e))));
        }
        let by_fd = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        // Without /proc the sockets are reached by path, which the checks above keep
        // pointing at this same directory.
        let by_fd = std::fs::metadata(&by_fd)
            .ok()
            .filter(|m| m.ino() == st.st_ino && m.dev() == st.st_dev)
            .map(|_| by_fd);
        Ok(RuntimeDir {
            path: walked.join(name),
            fd: Arc::new(fd),
            by_fd,
        })
    }

    /// The directory's path, resolved at open: for messages, and for the child.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of an entry, for messages and for the child.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// A path that reaches `name` in this very directory, for bind and connect (through
    /// `/proc/self/fd`, so a directory renamed away and replaced is not the one reached).
    pub fn reach(&self, name: &str) -> PathBuf {
        self.by_fd.as_deref().unwrap_or(&self.path).join(name)
    }

    fn raw(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// The longest prefix of `p` that exists, and the components after it.
fn split_existing(p: &Path) -> (PathBuf, Vec<std::ffi::OsString>) {
    let mut missing = Vec::new();
    let mut cur = p.to_path_buf();
    while std::fs::symlink_metadata(&cur).is_err() {
        match (cur.file_name(), cur.parent()) {
            (Some(n), Some(up)) => {
                missing.push(n.to_os_string());
                cur = up.to_path_buf();
            }
            _ => break,
        }
    }
    missing.reverse();
    (cur, missing)
}
/// What is found at one of steward's names in the runtime directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    File,
    Socket,
    Symlink,
    Dir,
    /// A FIFO or a device node.
    Other,
}

impl Entry {
    fn of_mode(mode: libc::mode_t) -> Entry {
        match mode & libc::S_IFMT {
            libc::S_IFLNK => Entry::Symlink,
            libc::S_IFDIR => Entry::Dir,
            libc::S_IFSOCK => Entry::Socket,
            libc::S_IFREG => Entry::File,
            _ => Entry::Other,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Entry::File => "a regular file",
            Entry::Socket => "a socket",
            Entry::Symlink => "a symbolic link",
            Entry::Dir => "a directory",
            Entry::Other => "a special file",
        }
    }
}

/// What to do with an entry in the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Another user's: refuse, touch nothing.
    Foreign,
    /// A socket: replace it unless a live server answers on it.
    ProbeThenRemove,
    /// An empty directory is removed; one with contents is refused.
    RemoveDir,
    /// unlink(2): a symlink goes, its target stays.
    Unlink,
}

/// The rule, apart from the file system: steward replaces only what its own user owns.
pub fn verdict(entry: Entry, owner: u32, me: u32) -> Verdict {
    if owner != me {
        return Verdict::Foreign;
    }
    match entry {
        Entry::Socket => Verdict::ProbeThenRemove,
        Entry::Dir => Verdict::RemoveDir,
        Entry::File | Entry::Symlink | Entry::Other => Verdict::Unlink,
    }
}

impl RuntimeDir {
    fn stat(&self, name: &str) -> nix::Result<nix::sys::stat::FileStat> {
        nix::sys::stat::fstatat(Some(self.raw()), name, AtFlags::AT_SYMLINK_NOFOLLOW)
    }

    /// Makes room for `name`, where steward is about to create a socket or a file:
    /// replaces a stale entry steward's user owns, refuses (and leaves alone) one of
    /// another user, and with `probe`, refuses a socket a live server answers on. Returns
    /// what was removed, for the log.
    pub fn clear_stale(&self, name: &str, probe: bool) -> Result<Option<Entry>, RuntimeDirError> {
        let path = self.join(name);
        let err = |m: String| RuntimeDirError::new(&path, m);
        let st = match self.stat(name) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(err(format!("cannot inspect it: {e}"))),
        };
        let entry = Entry::of_mode(st.st_mode);
        let me = nix::unistd::geteuid().as_raw();
        let unlink = |flag| {
            nix::unistd::unlinkat(Some(self.raw()), name, flag).map_err(std::io::Error::from)
        };
        match verdict(entry, st.st_uid, me) {
            Verdict::Foreign => {
                return Err(err(format!(
                    "is {} owned by uid {}, not by steward's uid {me}; steward leaves it alone: remove it (rm {}) or choose another runtime_dir",
                    entry.describe(),
                    st.st_uid,
                    path.display()
                )))
            }
            Verdict::ProbeThenRemove => {
                if probe && std::os::unix::net::UnixStream::connect(self.reach(name)).is_ok() {
                    return Err(RuntimeDirError {
                        in_use: true,
                        ..err(
                            "is a live socket: another steward is running with this runtime directory; stop it, or give this one another runtime_dir".into(),
                        )
                    });
                }
                unlink(UnlinkatFlags::NoRemoveDir)
            }
            Verdict::RemoveDir => unlink(UnlinkatFlags::RemoveDir).map_err(|e| {
                match e.raw_os_error().map(Errno::from_raw) {
                    Some(Errno::ENOTEMPTY | Errno::EEXIST) => {
                        std::io::Error::other("it is a directory with contents, which steward does not delete: remove it")
                    }
                    _ => e,
                }
            }),
            Verdict::Unlink => unlink(UnlinkatFlags::NoRemoveDir),
        }
        .map_err(|e| err(format!("is {} in the way and cannot be removed: {e}", entry.describe())))?;
        Ok(Some(entry))
    }

    /// Creates `name` anew for reading and writing (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600) after clearing a stale
    /// entry of steward's own user: a planted symlink or file is never written through.
    pub fn create_private(&self, name: &str) -> Result<File, RuntimeDirError> {
        self.clear_stale(name, false)?;
        let fd = nix::fcntl::openat(
            Some(self.raw()),
            name,
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| {
            let e = std::io::Error::from(e);
            RuntimeDirError::new(&self.join(name), format!("cannot create: {e}{}", hint(&e)))
        })?;
        Ok(File::from(own(fd)))
    }

    /// Writes `name` atomically (a private temporary file renamed over the old one), mode
    /// 0600. On any failure the temporary file is removed and the old file is left as it
    /// was: a later start never finds a half-written conf under `name`.
    pub fn write_file(&self, name: &str, contents: &str) -> Result<PathBuf, RuntimeDirError> {
        let target = self.join(name);
        let tmp_name = format!(".{name}.tmp");
        let err = |m: String| RuntimeDirError::new(&target, m);
        // The rename would replace whatever is at `name`: the same ownership rule as for
        // the sockets applies to it.
        if let Ok(st) = self.stat(name) {
            let me = nix::unistd::geteuid().as_raw();
            let entry = Entry::of_mode(st.st_mode);
            if verdict(entry, st.st_uid, me) == Verdict::Foreign || entry == Entry::Dir {
                return Err(err(format!(
                    "is {} owned by uid {}, which steward does not replace: remove it (rm {})",
                    entry.describe(),
                    st.st_uid,
                    target.display()
                )));
            }
        }
        let mut f = self.create_private(&tmp_name).map_err(|e| err(e.message))?;
        let written = f.write_all(contents.as_bytes()).and_then(|()| f.flush());
        drop(f);
        if let Err(e) = written {
            let _ = self.remove(&tmp_name);
            return Err(err(format!("cannot write: {e}{}", hint(&e))));
        }
        if let Err(e) = self.rename(&tmp_name, name) {
            let _ = self.remove(&tmp_name);
            return Err(err(format!("cannot rename into place: {e}{}", hint(&e))));
        }
        Ok(target)
    }

    /// renameat(2) within the directory.
    pub fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        nix::fcntl::renameat(Some(self.raw()), from, Some(self.raw()), to)
            .map_err(std::io::Error::from)
    }

    /// unlinkat(2) of a file or socket within the directory.
    pub fn remove(&self, name: &str) -> std::io::Result<()> {
        nix::unistd::unlinkat(Some(self.raw()), name, UnlinkatFlags::NoRemoveDir)
            .map_err(std::io::Error::from)
    }

    /// Binds a unix socket at `name` in this very directory, mode 0600.
    pub fn bind(&self, name: &str) -> std::io::Result<std::os::unix::net::UnixListener> {
        let l = std::os::unix::net::UnixListener::bind(self.reach(name))?;
        nix::sys::stat::fchmodat(
            Some(self.raw()),
            name,
            Mode::from_bits_truncate(0o600),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )?;
        Ok(l)
    }

    /// Connects to the unix socket at `name` in this very directory.
    pub fn connect(&self, name: &str) -> std::io::Result<std::os::unix::net::UnixStream> {
        std::os::unix::net::UnixStream::connect(self.reach(name))
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("steward-rt-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn open_creates_a_private_directory() {
        let p = scratch("create");
        let _d = RuntimeDir::open(&p).expect("prepared");
        let mode = std::fs::metadata(&p).expect("meta").mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::remove_dir_all(&p).ok();
    }

    #[test]
    fn open_tightens_an_open_directory() {
        let p = scratch("open");
        std::fs::create_dir_all(&p).expect("mkdir");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let _d = RuntimeDir::open(&p).expect("prepared");
        assert_eq!(std::fs::metadata(&p).expect("meta").mode() & 0o777, 0o700);
        std::fs::remove_dir_all(&p).ok();
    }

    #[test]
    fn a_file_in_the_way_is_an_error() {
        let p = scratch("file");
        std::fs::write(&p, "x").expect("write");
        assert!(RuntimeDir::open(&p).is_err());
        std::fs::remove_file(&p).ok();
    }

    #[test]
    fn written_files_are_private() {
        let p = scratch("write");
        let d = RuntimeDir::open(&p).expect("prepared");
        let f = d
            .write_file("pingora.yaml", "version: 1\n")
            .expect("written");
        assert_eq!(std::fs::metadata(&f).expect("meta").mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&f).expect("read"), "version: 1\n");
        std::fs::remove_dir_all(&p).ok();
    }

    #[test]
    fn only_entries_of_stewards_own_user_are_replaced() {
        for e in [
            Entry::File,
            Entry::Socket,
            Entry::Symlink,
            Entry::Dir,
            Entry::Other,
        ] {
            assert_eq!(verdict(e, 65534, 0), Verdict::Foreign, "{e:?}");
        }
        assert_eq!(verdict(Entry::Socket, 7, 7), Verdict::ProbeThenRemove);
        assert_eq!(verdict(Entry::Dir, 7, 7), Verdict::RemoveDir);
        assert_eq!(verdict(Entry::Symlink, 7, 7), Verdict::Unlink);
        assert_eq!(verdict(Entry::File, 7, 7), Verdict::Unlink);
    }

    #[test]
    fn a_symlink_in_place_of_the_directory_is_refused_and_not_followed() {
        let p = scratch("link");
        let real = scratch("link-target");
        std::fs::create_dir_all(&real).expect("mkdir");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::os::unix::fs::symlink(&real, &p).expect("symlink");
        let e = RuntimeDir::open(&p).expect_err("refused");
        assert!(e.message.contains("symbolic link"), "{e}");
        // Not followed: the target's mode was not tightened.
        assert_eq!(
            std::fs::metadata(&real).expect("meta").mode() & 0o777,
            0o755
        );
        std::fs::remove_file(&p).ok();
        std::fs::remove_dir_all(&real).ok();
    }

    #[test]
    fn stale_entries_are_replaced_and_a_symlinks_target_is_untouched() {
        let p = scratch("stale");
        let d = RuntimeDir::open(&p).expect("prepared");
        let outside = scratch("outside");
        std::fs::write(&outside, "keep me").expect("write");
        std::os::unix::fs::symlink(&outside, p.join("a")).expect("symlink");
        std::fs::write(p.join("b"), "x").expect("write");
        std::fs::create_dir(p.join("c")).expect("mkdir");
        drop(std::os::unix::net::UnixListener::bind(p.join("d")).expect("bind"));
        assert_eq!(d.clear_stale("a", true).expect("a"), Some(Entry::Symlink));
        assert_eq!(d.clear_stale("b", true).expect("b"), Some(Entry::File));
        assert_eq!(d.clear_stale("c", true).expect("c"), Some(Entry::Dir));
        assert_eq!(d.clear_stale("d", true).expect("d"), Some(Entry::Socket));
        assert_eq!(d.clear_stale("e", true).expect("e"), None);
        for n in ["a", "b", "c", "d"] {
            assert!(std::fs::symlink_metadata(p.join(n)).is_err(), "{n} left");
        }
        assert_eq!(std::fs::read_to_string(&outside).expect("read"), "keep me");
        std::fs::remove_file(&outside).ok();
        std::fs::remove_dir_all(&p).ok();
    }

    #[test]
    fn a_directory_with_contents_and_a_live_socket_are_refused() {
        let p = scratch("busy");
        let d = RuntimeDir::open(&p).expect("prepared");
        std::fs::create_dir(p.join("full")).expect("mkdir");
        std::fs::write(p.join("full/x"), "x").expect("write");
        let e = d.clear_stale("full", true).expect_err("refused");
        assert!(e.message.contains("with contents"), "{e}");
        assert!(p.join("full/x").exists());
        let _live = std::os::unix::net::UnixListener::bind(p.join("live")).expect("bind");
        let e = d.clear_stale("live", true).expect_err("refused");
        assert!(e.in_use && e.message.contains("another steward"), "{e}");
        assert!(p.join("live").exists());
        // Without the probe (the upgrade socket of a dead child), a socket is replaced.
        assert_eq!(
            d.clear_stale("live", false).expect("cleared"),
            Some(Entry::Socket)
        );
        std::fs::remove_dir_all(&p).ok();
    }

    #[test]
    fn writing_over_a_symlink_replaces_the_link_not_its_target() {
        let p = scratch("wlink");
        let d = RuntimeDir::open(&p).expect("prepared");
        let outside = scratch("woutside");
        std::fs::write(&outside, "keep me").expect("write");
        std::os::unix::fs::symlink(&outside, p.join("pingora.yaml")).expect("symlink");
        std::os::unix::fs::symlink(&outside, p.join(".pingora.yaml.tmp")).expect("symlink");
        let f = d
            .write_file("pingora.yaml", "version: 1\n")
            .expect("written");
        assert!(!std::fs::symlink_metadata(&f)
            .expect("meta")
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&outside).expect("read"), "keep me");
        assert!(!p.join(".pingora.yaml.tmp").exists());
        std::fs::remove_file(&outside).ok();
        std::fs::remove_dir_all(&p).ok();
    }

    #[test]
    fn a_directory_in_place_of_a_file_is_refused() {
        let p = scratch("wdir");
        let d = RuntimeDir::open(&p).expect("prepared");
        std::fs::create_dir(p.join("pingora.yaml")).expect("mkdir");
        let e = d.write_file("pingora.yaml", "x").expect_err("refused");
        assert!(e.message.contains("directory"), "{e}");
        std::fs::remove_dir_all(&p).ok();
    }

    #[test]
    fn parents_that_only_root_or_steward_can_change_are_trusted() {
        assert_eq!(ancestor_risk(0, 0o040755, 7), None);
        assert_eq!(ancestor_risk(7, 0o040700, 7), None);
        // /tmp: writable by all, but the sticky bit keeps others from renaming our entry.
        assert_eq!(ancestor_risk(0, 0o041777, 7), None);
    }

    #[test]
    fn a_parent_of_another_user_is_refused() {
        let why = ancestor_risk(1001, 0o040755, 0).expect("refused");
        assert!(why.contains("uid 1001"), "{why}");
    }

    #[test]
    fn a_parent_writable_by_others_without_the_sticky_bit_is_refused() {
        assert!(ancestor_risk(0, 0o040777, 0)
            .expect("refused")
            .contains("every user"));
        assert!(ancestor_risk(0, 0o040775, 0)
            .expect("refused")
            .contains("its group"));
    }

    #[test]
    fn open_refuses_a_runtime_dir_under_a_world_writable_parent() {
        let parent = scratch("open-parent");
        std::fs::create_dir_all(&parent).expect("mkdir");
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = RuntimeDir::open(&parent.join("rt")).expect_err("refused");
        assert!(
            e.message.contains("its parent") && e.message.contains("every user"),
            "{e}"
        );
        // Nothing was created inside it.
        assert!(!parent.join("rt").exists());
        std::fs::remove_dir_all(&parent).ok();
    }

    #[test]
    fn open_creates_missing_parents() {
        let top = scratch("deep");
        let d = RuntimeDir::open(&top.join("a/b/rt")).expect("opened");
        assert!(d.path().ends_with("a/b/rt"));
        assert!(top.join("a/b/rt").is_dir());
        std::fs::remove_dir_all(&top).ok();
    }

    #[test]
    fn open_resolves_a_symlinked_parent_once() {
        let real = scratch("real-parent");
        let link = scratch("link-parent");
        std::fs::create_dir_all(&real).expect("mkdir");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let d = RuntimeDir::open(&link.join("rt")).expect("opened");
        assert_eq!(
            d.path(),
            std::fs::canonicalize(&real).expect("real").join("rt")
        );
        std::fs::remove_file(&link).ok();
        std::fs::remove_dir_all(&real).ok();
    }

    #[test]
    fn entries_are_reached_through_the_opened_directory_after_it_is_renamed() {
        let p = scratch("renamed");
        let moved = scratch("renamed-away");
        let d = RuntimeDir::open(&p).expect("opened");
        std::fs::rename(&p, &moved).expect("rename");
        // Someone puts a new directory where the old one was.
        std::fs::create_dir_all(&p).expect("mkdir");
        d.write_file("pingora.yaml", "version: 1\n")
            .expect("written");
        let l = d.bind("s.sock").expect("bind");
        drop(d.connect("s.sock").expect("connect"));
        drop(l);
        assert!(moved.join("pingora.yaml").exists() && moved.join("s.sock").exists());
        assert!(!p.join("pingora.yaml").exists() && !p.join("s.sock").exists());
        std::fs::remove_dir_all(&p).ok();
        std::fs::remove_dir_all(&moved).ok();
    }

    #[test]
    fn a_created_private_file_replaces_a_planted_symlink_and_leaves_its_target() {
        let p = scratch("plog");
        let d = RuntimeDir::open(&p).expect("opened");
        let outside = scratch("plog-outside");
        std::fs::write(&outside, "keep me").expect("write");
        std::os::unix::fs::symlink(&outside, p.join("check.log")).expect("symlink");
        let mut f = d.create_private("check.log").expect("created");
        f.write_all(b"output").expect("write");
        assert_eq!(std::fs::read_to_string(&outside).expect("read"), "keep me");
        let m = std::fs::symlink_metadata(p.join("check.log")).expect("meta");
        assert!(m.is_file() && m.mode() & 0o777 == 0o600);
        std::fs::remove_file(&outside).ok();
        std::fs::remove_dir_all(&p).ok();
    }

    #[test]
    fn sockets_are_bound_private() {
        let p = scratch("psock");
        let d = RuntimeDir::open(&p).expect("opened");
        let _l = d.bind("control.sock").expect("bind");
        let m = std::fs::symlink_metadata(p.join("control.sock")).expect("meta");
        assert_eq!(m.mode() & 0o777, 0o600);
        std::fs::remove_dir_all(&p).ok();
    }
}
