//! The tonic service: validate (domain), act (store), answer. Store errors
//! become gRPC statuses in one place, [`impl From<StoreError> for Status`](StoreError).

use mesh::proto::inventory::v1::{
    inventory_server::Inventory, AddStockRequest, CommitRequest, GetItemRequest,
    GetReservationRequest, Item, ReleaseRequest, Reservation, ReserveRequest, ReservedLine,
    RestockRequest,
};
use tonic::{Request, Response, Status};

use crate::{
    domain,
    store::{ItemRecord, ReservationRecord, Store, StoreError},
};

/// How long reservations may hold stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl {
    /// For a Reserve that asks for none (ttl_ms = 0).
    pub default_ms: i64,
    /// The most a Reserve may ask for; longer asks are cut to it.
    pub max_ms: i64,
}

impl Ttl {
    /// The expiry of a reservation asked with `ttl_ms` at `now_unix_ms`.
    pub fn expires_at(self, ttl_ms: i64, now_unix_ms: i64) -> i64 {
        let ttl = if ttl_ms == 0 { self.default_ms } else { ttl_ms };
        now_unix_ms.saturating_add(ttl.clamp(1, self.max_ms.max(1)))
    }
}

/// The `mesh.inventory.v1.Inventory` implementation.
#[derive(Debug, Clone)]
pub struct InventoryService {
    store: Store,
    ttl: Ttl,
}

impl InventoryService {
    /// Serves from `store`, reservations holding stock as `ttl` says.
    pub fn new(store: Store, ttl: Ttl) -> Self {
        Self { store, ttl }
    }
}

#[tonic::async_trait]
impl Inventory for InventoryService {
    async fn add_stock(&self, request: Request<AddStockRequest>) -> Result<Response<Item>, Status> {
        let addition = domain::validate_add_stock(request.get_ref())?;
        let item = self
            .store
            .add_stock(&addition, mesh::storage::now_unix_ms())
            .await?;
        tracing::info!(sku = %item.sku, added = addition.quantity, available = item.available, "stock added");
        Ok(Response::new(item_to_proto(item)))
    }

    async fn get_item(&self, request: Request<GetItemRequest>) -> Result<Response<Item>, Status> {
        let sku = domain::validate_get_item(request.get_ref())?;
        let item = self.store.item(&sku).await?;
        Ok(Response::new(item_to_proto(item)))
    }

    async fn reserve(
        &self,
        request: Request<ReserveRequest>,
    ) -> Result<Response<Reservation>, Status> {
        let reservation = domain::validate_reserve(request.get_ref())?;
        let now = mesh::storage::now_unix_ms();
        let stored = self
            .store
            .reserve(
                &reservation,
                self.ttl.expires_at(reservation.ttl_ms, now),
                now,
            )
            .await?;
        tracing::debug!(reservation_id = %stored.reservation_id, state = stored.state.as_str(), "reserve");
        Ok(Response::new(reservation_to_proto(stored)))
    }

    async fn release(
        &self,
        request: Request<ReleaseRequest>,
    ) -> Result<Response<Reservation>, Status> {
        let reservation_id = domain::validate_release(request.get_ref())?;
        let stored = self
            .store
            .release(&reservation_id, mesh::storage::now_unix_ms())
            .await?;
        tracing::info!(%reservation_id, "release");
        Ok(Response::new(reservation_to_proto(stored)))
    }

    async fn commit(
        &self,
        request: Request<CommitRequest>,
    ) -> Result<Response<Reservation>, Status> {
        let reservation_id = domain::validate_commit(request.get_ref())?;
        let stored = self
            .store
            .commit(&reservation_id, mesh::storage::now_unix_ms())
            .await?;
        tracing::debug!(%reservation_id, "commit");
        Ok(Response::new(reservation_to_proto(stored)))
    }

    async fn restock(
        &self,
        request: Request<RestockRequest>,
    ) -> Result<Response<Reservation>, Status> {
        let reservation_id = domain::validate_restock(request.get_ref())?;
        let stored = self
            .store
            .restock(&reservation_id, mesh::storage::now_unix_ms())
            .await?;
        tracing::info!(%reservation_id, "restock");
        Ok(Response::new(reservation_to_proto(stored)))
    }

    async fn get_reservation(
        &self,
        request: Request<GetReservationRequest>,
    ) -> Result<Response<Reservation>, Status> {
        let reservation_id = domain::validate_get_reservation(request.get_ref())?;
        let stored = self.store.reservation(&reservation_id).await?;
        Ok(Response::new(reservation_to_proto(stored)))
    }
}

fn item_to_proto(item: ItemRecord) -> Item {
    Item {
        sku: item.sku,
        available: item.available,
        reserved: item.reserved,
        unit_price_cents: item.unit_price_cents,
        committed: item.committed,
        currency: item.currency,
    }
}

