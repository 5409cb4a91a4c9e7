//! The guard's verdicts on what a client sends, shared by the proxied relay and hosted sockets:
//! message and byte rates (a GCRA bucket per limit, charged in full: a frame larger than the
//! burst goes into debt) with the route's policy, and the statistics of everything the guard did.
//!
//! Pure: every decision takes `now`, so paused-clock tests drive it exactly. (governor, used
//! for admission, cannot charge more than its burst at once nor run on tokio's clock.)

use crate::config::guard::Rate;
use crate::config::{Guard, RatePolicy};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Guard events, counted for the metrics endpoint.
#[derive(Debug, Default)]
pub struct GuardStats {
    pub heartbeat_closes: AtomicU64,
    pub idle_closes: AtomicU64,
    pub too_big_closes: AtomicU64,
    pub rate_closes: AtomicU64,
    pub rate_drops: AtomicU64,
    pub rate_throttles: AtomicU64,
    pub slow_reader_closes: AtomicU64,
    pub protocol_closes: AtomicU64,
    /// Times a message (or control frame) found the messages-per-second budget empty.
    pub messages_rate_hits: AtomicU64,
    /// Times a frame found the bytes-per-second budget empty.
    pub bytes_rate_hits: AtomicU64,
}

/// A generic cell rate algorithm bucket: `per_sec` units per second, `burst` at once. It may go
/// into debt (a charge larger than the burst, or a forced one): what comes next waits it off.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    /// Nanoseconds one unit is worth, and the burst's worth.
    unit_ns: u128,
    burst_ns: u128,
    /// Theoretical arrival time: when the bucket is full again.
    tat: Option<Instant>,
}

impl Bucket {
    pub(crate) fn new(r: Rate) -> Bucket {
        let unit_ns = 1_000_000_000u128 / u128::from(r.per_sec.max(1));
        Bucket {
            unit_ns,
            burst_ns: unit_ns * u128::from(r.burst.max(1)),
            tat: None,
        }
    }

    /// How long after `now` a charge of `n` units fits (zero: now), and the new state if taken.
    fn probe(&self, n: u64, now: Instant) -> (Duration, Instant) {
        let base = self.tat.map_or(now, |t| t.max(now));
        let cost = self.unit_ns.saturating_mul(u128::from(n));
        let tat = crate::clock::deadline(base, nanos(cost));
        // Fits when the bucket, after the charge, is at most a burst ahead of now.
        let wait = tat
            .checked_sub(nanos(self.burst_ns))
            .map_or(Duration::ZERO, |at| at.saturating_duration_since(now));
        (wait, tat)
    }

    /// Take `n` units if they fit now; otherwise leave the bucket alone and say how long.
    pub(crate) fn try_take(&mut self, n: u64, now: Instant) -> Result<(), Duration> {
        let (wait, tat) = self.probe(n, now);
        if wait.is_zero() {
            self.tat = Some(tat);
            Ok(())
        } else {
            Err(wait)
        }
    }

    /// Take `n` units whatever the balance; how long the caller should wait to stay within the
    /// rate (zero when they fitted).
    pub(crate) fn force(&mut self, n: u64, now: Instant) -> Duration {
        let (wait, tat) = self.probe(n, now);
        self.tat = Some(tat);
        wait
    }
}

fn nanos(n: u128) -> Duration {
    Duration::from_nanos(n.min(u64::MAX as u128) as u64)
}

/// What the guard does with a message (or frame) the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// `throttle`: pass it after this long, reading nothing more from the client meanwhile.
    Wait(Duration),
    /// `drop`: discard the whole message.
    Drop,
    /// `close`: end the session (1008).
    Close,
}

/// A connection's rates under its route's policy.
pub struct Rates {
    policy: RatePolicy,
    messages: Option<Bucket>,
    bytes: Option<Bucket>,
    stats: Arc<GuardStats>,
}

impl Rates {
    /// None when the guard sets no rate.
    pub fn new(guard: &Guard, stats: Arc<GuardStats>) -> Option<Rates> {
        if guard.messages.is_none() && guard.bytes.is_none() {
            return None;
        }
        Some(Rates {
            policy: guard.rate_policy,
            messages: guard.messages.map(Bucket::new),
            bytes: guard.bytes.map(Bucket::new),
            stats,
        })
    }

    /// A new message, or a control frame (pings count as messages too): one message and `len`
    /// bytes. Under `close` and `drop` nothing is charged for what is refused.
    pub fn message(&mut self, len: u64, now: Instant) -> Verdict {
        if self.policy == RatePolicy::Throttle {
            let m = self
                .messages
                .as_mut()
                .map_or(Duration::ZERO, |b| b.force(1, now));
            let b = self
                .bytes
                .as_mut()
                .map_or(Duration::ZERO, |b| b.force(len, now));
            return self.throttled(m, b);
        }
        let m_ok = self
            .messages
            .as_ref()
            .is_none_or(|b| b.probe(1, now).0.is_zero());
        let b_ok = self
            .bytes
            .as_ref()
            .is_none_or(|b| b.probe(len, now).0.is_zero());
        if m_ok && b_ok {
            if let Some(b) = self.messages.as_mut() {
                b.force(1, now);
            }
            if let Some(b) = self.bytes.as_mut() {
                b.force(len, now);
            }
            return Verdict::Pass;
        }
        self.hit(!m_ok, !b_ok);
        self.refuse()
    }

