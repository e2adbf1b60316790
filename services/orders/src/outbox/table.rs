//! The outbox tables (`migrations/0005_outbox.sql`) as the relay reads and
//! writes them (an event is recorded by `crate::store::events::record`, in
//! its state change's transaction).

use mesh::storage::GroupCommit;
use sqlx::{AnyPool, Row};

use crate::store::{events::lease_in, Store, StoreError};

/// One pending event, as the relay publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The CloudEvents id.
    pub event_id: String,
    /// The order (the event's subject).
    pub order_id: String,
    /// Its place among the order's events.
    pub sequence: i64,
    /// The topic.
    pub topic: String,
    /// The CloudEvents type.
    pub event_type: String,
    /// The protobuf body.
    pub body: Vec<u8>,
    /// W3C trace context of its cause.
    pub traceparent: String,
    /// W3C trace state.
    pub tracestate: String,
    /// When it was recorded.
    pub created_at_unix_ms: i64,
}

impl Pending {
    /// The event to publish.
    pub fn to_event(&self) -> events::Event {
        let optional = |text: &str| Some(text.to_owned()).filter(|text| !text.is_empty());
        events::Event::protobuf(
            self.event_id.clone(),
            super::SOURCE,
            self.event_type.clone(),
            self.order_id.clone(),
            self.created_at_unix_ms,
            self.body.clone(),
        )
        .with_trace(optional(&self.traceparent), optional(&self.tracestate))
    }
}

/// The relay's access to the outbox: reads on the pool, writes as units of
/// the database's group-commit writer, so the relay's bookkeeping shares the
/// saga's durable commits instead of competing with them for the database's
/// one writer.
#[derive(Debug, Clone)]
pub struct Table {
    pool: AnyPool,
    writer: GroupCommit,
}

/// What publishing one leased order's events gave, for [`Table::finish`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The events the broker confirmed, in the order published.
    pub confirmed: Vec<String>,
    /// The event whose publish failed, with why (nothing after it was tried).
    pub failed: Option<(String, String)>,
}

impl Table {
    /// Over the store's database, writing through its writer.
    pub fn over(store: &Store) -> Self {
        Self {
            pool: store.pool().clone(),
            writer: store.writer().clone(),
        }
    }

    /// Up to `limit` orders with pending events, the longest waiting first.
    pub async fn pending_orders(&self, limit: i64) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT order_id FROM outbox WHERE published_at_unix_ms = 0 \
             GROUP BY order_id ORDER BY MIN(created_at_unix_ms) LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Takes `order_id`'s lease for `owner` until `until` unless another
    /// relay holds a live one (its own is renewed); whether it did.
    pub async fn lease(
        &self,
        order_id: &str,
        owner: &str,
        now_unix_ms: i64,
        until_unix_ms: i64,
    ) -> Result<bool, StoreError> {
        let (order_id, owner) = (order_id.to_owned(), owner.to_owned());
        self.writer
            .write(move |connection| {
                Box::pin(async move {
                    Ok(lease_in(connection, &order_id, &owner, now_unix_ms, until_unix_ms).await?)
                })
            })
            .await
    }

    /// Records what publishing `order_id`'s events gave and gives `owner`'s
    /// lease up, in one write unit: exactly the confirmed events are marked
    /// published at `now`, the failed one gets its attempt and error (kept,
    /// bounded, for people), and the lease is released (a no-op when
    /// another relay has it by now).
    pub async fn finish(
        &self,
        order_id: &str,
        owner: &str,
        outcome: Outcome,
        now_unix_ms: i64,
    ) -> Result<(), StoreError> {
        let (order_id, owner) = (order_id.to_owned(), owner.to_owned());
        self.writer
            .write(move |connection| {
                Box::pin(async move {
                    for event_id in &outcome.confirmed {
                        sqlx::query(
                            "UPDATE outbox SET published_at_unix_ms = $1, attempts = attempts + 1, last_error = '' \
                             WHERE event_id = $2 AND order_id = $3",
                        )
                        .bind(now_unix_ms.max(1))
                        .bind(event_id)
                        .bind(&order_id)
                        .execute(&mut *connection)
                        .await?;
                    }
                    if let Some((event_id, error)) = &outcome.failed {
                        let error: String = error.chars().take(300).collect();
                        sqlx::query(
                            "UPDATE outbox SET attempts = attempts + 1, last_error = $1 WHERE event_id = $2 AND order_id = $3",
                        )
                        .bind(error)
                        .bind(event_id)
                        .bind(&order_id)
                        .execute(&mut *connection)
                        .await?;
                    }
                    sqlx::query("DELETE FROM outbox_leases WHERE order_id = $1 AND owner = $2")
                        .bind(&order_id)
                        .bind(&owner)
                        .execute(&mut *connection)
                        .await?;
                    Ok(())
                })
            })
            .await
    }

