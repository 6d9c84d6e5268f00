//! When a push consumer's next batch starts, as pure functions of the queue's state
//! ([`Readiness`], its clock included) so that they are tested with plain numbers: the
//! batch-due rule ([`batch_wait`]) and the concurrency scaler ([`Scaler`]).

use std::time::Duration;

use super::IDLE_RECHECK;
use crate::engine::{ConsumerSettings, Readiness};

/// How many batches may be in flight: one more whenever a full batch waits while every slot is
/// busy (the backlog outgrows the consumer), down to what is running when the queue has nothing
/// visible (it drained).
#[derive(Debug)]
pub(super) struct Scaler {
    pub(super) level: u32,
}

impl Scaler {
    pub(super) fn level(&self, max: u32) -> u32 {
        self.level.clamp(1, max.max(1))
    }

    fn grow(&mut self, max: u32) {
        self.level = (self.level(max) + 1).min(max.max(1));
    }

    fn drained(&mut self, running: usize) {
        self.level = (running as u32).max(1);
    }

    /// Whether another batch may start while `busy` run, growing the level first if every
    /// slot is busy and `full_batch_waits`; at most `max` at once.
    pub(super) fn admit(&mut self, busy: u32, full_batch_waits: bool, max: u32) -> bool {
        if busy < self.level(max) {
            return true;
        }
        if full_batch_waits {
            self.grow(max);
        }
        busy < self.level(max)
    }
}

/// What the dispatcher should do about its queue, decided by [`plan`].
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Plan {
    /// Lease and start a batch now.
    Start,
    /// Nothing to start for this long (or until woken).
    Wait(Duration),
}

/// How long a batch of a queue in state `r` has yet to wait, `None` when it is due: when
/// `max_batch_size` messages are visible, or the oldest visible one has waited
/// `max_batch_timeout` seconds. Otherwise until the oldest one's timeout or (with nothing
/// visible) the next delayed message, and never longer than [`IDLE_RECHECK`].
pub(super) fn batch_wait(
    r: &Readiness,
    max_batch_size: u32,
    max_batch_timeout: u32,
) -> Option<Duration> {
    let timeout_ms = u64::from(max_batch_timeout) * 1000;
    let due = r.oldest_visible_at_ms.map(|t| t + timeout_ms);
    if r.visible >= max_batch_size || due.is_some_and(|due| due <= r.now_ms) {
        return None;
    }
    let wait = due.or(r.next_visible_at_ms).map_or(IDLE_RECHECK, |at| {
        Duration::from_millis(at.saturating_sub(r.now_ms))
    });
    Some(wait.min(IDLE_RECHECK))
}

