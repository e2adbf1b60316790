//! The RPCs `mesh-bench load` can load, what each needs prepared, and one call.

use std::time::Duration;

use mesh::{
    client::Channel,
    proto::{
        inventory::v1::{inventory_client::InventoryClient, AddStockRequest, GetItemRequest},
        orders::v1::{orders_client::OrdersClient, OrderLine, PlaceOrderRequest},
        payments::v1::{payments_client::PaymentsClient, ChargeRequest},
        users::v1::{users_client::UsersClient, GetUserRequest},
    },
};
use tonic::{Code, Request, Status};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

use super::workers::Call;

/// The SKU `add-stock` adds to, one unit per request (so the server-side
/// count can be checked with GetItem).
pub(crate) const ADD_STOCK_SKU: &str = "BENCH-ADD";
/// The SKU `get-item` reads.
pub(crate) const GET_ITEM_SKU: &str = "BENCH-GET";
/// The SKU `place-order` buys.
pub(crate) const ORDER_SKU: &str = "BENCH-ORDER";
/// The user `get-user` reads and `place-order` orders for.
const BENCH_EMAIL: &str = "bench@example.com";
/// The user id `charge` charges (payments does not look users up).
const CHARGE_USER: &str = "bench-user";
/// Unit price of the bench SKUs, and the amount charged (well below the
/// payments decline threshold).
const PRICE_CENTS: i64 = 100;
/// Stock kept available for a `place-order` run of unknown length.
const ORDER_STOCK: i64 = 10_000_000;

/// An RPC to load.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rpc {
    /// `grpc.health.v1.Health/Check` of an inventory instance: no storage,
    /// no handler work, so the run measures the transport (client, proxies,
    /// HTTP/2), not the database.
    Health,
    /// inventory GetItem of a bench SKU (read only).
    GetItem,
    /// users GetUser of the bench user (read only).
    GetUser,
    /// inventory AddStock of one unit of BENCH-ADD (a write, not retried).
    AddStock,
    /// orders PlaceOrder (the whole saga: users, inventory, payments), a fresh request_id each.
    PlaceOrder,
    /// payments Charge with a fresh idempotency key each.
    Charge,
}

impl Rpc {
    /// The `--rpc` spelling.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Rpc::Health => "health",
            Rpc::GetItem => "get-item",
            Rpc::GetUser => "get-user",
            Rpc::AddStock => "add-stock",
            Rpc::PlaceOrder => "place-order",
            Rpc::Charge => "charge",
        }
    }

    /// The Consul service that serves it.
    pub(crate) fn service(self) -> &'static str {
        match self {
            Rpc::Health | Rpc::GetItem | Rpc::AddStock => "inventory",
            Rpc::GetUser => "users",
            Rpc::PlaceOrder => "orders",
            Rpc::Charge => "payments",
        }
    }

    /// The services its preparation calls.
    pub(crate) fn preparation_services(self) -> &'static [&'static str] {
        match self {
            Rpc::GetItem => &["inventory"],
            Rpc::GetUser => &["users"],
            Rpc::PlaceOrder => &["users", "inventory"],
            Rpc::Health | Rpc::AddStock | Rpc::Charge => &[],
        }
    }
}

/// What the requests of a run refer to.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fixture {
    user_id: Option<String>,
}

impl Fixture {
    /// The bench user's id (`get-user`, `place-order`).
    pub(crate) fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }
}

/// Makes what `rpc` needs, through `channel_for(<service>)`: the bench SKU's
/// stock, the bench user. `requests` (when known) sizes the stock of a
/// `place-order` run.
pub(crate) async fn prepare(
    rpc: Rpc,
    channel_for: impl Fn(&str) -> Channel,
    requests: Option<u64>,
) -> Result<Fixture, Status> {
    let bench_user = || fixtures::ensure_user(channel_for("users"), BENCH_EMAIL, "Bench User");
    match rpc {
        Rpc::GetItem => {
            fixtures::add_stock(channel_for("inventory"), GET_ITEM_SKU, 1, PRICE_CENTS).await?;
            Ok(Fixture::default())
        }
        Rpc::GetUser => Ok(Fixture {
            user_id: Some(bench_user().await?.user_id),
        }),
        Rpc::PlaceOrder => {
            let user = bench_user().await?;
            let stock =
                requests.map_or(ORDER_STOCK, |n| i64::try_from(n).unwrap_or(i64::MAX).max(1));
            fixtures::top_up(channel_for("inventory"), ORDER_SKU, stock, PRICE_CENTS).await?;
            Ok(Fixture {
                user_id: Some(user.user_id),
            })
        }
        Rpc::Health | Rpc::AddStock | Rpc::Charge => Ok(Fixture::default()),
    }
}