    /// The order's pending events, in sequence.
    pub async fn pending_of(&self, order_id: &str) -> Result<Vec<Pending>, StoreError> {
        let rows = sqlx::query(
            "SELECT event_id, order_id, sequence, topic, event_type, payload_hex, traceparent, tracestate, created_at_unix_ms \
             FROM outbox WHERE order_id = $1 AND published_at_unix_ms = 0 ORDER BY sequence",
        )
        .bind(order_id)
        .fetch_all(&self.pool)
        .await?;
        let pending: Result<Vec<Pending>, sqlx::Error> = rows
            .iter()
            .map(|row| {
                let payload: String = row.try_get("payload_hex")?;
                Ok(Pending {
                    event_id: row.try_get("event_id")?,
                    order_id: row.try_get("order_id")?,
                    sequence: row.try_get("sequence")?,
                    topic: row.try_get("topic")?,
                    event_type: row.try_get("event_type")?,
                    body: events::text_body::decode(&payload).ok_or_else(|| {
                        sqlx::Error::Decode("outbox payload_hex is not hex".into())
                    })?,
                    traceparent: row.try_get("traceparent")?,
                    tracestate: row.try_get("tracestate")?,
                    created_at_unix_ms: row.try_get("created_at_unix_ms")?,
                })
            })
            .collect();
        Ok(pending?)
    }

