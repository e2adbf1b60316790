//! The saga's state machine against scripted in-process upstreams (real
//! tonic servers, no network), for the branches real processes reach only
//! by luck: a charge whose answer is lost after it happened, a release or a
//! commit that fails, a concurrent repeat, a broken invariant.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use mesh::{
    client::Channel,
    proto::{
        inventory::v1::{
            inventory_server::{Inventory, InventoryServer},
            AddStockRequest, CommitRequest, GetItemRequest, GetReservationRequest, Item,
            ReleaseRequest, Reservation, ReservationState, ReserveRequest, ReservedLine,
            RestockRequest,
        },
        payments::v1::{
            payments_server::{Payments, PaymentsServer},
            ChargeRequest, GetPaymentRequest, Payment, PaymentStatus, RefundRequest,
        },
        users::v1::{
            users_server::{Users, UsersServer},
            CreateUserRequest, GetUserRequest, ListUsersRequest, ListUsersResponse, User,
        },
    },
};
use tonic::{body::Body, metadata::MetadataMap, Code, Request, Response, Status};
use tower::{util::BoxCloneSyncService, Service, ServiceExt};

use super::*;
use crate::domain::{order_charge_key, order_reservation_id, Item as OrderItem, PlaceOrder, Step};

// ---- scripted upstreams -------------------------------------------------

/// Knows user `u_1`; counts the GetUser calls.
#[derive(Default)]
struct FakeUsers {
    get_user_calls: AtomicU64,
}

#[tonic::async_trait]
impl Users for FakeUsers {
    async fn create_user(&self, _: Request<CreateUserRequest>) -> Result<Response<User>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }
    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        self.get_user_calls.fetch_add(1, Ordering::SeqCst);
        match request.get_ref().user_id.as_str() {
            "u_1" => Ok(Response::new(User {
                user_id: "u_1".into(),
                ..User::default()
            })),
            other => Err(Status::not_found(format!("user {other} not found"))),
        }
    }
    async fn list_users(
        &self,
        _: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }
}

#[derive(Default)]
struct FakeInventory {
    /// sku → (available, unit price)
    stock: Mutex<HashMap<String, (i64, i64)>>,
    reservations: Mutex<HashMap<String, Reservation>>,
    fail_release: AtomicBool,
    fail_commit: AtomicBool,
    /// Commit commits, then answers FAILED_PRECONDITION "already committed"
    /// (what a Commit racing the expiry could answer before inventory
    /// decided expiry and release in one write).
    commit_then_refuse: AtomicBool,
    fail_get_reservation: AtomicBool,
    reserve_calls: AtomicU64,
}

impl FakeInventory {
    fn with_stock(items: &[(&str, i64, i64)]) -> Arc<Self> {
        let inventory = Self::default();
        for (sku, available, price) in items {
            inventory
                .stock
                .lock()
                .unwrap()
                .insert((*sku).into(), (*available, *price));
        }
        Arc::new(inventory)
    }

    fn available(&self, sku: &str) -> i64 {
        self.stock.lock().unwrap()[sku].0
    }

    fn state(&self, reservation_id: &str) -> Option<ReservationState> {
        self.reservations
            .lock()
            .unwrap()
            .get(reservation_id)
            .map(Reservation::state)
    }

    /// Releases a reservation behind the saga's back.
    fn release_now(&self, reservation_id: &str) {
        let mut reservations = self.reservations.lock().unwrap();
        let reservation = reservations.get_mut(reservation_id).unwrap();
        reservation.set_state(ReservationState::Released);
        let mut stock = self.stock.lock().unwrap();
        for line in &reservation.items {
            stock.get_mut(&line.sku).unwrap().0 += line.quantity;
        }
    }
}