fn reservation_to_proto(reservation: ReservationRecord) -> Reservation {
    Reservation {
        reservation_id: reservation.reservation_id,
        state: reservation.state.to_proto().into(),
        items: reservation
            .lines
            .into_iter()
            .map(|line| ReservedLine {
                sku: line.sku,
                quantity: line.quantity,
                unit_price_cents: line.unit_price_cents,
            })
            .collect(),
        total_cents: reservation.total_cents,
        currency: reservation.currency,
        expires_at_unix_ms: reservation.expires_at_unix_ms,
    }
}

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Self {
        let message = error.to_string();
        match error {
            StoreError::ItemNotFound(_) => Status::not_found(message),
            StoreError::ReservationNotFound(_) => Status::not_found(message),
            // The same facts for programs: PreconditionFailure violations.
            StoreError::Insufficient(shortages) => {
                domain::shortage_problems(&shortages).into_status()
            }
            StoreError::ReservationIdReused(_)
            | StoreError::TotalTooLarge
            | StoreError::Currency(_) => Status::invalid_argument(message),
            StoreError::WrongState { .. }
            | StoreError::StockLimit { .. }
            | StoreError::CurrencyChange { .. }
            | StoreError::Expired(_) => Status::failed_precondition(message),
            StoreError::Inconsistent(_) => {
                tracing::error!(error = %message, "inventory data inconsistent");
                Status::internal("the inventory data is inconsistent; the error was logged")
            }
            StoreError::Database(error) if mesh::storage::is_transient(&error) => {
                tracing::warn!(%error, "inventory database busy or unreachable");
                Status::unavailable("the inventory database is busy or unreachable; try again")
            }
            StoreError::Write(error) if error.is_transient() => {
                tracing::warn!(%error, "inventory write not committed");
                Status::unavailable("the inventory database is busy or unreachable; try again")
            }
            StoreError::Database(_) | StoreError::Sqlite(_) | StoreError::Write(_) => {
                // The cause goes to the log only: SQL text is not for callers.
                tracing::error!(%error, "inventory database error");
                Status::internal("the inventory database failed; the error was logged")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic_types::StatusExt;

    use super::*;
    use crate::domain::{Shortage, State};

    #[test]
    fn store_errors_map_to_codes_with_readable_messages() {
        let cases = [
            (
                StoreError::ItemNotFound("W-1".into()),
                Code::NotFound,
                "sku W-1 not found",
            ),
            (
                StoreError::ReservationNotFound("r1".into()),
                Code::NotFound,
                "reservation r1 not found",
            ),
            (
                StoreError::ReservationIdReused("r1".into()),
                Code::InvalidArgument,
                "reservation_id r1 was already used with different items",
            ),
            (
                StoreError::WrongState {
                    reservation_id: "r1".into(),
                    state: State::Committed,
                },
                Code::FailedPrecondition,
                "reservation r1 is already committed",
            ),
            (
                StoreError::WrongState {
                    reservation_id: "r1".into(),
                    state: State::Released,
                },
                Code::FailedPrecondition,
                "reservation r1 is already released",
            ),
            (
                StoreError::Expired("r1".into()),
                Code::FailedPrecondition,
                "reservation r1 expired before it was committed; its stock was released",
            ),
            (
                StoreError::Database(sqlx::Error::PoolTimedOut),
                Code::Unavailable,
                "the inventory database is busy or unreachable; try again",
            ),
            (
                StoreError::Database(sqlx::Error::Protocol("UPDATE items SET".into())),
                Code::Internal,
                "the inventory database failed; the error was logged",
            ),
            (
                StoreError::Write(mesh::storage::WriteError::QueueFull {
                    database: "inventory".into(),
                    capacity: 1024,
                }),
                Code::Unavailable,
                "the inventory database is busy or unreachable; try again",
            ),
            (
                StoreError::Write(mesh::storage::WriteError::Panicked {
                    database: "inventory".into(),
                }),
                Code::Internal,
                "the inventory database failed; the error was logged",
            ),
        ];
        for (error, code, message) in cases {
            let status = Status::from(error);
            assert_eq!((status.code(), status.message()), (code, message));
        }
    }

    /// Hardening finding 1: 100 unknown 64-character SKUs made an answer of
    /// ~24 KB of trailers; it is bounded now, the rest counted.
    #[test]
    fn a_hundred_long_unknown_skus_make_a_bounded_status() {
        let shortages: Vec<Shortage> = (0..100)
            .map(|i| Shortage {
                sku: format!("{i:03}-{}", "U".repeat(60)),
                asked: 1,
                available: None,
            })
            .collect();
        let status = Status::from(StoreError::Insufficient(shortages));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().len() <= mesh::limits::MAX_STATUS_MESSAGE_BYTES);
        assert!(status.details().len() <= mesh::limits::MAX_STATUS_DETAILS_BYTES);
        assert!(
            status
                .message()
                .ends_with("; (stopped after 20 problems, at least 80 more)"),
            "{}",
            status.message()
        );
        let failure = status.get_details_precondition_failure().expect("details");
        assert_eq!(failure.violations.len(), 20);
    }

    #[test]
    fn shortages_carry_precondition_failure_details() {
        let status = Status::from(StoreError::Insufficient(vec![
            Shortage {
                sku: "WIDGET-1".into(),
                asked: 5,
                available: Some(2),
            },
            Shortage {
                sku: "GADGET-9".into(),
                asked: 1,
                available: None,
            },
        ]));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.message(),
            "insufficient stock: WIDGET-1 (asked 5, available 2); GADGET-9 (unknown sku)"
        );
        let failure = status.get_details_precondition_failure().expect("details");
        let subjects: Vec<_> = failure
            .violations
            .iter()
            .map(|v| (v.r#type.as_str(), v.subject.as_str()))
            .collect();
        assert_eq!(
            subjects,
            vec![
                ("INSUFFICIENT_STOCK", "WIDGET-1"),
                ("UNKNOWN_SKU", "GADGET-9")
            ]
        );
    }
}
