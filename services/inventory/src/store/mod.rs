//! Stock and reservations over `sqlx::AnyPool`: portable SQL with `$n`
//! placeholders that SQLite and PostgreSQL both accept, `i64`/`String` columns.
//!
//! Concurrency (several instances may share one SQLite file, or one
//! PostgreSQL database):
//! - stock only moves through conditional updates (`… WHERE available >= $n`)
//!   whose affected rows are checked, so stock can never be oversold;
//! - each Reserve/Release/Commit is ONE write unit. On PostgreSQL its first
//!   statement is a write (claiming the reservation id, or moving its state),
//!   so a second caller with the same reservation id waits on the row instead
//!   of reserving twice. On SQLite the writer's `BEGIN IMMEDIATE` holds the
//!   database's write lock before the unit's first statement, so no other
//!   writer runs between its statements and a read never has to upgrade to a
//!   write;
//! - item rows are updated in SKU order, so two transactions never lock the
//!   same items in opposite orders.
//!
//! Every write goes through the database's group-commit writer
//! ([`mesh::storage::Writer`]): each Reserve/Release/Commit is one write
//! unit (all or nothing, in its own savepoint), answered only once it is
//! committed durably, and concurrent ones share that commit. On a SQLite
//! file the units run on the database's own thread ([`on_thread`]), with
//! the statements of the pool's units below (a statement there costs no
//! hand-off between threads); elsewhere through the pool.

use std::collections::HashMap;

use mesh::storage::{GroupCommitOptions, StorageError, WriteError, Writer};
use sqlx::{any::AnyRow, AnyConnection, AnyPool, Row};

use crate::domain::{self, Line, ReservationRequest, Shortage, State, StockAddition, Transition};

mod on_thread;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No item has this SKU.
    #[error("sku {0} not found")]
    ItemNotFound(String),
    /// No reservation has this id.
    #[error("reservation {0} not found")]
    ReservationNotFound(String),
    /// Some lines could not be reserved; nothing was.
    #[error("{}", domain::shortage_message(.0))]
    Insufficient(Vec<Shortage>),
    /// The reservation id exists with other items.
    #[error("reservation_id {0} was already used with different items")]
    ReservationIdReused(String),
    /// Release of a committed or Commit of a released reservation.
    #[error("reservation {reservation_id} is already {}", .state.words())]
    WrongState {
        /// The reservation.
        reservation_id: String,
        /// Where it is.
        state: State,
    },
    /// Adding would hold more than [`domain::MAX_STOCK`] units of one SKU.
    #[error(
        "adding {quantity} units to {sku} would hold more than {} units",
        domain::MAX_STOCK
    )]
    StockLimit {
        /// The SKU.
        sku: String,
        /// Units asked to add.
        quantity: i64,
    },
    /// The items are priced in several currencies, or not in the one asked.
    #[error("{0}")]
    Currency(String),
    /// AddStock would change the currency of a SKU with units held by open reservations.
    #[error("{sku} is priced in {current} and has units held by open reservations; its currency cannot become {asked} now")]
    CurrencyChange {
        /// The SKU.
        sku: String,
        /// Its currency.
        current: String,
        /// The currency asked for.
        asked: String,
    },
    /// Commit of a reservation that expired (its stock is released).
    #[error("reservation {0} expired before it was committed; its stock was released")]
    Expired(String),
    /// Σ quantity × price does not fit in 64 bits.
    #[error("the reservation's total price is too large")]
    TotalTooLarge,
    /// The stored data breaks an invariant (a bug or a hand edit).
    #[error("inconsistent inventory data: {0}")]
    Inconsistent(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The database failed (a unit on SQLite's writer thread).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The write was not committed (a full queue, a failed batch).
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// A SKU's stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRecord {
    /// The SKU.
    pub sku: String,
    /// Units that can be reserved.
    pub available: i64,
    /// Units held by open reservations.
    pub reserved: i64,
    /// The current unit price.
    pub unit_price_cents: i64,
    /// Units sold (committed, minus restocked).
    pub committed: i64,
    /// The price's currency.
    pub currency: String,
}

/// One line of a stored reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineRecord {
    /// The SKU.
    pub sku: String,
    /// Units reserved.
    pub quantity: i64,
    /// The unit price when the reservation was made.
    pub unit_price_cents: i64,
}

/// A stored reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationRecord {
    /// The caller's id.
    pub reservation_id: String,
    /// Where it is in its life.
    pub state: State,
    /// Its lines, in the order they were asked for.
    pub lines: Vec<LineRecord>,
    /// Σ quantity × unit price.
    pub total_cents: i64,
    /// The currency of every price.
    pub currency: String,
    /// When it stops holding stock if still RESERVED.
    pub expires_at_unix_ms: i64,
}

/// The inventory database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    writer: Writer,
}

impl Store {
    /// Wraps an open, migrated pool and starts its writer (call inside a
    /// Tokio runtime).
    pub fn new(pool: AnyPool) -> Result<Self, StorageError> {
        let writer = Writer::start("inventory", &pool, GroupCommitOptions::default())?;
        Ok(Self { pool, writer })
    }