#[tonic::async_trait]
impl Inventory for FakeInventory {
    async fn add_stock(&self, _: Request<AddStockRequest>) -> Result<Response<Item>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }
    async fn get_item(&self, _: Request<GetItemRequest>) -> Result<Response<Item>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }
    async fn reserve(
        &self,
        request: Request<ReserveRequest>,
    ) -> Result<Response<Reservation>, Status> {
        self.reserve_calls.fetch_add(1, Ordering::SeqCst);
        let request = request.into_inner();
        let mut reservations = self.reservations.lock().unwrap();
        if let Some(existing) = reservations.get(&request.reservation_id) {
            return Ok(Response::new(existing.clone()));
        }
        let mut stock = self.stock.lock().unwrap();
        let mut lines = Vec::new();
        for line in &request.items {
            match stock.get(&line.sku) {
                Some((available, price)) if *available >= line.quantity => {
                    lines.push(ReservedLine {
                        sku: line.sku.clone(),
                        quantity: line.quantity,
                        unit_price_cents: *price,
                    })
                }
                _ => {
                    return Err(Status::failed_precondition(format!(
                        "insufficient stock: {} (asked {})",
                        line.sku, line.quantity
                    )))
                }
            }
        }
        for line in &lines {
            stock.get_mut(&line.sku).unwrap().0 -= line.quantity;
        }
        let mut reservation = Reservation {
            reservation_id: request.reservation_id.clone(),
            total_cents: lines.iter().map(|l| l.quantity * l.unit_price_cents).sum(),
            items: lines,
            currency: "EUR".into(),
            ..Reservation::default()
        };
        reservation.set_state(ReservationState::Reserved);
        reservations.insert(request.reservation_id, reservation.clone());
        Ok(Response::new(reservation))
    }
    async fn release(
        &self,
        request: Request<ReleaseRequest>,
    ) -> Result<Response<Reservation>, Status> {
        if self.fail_release.load(Ordering::SeqCst) {
            return Err(Status::unavailable("inventory is down (scripted)"));
        }
        let id = request.into_inner().reservation_id;
        let state = self
            .state(&id)
            .ok_or_else(|| Status::not_found(format!("reservation {id} not found")))?;
        match state {
            ReservationState::Reserved => self.release_now(&id),
            ReservationState::Committed => return Err(Status::failed_precondition("committed")),
            _ => {}
        }
        Ok(Response::new(
            self.reservations.lock().unwrap()[&id].clone(),
        ))
    }
    async fn commit(
        &self,
        request: Request<CommitRequest>,
    ) -> Result<Response<Reservation>, Status> {
        if self.fail_commit.load(Ordering::SeqCst) {
            return Err(Status::unavailable("inventory is down (scripted)"));
        }
        let id = request.into_inner().reservation_id;
        let mut reservations = self.reservations.lock().unwrap();
        let reservation = reservations
            .get_mut(&id)
            .ok_or_else(|| Status::not_found(format!("reservation {id} not found")))?;
        match reservation.state() {
            ReservationState::Reserved | ReservationState::Committed => {
                reservation.set_state(ReservationState::Committed)
            }
            _ => {
                return Err(Status::failed_precondition(format!(
                    "reservation {id} expired before it was committed"
                )))
            }
        }
        if self.commit_then_refuse.load(Ordering::SeqCst) {
            return Err(Status::failed_precondition(format!(
                "reservation {id} is already committed"
            )));
        }
        Ok(Response::new(reservation.clone()))
    }
    async fn get_reservation(
        &self,
        request: Request<GetReservationRequest>,
    ) -> Result<Response<Reservation>, Status> {
        if self.fail_get_reservation.load(Ordering::SeqCst) {
            return Err(Status::unavailable("inventory is down (scripted)"));
        }
        let id = request.into_inner().reservation_id;
        self.reservations
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("reservation {id} not found")))
    }
    async fn restock(
        &self,
        request: Request<RestockRequest>,
    ) -> Result<Response<Reservation>, Status> {
        let id = request.into_inner().reservation_id;
        let mut reservations = self.reservations.lock().unwrap();
        let reservation = reservations
            .get_mut(&id)
            .ok_or_else(|| Status::not_found(format!("reservation {id} not found")))?;
        match reservation.state() {
            ReservationState::Committed => {
                reservation.set_state(ReservationState::Restocked);
                let mut stock = self.stock.lock().unwrap();
                for line in &reservation.items {
                    stock.get_mut(&line.sku).unwrap().0 += line.quantity;
                }
            }
            ReservationState::Restocked => {}
            _ => return Err(Status::failed_precondition("not committed")),
        }
        Ok(Response::new(reservation.clone()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Charge normally (decline above 100 000 cents).
    Normal,
    /// Record the charge, then lose the answer (DEADLINE_EXCEEDED).
    ChargeThenTimeOut,
    /// Refuse with INVALID_ARGUMENT.
    Refuse,
    /// Answer UNIMPLEMENTED (the request was not run).
    Unimplemented,
    /// Charge normally after a delay.
    Slow(u64),
}

struct FakePayments {
    mode: Mutex<Mode>,
    charges: Mutex<HashMap<String, Payment>>,
    charge_calls: AtomicU64,
}

impl FakePayments {
    fn new(mode: Mode) -> Arc<Self> {
        Arc::new(Self {
            mode: Mutex::new(mode),
            charges: Mutex::default(),
            charge_calls: AtomicU64::new(0),
        })
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn payments(&self) -> Vec<Payment> {
        self.charges.lock().unwrap().values().cloned().collect()
    }
}

#[tonic::async_trait]
impl Payments for FakePayments {
    async fn charge(&self, request: Request<ChargeRequest>) -> Result<Response<Payment>, Status> {
        self.charge_calls.fetch_add(1, Ordering::SeqCst);
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::Refuse => return Err(Status::invalid_argument("currency: not accepted")),
            Mode::Unimplemented => return Err(Status::unimplemented("no Charge here")),
            Mode::Slow(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            Mode::Normal | Mode::ChargeThenTimeOut => {}
        }
        let request = request.into_inner();
        let payment = {
            let mut charges = self.charges.lock().unwrap();
            let payment = charges
                .entry(request.idempotency_key.clone())
                .or_insert_with(|| {
                    let mut payment = Payment {
                        payment_id: format!("pay_{}", payment_id_for(&request)),
                        idempotency_key: request.idempotency_key.clone(),
                        user_id: request.user_id.clone(),
                        amount_cents: request.amount_cents,
                        currency: request.currency.clone(),
                        ..Payment::default()
                    };
                    if request.amount_cents > 100_000 {
                        payment.set_status(PaymentStatus::Declined);
                        payment.decline_reason = format!(
                            "amount {} exceeds the limit of 100000",
                            request.amount_cents
                        );
                    } else {
                        payment.set_status(PaymentStatus::Captured);
                    }
                    payment
                });
            if payment.amount_cents != request.amount_cents {
                return Err(Status::invalid_argument("key reused"));
            }
            payment.clone()
        };
        if mode == Mode::ChargeThenTimeOut {
            return Err(Status::deadline_exceeded("the answer was lost (scripted)"));
        }
        Ok(Response::new(payment))
    }
    async fn refund(&self, request: Request<RefundRequest>) -> Result<Response<Payment>, Status> {
        let id = request.into_inner().payment_id;
        let mut charges = self.charges.lock().unwrap();
        let payment = charges
            .values_mut()
            .find(|p| p.payment_id == id)
            .ok_or_else(|| Status::not_found("no such payment"))?;
        payment.set_status(PaymentStatus::Refunded);
        Ok(Response::new(payment.clone()))
    }
    async fn get_payment(
        &self,
        request: Request<GetPaymentRequest>,
    ) -> Result<Response<Payment>, Status> {
        let id = request.into_inner().payment_id;
        self.charges
            .lock()
            .unwrap()
            .values()
            .find(|p| p.payment_id == id)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found("no such payment"))
    }
}

fn payment_id_for(request: &ChargeRequest) -> String {
    request.idempotency_key.replace(':', "_")
}

/// An in-process server as a mesh channel.
fn channel<S>(server: S) -> Channel
where
    S: Service<
            tonic::codegen::http::Request<Body>,
            Response = tonic::codegen::http::Response<Body>,
            Error = Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(server.map_err(|never: Infallible| match never {}))
}

/// A channel to a loopback port nobody listens on: connections are refused.
fn refused() -> Channel {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    mesh::client::direct(
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect_lazy(),
    )
}

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    inventory: Arc<FakeInventory>,
    payments: Arc<FakePayments>,
}

