//! What `steward status` remembers of the last reload or stop: its events, each with its
//! time from the start, and the last event of all.

use std::collections::VecDeque;

use tokio::time::Instant;

use crate::control::TimelineEntry;

/// How many timeline entries `steward status` keeps.
const TIMELINE_MAX: usize = 64;

#[derive(Default)]
pub struct Timeline {
    entries: VecDeque<(Instant, String)>,
    /// When the reload or stop began; `None`: none yet, only the last event is kept.
    origin: Option<Instant>,
    last: Option<String>,
}

impl Timeline {
    /// Starts a new timeline (a reload or a stop).
    pub fn begin(&mut self, now: Instant) {
        self.entries.clear();
        self.origin = Some(now);
    }

    pub fn record(&mut self, now: Instant, text: &str) {
        self.last = Some(text.to_string());
        if self.origin.is_some() {
            if self.entries.len() >= TIMELINE_MAX {
                self.entries.pop_front();
            }
            self.entries.push_back((now, text.to_string()));
        }
    }

    pub fn last(&self) -> Option<String> {
        self.last.clone()
    }

    pub fn entries(&self, now: Instant) -> Vec<TimelineEntry> {
        let origin = self.origin.unwrap_or(now);
        self.entries
            .iter()
            .map(|(t, e)| TimelineEntry {
                at_ms: t.saturating_duration_since(origin).as_millis() as u64,
                event: e.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn entries_are_timed_from_the_begin() {
        let t0 = Instant::now();
        let mut t = Timeline::default();
        t.begin(t0);
        t.record(t0 + Duration::from_millis(250), "reload done");
        let e = t.entries(t0);
        assert_eq!((e[0].at_ms, e[0].event.as_str()), (250, "reload done"));
    }

    #[test]
    fn before_any_begin_only_the_last_event_is_kept() {
        let mut t = Timeline::default();
        t.record(Instant::now(), "serving");
        assert!(t.entries(Instant::now()).is_empty());
        assert_eq!(t.last().as_deref(), Some("serving"));
    }

    #[test]
    fn a_long_timeline_keeps_its_newest_entries() {
        let t0 = Instant::now();
        let mut t = Timeline::default();
        t.begin(t0);
        for i in 0..TIMELINE_MAX + 3 {
            t.record(t0, &i.to_string());
        }
        let e = t.entries(t0);
        assert_eq!(e.len(), TIMELINE_MAX);
        assert_eq!(e[0].event, "3");
    }
}