    /// Adds units to a SKU (creating it) and sets its price, in one statement.
    pub async fn add_stock(
        &self,
        addition: &StockAddition,
        now_unix_ms: i64,
    ) -> Result<ItemRecord, StoreError> {
        let unit_addition = addition.clone();
        let added = match &self.writer {
            Writer::Sqlite(writer) => {
                writer
                    .write(move |connection| {
                        on_thread::add_stock(connection, &unit_addition, now_unix_ms)
                    })
                    .await?
            }
            Writer::Pool(writer) => {
                writer
                    .write(move |connection| {
                        Box::pin(async move {
                            let addition = unit_addition;
                            let row = sqlx::query(ADD_STOCK)
                                .bind(&addition.sku)
                                .bind(addition.quantity)
                                .bind(addition.unit_price_cents)
                                .bind(now_unix_ms)
                                .bind(domain::MAX_STOCK - addition.quantity)
                                .bind(&addition.currency)
                                .fetch_optional(&mut *connection)
                                .await?;
                            row.map(|row| item(&row)).transpose()
                        })
                    })
                    .await?
            }
        };
        match added {
            Some(record) => Ok(record),
            None => {
                let current = self.item(&addition.sku).await?;
                if current.currency != addition.currency {
                    Err(StoreError::CurrencyChange {
                        sku: addition.sku.clone(),
                        current: current.currency,
                        asked: addition.currency.clone(),
                    })
                } else {
                    Err(StoreError::StockLimit {
                        sku: addition.sku.clone(),
                        quantity: addition.quantity,
                    })
                }
            }
        }
    }

    /// One SKU's stock.
    pub async fn item(&self, sku: &str) -> Result<ItemRecord, StoreError> {
        sqlx::query(&format!("SELECT {ITEM_COLUMNS} FROM items WHERE sku = $1"))
            .bind(sku)
            .fetch_optional(&self.pool)
            .await?
            .map_or_else(
                || Err(StoreError::ItemNotFound(sku.to_owned())),
                |row| item(&row),
            )
    }

    /// One reservation.
    pub async fn reservation(&self, reservation_id: &str) -> Result<ReservationRecord, StoreError> {
        let mut connection = self.pool.acquire().await?;
        load_reservation(&mut connection, reservation_id)
            .await?
            .ok_or_else(|| StoreError::ReservationNotFound(reservation_id.to_owned()))
    }

    /// Reserves every line or none, in one transaction, holding the stock
    /// until `expires_at_unix_ms`. A repeat of a known reservation id with
    /// the same items returns the stored reservation (whatever its state)
    /// without reserving again; with other items it is
    /// [`StoreError::ReservationIdReused`].
    pub async fn reserve(
        &self,
        request: &ReservationRequest,
        expires_at_unix_ms: i64,
        now_unix_ms: i64,
    ) -> Result<ReservationRecord, StoreError> {
        let request = request.clone();
        match &self.writer {
            Writer::Sqlite(writer) => {
                writer
                    .write(move |connection| {
                        on_thread::reserve(connection, request, expires_at_unix_ms, now_unix_ms)
                    })
                    .await
            }
            Writer::Pool(writer) => {
                writer
                    .write(move |connection| {
                        Box::pin(reserve_in(
                            connection,
                            request,
                            expires_at_unix_ms,
                            now_unix_ms,
                        ))
                    })
                    .await
            }
        }
    }

    /// RESERVED → RELEASED, its units back to available. Idempotent.
    pub async fn release(
        &self,
        reservation_id: &str,
        now_unix_ms: i64,
    ) -> Result<ReservationRecord, StoreError> {
        self.settle(reservation_id, Move::Release, now_unix_ms)
            .await
    }

    /// RESERVED → COMMITTED, its units leave stock for good (counted as
    /// committed). Idempotent. An expired reservation is released instead,
    /// by the same conditional write (no other Commit can land in between),
    /// and the commit refused ([`StoreError::Expired`]).
    pub async fn commit(
        &self,
        reservation_id: &str,
        now_unix_ms: i64,
    ) -> Result<ReservationRecord, StoreError> {
        self.settle(reservation_id, Move::Commit, now_unix_ms).await
    }

    /// COMMITTED → RESTOCKED, its units back to available. Idempotent.
    pub async fn restock(
        &self,
        reservation_id: &str,
        now_unix_ms: i64,
    ) -> Result<ReservationRecord, StoreError> {
        self.settle(reservation_id, Move::Restock, now_unix_ms)
            .await
    }

