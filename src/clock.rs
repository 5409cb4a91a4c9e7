//! Timer deadlines that cannot panic. `Instant + Duration` panics when the sum leaves the clock's
//! range, and the durations added here come from the config (capped at a year by
//! [`crate::config::units`]) or from arithmetic on it: every deadline wsedge sets is built by
//! [`deadline`], so no value of either can take a connection down.

use std::time::Duration;
use tokio::time::Instant;

/// The furthest ahead wsedge ever sets a timer: one this far out never fires in practice
/// (tokio's own `sleep(Duration::MAX)` waits about 30 years too).
pub const FAR: Duration = Duration::from_secs(30 * 365 * 86_400);

/// `now + d`, saturating instead of panicking: at most `now + FAR`, and if even that is past the
/// clock's range, the furthest instant it can represent (halving until it fits; `now + 0` always
/// does, so this ends).
pub fn deadline(now: Instant, d: Duration) -> Instant {
    let mut d = d.min(FAR);
    loop {
        if let Some(at) = now.checked_add(d) {
            return at;
        }
        d /= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_durations_are_exact() {
        let now = Instant::now();
        assert_eq!(deadline(now, Duration::ZERO), now);
        assert_eq!(
            deadline(now, Duration::from_millis(1500)),
            now + Duration::from_millis(1500)
        );
        assert_eq!(deadline(now, FAR), now + FAR);
    }

    #[test]
    fn huge_durations_saturate_instead_of_panicking() {
        let now = Instant::now();
        let far = deadline(now, Duration::MAX);
        assert_eq!(far, now + FAR);
        // Chained, as the relay does (last activity + idle timeout): still no panic.
        let again = deadline(far, Duration::MAX);
        assert!(again >= far);
        assert_eq!(
            deadline(now, Duration::from_secs(u64::MAX)),
            far,
            "every huge duration lands on the same far deadline"
        );
    }
}