impl World {
    async fn new(stock: &[(&str, i64, i64)], mode: Mode) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pool = mesh::storage::open("orders", None, dir.path(), &crate::MIGRATOR)
            .await
            .unwrap();
        Self {
            _dir: dir,
            store: Store::new(pool).expect("start the orders writer"),
            inventory: FakeInventory::with_stock(stock),
            payments: FakePayments::new(mode),
        }
    }

    /// A saga (an orders instance) over the world's store and upstreams.
    fn saga(&self) -> Arc<Saga> {
        self.saga_with_payments(channel(PaymentsServer::from_arc(Arc::clone(
            &self.payments,
        ))))
    }

    fn saga_with_payments(&self, payments: Channel) -> Arc<Saga> {
        Saga::new(
            self.store.clone(),
            Upstreams {
                users: channel(UsersServer::new(FakeUsers::default())),
                inventory: channel(InventoryServer::from_arc(Arc::clone(&self.inventory))),
                payments,
            },
            SagaOptions {
                recovery_interval: RECOVERY_INTERVAL,
                ..SagaOptions::with_per_call(PER_CALL)
            },
        )
    }
}

/// Each upstream call's timeout in these tests.
const PER_CALL: Duration = Duration::from_secs(1);
/// The recovery interval, which is also the first backoff of an order a run
/// could not finish: none here, so a test's next round finds it due.
const RECOVERY_INTERVAL: Duration = Duration::ZERO;

fn budget() -> CallBudget {
    CallBudget::detached(PER_CALL)
}

fn place(request_id: &str, lines: &[(&str, i64)]) -> PlaceOrder {
    PlaceOrder {
        request_id: request_id.into(),
        user_id: "u_1".into(),
        items: lines
            .iter()
            .map(|(sku, quantity)| OrderItem {
                sku: (*sku).into(),
                quantity: *quantity,
            })
            .collect(),
        currency: String::new(),
    }
}

/// The id of reservation `attempt` of the order placed by `request_id`.
async fn reservation_of(world: &World, request_id: &str, attempt: i64) -> String {
    order_reservation_id(&stored(world, request_id).await.order_id, attempt)
}

async fn stored(world: &World, request_id: &str) -> Order {
    world
        .store
        .find_by_request(request_id)
        .await
        .unwrap()
        .expect("the order is recorded")
}

// ---- the state machine ---------------------------------------------------

#[tokio::test]
async fn a_placed_order_is_priced_charged_committed_and_confirmed() {
    let world = World::new(&[("A", 10, 300), ("B", 5, 50)], Mode::Normal).await;
    let order = world
        .saga()
        .place(place("r1", &[("A", 2), ("B", 1)]), budget())
        .await
        .unwrap();
    assert_eq!(order.status, OrderStatus::Confirmed);
    assert_eq!(order.total_cents, 650);
    assert_eq!(
        order
            .lines
            .iter()
            .map(|l| l.unit_price_cents)
            .collect::<Vec<_>>(),
        [300, 50]
    );
    let payments = world.payments.payments();
    assert_eq!(payments.len(), 1);
    assert_eq!(order.payment_id, payments[0].payment_id);
    assert_eq!(
        payments[0].idempotency_key,
        order_charge_key(&order.order_id)
    );
    assert_eq!(
        world
            .inventory
            .state(&reservation_of(&world, "r1", 0).await),
        Some(ReservationState::Committed)
    );
    assert_eq!(world.inventory.available("A"), 8);
}

#[tokio::test]
async fn an_unknown_user_records_nothing() {
    let world = World::new(&[("A", 10, 300)], Mode::Normal).await;
    let mut command = place("r1", &[("A", 1)]);
    command.user_id = "u_404".into();
    let error = world.saga().place(command, budget()).await.unwrap_err();
    assert!(
        matches!(error, OrderError::UserNotFound { .. }),
        "{error:?}"
    );
    assert_eq!(world.store.find_by_request("r1").await.unwrap(), None);
    assert_eq!(world.inventory.reserve_calls.load(Ordering::SeqCst), 0);
}