    /// Releases up to `limit` RESERVED reservations that expired by
    /// `now_unix_ms`; returns how many it released.
    pub async fn release_expired(&self, now_unix_ms: i64, limit: i64) -> Result<usize, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT reservation_id FROM reservations \
             WHERE state = $1 AND expires_at_unix_ms <= $2 LIMIT $3",
        )
        .bind(State::Reserved.as_str())
        .bind(now_unix_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut released = 0;
        for id in &ids {
            // Conditional on still being RESERVED and expired: a Commit that
            // came first wins, and nothing can commit it after this.
            match self.settle(id, Move::ReleaseExpired, now_unix_ms).await {
                Ok(_) => released += 1,
                Err(StoreError::WrongState { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(released)
    }

    /// Applies `change` to a reservation with its stock, in one transaction
    /// whose first statement is the one conditional state change (so a
    /// concurrent change of the same reservation waits for it, then finds
    /// the state it left). See [`Move`].
    async fn settle(
        &self,
        reservation_id: &str,
        change: Move,
        now_unix_ms: i64,
    ) -> Result<ReservationRecord, StoreError> {
        let id = reservation_id.to_owned();
        let reservation = match &self.writer {
            Writer::Sqlite(writer) => {
                writer
                    .write(move |connection| {
                        on_thread::settle(connection, &id, change, now_unix_ms)
                    })
                    .await?
            }
            Writer::Pool(writer) => {
                writer
                    .write(move |connection| {
                        Box::pin(
                            async move { settle_in(connection, &id, change, now_unix_ms).await },
                        )
                    })
                    .await?
            }
        };
        if change == Move::Commit && reservation.state == State::Released {
            // Expired: released by this very write (committed, so the stock
            // is back); the sale cannot happen.
            return Err(StoreError::Expired(reservation_id.to_owned()));
        }
        Ok(reservation)
    }
}

/// [`Store::reserve`]'s write unit through the pool: every line or none (a
/// failure rolls the unit's savepoint back). [`on_thread::reserve`] is the
/// same unit on SQLite's writer thread.
async fn reserve_in(
    connection: &mut AnyConnection,
    request: ReservationRequest,
    expires_at_unix_ms: i64,
    now_unix_ms: i64,
) -> Result<ReservationRecord, StoreError> {
    let id = &request.reservation_id;

    // First statement a write: claim the id (or find it taken).
    let claimed = sqlx::query(CLAIM)
        .bind(id)
        .bind(State::Reserved.as_str())
        .bind(now_unix_ms)
        .bind(expires_at_unix_ms)
        .execute(&mut *connection)
        .await?
        .rows_affected();
    if claimed == 0 {
        return existing_reservation(connection, &request).await;
    }

    // Take the stock, SKU by SKU in SKU order, each a conditional update.
    let mut taken = Vec::new();
    let mut short = Vec::new();
    for line in by_sku(&request.lines) {
        let row = sqlx::query(TAKE)
            .bind(line.quantity)
            .bind(&line.sku)
            .bind(now_unix_ms)
            .fetch_optional(&mut *connection)
            .await?;
        match row {
            Some(row) => taken.push(Taken {
                sku: line.sku.clone(),
                unit_price_cents: row.try_get("unit_price_cents")?,
                currency: row.try_get("currency")?,
            }),
            None => short.push(line),
        }
    }
    if !short.is_empty() {
        return Err(shortages(connection, &request, &short).await?);
    }
    let priced = Priced::of(&request, &taken)?;

    for (line_no, line) in priced.lines.iter().enumerate() {
        sqlx::query(INSERT_LINE)
            .bind(id)
            .bind(line_no as i64)
            .bind(&line.sku)
            .bind(line.quantity)
            .bind(line.unit_price_cents)
            .execute(&mut *connection)
            .await?;
    }
    sqlx::query(SET_TOTAL)
        .bind(id)
        .bind(priced.total_cents)
        .bind(&priced.currency)
        .execute(&mut *connection)
        .await?;
    Ok(priced.into_record(request.reservation_id, expires_at_unix_ms))
}

/// The lines in SKU order: the order every unit takes item rows in, so two
/// units never lock the same items in opposite orders.
fn by_sku(lines: &[Line]) -> Vec<&Line> {
    let mut by_sku: Vec<&Line> = lines.iter().collect();
    by_sku.sort_by(|a, b| a.sku.cmp(&b.sku));
    by_sku
}

/// One line's stock taken: the item's price and currency as the take found
/// them.
struct Taken {
    sku: String,
    unit_price_cents: i64,
    currency: String,
}

/// A reservation's lines priced from what the takes found, its total and
/// its one currency.
struct Priced {
    lines: Vec<LineRecord>,
    total_cents: i64,
    currency: String,
}

impl Priced {
    /// Prices `request`'s lines (in its order) from `taken` (one per line):
    /// refuses mixed currencies, a currency other than the one asked, and a
    /// total that does not fit.
    fn of(request: &ReservationRequest, taken: &[Taken]) -> Result<Self, StoreError> {
        let currencies: Vec<(String, String)> = taken
            .iter()
            .map(|taken| (taken.sku.clone(), taken.currency.clone()))
            .collect();
        let currency =
            domain::one_currency(&currencies, &request.currency).map_err(StoreError::Currency)?;
        let prices: HashMap<&str, i64> = taken
            .iter()
            .map(|taken| (taken.sku.as_str(), taken.unit_price_cents))
            .collect();
        let lines = request
            .lines
            .iter()
            .map(|line| {
                let unit_price_cents = prices.get(line.sku.as_str()).copied().ok_or_else(|| {
                    StoreError::Inconsistent(format!("no stock was taken for {}", line.sku))
                })?;
                Ok(LineRecord {
                    sku: line.sku.clone(),
                    quantity: line.quantity,
                    unit_price_cents,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let total_cents =
            domain::total_cents(lines.iter().map(|l| (l.quantity, l.unit_price_cents)))
                .ok_or(StoreError::TotalTooLarge)?;
        Ok(Self {
            lines,
            total_cents,
            currency,
        })
    }

    fn into_record(self, reservation_id: String, expires_at_unix_ms: i64) -> ReservationRecord {
        ReservationRecord {
            reservation_id,
            state: State::Reserved,
            lines: self.lines,
            total_cents: self.total_cents,
            currency: self.currency,
            expires_at_unix_ms,
        }
    }
}

/// A Reserve whose id is taken: the stored reservation if it has the same
/// items (whatever its state), else [`StoreError::ReservationIdReused`].
async fn existing_reservation(
    connection: &mut AnyConnection,
    request: &ReservationRequest,
) -> Result<ReservationRecord, StoreError> {
    let existing = load_reservation(&mut *connection, &request.reservation_id).await?;
    replayed(request, existing)
}

/// What a Reserve whose id is taken answers, given the reservation stored
/// under it.
fn replayed(
    request: &ReservationRequest,
    existing: Option<ReservationRecord>,
) -> Result<ReservationRecord, StoreError> {
    let id = &request.reservation_id;
    let existing = existing
        .ok_or_else(|| StoreError::Inconsistent(format!("reservation {id} vanished while read")))?;
    let existing_lines: Vec<Line> = existing
        .lines
        .iter()
        .map(|line| Line {
            sku: line.sku.clone(),
            quantity: line.quantity,
        })
        .collect();
    if domain::same_items(&existing_lines, &request.lines) {
        Ok(existing)
    } else {
        Err(StoreError::ReservationIdReused(id.clone()))
    }
}

/// [`StoreError::Insufficient`] naming every `short` line, in the caller's
/// order, with what its item holds (read in the unit, which then rolls
/// back).
async fn shortages(
    connection: &mut AnyConnection,
    request: &ReservationRequest,
    short: &[&Line],
) -> Result<StoreError, StoreError> {
    let mut shortages = Vec::new();
    for line in short_in_request_order(request, short) {
        let available = sqlx::query(AVAILABLE)
            .bind(&line.sku)
            .fetch_optional(&mut *connection)
            .await?
            .map(|row| row.try_get::<i64, _>("available"))
            .transpose()?;
        shortages.push(Shortage {
            sku: line.sku.clone(),
            asked: line.quantity,
            available,
        });
    }
    Ok(StoreError::Insufficient(shortages))
}

/// The `short` lines in the caller's order (the order a shortage names them in).
fn short_in_request_order<'r>(
    request: &'r ReservationRequest,
    short: &[&Line],
) -> impl Iterator<Item = &'r Line> {
    let short: Vec<String> = short.iter().map(|line| line.sku.clone()).collect();
    request
        .lines
        .iter()
        .filter(move |line| short.contains(&line.sku))
}

/// [`Store::settle`]'s write unit through the pool: the reservation as this
/// change left it (a failure rolls the unit's savepoint back).
/// [`on_thread::settle`] is the same unit on SQLite's writer thread.
async fn settle_in(
    connection: &mut AnyConnection,
    reservation_id: &str,
    change: Move,
    now_unix_ms: i64,
) -> Result<ReservationRecord, StoreError> {
    // The moved row comes back from the write itself (no second read).
    let moved = sqlx::query(change.sql())
        .bind(reservation_id)
        .bind(now_unix_ms)
        .fetch_optional(&mut *connection)
        .await?;

    let Some(moved) = moved else {
        return unmoved(connection, reservation_id, change).await;
    };
    let reservation = reservation_from_row(&mut *connection, reservation_id, &moved).await?;
    let statement = items_move_sql(reservation.state);
    for line in lines_by_sku(&reservation.lines) {
        let updated = sqlx::query(statement)
            .bind(line.quantity)
            .bind(&line.sku)
            .bind(now_unix_ms)
            .execute(&mut *connection)
            .await?
            .rows_affected();
        if updated != 1 {
            return Err(units_missing(line, reservation_id));
        }
    }
    Ok(reservation)
}

/// The statement that moves a settled line's units between an item's
/// counts, for the state the reservation moved to (`$1` quantity, `$2` SKU,
/// `$3` now): Release puts the units back on the shelf, Commit sells them,
/// Restock returns sold units to the shelf.
fn items_move_sql(target: State) -> &'static str {
    match target {
        State::Released => {
            "UPDATE items SET reserved = reserved - $1, available = available + $1, \
                updated_at_unix_ms = $3 \
             WHERE sku = $2 AND reserved >= $1"
        }
        State::Restocked => {
            "UPDATE items SET committed = committed - $1, available = available + $1, \
                updated_at_unix_ms = $3 \
             WHERE sku = $2 AND committed >= $1"
        }
        _ => {
            "UPDATE items SET reserved = reserved - $1, committed = committed + $1, \
                updated_at_unix_ms = $3 \
             WHERE sku = $2 AND reserved >= $1"
        }
    }
}

/// A reservation's lines in SKU order (the order units take item rows in).
fn lines_by_sku(lines: &[LineRecord]) -> Vec<&LineRecord> {
    let mut by_sku: Vec<&LineRecord> = lines.iter().collect();
    by_sku.sort_by(|a, b| a.sku.cmp(&b.sku));
    by_sku
}

/// A settle found `line`'s item holding fewer reserved (or sold) units than
/// the line: the unit fails and rolls back.
fn units_missing(line: &LineRecord, reservation_id: &str) -> StoreError {
    StoreError::Inconsistent(format!(
        "{} holds fewer reserved or sold units than reservation {reservation_id} ({})",
        line.sku, line.quantity
    ))
}

/// A settle whose conditional write moved nothing: the reservation as it
/// is if the change was already made, else why it cannot be made.
async fn unmoved(
    connection: &mut AnyConnection,
    reservation_id: &str,
    change: Move,
) -> Result<ReservationRecord, StoreError> {
    let found = load_reservation(&mut *connection, reservation_id).await?;
    change.unmoved(reservation_id, found)
}

impl Move {
    /// What a settle whose conditional write moved nothing answers, given
    /// the reservation as it is (`found`): it if the change was already
    /// made, else why the change cannot be made.
    fn unmoved(
        self,
        reservation_id: &str,
        found: Option<ReservationRecord>,
    ) -> Result<ReservationRecord, StoreError> {
        let Some(reservation) = found else {
            return Err(StoreError::ReservationNotFound(reservation_id.to_owned()));
        };
        match self.transition(reservation.state) {
            Transition::AlreadyDone => Ok(reservation),
            Transition::Refuse => Err(StoreError::WrongState {
                reservation_id: reservation_id.to_owned(),
                state: reservation.state,
            }),
            // Still RESERVED and not moved: the sweeper found it not expired
            // (any other move of a RESERVED one always applies).
            Transition::Apply => Err(StoreError::WrongState {
                reservation_id: reservation_id.to_owned(),
                state: reservation.state,
            }),
        }
    }
}

/// A change of a reservation's state, each one conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Move {
    /// RESERVED → RELEASED (Release).
    Release,
    /// RESERVED → COMMITTED if unexpired at `now`, else → RELEASED (Commit:
    /// expiry and release are one write, so no Commit lands between them).
    Commit,
    /// COMMITTED → RESTOCKED (Restock).
    Restock,
    /// RESERVED and expired at `now` → RELEASED (the sweeper).
    ReleaseExpired,
}

impl Move {
    /// The new `state`, as SQL (`$2` is now).
    fn new_state_sql(self) -> &'static str {
        match self {
            Move::Release | Move::ReleaseExpired => "'RELEASED'",
            Move::Commit => {
                "CASE WHEN expires_at_unix_ms > $2 THEN 'COMMITTED' ELSE 'RELEASED' END"
            }
            Move::Restock => "'RESTOCKED'",
        }
    }

    /// Which rows it applies to, as SQL (`$2` is now).
    fn condition_sql(self) -> &'static str {
        match self {
            Move::Release | Move::Commit => "state = 'RESERVED'",
            Move::ReleaseExpired => "state = 'RESERVED' AND expires_at_unix_ms <= $2",
            Move::Restock => "state = 'COMMITTED'",
        }
    }

    /// The conditional state change, returning the moved reservation's
    /// [`RESERVATION_COLUMNS`] (`$1` the reservation, `$2` now).
    fn sql(self) -> &'static str {
        static SQL: [std::sync::OnceLock<String>; 4] = [const { std::sync::OnceLock::new() }; 4];
        let index = match self {
            Move::Release => 0,
            Move::Commit => 1,
            Move::Restock => 2,
            Move::ReleaseExpired => 3,
        };
        SQL[index].get_or_init(|| {
            format!(
                "UPDATE reservations SET state = {}, updated_at_unix_ms = $2 \
                 WHERE reservation_id = $1 AND {} RETURNING {RESERVATION_COLUMNS}",
                self.new_state_sql(),
                self.condition_sql()
            )
        })
    }

    /// What it does to a reservation it did not move.
    fn transition(self, state: State) -> Transition {
        match self {
            Move::Release | Move::ReleaseExpired => state.on_release(),
            Move::Commit => state.on_commit(),
            Move::Restock => state.on_restock(),
        }
    }
}

