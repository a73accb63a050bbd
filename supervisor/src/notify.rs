//! The sd_notify side of the lifecycle: READY, STATUS, STOPPING.
//!
//! Without `NOTIFY_SOCKET` every call is a no-op, so the same code runs in a terminal,
//! a container and under systemd. Errors are logged, never fatal: a lost STATUS line must
//! not take the proxy down.

#[derive(Debug, Default, Clone)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    pub fn from_env() -> Self {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[sd_notify::NotifyState::Ready], Some(status));
    }

    pub fn status(&self, status: &str) {
        self.send(&[], Some(status));
    }

    /// `RELOADING=1` with `MONOTONIC_USEC`, as systemd 253's notify-reload requires and 252
    /// accepts.
    pub fn reloading(&self, status: &str) {
        match sd_notify::NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[sd_notify::NotifyState::Reloading, now], Some(status)),
            Err(_) => self.send(&[sd_notify::NotifyState::Reloading], Some(status)),
        }
    }

    pub fn watchdog(&self) {
        self.send(&[sd_notify::NotifyState::Watchdog], None);
    }

    pub fn stopping(&self, status: &str) {
        self.send(&[sd_notify::NotifyState::Stopping], Some(status));
    }

    /// Hands `fd` to systemd's file descriptor store under `name` (`FDSTORE=1`): systemd
    /// keeps it open across a crash and restart of steward and passes it back in
    /// `LISTEN_FDS`, with the name in `LISTEN_FDNAMES`. The unit's
    /// `FileDescriptorStoreMax=` must leave room, or systemd drops it.
    pub fn store_fd(&self, name: &str, fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
        if !self.enabled {
            return Ok(());
        }
        sd_notify::notify_with_fds(
            false,
            &[
                sd_notify::NotifyState::FdStore,
                sd_notify::NotifyState::FdName(name),
            ],
            &[fd],
        )
    }

    /// Takes the descriptors stored under `name` out of systemd's store (`FDSTOREREMOVE=1`),
    /// so systemd's copy no longer keeps the socket open.
    pub fn remove_fd(&self, name: &str) {
        self.send(
            &[
                sd_notify::NotifyState::FdStoreRemove,
                sd_notify::NotifyState::FdName(name),
            ],
            None,
        );
    }

    /// The one way out: every `STATUS=` text passes [`sanitize`] here, so no caller can
    /// forget it.
    fn send(&self, states: &[sd_notify::NotifyState<'_>], status: Option<&str>) {
        if !self.enabled {
            return;
        }
        let clean = status.map(sanitize);
        let mut all = states.to_vec();
        if let Some(text) = &clean {
            all.push(sd_notify::NotifyState::Status(text));
        }
        if let Err(e) = sd_notify::notify(false, &all) {
            tracing::warn!(error = %e, "sd_notify failed");
        }
    }
}

/// The longest `STATUS=` text sent, in bytes. systemd shows it on one line of `systemctl
/// status`; the reasons steward gives fit in a few hundred bytes, and a longer one (a path
/// or a child's output quoted in an error) is cut rather than sent whole.
pub const MAX_STATUS: usize = 1024;

/// A notify datagram is newline-separated `KEY=value` assignments, and systemd honours
/// every one of them: a newline inside a status (from a configuration path, say) would
/// add assignments of its author's choosing (`MAINPID=`, `READY=1`). So every control
/// character is written as a visible escape (`\n`, `\u{1b}`), and the text is cut to
/// [`MAX_STATUS`] bytes at a character boundary, ending in "..." when cut.
pub fn sanitize(text: &str) -> String {
    const CUT: &str = "...";
    let mut out = String::with_capacity(text.len().min(MAX_STATUS));
    // Where the text can end, whole characters and whole escapes, with room for CUT.
    let mut room_for_cut = 0;
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > MAX_STATUS {
            out.truncate(room_for_cut);
            out.push_str(CUT);
            break;
        }
        if out.len() <= MAX_STATUS - CUT.len() {
            room_for_cut = out.len();
        }
    }
    out
}

/// systemd's watchdog interval for this process (`WATCHDOG_USEC`, if `WATCHDOG_PID` is us).
pub fn watchdog_interval() -> Option<std::time::Duration> {
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(std::time::Duration::from_micros(usec))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newline_in_a_status_cannot_start_another_assignment() {
        let s = sanitize("reload failed: /nonexistent\nMAINPID=4242\nREADY=1");
        assert!(!s.contains('\n'), "{s:?}");
        assert_eq!(s, "reload failed: /nonexistent\\nMAINPID=4242\\nREADY=1");
    }

    #[test]
    fn every_control_character_is_escaped_visibly() {
        let s = sanitize("a\rb\tc\0d\u{1b}[2Je\u{7f}f\u{85}g");
        assert!(!s.chars().any(char::is_control), "{s:?}");
        assert_eq!(s, "a\\rb\\tc\\u{0}d\\u{1b}[2Je\\u{7f}f\\u{85}g");
    }

    #[test]
    fn ordinary_text_is_sent_as_it_is() {
        let text = "serving: generation 2 (child pid 4242), 3 connections — ok";
        assert_eq!(sanitize(text), text);
    }

    #[test]
    fn a_long_status_is_cut_to_the_limit_at_a_character_boundary() {
        // Three-byte characters, so the limit falls inside one of them.
        let s = sanitize(&"€".repeat(MAX_STATUS));
        assert!(s.len() <= MAX_STATUS, "{}", s.len());
        assert!(s.ends_with("€..."), "{s:?}");
        let exact = "x".repeat(MAX_STATUS);
        assert_eq!(sanitize(&exact), exact);
    }

    #[test]
    fn an_escape_is_never_cut_in_half() {
        let s = sanitize(&format!("{}\n", "x".repeat(MAX_STATUS - 1)));
        assert!(s.len() <= MAX_STATUS);
        assert!(s.ends_with("x..."), "{s:?}");
    }
}
