//! The replication scheduler's bookkeeping as pure functions of a clock the caller passes in
//! (after `couch_replicator_scheduler.erl`): a job's history, newest first; how many crashes in
//! a row it has had; when a crashed job may run again (trap 18); which tick of the scheduler
//! restarts it; and the state a job shows.
//!
//! Times are wall-clock durations since the Unix epoch: they end up in `last_updated` and in
//! the history's timestamps.

use std::time::Duration;

/// At most this many events are kept per job (`[replicator] max_history`).
pub const MAX_HISTORY: usize = 20;
/// The backoff stops doubling after 2^10 (`?MAX_BACKOFF_EXPONENT`).
const MAX_BACKOFF_EXPONENT: u32 = 10;

/// What happened to a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Added,
    Started,
    /// With the reason shown in `/_scheduler/*`.
    Crashed(String),
    /// CouchDB records it when its scheduler stops a running job (rotating it out beyond
    /// `max_jobs`); the simulator never does, but `consecutive_crashes` and `may_start` read it
    /// as CouchDB's do, and their tests use it.
    #[allow(dead_code)]
    Stopped,
}

impl Event {
    /// The `type` in `/_scheduler/jobs`' history.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Added => "added",
            Event::Started => "started",
            Event::Crashed(_) => "crashed",
            Event::Stopped => "stopped",
        }
    }
}

/// A job's events, newest first (as `/_scheduler/jobs` lists them).
#[derive(Debug, Clone, PartialEq)]
pub struct History(Vec<(Duration, Event)>);

impl History {
    pub fn added(at: Duration) -> History {
        History(vec![(at, Event::Added)])
    }

    pub fn push(&mut self, at: Duration, e: Event) {
        self.0.insert(0, (at, e));
        self.0.truncate(MAX_HISTORY);
    }

    pub fn events(&self) -> &[(Duration, Event)] {
        &self.0
    }

    /// When the newest event happened (`last_updated`).
    pub fn last_updated(&self) -> Duration {
        self.0.first().map(|(t, _)| *t).unwrap_or_default()
    }

    /// The newest crash, if any.
    pub fn latest_crash(&self) -> Option<(Duration, &str)> {
        self.0.iter().find_map(|(t, e)| match e {
            Event::Crashed(r) => Some((*t, r.as_str())),
            _ => None,
        })
    }

    /// Crashes in a row (`error_count`): each crash that came within `health` of the event
    /// before it counts, a slower one ends the streak, and so does a stop after a start.
    pub fn consecutive_crashes(&self, health: Duration) -> u32 {
        let mut count = 0;
        let mut rest = &self.0[..];
        while let Some(((t, e), tail)) = rest.split_first() {
            match (e, tail.first()) {
                (Event::Crashed(_), Some((prev, _))) => {
                    if t.saturating_sub(*prev) > health {
                        return count;
                    }
                    count += 1;
                }
                (Event::Stopped, Some((_, Event::Started))) => return count,
                _ => {}
            }
            rest = tail;
        }
        count
    }

    /// Whether the scheduler may start the job now: never crashed, stopped on purpose, or its
    /// backoff since the newest crash has passed.
    pub fn may_start(&self, now: Duration, base: Duration, health: Duration) -> bool {
        match self.0.as_slice() {
            [(_, Event::Added)] | [(_, Event::Stopped), ..] => true,
            _ => {
                let crashed_at = self.latest_crash().map(|(t, _)| t).unwrap_or_default();
                now.saturating_sub(crashed_at) >= backoff(base, self.consecutive_crashes(health))
            }
        }
    }
}

/// How long a job that crashed `crashes` times in a row waits: `base` × 2^(crashes − 1),
/// nothing when it never crashed.
pub fn backoff(base: Duration, crashes: u32) -> Duration {
    match crashes {
        0 => Duration::ZERO,
        n => base * (1u32 << (n - 1).min(MAX_BACKOFF_EXPONENT)),
    }
}

/// The scheduler ticks every `interval` from `boot`: the first tick strictly after `t`.
pub fn next_tick(boot: Duration, interval: Duration, t: Duration) -> Duration {
    if interval.is_zero() || t < boot {
        return boot;
    }
    let n = (t - boot).as_nanos() / interval.as_nanos() + 1;
    boot + Duration::from_nanos((interval.as_nanos() * n) as u64)
}

/// The state `/_scheduler/docs` shows for a job in the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Pending,
    Running,
    Crashing,
}

