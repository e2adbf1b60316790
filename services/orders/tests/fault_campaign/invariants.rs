//! The invariants, checked on the databases themselves after every run,
//! over the whole history: orders' current database and every earlier one
//! (an "epoch" ends when the database is wiped; its orders, payments and
//! sold units still count).

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use sqlx::{sqlite::SqlitePoolOptions, Row, SqlitePool};

use crate::plan::initial_units;

pub struct Databases {
    data: PathBuf,
    /// The current orders database.
    orders: SqlitePool,
    /// Orders databases of earlier epochs (wiped away).
    archives: Vec<SqlitePool>,
    inventory: SqlitePool,
    payments: SqlitePool,
}

async fn open(path: &Path, read_only: bool) -> SqlitePool {
    let mode = if read_only { "?mode=ro" } else { "" };
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&format!("sqlite://{}{mode}", path.display()))
        .await
        .unwrap_or_else(|error| panic!("open {}: {error}", path.display()))
}

/// One order as the invariants see it.
struct OrderRow {
    order_id: String,
    status: String,
    total: i64,
    payment_id: String,
    charge_key: String,
}

impl Databases {
    pub async fn open(data: &Path) -> Self {
        Self {
            data: data.to_owned(),
            orders: open(&data.join("orders.db"), true).await,
            archives: Vec::new(),
            inventory: open(&data.join("inventory.db"), true).await,
            payments: open(&data.join("payments.db"), true).await,
        }
    }

    /// After a wipe: `archived` (the old database, moved) joins the history
    /// and the new database is the current one. The archive is a copy the
    /// campaign owns, opened read-write so SQLite may replay its WAL.
    pub async fn wiped(&mut self, archived: &Path) {
        self.archives.push(open(archived, false).await);
        self.orders = open(&self.data.join("orders.db"), true).await;
    }

    pub async fn unfinished(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE status IN ('PENDING', 'CANCELLING')")
            .fetch_one(&self.orders)
            .await
            .expect("count unfinished orders")
    }

    /// Final statuses of every order of every epoch.
    pub async fn outcomes(&self) -> BTreeMap<String, i64> {
        let mut outcomes = BTreeMap::new();
        for pool in self.archives.iter().chain([&self.orders]) {
            let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM orders GROUP BY status")
                .fetch_all(pool)
                .await
                .expect("count orders by status");
            for row in rows {
                *outcomes.entry(row.get("status")).or_default() += row.get::<i64, _>("n");
            }
        }
        outcomes
    }

    async fn orders_of(pool: &SqlitePool) -> Result<Vec<OrderRow>, String> {
        let rows = sqlx::query(
            "SELECT order_id, request_id, status, total_cents, payment_id, saga_keys FROM orders",
        )
        .fetch_all(pool)
        .await
        .map_err(|e| e.to_string())?;
        let mut orders = Vec::with_capacity(rows.len());
        for row in rows {
            let order_id: String = row.get("order_id");
            let request_id: String = row.get("request_id");
            let keys = orders::domain::KeySource::parse(&row.get::<String, _>("saga_keys"))
                .ok_or_else(|| format!("{order_id}: unknown saga_keys"))?;
            orders.push(OrderRow {
                charge_key: orders::domain::charge_key_of(keys, &order_id, &request_id),
                order_id,
                status: row.get("status"),
                total: row.get("total_cents"),
                payment_id: row.get("payment_id"),
            });
        }
        Ok(orders)
    }

    /// Units per SKU that the CONFIRMED orders of `pool` hold.
    async fn sold_by(pool: &SqlitePool, sold: &mut HashMap<String, i64>) -> Result<(), String> {
        let rows = sqlx::query(
            "SELECT l.sku AS sku, SUM(l.quantity) AS units FROM order_lines l \
             JOIN orders o ON o.order_id = l.order_id WHERE o.status = 'CONFIRMED' GROUP BY l.sku",
        )
        .fetch_all(pool)
        .await
        .map_err(|e| e.to_string())?;
        for row in rows {
            *sold.entry(row.get("sku")).or_default() += row.get::<i64, _>("units");
        }
        Ok(())
    }

    /// Every invariant over the whole history; the first broken one.
    pub async fn check(&self) -> Result<(), String> {
        let mut orders = Vec::new();
        let mut sold: HashMap<String, i64> = HashMap::new();
        for pool in self.archives.iter().chain([&self.orders]) {
            orders.extend(Self::orders_of(pool).await?);
            Self::sold_by(pool, &mut sold).await?;
        }
        let payments =
            sqlx::query("SELECT payment_id, idempotency_key, amount_cents, status FROM payments")
                .fetch_all(&self.payments)
                .await
                .map_err(|e| e.to_string())?;
        let by_key: HashMap<String, (String, i64, String)> = payments
            .iter()
            .map(|row| {
                (
                    row.get::<String, _>("idempotency_key"),
                    (
                        row.get("payment_id"),
                        row.get("amount_cents"),
                        row.get("status"),
                    ),
                )
            })
            .collect();
        // One charge key per order, across epochs: a request resent after
        // the database was lost is a new order with its own keys.
        let mut order_of_key: HashMap<&str, &str> = HashMap::new();
        for order in &orders {
            if let Some(other) = order_of_key.insert(&order.charge_key, &order.order_id) {
                return Err(format!(
                    "orders {other} and {} share the charge key {}",
                    order.order_id, order.charge_key
                ));
            }
            let payment = by_key.get(&order.charge_key);
            match order.status.as_str() {
                "CONFIRMED" => {
                    let Some((id, amount, state)) = payment else {
                        return Err(format!("CONFIRMED {} has no payment", order.order_id));
                    };
                    if id != &order.payment_id || *amount != order.total || state != "CAPTURED" {
                        return Err(format!(
                            "CONFIRMED {} (total {}, payment {}) has payment {id} {state} of {amount}",
                            order.order_id, order.total, order.payment_id
                        ));
                    }
                }
                "REJECTED" | "CANCELLED" => {
                    if let Some((id, _, state)) = payment {
                        if state == "CAPTURED" {
                            return Err(format!(
                                "{} {} kept the captured payment {id}",
                                order.status, order.order_id
                            ));
                        }
                    }
                }
                other => return Err(format!("order {} is still {other}", order.order_id)),
            }
        }
        if let Some(key) = by_key
            .keys()
            .find(|key| !order_of_key.contains_key(key.as_str()))
        {
            return Err(format!("payment with key {key} belongs to no order"));
        }
        let items = sqlx::query("SELECT sku, available, reserved, committed FROM items")
            .fetch_all(&self.inventory)
            .await
            .map_err(|e| e.to_string())?;
        for row in items {
            let sku: String = row.get("sku");
            let (available, reserved, committed): (i64, i64, i64) = (
                row.get("available"),
                row.get("reserved"),
                row.get("committed"),
            );
            let initial = initial_units(&sku);
            if Some(available + reserved + committed) != initial {
                return Err(format!(
                    "{sku}: {available} available + {reserved} reserved + {committed} committed != {initial:?} added"
                ));
            }
            if reserved != 0 {
                return Err(format!("{sku}: {reserved} units still reserved"));
            }
            let expected = sold.get(&sku).copied().unwrap_or(0);
            if committed != expected {
                return Err(format!(
                    "{sku}: {committed} committed but confirmed orders hold {expected}"
                ));
            }
        }
        // request_id is UNIQUE in each epoch's schema; callers checked that
        // duplicates got one order.
        Ok(())
    }
}
