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