impl State {
    /// A job runs while it has a process; without one it is crashing if it crashed lately.
    pub fn of(has_process: bool, crashes: u32) -> State {
        match (has_process, crashes) {
            (true, _) => State::Running,
            (false, 0) => State::Pending,
            (false, _) => State::Crashing,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Crashing => "crashing",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(120);

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// History from oldest to newest, as (second, event).
    fn history(events: &[(u64, Event)]) -> History {
        let mut h = History(Vec::new());
        for (t, e) in events {
            h.push(s(*t), e.clone());
        }
        h
    }

    fn crashed() -> Event {
        Event::Crashed("boom".into())
    }

    #[test]
    fn backoff_doubles_from_the_base_and_stops_at_two_to_the_tenth() {
        let base = s(30);
        assert_eq!(backoff(base, 0), Duration::ZERO);
        assert_eq!(backoff(base, 1), s(30));
        assert_eq!(backoff(base, 2), s(60));
        assert_eq!(backoff(base, 3), s(120));
        assert_eq!(backoff(base, 11), s(30 * 1024));
        assert_eq!(backoff(base, 40), s(30 * 1024));
    }

    #[test]
    fn crash_streaks() {
        use Event::*;
        let cases: Vec<(u32, Vec<(u64, Event)>)> = vec![
            (0, vec![(0, Added)]),
            (0, vec![(0, Stopped)]),
            (0, vec![(0, crashed())]),
            (1, vec![(0, Added), (0, crashed())]),
            (1, vec![(0, crashed()), (0, crashed())]),
            (1, vec![(0, Added), (0, Started), (0, crashed())]),
            (
                3,
                vec![(0, Added), (0, crashed()), (0, crashed()), (0, crashed())],
            ),
            (
                2,
                vec![(0, Started), (1, crashed()), (2, Started), (3, crashed())],
            ),
            (
                0,
                vec![(0, Started), (1, crashed()), (2, Started), (3, Stopped)],
            ),
            (
                1,
                vec![(0, Started), (1, Stopped), (2, Started), (3, crashed())],
            ),
            (0, vec![(0, Started), (999, crashed())]),
            (
                1,
                vec![
                    (0, Started),
                    (997, crashed()),
                    (998, Started),
                    (999, crashed()),
                ],
            ),
        ];
        for (want, events) in cases {
            assert_eq!(history(&events).consecutive_crashes(H), want, "{events:?}");
        }
    }

    /// Transcript 14: a crash 39 s after the start restarted on the tick 73 s later; the next
    /// crash, 6 s after that restart, waited 60 s and restarted on the tick after, 114 s later.
    #[test]
    fn the_recorded_restarts() {
        let (base, interval) = (s(30), s(60));
        let boot = s(0);
        let mut h = history(&[(303, Event::Added), (303, Event::Started)]);
        h.push(s(342), Event::Crashed("Failure on target commit".into()));
        assert_eq!(h.consecutive_crashes(H), 1);
        let mut t = next_tick(boot, interval, s(342));
        assert_eq!(t, s(360));
        assert!(!h.may_start(t, base, H), "30 s have not passed");
        t = next_tick(boot, interval, t);
        assert!(h.may_start(t, base, H));
        assert_eq!(t, s(420));
        h.push(t, Event::Started);
        assert_eq!(
            h.consecutive_crashes(H),
            1,
            "error_count stays 1 while running"
        );
        h.push(s(426), Event::Crashed("revs_diff_failed 401".into()));
        assert_eq!(h.consecutive_crashes(H), 2);
        let t1 = next_tick(boot, interval, s(426));
        assert!(!h.may_start(t1, base, H), "60 s have not passed at {t1:?}");
        let t2 = next_tick(boot, interval, t1);
        assert!(h.may_start(t2, base, H));
        assert_eq!(t2 - s(426), s(114));
        assert_eq!(
            h.latest_crash().map(|(_, r)| r),
            Some("revs_diff_failed 401")
        );
        assert_eq!(h.last_updated(), s(426));
    }

    #[test]
    fn new_and_stopped_jobs_may_start_at_once() {
        assert!(History::added(s(5)).may_start(s(5), s(30), H));
        let h = history(&[(0, Event::Added), (1, crashed()), (2, Event::Stopped)]);
        assert!(h.may_start(s(2), s(30), H));
    }

    #[test]
    fn history_is_newest_first_and_bounded() {
        let mut h = History::added(s(0));
        for i in 1..=30 {
            h.push(s(i), Event::Started);
        }
        assert_eq!(h.events().len(), MAX_HISTORY);
        assert_eq!(h.events()[0].0, s(30));
        assert_eq!(h.events()[0].1.kind(), "started");
    }

    #[test]
    fn ticks() {
        let (boot, iv) = (s(10), s(60));
        assert_eq!(next_tick(boot, iv, s(10)), s(70));
        assert_eq!(next_tick(boot, iv, s(69)), s(70));
        assert_eq!(next_tick(boot, iv, s(70)), s(130));
        assert_eq!(next_tick(boot, iv, s(3)), s(10));
        assert_eq!(next_tick(boot, Duration::ZERO, s(30)), s(10));
    }

    #[test]
    fn states() {
        assert_eq!(State::of(true, 3).name(), "running");
        assert_eq!(State::of(false, 0).name(), "pending");
        assert_eq!(State::of(false, 2).name(), "crashing");
    }
}
