//! The faults a run draws, each with its weight: the ones that take long
//! (pauses, delays past the lease, a wiped database) are drawn less often,
//! so that 200 runs still fit in the suite's time.

use rand::{rngs::StdRng, Rng};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    KillOrders,
    KillPayments,
    KillInventory,
    PaymentsLatency,
    LostReply,
    DuplicateRequests,
    OrdersRestartMidRecovery,
    /// Many orders at once, on both instances.
    Burst,
    /// SIGSTOP an orders instance past its leases, then SIGCONT: another
    /// instance takes its orders over, and the stale runs' calls land late.
    PauseOrders,
    /// SIGSTOP inventory past the lease (and past reservations' TTL), then
    /// SIGCONT: Commits race the expiry sweep.
    PauseInventory,
    /// orders B's requests to payments and inventory, and their replies,
    /// delayed past the lease.
    PastTheLease,
    /// orders' database lost between runs (both instances restarted on an
    /// empty one); earlier requests are sent again.
    WipedOrdersDb,
}

/// Each fault and how many times more often than the rarest it is drawn.
const WEIGHTS: [(Fault, u32); 12] = [
    (Fault::KillOrders, 4),
    (Fault::KillPayments, 4),
    (Fault::KillInventory, 4),
    (Fault::PaymentsLatency, 2),
    (Fault::LostReply, 4),
    (Fault::DuplicateRequests, 4),
    (Fault::OrdersRestartMidRecovery, 2),
    (Fault::Burst, 3),
    (Fault::PauseOrders, 1),
    (Fault::PauseInventory, 1),
    (Fault::PastTheLease, 1),
    (Fault::WipedOrdersDb, 1),
];

impl Fault {
    /// One fault, by weight.
    pub fn draw(rng: &mut StdRng) -> Self {
        let total: u32 = WEIGHTS.iter().map(|(_, weight)| weight).sum();
        let mut pick = rng.random_range(0..total);
        for (fault, weight) in WEIGHTS {
            if pick < weight {
                return fault;
            }
            pick -= weight;
        }
        unreachable!("the pick is below the total weight")
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::KillOrders => "SIGKILL orders",
            Fault::KillPayments => "SIGKILL payments",
            Fault::KillInventory => "SIGKILL inventory",
            Fault::PaymentsLatency => "payments slower than the per-call timeout",
            Fault::LostReply => "lost reply (committed, client sees UNAVAILABLE)",
            Fault::DuplicateRequests => "duplicate PlaceOrder/CancelOrder on two instances",
            Fault::OrdersRestartMidRecovery => "orders restarted mid-recovery",
            Fault::Burst => "a burst of 20-32 orders on both instances",
            Fault::PauseOrders => "orders paused (SIGSTOP) past the lease",
            Fault::PauseInventory => "inventory paused (SIGSTOP) past the lease and TTL",
            Fault::PastTheLease => "requests and replies delayed past the lease",
            Fault::WipedOrdersDb => "orders' database wiped, requests sent again",
        }
    }
}
