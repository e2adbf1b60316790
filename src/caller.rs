//! Who a request acts for. Services trust each other through Connect
//! identities and intentions; an end user reaches them only through the
//! API gateway, which verifies the user's token and names the user in the
//! [`SUBJECT_HEADER`] metadata. That header is believed **only** on a
//! connection whose verified Connect identity is [`EDGE_IDENTITY`]: from
//! any other caller it is ignored, so no service can claim to act for a
//! user by writing a header.
//!
//! A service that owns per-user data checks [`Caller::may_act_for`] with
//! the owner of what is asked for (orders: the order's user).

use tonic::{metadata::MetadataMap, Status};

use crate::connect::PeerIdentity;

/// The metadata naming the end user a request is for (set by the gateway).
pub const SUBJECT_HEADER: &str = "x-mesh-subject";

/// The Connect identity of the API gateway, the one caller whose
/// [`SUBJECT_HEADER`] services believe.
pub const EDGE_IDENTITY: &str = "gateway";

/// Who a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The gateway, for the authenticated end user named here.
    EndUser(String),
    /// The gateway, for a caller without a token (a public method).
    Anonymous,
    /// A service of the mesh (or the operator), trusted by the intentions
    /// that let it connect; also every caller with mTLS off (no identity).
    Service,
}

impl Caller {
    /// The caller of a request, from its verified peer identity (in the
    /// request's extensions) and, for the gateway only, its subject metadata.
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        Self::from_parts(
            request.extensions().get::<PeerIdentity>(),
            request.metadata(),
        )
    }

    /// [`Caller::of`] from the parts of a request.
    pub fn from_parts(peer: Option<&PeerIdentity>, metadata: &MetadataMap) -> Self {
        match peer {
            Some(peer) if peer.identity.service == EDGE_IDENTITY => {
                match metadata
                    .get(SUBJECT_HEADER)
                    .and_then(|value| value.to_str().ok())
                {
                    Some(subject) if !subject.is_empty() => Self::EndUser(subject.to_owned()),
                    _ => Self::Anonymous,
                }
            }
            _ => Self::Service,
        }
    }

    /// The end user, if the request is for one.
    pub fn subject(&self) -> Option<&str> {
        match self {
            Self::EndUser(subject) => Some(subject),
            _ => None,
        }
    }

    /// Whether the request may act for (read or change what belongs to)
    /// `user_id`: an end user only for itself (PERMISSION_DENIED otherwise),
    /// an anonymous edge request never (UNAUTHENTICATED), a service always.
    /// `what` names the resource in the refusal ("order ord_1").
    pub fn may_act_for(&self, user_id: &str, what: &str) -> Result<(), Status> {
        match self {
            Self::Service => Ok(()),
            Self::EndUser(subject) if subject == user_id => Ok(()),
            Self::EndUser(_) => Err(Status::permission_denied(format!(
                "{what} belongs to another user"
            ))),
            Self::Anonymous => Err(Status::unauthenticated(format!(
                "{what} is only available to its signed-in owner: send a bearer token"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::SpiffeId;

    fn peer(service: &str) -> PeerIdentity {
        PeerIdentity {
            identity: SpiffeId {
                trust_domain: "11111111-2222-3333-4444-555555555555.consul".into(),
                namespace: "default".into(),
                datacenter: "dc1".into(),
                service: service.into(),
            },
            serial: "01".into(),
        }
    }

    fn metadata(subject: Option<&str>) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        if let Some(subject) = subject {
            metadata.insert(SUBJECT_HEADER, subject.parse().unwrap());
        }
        metadata
    }

    #[test]
    fn the_subject_is_believed_only_from_the_gateway() {
        assert_eq!(
            Caller::from_parts(Some(&peer("gateway")), &metadata(Some("u_1"))),
            Caller::EndUser("u_1".into())
        );
        assert_eq!(
            Caller::from_parts(Some(&peer("gateway")), &metadata(None)),
            Caller::Anonymous
        );
        // A forged header from any other identity, or without mTLS, is ignored.
        assert_eq!(
            Caller::from_parts(Some(&peer("orders")), &metadata(Some("u_1"))),
            Caller::Service
        );
        assert_eq!(
            Caller::from_parts(None, &metadata(Some("u_1"))),
            Caller::Service
        );
    }

    #[test]
    fn end_users_act_only_for_themselves() {
        let alice = Caller::EndUser("u_alice".into());
        assert!(alice.may_act_for("u_alice", "order o").is_ok());
        let denied = alice.may_act_for("u_bob", "order o_1").unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert_eq!(denied.message(), "order o_1 belongs to another user");
        assert_eq!(
            Caller::Anonymous
                .may_act_for("u_bob", "order o")
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
        assert!(Caller::Service.may_act_for("u_bob", "order o").is_ok());
    }
}
