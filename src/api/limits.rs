//! Per-integration protections kept in memory, outside the event log: the delivery rate limit and
//! the bounded record of recent deliveries that operators read to see why a webhook is refused.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{IntegrationId, Seq};

/// A token bucket's parameters: `per_second` deliveries sustained, bursts up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

impl Default for RateLimit {
    /// Generous: Postman runs a monitor at most every minute or so, so even hundreds of monitors on
    /// one URL stay far below this; it exists to stop a runaway or hostile sender.
    fn default() -> Self {
        RateLimit { per_second: 200.0, burst: 2000.0 }
    }
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// One token bucket per integration, so that one noisy integration never slows another.
pub struct RateLimiter {
    limit: Option<RateLimit>,
    buckets: Mutex<HashMap<IntegrationId, Bucket>>,
}

impl RateLimiter {
    /// `None` disables limiting (for load tests).
    pub fn new(limit: Option<RateLimit>) -> RateLimiter {
        RateLimiter { limit, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `id` at `now`, or says in how many whole seconds one will be there.
    pub fn check(&self, id: IntegrationId, now: Instant) -> Result<(), u64> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        let bucket = buckets.entry(id).or_insert(Bucket { tokens: limit.burst, updated: now });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * limit.per_second).min(limit.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / limit.per_second;
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

/// One delivery as an operator sees it: never the body, only its size.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub at: DateTime<Utc>,
    pub status: u16,
    /// The error code of a refused delivery.
    pub error_code: Option<&'static str>,
    pub body_bytes: usize,
    /// The event an accepted delivery became.
    pub seq: Option<Seq>,
}

/// The last `capacity` deliveries of each integration, accepted and refused, newest last.
pub struct Deliveries {
    capacity: usize,
    by_integration: Mutex<HashMap<IntegrationId, VecDeque<Delivery>>>,
}

impl Deliveries {
    pub fn new(capacity: usize) -> Deliveries {
        Deliveries { capacity, by_integration: Mutex::new(HashMap::new()) }
    }

    pub fn record(&self, id: IntegrationId, delivery: Delivery) {
        if self.capacity == 0 {
            return;
        }
        let mut all = self.by_integration.lock().expect("deliveries lock");
        let recent = all.entry(id).or_default();
        if recent.len() == self.capacity {
            recent.pop_front();
        }
        recent.push_back(delivery);
    }

    /// Newest first.
    pub fn recent(&self, id: IntegrationId) -> Vec<Delivery> {
        let all = self.by_integration.lock().expect("deliveries lock");
        all.get(&id).map(|r| r.iter().rev().cloned().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn buckets_refill_at_the_rate_and_are_per_integration() {
        let limiter = RateLimiter::new(Some(RateLimit { per_second: 2.0, burst: 3.0 }));
        let (a, b) =
            (IntegrationId(uuid::Uuid::from_u128(1)), IntegrationId(uuid::Uuid::from_u128(2)));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check(a, t0), Ok(()));
        }
        assert_eq!(limiter.check(a, t0), Err(1), "the burst is spent");
        assert_eq!(limiter.check(b, t0), Ok(()), "another integration is not affected");
        assert_eq!(
            limiter.check(a, t0 + Duration::from_millis(500)),
            Ok(()),
            "half a second refills one"
        );
        assert!(limiter.check(a, t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn deliveries_are_bounded_and_newest_first() {
        let deliveries = Deliveries::new(2);
        let id = IntegrationId(uuid::Uuid::from_u128(1));
        for n in 0..3 {
            deliveries.record(
                id,
                Delivery {
                    at: Utc::now(),
                    status: 202,
                    error_code: None,
                    body_bytes: n,
                    seq: None,
                },
            );
        }
        let sizes: Vec<usize> = deliveries.recent(id).iter().map(|d| d.body_bytes).collect();
        assert_eq!(sizes, [2, 1]);
    }
}