/// A customer's next order does not ask users again (ADR 0025); a user
/// users did not find is asked about at every order, so one created
/// meanwhile can order at once; with a zero time to live every order asks.
#[tokio::test]
async fn a_customer_users_confirmed_is_not_asked_about_again() {
    let world = World::new(&[("A", 10, 300)], Mode::Normal).await;
    let saga_asking = |known_user_ttl: Duration| {
        let users = Arc::new(FakeUsers::default());
        let saga = Saga::new(
            world.store.clone(),
            Upstreams {
                users: channel(UsersServer::from_arc(Arc::clone(&users))),
                inventory: channel(InventoryServer::from_arc(Arc::clone(&world.inventory))),
                payments: channel(PaymentsServer::from_arc(Arc::clone(&world.payments))),
            },
            SagaOptions {
                known_user_ttl,
                ..SagaOptions::with_per_call(PER_CALL)
            },
        );
        (saga, users)
    };
    let calls = |users: &FakeUsers| users.get_user_calls.load(Ordering::SeqCst);

    let (saga, users) = saga_asking(Duration::from_secs(60));
    for request in ["r1", "r2", "r3"] {
        let order = saga.place(place(request, &[("A", 1)]), budget()).await;
        assert_eq!(order.unwrap().status, OrderStatus::Confirmed);
    }
    assert_eq!(calls(&users), 1, "asked once for three orders");
    for request in ["n1", "n2"] {
        let mut command = place(request, &[("A", 1)]);
        command.user_id = "u_404".into();
        let error = saga.place(command, budget()).await.unwrap_err();
        assert!(
            matches!(error, OrderError::UserNotFound { .. }),
            "{error:?}"
        );
    }
    assert_eq!(calls(&users), 3, "an unknown user is asked about each time");

    let (saga, users) = saga_asking(Duration::ZERO);
    for request in ["z1", "z2"] {
        saga.place(place(request, &[("A", 1)]), budget())
            .await
            .unwrap();
    }
    assert_eq!(calls(&users), 2, "a zero time to live asks every time");
}

#[tokio::test]
async fn insufficient_stock_rejects_without_charging() {
    let world = World::new(&[("A", 1, 300)], Mode::Normal).await;
    let error = world
        .saga()
        .place(place("r1", &[("A", 2)]), budget())
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "order rejected: insufficient stock: A (asked 2)"
    );
    let order = stored(&world, "r1").await;
    assert_eq!(order.status, OrderStatus::Rejected);
    assert_eq!(order.rejection_reason, "insufficient stock: A (asked 2)");
    assert_eq!(world.payments.charge_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_decline_whose_release_fails_stays_pending_until_a_replay_releases_and_rejects() {
    let world = World::new(&[("TV", 2, 150_000)], Mode::Normal).await;
    world.inventory.fail_release.store(true, Ordering::SeqCst);
    let error = world
        .saga()
        .place(place("r1", &[("TV", 1)]), budget())
        .await
        .unwrap_err();
    assert_eq!(Status::from(error).code(), Code::Unavailable);
    let order = stored(&world, "r1").await;
    assert_eq!(
        (order.status, order.step),
        (OrderStatus::Pending, Step::Undo),
        "not rejected while stock is held, but the decision is recorded"
    );
    assert_eq!(
        order.rejection_reason,
        "payment declined: amount 150000 exceeds the limit of 100000"
    );
    assert_eq!(
        world
            .inventory
            .state(&reservation_of(&world, "r1", 0).await),
        Some(ReservationState::Reserved)
    );

    // Nobody repeats the request: the recovery loop finishes the undo.
    world.inventory.fail_release.store(false, Ordering::SeqCst);
    let round = world.saga().recover_once().await.unwrap();
    assert_eq!(
        round,
        recovery::Round {
            found: 1,
            finished: 1
        }
    );
    let order = stored(&world, "r1").await;
    assert_eq!(order.status, OrderStatus::Rejected);
    assert_eq!(
        order.rejection_reason,
        "payment declined: amount 150000 exceeds the limit of 100000"
    );
    assert_eq!(
        world
            .inventory
            .state(&reservation_of(&world, "r1", 0).await),
        Some(ReservationState::Released)
    );
    assert_eq!(world.inventory.available("TV"), 2);
    assert_eq!(
        world.payments.payments().len(),
        1,
        "the decline is one record"
    );
}

#[tokio::test]
async fn a_lost_charge_answer_keeps_the_stock_and_recovery_charges_once() {
    let world = World::new(&[("A", 5, 100)], Mode::ChargeThenTimeOut).await;
    let error = world
        .saga()
        .place(place("r1", &[("A", 1)]), budget())
        .await
        .unwrap_err();
    assert_eq!(Status::from(error).code(), Code::DeadlineExceeded);
    let order = stored(&world, "r1").await;
    assert_eq!(
        (order.status, order.step),
        (OrderStatus::Pending, Step::Charge),
        "a charge may exist"
    );
    assert_eq!(
        world
            .inventory
            .state(&reservation_of(&world, "r1", 0).await),
        Some(ReservationState::Reserved),
        "stock is not released while money may have been taken"
    );
    let charged = world.payments.payments();
    assert_eq!(charged.len(), 1, "the charge did happen");

    world.payments.set_mode(Mode::Normal);
    world.saga().recover_once().await.unwrap();
    let order = stored(&world, "r1").await;
    assert_eq!(order.status, OrderStatus::Confirmed);
    assert_eq!(order.payment_id, charged[0].payment_id);
    assert_eq!(world.payments.payments().len(), 1, "charged once");
    // The run re-sent the same Charge itself before letting go.
    let calls = world.payments.charge_calls.load(Ordering::SeqCst);
    assert!(calls > 2, "{calls} Charge calls");
    assert_eq!(world.inventory.available("A"), 4);
}

#[tokio::test]
async fn a_refused_connection_keeps_the_order_at_charge_until_payments_answers() {
    let world = World::new(&[("A", 5, 100)], Mode::Normal).await;
    let error = world
        .saga_with_payments(refused())
        .place(place("r1", &[("A", 2)]), budget())
        .await
        .unwrap_err();
    assert_eq!(Status::from(error).code(), Code::Unavailable);
    let order = stored(&world, "r1").await;
    assert_eq!(
        (order.status, order.step),
        (OrderStatus::Pending, Step::Charge)
    );
    assert_eq!(
        world
            .inventory
            .state(&reservation_of(&world, "r1", 0).await),
        Some(ReservationState::Reserved)
    );

    // Another instance with payments reachable finishes it on its own.
    world.saga().recover_once().await.unwrap();
    let order = stored(&world, "r1").await;
    assert_eq!(order.status, OrderStatus::Confirmed);
    assert_eq!(order.reservation_attempt, 0);
    assert_eq!(world.inventory.available("A"), 3);
    assert_eq!(world.payments.payments().len(), 1);
}

#[tokio::test]
async fn a_charge_not_run_by_payments_stays_at_charge() {
    let world = World::new(&[("A", 5, 100)], Mode::Unimplemented).await;
    let error = world
        .saga()
        .place(place("r1", &[("A", 1)]), budget())
        .await
        .unwrap_err();
    assert_eq!(Status::from(error).code(), Code::Unavailable);
    let order = stored(&world, "r1").await;
    assert_eq!(
        (order.status, order.step),
        (OrderStatus::Pending, Step::Charge)
    );
    world.payments.set_mode(Mode::Normal);
    world.saga().recover_once().await.unwrap();
    assert_eq!(stored(&world, "r1").await.status, OrderStatus::Confirmed);
}

#[tokio::test]
async fn a_refused_charge_releases_and_rejects() {
    let world = World::new(&[("A", 5, 100)], Mode::Refuse).await;
    let error = world
        .saga()
        .place(place("r1", &[("A", 1)]), budget())
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "order rejected: payment failed: currency: not accepted"
    );
    assert_eq!(world.inventory.available("A"), 5);
    let order = stored(&world, "r1").await;
    assert_eq!(
        (order.status, order.step),
        (OrderStatus::Rejected, Step::Done)
    );
    assert_eq!(
        world
            .inventory
            .state(&reservation_of(&world, "r1", 0).await),
        Some(ReservationState::Released)
    );
}

