//! Time behind a seam: the real clock for the binary, a fake one for tests of the polling logic.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub trait Clock: Sync {
    fn now(&self) -> Instant;
    fn sleep(&self, d: Duration);
    /// Asked to stop (SIGTERM, for `watch`): every wait ends as at its deadline, so the request
    /// in hand finishes and no new one starts.
    fn stopped(&self) -> bool {
        false
    }

    /// Milliseconds since the Unix epoch: what names one run apart from another (`restore`'s
    /// fresh `_replicator` ids).
    fn unix_ms(&self) -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    }
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
}

/// The real clock, stopped by a flag (set by a signal handler): sleeps in slices of at most
/// `STOP_SLICE`, so a stop is noticed within that.
pub struct Stoppable<'a> {
    pub flag: &'a AtomicBool,
}

pub const STOP_SLICE: Duration = Duration::from_millis(100);

impl Clock for Stoppable<'_> {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopped() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(STOP_SLICE));
        }
    }
    fn stopped(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// Polling interval: the first polls come quickly so a ready cluster is noticed at once; later
/// ones back off so a slow node is not hammered.
pub struct Backoff {
    next: Duration,
}

pub const FIRST_POLL: Duration = Duration::from_millis(20);
/// Low enough that a cluster which converged is noticed within a quarter second; still only
/// four requests a second per node that is waited for.
pub const MAX_POLL: Duration = Duration::from_millis(250);

impl Backoff {
    pub fn new() -> Backoff {
        Backoff { next: FIRST_POLL }
    }

    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 3 / 2).min(MAX_POLL);
        d
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// How often a long wait says that it is still waiting: often enough that a log never looks
/// stuck, seldom enough that five minutes of waiting is thirty lines.
pub const STILL_WAITING_EVERY: Duration = Duration::from_secs(10);

/// Tells a waiting loop when to say "still waiting for …, N s left".
pub struct Progress<'a> {
    clock: &'a dyn Clock,
    deadline: Instant,
    next: Instant,
}

impl<'a> Progress<'a> {
    pub fn new(clock: &'a dyn Clock, deadline: Instant) -> Progress<'a> {
        Progress {
            clock,
            deadline,
            next: clock.now() + STILL_WAITING_EVERY,
        }
    }

    /// `Some(time left)` once every `STILL_WAITING_EVERY`, else `None`.
    pub fn due(&mut self) -> Option<Duration> {
        let now = self.clock.now();
        if now < self.next {
            return None;
        }
        self.next = now + STILL_WAITING_EVERY;
        Some(self.deadline.saturating_duration_since(now))
    }
}

/// `280 s left`: whole seconds, rounded up, so the last line before the deadline is not `0 s`.
pub fn left(d: Duration) -> String {
    format!("{} s left", d.as_millis().div_ceil(1000))
}

/// Calls `attempt` until it yields `Some`, sleeping with back-off but never past `deadline`.
/// `Ok(None)` means the deadline passed first; an `Err` from `attempt` stops at once.
pub fn poll<T, E>(
    clock: &dyn Clock,
    deadline: Instant,
    mut attempt: impl FnMut() -> Result<Option<T>, E>,
) -> Result<Option<T>, E> {
    let mut backoff = Backoff::new();
    loop {
        if let Some(done) = attempt()? {
            return Ok(Some(done));
        }
        let remaining = deadline.saturating_duration_since(clock.now());
        if remaining.is_zero() {
            return Ok(None);
        }
        clock.sleep(backoff.next_delay().min(remaining));
        // No attempt at the deadline itself: it could not send a request, and its "deadline
        // reached" would hide what the last real attempt saw.
        if clock.now() >= deadline || clock.stopped() {
            return Ok(None);
        }
    }
}

#[cfg(test)]
pub mod fake {
    use super::*;
    use std::sync::Mutex;

    /// A clock that only moves when slept on.
    pub struct FakeClock {
        start: Instant,
        elapsed: Mutex<Duration>,
        pub sleeps: Mutex<Vec<Duration>>,
    }

    impl FakeClock {
        pub fn new() -> FakeClock {
            FakeClock {
                start: Instant::now(),
                elapsed: Mutex::new(Duration::ZERO),
                sleeps: Mutex::new(Vec::new()),
            }
        }
    }

    impl Default for FakeClock {
        fn default() -> Self {
            FakeClock::new()
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            self.start + *self.elapsed.lock().unwrap()
        }
        fn sleep(&self, d: Duration) {
            *self.elapsed.lock().unwrap() += d;
            self.sleeps.lock().unwrap().push(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeClock;
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn backoff_starts_quick_and_is_capped() {
        let mut b = Backoff::new();
        let delays: Vec<_> = (0..12).map(|_| b.next_delay()).collect();
        assert_eq!(delays[0], FIRST_POLL);
        assert!(delays.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*delays.last().unwrap(), MAX_POLL);
    }

    #[test]
    fn poll_never_sleeps_past_the_deadline() {
        let clock = FakeClock::new();
        let deadline = clock.now() + Duration::from_millis(2500);
        let mut calls = 0;
        let r: Result<Option<()>, ()> = poll(&clock, deadline, || {
            calls += 1;
            Ok(None)
        });
        assert_eq!(r, Ok(None));
        assert_eq!(clock.now(), deadline, "slept exactly up to the deadline");
        assert!(calls > 5, "polled {calls} times");
        let attempts_at_deadline = Mutex::new(0);
        let _: Result<Option<()>, ()> =
            poll(&clock, clock.now() + Duration::from_millis(30), || {
                *attempts_at_deadline.lock().unwrap() += 1;
                Ok(None)
            });
        assert_eq!(
            *attempts_at_deadline.lock().unwrap(),
            2,
            "at 0 ms and 20 ms, not at 30 ms"
        );
    }

    #[test]
    fn progress_is_due_at_a_modest_cadence_with_the_time_left() {
        let clock = FakeClock::new();
        let deadline = clock.now() + Duration::from_secs(25);
        let mut p = Progress::new(&clock, deadline);
        assert_eq!(p.due(), None, "not at once");
        clock.sleep(Duration::from_secs(9));
        assert_eq!(p.due(), None);
        clock.sleep(Duration::from_secs(1));
        assert_eq!(p.due(), Some(Duration::from_secs(15)));
        assert_eq!(p.due(), None, "once per period");
        clock.sleep(Duration::from_millis(10_500));
        assert_eq!(left(p.due().unwrap()), "5 s left");
    }

    #[test]
    fn a_stopped_clock_ends_waits_and_sleeps_at_once() {
        let flag = AtomicBool::new(false);
        let clock = Stoppable { flag: &flag };
        let t = Instant::now();
        clock.sleep(Duration::from_millis(30));
        assert!(t.elapsed() >= Duration::from_millis(30));
        flag.store(true, Ordering::SeqCst);
        let t = Instant::now();
        clock.sleep(Duration::from_secs(60));
        let r: Result<Option<()>, ()> = poll(&clock, t + Duration::from_secs(60), || Ok(None));
        assert_eq!(r, Ok(None));
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn poll_returns_as_soon_as_ready_and_stops_on_error() {
        let clock = FakeClock::new();
        let deadline = clock.now() + Duration::from_secs(60);
        let mut n = 0;
        assert_eq!(
            poll::<_, ()>(&clock, deadline, || {
                n += 1;
                Ok((n == 3).then_some(n))
            }),
            Ok(Some(3))
        );
        assert_eq!(clock.sleeps.lock().unwrap().len(), 2);
        assert_eq!(poll::<(), _>(&clock, deadline, || Err("401")), Err("401"));
    }
}
