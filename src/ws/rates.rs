//! Per-connection message and byte rates (GCRA via governor), shared by the relay and the
//! hosted rooms: `close` and `drop` report the excess, `throttle` waits until the budget refills
//! (the caller is not reading meanwhile, so TCP backpressure slows the sender).

use super::relay::GuardStats;
use crate::config::{Guard, RatePolicy};
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

type DirectLimiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    governor::clock::DefaultClock,
    governor::middleware::NoOpMiddleware,
>;

fn now() -> governor::clock::QuantaInstant {
    governor::clock::Clock::now(&governor::clock::DefaultClock::default())
}

fn limiter(per_sec: u32, burst: u32) -> DirectLimiter {
    let per = NonZeroU32::new(per_sec.max(1)).expect("nonzero");
    let burst = NonZeroU32::new(burst.max(1)).expect("nonzero");
    RateLimiter::direct(Quota::per_second(per).allow_burst(burst))
}

pub struct Rates {
    pub policy: RatePolicy,
    stats: Arc<GuardStats>,
    messages: Option<DirectLimiter>,
    bytes: Option<(DirectLimiter, u32)>,
}

/// What to do with a message (or frame) the rates were asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the rates (`throttled`: only after waiting).
    Pass { throttled: bool },
    /// Over a rate under `close` or `drop`: the caller applies the policy.
    Over,
}

impl Rates {
    /// None when the guard sets no rate. Each refusal is counted per limit in `stats`.
    pub fn new(guard: &Guard, stats: Arc<GuardStats>) -> Option<Rates> {
        if guard.messages.is_none() && guard.bytes.is_none() {
            return None;
        }
        Some(Rates {
            policy: guard.rate_policy,
            stats,
            messages: guard.messages.map(|r| limiter(r.per_sec, r.burst)),
            bytes: guard.bytes.map(|r| (limiter(r.per_sec, r.burst), r.burst)),
        })
    }

    /// Charge `len` payload bytes, and one message when `new_message`. Each limiter is asked
    /// once; under `throttle` a refused one is asked again after the wait it names, so a delayed
    /// message still pays for its cell.
    pub async fn admit(&self, new_message: bool, len: u64) -> Verdict {
        let throttle = self.policy == RatePolicy::Throttle;
        let mut throttled = false;
        if new_message && let Some(m) = &self.messages {
            while let Err(wait) = m.check().map_err(|nu| nu.wait_time_from(now())) {
                self.stats
                    .messages_rate_hits
                    .fetch_add(1, Ordering::Relaxed);
                if !throttle {
                    return Verdict::Over;
                }
                throttled = true;
                tokio::time::sleep(wait).await;
            }
        }
        if len > 0
            && let Some((b, burst)) = &self.bytes
        {
            // A frame larger than the burst pays for a whole burst (it can never fit at once).
            let n = NonZeroU32::new(len.min(*burst as u64) as u32).expect("nonzero");
            loop {
                let r = match b.check_n(n) {
                    Ok(r) => r.map_err(|nu| nu.wait_time_from(now())),
                    Err(_) => Err(Duration::from_secs(1)),
                };
                let Err(wait) = r else { break };
                self.stats.bytes_rate_hits.fetch_add(1, Ordering::Relaxed);
                if !throttle {
                    return Verdict::Over;
                }
                throttled = true;
                tokio::time::sleep(wait).await;
            }
        }
        Verdict::Pass { throttled }
    }
}