/// The columns [`reservation_from_row`] reads.
const RESERVATION_COLUMNS: &str = "state, total_cents, currency, expires_at_unix_ms";

/// A reservation's [`RESERVATION_COLUMNS`] (`$1` its id).
const RESERVATION_OF: &str =
    "SELECT state, total_cents, currency, expires_at_unix_ms FROM reservations WHERE reservation_id = $1";

async fn load_reservation(
    connection: &mut AnyConnection,
    reservation_id: &str,
) -> Result<Option<ReservationRecord>, StoreError> {
    let Some(row) = sqlx::query(RESERVATION_OF)
        .bind(reservation_id)
        .fetch_optional(&mut *connection)
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(
        reservation_from_row(connection, reservation_id, &row).await?,
    ))
}

/// The reservation whose [`RESERVATION_COLUMNS`] are `row`, with its lines
/// (read on `connection`).
async fn reservation_from_row(
    connection: &mut AnyConnection,
    reservation_id: &str,
    row: &AnyRow,
) -> Result<ReservationRecord, StoreError> {
    let lines = sqlx::query(LINES_OF)
        .bind(reservation_id)
        .fetch_all(&mut *connection)
        .await?
        .iter()
        .map(line_record)
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    reservation_with(reservation_id, row, lines)
}

/// A reservation's lines in their order (`$1` its id), as [`line_record`]
/// reads them.
const LINES_OF: &str = "SELECT sku, quantity, unit_price_cents FROM reservation_lines \
     WHERE reservation_id = $1 ORDER BY line_no";

