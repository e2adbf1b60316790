//! What `mesh-bench events` reads back: orders' orders and outbox and
//! shipping's shipments, from their SQLite databases (read-only), on the
//! same clock.

use std::{collections::HashMap, path::Path, time::Duration};

use anyhow::Context as _;
use sqlx::{sqlite::SqliteConnectOptions, SqlitePool};

/// Milliseconds since the Unix epoch (the services' `*_unix_ms` clock).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

/// Read-only handles on orders' (events on) and shipping's databases.
pub(crate) struct Probe {
    orders: SqlitePool,
    shipping: SqlitePool,
}

impl Probe {
    /// Opens both databases in `data` (shipping's is created by now: it
    /// migrated before it served).
    pub(crate) async fn open(data: &Path) -> anyhow::Result<Self> {
        let open = |file: &str| {
            SqlitePool::connect_lazy_with(
                SqliteConnectOptions::new()
                    .filename(data.join(file))
                    .read_only(true),
            )
        };
        Ok(Self {
            orders: open("orders.db"),
            shipping: open("shipping.db"),
        })
    }

    /// Waits (up to `timeout`) until the outbox is drained and every
    /// confirmed order has its shipment.
    pub(crate) async fn wait_drained(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let mut last = (0, 0, 0);
        let drained = tokio::time::timeout(timeout, async {
            loop {
                last = self.backlog().await?;
                if last.0 == 0 && last.1 >= last.2 {
                    return Ok::<_, anyhow::Error>(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        match drained {
            Ok(result) => result,
            Err(_) => anyhow::bail!(
                "not drained within {timeout:?}: {} events pending, {} of {} shipments",
                last.0,
                last.1,
                last.2
            ),
        }
    }

    /// (events pending in the outbox, shipments, confirmed orders).
    async fn backlog(&self) -> anyhow::Result<(i64, i64, i64)> {
        let pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at_unix_ms = 0")
                .fetch_one(&self.orders)
                .await?;
        let confirmed: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE status = 'CONFIRMED'")
                .fetch_one(&self.orders)
                .await?;
        let shipments: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM shipments")
            .fetch_one(&self.shipping)
            .await?;
        Ok((pending, shipments, confirmed))
    }

    /// (order confirmed at, shipment created at) of every order confirmed
    /// since `since`. The confirmation's time is the final write's
    /// (`updated_at`), the unit that records the event; a published event
    /// leaves the outbox, so its row cannot be read back.
    async fn pairs_since(&self, since: i64) -> anyhow::Result<Vec<(i64, i64)>> {
        let confirmed: Vec<(String, i64)> = sqlx::query_as(
            "SELECT order_id, updated_at_unix_ms FROM orders \
             WHERE status = 'CONFIRMED' AND updated_at_unix_ms >= ?",
        )
        .bind(since)
        .fetch_all(&self.orders)
        .await?;
        let shipped: HashMap<String, i64> = sqlx::query_as(
            "SELECT order_id, created_at_unix_ms FROM shipments WHERE created_at_unix_ms >= ?",
        )
        .bind(since)
        .fetch_all(&self.shipping)
        .await?
        .into_iter()
        .collect();
        confirmed
            .into_iter()
            .map(|(order_id, at)| {
                let shipped = shipped
                    .get(&order_id)
                    .with_context(|| format!("order {order_id} has no shipment"))?;
                Ok((at, *shipped))
            })
            .collect()
    }

    /// Commit → shipment, in ms, of every order confirmed since `since`.
    pub(crate) async fn latencies_since(&self, since: i64) -> anyhow::Result<Vec<u64>> {
        let pairs = self.pairs_since(since).await?;
        Ok(pairs
            .iter()
            .map(|(at, shipped)| (shipped - at).max(0) as u64)
            .collect())
    }

    /// How many orders were confirmed since `since`, and how fast their
    /// shipments were written: events per second from the first shipment
    /// to the last.
    pub(crate) async fn drain_rate_since(&self, since: i64) -> anyhow::Result<(usize, f64)> {
        let pairs = self.pairs_since(since).await?;
        let first = pairs.iter().map(|(_, shipped)| *shipped).min().unwrap_or(0);
        let last = pairs.iter().map(|(_, shipped)| *shipped).max().unwrap_or(0);
        let seconds = ((last - first).max(1) as f64) / 1000.0;
        Ok((pairs.len(), pairs.len().saturating_sub(1) as f64 / seconds))
    }
}
