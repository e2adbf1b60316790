//! The one bootstrap every service runs (docs/architecture.md,
//! "Service lifecycle"):
//!
//! 1. [`bind`] the listen address (port 0 allowed: the bound port is what
//!    gets registered) and the plaintext health port, so the caller can open
//!    its storage knowing its address; with `--mtls=required` start watching
//!    the service's Connect certificate;
//! 2. [`BoundServer::serve`] the service, wrapped in the server's layers (see
//!    [`stack`]), beside gRPC health (`""` and the full service name) and
//!    reflection v1 and v1alpha on the mesh port (Connect mTLS + intentions,
//!    see [`tls`]; reflection lists only those three, see [`reflection`]),
//!    health alone on the health port; once the certificate
//!    is there turn health SERVING and register in Consul as Connect-native
//!    (retrying in the background: serving never waits);
//! 3. on SIGTERM/SIGINT: health NOT_SERVING, deregister, drain, stop
//!    accepting, finish in-flight RPCs, return `Ok(())`.

mod authz;
mod binary;
mod deadline_scope;
mod error;
mod guard;
mod health_port;
#[cfg(feature = "inject-latency")]
mod latency;
mod observe;
pub mod reflection;
mod registration;
mod shutdown;
mod stack;
mod status_codes;
mod tls;

use std::{convert::Infallible, future::Future, net::SocketAddr, pin::Pin, time::Duration};

use discovery::connect::ConnectCa;
use tokio::net::TcpListener;
use tonic::{body::Body, server::NamedService, service::Routes};
use tonic_health::{
    pb::health_server::{Health, HealthServer},
    server::HealthReporter,
    ServingStatus,
};
use tower::Service;

pub use binary::{serve_args, ExampleCall, Runnable};
pub use error::ServeError;
use tls::Admission;

use crate::{
    config::{MtlsMode, ServiceArgs},
    connect::Identity,
    service::ServiceIdentity,
};

/// Binds `identity`'s listen address from `args` (default: 127.0.0.1 and the
/// service's well-known port).
pub async fn bind(
    identity: &'static ServiceIdentity,
    args: &ServiceArgs,
) -> Result<BoundServer, ServeError> {
    // An edge has no gRPC service: its health reports its own name.
    let grpc_service = identity.grpc_service().unwrap_or(identity.name);
    // First of all (after the checks), so that a SIGTERM during start-up
    // (migrations) is not lost: `serve` sees it at once and shuts down cleanly.
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
    let health_address = args
        .health_listen
        .unwrap_or_else(|| SocketAddr::new(local_addr.ip(), 0));
    let health_listener =
        TcpListener::bind(health_address)
            .await
            .map_err(|source| ServeError::Bind {
                address: health_address,
                source,
            })?;
    let health_addr = health_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            address: health_address,
            source,
        })?;
    tracing::info!(service = identity.name, %local_addr, %health_addr, mtls = %args.mtls, "bound");
    let admission = admission(identity, args)?;
    let mut args = args.clone();
    let metrics = observe::bind_metrics(&mut args).await?;
    Ok(BoundServer {
        identity,
        grpc_service,
        args,
        listener,
        local_addr,
        health_listener,
        health_addr,
        admission,
        metrics,
        signals,
    })
}

/// `--mtls`: plaintext, or Connect mTLS with this service's identity (its
/// certificate watch starts now) and the intentions.
fn admission(identity: &ServiceIdentity, args: &ServiceArgs) -> Result<Admission, ServeError> {
    match args.mtls {
        MtlsMode::Off => {
            args.mtls.warn_if_off(identity.name);
            Ok(Admission::Plaintext)
        }
        MtlsMode::Required => {
            if args.no_consul {
                return Err(ServeError::MtlsNeedsConsul);
            }
            if args.authz_max_stale < args.authz_recheck {
                return Err(ServeError::MaxStaleBelowRecheck {
                    max_stale: args.authz_max_stale,
                    recheck: args.authz_recheck,
                });
            }
            let consul = args.consul.config()?;
            let policy = authz::AuthzPolicy {
                recheck: args.authz_recheck,
                max_stale: args.authz_max_stale,
            };
            Ok(Admission::Mtls {
                identity: Identity::watch(&consul, identity.name),
                authorizer: authz::Authorizer::new(ConnectCa::new(&consul), identity.name, policy),
                handshakes: tls::Handshakes::new(
                    args.handshake_timeout,
                    usize::try_from(args.max_pending_handshakes).unwrap_or(usize::MAX),
                ),
            })
        }
    }
}

