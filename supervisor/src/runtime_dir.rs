//! steward's runtime directory: the effective Pingora conf and the upgrade socket live
//! here, in a directory only the service's user can enter (mode 0700).
//!
//! Nothing in it is trusted blindly: the directory itself must be a real directory (not a
//! symlink) owned by steward's user, and an entry in the way of one of steward's names is
//! replaced only when steward's user owns it. A symlink is removed, never followed; an
//! entry of another user is refused and left as it is, since only root can have planted
//! it and deleting it would hide whatever it was meant for.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

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

/// Creates the directory if needed and makes sure nobody else can enter it.
pub fn prepare(path: &Path) -> Result<(), RuntimeDirError> {
    let err = |m: String| RuntimeDirError::new(path, m);
    // Looked at before anything is created: DirBuilder would accept a symlink to a
    // directory, and steward must not be redirected by one planted in a shared directory.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_symlink() {
            let to = std::fs::read_link(path)
                .map(|t| format!(" (to {})", t.display()))
                .unwrap_or_default();
            return Err(err(format!(
                "is a symbolic link{to}; steward does not follow it: remove it, or set runtime_dir to a real directory"
            )));
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| err(format!("cannot create it: {e}{}", hint(&e))))?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| err(e.to_string()))?;
    if !meta.is_dir() {
        return Err(err(
            "is not a directory: remove it or choose another runtime_dir".into(),
        ));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(err(format!(
            "is owned by uid {}, not by steward's uid {me}; steward leaves it alone: remove it or choose another runtime_dir",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            err(format!(
                "cannot make it private (chmod 0700): {e}{}",
                hint(&e)
            ))
        })?;
    }
    // Said now, with the fix, rather than as a failed write of the first file. access()
    // also answers EROFS for a read-only mount, which root's permissions do not bypass.
    if let Err(e) = nix::unistd::access(
        path,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    ) {
        let e = std::io::Error::from(e);
        return Err(err(format!("is not writable: {e}{}", hint(&e))));
    }
    Ok(())
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
    fn of(t: std::fs::FileType) -> Entry {
        if t.is_symlink() {
            Entry::Symlink
        } else if t.is_dir() {
            Entry::Dir
        } else if t.is_socket() {
            Entry::Socket
        } else if t.is_file() {
            Entry::File
        } else {
            Entry::Other
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

/// Makes room for `name` in `dir`, where steward is about to create a socket or a file:
/// replaces a stale entry steward's user owns, refuses (and leaves alone) one of another
/// user, and with `probe`, refuses a socket a live server answers on. Returns what was
/// removed, for the log.
pub fn clear_stale(dir: &Path, name: &str, probe: bool) -> Result<Option<Entry>, RuntimeDirError> {
    let path = dir.join(name);
    let err = |m: String| RuntimeDirError::new(&path, m);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(format!("cannot inspect it: {e}"))),
    };
    let entry = Entry::of(meta.file_type());
    let me = nix::unistd::geteuid().as_raw();
    match verdict(entry, meta.uid(), me) {
        Verdict::Foreign => {
            return Err(err(format!(
                "is {} owned by uid {}, not by steward's uid {me}; steward leaves it alone: remove it (rm {}) or choose another runtime_dir",
                entry.describe(),
                meta.uid(),
                path.display()
            )))
        }
        Verdict::ProbeThenRemove => {
            if probe && std::os::unix::net::UnixStream::connect(&path).is_ok() {
                return Err(RuntimeDirError {
                    in_use: true,
                    ..err(
                        "is a live socket: another steward is running with this runtime directory; stop it, or give this one another runtime_dir".into(),
                    )
                });
            }
            std::fs::remove_file(&path)
        }
        Verdict::RemoveDir => std::fs::remove_dir(&path).map_err(|e| {
            match e.raw_os_error().map(nix::errno::Errno::from_raw) {
                Some(nix::errno::Errno::ENOTEMPTY | nix::errno::Errno::EEXIST) => {
                    std::io::Error::other("it is a directory with contents, which steward does not delete: remove it")
                }
                _ => e,
            }
        }),
        Verdict::Unlink => std::fs::remove_file(&path),
    }
    .map_err(|e| err(format!("is {} in the way and cannot be removed: {e}", entry.describe())))?;
    Ok(Some(entry))
}

/// Writes `name` in the directory atomically (write to a temporary name, rename over the
/// old one), mode 0600. On any failure the temporary file is removed and the old file is
/// left as it was: a later start never finds a half-written conf under `name`.
pub fn write_file(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, RuntimeDirError> {
    let target = dir.join(name);
    let tmp_name = format!(".{name}.tmp");
    let tmp = dir.join(&tmp_name);
    let err = |m: String| RuntimeDirError::new(&target, m);
    // The rename would replace whatever is at `name`: the same ownership rule as for the
    // sockets applies to it.
    if let Ok(meta) = std::fs::symlink_metadata(&target) {
        let me = nix::unistd::geteuid().as_raw();
        let entry = Entry::of(meta.file_type());
        if verdict(entry, meta.uid(), me) == Verdict::Foreign || entry == Entry::Dir {
            return Err(err(format!(
                "is {} owned by uid {}, which steward does not replace: remove it (rm {})",
                entry.describe(),
                meta.uid(),
                target.display()
            )));
        }
    }
    clear_stale(dir, &tmp_name, false)?;
    // create_new is O_CREAT|O_EXCL: it never follows a symlink.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| err(format!("cannot write: {e}{}", hint(&e))))?;
    let written = f.write_all(contents.as_bytes()).and_then(|()| f.flush());
    drop(f);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(format!("cannot write: {e}{}", hint(&e))));
    }
    if let Err(e) = std::fs::rename(&tmp, &target) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(format!("cannot rename into place: {e}{}", hint(&e))));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("steward-rt-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn prepare_creates_a_private_directory() {
        let p = scratch("create");
        prepare(&p).expect("prepared");
        let mode = std::fs::metadata(&p).expect("meta").mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::remove_dir_all(&p).ok();
    }

    #[test]
    fn prepare_tightens_an_open_directory() {
        let p = scratch("open");
        std::fs::create_dir_all(&p).expect("mkdir");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        prepare(&p).expect("prepared");
        assert_eq!(std::fs::metadata(&p).expect("meta").mode() & 0o777, 0o700);
        std::fs::remove_dir_all(&p).ok();
    }

    #[test]
    fn a_file_in_the_way_is_an_error() {
        let p = scratch("file");
        std::fs::write(&p, "x").expect("write");
        assert!(prepare(&p).is_err());
        std::fs::remove_file(&p).ok();
    }

    #[test]
    fn written_files_are_private() {
        let p = scratch("write");
        prepare(&p).expect("prepared");
        let f = write_file(&p, "pingora.yaml", "version: 1\n").expect("written");
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
        let e = prepare(&p).expect_err("refused");
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
        prepare(&p).expect("prepared");
        let outside = scratch("outside");
        std::fs::write(&outside, "keep me").expect("write");
        std::os::unix::fs::symlink(&outside, p.join("a")).expect("symlink");
        std::fs::write(p.join("b"), "x").expect("write");
        std::fs::create_dir(p.join("c")).expect("mkdir");
        drop(std::os::unix::net::UnixListener::bind(p.join("d")).expect("bind"));
        assert_eq!(clear_stale(&p, "a", true).expect("a"), Some(Entry::Symlink));
        assert_eq!(clear_stale(&p, "b", true).expect("b"), Some(Entry::File));
        assert_eq!(clear_stale(&p, "c", true).expect("c"), Some(Entry::Dir));
        assert_eq!(clear_stale(&p, "d", true).expect("d"), Some(Entry::Socket));
        assert_eq!(clear_stale(&p, "e", true).expect("e"), None);
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
        prepare(&p).expect("prepared");
        std::fs::create_dir(p.join("full")).expect("mkdir");
        std::fs::write(p.join("full/x"), "x").expect("write");
        let e = clear_stale(&p, "full", true).expect_err("refused");
        assert!(e.message.contains("with contents"), "{e}");
        assert!(p.join("full/x").exists());
        let _live = std::os::unix::net::UnixListener::bind(p.join("live")).expect("bind");
        let e = clear_stale(&p, "live", true).expect_err("refused");
        assert!(e.in_use && e.message.contains("another steward"), "{e}");
        assert!(p.join("live").exists());
        // Without the probe (the upgrade socket of a dead child), a socket is replaced.
        assert_eq!(
            clear_stale(&p, "live", false).expect("cleared"),
            Some(Entry::Socket)
        );
        std::fs::remove_dir_all(&p).ok();
    }

    #[test]
    fn writing_over_a_symlink_replaces_the_link_not_its_target() {
        let p = scratch("wlink");
        prepare(&p).expect("prepared");
        let outside = scratch("woutside");
        std::fs::write(&outside, "keep me").expect("write");
        std::os::unix::fs::symlink(&outside, p.join("pingora.yaml")).expect("symlink");
        std::os::unix::fs::symlink(&outside, p.join(".pingora.yaml.tmp")).expect("symlink");
        let f = write_file(&p, "pingora.yaml", "version: 1\n").expect("written");
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
        prepare(&p).expect("prepared");
        std::fs::create_dir(p.join("pingora.yaml")).expect("mkdir");
        let e = write_file(&p, "pingora.yaml", "x").expect_err("refused");
        assert!(e.message.contains("directory"), "{e}");
        std::fs::remove_dir_all(&p).ok();
    }
}
