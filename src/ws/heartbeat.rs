//! The heartbeat and idle clock of one WebSocket session, as a pure state machine: the relay's
//! controller and the hosted-socket loop feed it what happened and when, and ask it what is due.
//!
//! - A ping goes to every peer each `heartbeat_interval` (never closer than `heartbeat_timeout`
//!   apart); its payload carries a fresh random token, and only a pong echoing the token of the
//!   ping outstanding answers it (a forged or stale pong answers nothing).
//! - A peer that has not answered within `heartbeat_timeout` ends the session — unless wsedge
//!   itself stopped reading it meanwhile (`hold`: a throttled client's pongs sit unread behind
//!   its held frame), in which case the deadline moves past the hold.
//! - Idle means no data frame in either direction for `idle_timeout`.

use crate::clock::{FAR, deadline};
use crate::config::Guard;
use tokio::time::Instant;

/// Payload prefix of wsedge's own pings, followed by the token in hex.
pub const TAG: &[u8] = b"wsedge-hb:";

/// What is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Send this ping payload to every peer.
    Ping(Vec<u8>),
    /// This peer (index) missed its heartbeat.
    Missed(usize),
    /// No data either way for `idle_timeout`.
    Idle,
}

#[derive(Debug, Clone, Copy)]
struct Outstanding {
    token: u64,
    due: Instant,
    /// Bit per peer that still owes its pong.
    owed: u8,
}

/// Borrows the guard's settings rather than copying them: every idle connection carries one.
#[derive(Debug, Clone)]
pub struct Heartbeat<'g> {
    guard: &'g Guard,
    peers: u8,
    next_ping: Option<Instant>,
    outstanding: Option<Outstanding>,
    last_data: Instant,
    /// Per peer: wsedge reads nothing from it until then.
    held: [Option<Instant>; 2],
}

