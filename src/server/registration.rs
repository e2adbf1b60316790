//! The server's Consul registration (step 3 of the service
//! lifecycle in docs/architecture.md): who to register as,
//! at which address, with which gRPC health check.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket},
    time::Duration,
};

use discovery::{GrpcCheck, Registrar, RegistrarHandle, RegistrarOptions, ServiceRegistration};

use super::error::ServeError;
use crate::config::{MtlsMode, ServiceArgs};
use crate::service::ServiceIdentity;

/// Starts registering in the background (never blocks serving); `None` with
/// `--no-consul`. Consul checks `grpc_service`'s health on the health port.
pub(crate) fn start(
    identity: &ServiceIdentity,
    grpc_service: &'static str,
    args: &ServiceArgs,
    bound: SocketAddr,
    health_port: u16,
    instance_id: &str,
) -> Result<Option<RegistrarHandle>, ServeError> {
    if args.no_consul {
        tracing::info!("--no-consul: not registering in Consul");
        return Ok(None);
    }
    let consul = args.consul.config()?;
    let address = advertise_address(args.advertise, bound.ip(), consul.address());
    let mut meta = BTreeMap::from([
        // What resolver subsets select on (`--version-meta`, default v1).
        ("version".to_owned(), args.version_meta.clone()),
        ("build".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        (
            "proto_package".to_owned(),
            identity.proto_package().unwrap_or_default().to_owned(),
        ),
        ("instance".to_owned(), instance_id.to_owned()),
    ]);
    if let Some(metrics) = args.metrics_listen {
        meta.insert("metrics_port".to_owned(), metrics.port().to_string());
    }
    meta.insert("health_port".to_owned(), health_port.to_string());
    meta.insert("mtls".to_owned(), args.mtls.as_str().to_owned());
    let edge = identity.grpc_service().is_none();
    let protocol = if edge { "http" } else { "grpc" };
    let mut check = GrpcCheck::new(grpc_service);
    check.interval = args.check_interval;
    check.timeout = check.interval.min(Duration::from_secs(1));
    // Consul's check cannot present a Connect certificate: it asks the plaintext health port.
    check.port = Some(health_port);
    let registration = ServiceRegistration {
        id: format!("{}-{instance_id}", identity.name),
        name: identity.name.to_owned(),
        address,
        port: bound.port(),
        tags: vec![
            protocol.to_owned(),
            format!("v{}", env!("CARGO_PKG_VERSION")),
        ],
        meta,
        check,
        // An edge is reached from outside the mesh: never Connect-native,
        // though it calls the services with its Connect identity.
        connect_native: !edge && args.mtls == MtlsMode::Required,
    };
    tracing::info!(id = %registration.id, %address, port = bound.port(), consul = %consul.address(), "registering in Consul");
    Ok(Some(Registrar::try_spawn(
        consul,
        registration,
        RegistrarOptions::default(),
    )?))
}

/// `--advertise`, else the bound IP, else (bound to 0.0.0.0 or ::) the local
/// IP of the route to Consul — the address other hosts reach us at.
fn advertise_address(explicit: Option<IpAddr>, bound: IpAddr, consul: &str) -> IpAddr {
    if let Some(address) = explicit {
        return address;
    }
    if !bound.is_unspecified() {
        return bound;
    }
    route_to(consul).unwrap_or_else(|| {
        tracing::warn!(%consul, "cannot find the local address that routes to Consul; advertising loopback (set --advertise)");
        if bound.is_ipv6() {
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])
        } else {
            IpAddr::from([127, 0, 0, 1])
        }
    })
}

/// The source address the kernel picks to reach `host:port` (a UDP
/// "connect" sends nothing).
fn route_to(host_port: &str) -> Option<IpAddr> {
    let target = host_port.to_socket_addrs().ok()?.next()?;
    let local: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(local).ok()?;
    socket.connect(target).ok()?;
    Some(socket.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertises_the_explicit_then_the_bound_then_the_routed_address() {
        let explicit: IpAddr = "10.1.2.3".parse().unwrap();
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            advertise_address(Some(explicit), loopback, "127.0.0.1:8500"),
            explicit
        );
        assert_eq!(
            advertise_address(None, loopback, "127.0.0.1:8500"),
            loopback
        );
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        assert_eq!(advertise_address(None, any, "127.0.0.1:8500"), loopback);
    }
}
