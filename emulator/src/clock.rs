//! The time source for signature windows and token expiry.
//!
//! Tests use a [`ManualClock`] so that they can sign at a fixed instant, step past the 15-minute
//! SigV4 window, or let a token expire without sleeping.

use std::sync::{Arc, Mutex, PoisonError};

use time::OffsetDateTime;

/// Where the emulator reads the current time from.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The system's wall clock, in UTC.
    #[default]
    System,
    /// A clock that moves only when a test moves it.
    Manual(ManualClock),
}

impl Clock {
    /// The current instant according to this clock.
    pub fn now(&self) -> OffsetDateTime {
        match self {
            Clock::System => OffsetDateTime::now_utc(),
            Clock::Manual(clock) => clock.now(),
        }
    }
}

impl From<ManualClock> for Clock {
    fn from(clock: ManualClock) -> Self {
        Clock::Manual(clock)
    }
}

/// A clock that stands still until [`set`](Self::set) or [`advance`](Self::advance) is called.
///
/// Clones share one instant: keep a clone in the test and hand another to the emulator.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<Mutex<OffsetDateTime>>);

impl ManualClock {
    /// A clock that reads `start` until it is moved.
    pub fn new(start: OffsetDateTime) -> Self {
        ManualClock(Arc::new(Mutex::new(start)))
    }

    /// The instant the clock reads.
    pub fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the clock to `instant`, forwards or backwards.
    pub fn set(&self, instant: OffsetDateTime) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = instant;
    }

    /// Moves the clock forwards by `by`, stopping at the latest instant `time` can represent.
    pub fn advance(&self, by: std::time::Duration) {
        let mut now = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *now = later_by(*now, by);
    }
}

/// `instant + by`, saturating instead of overflowing.
pub(crate) fn later_by(instant: OffsetDateTime, by: std::time::Duration) -> OffsetDateTime {
    let by = time::Duration::try_from(by).unwrap_or(time::Duration::MAX);
    instant.saturating_add(by)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use time::macros::datetime;

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_the_instant() {
        let clock = ManualClock::new(datetime!(2025-01-01 00:00 UTC));
        let emulator_side = Clock::from(clock.clone());

        assert_eq!(emulator_side.now(), datetime!(2025-01-01 00:00 UTC));

        clock.advance(Duration::from_secs(90));
        assert_eq!(emulator_side.now(), datetime!(2025-01-01 00:01:30 UTC));

        clock.set(datetime!(2020-08-11 06:55:22 UTC));
        assert_eq!(emulator_side.now(), datetime!(2020-08-11 06:55:22 UTC));
    }
}
