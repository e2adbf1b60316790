//! The mesh port without a Consul agent: certificates from a test CA (rcgen).

use std::time::Duration;

use discovery::{connect::ConnectCa, ConsulConfig};
use tokio::net::TcpListener;
use tonic::{service::Routes, Code};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

use super::{serve, Admission, Handshakes};
use crate::{
    client::{connect_endpoint, ClientOptions},
    connect::{Credentials, CredentialsError, Identity, IdentityError},
    server::authz::{Authorizer, AuthzPolicy},
};

const TRUST_DOMAIN: &str = "11111111-2222-3333-4444-555555555555.consul";

struct TestCa {
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
}

impl TestCa {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Self { key, cert }
    }

    /// Credentials of `service`, valid from `not_before` to `not_after` (years).
    fn credentials(&self, service: &str, not_before: i32, not_after: i32) -> Credentials {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let uri = format!("spiffe://{TRUST_DOMAIN}/ns/default/dc/dc1/svc/{service}");
        params.subject_alt_names = vec![rcgen::SanType::URI(uri.as_str().try_into().unwrap())];
        params.not_before = rcgen::date_time_ymd(not_before, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after, 1, 1);
        let leaf = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Credentials::from_pem(
            &[self.cert.pem().as_str()],
            TRUST_DOMAIN,
            &leaf.pem(),
            &key.serialize_pem(),
        )
        .unwrap()
    }
}

/// A mesh port serving health as `identity`; the agent it would ask for
/// authorizations does not exist (port 1).
async fn mesh_port(identity: Identity) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (_, health) = tonic_health::server::health_reporter();
    let consul = ConsulConfig::new("127.0.0.1:1", None).unwrap();
    let policy = AuthzPolicy {
        recheck: Duration::from_secs(5),
        max_stale: Duration::from_secs(3600),
    };
    let admission = Admission::Mtls {
        identity,
        authorizer: Authorizer::new(ConnectCa::new(&consul), "users", policy),
        handshakes: Handshakes::new(Duration::from_secs(5), 16),
    };
    tokio::spawn(serve(
        listener,
        admission,
        Routes::new(health).prepare(),
        std::future::pending(),
    ));
    address
}

/// Client options that dial as `identity`.
fn dialing(identity: &Identity) -> ClientOptions {
    ClientOptions {
        identity: Some(identity.clone()),
        connect_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    }
}

#[test]
fn an_expired_leaf_is_refused_for_use() {
    let ca = TestCa::new();
    let expired = ca.credentials("users", 2020, 2021);
    assert!(matches!(
        expired.check_fresh(std::time::SystemTime::now()),
        Err(CredentialsError::Expired { .. })
    ));
    let identity = Identity::fixed(expired).unwrap();
    assert!(matches!(
        identity.server_config(),
        Err(IdentityError::Credentials(CredentialsError::Expired { .. }))
    ));
    assert!(identity.client_config("payments").is_err());
}

#[tokio::test]
async fn a_server_with_an_expired_leaf_refuses_to_serve() {
    let ca = TestCa::new();
    let client = Identity::fixed(ca.credentials("orders", 2020, 2100)).unwrap();

    let expired = mesh_port(Identity::fixed(ca.credentials("users", 2020, 2021)).unwrap()).await;
    let refused = connect_endpoint(&expired, "users", &dialing(&client)).await;
    assert!(refused.is_err(), "a server with an expired leaf served");

    // The same server with a fresh leaf completes the handshake; then, with
    // no agent to ask, the caller is not authorized (fail closed).
    let fresh = mesh_port(Identity::fixed(ca.credentials("users", 2020, 2100)).unwrap()).await;
    let channel = connect_endpoint(&fresh, "users", &dialing(&client))
        .await
        .expect("handshake with a fresh leaf");
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .expect_err("no agent, no authorization");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("cannot ask the Consul agent"),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_client_refuses_a_server_with_another_identity() {
    let ca = TestCa::new();
    let client = Identity::fixed(ca.credentials("orders", 2020, 2100)).unwrap();
    let inventory =
        mesh_port(Identity::fixed(ca.credentials("inventory", 2020, 2100)).unwrap()).await;
    let error = connect_endpoint(&inventory, "payments", &dialing(&client))
        .await
        .expect_err("an impostor was accepted");
    let text = discovery::error_chain(&error);
    assert!(
        text.contains("svc/inventory") && text.contains("not the expected"),
        "{text}"
    );
}