impl<'g> Heartbeat<'g> {
    /// For `peers` peers (1: a hosted socket; 2: client and upstream), starting `now`.
    pub fn new(g: &'g Guard, peers: usize, now: Instant) -> Heartbeat<'g> {
        Heartbeat {
            guard: g,
            peers: peers.clamp(1, 2) as u8,
            next_ping: g.heartbeat_interval.map(|i| deadline(now, i)),
            outstanding: None,
            last_data: now,
            held: [None; 2],
        }
    }

    /// A data frame went either way at `at`.
    pub fn data(&mut self, at: Instant) {
        self.last_data = self.last_data.max(at);
    }

    /// wsedge reads nothing from `peer` until `until` (its answers cannot arrive before).
    pub fn hold(&mut self, peer: usize, until: Instant) {
        let h = &mut self.held[peer.min(1)];
        *h = Some(h.map_or(until, |h| h.max(until)));
    }

    /// A pong from `peer`: true when it answers the ping outstanding (it is then consumed).
    pub fn pong(&mut self, peer: usize, payload: &[u8]) -> bool {
        Self::token_of(payload).is_some_and(|t| self.answered(peer, t))
    }

    /// `peer` answered the ping with `token`: true when that is the ping outstanding.
    pub fn answered(&mut self, peer: usize, token: u64) -> bool {
        let Some(o) = self.outstanding.as_mut() else {
            return false;
        };
        if token != o.token {
            return false;
        }
        o.owed &= !(1 << peer.min(1));
        if o.owed == 0 {
            self.outstanding = None;
        }
        true
    }

    /// The token a ping payload of ours carries.
    pub fn token_of(payload: &[u8]) -> Option<u64> {
        let hex = payload.strip_prefix(TAG)?;
        u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
    }

    /// The token of the ping outstanding (0: none).
    pub fn outstanding(&self) -> u64 {
        self.outstanding.map_or(0, |o| o.token)
    }

    /// When `poll` has something to say next (None: never, unless fed).
    pub fn next_wake(&self) -> Option<Instant> {
        let pong = self.outstanding.map(|o| self.pong_deadline(o));
        let idle = self.guard.idle_timeout.map(|t| deadline(self.last_data, t));
        let ping = if self.outstanding.is_none() {
            self.next_ping
        } else {
            None
        };
        [pong, idle, ping].into_iter().flatten().min()
    }

    /// The pong deadline, moved past any hold on a peer that still owes.
    fn pong_deadline(&self, o: Outstanding) -> Instant {
        let mut due = o.due;
        for p in 0..usize::from(self.peers) {
            if o.owed & (1 << p) != 0
                && let Some(h) = self.held[p]
            {
                due = due.max(deadline(h, self.guard.heartbeat_timeout));
            }
        }
        due
    }

    /// What is due at `now` (at most one thing; call again until None).
    pub fn poll(&mut self, now: Instant) -> Option<Due> {
        if let Some(o) = self.outstanding
            && now >= self.pong_deadline(o)
        {
            let peer = (0..usize::from(self.peers))
                .find(|p| o.owed & (1 << p) != 0)
                .unwrap_or(0);
            self.outstanding = None;
            return Some(Due::Missed(peer));
        }
        if let Some(t) = self.guard.idle_timeout
            && now >= deadline(self.last_data, t)
        {
            return Some(Due::Idle);
        }
        if let (Some(at), Some(every)) = (self.next_ping, self.guard.heartbeat_interval)
            && now >= at
            && self.outstanding.is_none()
        {
            let token = rand::random::<u64>() | 1;
            self.outstanding = Some(Outstanding {
                token,
                due: deadline(now, self.guard.heartbeat_timeout),
                owed: if self.peers == 2 { 0b11 } else { 0b01 },
            });
            self.next_ping = Some(deadline(now, every.max(self.guard.heartbeat_timeout)));
            let mut payload = TAG.to_vec();
            payload.extend_from_slice(format!("{token:x}").as_bytes());
            return Some(Due::Ping(payload));
        }
        None
    }

    /// A wake-up far away, for timers that must always have a deadline.
    pub fn far(now: Instant) -> Instant {
        deadline(now, FAR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn guard(interval: u64, timeout: u64, idle: Option<u64>) -> Guard {
        Guard {
            heartbeat_interval: Some(Duration::from_secs(interval)),
            heartbeat_timeout: Duration::from_secs(timeout),
            idle_timeout: idle.map(Duration::from_secs),
            ..Guard::default()
        }
    }

    fn ping(hb: &mut Heartbeat, now: Instant) -> Vec<u8> {
        match hb.poll(now) {
            Some(Due::Ping(p)) => p,
            other => panic!("expected a ping, got {other:?}"),
        }
    }

    #[test]
    fn a_silent_peer_misses_after_interval_plus_timeout() {
        let t0 = Instant::now();
        let g = guard(30, 10, None);
        let mut hb = Heartbeat::new(&g, 1, t0);
        assert_eq!(hb.next_wake(), Some(t0 + Duration::from_secs(30)));
        assert_eq!(hb.poll(t0 + Duration::from_secs(29)), None);
        ping(&mut hb, t0 + Duration::from_secs(30));
        assert_eq!(hb.next_wake(), Some(t0 + Duration::from_secs(40)));
        assert_eq!(hb.poll(t0 + Duration::from_secs(39)), None);
        assert_eq!(hb.poll(t0 + Duration::from_secs(40)), Some(Due::Missed(0)));
    }

    #[test]
    fn only_the_outstanding_token_answers() {
        let t0 = Instant::now();
        let g = guard(30, 10, None);
        let mut hb = Heartbeat::new(&g, 1, t0);
        let p = ping(&mut hb, t0 + Duration::from_secs(30));
        // Forged: the old fixed-sequence form, a huge number, another token, no tag.
        for forged in [
            &b"wsedge-hb:18446744073709551615"[..],
            b"wsedge-hb:1",
            b"",
            b"hello",
        ] {
            assert!(!hb.pong(0, forged), "{forged:?}");
        }
        assert!(hb.pong(0, &p));
        // Answered once: the same pong again is not consumed.
        assert!(!hb.pong(0, &p));
        assert_eq!(hb.poll(t0 + Duration::from_secs(45)), None);
        // The next ping has a new token.
        let q = ping(&mut hb, t0 + Duration::from_secs(60));
        assert_ne!(p, q);
        assert!(!hb.pong(0, &p));
    }

    #[test]
    fn two_peers_must_both_answer() {
        let t0 = Instant::now();
        let g = guard(5, 2, None);
        let mut hb = Heartbeat::new(&g, 2, t0);
        let p = ping(&mut hb, t0 + Duration::from_secs(5));
        assert!(hb.pong(0, &p));
        assert_eq!(hb.poll(t0 + Duration::from_secs(7)), Some(Due::Missed(1)));
    }

    #[test]
    fn a_held_peer_is_not_missed_while_wsedge_does_not_read_it() {
        let t0 = Instant::now();
        let g = guard(1, 1, None);
        let mut hb = Heartbeat::new(&g, 1, t0);
        let p = ping(&mut hb, t0 + Duration::from_secs(1));
        hb.hold(0, t0 + Duration::from_secs(20));
        assert_eq!(hb.poll(t0 + Duration::from_secs(2)), None);
        assert_eq!(hb.next_wake(), Some(t0 + Duration::from_secs(21)));
        assert_eq!(hb.poll(t0 + Duration::from_secs(20)), None);
        assert!(hb.pong(0, &p));
        assert!(
            hb.poll(t0 + Duration::from_secs(21))
                .is_some_and(|d| matches!(d, Due::Ping(_)))
        );
    }

    #[test]
    fn idle_counts_data_either_way() {
        let t0 = Instant::now();
        let mut g = guard(30, 10, Some(5));
        g.heartbeat_interval = None;
        let mut hb = Heartbeat::new(&g, 1, t0);
        assert_eq!(hb.next_wake(), Some(t0 + Duration::from_secs(5)));
        hb.data(t0 + Duration::from_secs(4));
        assert_eq!(hb.poll(t0 + Duration::from_secs(5)), None);
        assert_eq!(hb.next_wake(), Some(t0 + Duration::from_secs(9)));
        assert_eq!(hb.poll(t0 + Duration::from_secs(9)), Some(Due::Idle));
    }

    #[test]
    fn no_heartbeat_no_idle_never_wakes() {
        let g = Guard {
            heartbeat_interval: None,
            idle_timeout: None,
            ..Guard::default()
        };
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(&g, 2, t0);
        assert_eq!(hb.next_wake(), None);
        assert_eq!(hb.poll(t0 + Duration::from_secs(1 << 30)), None);
    }

    #[test]
    fn huge_durations_do_not_overflow() {
        let g = guard(u64::MAX / 4, u64::MAX / 4, Some(u64::MAX / 4));
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(&g, 2, t0);
        hb.hold(0, Heartbeat::far(t0));
        assert!(hb.next_wake().is_some());
        assert_eq!(hb.poll(t0 + Duration::from_secs(100)), None);
    }
}
