//! Consul's discovery chain (`GET /v1/discovery-chain/<service>`): the
//! `service-router`, `service-splitter` and `service-resolver` config entries
//! of a service, compiled by Consul into one graph ([`DiscoveryChain`]), and a
//! [`ChainWatch`] that follows it with blocking queries.
//!
//! Consul only ever handed this graph to Envoy; the mesh client compiles it
//! into its own routing table (`mesh::client`).

mod fetch;
mod go_duration;
mod model;
mod watch;

pub use fetch::read;
pub(crate) use fetch::read_permission;
pub use model::{
    ChainFailover, ChainNode, ChainResolver, ChainRoute, ChainSplit, ChainTarget, DiscoveryChain,
    HeaderMatch, HttpMatch, QueryParamMatch, ResolverNode, RouteDefinition, RouteDestination,
    RouteMatch, RouterNode, SplitterNode, TargetSubset,
};
pub use watch::{ChainState, ChainWatch, ChainWatchOptions};
