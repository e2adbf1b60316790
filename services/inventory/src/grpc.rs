//! The tonic service: validate (domain), act (store), answer. Store errors
//! become gRPC statuses in one place, [`impl From<StoreError> for Status`](StoreError).

use mesh::proto::inventory::v1::{
    inventory_server::Inventory, AddStockRequest, CommitRequest, GetItemRequest, Item,
    ReleaseRequest, Reservation, ReserveRequest, ReservedLine,
};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    domain,
    store::{ItemRecord, ReservationRecord, Store, StoreError},
};

/// The `mesh.inventory.v1.Inventory` implementation.
#[derive(Debug, Clone)]
pub struct InventoryService {
    store: Store,
}

impl InventoryService {
    /// Serves from `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
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
        let stored = self
            .store
            .reserve(&reservation, mesh::storage::now_unix_ms())
            .await?;
        tracing::info!(reservation_id = %stored.reservation_id, state = stored.state.as_str(), "reserve");
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
        tracing::info!(%reservation_id, "commit");
        Ok(Response::new(reservation_to_proto(stored)))
    }
}

fn item_to_proto(item: ItemRecord) -> Item {
    Item {
        sku: item.sku,
        available: item.available,
        reserved: item.reserved,
        unit_price_cents: item.unit_price_cents,
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
    }
}

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Self {
        let message = error.to_string();
        match error {
            StoreError::ItemNotFound(_) => Status::not_found(message),
            StoreError::ReservationNotFound(_) => Status::not_found(message),
            StoreError::Insufficient(shortages) => {
                // The same facts for programs: one PreconditionFailure violation per SKU.
                let mut details = ErrorDetails::new();
                for shortage in &shortages {
                    let kind = if shortage.available.is_some() {
                        "INSUFFICIENT_STOCK"
                    } else {
                        "UNKNOWN_SKU"
                    };
                    details.add_precondition_failure_violation(
                        kind,
                        shortage.sku.clone(),
                        shortage.to_string(),
                    );
                }
                Status::with_error_details(Code::FailedPrecondition, message, details)
            }
            StoreError::ReservationIdReused(_) | StoreError::TotalTooLarge => {
                Status::invalid_argument(message)
            }
            StoreError::WrongState { .. } | StoreError::StockLimit { .. } => {
                Status::failed_precondition(message)
            }
            StoreError::Inconsistent(_) => {
                tracing::error!(error = %message, "inventory data inconsistent");
                Status::internal("the inventory data is inconsistent; the error was logged")
            }
            StoreError::Database(error) if mesh::storage::is_transient(&error) => {
                tracing::warn!(%error, "inventory database busy or unreachable");
                Status::unavailable("the inventory database is busy or unreachable; try again")
            }
            StoreError::Database(error) => {
                // The cause goes to the log only: SQL text is not for callers.
                tracing::error!(%error, "inventory database error");
                Status::internal("the inventory database failed; the error was logged")
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
                StoreError::Database(sqlx::Error::PoolTimedOut),
                Code::Unavailable,
                "the inventory database is busy or unreachable; try again",
            ),
            (
                StoreError::Database(sqlx::Error::Protocol("UPDATE items SET".into())),
                Code::Internal,
                "the inventory database failed; the error was logged",
            ),
        ];
        for (error, code, message) in cases {
            let status = Status::from(error);
            assert_eq!((status.code(), status.message()), (code, message));
        }
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
