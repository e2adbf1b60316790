//! The tonic service: validate (domain), act (store), answer. Store errors
//! become gRPC statuses in one place, [`impl From<StoreError> for Status`](StoreError).
//!
//! Reads through the API gateway are for the shipment's owner only: the
//! gateway names the token's user ([`Caller`]), and a shipment belongs to the
//! `user_id` of the order it was made from (PERMISSION_DENIED for another
//! user, as orders answers for an order). Services and the operator read
//! every shipment.

use mesh::{
    caller::Caller,
    connect::PeerIdentity,
    proto::shipping::v1::{
        shipping_server::Shipping, GetShipmentRequest, ListShipmentsRequest, ListShipmentsResponse,
        MarkShippedRequest, Shipment, ShipmentLine,
    },
};
use tonic::{Request, Response, Status};

use crate::{
    domain::{self, ListBy, PageKey},
    store::{self, Store, StoreError},
};

/// The only Connect identity that may call [`Shipping::mark_shipped`].
pub const OPERATOR: &str = "operator";

/// The `mesh.shipping.v1.Shipping` implementation.
#[derive(Debug, Clone)]
pub struct ShippingService {
    store: Store,
}

impl ShippingService {
    /// Serves from `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl Shipping for ShippingService {
    async fn get_shipment(
        &self,
        request: Request<GetShipmentRequest>,
    ) -> Result<Response<Shipment>, Status> {
        let shipment_id = domain::validate_get(request.get_ref())?;
        let shipment = self.store.get(&shipment_id).await?;
        Caller::of(&request).may_act_for(&shipment.user_id, &format!("shipment {shipment_id}"))?;
        Ok(Response::new(to_proto(shipment)))
    }

    async fn list_shipments(
        &self,
        request: Request<ListShipmentsRequest>,
    ) -> Result<Response<ListShipmentsResponse>, Status> {
        let caller = Caller::of(&request);
        let (shipments, next) = match domain::validate_list(request.get_ref())? {
            ListBy::Order(order_id) => {
                let shipments = self.store.by_order(&order_id).await?;
                may_read_all(
                    &caller,
                    &shipments,
                    &format!("the shipment of order {order_id}"),
                )?;
                (shipments, None)
            }
            ListBy::User {
                user_id,
                size,
                after,
            } => {
                caller.may_act_for(&user_id, "this user's shipment list")?;
                let page = self.store.by_user(&user_id, after.as_ref(), size).await?;
                let next = (page.len() as i64 == size)
                    .then(|| page.last())
                    .flatten()
                    .map(|last| PageKey {
                        created_at_unix_ms: last.created_at_unix_ms,
                        shipment_id: last.shipment_id.clone(),
                    });
                (page, next)
            }
        };
        Ok(Response::new(ListShipmentsResponse {
            shipments: shipments.into_iter().map(to_proto).collect(),
            next_page_token: next.map(|key| key.encode()).unwrap_or_default(),
        }))
    }

    async fn mark_shipped(
        &self,
        request: Request<MarkShippedRequest>,
    ) -> Result<Response<Shipment>, Status> {
        require_operator(&request, "MarkShipped")?;
        let (shipment_id, tracking_number) = domain::validate_mark_shipped(request.get_ref())?;
        let shipment = self
            .store
            .mark_shipped(&shipment_id, &tracking_number, mesh::storage::now_unix_ms())
            .await?;
        tracing::info!(%shipment_id, order_id = %shipment.order_id, "shipment shipped");
        Ok(Response::new(to_proto(shipment)))
    }
}

/// Whether `caller` may read every one of `shipments` (an order's: at most
/// one, so one owner); `what` names them in the refusal.
fn may_read_all(caller: &Caller, shipments: &[store::Shipment], what: &str) -> Result<(), Status> {
    shipments
        .iter()
        .try_for_each(|shipment| caller.may_act_for(&shipment.user_id, what))
}

/// PERMISSION_DENIED unless the caller's verified Connect identity is the
/// operator's.
fn require_operator<T>(request: &Request<T>, method: &str) -> Result<(), Status> {
    match request.extensions().get::<PeerIdentity>() {
        Some(peer) if peer.identity.service == OPERATOR => Ok(()),
        Some(peer) => Err(Status::permission_denied(format!(
            "{method} is for the {OPERATOR} identity only; {} may not call it",
            peer.identity.service
        ))),
        None => Err(Status::permission_denied(format!(
            "{method} is for the {OPERATOR} Connect identity only, and this server was started with --mtls=off: nobody is authenticated"
        ))),
    }
}

