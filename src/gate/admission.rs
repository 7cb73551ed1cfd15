//! What the gate may hold at once, whoever asks: a process-wide byte budget
//! for buffered request bodies, and per-address counts of connections and of
//! gated requests in flight.
//!
//! Memory held for gated bodies is bounded by `limits.max_buffered_bodies`
//! plus, per buffering stream, `FREE_PER_BODY` (which is part of the
//! per-connection overhead: a connection buffers at most
//! `BODIES_PER_CONNECTION` gated bodies at a time). The allowance is what
//! keeps a small login form working while an attack holds the budget.
//!
//! Everything here is taken by an RAII guard and given back when it drops,
//! so no path (refusal, error, a client that goes away) can leak a place.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Semaphore;

use crate::config::Limits;

/// The first bytes of each gated body that are not charged to the budget.
pub const FREE_PER_BODY: u64 = 16 * 1024;

/// How many streams of one connection may hold a gated body at a time (from
/// its first byte read until the upstream is done with it).
/// The others wait (within the body timeout): unread, their data stays in
/// HTTP/2's receive window, which bounds it per connection, and a browser
/// sending several forms at once is not refused.
pub const BODIES_PER_CONNECTION: usize = 4;

/// A process-wide budget of bytes, reserved by [`Reservation`]s. Gated
/// bodies reserve from it now; anything else the gate buffers may share it.
#[derive(Debug)]
pub struct BodyBudget {
    used: AtomicU64,
    limit: AtomicU64,
    gauge: Gauge,
}

impl BodyBudget {
    /// `gauge` follows the bytes reserved (for `/metrics`).
    pub fn new(limit: u64, gauge: Gauge) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicU64::new(0),
            limit: AtomicU64::new(limit),
            gauge,
        })
    }

    /// A new limit (reload); reservations already made stand.
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// An empty reservation, to grow as bytes arrive.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
        }
    }

    fn take(&self, bytes: u64) -> bool {
        if bytes == 0 {
            return true;
        }
        let limit = self.limit.load(Ordering::Relaxed);
        let taken = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= limit)
            })
            .is_ok();
        if taken {
            self.gauge.inc_by(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        taken
    }

    fn give_back(&self, bytes: u64) {
        if bytes > 0 {
            self.used.fetch_sub(bytes, Ordering::AcqRel);
            self.gauge.dec_by(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }
}

/// Bytes held from a [`BodyBudget`] until this is dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<BodyBudget>,
    bytes: u64,
}

impl Reservation {
    /// Reserves `more` bytes as well; false (and nothing taken) if the
    /// budget has not that much left.
    pub fn grow(&mut self, more: u64) -> bool {
        let taken = self.budget.take(more);
        if taken {
            self.bytes += more;
        }
        taken
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// How many of something each address holds, at most `limit` each. An
/// address is in the table only while it holds one, so the table is as
/// large as the number of addresses active at this moment.
#[derive(Debug)]
pub struct PerAddress {
    counts: DashMap<IpAddr, usize>,
    limit: AtomicUsize,
}

impl PerAddress {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            counts: DashMap::new(),
            limit: AtomicUsize::new(limit),
        })
    }

    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// One more for `addr`, or `None` if it holds its limit already.
    pub fn enter(self: &Arc<Self>, addr: IpAddr) -> Option<AddrGuard> {
        let addr = addr.to_canonical();
        let limit = self.limit.load(Ordering::Relaxed);
        match self.counts.entry(addr) {
            Entry::Occupied(mut e) => {
                if *e.get() >= limit {
                    return None;
                }
                *e.get_mut() += 1;
            }
            Entry::Vacant(e) => {
                if limit == 0 {
                    return None;
                }
                e.insert(1);
            }
        }
        Some(AddrGuard {
            table: self.clone(),
            addr,
        })
    }

    /// How many `addr` holds now.
    pub fn held(&self, addr: IpAddr) -> usize {
        self.counts.get(&addr.to_canonical()).map_or(0, |c| *c)
    }

    /// Addresses holding at least one.
    pub fn tracked(&self) -> usize {
        self.counts.len()
    }
}

/// One place of an address in a [`PerAddress`] table, until dropped.
#[derive(Debug)]
pub struct AddrGuard {
    table: Arc<PerAddress>,
    addr: IpAddr,
}

impl Drop for AddrGuard {
    fn drop(&mut self) {
        if let Entry::Occupied(mut e) = self.table.counts.entry(self.addr) {
            if *e.get() <= 1 {
                // At zero the entry goes: the table never outgrows the addresses active now.
                e.remove();
            } else {
                *e.get_mut() -= 1;
            }
        }
    }
}

/// The process-wide admission state, kept across reloads (a reload changes
/// the limits, never the counts).
#[derive(Debug)]
pub struct Admission {
    pub budget: Arc<BodyBudget>,
    pub connections: Arc<PerAddress>,
    pub gated: Arc<PerAddress>,
}

impl Admission {
    pub fn new(limits: &Limits, budget_gauge: Gauge) -> Self {
        Self {
            budget: BodyBudget::new(limits.max_buffered_bodies, budget_gauge),
            connections: PerAddress::new(connections_per_address(limits)),
            gated: PerAddress::new(limits.max_gated_per_address),
        }
    }

    /// Applies reloaded limits.
    pub fn configure(&self, limits: &Limits) {
        self.budget.set_limit(limits.max_buffered_bodies);
        self.connections.set_limit(connections_per_address(limits));
        self.gated.set_limit(limits.max_gated_per_address);
    }
}

/// A per-address limit of all places or more limits nothing: an address
/// that holds them all makes the next connection wait in the backlog, like
/// anyone's, rather than be closed.
fn connections_per_address(limits: &Limits) -> usize {
    if limits.max_connections_per_address >= limits.max_connections {
        usize::MAX
    } else {
        limits.max_connections_per_address
    }
}

/// What one connection's requests reach the gate with (as a request
/// extension): the shared admission state and this connection's places for
/// buffering gated bodies.
#[derive(Debug, Clone)]
pub struct ConnAdmission {
    pub shared: Arc<Admission>,
    pub bodies: Arc<Semaphore>,
}

impl ConnAdmission {
    pub fn new(shared: Arc<Admission>) -> Self {
        Self {
            shared,
            bodies: Arc::new(Semaphore::new(BODIES_PER_CONNECTION)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_refuses_what_would_exceed_it_and_gets_it_back_on_drop() {
        let budget = BodyBudget::new(100, Gauge::default());
        let mut a = budget.reservation();
        assert!(a.grow(60));
        let mut b = budget.reservation();
        assert!(!b.grow(41), "over the budget");
        assert_eq!(b.bytes(), 0);
        assert!(b.grow(40));
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_per_address_table_limits_each_address_and_forgets_it_at_zero() {
        let table = PerAddress::new(2);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let first = table.enter(a).expect("first");
        let second = table.enter(a).expect("second");
        assert!(table.enter(a).is_none(), "a third place for one address");
        let other = table.enter(b).expect("another address is not limited");
        assert_eq!(table.tracked(), 2);
        drop((first, second, other));
        assert_eq!(table.tracked(), 0, "entries at zero are removed");
        assert!(table.enter(a).is_some());
    }

    #[test]
    fn an_ipv4_mapped_address_counts_as_the_ipv4_address() {
        let table = PerAddress::new(1);
        let v4: IpAddr = "192.0.2.1".parse().expect("ip");
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        let _held = table.enter(v4).expect("first");
        assert!(table.enter(mapped).is_none());
    }
}
