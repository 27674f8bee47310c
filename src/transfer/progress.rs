//! Progress of one transfer: bytes written (as ranges, since parallel blocks arrive out of order),
//! the contiguous prefix already on disk (what a resume restarts from, and how far a concurrent
//! checksum pass may read), rate and ETA. Reported through `tracing` and an optional callback,
//! rate-limited.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{CancelFn, ProgressFn, TransferError};

/// A snapshot for display.
#[derive(Clone, Debug)]
pub struct ProgressInfo {
    pub url: String,
    pub bytes: u64,
    pub total: Option<u64>,
    pub elapsed: Duration,
    /// Bytes per second since the start.
    pub rate: f64,
    pub eta: Option<Duration>,
    pub done: bool,
}

/// Sorted, merged, non-overlapping byte ranges `[start, end)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RangeSet {
    r: Vec<(u64, u64)>,
}

impl RangeSet {
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // Fast path: extends the last range (the common, in-order case).
        if let Some(last) = self.r.last_mut() {
            if start >= last.0 && start <= last.1 {
                last.1 = last.1.max(end);
                return;
            }
        }
        let i = self.r.partition_point(|&(_, e)| e < start);
        let mut s = start;
        let mut e = end;
        let mut j = i;
        while j < self.r.len() && self.r[j].0 <= e {
            s = s.min(self.r[j].0);
            e = e.max(self.r[j].1);
            j += 1;
        }
        self.r.splice(i..j, std::iter::once((s, e)));
    }
    /// Length of the contiguous prefix starting at 0.
    pub fn prefix(&self) -> u64 {
        match self.r.first() {
            Some(&(0, e)) => e,
            _ => 0,
        }
    }
    pub fn total(&self) -> u64 {
        self.r.iter().map(|(s, e)| e - s).sum()
    }
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.r
    }
    /// The gaps in `[0, size)`.
    pub fn missing(&self, size: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = 0;
        for &(s, e) in &self.r {
            if s > at {
                out.push((at, s.min(size)));
            }
            at = at.max(e);
        }
        if at < size {
            out.push((at, size));
        }
        out.retain(|(s, e)| s < e);
        out
    }
}

/// Shared progress of one transfer.
pub struct Progress {
    url: String,
    total: AtomicU64,
    ranges: Mutex<RangeSet>,
    prefix: AtomicU64,
    prefix_cv: Condvar,
    bytes: AtomicU64,
    start: Instant,
    last: Mutex<Instant>,
    interval: Duration,
    cb: Option<ProgressFn>,
    aborted: std::sync::atomic::AtomicBool,
    cancel: Option<CancelFn>,
}

const UNKNOWN: u64 = u64::MAX;

impl Progress {
    pub fn new(url: &str, total: Option<u64>, cb: Option<ProgressFn>, interval: Duration) -> Progress {
        let now = Instant::now();
        Progress {
            url: url.to_string(),
            total: AtomicU64::new(total.unwrap_or(UNKNOWN)),
            ranges: Mutex::new(RangeSet::default()),
            prefix: AtomicU64::new(0),
            prefix_cv: Condvar::new(),
            bytes: AtomicU64::new(0),
            start: now,
            last: Mutex::new(now.checked_sub(interval).unwrap_or(now)),
            interval,
            cb,
            aborted: false.into(),
            cancel: None,
        }
    }

    /// The same progress, stopping when `cancel` says so (see [`Progress::check`]).
    pub fn cancel_on(mut self, cancel: Option<CancelFn>) -> Progress {
        self.cancel = cancel;
        self
    }

