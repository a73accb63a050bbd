//! `--log-target auto` (the default): journald only when standard error is the journal
//! stream `JOURNAL_STREAM` names, not whenever the variable is set.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("steward-log-target-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stream_of(path: &Path) -> String {
    let m = std::fs::metadata(path).expect("metadata");
    format!("{}:{}", m.dev(), m.ino())
}

/// `steward run` on a configuration that does not exist (one error record, exit 78), its
/// stderr in `<dir>/stderr`, with `JOURNAL_STREAM` set by `stream(stderr path)`; what
/// stderr got.
fn run_with_journal_stream(dir: &Path, stream: impl FnOnce(&Path) -> String) -> String {
    let stderr_path = dir.join("stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let status = Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(["run", "--config"])
        .arg(dir.join("missing.toml"))
        .env("JOURNAL_STREAM", stream(&stderr_path))
        .env_remove("INVOCATION_ID")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .status()
        .expect("steward runs");
    assert_eq!(status.code(), Some(78));
    std::fs::read_to_string(&stderr_path).expect("stderr")
}

#[test]
fn a_journal_stream_that_is_not_stderr_leaves_the_records_on_stderr() {
    let dir = TempDir::new("other");
    let other = dir.0.join("other");
    std::fs::write(&other, "").expect("other file");
    let err = run_with_journal_stream(&dir.0, |_| stream_of(&other));
    assert!(err.contains("configuration error"), "{err}");
    assert!(err.contains("missing.toml"), "{err}");
    assert!(!err.contains("journald"), "{err}");
}

#[test]
fn a_malformed_journal_stream_leaves_the_records_on_stderr() {
    let dir = TempDir::new("malformed");
    let err = run_with_journal_stream(&dir.0, |_| "yes".into());
    assert!(err.contains("configuration error"), "{err}");
    assert!(!err.contains("journald"), "{err}");
}

#[test]
fn a_journal_stream_naming_stderr_sends_the_records_to_journald() {
    let dir = TempDir::new("same");
    let err = run_with_journal_stream(&dir.0, stream_of);
    // Where no journald listens, steward says so and falls back to stderr.
    assert!(
        err.contains("journald unavailable") || !err.contains("configuration error"),
        "{err}"
    );
}
