//! The orders database (orders + order lines) over `sqlx::AnyPool`.
//!
//! The saga's writes are single conditional UPDATEs guarded by the lease
//! (`lease_owner = $me AND status = 'PENDING'`), so a saga run that lost its
//! lease — or an order that left PENDING — is never overwritten; multi-row
//! writes run in one transaction that starts with a write.

use sqlx::{any::AnyRow, AnyPool, Row};

use crate::domain::{Item, OrderStatus, PageKey};

/// A stored order line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The SKU.
    pub sku: String,
    /// How many.
    pub quantity: i64,
    /// 0 until inventory priced it.
    pub unit_price_cents: i64,
}

/// A stored order with its saga bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// `ord_…`.
    pub order_id: String,
    /// The caller's idempotency key.
    pub request_id: String,
    /// Who ordered.
    pub user_id: String,
    /// Upper-case ISO 4217 code.
    pub currency: String,
    /// Where the order is.
    pub status: OrderStatus,
    /// Sum of the priced lines (0 until priced).
    pub total_cents: i64,
    /// The captured payment, once known.
    pub payment_id: String,
    /// Why it was rejected; empty otherwise.
    pub rejection_reason: String,
    /// When it was placed.
    pub created_at_unix_ms: i64,
    /// How many of its reservations were released before the current one.
    pub reservation_attempt: i64,
    /// Whether a Charge may have been sent (its outcome then must be learnt
    /// before stock is released).
    pub charge_sent: bool,
    /// The lines, in the order they were requested.
    pub lines: Vec<Line>,
}

impl Order {
    /// The lines as requested (without prices).
    pub fn items(&self) -> Vec<Item> {
        self.lines
            .iter()
            .map(|line| Item {
                sku: line.sku.clone(),
                quantity: line.quantity,
            })
            .collect()
    }
}

/// A new order to record as PENDING.
#[derive(Debug, Clone)]
pub struct NewOrder<'a> {
    /// `ord_…`.
    pub order_id: &'a str,
    /// The caller's idempotency key.
    pub request_id: &'a str,
    /// Who orders.
    pub user_id: &'a str,
    /// Upper-case currency.
    pub currency: &'a str,
    /// The lines.
    pub items: &'a [Item],
    /// When.
    pub now_unix_ms: i64,
}

/// What `insert_pending` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// The order was recorded, leased to the caller.
    New(Order),
    /// An order with this `request_id` already existed: here it is.
    Existing(Order),
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No order has this id.
    #[error("order {order_id} not found")]
    NotFound {
        /// The id asked for.
        order_id: String,
    },
    /// The saga run no longer holds the order (its lease expired and another
    /// request took over, or the order left PENDING).
    #[error("order {order_id} is being placed by another request")]
    LeaseLost {
        /// The order.
        order_id: String,
    },
    /// A row the code cannot interpret.
    #[error("corrupt orders row: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

const COLUMNS: &str = "order_id, request_id, user_id, currency, status, total_cents, payment_id, rejection_reason, created_at_unix_ms, reservation_attempt, charge_sent";

/// The orders database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
}

impl Store {
    /// A store over an open, migrated pool.
    pub fn new(pool: AnyPool) -> Self {
        Self { pool }
    }

