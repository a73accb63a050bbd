//! What the unit reader ([`crate::unit`]) found in the unit's files, as findings: a line
//! or a value systemd ignores is a `parse-error` warning, a file that cannot be read is
//! `unreadable`. The rules about the unit's settings themselves are in [`super::rules`].

use super::findings::{Finding, Severity, PARSE_ERROR};
use crate::files::Location;
use crate::unit::{Problem, Unreadable};

/// A problem of the unit's files, worded for the report.
pub fn finding(problem: &Problem) -> Finding {
    match problem {
        Problem::Syntax { at, line, expected } => Finding::new(
            PARSE_ERROR,
            Severity::Warning,
            format!("systemd ignores the line {line:?}: expected {expected}"),
        )
        .why("systemd skips lines it cannot parse and loads the rest of the unit, so what the line meant to set does not apply")
        .fix(format!("write it as {expected}"))
        // The whole line is what systemd skips.
        .at(Some(Location {
            column: Some(1),
            ..at.clone()
        })),
        Problem::Ignored {
            at,
            key,
            value,
            expected,
        } => Finding::new(
            PARSE_ERROR,
            Severity::Warning,
            format!("systemd ignores {key}={value}: {expected}"),
        )
        .why("an invalid assignment is logged and skipped when the unit is loaded, so the previous value or the default applies")
        .fix(format!("correct the value of {key}="))
        .at(Some(at.clone())),
        Problem::Unreadable(u) => unreadable(u),
    }
}

/// A unit file or drop-in that could not be read.
pub fn unreadable(u: &Unreadable) -> Finding {
    Finding::unreadable(&u.file, u.what, &u.error)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::check::findings::UNREADABLE;

    fn at(line: usize) -> Location {
        Location::line(Path::new("x.service"), Some(line))
    }

    #[test]
    fn an_ignored_value_is_a_warning_that_names_the_assignment() {
        let f = finding(&Problem::Ignored {
            at: at(3),
            key: "TimeoutStopSec".into(),
            value: "3.sec".into(),
            expected: "invalid time span".into(),
        });
        assert_eq!((f.id, f.severity), (PARSE_ERROR, Severity::Warning));
        assert_eq!(
            f.what,
            "systemd ignores TimeoutStopSec=3.sec: invalid time span"
        );
        assert_eq!(f.fix, "correct the value of TimeoutStopSec=");
        assert_eq!(f.at, Some(at(3)));
    }

    #[test]
    fn an_unparsable_line_is_a_warning_at_its_first_column() {
        let f = finding(&Problem::Syntax {
            at: at(2),
            line: "KillMode".into(),
            expected: "Key=value",
        });
        assert_eq!((f.id, f.severity), (PARSE_ERROR, Severity::Warning));
        assert_eq!(
            f.what,
            "systemd ignores the line \"KillMode\": expected Key=value"
        );
        assert_eq!(f.fix, "write it as Key=value");
        assert_eq!(
            f.at.map(|a| a.to_string()).as_deref(),
            Some("x.service:2:1")
        );
    }

    #[test]
    fn an_unreadable_drop_in_is_an_error_naming_it() {
        let f = finding(&Problem::Unreadable(Unreadable {
            file: "./x.service.d/a.conf".into(),
            what: "drop-in",
            error: "Permission denied (os error 13)".into(),
        }));
        assert_eq!((f.id, f.severity), (UNREADABLE, Severity::Error));
        assert_eq!(
            f.what,
            "cannot read the drop-in: Permission denied (os error 13)"
        );
        assert_eq!(f.at, Some(Location::file(Path::new("x.service.d/a.conf"))));
    }
}
