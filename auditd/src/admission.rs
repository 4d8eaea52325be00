//! Which connections are let in: at most so many at once, and at most so many from one
//! address, so that a client holding connections open (idle keep-alives, slow headers,
//! stalled TLS handshakes) cannot take every one and shut others out.
//!
//! A connection beyond the per-address bound is closed as soon as it is accepted, before
//! any byte is read. At the overall bound, the connection that has been open longest
//! without a request in progress (idle, or still sending its headers) is asked to close
//! (hyper closes it at once, or after the response it is sending), and the new one is let
//! in: so clients from many addresses holding idle connections cannot lock out one that
//! has a request to make. Only when every connection is busy is a new one closed.
//!
//! Each admitted connection holds a [`ConnectionSlot`] until its task ends, and marks the
//! time it spends on requests with [`Busy`].

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// The open connections (or TLS handshakes), counted in all and by client address.
#[derive(Debug)]
pub struct Connections {
    max: usize,
    max_per_ip: usize,
    /// Whether an idle connection gives way to a new one at the overall bound.
    evicts_idle: bool,
    open: Mutex<Open>,
    refused: AtomicU64,
    evicted: AtomicU64,
    /// Signalled whenever a connection closes (shutdown waits for the last one).
    closed: Notify,
}

/// How many connections beyond the bound may be open while those asked to give way close
/// (each does within [`EVICTION_GRACE`]).
const EVICTION_SLACK: usize = 64;

/// How long a connection asked to give way has to finish the response it is sending;
/// then it is closed regardless (a client that stopped reading cannot hold it).
pub const EVICTION_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The address a bound counts a client under: IPv4 addresses as they are, IPv6 ones by
/// their /64, which one subscriber or host usually holds whole.
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
    /// Every open connection, oldest first.
    live: BTreeMap<u64, Arc<Liveness>>,
    next_id: u64,
}

/// What a connection's task and the admission share: whether it is on a request, and the
/// request to close.
#[derive(Debug, Default)]
pub struct Liveness {
    busy: AtomicUsize,
    asked_to_close: AtomicBool,
    close: Notify,
}

/// An admitted connection's place; the place is freed when it is dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    connections: Arc<Connections>,
    ip: IpAddr,
    id: u64,
    liveness: Arc<Liveness>,
}

/// A request in progress on a connection, from its head to the end of its response body.
#[derive(Debug)]
pub struct Busy(Arc<Liveness>);

