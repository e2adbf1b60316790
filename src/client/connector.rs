//! How the mesh client dials an endpoint: plaintext HTTP/2 (`--mtls=off`), or
//! TCP + a TLS 1.3 handshake that presents our Connect leaf and accepts only
//! the exact SPIFFE identity of the target service (see
//! `mesh::connect`). A failure before the handshake completes is a
//! [`NotConnected`]: no request byte was sent, so any method may be retried.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};
use tower::{BoxError, Service};

use super::{error::NotConnected, options::ClientOptions};
use crate::limits::MAX_RESPONSE_HEADER_LIST_BYTES;

/// The HTTP/2 header-list size every endpoint connection accepts.
const RESPONSE_HEADER_LIST_LIMIT: u32 = MAX_RESPONSE_HEADER_LIST_BYTES as u32;
use crate::connect::{inspect, Identity, PeerCertificate, WrongPeerIdentity};

/// One lazily connected HTTP/2 channel to `authority` (`host:port`) for the
/// service `target`, dialled as `options` say: mTLS with `options.identity`,
/// plaintext when it is `None`. Re-connects after failures (tonic).
pub fn endpoint_channel(
    authority: &str,
    target: &str,
    options: &ClientOptions,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let endpoint = endpoint(authority, options)?;
    Ok(match &options.identity {
        None => endpoint.connect_lazy(),
        Some(identity) => {
            endpoint.connect_with_connector_lazy(MtlsConnector::new(identity, target))
        }
    })
}

/// Like [`endpoint_channel`], but connects (and, with mTLS, completes the
/// handshake) before returning, so a wrong address or identity fails here.
pub async fn connect_endpoint(
    authority: &str,
    target: &str,
    options: &ClientOptions,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let endpoint = endpoint(authority, options)?;
    match &options.identity {
        None => endpoint.connect().await,
        Some(identity) => {
            endpoint
                .connect_with_connector(MtlsConnector::new(identity, target))
                .await
        }
    }
}

fn endpoint(
    authority: &str,
    options: &ClientOptions,
) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{authority}"))?
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(options.http2_keepalive_interval)
            .keep_alive_timeout(options.http2_keepalive_timeout)
            // Room for the largest status a mesh server sends (see limits).
            .http2_max_header_list_size(RESPONSE_HEADER_LIST_LIMIT),
    )
}

/// TCP then TLS with our Connect identity, expecting `target`'s.
#[derive(Clone, Debug)]
struct MtlsConnector {
    identity: Identity,
    target: Arc<str>,
}

impl MtlsConnector {
    fn new(identity: &Identity, target: &str) -> Self {
        Self {
            identity: identity.clone(),
            target: target.into(),
        }
    }
}

impl Service<Uri> for MtlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (identity, target) = (self.identity.clone(), self.target.clone());
        Box::pin(async move {
            let authority = uri
                .authority()
                .map(|a| a.as_str().to_owned())
                .unwrap_or_default();
            let stream = dial_tls(&authority, &target, &identity).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// Opens a TCP connection to `authority` (`host:port`, `TCP_NODELAY` set).
/// A failure is a [`NotConnected`] naming `target`.
pub(crate) async fn dial_tcp(authority: &str, target: &str) -> Result<TcpStream, NotConnected> {
    let (host, port) = split_authority(authority);
    let tcp = TcpStream::connect((host, port)).await.map_err(|error| {
        NotConnected::new(
            authority,
            target,
            format!("TCP connect: {error}"),
            Some(error),
        )
    })?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Opens a TCP connection to `authority` and completes a TLS 1.3 handshake
/// that presents `identity`'s Connect leaf and accepts only `target`'s
/// SPIFFE identity. A failure is a [`NotConnected`].
pub(crate) async fn dial_tls(
    authority: &str,
    target: &str,
    identity: &Identity,
) -> Result<TlsStream<TcpStream>, NotConnected> {
    let config = identity
        .client_config(target)
        .map_err(|error| NotConnected::new(authority, target, error.to_string(), None))?;
    let tcp = dial_tcp(authority, target).await?;
    let (host, _) = split_authority(authority);
    let server_name = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.to_owned()).map_err(|error| {
            NotConnected::new(authority, target, format!("bad host name: {error}"), None)
        })?,
    };
    TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|error| NotConnected::new(authority, target, describe(&error), Some(error)))
}

/// `host` (brackets of an IPv6 literal removed) and `port` (80 when absent).
fn split_authority(authority: &str) -> (&str, u16) {
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            (host.trim_matches(['[', ']']), port.parse().unwrap_or(80))
        }
        _ => (authority.trim_matches(['[', ']']), 80),
    }
}

/// Opens one TLS connection to `authority` as `identity`, expecting
/// `target`, and returns the certificate the server presented (its identity,
/// serial and expiry); nothing is sent over it. For diagnostics and tests
/// (which leaf does a server present right now?).
pub async fn peer_certificate(
    authority: &str,
    target: &str,
    identity: &Identity,
) -> Result<PeerCertificate, BoxError> {
    let uri: Uri = format!("http://{authority}").parse()?;
    let stream = MtlsConnector::new(identity, target).call(uri).await?;
    let (_, connection) = stream.inner().get_ref();
    let leaf = connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or("the server presented no certificate")?;
    Ok(inspect(leaf)?)
}

/// A handshake error in words: names the identity found when it is the wrong one.
fn describe(error: &std::io::Error) -> String {
    let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return format!("TLS handshake: {error}");
    };
    if let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) = tls {
        if let Some(wrong) = other.0.downcast_ref::<WrongPeerIdentity>() {
            return format!("refusing the server's certificate: {wrong}");
        }
    }
    format!("TLS handshake: {tls}")
}

#[cfg(test)]
mod tests {
    use super::split_authority;

    #[test]
    fn an_authority_splits_into_host_and_port() {
        assert_eq!(split_authority("127.0.0.1:50051"), ("127.0.0.1", 50051));
        assert_eq!(split_authority("[::1]:8443"), ("::1", 8443));
        assert_eq!(
            split_authority("users.service.consul:20000"),
            ("users.service.consul", 20000)
        );
        assert_eq!(split_authority("localhost"), ("localhost", 80));
        assert_eq!(split_authority("[::1]"), ("::1", 80));
    }
}
