//! When the draining generations' requests in flight are counted.
//!
//! The count runs on the I/O worker ([`crate::tcp::drain`]); this decides its rhythm:
//! every `stop.drain_poll` while a generation drains by connections, never faster than
//! [`PROCFS_DRAIN_POLL`] where netlink is refused (each count then reads the whole
//! `/proc/net/tcp`, whose cost grows with every socket of the host), and one count at a
//! time, so a slow count on a busy host is never queued behind itself.

use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior};

/// The slowest drain poll where netlink is refused.
pub const PROCFS_DRAIN_POLL: Duration = Duration::from_millis(100);

#[derive(Default)]
pub struct DrainPoll {
    tick: Option<Interval>,
    counting: bool,
}

impl DrainPoll {
    /// Starts polling, unless it already runs. `netlink`: socket facts are cheap.
    pub fn start(&mut self, every: Duration, netlink: bool) {
        if self.tick.is_some() {
            return;
        }
        let every = match netlink {
            true => every,
            false => every.max(PROCFS_DRAIN_POLL),
        };
        let mut i = tokio::time::interval(every);
        i.set_missed_tick_behavior(MissedTickBehavior::Delay);
        self.tick = Some(i);
    }

    /// Nothing drains any more.
    pub fn stop(&mut self) {
        self.tick = None;
    }

    /// Waits for the next poll; forever while stopped.
    pub async fn tick(&mut self) {
        match &mut self.tick {
            Some(i) => {
                i.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// Whether a count may begin now (none is running); if so, it counts as begun.
    pub fn begin(&mut self) -> bool {
        !std::mem::replace(&mut self.counting, true)
    }

    /// The running count is over.
    pub fn counted(&mut self) {
        self.counting = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn without_netlink_the_poll_is_never_faster_than_the_procfs_floor() {
        let mut p = DrainPoll::default();
        p.start(Duration::from_millis(5), false);
        p.tick().await;
        let t0 = tokio::time::Instant::now();
        p.tick().await;
        assert_eq!(t0.elapsed(), PROCFS_DRAIN_POLL);
    }

    #[tokio::test(start_paused = true)]
    async fn with_netlink_the_configured_poll_holds() {
        let mut p = DrainPoll::default();
        p.start(Duration::from_millis(5), true);
        p.tick().await;
        let t0 = tokio::time::Instant::now();
        p.tick().await;
        assert_eq!(t0.elapsed(), Duration::from_millis(5));
    }

    #[test]
    fn one_count_at_a_time() {
        let mut p = DrainPoll::default();
        assert!(p.begin());
        assert!(!p.begin());
        p.counted();
        assert!(p.begin());
    }
}