/// One worker's client for the RPC under load.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    /// Health Check of the whole server.
    Health(HealthClient<Channel>),
    /// GetItem.
    GetItem(InventoryClient<Channel>),
    /// GetUser of this user id.
    GetUser(UsersClient<Channel>, String),
    /// AddStock.
    AddStock(InventoryClient<Channel>),
    /// PlaceOrder for this user id.
    PlaceOrder(OrdersClient<Channel>, String),
    /// Charge.
    Charge(PaymentsClient<Channel>),
}

/// A [`Caller`] with the per-request deadline.
#[derive(Debug, Clone)]
pub(crate) struct TimedCaller {
    caller: Caller,
    timeout: Duration,
}

impl TimedCaller {
    /// The client for `rpc` over `channel`, each call bounded by `timeout`.
    pub(crate) fn new(rpc: Rpc, fixture: &Fixture, channel: Channel, timeout: Duration) -> Self {
        let user_id = fixture.user_id.clone().unwrap_or_default();
        let caller = match rpc {
            Rpc::Health => Caller::Health(HealthClient::new(channel)),
            Rpc::GetItem => Caller::GetItem(InventoryClient::new(channel)),
            Rpc::GetUser => Caller::GetUser(UsersClient::new(channel), user_id),
            Rpc::AddStock => Caller::AddStock(InventoryClient::new(channel)),
            Rpc::PlaceOrder => Caller::PlaceOrder(OrdersClient::new(channel), user_id),
            Rpc::Charge => Caller::Charge(PaymentsClient::new(channel)),
        };
        Self { caller, timeout }
    }

    async fn send(&mut self) -> Result<(), Status> {
        let timeout = self.timeout;
        let fresh_id = || uuid::Uuid::new_v4().to_string();
        match &mut self.caller {
            Caller::Health(client) => {
                // "" is the server as a whole: every instance answers it.
                let message = HealthCheckRequest {
                    service: String::new(),
                };
                client.check(timed(message, timeout)).await.map(drop)
            }
            Caller::GetItem(client) => {
                let message = GetItemRequest {
                    sku: GET_ITEM_SKU.to_owned(),
                };
                client.get_item(timed(message, timeout)).await.map(drop)
            }
            Caller::GetUser(client, user_id) => {
                let message = GetUserRequest {
                    user_id: user_id.clone(),
                };
                client.get_user(timed(message, timeout)).await.map(drop)
            }
            Caller::AddStock(client) => {
                let message = AddStockRequest {
                    sku: ADD_STOCK_SKU.to_owned(),
                    quantity: 1,
                    unit_price_cents: PRICE_CENTS,
                    currency: "EUR".into(),
                };
                client.add_stock(timed(message, timeout)).await.map(drop)
            }
            Caller::PlaceOrder(client, user_id) => {
                let message = PlaceOrderRequest {
                    request_id: fresh_id(),
                    user_id: user_id.clone(),
                    items: vec![OrderLine {
                        sku: ORDER_SKU.to_owned(),
                        quantity: 1,
                        unit_price_cents: 0,
                    }],
                    currency: "EUR".to_owned(),
                };
                client.place_order(timed(message, timeout)).await.map(drop)
            }
            Caller::Charge(client) => {
                let message = ChargeRequest {
                    idempotency_key: fresh_id(),
                    user_id: CHARGE_USER.to_owned(),
                    amount_cents: PRICE_CENTS,
                    currency: "EUR".to_owned(),
                };
                client.charge(timed(message, timeout)).await.map(drop)
            }
        }
    }
}

/// `message` with a deadline.
fn timed<T>(message: T, timeout: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(timeout);
    request
}

impl Call for TimedCaller {
    async fn call(&mut self) -> Result<(), Code> {
        self.send().await.map_err(|status| status.code())
    }
}
