//! Health probes of the serving child: the only thing that feeds systemd's watchdog
//! while it serves, and what replaces a child that stopped answering.
//!
//! Probes run at `health.interval`, or at half the watchdog's interval if that is
//! shorter, so one late probe never starves the watchdog; one probe at a time. The
//! machine counts failures in a row ([`crate::lifecycle::Event::Health`]); this module
//! keeps the totals `steward status` shows.

use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior};
use tracing::warn;

use crate::config::HealthConfig;
use crate::control::HealthStats;
use crate::effects::BoxFuture;

pub struct Health {
    tick: Option<Interval>,
    probe: Option<BoxFuture<Result<(), String>>>,
    pub stats: HealthStats,
}

/// What the next wait brought.
pub enum Next {
    /// A probe is due: start one with [`Health::begin`] (or say why not).
    Due,
    /// The running probe is over: whether it passed.
    Probed(bool),
}

/// How often the serving child is probed; `None`: never.
pub fn interval(cfg: &HealthConfig, watchdog: Option<Duration>) -> Option<Duration> {
    match watchdog {
        Some(w) => Some(cfg.interval.min(w / 2)),
        None if cfg.failures > 0 => Some(cfg.interval),
        None => None,
    }
}

impl Health {
    pub fn new(every: Option<Duration>) -> Health {
        let tick = every.map(|d| {
            let mut i = tokio::time::interval(d);
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            i
        });
        Health {
            tick,
            probe: None,
            stats: HealthStats::default(),
        }
    }

    /// Whether a probe is running (a due tick then starts none).
    pub fn probing(&self) -> bool {
        self.probe.is_some()
    }

    pub fn begin(&mut self, probe: BoxFuture<Result<(), String>>) {
        self.probe = Some(probe);
    }

    /// Waits for a due probe or the running probe's answer; forever if neither comes.
    pub async fn next(&mut self) -> Next {
        let probe = async {
            match &mut self.probe {
                Some(p) => p.await,
                None => std::future::pending().await,
            }
        };
        let tick = async {
            match &mut self.tick {
                Some(i) => i.tick().await,
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            r = probe => r,
            _ = tick => return Next::Due,
        };
        self.probe = None;
        Next::Probed(self.record(result))
    }

    fn record(&mut self, result: Result<(), String>) -> bool {
        match result {
            Ok(()) => self.stats.passed += 1,
            Err(e) => {
                warn!(steward_phase = "serving", "health probe: {e}");
                self.stats.failed += 1;
                self.stats.last_failure = Some(e);
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(failures: u32) -> HealthConfig {
        HealthConfig {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            failures,
        }
    }

    #[test]
    fn the_watchdog_gets_a_probe_at_least_twice_per_interval() {
        let every = interval(&cfg(0), Some(Duration::from_secs(6)));
        assert_eq!(every, Some(Duration::from_secs(3)));
    }

    #[test]
    fn without_watchdog_or_replacement_nothing_is_probed() {
        assert_eq!(interval(&cfg(0), None), None);
        assert_eq!(interval(&cfg(3), None), Some(Duration::from_secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_is_counted_with_its_reason() {
        let mut h = Health::new(None);
        h.begin(Box::pin(async { Err("refused".to_string()) }));
        assert!(matches!(h.next().await, Next::Probed(false)));
        assert_eq!(h.stats.failed, 1);
        assert_eq!(h.stats.last_failure.as_deref(), Some("refused"));
        assert!(!h.probing());
    }
}