    /// Records `order` as PENDING, leased to `owner` until `lease_until`,
    /// with its lines — in one transaction — unless its `request_id` is
    /// taken: then returns that order.
    pub async fn insert_pending(
        &self,
        order: &NewOrder<'_>,
        owner: &str,
        lease_until_unix_ms: i64,
    ) -> Result<Inserted, StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO orders (order_id, request_id, user_id, currency, status, total_cents, payment_id, rejection_reason, created_at_unix_ms, updated_at_unix_ms, reservation_attempt, charge_sent, lease_owner, lease_until_unix_ms) \
             VALUES ($1, $2, $3, $4, $5, 0, '', '', $6, $6, 0, 0, $7, $8) \
             ON CONFLICT (request_id) DO NOTHING",
        )
        .bind(order.order_id)
        .bind(order.request_id)
        .bind(order.user_id)
        .bind(order.currency)
        .bind(OrderStatus::Pending.as_str())
        .bind(order.now_unix_ms)
        .bind(owner)
        .bind(lease_until_unix_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            let existing = self
                .find_by_request(order.request_id)
                .await?
                .ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "request_id {} conflicts but no order has it",
                        order.request_id
                    ))
                })?;
            return Ok(Inserted::Existing(existing));
        }
        for (line_no, item) in order.items.iter().enumerate() {
            sqlx::query(
                "INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_cents) VALUES ($1, $2, $3, $4, 0)",
            )
            .bind(order.order_id)
            .bind(line_no as i64)
            .bind(&item.sku)
            .bind(item.quantity)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Inserted::New(self.get(order.order_id).await?))
    }

    /// One order.
    pub async fn get(&self, order_id: &str) -> Result<Order, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM orders WHERE order_id = $1"))
            .bind(order_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                order_id: order_id.to_owned(),
            })?;
        self.with_lines(order_from_row(&row)?).await
    }

    /// The order placed by `request_id`, if any.
    pub async fn find_by_request(&self, request_id: &str) -> Result<Option<Order>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM orders WHERE request_id = $1"
        ))
        .bind(request_id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            None => Ok(None),
            Some(row) => Ok(Some(self.with_lines(order_from_row(&row)?).await?)),
        }
    }

    /// A page of `user_id`'s orders, newest first, after `after` (exclusive).
    /// Returns up to `limit` orders.
    pub async fn list(
        &self,
        user_id: &str,
        after: Option<&PageKey>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        let rows = match after {
            None => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM orders WHERE user_id = $1 \
                     ORDER BY created_at_unix_ms DESC, order_id DESC LIMIT $2"
                ))
                .bind(user_id)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            Some(key) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM orders WHERE user_id = $1 \
                     AND (created_at_unix_ms < $2 OR (created_at_unix_ms = $2 AND order_id < $3)) \
                     ORDER BY created_at_unix_ms DESC, order_id DESC LIMIT $4"
                ))
                .bind(user_id)
                .bind(key.created_at_unix_ms)
                .bind(&key.order_id)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
        };
        let mut orders = Vec::with_capacity(rows.len());
        for row in &rows {
            orders.push(self.with_lines(order_from_row(row)?).await?);
        }
        Ok(orders)
    }

    /// Leases a PENDING order to `owner` until `lease_until` if no live lease
    /// holds it. Returns whether `owner` now holds it.
    pub async fn try_lease(
        &self,
        order_id: &str,
        owner: &str,
        now_unix_ms: i64,
        lease_until_unix_ms: i64,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE orders SET lease_owner = $1, lease_until_unix_ms = $2 \
             WHERE order_id = $3 AND status = $4 AND (lease_until_unix_ms <= $5 OR lease_owner = $1)",
        )
        .bind(owner)
        .bind(lease_until_unix_ms)
        .bind(order_id)
        .bind(OrderStatus::Pending.as_str())
        .bind(now_unix_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    /// Gives the lease up (no-op if `owner` does not hold it).
    pub async fn release_lease(&self, order_id: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE orders SET lease_owner = '', lease_until_unix_ms = 0 \
             WHERE order_id = $1 AND lease_owner = $2",
        )
        .bind(order_id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Moves to reservation `attempt` (the previous one was released).
    pub async fn set_reservation_attempt(
        &self,
        order_id: &str,
        owner: &str,
        attempt: i64,
        now_unix_ms: i64,
    ) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE orders SET reservation_attempt = $1, updated_at_unix_ms = $2 \
             WHERE order_id = $3 AND lease_owner = $4 AND status = $5",
        )
        .bind(attempt)
        .bind(now_unix_ms)
        .bind(order_id)
        .bind(owner)
        .bind(OrderStatus::Pending.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        leased(updated, order_id)
    }

    /// Stores inventory's unit prices (by SKU) and the total, in one transaction.
    pub async fn record_prices(
        &self,
        order_id: &str,
        owner: &str,
        prices: &[(String, i64)],
        total_cents: i64,
        now_unix_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE orders SET total_cents = $1, updated_at_unix_ms = $2 \
             WHERE order_id = $3 AND lease_owner = $4 AND status = $5",
        )
        .bind(total_cents)
        .bind(now_unix_ms)
        .bind(order_id)
        .bind(owner)
        .bind(OrderStatus::Pending.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated != 1 {
            tx.rollback().await?;
            return leased(updated, order_id);
        }
        for (sku, price) in prices {
            sqlx::query(
                "UPDATE order_lines SET unit_price_cents = $1 WHERE order_id = $2 AND sku = $3",
            )
            .bind(price)
            .bind(order_id)
            .bind(sku)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records whether a Charge may have been sent.
    pub async fn set_charge_sent(
        &self,
        order_id: &str,
        owner: &str,
        sent: bool,
        now_unix_ms: i64,
    ) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE orders SET charge_sent = $1, updated_at_unix_ms = $2 \
             WHERE order_id = $3 AND lease_owner = $4 AND status = $5",
        )
        .bind(i64::from(sent))
        .bind(now_unix_ms)
        .bind(order_id)
        .bind(owner)
        .bind(OrderStatus::Pending.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        leased(updated, order_id)
    }

    /// Records the captured payment of a still-PENDING order.
    pub async fn record_payment(
        &self,
        order_id: &str,
        owner: &str,
        payment_id: &str,
        now_unix_ms: i64,
    ) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE orders SET payment_id = $1, updated_at_unix_ms = $2 \
             WHERE order_id = $3 AND lease_owner = $4 AND status = $5",
        )
        .bind(payment_id)
        .bind(now_unix_ms)
        .bind(order_id)
        .bind(owner)
        .bind(OrderStatus::Pending.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        leased(updated, order_id)
    }

    /// PENDING → CONFIRMED with `payment_id`; frees the lease.
    pub async fn confirm(
        &self,
        order_id: &str,
        owner: &str,
        payment_id: &str,
        now_unix_ms: i64,
    ) -> Result<Order, StoreError> {
        self.finish(
            order_id,
            owner,
            OrderStatus::Confirmed,
            Outcome::PaymentId(payment_id),
            now_unix_ms,
        )
        .await
    }

    /// PENDING → REJECTED with `reason`; frees the lease.
    pub async fn reject(
        &self,
        order_id: &str,
        owner: &str,
        reason: &str,
        now_unix_ms: i64,
    ) -> Result<Order, StoreError> {
        self.finish(
            order_id,
            owner,
            OrderStatus::Rejected,
            Outcome::RejectionReason(reason),
            now_unix_ms,
        )
        .await
    }

    /// PENDING → `status`, recording `outcome`, only for the lease holder;
    /// frees the lease.
    async fn finish(
        &self,
        order_id: &str,
        owner: &str,
        status: OrderStatus,
        outcome: Outcome<'_>,
        now_unix_ms: i64,
    ) -> Result<Order, StoreError> {
        let (column, value) = match outcome {
            Outcome::PaymentId(payment_id) => ("payment_id", payment_id),
            Outcome::RejectionReason(reason) => ("rejection_reason", reason),
        };
        let sql = format!(
            "UPDATE orders SET status = $1, {column} = $2, updated_at_unix_ms = $3, lease_owner = '', lease_until_unix_ms = 0 \
             WHERE order_id = $4 AND lease_owner = $5 AND status = $6"
        );
        let updated = sqlx::query(&sql)
            .bind(status.as_str())
            .bind(value)
            .bind(now_unix_ms)
            .bind(order_id)
            .bind(owner)
            .bind(OrderStatus::Pending.as_str())
            .execute(&self.pool)
            .await?
            .rows_affected();
        leased(updated, order_id)?;
        self.get(order_id).await
    }

    /// CONFIRMED → CANCELLED. Returns whether this call changed it.
    pub async fn cancel(&self, order_id: &str, now_unix_ms: i64) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE orders SET status = $1, updated_at_unix_ms = $2 WHERE order_id = $3 AND status = $4",
        )
        .bind(OrderStatus::Cancelled.as_str())
        .bind(now_unix_ms)
        .bind(order_id)
        .bind(OrderStatus::Confirmed.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    async fn with_lines(&self, mut order: Order) -> Result<Order, StoreError> {
        let rows = sqlx::query(
            "SELECT sku, quantity, unit_price_cents FROM order_lines WHERE order_id = $1 ORDER BY line_no",
        )
        .bind(&order.order_id)
        .fetch_all(&self.pool)
        .await?;
        order.lines = rows
            .iter()
            .map(|row| {
                Ok(Line {
                    sku: row.try_get("sku")?,
                    quantity: row.try_get("quantity")?,
                    unit_price_cents: row.try_get("unit_price_cents")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(order)
    }
}

/// What a finished order records beside its status.
enum Outcome<'a> {
    /// CONFIRMED: the captured payment.
    PaymentId(&'a str),
    /// REJECTED: why.
    RejectionReason(&'a str),
}

fn leased(updated: u64, order_id: &str) -> Result<(), StoreError> {
    if updated == 1 {
        Ok(())
    } else {
        Err(StoreError::LeaseLost {
            order_id: order_id.to_owned(),
        })
    }
}

fn order_from_row(row: &AnyRow) -> Result<Order, StoreError> {
    let status: String = row.try_get("status")?;
    let charge_sent: i64 = row.try_get("charge_sent")?;
    Ok(Order {
        order_id: row.try_get("order_id")?,
        request_id: row.try_get("request_id")?,
        user_id: row.try_get("user_id")?,
        currency: row.try_get("currency")?,
        status: OrderStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown order status {status:?}")))?,
        total_cents: row.try_get("total_cents")?,
        payment_id: row.try_get("payment_id")?,
        rejection_reason: row.try_get("rejection_reason")?,
        created_at_unix_ms: row.try_get("created_at_unix_ms")?,
        reservation_attempt: row.try_get("reservation_attempt")?,
        charge_sent: charge_sent != 0,
        lines: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open(dir: &std::path::Path) -> Store {
        let pool = mesh::storage::open("orders", None, dir, &crate::MIGRATOR)
            .await
            .expect("open the orders database");
        Store::new(pool)
    }

    fn items() -> Vec<Item> {
        vec![
            Item {
                sku: "apple".into(),
                quantity: 2,
            },
            Item {
                sku: "pear".into(),
                quantity: 1,
            },
        ]
    }

    async fn insert(
        store: &Store,
        order_id: &str,
        request_id: &str,
        user: &str,
        at: i64,
    ) -> Inserted {
        let items = items();
        store
            .insert_pending(
                &NewOrder {
                    order_id,
                    request_id,
                    user_id: user,
                    currency: "EUR",
                    items: &items,
                    now_unix_ms: at,
                },
                "owner-1",
                at + 1000,
            )
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn an_order_is_recorded_pending_with_its_lines_once_per_request_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let Inserted::New(order) = insert(&store, "ord_1", "r1", "u_1", 10).await else {
            panic!("first insert is new")
        };
        assert_eq!(order.status, OrderStatus::Pending);
        assert_eq!(order.items(), items());
        assert!(order.lines.iter().all(|line| line.unit_price_cents == 0));
        assert!(!order.charge_sent);
        assert_eq!(order.reservation_attempt, 0);

        // A second insert with the same request_id returns the first order
        // and writes no lines under the second id.
        let again = insert(&store, "ord_2", "r1", "u_1", 20).await;
        assert_eq!(again, Inserted::Existing(order.clone()));
        assert!(matches!(
            store.get("ord_2").await,
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(store.find_by_request("r1").await.unwrap(), Some(order));
        assert_eq!(store.find_by_request("r2").await.unwrap(), None);
    }

    #[tokio::test]
    async fn saga_writes_need_the_lease_and_a_pending_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        insert(&store, "ord_1", "r1", "u_1", 10).await;

        // Another owner cannot take a live lease, nor write.
        assert!(!store
            .try_lease("ord_1", "owner-2", 500, 5000)
            .await
            .unwrap());
        assert!(matches!(
            store.set_charge_sent("ord_1", "owner-2", true, 20).await,
            Err(StoreError::LeaseLost { .. })
        ));
        // It can once the lease has expired; the first owner then cannot write.
        assert!(store
            .try_lease("ord_1", "owner-2", 1010, 5000)
            .await
            .unwrap());
        assert!(matches!(
            store
                .set_reservation_attempt("ord_1", "owner-1", 1, 20)
                .await,
            Err(StoreError::LeaseLost { .. })
        ));

        store
            .record_prices(
                "ord_1",
                "owner-2",
                &[("apple".into(), 150), ("pear".into(), 200)],
                500,
                30,
            )
            .await
            .unwrap();
        store
            .set_charge_sent("ord_1", "owner-2", true, 31)
            .await
            .unwrap();
        store
            .set_reservation_attempt("ord_1", "owner-2", 1, 32)
            .await
            .unwrap();
        store
            .record_payment("ord_1", "owner-2", "pay_1", 33)
            .await
            .unwrap();
        let order = store.get("ord_1").await.unwrap();
        assert_eq!(order.total_cents, 500);
        assert_eq!(order.lines[0].unit_price_cents, 150);
        assert_eq!(order.lines[1].unit_price_cents, 200);
        assert!(order.charge_sent);
        assert_eq!(order.reservation_attempt, 1);
        assert_eq!(order.payment_id, "pay_1");

        let confirmed = store
            .confirm("ord_1", "owner-2", "pay_1", 40)
            .await
            .unwrap();
        assert_eq!(confirmed.status, OrderStatus::Confirmed);
        // A confirmed order is final for the saga: no lease, no rejection.
        assert!(!store
            .try_lease("ord_1", "owner-3", 1_000_000, 2_000_000)
            .await
            .unwrap());
        assert!(matches!(
            store.reject("ord_1", "owner-2", "late", 50).await,
            Err(StoreError::LeaseLost { .. })
        ));
        assert!(store.cancel("ord_1", 60).await.unwrap());
        assert!(!store.cancel("ord_1", 61).await.unwrap());
        assert_eq!(
            store.get("ord_1").await.unwrap().status,
            OrderStatus::Cancelled
        );
    }

    #[tokio::test]
    async fn rejecting_keeps_the_reason_and_frees_the_lease() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        insert(&store, "ord_1", "r1", "u_1", 10).await;
        let rejected = store
            .reject("ord_1", "owner-1", "insufficient stock: apple", 20)
            .await
            .unwrap();
        assert_eq!(rejected.status, OrderStatus::Rejected);
        assert_eq!(rejected.rejection_reason, "insufficient stock: apple");
        assert!(!store.cancel("ord_1", 30).await.unwrap());
    }

    #[tokio::test]
    async fn a_released_lease_can_be_taken_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        insert(&store, "ord_1", "r1", "u_1", 10).await;
        store.release_lease("ord_1", "someone-else").await.unwrap();
        assert!(!store.try_lease("ord_1", "owner-2", 20, 5000).await.unwrap());
        store.release_lease("ord_1", "owner-1").await.unwrap();
        assert!(store.try_lease("ord_1", "owner-2", 20, 5000).await.unwrap());
    }

    #[tokio::test]
    async fn list_pages_newest_first_with_keyset_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        // Five orders of u_1 (two in the same millisecond) and one of u_2.
        for (i, at) in [100, 200, 200, 300, 400].into_iter().enumerate() {
            insert(&store, &format!("ord_{i}"), &format!("r{i}"), "u_1", at).await;
        }
        insert(&store, "ord_x", "rx", "u_2", 250).await;

        let mut seen = Vec::new();
        let mut after: Option<PageKey> = None;
        loop {
            let page = store.list("u_1", after.as_ref(), 2).await.unwrap();
            if page.is_empty() {
                break;
            }
            let last = page.last().unwrap();
            after = Some(PageKey {
                created_at_unix_ms: last.created_at_unix_ms,
                order_id: last.order_id.clone(),
            });
            seen.extend(page.into_iter().map(|order| order.order_id));
        }
        assert_eq!(seen, ["ord_4", "ord_3", "ord_2", "ord_1", "ord_0"]);
        let other = store.list("u_2", None, 10).await.unwrap();
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].lines.len(), 2);
        assert!(store.list("u_3", None, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn concurrent_inserts_of_one_request_on_two_pools_make_one_order() {
        let dir = tempfile::tempdir().unwrap();
        let stores = [open(dir.path()).await, open(dir.path()).await];
        let attempts = (0..8).map(|i| {
            let store = stores[i % 2].clone();
            async move { insert(&store, &format!("ord_{i}"), "same", "u_1", 10).await }
        });
        let results = futures::future::join_all(attempts).await;
        let new = results
            .iter()
            .filter(|result| matches!(result, Inserted::New(_)))
            .count();
        assert_eq!(new, 1, "{results:?}");
        let order = store_order(&stores[0]).await;
        assert_eq!(order.lines.len(), 2);
    }

    async fn store_order(store: &Store) -> Order {
        store.find_by_request("same").await.unwrap().unwrap()
    }
}