/// A service whose listen socket is bound but which does not serve yet.
#[derive(Debug)]
pub struct BoundServer {
    identity: &'static ServiceIdentity,
    /// The name health reports besides `""` (an edge's own name).
    grpc_service: &'static str,
    args: ServiceArgs,
    listener: TcpListener,
    local_addr: SocketAddr,
    health_listener: TcpListener,
    health_addr: SocketAddr,
    admission: Admission,
    metrics: Option<TcpListener>,
    signals: shutdown::Signals,
}

impl BoundServer {
    /// The bound address (with the real port when `--listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound plaintext health address (`--health-listen`).
    pub fn health_addr(&self) -> SocketAddr {
        self.health_addr
    }

    /// The service's Connect identity (`None` with `--mtls=off`): what its
    /// upstream clients present too (see `ClientOptions::identity`).
    pub fn connect_identity(&self) -> Option<Identity> {
        match &self.admission {
            Admission::Plaintext => None,
            Admission::Mtls { identity, .. } => Some(identity.clone()),
        }
    }

    /// The bound `--metrics-listen` address, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and(self.args.metrics_listen)
    }

    /// The instance id: `--instance-id`, or `<hostname>-<port>`.
    pub fn instance_id(&self) -> String {
        crate::service::instance_id(self.args.instance_id.as_deref(), self.local_addr.port())
    }

    /// Opens this service's database (`DATABASE_URL`, else
    /// `<data-dir>/<name>.db`) and brings its schema up to date with `migrator`.
    pub async fn open_storage(
        &self,
        migrator: &sqlx::migrate::Migrator,
    ) -> Result<sqlx::AnyPool, ServeError> {
        let pool = crate::storage::open(
            self.identity.name,
            self.args.database_url.as_deref(),
            &self.args.data_dir,
            migrator,
        )
        .await?;
        Ok(pool)
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
        if self.identity.grpc_service().is_none() {
            return Err(ServeError::NotGrpc {
                service: self.identity.name,
            });
        }
        let (health, health_service) = tonic_health::server::health_reporter();
        // The application service in its stack (`stack`), beside health and reflection.
        let routes = Routes::new(health_service.clone())
            .add_service(reflection::v1(S::NAME)?)
            .add_service(reflection::v1alpha(S::NAME)?)
            .add_service(stack::application(service, &self.args))
            .prepare();
        let front = |listener, admission, stopped| -> FrontTask {
            Box::pin(tls::serve(listener, admission, routes, stopped))
        };
        self.run(health, health_service, front).await
    }

    /// Serves an edge ([`ServiceKind::Edge`](crate::service::ServiceKind)):
    /// `front` serves the bound listen socket itself (the API gateway's HTTP
    /// port: neither Connect mTLS nor gRPC routes) until the future it is
    /// given resolves, then finishes its in-flight requests. Health (under
    /// `""` and the edge's name), Consul registration (not Connect-native:
    /// callers from outside the mesh reach it), metrics and the drain are
    /// every service's.
    pub async fn serve_edge<F, Fut>(self, front: F) -> Result<(), ServeError>
    where
        F: FnOnce(TcpListener, StopSignal) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (health, health_service) = tonic_health::server::health_reporter();
        let front =
            |listener, _admission, stopped| -> FrontTask { Box::pin(front(listener, stopped)) };
        self.run(health, health_service, front).await
    }

    /// The lifecycle around the listen socket's server (`front`): health,
    /// metrics, registration once the certificate is there, and on a signal
    /// NOT_SERVING → deregister → drain → stop accepting → finish.
    async fn run(
        self,
        health: HealthReporter,
        health_service: HealthServer<impl Health>,
        front: impl FnOnce(TcpListener, Admission, StopSignal) -> FrontTask,
    ) -> Result<(), ServeError> {
        let identity = self.identity;
        let grpc_service = self.grpc_service;
        let instance_id = self.instance_id();
        let mtls_identity = self.connect_identity();
        let mut signals = self.signals;
        let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
        let (stop_health, health_stopped) = tokio::sync::oneshot::channel::<()>();
        let health_server = tokio::spawn(health_port::serve(
            self.health_listener,
            health_service,
            async {
                let _ = health_stopped.await;
            },
        ));
        let _metrics = self.metrics.map(observe::serve_metrics);
        let (listener, admission) = (self.listener, self.admission);

        // Nothing is accepted before the certificate is there: until then a
        // caller's connection waits in the listen backlog (bounded by its
        // own connect timeout) instead of having its handshake reset.
        let start_serving = async {
            if let Some(connect) = &mtls_identity {
                wait_for_identity(connect).await;
            }
            let server = tokio::spawn(front(
                listener,
                admission,
                Box::pin(async {
                    let _ = stopped.await;
                }),
            ));
            set_health(&health, grpc_service, ServingStatus::Serving).await;
            tracing::info!(service = identity.name, address = %self.local_addr, health = %self.health_addr, "serving");
            let registrar = registration::start(
                identity,
                grpc_service,
                &self.args,
                self.local_addr,
                self.health_addr.port(),
                &instance_id,
            );
            (server, registrar)
        };
        let (signal, serving) = tokio::select! {
            signal = signals.recv() => (signal, None),
            (mut server, registrar) = start_serving => {
                let registrar = match registrar {
                    Ok(registrar) => registrar,
                    Err(error) => {
                        server.abort();
                        return Err(error);
                    }
                };
                tokio::select! {
                    signal = signals.recv() => (signal, Some((server, registrar))),
                    finished = &mut server => {
                        // The server stopped on its own: that is an error.
                        finished.unwrap_or_else(|join| panic!("server task panicked: {join}"));
                        return Err(ServeError::Stopped);
                    }
                }
            }
        };
        tracing::info!(service = identity.name, %signal, drain = ?self.args.drain, "shutting down: NOT_SERVING, draining");
        set_health(&health, grpc_service, ServingStatus::NotServing).await;
        if let Some((server, registrar)) = serving {
            if let Some(registrar) = registrar {
                deregister(registrar, identity.name).await;
            }
            tokio::time::sleep(self.args.drain).await;
            let _ = stop_accepting.send(());
            server
                .await
                .unwrap_or_else(|join| panic!("server task panicked: {join}"));
        }
        let _ = stop_health.send(());
        health_server
            .await
            .unwrap_or_else(|join| panic!("health server task panicked: {join}"))?;
        tracing::info!(service = identity.name, "stopped");
        Ok(())
    }
}

