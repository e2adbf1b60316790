//! A caller's certificate expiring under a live connection. Consul 1.8
//! refuses a `LeafCertTTL` under one hour, so the test gives the agent's
//! Connect CA a root and key of its own (the CA configuration API takes
//! both) and signs the caller's short-lived leaves itself; the server is a
//! real `payments` process that trusts whatever roots its agent serves.

mod mtls_fixture;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh::{
    client::{ClientOptions, MeshClient},
    connect::{Credentials, Identity},
    proto::payments::v1::{payments_client::PaymentsClient, ChargeRequest, GetPaymentRequest},
};
use mtls_fixture::{payments, Load};
use rustls::pki_types::ServerName;
use testkit::{wait_until, ConsulAgent};
use tokio::{net::TcpStream, sync::oneshot};
use tokio_rustls::TlsConnector;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

/// How long each of the caller's leaves is valid.
const LIFETIME: Duration = Duration::from_secs(4);
/// A new leaf every half lifetime, as Consul renews before expiry.
const ROTATIONS: u32 = 4;

/// The agent's Connect CA, switched to a root and key the test holds.
struct TestCa {
    key: rcgen::KeyPair,
    root: rcgen::Certificate,
    trust_domain: String,
    roots_pem: Vec<String>,
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

impl TestCa {
    /// Generates a root, makes the agent's CA sign with it and waits until
    /// the agent serves it as the active root.
    fn install(agent: &ConsulAgent) -> Self {
        let trust_domain = agent.get_json("/v1/agent/connect/ca/roots")["TrustDomain"]
            .as_str()
            .expect("TrustDomain")
            .to_owned();
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mesh test Connect CA");
        params.subject_alt_names = vec![rcgen::SanType::URI(
            format!("spiffe://{trust_domain}")
                .as_str()
                .try_into()
                .expect("URI"),
        )];
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        let root = params.self_signed(&key).expect("root");
        let config = serde_json::json!({
            "Provider": "consul",
            "Config": {"PrivateKey": key.serialize_pem(), "RootCert": root.pem(),
                       "LeafCertTTL": "72h", "RotationPeriod": "2160h",
                       "IntermediateCertTTL": "8760h"},
        });
        // Refused while the fresh agent's CA is still being set up: retried.
        wait_until(
            "the agent to take the test's root",
            Duration::from_secs(30),
            || match agent.put_text("/v1/connect/ca/configuration", &config.to_string()) {
                Ok(_) => Some(()),
                Err(error) => {
                    eprintln!("switching the Connect CA: {error}");
                    None
                }
            },
        );
        let ours: String = root.pem().split_whitespace().collect();
        let roots_pem = wait_until("the test's root active", Duration::from_secs(30), || {
            let roots = agent.get_json("/v1/agent/connect/ca/roots");
            let list = roots["Roots"].as_array()?;
            let active = list.iter().find(|root| root["Active"] == true)?;
            let active: String = active["RootCert"].as_str()?.split_whitespace().collect();
            (active == ours).then(|| {
                list.iter()
                    .filter_map(|root| root["RootCert"].as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
        });
        Self {
            key,
            root,
            trust_domain,
            roots_pem,
        }
    }

    /// A leaf for `service` valid from a minute ago until `lifetime` from
    /// now (whole seconds, as X.509 counts), and that expiry.
    fn leaf(&self, service: &str, lifetime: Duration) -> (Credentials, SystemTime) {
        let now = unix(SystemTime::now());
        let not_after = now + lifetime.as_secs();
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        let uri = format!(
            "spiffe://{}/ns/default/dc/dc1/svc/{service}",
            self.trust_domain
        );
        params.subject_alt_names = vec![rcgen::SanType::URI(uri.as_str().try_into().expect("URI"))];
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyEncipherment,
            rcgen::KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(now - 60);
        params.not_after = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(not_after);
        let leaf = params
            .signed_by(&key, &self.root, &self.key)
            .expect("sign the leaf");
        let roots: Vec<&str> = self.roots_pem.iter().map(String::as_str).collect();
        let credentials = Credentials::from_pem(
            &roots,
            &self.trust_domain,
            &leaf.pem(),
            &key.serialize_pem(),
        )
        .expect("credentials");
        (credentials, UNIX_EPOCH + Duration::from_secs(not_after))
    }
}

/// One HTTP/2 connection to `address` made with `identity`'s current leaf, a
/// health client on it, and when the server closed it.
async fn observed_connection(
    address: &str,
    identity: &Identity,
) -> (
    HealthClient<
        impl tonic::client::GrpcService<
                tonic::body::Body,
                ResponseBody = hyper::body::Incoming,
                Error = hyper::Error,
                Future: Send,
            > + Clone,
    >,
    oneshot::Receiver<SystemTime>,
) {
    let config = identity.client_config("payments").expect("client config");
    let tcp = TcpStream::connect(address).await.expect("connect");
    let tls = TlsConnector::from(config)
        .connect(
            ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
            tcp,
        )
        .await
        .expect("TLS handshake");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("HTTP/2 handshake");
    let (closed, closed_at) = oneshot::channel();
    tokio::spawn(async move {
        let _ = connection.await;
        let _ = closed.send(SystemTime::now());
    });
    let service = tower::service_fn(move |request: http::Request<tonic::body::Body>| {
        let mut sender = sender.clone();
        async move { sender.send_request(request).await }
    });
    let origin = format!("http://{address}").parse().expect("origin");
    (HealthClient::with_origin(service, origin), closed_at)
}

/// Hardening finding 10: an expired caller certificate kept a live
/// connection working (observed 30 s past its `not_after`). The server must
/// close the connection when the caller's certificate expires, gracefully
/// (GOAWAY), so that callers reconnect with their rotated leaf: short-lived
/// leaves rotated under load fail no call, and a connection made with the
/// first leaf is closed at (not before) its expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closes_when_the_callers_certificate_expires_and_rotation_fails_no_call() {
    let agent = ConsulAgent::start();
    let ca = TestCa::install(&agent);
    let (payments, _) = payments(&agent.http_addr(), &["--check-interval", "500"], &[]);
    agent.wait_passing("payments", 1, Duration::from_secs(30));
    let (first, first_expiry) = ca.leaf("orders", LIFETIME);
    let (orders, rotation) = Identity::updatable(first).expect("identity");

    let (mut observed, closed_at) = observed_connection(&payments.addr(), &orders).await;
    observed
        .check(HealthCheckRequest::default())
        .await
        .expect("the observed connection is served");

    let consul = discovery::ConsulConfig::new(&agent.http_addr(), None).expect("consul");
    let client = MeshClient::new(
        consul,
        ClientOptions {
            identity: Some(orders.clone()),
            ..ClientOptions::default()
        },
    );
    let api = PaymentsClient::new(client.channel("payments"));
    let payment_id = api
        .clone()
        .charge(ChargeRequest {
            idempotency_key: "expiry-seed".into(),
            user_id: "u_expiry".into(),
            amount_cents: 100,
            currency: "EUR".into(),
        })
        .await
        .expect("seed charge")
        .into_inner()
        .payment_id;

    let load = Load::start(4, move || {
        let (mut api, payment_id) = (api.clone(), payment_id.clone());
        async move {
            api.get_payment(GetPaymentRequest { payment_id })
                .await
                .map(drop)
        }
    });
    for _ in 0..ROTATIONS {
        tokio::time::sleep(LIFETIME / 2).await;
        let (next, _) = ca.leaf("orders", LIFETIME);
        rotation.replace(next).expect("rotate");
    }
    let load = load.stop().await;
    let (ok, failed) = (load.ok, load.failed);
    eprintln!("{ROTATIONS} rotations of {LIFETIME:?} leaves under load: {ok} ok, {failed} failed");

    let expired_for = SystemTime::now()
        .duration_since(first_expiry)
        .unwrap_or_default();
    let closed = tokio::time::timeout(Duration::from_secs(3), closed_at).await;
    match closed {
        Ok(Ok(at)) => {
            eprintln!(
                "the first leaf's connection closed {:?} after its not_after",
                at.duration_since(first_expiry).unwrap_or_default()
            );
            assert!(
                at >= first_expiry,
                "closed {:?} before the certificate expired",
                first_expiry.duration_since(at).unwrap_or_default()
            );
        }
        _ => panic!(
            "the connection made with the first leaf is still open {:?} after that leaf expired",
            expired_for + Duration::from_secs(3)
        ),
    }
    assert!(ok > 100, "too little load to show anything: {ok}");
    assert_eq!(
        failed, 0,
        "calls failed across the rotations: {:?}",
        load.failures
    );
}