    /// Whether the transfer was cancelled by its owner.
    pub fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c())
    }

    /// Err([`TransferError::Cancelled`]) once the owner cancelled: asked by every transfer
    /// loop between blocks and before every retry.
    pub fn check(&self) -> Result<(), TransferError> {
        if self.cancelled() {
            Err(TransferError::Cancelled { url: self.url.clone() })
        } else {
            Ok(())
        }
    }

    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    pub fn total(&self) -> Option<u64> {
        match self.total.load(Ordering::Relaxed) {
            UNKNOWN => None,
            t => Some(t),
        }
    }

    /// Records that `[offset, offset+len)` is written.
    pub fn add(&self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let prefix = {
            let mut r = self.ranges.lock().unwrap();
            r.insert(offset, offset + len);
            let p = r.prefix();
            self.bytes.store(r.total(), Ordering::Relaxed);
            p
        };
        // The prefix only grows: fetch_max keeps two streams adding at once from leaving the
        // smaller of their values behind (they compute it under the lock, store it after).
        if self.prefix.fetch_max(prefix, Ordering::AcqRel) < prefix {
            self.prefix_cv.notify_all();
        }
        self.maybe_report(false);
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The contiguous prefix on disk.
    pub fn prefix(&self) -> u64 {
        self.prefix.load(Ordering::Acquire)
    }

    pub fn ranges(&self) -> RangeSet {
        self.ranges.lock().unwrap().clone()
    }

    /// Waits until the prefix exceeds `at` (or the transfer is aborted / `timeout` passes).
    pub fn wait_prefix_beyond(&self, at: u64, timeout: Duration) -> u64 {
        let g = self.ranges.lock().unwrap();
        let (g, _) =
            self.prefix_cv.wait_timeout_while(g, timeout, |r| r.prefix() <= at && !self.aborted.load(Ordering::Relaxed)).unwrap();
        g.prefix()
    }

    /// Wakes waiters: the transfer ended (successfully or not).
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::Relaxed);
        let _g = self.ranges.lock().unwrap();
        self.prefix_cv.notify_all();
    }

    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Relaxed)
    }

    pub fn info(&self, done: bool) -> ProgressInfo {
        let bytes = self.bytes();
        let elapsed = self.start.elapsed();
        let rate = bytes as f64 / elapsed.as_secs_f64().max(1e-6);
        let total = self.total();
        let eta = total.and_then(|t| {
            if rate > 0.0 && t >= bytes {
                Some(Duration::from_secs_f64((t - bytes) as f64 / rate))
            } else {
                None
            }
        });
        ProgressInfo { url: self.url.clone(), bytes, total, elapsed, rate, eta, done }
    }

    fn maybe_report(&self, force: bool) {
        {
            let mut last = match self.last.try_lock() {
                Ok(l) => l,
                Err(_) if !force => return,
                Err(_) => self.last.lock().unwrap(),
            };
            if !force && last.elapsed() < self.interval {
                return;
            }
            *last = Instant::now();
        }
        let info = self.info(force);
        tracing::info!(
            url = %info.url,
            bytes = info.bytes,
            total = info.total.unwrap_or(0),
            rate_mb_s = format!("{:.1}", info.rate / 1e6),
            eta_s = info.eta.map(|d| d.as_secs_f64()).unwrap_or(0.0),
            "transfer progress"
        );
        if let Some(cb) = &self.cb {
            cb(&info);
        }
    }

    /// Final report.
    pub fn finish(&self) {
        self.maybe_report(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_adds_never_leave_a_stale_prefix() {
        // Blocks of 4 streams interleaved as MODE E delivers them; after every round the
        // contiguous prefix must be exactly what has been added.
        for round in 0..50u64 {
            let p = Progress::new("x", Some(4 * 1000), None, Duration::from_secs(60));
            std::thread::scope(|s| {
                for t in 0..4u64 {
                    let p = &p;
                    s.spawn(move || {
                        for i in 0..250u64 {
                            p.add((i * 4 + (t + round) % 4) * 4, 4);
                        }
                    });
                }
            });
            assert_eq!(p.prefix(), 4000, "round {round}");
            assert_eq!(p.bytes(), 4000);
        }
    }

    #[test]
    fn ranges_merge_and_prefix() {
        let mut r = RangeSet::default();
        r.insert(10, 20);
        r.insert(30, 40);
        assert_eq!(r.prefix(), 0);
        r.insert(0, 10);
        assert_eq!(r.prefix(), 20);
        r.insert(15, 35);
        assert_eq!(r.ranges(), &[(0, 40)]);
        r.insert(50, 60);
        assert_eq!(r.missing(70), vec![(40, 50), (60, 70)]);
        assert_eq!(r.total(), 50);
        r.insert(45, 45);
        assert_eq!(r.ranges().len(), 2);
    }

    #[test]
    fn progress_reports() {
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let p = Progress::new(
            "x",
            Some(100),
            Some(std::sync::Arc::new(move |i: &ProgressInfo| s2.lock().unwrap().push(i.bytes))),
            Duration::ZERO,
        );
        p.add(50, 50);
        assert_eq!(p.prefix(), 0);
        p.add(0, 50);
        assert_eq!(p.prefix(), 100);
        p.finish();
        let v = seen.lock().unwrap();
        assert_eq!(*v.last().unwrap(), 100);
        assert_eq!(p.wait_prefix_beyond(10, Duration::from_millis(1)), 100);
    }
}