fn to_proto(shipment: store::Shipment) -> Shipment {
    Shipment {
        shipment_id: shipment.shipment_id,
        order_id: shipment.order_id,
        user_id: shipment.user_id,
        lines: shipment
            .lines
            .into_iter()
            .map(|line| ShipmentLine {
                sku: line.sku,
                quantity: line.quantity,
            })
            .collect(),
        status: shipment.status.to_proto().into(),
        tracking_number: shipment.tracking_number,
        created_at_unix_ms: shipment.created_at_unix_ms,
        updated_at_unix_ms: shipment.updated_at_unix_ms,
        shipped_at_unix_ms: shipment.shipped_at_unix_ms,
    }
}

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Self {
        match error {
            // The id was validated (at most 128 characters): the message is bounded.
            StoreError::NotFound(shipment_id) => {
                Status::not_found(format!("shipment {shipment_id} not found"))
            }
            StoreError::NotShippable {
                shipment_id,
                status,
            } => Status::failed_precondition(format!(
                "shipment {shipment_id} is {status}: its order was cancelled, it cannot be shipped"
            )),
            StoreError::Database(error) if mesh::storage::is_transient(&error) => {
                tracing::warn!(%error, "shipping database busy or unreachable");
                Status::unavailable("the shipping database is busy or unreachable; try again")
            }
            StoreError::Write(write) if write.is_transient() => {
                tracing::warn!(error = %write, "shipping write not committed");
                Status::unavailable("the shipping database is busy; try again")
            }
            StoreError::Database(error) => {
                tracing::error!(%error, "shipping database error");
                Status::internal("the shipping database failed; the error was logged")
            }
            StoreError::Write(write) => {
                tracing::error!(error = %write, "shipping write failed");
                Status::internal("the shipping database failed; the error was logged")
            }
            StoreError::Corrupt(detail) => {
                tracing::error!(%detail, "corrupt shipping data");
                Status::internal(
                    "the shipping database holds data it cannot read; the error was logged",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn store_errors_map_to_codes_with_readable_messages() {
        let status = Status::from(StoreError::NotFound("shp_1".into()));
        assert_eq!(
            (status.code(), status.message()),
            (Code::NotFound, "shipment shp_1 not found")
        );
        let status = Status::from(StoreError::NotShippable {
            shipment_id: "shp_1".into(),
            status: "CANCELLED",
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        let status = Status::from(StoreError::Database(sqlx::Error::PoolTimedOut));
        assert_eq!(status.code(), Code::Unavailable);
        let status = Status::from(StoreError::Database(sqlx::Error::Protocol(
            "SELECT secret".into(),
        )));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("SELECT"));
        let status = Status::from(StoreError::Write(mesh::storage::WriteError::QueueFull {
            database: "shipping".into(),
            capacity: 1024,
        }));
        assert_eq!(
            (status.code(), status.message()),
            (
                Code::Unavailable,
                "the shipping database is busy; try again"
            )
        );
        let status = Status::from(StoreError::Write(mesh::storage::WriteError::Panicked {
            database: "shipping".into(),
        }));
        assert_eq!(status.code(), Code::Internal);
    }

    fn shipment_of(user_id: &str) -> store::Shipment {
        store::Shipment {
            shipment_id: "shp_1".into(),
            order_id: "ord_1".into(),
            user_id: user_id.into(),
            status: domain::ShipmentStatus::Pending,
            tracking_number: String::new(),
            created_at_unix_ms: 1,
            updated_at_unix_ms: 1,
            shipped_at_unix_ms: 0,
            lines: Vec::new(),
        }
    }

    #[test]
    fn an_end_user_reads_only_its_own_shipments() {
        let alice = Caller::EndUser("u_alice".into());
        let what = "the shipment of order ord_1";
        assert!(may_read_all(&alice, &[shipment_of("u_alice")], what).is_ok());
        // An order without a shipment yet: nothing to refuse.
        assert!(may_read_all(&alice, &[], what).is_ok());
        let denied = may_read_all(&alice, &[shipment_of("u_bob")], what).unwrap_err();
        assert_eq!(
            (denied.code(), denied.message()),
            (
                Code::PermissionDenied,
                "the shipment of order ord_1 belongs to another user"
            )
        );
        let anonymous = may_read_all(&Caller::Anonymous, &[shipment_of("u_bob")], what);
        assert_eq!(anonymous.unwrap_err().code(), Code::Unauthenticated);
        assert!(may_read_all(&Caller::Service, &[shipment_of("u_bob")], what).is_ok());
    }

    #[test]
    fn only_the_operator_may_mark_a_shipment_shipped() {
        let request = |service: Option<&str>| {
            let mut request = Request::new(());
            if let Some(service) = service {
                request.extensions_mut().insert(PeerIdentity {
                    identity: mesh::connect::SpiffeId {
                        trust_domain: "x.consul".into(),
                        namespace: "default".into(),
                        datacenter: "dc1".into(),
                        service: service.into(),
                    },
                    serial: "01".into(),
                });
            }
            request
        };
        assert!(require_operator(&request(Some("operator")), "MarkShipped").is_ok());
        let denied = require_operator(&request(Some("orders")), "MarkShipped").unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert!(
            denied.message().contains("orders may not call it"),
            "{}",
            denied.message()
        );
        let plaintext = require_operator(&request(None), "MarkShipped").unwrap_err();
        assert_eq!(plaintext.code(), Code::PermissionDenied);
        assert!(plaintext.message().contains("--mtls=off"));
    }
}
