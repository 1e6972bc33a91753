//! Token-bucket rate limiting for device I/O (bytes/s and operations/s).
//!
//! Each bucket refills continuously at its rate and holds at most a tenth of
//! a second of it. A request is admitted while the bucket is not empty and
//! takes its full cost, possibly driving the bucket negative: a request
//! larger than the bucket still passes, and the long-run rate stays exact.
//! A refused request waits for a timer (an fd the device worker polls).

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use vmm_sys_util::timerfd::TimerFd;

/// Fraction of a second of tokens a bucket holds.
const BURST_DIVISOR: u64 = 10;

#[derive(Debug)]
struct Bucket {
    rate: u64,
    capacity: i128,
    tokens: i128,
    last: Instant,
}

impl Bucket {
    fn new(rate: u64, now: Instant) -> Self {
        let capacity = i128::from((rate / BURST_DIVISOR).max(1));
        Bucket {
            rate,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let ns = now.saturating_duration_since(self.last).as_nanos() as i128;
        let add = ns * i128::from(self.rate) / 1_000_000_000;
        if add > 0 {
            self.tokens = (self.tokens + add).min(self.capacity);
            // Keep the remainder: advance `last` only by what was paid for.
            let used_ns = add * 1_000_000_000 / i128::from(self.rate).max(1);
            self.last += Duration::from_nanos(used_ns.min(u64::MAX as i128) as u64);
            if self.tokens == self.capacity {
                self.last = now;
            }
        }
    }

    /// How long until the bucket is positive again.
    fn wait(&self) -> Duration {
        if self.tokens > 0 {
            return Duration::ZERO;
        }
        let missing = (1 - self.tokens) as u128;
        let rate = u128::from(self.rate).max(1);
        // Rounded up: waking early would only find the bucket still empty.
        let ns = (missing * 1_000_000_000).div_ceil(rate);
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

/// A device's limits; unlimited when both rates are unset.
pub struct RateLimiter {
    bytes: Option<Bucket>,
    ops: Option<Bucket>,
    timer: Option<TimerFd>,
}

impl RateLimiter {
    /// `bytes_per_sec` / `ops_per_sec`: None or 0 mean unlimited.
    pub fn new(bytes_per_sec: Option<u64>, ops_per_sec: Option<u64>) -> std::io::Result<Self> {
        let now = Instant::now();
        let bytes = bytes_per_sec
            .filter(|r| *r > 0)
            .map(|r| Bucket::new(r, now));
        let ops = ops_per_sec.filter(|r| *r > 0).map(|r| Bucket::new(r, now));
        let timer = if bytes.is_some() || ops.is_some() {
            let t = TimerFd::new()?;
            // Non-blocking: a re-armed timer must not block its reader.
            // SAFETY: fcntl on a timerfd we own, integer arguments.
            let r = unsafe { libc::fcntl(t.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Some(t)
        } else {
            None
        };
        Ok(RateLimiter { bytes, ops, timer })
    }

    pub fn unlimited() -> Self {
        RateLimiter {
            bytes: None,
            ops: None,
            timer: None,
        }
    }

    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        self.bytes.is_some() || self.ops.is_some()
    }

    /// The timer's fd, to poll; readable when refused work may be retried.
    pub fn fd(&self) -> Option<RawFd> {
        self.timer.as_ref().map(|t| t.as_raw_fd())
    }

    /// Admits one operation of `bytes`, or refuses it and arms the timer.
    pub fn admit(&mut self, bytes: u64) -> bool {
        if self.bytes.is_none() && self.ops.is_none() {
            return true;
        }
        let now = Instant::now();
        let mut wait = Duration::ZERO;
        for b in [&mut self.bytes, &mut self.ops].into_iter().flatten() {
            b.refill(now);
            wait = wait.max(b.wait());
        }
        if !wait.is_zero() {
            if let Some(t) = &mut self.timer {
                // Never arm a zero timer (that disarms it).
                let _ = t.reset(wait.max(Duration::from_micros(100)), None);
            }
            return false;
        }
        if let Some(b) = &mut self.bytes {
            b.tokens -= i128::from(bytes);
        }
        if let Some(b) = &mut self.ops {
            b.tokens -= 1;
        }
        true
    }

    /// Gives back what [`RateLimiter::admit`] took for an operation of
    /// `bytes` that could not be carried out after all.
    pub fn refund(&mut self, bytes: u64) {
        if let Some(b) = &mut self.bytes {
            b.tokens = (b.tokens + i128::from(bytes)).min(b.capacity);
        }
        if let Some(b) = &mut self.ops {
            b.tokens = (b.tokens + 1).min(b.capacity);
        }
    }

    /// Clears the timer after it fired (never blocks: a timer re-armed in
    /// the meantime reads as "not yet").
    pub fn timer_fired(&mut self) {
        if let Some(t) = &mut self.timer {
            let _ = t.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_admits_everything() {
        let mut r = RateLimiter::new(None, Some(0)).unwrap();
        assert!(r.fd().is_none());
        for _ in 0..10_000 {
            assert!(r.admit(1 << 30));
        }
    }

    /// Drives a limiter for `secs` seconds as fast as it admits and returns
    /// the admitted bytes and operations.
    fn run(r: &mut RateLimiter, size: u64, secs: f64) -> (u64, u64) {
        let start = Instant::now();
        let (mut bytes, mut ops) = (0, 0);
        while start.elapsed().as_secs_f64() < secs {
            if r.admit(size) {
                bytes += size;
                ops += 1;
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        (bytes, ops)
    }

    #[test]
    fn bytes_rate_holds_within_ten_percent() {
        let rate = 4 << 20;
        let mut r = RateLimiter::new(Some(rate), None).unwrap();
        let (bytes, _) = run(&mut r, 64 << 10, 1.0);
        let got = bytes as f64 / rate as f64;
        assert!((0.9..=1.15).contains(&got), "{got:.3}x the rate");
    }

    #[test]
    fn ops_rate_holds_and_big_requests_pass() {
        let mut r = RateLimiter::new(None, Some(500)).unwrap();
        let (_, ops) = run(&mut r, 1, 1.0);
        assert!((450..=575).contains(&ops), "{ops} ops");
        // A request far larger than the bucket is admitted once, then waits.
        let mut r = RateLimiter::new(Some(1000), None).unwrap();
        assert!(r.admit(1 << 20));
        assert!(!r.admit(1));
    }
}