#[tokio::test]
async fn a_failed_commit_keeps_the_payment_and_recovery_confirms_without_charging_again() {
    let world = World::new(&[("A", 5, 100)], Mode::Normal).await;
    world.inventory.fail_commit.store(true, Ordering::SeqCst);
    let error = world
        .saga()
        .place(place("r1", &[("A", 1)]), budget())
        .await
        .unwrap_err();
    assert_eq!(Status::from(error).code(), Code::Unavailable);
    let pending = stored(&world, "r1").await;
    assert_eq!(
        (pending.status, pending.step),
        (OrderStatus::Pending, Step::Commit)
    );
    assert!(pending.payment_id.starts_with("pay_"));

    world.inventory.fail_commit.store(false, Ordering::SeqCst);
    world.saga().recover_once().await.unwrap();
    let order = stored(&world, "r1").await;
    assert_eq!(order.status, OrderStatus::Confirmed);
    assert_eq!(order.payment_id, pending.payment_id);
    assert_eq!(world.payments.payments().len(), 1);
    assert_eq!(world.inventory.available("A"), 4);
}

#[tokio::test]
async fn a_repeat_during_a_run_waits_for_its_outcome_or_answers_busy() {
    let world = World::new(&[("A", 5, 100)], Mode::Slow(600)).await;
    let first = {
        let saga = world.saga();
        tokio::spawn(async move { saga.place(place("r1", &[("A", 1)]), budget()).await })
    };
    // Let the first run record the order and take its lease.
    tokio::time::sleep(Duration::from_millis(150)).await;

    // A repeat that may wait 100 ms gives up…
    let mut metadata = MetadataMap::new();
    metadata.insert("grpc-timeout", "100m".parse().unwrap());
    let impatient = CallBudget::from_incoming(&metadata, PER_CALL);
    let error = world
        .saga()
        .place(place("r1", &[("A", 1)]), impatient)
        .await
        .unwrap_err();
    assert!(matches!(error, OrderError::Busy { .. }), "{error:?}");

    // …one that may wait longer gets the first run's order.
    let second = world
        .saga()
        .place(place("r1", &[("A", 1)]), budget())
        .await
        .unwrap();
    let first = first.await.unwrap().unwrap();
    assert_eq!(second.order_id, first.order_id);
    assert_eq!(second.status, OrderStatus::Confirmed);
    assert_eq!(world.payments.charge_calls.load(Ordering::SeqCst), 1);
    assert_eq!(world.inventory.available("A"), 4);
}

