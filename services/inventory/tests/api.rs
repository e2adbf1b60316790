//! The inventory binary's behaviours through a tonic client: the reservation
//! life cycle (idempotent Reserve/Release/Commit, refused transitions, prices
//! captured), and no overselling when two instances sharing one SQLite file
//! race for the last units.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use mesh::proto::inventory::v1::{
    inventory_client::InventoryClient, AddStockRequest, CommitRequest, GetItemRequest, Item,
    LineItem, ReleaseRequest, Reservation, ReservationState, ReserveRequest, ReservedLine,
    RestockRequest,
};
use testkit::{ServiceOptions, ServiceProcess};
use tonic::{transport::Channel, Code};

async fn client(process: &ServiceProcess) -> InventoryClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", process.addr()))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .expect("connect to inventory");
    InventoryClient::new(channel)
}

async fn add(inventory: &mut InventoryClient<Channel>, sku: &str, quantity: i64, price: i64) {
    inventory
        .add_stock(AddStockRequest {
            sku: sku.into(),
            quantity,
            unit_price_cents: price,
            currency: "EUR".into(),
        })
        .await
        .unwrap();
}

async fn item(inventory: &mut InventoryClient<Channel>, sku: &str) -> Item {
    inventory
        .get_item(GetItemRequest { sku: sku.into() })
        .await
        .unwrap()
        .into_inner()
}

fn reserve_request(id: &str, lines: &[(&str, i64)]) -> ReserveRequest {
    ReserveRequest {
        reservation_id: id.into(),
        items: lines
            .iter()
            .map(|(sku, quantity)| LineItem {
                sku: (*sku).into(),
                quantity: *quantity,
            })
            .collect(),
        ..ReserveRequest::default()
    }
}