/// Resolves when the listen socket's server must stop accepting.
pub type StopSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The listen socket's server, run as a task.
type FrontTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Health of the server as a whole (`""`) and of `grpc_service`.
async fn set_health(
    health: &tonic_health::server::HealthReporter,
    grpc_service: &str,
    status: ServingStatus,
) {
    for name in ["", grpc_service] {
        health.set_service_status(name, status).await;
    }
}

/// Leaves Consul; a failure is only logged: the critical check and
/// DeregisterCriticalServiceAfter remove the instance anyway.
async fn deregister(registrar: discovery::RegistrarHandle, service: &str) {
    match registrar.deregister().await {
        Ok(()) => tracing::info!(service, "deregistered from Consul"),
        Err(error) => tracing::warn!(service, %error, "deregistration failed"),
    }
}

/// Waits for the first Connect certificate, saying every few seconds what is missing.
async fn wait_for_identity(identity: &Identity) {
    loop {
        match identity.ready(Duration::from_secs(5)).await {
            Ok(current) => {
                if let Err(error) = current
                    .credentials
                    .check_fresh(std::time::SystemTime::now())
                {
                    tracing::error!(%error, "waiting for a fresh Connect certificate");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "not serving yet: waiting for the Connect certificate")
            }
        }
    }
}
