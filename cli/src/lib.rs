//! What the `mesh` command and the benchmark lab (`mesh-bench`, `bench/`)
//! share: the list of the mesh's services ([`services::ALL`]), which the
//! tests also check every file that names the services against; where an
//! operator's command finds Consul ([`consul_settings`]: the variables and
//! flags, else the local environment `mesh up` describes); the traffic
//! config entries the project ships ([`traffic_config`]); and `-H key=value`
//! metadata flags ([`metadata`]).
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod consul_settings;
pub mod metadata;
pub mod services;
pub mod traffic_config;