/// A repeat whose deadline comes before the run holding the order lets go
/// hears `Busy` (UNAVAILABLE, saying another request works on the order)
/// before its deadline, not only DEADLINE_EXCEEDED at it: after an orders
/// instance dies mid-order, a retry elsewhere waits for the dead run's lease
/// and used to be cut by its own deadline first.
#[tokio::test]
async fn a_repeat_hears_busy_before_its_deadline_while_another_run_holds_the_order() {
    let world = World::new(&[("A", 5, 100)], Mode::Slow(2_000)).await;
    let first = {
        let saga = world.saga();
        tokio::spawn(async move { saga.place(place("r1", &[("A", 1)]), budget()).await })
    };
    // Let the first run record the order and take its lease.
    tokio::time::sleep(Duration::from_millis(150)).await;

    let mut metadata = MetadataMap::new();
    metadata.insert("grpc-timeout", "1S".parse().unwrap());
    let started = std::time::Instant::now();
    let error = world
        .saga()
        .place(
            place("r1", &[("A", 1)]),
            CallBudget::from_incoming(&metadata, PER_CALL),
        )
        .await
        .unwrap_err();
    let waited = started.elapsed();
    first.abort();
    assert!(matches!(error, OrderError::Busy { .. }), "{error:?}");
    assert!(
        waited < Duration::from_secs(1),
        "answered after {waited:?}, when the caller's deadline had passed"
    );
    assert!(
        waited >= Duration::from_millis(500),
        "it gave the other run time first: answered after {waited:?}"
    );
}

#[test]
fn a_wait_for_another_runs_lease_ends_before_the_callers_deadline() {
    assert_eq!(
        super::answer_margin(Duration::from_millis(100)),
        Duration::from_millis(20)
    );
    assert_eq!(
        super::answer_margin(Duration::from_secs(10)),
        Duration::from_millis(250)
    );
    assert_eq!(super::answer_margin(Duration::ZERO), Duration::ZERO);
}

#[tokio::test]
async fn a_reservation_that_expired_behind_a_charge_is_refunded_and_rejected() {
    let world = World::new(&[("A", 5, 100)], Mode::ChargeThenTimeOut).await;
    world
        .saga()
        .place(place("r1", &[("A", 1)]), budget())
        .await
        .unwrap_err();
    // The charge happened; then the reservation's TTL ran out.
    world
        .inventory
        .release_now(&reservation_of(&world, "r1", 0).await);
    world.payments.set_mode(Mode::Normal);

    world.saga().recover_once().await.unwrap();
    let order = stored(&world, "r1").await;
    assert_eq!(order.status, OrderStatus::Rejected);
    assert!(
        order.rejection_reason.contains("the payment is refunded"),
        "{}",
        order.rejection_reason
    );
    let payments = world.payments.payments();
    assert_eq!(payments.len(), 1);
    assert_eq!(
        payments[0].status(),
        PaymentStatus::Refunded,
        "no money kept"
    );
    assert_eq!(world.inventory.available("A"), 5);
}

#[tokio::test]
async fn an_order_abandoned_by_a_crashed_run_is_finished_once_its_lease_expires() {
    let world = World::new(&[("A", 5, 100)], Mode::Normal).await;
    // A run recorded the order and died before any remote call.
    let items = [OrderItem {
        sku: "A".into(),
        quantity: 1,
    }];
    let now = now_unix_ms();
    world
        .store
        .insert_pending(
            &crate::store::NewOrder {
                order_id: "ord_crashed",
                request_id: "r1",
                user_id: "u_1",
                currency: "",
                items: &items,
                now_unix_ms: now,
            },
            "dead-run",
            now + 300,
        )
        .await
        .unwrap();
    // Two instances recover concurrently; the lease lets one at a time in.
    let (a, b) = (world.saga(), world.saga());
    assert_eq!(a.recover_once().await.unwrap().found, 0, "lease still live");
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (first, second) = tokio::join!(a.recover_once(), b.recover_once());
    assert_eq!(first.unwrap().finished + second.unwrap().finished, 1);
    let order = stored(&world, "r1").await;
    assert_eq!(order.status, OrderStatus::Confirmed);
    assert_eq!(world.payments.charge_calls.load(Ordering::SeqCst), 1);
    assert_eq!(world.inventory.available("A"), 4);
}

#[tokio::test]
async fn a_fenced_out_run_cannot_write_and_its_late_calls_change_nothing() {
    let world = World::new(&[("A", 5, 100)], Mode::Normal).await;
    let saga = world.saga();
    let order = saga
        .place(place("r1", &[("A", 1)]), budget())
        .await
        .unwrap();
    // A stale run of the same order (an old lease version) wakes up and
    // re-sends its Charge and Commit: same keys, same outcome, no write.
    let stale = crate::store::Fence {
        order_id: order.order_id.clone(),
        owner: "stale".into(),
        version: 1,
        lease_until_unix_ms: 0,
    };
    let mut replayed = order.clone();
    replayed.status = OrderStatus::Pending;
    replayed.step = Step::Charge;
    let error = saga
        .charge(&mut replayed, &stale, &budget())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            OrderError::Store(crate::store::StoreError::LeaseLost { .. })
        ),
        "{error:?}"
    );
    assert_eq!(
        world.payments.charge_calls.load(Ordering::SeqCst),
        2,
        "the late Charge was sent"
    );
    assert_eq!(
        world.payments.payments().len(),
        1,
        "and charged nothing more"
    );
    assert_eq!(stored(&world, "r1").await.status, OrderStatus::Confirmed);
    // Nor can it drive the order at all.
    assert!(
        saga.drive(order, &stale, &budget(), false).await.is_ok(),
        "a final order is only answered"
    );
}

