//! The one bootstrap every service runs (DESIGN §3):
//!
//! 1. [`bind`] the listen address (port 0 allowed: the bound port is what
//!    gets registered), so the caller can open its storage knowing its address;
//! 2. [`BoundServer::serve`] the service beside gRPC health (`""` and the full
//!    service name) and reflection v1 and v1alpha, turn health SERVING and
//!    register in Consul (retrying in the background: serving never waits);
//! 3. on SIGTERM/SIGINT: health NOT_SERVING, deregister, drain, stop
//!    accepting, finish in-flight RPCs, return `Ok(())`.

mod deadline_scope;
mod identity;
mod latency;
mod observe;
mod registration;
mod shutdown;

use std::{convert::Infallible, net::SocketAddr};

use tokio::net::TcpListener;
use tonic::{body::Body, server::NamedService, transport::server::TcpIncoming};
use tonic_health::ServingStatus;
use tower::Service;

use deadline_scope::DeadlineScope;
pub(crate) use identity::instance_id as identity_instance_id;
pub use identity::ServiceIdentity;
use latency::InjectLatency;
use observe::Observe;

use crate::config::ServiceArgs;

/// Largest request or response message a service accepts (4 MiB).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Why a service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Storage could not be opened.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// The reflection service could not be built from the descriptors.
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The Consul settings are invalid.
    #[error("invalid Consul settings: {0}")]
    Consul(#[from] discovery::ConfigError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Binds `identity`'s listen address from `args` (default: 127.0.0.1 and the
/// service's well-known port).
pub async fn bind(
    identity: &'static ServiceIdentity,
    args: &ServiceArgs,
) -> Result<BoundServer, ServeError> {
    // First of all, so that a SIGTERM during start-up (migrations) is not
    // lost: `serve` sees it at once and shuts down cleanly.
    let signals = shutdown::Signals::install().map_err(ServeError::Signals)?;
    let address = args
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], identity.default_port)));
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Bind { address, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { address, source })?;
    tracing::info!(service = identity.name, %local_addr, "bound");
    let mut args = args.clone();
    let metrics = observe::bind_metrics(&mut args).await?;
    Ok(BoundServer {
        identity,
        args,
        listener,
        local_addr,
        metrics,
        signals,
    })
}

/// A service whose listen socket is bound but which does not serve yet.
#[derive(Debug)]
pub struct BoundServer {
    identity: &'static ServiceIdentity,
    args: ServiceArgs,
    listener: TcpListener,
    local_addr: SocketAddr,
    metrics: Option<TcpListener>,
    signals: shutdown::Signals,
}

impl BoundServer {
    /// The bound address (with the real port when `--listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound `--metrics-listen` address, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and(self.args.metrics_listen)
    }

    /// The instance id: `--instance-id`, or `<hostname>-<port>`.
    pub fn instance_id(&self) -> String {
        identity::instance_id(self.args.instance_id.as_deref(), self.local_addr.port())
    }

    /// Serves `service` until SIGTERM or SIGINT, then drains and returns.
    pub async fn serve<S>(self, service: S) -> Result<(), ServeError>
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let identity = self.identity;
        let instance_id = self.instance_id();
        let mut signals = self.signals;
        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                // google.rpc error details (BadRequest…), so grpcurl prints them readably.
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        };
        let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
        // The builder's `tcp_nodelay` only reaches listeners tonic binds itself;
        // ours is handed in, so Nagle is turned off on each accepted socket here.
        // Without it a small response waits for the peer's delayed ACK (40 ms).
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .add_service(health_service)
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?)
            .add_service(Observe::new(DeadlineScope::new(InjectLatency::new(
                service,
                self.args.inject_latency_ms,
            ))))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            });
        let mut server = tokio::spawn(server);
        let _metrics = self.metrics.map(observe::serve_metrics);

        for name in ["", identity.grpc_service] {
            health
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        tracing::info!(service = identity.name, address = %self.local_addr, "serving");
        let registrar = registration::start(identity, &self.args, self.local_addr, &instance_id)?;

        let signal = tokio::select! {
            signal = signals.recv() => signal,
            finished = &mut server => {
                // The server stopped on its own: that is an error.
                return finished.unwrap_or_else(|join| panic!("server task panicked: {join}")).map_err(ServeError::from);
            }
        };
        tracing::info!(service = identity.name, %signal, drain_ms = self.args.drain_ms, "shutting down: NOT_SERVING, draining");
        for name in ["", identity.grpc_service] {
            health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        if let Some(registrar) = registrar {
            match registrar.deregister().await {
                Ok(()) => tracing::info!(service = identity.name, "deregistered from Consul"),
                // Not fatal: the critical check and DeregisterCriticalServiceAfter remove us.
                Err(error) => {
                    tracing::warn!(service = identity.name, %error, "deregistration failed")
                }
            }
        }
        tokio::time::sleep(self.args.drain()).await;
        let _ = stop_accepting.send(());
        server
            .await
            .unwrap_or_else(|join| panic!("server task panicked: {join}"))?;
        tracing::info!(service = identity.name, "stopped");
        Ok(())
    }
}
