//! The sd_notify side of the lifecycle: READY, STATUS, STOPPING.
//!
//! Without `NOTIFY_SOCKET` every call is a no-op, so the same code runs in a terminal,
//! a container and under systemd. Errors are logged, never fatal: a lost STATUS line must
//! not take the proxy down.

#[derive(Debug, Default)]
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
        self.send(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(status),
        ]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[sd_notify::NotifyState::Status(status)]);
    }

    /// `RELOADING=1` with `MONOTONIC_USEC`, as systemd 253's notify-reload requires and 252
    /// accepts.
    pub fn reloading(&self, status: &str) {
        match sd_notify::NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[
                sd_notify::NotifyState::Reloading,
                now,
                sd_notify::NotifyState::Status(status),
            ]),
            Err(_) => self.send(&[
                sd_notify::NotifyState::Reloading,
                sd_notify::NotifyState::Status(status),
            ]),
        }
    }

    pub fn watchdog(&self) {
        self.send(&[sd_notify::NotifyState::Watchdog]);
    }

    pub fn stopping(&self, status: &str) {
        self.send(&[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status(status),
        ]);
    }

    fn send(&self, states: &[sd_notify::NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(false, states) {
            tracing::warn!(error = %e, "sd_notify failed");
        }
    }
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