#[tokio::test]
async fn cancel_refunds_once_and_is_idempotent() {
    let world = World::new(&[("A", 5, 100)], Mode::Normal).await;
    let saga = world.saga();
    let order = saga
        .place(place("r1", &[("A", 1)]), budget())
        .await
        .unwrap();
    for _ in 0..2 {
        let cancelled = saga.cancel(&order.order_id, budget()).await.unwrap();
        assert_eq!(cancelled.status, OrderStatus::Cancelled);
    }
    assert_eq!(
        world.payments.payments()[0].status(),
        PaymentStatus::Refunded
    );
    assert_eq!(
        world.inventory.available("A"),
        5,
        "the unit is back in stock"
    );
    assert_eq!(
        world
            .inventory
            .state(&reservation_of(&world, "r1", 0).await),
        Some(ReservationState::Restocked)
    );
    // A replay of the placed request answers the cancelled order as it is.
    let replay = saga
        .place(place("r1", &[("A", 1)]), budget())
        .await
        .unwrap();
    assert_eq!(replay.status, OrderStatus::Cancelled);
}

#[tokio::test]
async fn a_cancel_whose_refund_fails_stays_cancelling_and_recovery_finishes_it() {
    let world = World::new(&[("A", 5, 100)], Mode::Normal).await;
    let order = world
        .saga()
        .place(place("r1", &[("A", 1)]), budget())
        .await
        .unwrap();
    let error = world
        .saga_with_payments(refused())
        .cancel(&order.order_id, budget())
        .await
        .unwrap_err();
    assert_eq!(Status::from(error).code(), Code::Unavailable);
    let cancelling = world.store.get(&order.order_id).await.unwrap();
    assert_eq!(
        (cancelling.status, cancelling.step),
        (OrderStatus::Cancelling, Step::Cancel)
    );
    world.saga().recover_once().await.unwrap();
    let cancelled = world.store.get(&order.order_id).await.unwrap();
    assert_eq!(cancelled.status, OrderStatus::Cancelled);
    assert_eq!(
        world.payments.payments()[0].status(),
        PaymentStatus::Refunded
    );
    assert_eq!(world.inventory.available("A"), 5);
}

// ---- hardening ------------------------------------------------------------

/// Hardening finding 3 (orders' side): a Commit that answered
/// FAILED_PRECONDITION ("already committed") while the reservation ended
/// COMMITTED made the saga refund the customer and then fail to release:
/// units sold, money returned, order stuck in UNDO. The saga now reads the
/// reservation before refunding: the sale stands, the order is CONFIRMED.
#[tokio::test]
async fn a_commit_refused_but_done_confirms_the_order_without_a_refund() {
    let world = World::new(&[("A", 5, 100)], Mode::Normal).await;
    world
        .inventory
        .commit_then_refuse
        .store(true, Ordering::SeqCst);
    let order = world
        .saga()
        .place(place("r1", &[("A", 1)]), budget())
        .await
        .unwrap();
    assert_eq!(order.status, OrderStatus::Confirmed, "{order:?}");
    assert_eq!(order.rejection_reason, "", "the sale stands");
    assert_eq!(
        world.payments.payments()[0].status(),
        PaymentStatus::Captured,
        "no refund"
    );
    assert_eq!(
        world
            .inventory
            .state(&reservation_of(&world, "r1", 0).await),
        Some(ReservationState::Committed)
    );
}

/// The state that bug left behind (a committed reservation under a refunded
/// payment, the order in UNDO) is settled too: the units go back to stock
/// and the order is REJECTED.
#[tokio::test]
async fn a_committed_sale_whose_payment_was_refunded_is_restocked_and_rejected() {
    let world = World::new(&[("A", 5, 100)], Mode::Normal).await;
    world
        .inventory
        .commit_then_refuse
        .store(true, Ordering::SeqCst);
    world
        .inventory
        .fail_get_reservation
        .store(true, Ordering::SeqCst);
    world
        .saga()
        .place(place("r1", &[("A", 1)]), budget())
        .await
        .unwrap_err();
    let undoing = stored(&world, "r1").await;
    assert_eq!(undoing.step, Step::Undo);
    // The refund the old code sent.
    world
        .saga()
        .refund(&undoing.payment_id, &budget())
        .await
        .unwrap();
    world
        .inventory
        .fail_get_reservation
        .store(false, Ordering::SeqCst);

    world.saga().recover_once().await.unwrap();
    let order = stored(&world, "r1").await;
    assert_eq!(order.status, OrderStatus::Rejected, "{order:?}");
    assert_eq!(
        world
            .inventory
            .state(&reservation_of(&world, "r1", 0).await),
        Some(ReservationState::Restocked)
    );
    assert_eq!(world.inventory.available("A"), 5);
    assert_eq!(
        world.payments.payments()[0].status(),
        PaymentStatus::Refunded
    );
}