    /// More bytes of a message already passed (a continuation frame). Never `Drop`: a message
    /// is dropped whole or not at all, so under `drop` the rest passes (the bucket goes into
    /// debt and the next message pays for it).
    pub fn more(&mut self, len: u64, now: Instant) -> Verdict {
        let Some(b) = self.bytes.as_mut() else {
            return Verdict::Pass;
        };
        match self.policy {
            RatePolicy::Throttle => {
                let w = b.force(len, now);
                self.throttled(Duration::ZERO, w)
            }
            RatePolicy::Drop => {
                b.force(len, now);
                Verdict::Pass
            }
            RatePolicy::Close => match b.try_take(len, now) {
                Ok(()) => Verdict::Pass,
                Err(_) => {
                    self.hit(false, true);
                    self.refuse()
                }
            },
        }
    }

    fn throttled(&self, m: Duration, b: Duration) -> Verdict {
        self.hit(!m.is_zero(), !b.is_zero());
        let wait = m.max(b);
        if wait.is_zero() {
            Verdict::Pass
        } else {
            self.stats.rate_throttles.fetch_add(1, Ordering::Relaxed);
            Verdict::Wait(wait)
        }
    }

    fn hit(&self, messages: bool, bytes: bool) {
        if messages {
            self.stats
                .messages_rate_hits
                .fetch_add(1, Ordering::Relaxed);
        }
        if bytes {
            self.stats.bytes_rate_hits.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn refuse(&self) -> Verdict {
        if self.policy == RatePolicy::Drop {
            self.stats.rate_drops.fetch_add(1, Ordering::Relaxed);
            Verdict::Drop
        } else {
            Verdict::Close
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_sec: u32, burst: u32) -> Rate {
        Rate { per_sec, burst }
    }

    fn rates(policy: RatePolicy, messages: Option<Rate>, bytes: Option<Rate>) -> Rates {
        let g = Guard {
            rate_policy: policy,
            messages,
            bytes,
            ..Guard::default()
        };
        Rates::new(&g, Arc::default()).unwrap()
    }

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(rate(10, 3));
        for _ in 0..3 {
            assert_eq!(b.try_take(1, t0), Ok(()));
        }
        let wait = b.try_take(1, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        assert_eq!(b.try_take(1, t0 + wait), Ok(()));
    }

    #[test]
    fn a_charge_larger_than_the_burst_is_paid_in_full() {
        let t0 = Instant::now();
        let mut b = Bucket::new(rate(1000, 1000));
        // 6 MiB at 1,000 B/s: refused outright (it can never fit) ...
        assert!(b.try_take(6 << 20, t0).is_err());
        // ... or, forced, it puts the bucket ~6,290 s into debt.
        let wait = b.force(6 << 20, t0);
        assert_eq!(wait.as_secs(), (6u64 << 20) / 1000 - 1);
        assert!(b.try_take(1, t0 + wait).is_err());
        assert_eq!(b.try_take(1, t0 + wait + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn close_and_drop_refuse_without_charging() {
        let t0 = Instant::now();
        for (policy, refused) in [
            (RatePolicy::Close, Verdict::Close),
            (RatePolicy::Drop, Verdict::Drop),
        ] {
            let mut r = rates(policy, Some(rate(5, 5)), None);
            for _ in 0..5 {
                assert_eq!(r.message(10, t0), Verdict::Pass);
            }
            assert_eq!(r.message(10, t0), refused);
            assert_eq!(
                r.message(10, t0 + Duration::from_millis(200)),
                Verdict::Pass
            );
        }
    }

    #[test]
    fn drop_never_cuts_a_message() {
        let t0 = Instant::now();
        let mut r = rates(RatePolicy::Drop, None, Some(rate(1000, 1000)));
        assert_eq!(r.message(900, t0), Verdict::Pass);
        // The rest of that message passes, in debt ...
        assert_eq!(r.more(900, t0), Verdict::Pass);
        assert_eq!(r.more(50, t0), Verdict::Pass);
        // ... and the next message is the one dropped.
        assert_eq!(r.message(10, t0), Verdict::Drop);
    }

    #[test]
    fn throttle_names_the_wait_for_messages_and_bytes() {
        let t0 = Instant::now();
        let mut r = rates(
            RatePolicy::Throttle,
            Some(rate(1, 1)),
            Some(rate(1000, 1000)),
        );
        assert_eq!(r.message(10, t0), Verdict::Pass);
        assert_eq!(r.message(10, t0), Verdict::Wait(Duration::from_secs(1)));
        // Bytes over the burst wait for the debt: 3,000 B at 1,000 B/s, burst 1,000.
        let mut r = rates(RatePolicy::Throttle, None, Some(rate(1000, 1000)));
        assert_eq!(r.message(3000, t0), Verdict::Wait(Duration::from_secs(2)));
        assert_eq!(r.more(1000, t0), Verdict::Wait(Duration::from_secs(3)));
    }

    #[test]
    fn close_refuses_a_frame_larger_than_the_burst() {
        let t0 = Instant::now();
        let mut r = rates(RatePolicy::Close, None, Some(rate(1000, 1000)));
        assert_eq!(r.message(2 << 20, t0), Verdict::Close);
        let mut r = rates(RatePolicy::Close, None, Some(rate(1000, 1000)));
        assert_eq!(r.message(500, t0), Verdict::Pass);
        assert_eq!(r.more(2 << 20, t0), Verdict::Close);
    }
}
