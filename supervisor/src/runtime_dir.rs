//! steward's runtime directory: the effective Pingora conf and the upgrade socket live
//! here, in a directory only the service's user can enter (mode 0700).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("runtime directory {path}: {message}")]
pub struct RuntimeDirError {
    pub path: PathBuf,
    pub message: String,
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

/// Creates the directory if needed and makes sure nobody else can enter it.
pub fn prepare(path: &Path) -> Result<(), RuntimeDirError> {
    let err = |m: String| RuntimeDirError {
        path: path.to_path_buf(),
        message: m,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| err(format!("cannot create it: {e}")))?;
    // symlink_metadata: a symlink planted in a shared directory must not redirect us.
    let meta = std::fs::symlink_metadata(path).map_err(|e| err(e.to_string()))?;
    if !meta.is_dir() {
        return Err(err("is not a directory".into()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(err(format!(
            "is owned by uid {}, not by steward's uid {me}; remove it or choose another runtime_dir",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| err(format!("cannot make it private (chmod 0700): {e}")))?;
    }
    Ok(())
}

/// Writes `name` in the directory atomically (write, fsync-free rename), mode 0600.
pub fn write_file(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, RuntimeDirError> {
    let target = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let err = |m: String| RuntimeDirError {
        path: target.clone(),
        message: m,
    };
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| err(format!("cannot write: {e}")))?;
    f.write_all(contents.as_bytes())
        .map_err(|e| err(format!("cannot write: {e}")))?;
    drop(f);
    std::fs::rename(&tmp, &target).map_err(|e| err(format!("cannot rename into place: {e}")))?;
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
}