    /// How many events are pending, and when the oldest was recorded.
    pub async fn backlog(&self) -> Result<(i64, Option<i64>), sqlx::Error> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS pending, MIN(created_at_unix_ms) AS oldest FROM outbox WHERE published_at_unix_ms = 0",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("pending")?, row.try_get("oldest")?))
    }

    /// Forgets events published before `before` and leases that ended.
    pub async fn prune(&self, before_unix_ms: i64, now_unix_ms: i64) -> Result<u64, StoreError> {
        self.writer
            .write(move |connection| {
                Box::pin(async move {
                    let pruned = sqlx::query(
                        "DELETE FROM outbox WHERE published_at_unix_ms > 0 AND published_at_unix_ms < $1",
                    )
                    .bind(before_unix_ms)
                    .execute(&mut *connection)
                    .await?
                    .rows_affected();
                    sqlx::query("DELETE FROM outbox_leases WHERE until_unix_ms < $1")
                        .bind(now_unix_ms)
                        .execute(&mut *connection)
                        .await?;
                    Ok(pruned)
                })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::{Item, OrderStatus, ParkReason},
        outbox::Wake,
        store::{Fence, Inserted, NewOrder, Store, StoreError},
    };

    /// The relay of the store `open` gives, and its lease.
    const RELAY: &str = "relay-a";
    const LEASE_MS: i64 = 1000;

    async fn open_with_wake(dir: &std::path::Path) -> (Store, Table, Wake) {
        let pool = mesh::storage::open("orders", None, dir, &crate::MIGRATOR)
            .await
            .expect("open the orders database");
        let wake = Wake::new(RELAY, std::time::Duration::from_millis(LEASE_MS as u64));
        let store = Store::with_outbox(pool, wake.clone());
        let table = Table::over(&store);
        (store, table, wake)
    }

    async fn open(dir: &std::path::Path) -> (Store, Table) {
        let (store, table, _) = open_with_wake(dir).await;
        (store, table)
    }

    async fn pending_order(store: &Store, order_id: &str, at: i64) -> Fence {
        let items = [Item {
            sku: "apple".into(),
            quantity: 1,
        }];
        let inserted = store
            .insert_pending(
                &NewOrder {
                    order_id,
                    request_id: order_id,
                    user_id: "u_1",
                    currency: "EUR",
                    items: &items,
                    now_unix_ms: at,
                },
                "owner-1",
                at + 1000,
            )
            .await
            .unwrap();
        match inserted {
            Inserted::New(_, fence) => fence,
            Inserted::Existing(order) => panic!("expected a new order, got {order:?}"),
        }
    }

    #[tokio::test]
    async fn a_final_state_and_its_event_commit_together_in_the_orders_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let (store, table) = open(dir.path()).await;
        let fence = pending_order(&store, "ord_1", 10).await;
        assert!(table.pending_of("ord_1").await.unwrap().is_empty());

        store.confirm(&fence, 20).await.unwrap();
        let events = table.pending_of("ord_1").await.unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].sequence, 1);
        assert_eq!(events[0].event_type, "mesh.events.v1.OrderConfirmed");
        assert_eq!(events[0].topic, crate::outbox::TOPIC);
        assert_eq!(events[0].created_at_unix_ms, 20);
        let body = <mesh::proto::events::v1::OrderConfirmed as prost::Message>::decode(
            events[0].body.as_slice(),
        )
        .unwrap();
        assert_eq!(body.order_id, "ord_1");
        assert_eq!(body.sequence, 1);

        // The cancel that follows is the order's second event.
        assert!(store.request_cancel("ord_1", 30).await.unwrap());
        let cancelling = store
            .try_lease("ord_1", "owner-2", 40, 5000)
            .await
            .unwrap()
            .expect("a cancelling order is leased");
        store.cancelled(&cancelling, 50).await.unwrap();
        let events = table.pending_of("ord_1").await.unwrap();
        let sequences: Vec<(i64, &str)> = events
            .iter()
            .map(|event| (event.sequence, event.event_type.as_str()))
            .collect();
        assert_eq!(
            sequences,
            [
                (1, "mesh.events.v1.OrderConfirmed"),
                (2, "mesh.events.v1.OrderCancelled")
            ]
        );
        assert_eq!(table.backlog().await.unwrap(), (2, Some(20)));
    }

    #[tokio::test]
    async fn a_state_change_that_is_refused_records_no_event() {
        let dir = tempfile::tempdir().unwrap();
        let (store, table) = open(dir.path()).await;
        let first = pending_order(&store, "ord_1", 10).await;
        // Its lease expires and another run takes the order over: the first
        // run's confirmation is refused, and with it the event.
        let second = store
            .try_lease("ord_1", "owner-2", 2000, 9000)
            .await
            .unwrap()
            .expect("an expired lease is taken");
        assert!(matches!(
            store.confirm(&first, 2100).await,
            Err(StoreError::LeaseLost { .. })
        ));
        assert!(table.pending_of("ord_1").await.unwrap().is_empty());
        assert_eq!(table.backlog().await.unwrap(), (0, None));
        store.reject(&second, "out of stock", 2200).await.unwrap();
        let events = table.pending_of("ord_1").await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, "mesh.events.v1.OrderRejected");
        assert_eq!(events[0].sequence, 1);
    }

    /// The event types of `order_id`'s pending events, in sequence.
    async fn event_types(table: &Table, order_id: &str) -> Vec<(i64, String)> {
        table
            .pending_of(order_id)
            .await
            .unwrap()
            .into_iter()
            .map(|event| (event.sequence, event.event_type))
            .collect()
    }

    #[tokio::test]
    async fn an_operators_resolution_records_the_event_its_final_state_causes() {
        let dir = tempfile::tempdir().unwrap();
        let (store, table) = open(dir.path()).await;
        let park = |fence: Fence, at: i64| {
            let store = store.clone();
            async move {
                assert!(store
                    .park(&fence, ParkReason::PaymentState, "held for a person", at)
                    .await
                    .unwrap());
            }
        };

        // PENDING, parked, resolved CONFIRMED: shipping must hear of it.
        let fence = pending_order(&store, "ord_1", 10).await;
        park(fence, 20).await;
        store
            .resolve("ord_1", OrderStatus::Confirmed, "", 30)
            .await
            .unwrap();
        assert_eq!(
            event_types(&table, "ord_1").await,
            [(1, "mesh.events.v1.OrderConfirmed".to_owned())]
        );

        // Cancelled later, parked while CANCELLING, resolved back to
        // CONFIRMED: nothing changed for a consumer, no event.
        assert!(store.request_cancel("ord_1", 40).await.unwrap());
        let cancelling = store.try_lease("ord_1", "owner-2", 50, 5000).await.unwrap();
        park(cancelling.expect("a cancelling order is leased"), 60).await;
        store
            .resolve("ord_1", OrderStatus::Confirmed, "", 70)
            .await
            .unwrap();
        assert_eq!(event_types(&table, "ord_1").await.len(), 1);

        // Parked while CANCELLING again, resolved CANCELLED: the shipment
        // must be cancelled, so the event follows the confirmation.
        assert!(store.request_cancel("ord_1", 80).await.unwrap());
        let cancelling = store.try_lease("ord_1", "owner-3", 90, 5000).await.unwrap();
        park(cancelling.expect("a cancelling order is leased"), 100).await;
        store
            .resolve("ord_1", OrderStatus::Cancelled, "", 110)
            .await
            .unwrap();
        assert_eq!(
            event_types(&table, "ord_1").await,
            [
                (1, "mesh.events.v1.OrderConfirmed".to_owned()),
                (2, "mesh.events.v1.OrderCancelled".to_owned())
            ]
        );

        // PENDING, parked, resolved REJECTED; a second resolution of the
        // same order is refused and records nothing.
        let fence = pending_order(&store, "ord_2", 120).await;
        park(fence, 130).await;
        store
            .resolve("ord_2", OrderStatus::Rejected, "refused by hand", 140)
            .await
            .unwrap();
        assert!(matches!(
            store
                .resolve("ord_2", OrderStatus::Rejected, "again", 150)
                .await,
            Err(StoreError::NotParked { .. })
        ));
        assert_eq!(
            event_types(&table, "ord_2").await,
            [(1, "mesh.events.v1.OrderRejected".to_owned())]
        );
    }

    #[tokio::test]
    async fn one_relay_at_a_time_holds_an_orders_lease() {
        let dir = tempfile::tempdir().unwrap();
        let (_, table) = open(dir.path()).await;
        assert!(table.lease("ord_1", "relay-a", 100, 1100).await.unwrap());
        assert!(
            !table.lease("ord_1", "relay-b", 500, 1500).await.unwrap(),
            "a live lease is not taken"
        );
        assert!(
            table.lease("ord_2", "relay-b", 500, 1500).await.unwrap(),
            "other orders are free"
        );
        assert!(
            table.lease("ord_1", "relay-a", 600, 1600).await.unwrap(),
            "a relay renews its own lease"
        );
        // Expired: another relay takes it, and the first one's release no
        // longer removes it.
        assert!(table.lease("ord_1", "relay-b", 1600, 2600).await.unwrap());
        let release = |owner: &'static str| table.finish("ord_1", owner, Outcome::default(), 1700);
        release("relay-a").await.unwrap();
        assert!(!table.lease("ord_1", "relay-a", 1700, 2700).await.unwrap());
        release("relay-b").await.unwrap();
        assert!(table.lease("ord_1", "relay-a", 1700, 2700).await.unwrap());
    }

    #[tokio::test]
    async fn published_events_leave_the_backlog_and_are_pruned_after_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        let (store, table) = open(dir.path()).await;
        let first = pending_order(&store, "ord_1", 10).await;
        store.confirm(&first, 20).await.unwrap();
        let second = pending_order(&store, "ord_2", 30).await;
        store.confirm(&second, 40).await.unwrap();
        assert_eq!(
            table.pending_orders(10).await.unwrap(),
            ["ord_1", "ord_2"],
            "the longest waiting first"
        );
        let event = table.pending_of("ord_1").await.unwrap().remove(0);
        let failed = Outcome {
            confirmed: vec![],
            failed: Some((event.event_id.clone(), "x".repeat(10_000))),
        };
        table.finish("ord_1", RELAY, failed, 50).await.unwrap();
        let error: String = sqlx::query_scalar("SELECT last_error FROM outbox WHERE event_id = $1")
            .bind(&event.event_id)
            .fetch_one(&table.pool)
            .await
            .unwrap();
        assert_eq!(error.len(), 300, "a failure's text is bounded");
        let confirmed = Outcome {
            confirmed: vec![event.event_id.clone()],
            failed: None,
        };
        table.finish("ord_1", RELAY, confirmed, 100).await.unwrap();
        assert_eq!(table.pending_orders(10).await.unwrap(), ["ord_2"]);
        assert_eq!(table.backlog().await.unwrap(), (1, Some(40)));
        assert_eq!(table.prune(100, 100).await.unwrap(), 0, "not yet");
        assert_eq!(table.prune(101, 101).await.unwrap(), 1);
        assert_eq!(
            table.prune(10_000, 10_000).await.unwrap(),
            0,
            "pending stays"
        );
        assert_eq!(table.pending_of("ord_2").await.unwrap().len(), 1);
    }

    /// Who holds `order_id`'s lease, until when.
    async fn lease_of(table: &Table, order_id: &str) -> Option<(String, i64)> {
        sqlx::query_as("SELECT owner, until_unix_ms FROM outbox_leases WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&table.pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_committed_event_is_leased_to_its_instances_relay_until_the_lease_ends() {
        let dir = tempfile::tempdir().unwrap();
        let (store, table, wake) = open_with_wake(dir.path()).await;
        let fence = pending_order(&store, "ord_1", 10).await;
        store.confirm(&fence, 20).await.unwrap();
        assert_eq!(
            lease_of(&table, "ord_1").await,
            Some((RELAY.to_owned(), 20 + LEASE_MS)),
            "the confirming unit leased the order to its relay"
        );
        assert_eq!(wake.take_handed("ord_1"), Some(20 + LEASE_MS));
        assert_eq!(wake.take_handed("ord_1"), None, "handed over once");
        assert!(
            !table.lease("ord_1", "relay-b", 500, 1500).await.unwrap(),
            "another relay does not take a pre-leased order while the lease lasts"
        );
        assert!(
            table
                .lease("ord_1", "relay-b", 20 + LEASE_MS, 3000)
                .await
                .unwrap(),
            "it does once the lease ended (the committing relay died)"
        );

        // The cancel is committed while relay-b holds the order: the unit
        // does not take it from relay-b, and hands nothing over.
        assert!(store.request_cancel("ord_1", 1100).await.unwrap());
        let cancelling = store
            .try_lease("ord_1", "saga-2", 1200, 5000)
            .await
            .unwrap()
            .expect("a cancelling order is leased");
        store.cancelled(&cancelling, 1300).await.unwrap();
        assert_eq!(event_types(&table, "ord_1").await.len(), 2);
        assert_eq!(
            lease_of(&table, "ord_1").await,
            Some(("relay-b".to_owned(), 3000))
        );
        assert_eq!(wake.take_handed("ord_1"), None);

        // An ended hand-off is forgotten.
        let fence = pending_order(&store, "ord_2", 2000).await;
        store.confirm(&fence, 2010).await.unwrap();
        wake.forget_ended(2010 + LEASE_MS);
        assert_eq!(wake.take_handed("ord_2"), None);
    }

    #[tokio::test]
    async fn finishing_marks_exactly_the_confirmed_events_and_releases_the_lease() {
        let dir = tempfile::tempdir().unwrap();
        let (store, table) = open(dir.path()).await;
        let fence = pending_order(&store, "ord_1", 10).await;
        store.confirm(&fence, 20).await.unwrap();
        assert!(store.request_cancel("ord_1", 30).await.unwrap());
        let cancelling = store
            .try_lease("ord_1", "saga-2", 40, 5000)
            .await
            .unwrap()
            .expect("a cancelling order is leased");
        store.cancelled(&cancelling, 50).await.unwrap();
        let other = pending_order(&store, "ord_2", 60).await;
        store.confirm(&other, 70).await.unwrap();
        let events = table.pending_of("ord_1").await.unwrap();
        let (confirmed, cancelled) = (events[0].event_id.clone(), events[1].event_id.clone());
        let unrelated = table.pending_of("ord_2").await.unwrap()[0].event_id.clone();

        // The first event went out, the second failed; an event of another
        // order named by mistake is not touched.
        let outcome = Outcome {
            confirmed: vec![confirmed.clone(), unrelated],
            failed: Some((cancelled.clone(), "the broker is down".to_owned())),
        };
        table.finish("ord_1", RELAY, outcome, 100).await.unwrap();
        let rows: Vec<(String, i64, i64, String)> = sqlx::query_as(
            "SELECT event_id, published_at_unix_ms, attempts, last_error FROM outbox ORDER BY order_id, sequence",
        )
        .fetch_all(&table.pool)
        .await
        .unwrap();
        assert_eq!(rows[0], (confirmed, 100, 1, String::new()));
        assert_eq!(rows[1], (cancelled, 0, 1, "the broker is down".to_owned()));
        assert_eq!(rows[2].1, 0, "another order's event stays pending");
        assert_eq!(lease_of(&table, "ord_1").await, None, "released");
        assert_eq!(table.backlog().await.unwrap(), (2, Some(50)));
    }
}