fn line_record(row: &AnyRow) -> Result<LineRecord, sqlx::Error> {
    Ok(LineRecord {
        sku: row.try_get("sku")?,
        quantity: row.try_get("quantity")?,
        unit_price_cents: row.try_get("unit_price_cents")?,
    })
}

/// The reservation whose [`RESERVATION_COLUMNS`] are `row` and whose lines
/// are `lines`.
fn reservation_with(
    reservation_id: &str,
    row: &AnyRow,
    lines: Vec<LineRecord>,
) -> Result<ReservationRecord, StoreError> {
    ReservationHead {
        state: row.try_get("state")?,
        total_cents: row.try_get("total_cents")?,
        currency: row.try_get("currency")?,
        expires_at_unix_ms: row.try_get("expires_at_unix_ms")?,
    }
    .with_lines(reservation_id, lines)
}

/// A reservation's [`RESERVATION_COLUMNS`] as read.
struct ReservationHead {
    state: String,
    total_cents: i64,
    currency: String,
    expires_at_unix_ms: i64,
}

impl ReservationHead {
    /// The reservation with its `lines`, its state checked.
    fn with_lines(
        self,
        reservation_id: &str,
        lines: Vec<LineRecord>,
    ) -> Result<ReservationRecord, StoreError> {
        let state = State::parse(&self.state).ok_or_else(|| {
            StoreError::Inconsistent(format!(
                "reservation {reservation_id} has the unknown state {:?}",
                self.state
            ))
        })?;
        Ok(ReservationRecord {
            reservation_id: reservation_id.to_owned(),
            state,
            lines,
            total_cents: self.total_cents,
            currency: self.currency,
            expires_at_unix_ms: self.expires_at_unix_ms,
        })
    }
}

fn item(row: &AnyRow) -> Result<ItemRecord, StoreError> {
    Ok(ItemRecord {
        sku: row.try_get("sku")?,
        available: row.try_get("available")?,
        reserved: row.try_get("reserved")?,
        unit_price_cents: row.try_get("unit_price_cents")?,
        committed: row.try_get("committed")?,
        currency: row.try_get("currency")?,
    })
}

const ITEM_COLUMNS: &str = "sku, available, reserved, unit_price_cents, committed, currency";

/// AddStock's upsert: $1 SKU, $2 units, $3 price, $4 now, $5 the most units
/// the item may hold before it, $6 currency; the item comes back unless the
/// limit or a currency change with units held refuses it.
const ADD_STOCK: &str = "INSERT INTO items (sku, available, reserved, unit_price_cents, updated_at_unix_ms, committed, currency) \
     VALUES ($1, $2, 0, $3, $4, 0, $6) \
     ON CONFLICT (sku) DO UPDATE SET \
        available = items.available + excluded.available, \
        unit_price_cents = excluded.unit_price_cents, \
        currency = excluded.currency, \
        updated_at_unix_ms = excluded.updated_at_unix_ms \
     WHERE items.available + items.reserved <= $5 \
       AND (items.currency = excluded.currency OR items.reserved = 0) \
     RETURNING sku, available, reserved, unit_price_cents, committed, currency";

