//! Shared by the `fuzz_*` property tests.
//!
//! Short by default so that `make test` stays quick; `PROPTEST_CASES=100000` (see
//! `make fuzz`) turns the same properties into a long fuzzing run.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

/// `cases` unless PROPTEST_CASES says otherwise. Failures are not written to
/// proptest-regressions/: a failure found here becomes a named regression test instead.
pub fn config(cases: u32) -> Config {
    let from_env = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok());
    Config {
        cases: from_env.unwrap_or(cases),
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    }
}

/// How many lines an editor can put the cursor on: a position just after a final newline
/// is on the last, empty line.
pub fn line_count(text: &str) -> usize {
    text.split('\n').count()
}

/// A line (and column, when given) that exists in `text`, 1-based, columns in characters.
pub fn position_is_inside(text: &str, line: Option<usize>, column: Option<usize>) -> bool {
    let Some(line) = line else {
        return column.is_none();
    };
    if line == 0 || line > line_count(text) {
        return false;
    }
    match column {
        None => true,
        Some(c) => {
            let chars = text
                .split('\n')
                .nth(line - 1)
                .map_or(0, |l| l.chars().count());
            c >= 1 && c <= chars + 1
        }
    }
}

/// Text that looks like what people type, and some that does not.
pub fn any_text() -> BoxedStrategy<String> {
    prop_oneof![
        any::<String>(),
        "[ -~\t\n]{0,300}",
        proptest::collection::vec(any::<u8>(), 0..300)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
    .boxed()
}

/// A change to a text at a character boundary: a deletion, an insertion or a duplicated span.
pub fn mutate(text: &str, ops: &[(usize, usize, u8, String)]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for (at, len, kind, insert) in ops {
        let at = if chars.is_empty() {
            0
        } else {
            at % (chars.len() + 1)
        };
        let end = (at + len).min(chars.len());
        match kind % 3 {
            0 => {
                chars.drain(at..end);
            }
            1 => {
                chars.splice(at..at, insert.chars());
            }
            _ => {
                let copy: Vec<char> = chars[at..end].to_vec();
                chars.splice(at..at, copy);
            }
        }
    }
    chars.into_iter().collect()
}

pub fn mutations() -> impl Strategy<Value = Vec<(usize, usize, u8, String)>> {
    proptest::collection::vec(
        (
            any::<usize>(),
            0usize..20,
            any::<u8>(),
            prop_oneof![
                "[ -~\n]{0,8}",
                Just("\n".to_string()),
                Just("=".to_string()),
                Just("[".to_string()),
                Just("\"".to_string())
            ],
        ),
        1..4,
    )
}

/// A directory removed when dropped, so a run leaves nothing in /tmp.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("steward-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
