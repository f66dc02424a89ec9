//! The server-wide budget of message bytes being received at once (`--max-inflight-bytes`):
//! each message holds a reservation for its bytes while it is read, decompressed and handled,
//! so that many large messages arriving together cannot exhaust memory. A message that does not
//! fit is refused (HTTP 503, or `UNAVAILABLE` over WebSocket) instead of waiting: waiting would
//! let stalled senders hold the budget while the rest queue behind them.

use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The default budget: 1 GiB.
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 1 << 30;

#[derive(Debug)]
pub struct InflightBudget {
    limit: usize,
    used: AtomicUsize,
    /// `inflight_bytes`, kept equal to `used`.
    gauge: Gauge,
}

impl InflightBudget {
    pub fn new(limit: usize, gauge: Gauge) -> Arc<InflightBudget> {
        Arc::new(InflightBudget {
            limit,
            used: AtomicUsize::new(0),
            gauge,
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes reserved right now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Reserves `bytes`, or `None` when they do not fit.
    pub fn try_reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        let mut reservation = Reservation {
            budget: self.clone(),
            bytes: 0,
        };
        reservation.grow(bytes).then_some(reservation)
    }

    fn take(&self, bytes: usize) -> bool {
        let taken = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            });
        match taken {
            Ok(before) => {
                self.gauge.inc_by(bytes as i64);
                debug_assert!(before + bytes <= self.limit);
                true
            }
            Err(_) => false,
        }
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
        self.gauge.dec_by(bytes as i64);
    }
}

/// Bytes held under the budget; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<InflightBudget>,
    bytes: usize,
}

impl Reservation {
    /// Reserves `more` bytes on top of what this holds; `false` (holding what it held) when
    /// they do not fit.
    pub fn grow(&mut self, more: usize) -> bool {
        if more == 0 {
            return true;
        }
        if !self.budget.take(more) {
            return false;
        }
        self.bytes += more;
        true
    }

    /// Grows to hold at least `total` bytes.
    pub fn grow_to(&mut self, total: usize) -> bool {
        self.grow(total.saturating_sub(self.bytes))
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_budget_and_give_it_back() {
        let gauge = Gauge::default();
        let budget = InflightBudget::new(100, gauge.clone());
        let mut a = budget.try_reserve(60).unwrap();
        assert!(budget.try_reserve(41).is_none(), "over the budget");
        let b = budget.try_reserve(40).unwrap();
        assert_eq!(budget.used(), 100);
        assert_eq!(gauge.get(), 100);
        assert!(!a.grow(1));
        assert_eq!(a.bytes(), 60, "a failed grow keeps what was held");
        drop(b);
        assert!(a.grow_to(90));
        assert_eq!(budget.used(), 90);
        drop(a);
        assert_eq!(budget.used(), 0);
        assert_eq!(gauge.get(), 0);
    }
}