/// Reserve's claim of its id: $1 id, $2 RESERVED, $3 now, $4 expiry.
const CLAIM: &str = "INSERT INTO reservations \
        (reservation_id, state, total_cents, created_at_unix_ms, updated_at_unix_ms, currency, expires_at_unix_ms) \
     VALUES ($1, $2, 0, $3, $3, '', $4) \
     ON CONFLICT (reservation_id) DO NOTHING";

/// One line's take: $1 units of SKU $2 at $3 now, the item's price back.
const TAKE: &str = "UPDATE items SET available = available - $1, reserved = reserved + $1, \
        updated_at_unix_ms = $3 \
     WHERE sku = $2 AND available >= $1 \
     RETURNING unit_price_cents, currency";

/// One reservation line: $1 id, $2 line number, $3 SKU, $4 units, $5 price.
const INSERT_LINE: &str = "INSERT INTO reservation_lines \
        (reservation_id, line_no, sku, quantity, unit_price_cents) \
     VALUES ($1, $2, $3, $4, $5)";

/// A claimed reservation's total: $1 id, $2 total, $3 currency.
const SET_TOTAL: &str =
    "UPDATE reservations SET total_cents = $2, currency = $3 WHERE reservation_id = $1";

/// What an item holds: $1 its SKU.
const AVAILABLE: &str = "SELECT available FROM items WHERE sku = $1";

#[cfg(test)]
mod tests {
    use super::*;

    /// An expiry no test reaches.
    const NEVER: i64 = i64::MAX;

    async fn open(dir: &std::path::Path) -> Store {
        let pool = mesh::storage::open("inventory", None, dir, &crate::MIGRATOR)
            .await
            .expect("open the inventory database");
        Store::new(pool).expect("start the inventory writer")
    }

    async fn stock(store: &Store, sku: &str, quantity: i64, price: i64) -> ItemRecord {
        store
            .add_stock(
                &StockAddition {
                    sku: sku.into(),
                    quantity,
                    unit_price_cents: price,
                    currency: "EUR".into(),
                },
                1,
            )
            .await
            .unwrap()
    }

    fn request(id: &str, lines: &[(&str, i64)]) -> ReservationRequest {
        ReservationRequest {
            reservation_id: id.into(),
            lines: lines
                .iter()
                .map(|(sku, quantity)| Line {
                    sku: (*sku).into(),
                    quantity: *quantity,
                })
                .collect(),
            ttl_ms: 0,
            currency: String::new(),
        }
    }

    fn levels(item: &ItemRecord) -> (i64, i64) {
        (item.available, item.reserved)
    }