/// Decides, from the queue's state `r` alone (its clock included), whether a batch starts now
/// with `busy` batches running: not while the queue is paused, not before the batch is due
/// ([`batch_wait`]), and not while every slot of `scaler` is busy, which grows by one when a
/// full batch waits, up to `max_concurrency`. A queue with nothing visible has drained: the
/// scaler drops to what is running.
pub(super) fn plan(
    r: &Readiness,
    settings: &ConsumerSettings,
    max_concurrency: u32,
    busy: usize,
    scaler: &mut Scaler,
) -> Plan {
    if r.paused {
        return Plan::Wait(IDLE_RECHECK);
    }
    if r.visible == 0 {
        scaler.drained(busy);
    }
    if let Some(wait) = batch_wait(r, settings.max_batch_size, settings.max_batch_timeout) {
        return Plan::Wait(wait);
    }
    let full_batch_waits = r.visible >= settings.max_batch_size;
    if scaler.admit(busy as u32, full_batch_waits, max_concurrency) {
        Plan::Start
    } else {
        // Every slot is busy: wait for a batch to finish (or more backlog).
        Plan::Wait(IDLE_RECHECK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    /// A queue at [`NOW`] with `visible` messages, the oldest visible since `oldest_ms_ago`.
    fn queue(visible: u32, oldest_ms_ago: Option<u64>) -> Readiness {
        Readiness {
            now_ms: NOW,
            visible,
            oldest_visible_at_ms: oldest_ms_ago.map(|ago| NOW - ago),
            ..Readiness::default()
        }
    }

    /// Batches of up to 10 that wait up to 1 s to fill.
    fn settings() -> ConsumerSettings {
        ConsumerSettings {
            max_batch_size: 10,
            max_batch_timeout: 1,
            ..ConsumerSettings::default()
        }
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn an_empty_queue_waits_for_its_next_delayed_message_or_rechecks() {
        assert_eq!(batch_wait(&queue(0, None), 10, 1), Some(IDLE_RECHECK));
        let delayed = |in_ms: u64| Readiness {
            next_visible_at_ms: Some(NOW + in_ms),
            ..queue(0, None)
        };
        assert_eq!(batch_wait(&delayed(300), 10, 1), Some(ms(300)));
        assert_eq!(batch_wait(&delayed(0), 10, 1), Some(Duration::ZERO));
        // Never longer than the recheck interval, however far off the delay.
        assert_eq!(batch_wait(&delayed(60_000), 10, 1), Some(IDLE_RECHECK));
    }

    #[test]
    fn a_full_batch_is_due_at_once() {
        assert_eq!(batch_wait(&queue(10, Some(0)), 10, 1), None);
        assert_eq!(batch_wait(&queue(1, Some(0)), 1, 60), None);
        // One short of full, just arrived: it waits the whole timeout.
        assert_eq!(batch_wait(&queue(9, Some(0)), 10, 1), Some(ms(1000)));
    }

    #[test]
    fn a_partial_batch_is_due_when_its_oldest_message_has_waited_the_timeout() {
        assert_eq!(batch_wait(&queue(3, Some(400)), 10, 1), Some(ms(600)));
        assert_eq!(batch_wait(&queue(3, Some(999)), 10, 1), Some(ms(1)));
        assert_eq!(batch_wait(&queue(3, Some(1000)), 10, 1), None);
        assert_eq!(batch_wait(&queue(3, Some(5000)), 10, 1), None);
        // A timeout past the recheck interval is waited for in steps of it.
        assert_eq!(batch_wait(&queue(3, Some(0)), 10, 5), Some(IDLE_RECHECK));
        assert_eq!(batch_wait(&queue(3, Some(4500)), 10, 5), Some(ms(500)));
        // No timeout: any visible message is due.
        assert_eq!(batch_wait(&queue(1, Some(0)), 10, 0), None);
    }

    #[test]
    fn a_visible_message_waits_for_its_own_timeout_not_for_a_delayed_one() {
        let r = Readiness {
            next_visible_at_ms: Some(NOW + 100),
            ..queue(3, Some(400))
        };
        assert_eq!(batch_wait(&r, 10, 1), Some(ms(600)));
    }

    #[test]
    fn a_paused_queue_starts_nothing_and_leaves_the_scaler_alone() {
        let mut scaler = Scaler { level: 3 };
        let paused = Readiness {
            paused: true,
            ..Readiness::default()
        };
        assert_eq!(
            plan(&paused, &settings(), 4, 0, &mut scaler),
            Plan::Wait(IDLE_RECHECK)
        );
        assert_eq!(scaler.level, 3, "paused is not drained");
    }

    #[test]
    fn a_drained_queue_drops_the_level_to_what_is_running() {
        let mut scaler = Scaler { level: 4 };
        let plan_empty =
            |busy, scaler: &mut Scaler| plan(&queue(0, None), &settings(), 4, busy, scaler);
        assert_eq!(plan_empty(2, &mut scaler), Plan::Wait(IDLE_RECHECK));
        assert_eq!(scaler.level(4), 2);
        assert_eq!(plan_empty(0, &mut scaler), Plan::Wait(IDLE_RECHECK));
        assert_eq!(scaler.level(4), 1, "never below one");
        // A backlog that is not due yet does not lower it.
        let mut scaler = Scaler { level: 4 };
        assert_eq!(
            plan(&queue(3, Some(0)), &settings(), 4, 0, &mut scaler),
            Plan::Wait(ms(1000))
        );
        assert_eq!(scaler.level(4), 4);
    }

    #[test]
    fn a_due_batch_starts_when_a_slot_is_free() {
        let mut scaler = Scaler { level: 2 };
        assert_eq!(
            plan(&queue(10, Some(0)), &settings(), 4, 1, &mut scaler),
            Plan::Start
        );
        assert_eq!(
            plan(&queue(3, Some(1000)), &settings(), 4, 0, &mut scaler),
            Plan::Start
        );
        assert_eq!(scaler.level(4), 2, "a free slot needs no growth");
    }

    #[test]
    fn only_a_waiting_full_batch_grows_the_level() {
        // Every slot busy, a batch due by its timeout only: wait, no growth.
        let mut scaler = Scaler { level: 1 };
        assert_eq!(
            plan(&queue(3, Some(1000)), &settings(), 4, 1, &mut scaler),
            Plan::Wait(IDLE_RECHECK)
        );
        assert_eq!(scaler.level(4), 1);
        // A full batch waits: one more slot, and it starts.
        assert_eq!(
            plan(&queue(10, Some(0)), &settings(), 4, 1, &mut scaler),
            Plan::Start
        );
        assert_eq!(scaler.level(4), 2);
    }

    #[test]
    fn the_level_climbs_one_at_a_time_to_max_concurrency_and_never_past_it() {
        let mut scaler = Scaler { level: 1 };
        let backlog = queue(10, Some(0));
        let mut busy = 0;
        while plan(&backlog, &settings(), 3, busy, &mut scaler) == Plan::Start {
            busy += 1;
            assert_eq!(scaler.level(3), busy.max(1) as u32);
            assert!(busy <= 3, "{busy} batches started");
        }
        assert_eq!(busy, 3);
        assert_eq!(
            plan(&backlog, &settings(), 3, busy, &mut scaler),
            Plan::Wait(IDLE_RECHECK)
        );
        assert_eq!(scaler.level(3), 3);
    }

    #[test]
    fn a_lowered_or_zero_max_concurrency_caps_the_level() {
        // A swap to a consumer with a lower maximum caps the level at once.
        let mut scaler = Scaler { level: 5 };
        assert_eq!(scaler.level(2), 2);
        let backlog = queue(10, Some(0));
        assert_eq!(
            plan(&backlog, &settings(), 2, 2, &mut scaler),
            Plan::Wait(IDLE_RECHECK)
        );
        assert_eq!(scaler.level(2), 2);
        // Zero means one: a batch at a time.
        let mut scaler = Scaler { level: 1 };
        assert_eq!(plan(&backlog, &settings(), 0, 0, &mut scaler), Plan::Start);
        assert_eq!(
            plan(&backlog, &settings(), 0, 1, &mut scaler),
            Plan::Wait(IDLE_RECHECK)
        );
        assert_eq!(scaler.level(0), 1);
    }
}