/// Hardening finding 2: an order whose upstream state contradicts the saga
/// is parked once (recovery skips it, a repeat answers without running it),
/// counted by reason, and an operator can retry it after fixing the state
/// or resolve it by hand.
#[tokio::test]
async fn an_order_that_needs_a_person_is_parked_until_an_operator_acts() {
    let world = World::new(&[("A", 5, 100)], Mode::Normal).await;
    world
        .inventory
        .commit_then_refuse
        .store(true, Ordering::SeqCst);
    world.inventory.fail_commit.store(true, Ordering::SeqCst);
    world
        .saga()
        .place(place("r1", &[("A", 1)]), budget())
        .await
        .unwrap_err();
    // Behind the saga's back the reservation is restocked: Commit and
    // Release are refused from now on.
    let id = reservation_of(&world, "r1", 0).await;
    world
        .inventory
        .reservations
        .lock()
        .unwrap()
        .get_mut(&id)
        .unwrap()
        .set_state(ReservationState::Restocked);
    world.inventory.fail_commit.store(false, Ordering::SeqCst);
    world
        .inventory
        .commit_then_refuse
        .store(false, Ordering::SeqCst);

    let saga = world.saga();
    let round = saga.recover_once().await.unwrap();
    assert_eq!((round.found, round.finished), (1, 0));
    let parked = stored(&world, "r1").await;
    assert_eq!(parked.status, OrderStatus::Pending);
    let reason = parked.parked.as_ref().expect("parked").reason;
    assert_eq!(reason, crate::domain::ParkReason::ReservationState);
    assert_eq!(
        world.store.parked_counts().await.unwrap(),
        vec![("reservation_state".to_owned(), 1)]
    );
    // Skipped by recovery; a repeat of the request answers without running it.
    assert_eq!(saga.recover_once().await.unwrap().found, 0);
    let error = saga
        .place(place("r1", &[("A", 1)]), budget())
        .await
        .unwrap_err();
    assert!(matches!(error, OrderError::Parked { .. }), "{error:?}");
    assert_eq!(Status::from(error).code(), Code::Internal);
    let refunds_before = world.payments.payments()[0].status();
    assert_eq!(refunds_before, PaymentStatus::Refunded, "UNDO refunded it");

    // Retried without a fix: parked again, with the same reason.
    let error = saga
        .retry_parked(&parked.order_id, budget())
        .await
        .unwrap_err();
    assert!(
        matches!(error, OrderError::Inconsistent { .. }),
        "{error:?}"
    );
    assert!(stored(&world, "r1").await.parked.is_some());

    // Resolved by hand: an impossible outcome is refused, a possible one closes it.
    let error = saga
        .resolve_parked(&parked.order_id, OrderStatus::Cancelled, "x")
        .await
        .unwrap_err();
    assert!(
        matches!(error, OrderError::CannotResolve { .. }),
        "{error:?}"
    );
    let resolved = saga
        .resolve_parked(
            &parked.order_id,
            OrderStatus::Rejected,
            "stock recounted by hand; refund confirmed",
        )
        .await
        .unwrap();
    assert_eq!(resolved.status, OrderStatus::Rejected);
    assert_eq!(
        resolved.rejection_reason,
        "resolved by an operator: stock recounted by hand; refund confirmed"
    );
    assert!(resolved.parked.is_none());
    assert!(world.store.parked_counts().await.unwrap().is_empty());
    let error = saga
        .retry_parked(&parked.order_id, budget())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            OrderError::Store(crate::store::StoreError::NotParked { .. })
        ),
        "{error:?}"
    );
}

/// Hardening finding 2: a run that could not finish an order defers it,
/// longer after each failure (at most a lease); recovery leaves it alone
/// until then, a repeat of the request does not wait for it.
#[tokio::test]
async fn an_order_a_run_cannot_finish_waits_longer_each_time() {
    let world = World::new(&[("A", 5, 100)], Mode::Normal).await;
    let saga = Saga::new(
        world.store.clone(),
        Upstreams {
            users: channel(UsersServer::new(FakeUsers::default())),
            inventory: channel(InventoryServer::from_arc(Arc::clone(&world.inventory))),
            payments: refused(),
        },
        SagaOptions {
            recovery_interval: Duration::from_secs(2),
            ..SagaOptions::with_per_call(PER_CALL)
        },
    );
    assert_eq!(saga.retry_backoff()(1), 2_000);
    assert_eq!(saga.retry_backoff()(2), 4_000);
    assert_eq!(saga.retry_backoff()(3), 5_000, "at most a lease");
    assert_eq!(saga.retry_backoff()(60), 5_000);

    saga.place(place("r1", &[("A", 1)]), budget())
        .await
        .unwrap_err();
    let deferred_at = now_unix_ms();
    let order = stored(&world, "r1").await;
    assert_eq!((order.step, order.failed_runs), (Step::Charge, 1));
    // Not due yet: recovery leaves it alone; due once its backoff has passed.
    assert_eq!(saga.recover_once().await.unwrap().found, 0);
    assert_eq!(
        world
            .store
            .unfinished(deferred_at + 2_000, 10)
            .await
            .unwrap(),
        vec![order.order_id.clone()]
    );
    // A repeat of the request runs it at once (payments answers now).
    let confirmed = world
        .saga()
        .place(place("r1", &[("A", 1)]), budget())
        .await
        .unwrap();
    assert_eq!(confirmed.status, OrderStatus::Confirmed);
}
