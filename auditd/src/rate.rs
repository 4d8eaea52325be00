//! A rate of records per token: one producer in a loop must not crowd out the others, or
//! fill the disk of the database they share.
//!
//! A token bucket per token name, refilled continuously at the rate, holding at most a
//! second's worth or one request's largest batch, whichever is more (so the largest
//! request allowed always gets through, after a wait). A request that finds too little
//! in its bucket takes nothing and is told how long to wait (`Retry-After`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The buckets of every token that sent records.
#[derive(Debug)]
pub struct RecordRate {
    per_second: f64,
    capacity: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    available: f64,
    updated: Instant,
}

/// Token names kept at most; beyond it, full buckets are forgotten (they hold nothing a
/// new one would not). Names come from the token file, so this bounds only a huge file.
const MAX_BUCKETS: usize = 10_000;

impl RecordRate {
    /// `per_second` records for each token (0: no limit), in bursts of up to
    /// `max(per_second, largest_request)`.
    pub fn new(per_second: u64, largest_request: usize) -> Self {
        RecordRate {
            per_second: per_second as f64,
            capacity: (per_second as f64).max(largest_request as f64),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether there is a limit at all.
    pub fn is_limited(&self) -> bool {
        self.per_second > 0.0
    }

    /// Takes `records` from `name`'s bucket, or says how long until they would fit.
    pub fn take(&self, name: &str, records: usize) -> Result<(), Duration> {
        self.take_at(name, records, Instant::now())
    }

    fn take_at(&self, name: &str, records: usize, now: Instant) -> Result<(), Duration> {
        if !self.is_limited() {
            return Ok(());
        }
        let Ok(mut buckets) = self.buckets.lock() else {
            // A panic elsewhere while holding the lock: fail open rather than refuse all.
            return Ok(());
        };
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(name) {
            let (per_second, capacity) = (self.per_second, self.capacity);
            buckets.retain(|_, b| b.refilled(now, per_second, capacity) < capacity);
        }
        let capacity = self.capacity;
        let bucket = buckets.entry(name.to_owned()).or_insert(Bucket {
            available: capacity,
            updated: now,
        });
        bucket.available = bucket.refilled(now, self.per_second, capacity);
        bucket.updated = now;
        let wanted = (records as f64).min(capacity);
        if bucket.available >= wanted {
            bucket.available -= wanted;
            return Ok(());
        }
        let missing = wanted - bucket.available;
        Err(Duration::from_secs_f64(missing / self.per_second))
    }
}

impl Bucket {
    fn refilled(&self, now: Instant, per_second: f64, capacity: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.available + elapsed * per_second).min(capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_gets_its_rate_and_a_burst_and_no_more_while_others_are_unaffected() {
        let rate = RecordRate::new(1000, 500);
        let start = Instant::now();
        assert!(
            rate.take_at("billing", 1000, start).is_ok(),
            "a second's burst"
        );
        let wait = rate.take_at("billing", 500, start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(
            rate.take_at("crm", 1000, start).is_ok(),
            "buckets are per token"
        );
        let later = start + Duration::from_millis(500);
        assert!(rate.take_at("billing", 500, later).is_ok());
        assert!(rate.take_at("billing", 1, later).is_err());
    }

    #[test]
    fn the_largest_request_always_fits_eventually_and_zero_means_no_limit() {
        let rate = RecordRate::new(10, 1000);
        let start = Instant::now();
        assert!(rate.take_at("big", 1000, start).is_ok());
        assert_eq!(
            rate.take_at("big", 1000, start).unwrap_err(),
            Duration::from_secs(100)
        );
        let open = RecordRate::new(0, 1000);
        for _ in 0..100 {
            assert!(open.take_at("any", 1_000_000, start).is_ok());
        }
    }
}