impl Connections {
    /// At most `max` at once (an idle one giving way when `evicts_idle`), and at most
    /// `max_per_ip` from one address.
    pub fn new(max: usize, max_per_ip: usize, evicts_idle: bool) -> Arc<Self> {
        Arc::new(Connections {
            max,
            max_per_ip,
            evicts_idle,
            open: Mutex::new(Open::default()),
            refused: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            closed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a connection from `ip`, or `None` (counted) when a bound holds.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let ip = client_of(ip);
        let mut open = self.lock();
        let from_ip = open.by_ip.get(&ip).copied().unwrap_or(0);
        // The address's own bound first: a client at it never makes another give way.
        let admitted = from_ip < self.max_per_ip
            && (open.total < self.max
                // Room is made only while the connections already asked to close are few,
                // so the count stays near the bound even if some are slow to go.
                || (self.evicts_idle
                    && open.total < self.max + EVICTION_SLACK
                    && self.evict_one(&open)));
        if !admitted {
            drop(open);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        open.total += 1;
        open.by_ip.insert(ip, from_ip + 1);
        let id = open.next_id;
        open.next_id += 1;
        let liveness = Arc::new(Liveness::default());
        open.live.insert(id, liveness.clone());
        Some(ConnectionSlot {
            connections: self.clone(),
            ip,
            id,
            liveness,
        })
    }

    /// Asks the oldest connection without a request in progress to close; `false` when
    /// every one is busy.
    fn evict_one(&self, open: &Open) -> bool {
        let idle = open.live.values().find(|l| {
            l.busy.load(Ordering::Acquire) == 0 && !l.asked_to_close.load(Ordering::Acquire)
        });
        match idle {
            Some(liveness) => {
                liveness.asked_to_close.store(true, Ordering::Release);
                // Stored if its task is not waiting yet: it sees it on its next look.
                liveness.close.notify_one();
                self.evicted.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    /// Connections closed at once because a bound held, so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Idle connections asked to close to make room for a new one, so far.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Returns once no connection is open.
    pub async fn all_closed(&self) {
        loop {
            let notified = self.closed.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl ConnectionSlot {
    /// What the connection's task needs to mark requests and hear a request to close.
    pub fn liveness(&self) -> Arc<Liveness> {
        self.liveness.clone()
    }
}

impl Liveness {
    /// Marks a request in progress until the returned guard is dropped.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Resolves when the admission asks this connection to close.
    pub async fn asked_to_close(&self) {
        self.close.notified().await;
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.connections.lock();
        open.total = open.total.saturating_sub(1);
        open.live.remove(&self.id);
        if let Some(n) = open.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.by_ip.remove(&self.ip);
            }
        }
        drop(open);
        self.connections.closed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_hold_in_all_and_per_address_and_slots_come_back() {
        let connections = Connections::new(3, 2, false);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = connections.admit(a).unwrap();
        let _second = connections.admit(a).unwrap();
        assert!(connections.admit(a).is_none(), "a third from one address");
        let _third = connections.admit(b).unwrap();
        assert!(connections.admit(b).is_none(), "a fourth in all");
        assert_eq!((connections.open(), connections.refused()), (3, 2));
        drop(first);
        assert!(connections.admit(a).is_some());
    }

    #[test]
    fn connections_asked_to_give_way_but_slow_to_go_do_not_let_the_count_grow() {
        let connections = Connections::new(1, 1000, true);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        // Each new one makes the previous give way, while none of them closes yet.
        let held: Vec<_> = (0..=EVICTION_SLACK)
            .map(|_| connections.admit(ip).expect("room is made"))
            .collect();
        assert_eq!(connections.open(), 1 + EVICTION_SLACK);
        assert!(connections.admit(ip).is_none(), "beyond the slack, refused");
        drop(held);
        assert_eq!(connections.open(), 0);
    }

    #[test]
    fn ipv6_clients_count_by_their_64_and_a_client_at_its_bound_evicts_no_one() {
        let connections = Connections::new(2, 1, true);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _first = connections.admit(a).unwrap();
        assert!(
            connections.admit(same_64).is_none(),
            "one /64 is one client"
        );
        let _second = connections.admit(other).unwrap();
        // Full, and `a`'s /64 is at its own bound: it makes no one give way.
        assert!(connections.admit(a).is_none());
        assert_eq!(connections.evicted(), 0);
    }

    #[test]
    fn at_the_bound_the_oldest_idle_connection_gives_way_and_busy_ones_never_do() {
        let connections = Connections::new(2, 10, true);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let oldest = connections.admit(ip).unwrap();
        let busy_one = connections.admit(ip).unwrap();
        let request = busy_one.liveness().busy();
        // Full: the oldest idle one is asked to close, the new one is let in.
        let newcomer = connections.admit(ip).unwrap();
        assert!(oldest.liveness.asked_to_close.load(Ordering::Acquire));
        assert!(!busy_one.liveness.asked_to_close.load(Ordering::Acquire));
        assert_eq!(connections.evicted(), 1);
        // The newcomer is busy too, and the oldest already asked: nothing gives way.
        let _also = newcomer.liveness().busy();
        assert!(connections.admit(ip).is_none());
        drop(oldest);
        assert!(
            connections.admit(ip).is_none(),
            "still full of busy connections"
        );
        drop(request);
        assert!(
            connections.admit(ip).is_some(),
            "an idle one gives way again"
        );
        assert_eq!(connections.evicted(), 2);
    }
}
