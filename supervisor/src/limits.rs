//! The child's open-file limit (`child.nofile`).
//!
//! systemd starts services with a soft `RLIMIT_NOFILE` of 1024 (kept low for programs
//! that still use `select()`) and a much higher hard limit, and expects a program that
//! wants more to raise its own soft limit. Pingora 0.9.1 does not, so a proxy at 1024
//! descriptors (a client, an upstream connection and, with a local origin, its accepted
//! socket per request) fails at a few hundred concurrent requests. steward raises the
//! child's soft limit to the hard limit by default.
//!
//! The decision is a plain function of the setting and steward's own limit, made in the
//! parent before the fork; the child applies it with one `setrlimit` between fork and
//! exec ([`super::child::spawn`]). steward's own limit is left alone: it holds a few dozen
//! descriptors, and a leak of its own should hit the low limit rather than hide under a
//! raised one.

use std::fmt;

use nix::sys::resource::{getrlimit, Resource};

/// The lowest `child.nofile` accepted: a server needs descriptors for its runtime
/// (epoll, eventfds, pipes), its listeners and its logs before the first client; below
/// this it cannot start at all, which is a typo rather than a choice.
pub const MIN_NOFILE: u64 = 64;

/// `child.nofile` as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NofileSetting {
    /// The soft limit raised to the hard limit (the default).
    #[default]
    Max,
    /// steward's own limits passed on unchanged.
    Inherit,
    /// This soft limit, which must not exceed the hard limit.
    Soft(u64),
}

impl fmt::Display for NofileSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NofileSetting::Max => f.write_str("\"max\""),
            NofileSetting::Inherit => f.write_str("\"inherit\""),
            NofileSetting::Soft(n) => write!(f, "{n}"),
        }
    }
}

/// A soft and a hard `RLIMIT_NOFILE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nofile {
    pub soft: u64,
    pub hard: u64,
}

/// What the child gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildNofile {
    /// The limits the child runs with.
    pub limit: Nofile,
    /// Whether the child must call `setrlimit` (false: it inherits steward's as they are).
    pub apply: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NofileError {
    #[error("child.nofile = {wanted} is above the open-file hard limit steward was given ({hard}); only root may raise a hard limit")]
    AboveHard { wanted: u64, hard: u64 },
    #[error("cannot read steward's open-file limit (getrlimit RLIMIT_NOFILE): {0}")]
    Read(#[from] nix::errno::Errno),
}

impl NofileError {
    /// How an operator fixes it.
    pub fn fix(&self) -> &'static str {
        match self {
            NofileError::AboveHard { .. } => {
                "raise LimitNOFILE= in the unit (or `ulimit -Hn` where steward is started), or set child.nofile = \"max\""
            }
            NofileError::Read(_) => "set child.nofile = \"inherit\"",
        }
    }
}

/// The child's limits for `setting` when steward's own are `own`.
pub fn decide(setting: NofileSetting, own: Nofile) -> Result<ChildNofile, NofileError> {
    let soft = match setting {
        NofileSetting::Inherit => {
            return Ok(ChildNofile {
                limit: own,
                apply: false,
            })
        }
        NofileSetting::Max => own.hard,
        // Refused rather than clamped: the operator asked for a number the service cannot
        // have, and a silently smaller limit would surface later as refused connections.
        NofileSetting::Soft(n) if n > own.hard => {
            return Err(NofileError::AboveHard {
                wanted: n,
                hard: own.hard,
            })
        }
        NofileSetting::Soft(n) => n,
    };
    Ok(ChildNofile {
        limit: Nofile {
            soft,
            hard: own.hard,
        },
        apply: soft != own.soft,
    })
}

/// steward's own `RLIMIT_NOFILE`.
pub fn own() -> Result<Nofile, NofileError> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok(Nofile { soft, hard })
}

/// [`decide`] against steward's own limits, read now.
pub fn for_child(setting: NofileSetting) -> Result<ChildNofile, NofileError> {
    decide(setting, own()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSTEMD: Nofile = Nofile {
        soft: 1024,
        hard: 524288,
    };

    #[test]
    fn max_raises_the_soft_limit_to_the_hard_limit() {
        let d = decide(NofileSetting::Max, SYSTEMD).unwrap();
        assert_eq!(
            d.limit,
            Nofile {
                soft: 524288,
                hard: 524288
            }
        );
        assert!(d.apply);
    }

    #[test]
    fn max_with_the_soft_limit_already_at_the_hard_limit_changes_nothing() {
        let own = Nofile {
            soft: 4096,
            hard: 4096,
        };
        let d = decide(NofileSetting::Max, own).unwrap();
        assert_eq!(d.limit, own);
        assert!(!d.apply);
    }

    #[test]
    fn inherit_passes_steward_s_limits_on_unchanged() {
        let d = decide(NofileSetting::Inherit, SYSTEMD).unwrap();
        assert_eq!(d.limit, SYSTEMD);
        assert!(!d.apply);
    }

    #[test]
    fn a_number_at_or_below_the_hard_limit_becomes_the_soft_limit() {
        let d = decide(NofileSetting::Soft(65536), SYSTEMD).unwrap();
        assert_eq!(
            d.limit,
            Nofile {
                soft: 65536,
                hard: 524288
            }
        );
        assert!(d.apply);
        let at = decide(NofileSetting::Soft(524288), SYSTEMD).unwrap();
        assert_eq!(at.limit.soft, 524288);
    }

    #[test]
    fn a_number_below_the_current_soft_limit_lowers_it() {
        let d = decide(NofileSetting::Soft(512), SYSTEMD).unwrap();
        assert_eq!(d.limit.soft, 512);
        assert!(d.apply);
    }

    #[test]
    fn a_number_equal_to_the_current_soft_limit_needs_no_setrlimit() {
        let d = decide(NofileSetting::Soft(1024), SYSTEMD).unwrap();
        assert!(!d.apply);
    }

    #[test]
    fn a_number_above_the_hard_limit_is_refused_naming_both() {
        let e = decide(NofileSetting::Soft(524289), SYSTEMD).unwrap_err();
        assert_eq!(
            e,
            NofileError::AboveHard {
                wanted: 524289,
                hard: 524288
            }
        );
        let text = e.to_string();
        assert!(text.contains("524289") && text.contains("524288"), "{text}");
        assert!(e.fix().contains("LimitNOFILE="));
    }

    #[test]
    fn steward_s_own_limit_is_readable_and_consistent() {
        let own = own().unwrap();
        assert!(own.soft <= own.hard, "{own:?}");
    }
}
