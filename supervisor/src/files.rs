//! Reading operator files safely: regular files only, never more than a cap.
//!
//! steward reads its own TOML, the operator's Pingora YAML and a child's `-t` output
//! while it supervises. A FIFO put at one of those paths would hang the read forever,
//! and `/dev/zero` or a runaway `-t` would fill memory. So a file is opened without
//! blocking, must be a regular file, and is read up to a cap; anything else is an error
//! that names the file and what it is.
//!
//! A place in such a file is a [`Location`]: where `steward check` points a finding, and
//! where the unit reader saw a setting.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Caps for steward's own files: far above any real configuration.
pub const CONFIG_MAX: u64 = 1024 * 1024;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("is a {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("is larger than {max} bytes ({size} bytes)")]
    TooLarge { size: u64, max: u64 },
    #[error("is not UTF-8 text")]
    NotText,
}

impl ReadError {
    /// The underlying I/O error's kind, where there is one.
    pub fn kind(&self) -> Option<io::ErrorKind> {
        match self {
            ReadError::Io(e) => Some(e.kind()),
            _ => None,
        }
    }
}

/// The whole text of `path`, a regular file of at most `max` bytes.
pub fn read_text(path: &Path, max: u64) -> Result<String, ReadError> {
    let bytes = read_capped(path, max, false)?;
    String::from_utf8(bytes).map_err(|_| ReadError::NotText)
}

/// [`read_text`] with [`CONFIG_MAX`], as an `io::Result`: for code that reports I/O
/// errors as they are (a special file or an oversized one is `InvalidInput` with the
/// reason).
pub fn read_to_string(path: &Path) -> io::Result<String> {
    read_text(path, CONFIG_MAX).map_err(|e| match e {
        ReadError::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidInput, other.to_string()),
    })
}

/// At most the last `max` bytes of `path` (a regular file), lossily decoded: for a
/// child's output, whose end says why it failed.
pub fn read_tail(path: &Path, max: u64) -> Result<String, ReadError> {
    let bytes = read_capped(path, max, true)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// [`read_tail`] of a file steward holds open (a `-t` run's output, created by steward):
/// read through the descriptor from the start, whatever its offset.
pub fn read_tail_of(f: File, max: u64) -> Result<String, ReadError> {
    let bytes = read_capped_from(f, max, true)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn read_capped(path: &Path, max: u64, tail: bool) -> Result<Vec<u8>, ReadError> {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)?;
    read_capped_from(f, max, tail)
}

fn read_capped_from(mut f: File, max: u64, tail: bool) -> Result<Vec<u8>, ReadError> {
    let meta = f.metadata()?;
    let ft = meta.file_type();
    if !ft.is_file() {
        return Err(ReadError::NotRegular(describe_type(&ft)));
    }
    let size = meta.len();
    if size > max {
        if !tail {
            return Err(ReadError::TooLarge { size, max });
        }
        io::Seek::seek(&mut f, io::SeekFrom::Start(size - max))?;
    } else {
        io::Seek::seek(&mut f, io::SeekFrom::Start(0))?;
    }
    let mut buf = Vec::with_capacity(size.min(max) as usize);
    // The file may grow while it is read: never past the cap.
    Read::take(&mut f as &mut File, max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        if tail {
            buf.drain(..buf.len() - max as usize);
        } else {
            return Err(ReadError::TooLarge {
                size: buf.len() as u64,
                max,
            });
        }
    }
    Ok(buf)
}

/// A place in a file. `line` and `column` are 1-based; either may be unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

/// `./pingora.yaml` as `pingora.yaml`, `/etc/./x` as `/etc/x`: paths as an operator writes them.
pub fn tidy(path: &Path) -> PathBuf {
    let tidy: PathBuf = path
        .components()
        .filter(|c| *c != std::path::Component::CurDir)
        .collect();
    if tidy.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        tidy
    }
}

impl Location {
    pub fn file(file: &Path) -> Location {
        Location {
            file: tidy(file),
            line: None,
            column: None,
        }
    }

    pub fn line(file: &Path, line: Option<usize>) -> Location {
        Location {
            line,
            ..Location::file(file)
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        Ok(())
    }
}

fn describe_type(ft: &std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("steward-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    #[test]
    fn a_regular_file_is_read_whole() {
        let d = scratch("whole");
        std::fs::write(d.join("a"), "x: 1\n").expect("write");
        assert_eq!(read_text(&d.join("a"), 100).expect("read"), "x: 1\n");
    }

    #[test]
    fn a_fifo_is_refused_at_once_instead_of_waiting_for_a_writer() {
        let d = scratch("fifo");
        let p = d.join("f");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        let e = read_text(&p, 100).expect_err("a FIFO");
        assert_eq!(e.to_string(), "is a FIFO, not a regular file");
    }

    #[test]
    fn a_character_device_is_refused() {
        let e = read_text(Path::new("/dev/zero"), 100).expect_err("a device");
        assert_eq!(e.to_string(), "is a character device, not a regular file");
    }

    #[test]
    fn a_file_over_the_cap_is_refused_with_its_size() {
        let d = scratch("big");
        std::fs::write(d.join("a"), vec![b'x'; 101]).expect("write");
        let e = read_text(&d.join("a"), 100).expect_err("too large");
        assert_eq!(e.to_string(), "is larger than 100 bytes (101 bytes)");
    }

    #[test]
    fn the_tail_of_a_long_output_is_its_last_bytes() {
        let d = scratch("tail");
        let mut text = "a".repeat(1000);
        text.push_str("the reason");
        std::fs::write(d.join("out"), &text).expect("write");
        assert_eq!(read_tail(&d.join("out"), 10).expect("read"), "the reason");
    }

    #[test]
    fn location_shows_the_column_only_with_a_line() {
        let mut at = Location::line(Path::new("p.yaml"), Some(2));
        at.column = Some(7);
        assert_eq!(at.to_string(), "p.yaml:2:7");
        assert_eq!(Location::file(Path::new("p.yaml")).to_string(), "p.yaml");
    }

    #[test]
    fn paths_lose_their_dot_components() {
        assert_eq!(tidy(Path::new("./p.yaml")), PathBuf::from("p.yaml"));
        assert_eq!(
            tidy(Path::new("/etc/./steward/p.yaml")),
            PathBuf::from("/etc/steward/p.yaml")
        );
    }

    #[test]
    fn a_directory_is_refused() {
        let d = scratch("dir");
        let e = read_text(&d, 100).expect_err("a directory");
        assert_eq!(e.to_string(), "is a directory, not a regular file");
    }
}