fn levels(item: &Item) -> (i64, i64) {
    (item.available, item.reserved)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_release_commit_life_cycle() {
    let process = ServiceProcess::start("inventory", ServiceOptions::default());
    let mut inventory = client(&process).await;
    add(&mut inventory, "A", 10, 250).await;
    add(&mut inventory, "B", 5, 1000).await;

    // Reserve: every line, prices captured, total computed.
    let r1 = inventory
        .reserve(reserve_request("r1", &[("B", 2), ("A", 3)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r1,
        Reservation {
            reservation_id: "r1".into(),
            state: ReservationState::Reserved.into(),
            items: vec![
                ReservedLine {
                    sku: "B".into(),
                    quantity: 2,
                    unit_price_cents: 1000
                },
                ReservedLine {
                    sku: "A".into(),
                    quantity: 3,
                    unit_price_cents: 250
                },
            ],
            total_cents: 2750,
            currency: "EUR".into(),
            expires_at_unix_ms: r1.expires_at_unix_ms,
        }
    );
    assert_eq!(levels(&item(&mut inventory, "A").await), (7, 3));
    assert_eq!(levels(&item(&mut inventory, "B").await), (3, 2));

    // A repeat (same items, other order) answers the same reservation, reserves nothing.
    let repeat = inventory
        .reserve(reserve_request("r1", &[("A", 3), ("B", 2)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(repeat, r1);
    assert_eq!(levels(&item(&mut inventory, "A").await), (7, 3));

    // The same id with other items is refused.
    let status = inventory
        .reserve(reserve_request("r1", &[("A", 4)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "reservation_id r1 was already used with different items"
    );

    // A later price change does not touch the reservation.
    add(&mut inventory, "A", 1, 999).await;
    let committed = inventory
        .commit(CommitRequest {
            reservation_id: "r1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(committed.state, i32::from(ReservationState::Committed));
    assert_eq!(committed.total_cents, 2750);
    assert_eq!(levels(&item(&mut inventory, "A").await), (8, 0));
    assert_eq!(levels(&item(&mut inventory, "B").await), (3, 0));
    // Commit again: unchanged.
    let again = inventory
        .commit(CommitRequest {
            reservation_id: "r1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, committed);
    assert_eq!(levels(&item(&mut inventory, "A").await), (8, 0));
    // Release after commit: refused.
    let status = inventory
        .release(ReleaseRequest {
            reservation_id: "r1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "reservation r1 is already committed");

    // Release: stock back; again: unchanged; commit after release: refused.
    inventory
        .reserve(reserve_request("r2", &[("B", 3)]))
        .await
        .unwrap();
    assert_eq!(levels(&item(&mut inventory, "B").await), (0, 3));
    let released = inventory
        .release(ReleaseRequest {
            reservation_id: "r2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.state, i32::from(ReservationState::Released));
    assert_eq!(levels(&item(&mut inventory, "B").await), (3, 0));
    let again = inventory
        .release(ReleaseRequest {
            reservation_id: "r2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, released);
    assert_eq!(levels(&item(&mut inventory, "B").await), (3, 0));
    let status = inventory
        .commit(CommitRequest {
            reservation_id: "r2".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "reservation r2 is already released");
    // Reserve repeated after release: answers RELEASED, takes nothing.
    let repeat = inventory
        .reserve(reserve_request("r2", &[("B", 3)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(repeat, released);
    assert_eq!(levels(&item(&mut inventory, "B").await), (3, 0));

    // Unknown reservations.
    for status in [
        inventory
            .release(ReleaseRequest {
                reservation_id: "nope".into(),
            })
            .await
            .unwrap_err(),
        inventory
            .commit(CommitRequest {
                reservation_id: "nope".into(),
            })
            .await
            .unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "reservation nope not found");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_reserve_changes_nothing() {
    let process = ServiceProcess::start("inventory", ServiceOptions::default());
    let mut inventory = client(&process).await;
    add(&mut inventory, "OK-1", 10, 1).await;
    add(&mut inventory, "WIDGET-1", 2, 1).await;
    let status = inventory
        .reserve(reserve_request(
            "r1",
            &[("OK-1", 4), ("WIDGET-1", 5), ("GADGET-9", 1)],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        "insufficient stock: WIDGET-1 (asked 5, available 2); GADGET-9 (unknown sku)"
    );
    assert_eq!(levels(&item(&mut inventory, "OK-1").await), (10, 0));
    assert_eq!(levels(&item(&mut inventory, "WIDGET-1").await), (2, 0));
    let status = inventory
        .release(ReleaseRequest {
            reservation_id: "r1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::NotFound,
        "the failed reserve left no reservation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_racing_for_the_last_units_never_oversell() {
    let data_dir = tempfile::tempdir().unwrap();
    let options = ServiceOptions {
        data_dir: Some(data_dir.path().to_owned()),
        ..Default::default()
    };
    let first = ServiceProcess::start("inventory", options.clone());
    let second = ServiceProcess::start("inventory", options);
    let mut clients = [client(&first).await, client(&second).await];
    add(&mut clients[0], "LAST", 10, 500).await;

    // Watch the stock from the other instance while the race runs.
    let racing = Arc::new(AtomicBool::new(true));
    let watcher = {
        let mut inventory = clients[1].clone();
        let racing = racing.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..2000 {
                if !racing.load(Ordering::Relaxed) {
                    break;
                }
                seen.push(levels(&item(&mut inventory, "LAST").await));
            }
            seen
        })
    };

    let attempts: Vec<_> = (0..20)
        .map(|i| {
            let mut inventory = clients[i % 2].clone();
            tokio::spawn(async move {
                inventory
                    .reserve(reserve_request(&format!("race-{i}"), &[("LAST", 1)]))
                    .await
            })
        })
        .collect();
    let (mut won, mut refused) = (0, 0);
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(reservation) => {
                assert_eq!(reservation.into_inner().total_cents, 500);
                won += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert_eq!(
                    status.message(),
                    "insufficient stock: LAST (asked 1, available 0)"
                );
                refused += 1;
            }
        }
    }
    racing.store(false, Ordering::Relaxed);
    let seen = watcher.await.unwrap();

    assert_eq!((won, refused), (10, 10));
    for mut inventory in clients {
        assert_eq!(levels(&item(&mut inventory, "LAST").await), (0, 10));
    }
    assert!(!seen.is_empty());
    for (available, reserved) in seen {
        assert!(available >= 0, "stock went negative: {available}");
        assert_eq!(available + reserved, 10, "units appeared or vanished");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_reservation_gives_its_stock_back_and_cannot_be_committed() {
    let process = ServiceProcess::start(
        "inventory",
        ServiceOptions {
            args: vec![
                "--reservation-max-ttl".into(),
                "300".into(),
                "--reservation-sweep".into(),
                "50".into(),
            ],
            ..ServiceOptions::default()
        },
    );
    let mut inventory = client(&process).await;
    add(&mut inventory, "A", 10, 250).await;
    // Asks for an hour; the server caps it at 300 ms.
    let mut request = reserve_request("short", &[("A", 4)]);
    request.ttl_ms = 3_600_000;
    let reserved = inventory.reserve(request).await.unwrap().into_inner();
    let now = mesh::storage::now_unix_ms();
    assert!(reserved.expires_at_unix_ms <= now + 300, "{reserved:?}");
    assert_eq!(levels(&item(&mut inventory, "A").await), (6, 4));

    // The sweeper releases it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while levels(&item(&mut inventory, "A").await) != (10, 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the expired reservation was not released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = inventory
        .commit(CommitRequest {
            reservation_id: "short".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "reservation short is already released");
    // A repeat of the Reserve answers RELEASED: the id is never reused.
    let again = inventory
        .reserve(reserve_request("short", &[("A", 4)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.state(), ReservationState::Released);
    assert_eq!(levels(&item(&mut inventory, "A").await), (10, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_of_an_expired_reservation_releases_it_and_is_refused() {
    // The sweeper is slow here: Commit itself notices the expiry.
    let process = ServiceProcess::start(
        "inventory",
        ServiceOptions {
            args: vec!["--reservation-sweep".into(), "3600000".into()],
            ..ServiceOptions::default()
        },
    );
    let mut inventory = client(&process).await;
    add(&mut inventory, "A", 10, 250).await;
    let mut request = reserve_request("r", &[("A", 3)]);
    request.ttl_ms = 1;
    inventory.reserve(request).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let status = inventory
        .commit(CommitRequest {
            reservation_id: "r".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        "reservation r expired before it was committed; its stock was released"
    );
    assert_eq!(levels(&item(&mut inventory, "A").await), (10, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restock_returns_sold_units_once() {
    let process = ServiceProcess::start("inventory", ServiceOptions::default());
    let mut inventory = client(&process).await;
    add(&mut inventory, "A", 10, 250).await;
    inventory
        .reserve(reserve_request("sale", &[("A", 3)]))
        .await
        .unwrap();
    let restock = |inventory: &mut InventoryClient<Channel>| {
        let mut inventory = inventory.clone();
        async move {
            inventory
                .restock(RestockRequest {
                    reservation_id: "sale".into(),
                })
                .await
        }
    };
    // Not sold yet: nothing to restock.
    let status = restock(&mut inventory).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    inventory
        .commit(CommitRequest {
            reservation_id: "sale".into(),
        })
        .await
        .unwrap();
    let sold = item(&mut inventory, "A").await;
    assert_eq!((sold.available, sold.reserved, sold.committed), (7, 0, 3));
    for _ in 0..2 {
        let restocked = restock(&mut inventory).await.unwrap().into_inner();
        assert_eq!(restocked.state(), ReservationState::Restocked);
    }
    let back = item(&mut inventory, "A").await;
    assert_eq!((back.available, back.reserved, back.committed), (10, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prices_carry_the_sellers_currency() {
    let process = ServiceProcess::start("inventory", ServiceOptions::default());
    let mut inventory = client(&process).await;
    let added = inventory
        .add_stock(AddStockRequest {
            sku: "CHEESE".into(),
            quantity: 5,
            unit_price_cents: 700,
            currency: "chf".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(added.currency, "CHF");
    add(&mut inventory, "BREAD", 5, 300).await;
    let mut request = reserve_request("mixed", &[("CHEESE", 1), ("BREAD", 1)]);
    let status = inventory.reserve(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "the items are priced in different currencies (CHF, EUR): BREAD (EUR), CHEESE (CHF); order them separately"
    );
    request.items.truncate(1);
    request.currency = "EUR".into();
    let status = inventory.reserve(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    request.currency = "CHF".into();
    let reserved = inventory.reserve(request).await.unwrap().into_inner();
    assert_eq!(
        (reserved.currency.as_str(), reserved.total_cents),
        ("CHF", 700)
    );
    // Nothing held by the refused attempts beyond the one reservation.
    assert_eq!(levels(&item(&mut inventory, "BREAD").await), (5, 0));
    // The currency of a SKU with open reservations cannot change.
    let status = inventory
        .add_stock(AddStockRequest {
            sku: "CHEESE".into(),
            quantity: 1,
            unit_price_cents: 800,
            currency: "EUR".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
}