    #[tokio::test]
    async fn add_stock_upserts_adds_units_and_sets_the_price() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let first = stock(&store, "W-1", 5, 100).await;
        assert_eq!(
            first,
            ItemRecord {
                sku: "W-1".into(),
                available: 5,
                reserved: 0,
                unit_price_cents: 100,
                committed: 0,
                currency: "EUR".into(),
            }
        );
        let second = stock(&store, "W-1", 3, 120).await;
        assert_eq!((second.available, second.unit_price_cents), (8, 120));
        assert_eq!(store.item("W-1").await.unwrap(), second);
        assert!(matches!(
            store.item("NOPE").await,
            Err(StoreError::ItemNotFound(sku)) if sku == "NOPE"
        ));
    }

    #[tokio::test]
    async fn add_stock_refuses_to_hold_more_than_the_maximum() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        stock(&store, "BIG", domain::MAX_STOCK, 1).await;
        let refused = store
            .add_stock(
                &StockAddition {
                    sku: "BIG".into(),
                    quantity: 1,
                    unit_price_cents: 1,
                    currency: "EUR".into(),
                },
                2,
            )
            .await;
        assert!(
            matches!(refused, Err(StoreError::StockLimit { .. })),
            "{refused:?}"
        );
        assert_eq!(
            store.item("BIG").await.unwrap().available,
            domain::MAX_STOCK
        );
    }

    #[tokio::test]
    async fn reserve_takes_every_line_with_its_price_and_total() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        stock(&store, "A", 10, 250).await;
        stock(&store, "B", 4, 1000).await;
        let reservation = store
            .reserve(&request("r1", &[("B", 1), ("A", 3)]), NEVER, 2)
            .await
            .unwrap();
        assert_eq!(reservation.state, State::Reserved);
        assert_eq!(reservation.total_cents, 3 * 250 + 1000);
        assert_eq!(
            reservation.lines,
            vec![
                LineRecord {
                    sku: "B".into(),
                    quantity: 1,
                    unit_price_cents: 1000
                },
                LineRecord {
                    sku: "A".into(),
                    quantity: 3,
                    unit_price_cents: 250
                },
            ]
        );
        assert_eq!(levels(&store.item("A").await.unwrap()), (7, 3));
        assert_eq!(levels(&store.item("B").await.unwrap()), (3, 1));
        assert_eq!(store.reservation("r1").await.unwrap(), reservation);

        // The price is captured: a later price change does not alter it.
        stock(&store, "A", 1, 999).await;
        assert_eq!(store.reservation("r1").await.unwrap().total_cents, 1750);
    }

    #[tokio::test]
    async fn a_short_line_reserves_nothing_and_every_short_sku_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        stock(&store, "OK-1", 10, 1).await;
        stock(&store, "WIDGET-1", 2, 1).await;
        let refused = store
            .reserve(
                &request("r1", &[("WIDGET-1", 5), ("OK-1", 4), ("GADGET-9", 1)]),
                0,
                2,
            )
            .await;
        match refused {
            Err(error @ StoreError::Insufficient(_)) => assert_eq!(
                error.to_string(),
                "insufficient stock: WIDGET-1 (asked 5, available 2); GADGET-9 (unknown sku)"
            ),
            other => panic!("expected Insufficient, got {other:?}"),
        }
        assert_eq!(levels(&store.item("OK-1").await.unwrap()), (10, 0));
        assert_eq!(levels(&store.item("WIDGET-1").await.unwrap()), (2, 0));
        assert!(matches!(
            store.reservation("r1").await,
            Err(StoreError::ReservationNotFound(_))
        ));
        // The id was not burnt: once stock arrives the same request succeeds.
        stock(&store, "WIDGET-1", 3, 1).await;
        stock(&store, "GADGET-9", 1, 1).await;
        let reservation = store
            .reserve(
                &request("r1", &[("WIDGET-1", 5), ("OK-1", 4), ("GADGET-9", 1)]),
                0,
                3,
            )
            .await
            .unwrap();
        assert_eq!(reservation.total_cents, 10);
    }

    #[tokio::test]
    async fn reserve_is_idempotent_on_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        stock(&store, "A", 10, 5).await;
        stock(&store, "B", 10, 5).await;
        let first = store
            .reserve(&request("r1", &[("A", 2), ("B", 1)]), NEVER, 2)
            .await
            .unwrap();
        // Same items, any order: the same reservation, nothing reserved twice.
        let again = store
            .reserve(&request("r1", &[("B", 1), ("A", 2)]), NEVER, 3)
            .await
            .unwrap();
        assert_eq!(again, first);
        assert_eq!(levels(&store.item("A").await.unwrap()), (8, 2));
        // Different items: refused, nothing changes.
        let reused = store.reserve(&request("r1", &[("A", 3)]), NEVER, 4).await;
        match reused {
            Err(error @ StoreError::ReservationIdReused(_)) => assert_eq!(
                error.to_string(),
                "reservation_id r1 was already used with different items"
            ),
            other => panic!("expected ReservationIdReused, got {other:?}"),
        }
        assert_eq!(levels(&store.item("A").await.unwrap()), (8, 2));
        // Whatever its state: after release, a repeat answers RELEASED and takes nothing.
        store.release("r1", 5).await.unwrap();
        let after_release = store
            .reserve(&request("r1", &[("A", 2), ("B", 1)]), NEVER, 6)
            .await
            .unwrap();
        assert_eq!(after_release.state, State::Released);
        assert_eq!(levels(&store.item("A").await.unwrap()), (10, 0));
    }

    #[tokio::test]
    async fn release_returns_stock_and_is_idempotent_but_not_after_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        stock(&store, "A", 10, 5).await;
        store
            .reserve(&request("r1", &[("A", 4)]), NEVER, 2)
            .await
            .unwrap();
        let released = store.release("r1", 3).await.unwrap();
        assert_eq!(released.state, State::Released);
        assert_eq!(levels(&store.item("A").await.unwrap()), (10, 0));
        let again = store.release("r1", 4).await.unwrap();
        assert_eq!(again, released);
        assert_eq!(levels(&store.item("A").await.unwrap()), (10, 0));
        // A released reservation cannot be committed.
        match store.commit("r1", 5).await {
            Err(error @ StoreError::WrongState { .. }) => {
                assert_eq!(error.to_string(), "reservation r1 is already released")
            }
            other => panic!("expected WrongState, got {other:?}"),
        }
        assert!(matches!(
            store.release("nope", 6).await,
            Err(StoreError::ReservationNotFound(id)) if id == "nope"
        ));
    }

    #[tokio::test]
    async fn commit_sells_the_units_and_is_idempotent_but_not_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        stock(&store, "A", 10, 5).await;
        store
            .reserve(&request("r2", &[("A", 4)]), NEVER, 2)
            .await
            .unwrap();
        let committed = store.commit("r2", 3).await.unwrap();
        assert_eq!(committed.state, State::Committed);
        assert_eq!(committed.total_cents, 20);
        assert_eq!(levels(&store.item("A").await.unwrap()), (6, 0));
        assert_eq!(store.commit("r2", 4).await.unwrap(), committed);
        assert_eq!(levels(&store.item("A").await.unwrap()), (6, 0));
        match store.release("r2", 5).await {
            Err(error @ StoreError::WrongState { .. }) => {
                assert_eq!(error.to_string(), "reservation r2 is already committed")
            }
            other => panic!("expected WrongState, got {other:?}"),
        }
        assert_eq!(levels(&store.item("A").await.unwrap()), (6, 0));
        assert!(matches!(
            store.commit("nope", 6).await,
            Err(StoreError::ReservationNotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_settle_that_moves_nothing_leaves_other_reservations_units_alone() {
        // Two reservations hold units of the same items: a repeated or
        // refused settle of one must not move the other's units (SQLite's
        // folded settle moves items only when its state change applied).
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        stock(&store, "A", 20, 5).await;
        stock(&store, "B", 20, 7).await;
        let both = [("A", 2), ("B", 3)];
        store
            .reserve(&request("mine", &both), NEVER, 1)
            .await
            .unwrap();
        store
            .reserve(&request("other", &both), NEVER, 1)
            .await
            .unwrap();
        let committed = store.commit("mine", 2).await.unwrap();
        assert_eq!(committed.lines.len(), 2);
        let held = |store: Store| async move {
            let a = store.item("A").await.unwrap();
            let b = store.item("B").await.unwrap();
            (
                (a.available, a.reserved, a.committed),
                (b.available, b.reserved, b.committed),
            )
        };
        let expected = ((16, 2, 2), (14, 3, 3));
        assert_eq!(held(store.clone()).await, expected);

        assert_eq!(store.commit("mine", 3).await.unwrap(), committed);
        assert!(matches!(
            store.release("mine", 4).await,
            Err(StoreError::WrongState { .. })
        ));
        assert_eq!(
            store.release_expired(5, 10).await.unwrap(),
            0,
            "nothing has expired"
        );
        assert_eq!(held(store.clone()).await, expected);

        let restocked = store.restock("mine", 6).await.unwrap();
        assert_eq!(restocked.state, State::Restocked);
        assert_eq!(store.restock("mine", 7).await.unwrap(), restocked);
        let restocked_levels = ((18, 2, 0), (17, 3, 0));
        assert_eq!(held(store.clone()).await, restocked_levels);
        store.commit("other", 8).await.unwrap();
        assert_eq!(held(store.clone()).await, ((18, 0, 2), (17, 0, 3)));
    }

    #[tokio::test]
    async fn a_commit_of_units_the_items_do_not_hold_changes_nothing_and_names_the_sku() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        stock(&store, "A", 10, 5).await;
        stock(&store, "B", 10, 7).await;
        store
            .reserve(&request("r3", &[("B", 2), ("A", 4)]), NEVER, 2)
            .await
            .unwrap();
        // Damage the books behind the store's back: B no longer holds the
        // two reserved units.
        sqlx::query("UPDATE items SET reserved = 1 WHERE sku = 'B'")
            .execute(&store.pool)
            .await
            .unwrap();
        match store.commit("r3", 3).await {
            Err(StoreError::Inconsistent(detail)) => assert!(
                detail.starts_with("B holds fewer reserved or sold units than reservation r3"),
                "{detail}"
            ),
            other => panic!("expected Inconsistent, got {other:?}"),
        }
        assert_eq!(
            store.reservation("r3").await.unwrap().state,
            State::Reserved,
            "the state change was rolled back with the stock's"
        );
        assert_eq!(levels(&store.item("A").await.unwrap()), (6, 4));
    }

    #[tokio::test]
    async fn expiry_is_decided_by_the_same_write_as_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        stock(&store, "A", 10, 5).await;
        store
            .reserve(&request("late", &[("A", 4)]), 100, 50)
            .await
            .unwrap();
        // At the expiry instant: released by the Commit itself, and refused.
        assert!(matches!(
            store.commit("late", 100).await,
            Err(StoreError::Expired(_))
        ));
        assert_eq!(
            store.reservation("late").await.unwrap().state,
            State::Released
        );
        assert_eq!(levels(&store.item("A").await.unwrap()), (10, 0));
        // A later Commit (even one whose clock says it is early) finds it released.
        assert!(matches!(
            store.commit("late", 99).await,
            Err(StoreError::WrongState {
                state: State::Released,
                ..
            })
        ));

        store
            .reserve(&request("early", &[("A", 4)]), 100, 50)
            .await
            .unwrap();
        assert_eq!(
            store.commit("early", 99).await.unwrap().state,
            State::Committed
        );
        // Committed before its expiry: a late repeat still answers COMMITTED,
        // and the sweeper leaves it alone.
        assert_eq!(
            store.commit("early", 200).await.unwrap().state,
            State::Committed
        );
        assert_eq!(store.release_expired(200, 10).await.unwrap(), 0);
        let item = store.item("A").await.unwrap();
        assert_eq!((item.available, item.reserved, item.committed), (6, 0, 4));
    }

    #[tokio::test]
    async fn the_sweeper_releases_only_expired_reservations() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        stock(&store, "A", 10, 5).await;
        for (id, expires_at) in [("r1", 100), ("r2", 200)] {
            store
                .reserve(&request(id, &[("A", 1)]), expires_at, 50)
                .await
                .unwrap();
        }
        assert_eq!(store.release_expired(150, 10).await.unwrap(), 1);
        assert_eq!(
            store.reservation("r1").await.unwrap().state,
            State::Released
        );
        assert_eq!(
            store.reservation("r2").await.unwrap().state,
            State::Reserved
        );
        assert_eq!(levels(&store.item("A").await.unwrap()), (9, 1));
    }

    #[tokio::test]
    async fn an_overflowing_total_reserves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        stock(
            &store,
            "GOLD",
            domain::MAX_STOCK,
            domain::MAX_UNIT_PRICE_CENTS,
        )
        .await;
        let refused = store
            .reserve(&request("r1", &[("GOLD", domain::MAX_STOCK)]), NEVER, 2)
            .await;
        assert!(
            matches!(refused, Err(StoreError::TotalTooLarge)),
            "{refused:?}"
        );
        assert_eq!(
            levels(&store.item("GOLD").await.unwrap()),
            (domain::MAX_STOCK, 0)
        );
        assert!(store.reservation("r1").await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_pools_on_one_file_never_oversell() {
        // Two service instances: two pools on the same SQLite file.
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path()).await;
        let second = open(dir.path()).await;
        stock(&first, "LAST", 10, 7).await;
        let attempts: Vec<_> = (0..20)
            .map(|i| {
                let store = if i % 2 == 0 {
                    first.clone()
                } else {
                    second.clone()
                };
                tokio::spawn(async move {
                    store
                        .reserve(&request(&format!("r{i}"), &[("LAST", 1)]), NEVER, 2)
                        .await
                })
            })
            .collect();
        let (mut won, mut short) = (0, 0);
        for attempt in attempts {
            match attempt.await.unwrap() {
                Ok(_) => won += 1,
                Err(StoreError::Insufficient(_)) => short += 1,
                Err(other) => panic!("unexpected error {other:?}"),
            }
        }
        assert_eq!((won, short), (10, 10));
        assert_eq!(levels(&first.item("LAST").await.unwrap()), (0, 10));
    }
}
