//! Kills under way, and the reaps they hold back.
//!
//! A kill runs off the loop and reports how many processes it ended. Its journal line must
//! come before the exit it caused, so a child that exits while a kill runs is reaped only
//! once every kill under way has reported.

#[derive(Debug, Default)]
pub struct Kills {
    pending: usize,
    reap_due: bool,
}

impl Kills {
    pub fn started(&mut self) {
        self.pending += 1;
    }

    /// A child exited: whether it may be reaped now (else once the kills have reported).
    pub fn may_reap(&mut self) -> bool {
        if self.pending > 0 {
            self.reap_due = true;
        }
        self.pending == 0
    }

    /// A kill reported: whether the reaps it held back are due now.
    pub fn finished(&mut self) -> bool {
        self.pending = self.pending.saturating_sub(1);
        self.pending == 0 && std::mem::take(&mut self.reap_due)
    }

    /// No kill under way.
    pub fn idle(&self) -> bool {
        self.pending == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_no_kill_under_way_an_exited_child_is_reaped_at_once() {
        let mut k = Kills::default();
        assert!(k.may_reap());
        assert!(k.idle());
    }

    #[test]
    fn an_exit_during_a_kill_is_reaped_once_the_last_kill_has_reported() {
        let mut k = Kills::default();
        k.started();
        k.started();
        assert!(!k.may_reap());
        assert!(!k.finished(), "one kill still runs");
        assert!(k.finished(), "the held-back reap is due");
        assert!(k.idle());
    }

    #[test]
    fn a_kill_that_held_nothing_back_calls_for_no_reap() {
        let mut k = Kills::default();
        k.started();
        assert!(!k.finished());
        assert!(k.idle());
    }

    #[test]
    fn an_exit_reaped_at_once_holds_nothing_back() {
        let mut k = Kills::default();
        assert!(k.may_reap());
        k.started();
        assert!(!k.finished(), "the exit was already reaped");
    }

    #[test]
    fn a_kill_under_way_is_not_idle() {
        let mut k = Kills::default();
        k.started();
        assert!(!k.idle());
    }

    #[test]
    fn a_held_back_reap_is_due_once_only() {
        let mut k = Kills::default();
        k.started();
        assert!(!k.may_reap());
        assert!(k.finished());
        k.started();
        assert!(!k.finished(), "the earlier reap was already done");
    }
}
