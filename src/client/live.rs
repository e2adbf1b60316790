//! One target service's routing at run time: follows its discovery chain
//! (`discovery::chain::ChainWatch`), compiles each new chain into a
//! [`RoutingTable`], gives every chain target a [`TargetStack`] (kept across
//! chains while the target stays the same), and swaps the result in
//! atomically: every call reads the table in force once, without a lock
//! (`arc-swap`). What Consul accepted but gRPC cannot use is logged once per
//! service, not at every chain change.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, Weak},
};

use arc_swap::ArcSwapOption;
use discovery::{
    chain::{ChainState, ChainWatch, ChainWatchOptions, DiscoveryChain},
    ConsulConfig, Resolver, ResolverOptions,
};
use tokio::{sync::watch, task::JoinHandle};

use super::{
    metrics::TargetMetrics,
    options::ClientOptions,
    routing::{RoutingTable, TargetSpec},
    stack,
    targets::{self, TargetHealth, TargetStack},
};

/// The table in force and a stack per target (same order as the table's targets).
pub(crate) struct LiveTable {
    pub(crate) table: RoutingTable,
    pub(crate) targets: Vec<Arc<TargetStack>>,
}

/// Whether calls can be routed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// No chain yet.
    Pending,
    /// A table is in force.
    Ready,
    /// Consul refuses the chain (403) and no table was ever compiled.
    Refused(String),
    /// The chain cannot be compiled and no table was ever compiled.
    Failed(String),
}

/// The Consul watch of a service's instances: per service, filter and `OnlyPassing`.
type ResolverKey = (String, Option<String>, bool);

#[derive(Default)]
struct Pool {
    chain: Option<Arc<DiscoveryChain>>,
    stacks: HashMap<TargetSpec, Arc<TargetStack>>,
    resolvers: HashMap<ResolverKey, Resolver>,
    /// The service's whole-service watch, once [`ServiceRouting::default_resolver`] handed it out.
    pinned: Option<Resolver>,
    reported: HashSet<String>,
    last_error: Option<String>,
}

/// One service's routing (see the module docs).
pub(crate) struct ServiceRouting {
    service: String,
    consul: ConsulConfig,
    options: ClientOptions,
    metrics: TargetMetrics,
    live: ArcSwapOption<LiveTable>,
    readiness: watch::Sender<Readiness>,
    chain: ChainWatch,
    pool: Mutex<Pool>,
    follower: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for ServiceRouting {
    fn drop(&mut self) {
        if let Some(follower) = self
            .follower
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            follower.abort();
        }
    }
}

impl ServiceRouting {
    /// Starts watching `service`'s chain. Must be called inside a tokio runtime.
    pub(crate) fn start(
        consul: &ConsulConfig,
        service: &str,
        options: &ClientOptions,
        metrics: TargetMetrics,
    ) -> Arc<Self> {
        let chain = ChainWatch::spawn(
            consul,
            service,
            ChainWatchOptions {
                wait: options.watch_wait,
                ..ChainWatchOptions::default()
            },
        );
        let routing = Arc::new(Self {
            service: service.to_owned(),
            consul: consul.clone(),
            options: options.clone(),
            metrics,
            live: ArcSwapOption::empty(),
            readiness: watch::channel(Readiness::Pending).0,
            chain,
            pool: Mutex::default(),
            follower: Mutex::default(),
        });
        let follower = tokio::spawn(follow(Arc::downgrade(&routing), routing.chain.subscribe()));
        *routing.follower.lock().unwrap_or_else(|p| p.into_inner()) = Some(follower);
        routing
    }

    /// The service routed.
    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    /// The table in force (one atomic load), if any.
    pub(crate) fn live(&self) -> Option<Arc<LiveTable>> {
        self.live.load_full()
    }

    /// Follows whether calls can be routed.
    pub(crate) fn readiness(&self) -> watch::Receiver<Readiness> {
        self.readiness.subscribe()
    }

    /// The chain watch's state.
    pub(crate) fn chain_state(&self) -> ChainState {
        self.chain.state()
    }

    /// The watch of the whole service (no subset filter, as Consul's default
    /// chain resolves it): the one the default target's balancer uses.
    pub(crate) fn default_resolver(&self) -> Resolver {
        let mut pool = self.pool();
        if let Some(resolver) = &pool.pinned {
            return resolver.clone();
        }
        let key = (self.service.clone(), None, false);
        let resolver = pool
            .resolvers
            .get(&key)
            .cloned()
            .unwrap_or_else(|| self.spawn_resolver(&key));
        pool.resolvers.insert(key, resolver.clone());
        pool.pinned = Some(resolver.clone());
        resolver
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spawn_resolver(&self, (service, filter, only_passing): &ResolverKey) -> Resolver {
        Resolver::spawn(
            self.consul.clone(),
            service,
            ResolverOptions {
                tag: self.options.tag.clone(),
                wait: self.options.watch_wait,
                connect: self.options.identity.is_some(),
                filter: filter.clone(),
                only_passing: *only_passing,
                ..ResolverOptions::default()
            },
        )
    }

    /// Takes a new chain state: compiles a new chain and swaps it in.
    fn apply(&self, state: &ChainState) {
        match &state.chain {
            Some(chain) => {
                let current = self.pool().chain.clone();
                if current.is_some_and(|current| Arc::ptr_eq(&current, chain)) {
                    return;
                }
                match RoutingTable::compile(chain) {
                    Ok(table) => self.install(table, chain.clone()),
                    Err(error) => {
                        let message = error.to_string();
                        let mut pool = self.pool();
                        if pool.last_error.as_deref() != Some(&message) {
                            tracing::warn!(service = %self.service, %message, "keeping the routing table in force");
                            pool.last_error = Some(message.clone());
                        }
                        pool.chain = Some(chain.clone());
                        drop(pool);
                        if self.live.load().is_none() {
                            self.readiness.send_replace(Readiness::Failed(message));
                        }
                    }
                }
            }
            None => {
                if let (Some(refused), None) = (&state.refused, &*self.live.load()) {
                    self.readiness
                        .send_replace(Readiness::Refused(refused.clone()));
                }
            }
        }
    }

    fn install(&self, table: RoutingTable, chain: Arc<DiscoveryChain>) {
        let mut pool = self.pool();
        for line in table.unusable() {
            if pool.reported.insert(line.clone()) {
                tracing::warn!(service = %self.service, "config entry not usable by gRPC: {line}");
            }
        }
        let mut stacks = HashMap::new();
        let mut resolvers = HashMap::new();
        if let Some(pinned) = &pool.pinned {
            resolvers.insert((self.service.clone(), None, false), pinned.clone());
        }
        let mut targets = Vec::with_capacity(table.targets().len());
        for spec in table.targets() {
            let stack = match pool.stacks.get(spec) {
                Some(stack) => stack.clone(),
                None => {
                    let key = (spec.service.clone(), spec.filter.clone(), spec.only_passing);
                    let resolver = resolvers
                        .get(&key)
                        .or_else(|| pool.resolvers.get(&key))
                        .cloned()
                        .unwrap_or_else(|| self.spawn_resolver(&key));
                    Arc::new(self.target_stack(spec, resolver))
                }
            };
            let key = (spec.service.clone(), spec.filter.clone(), spec.only_passing);
            resolvers.insert(key, stack.resolver.clone());
            stacks.insert(spec.clone(), stack.clone());
            targets.push(stack);
        }
        tracing::info!(
            service = %self.service,
            routes = table.routes().len(),
            targets = %table.targets().iter().map(|t| t.id.as_str()).collect::<Vec<_>>().join(", "),
            "routing table in force"
        );
        pool.stacks = stacks;
        pool.resolvers = resolvers;
        pool.chain = Some(chain);
        pool.last_error = None;
        drop(pool);
        self.live
            .store(Some(Arc::new(LiveTable { table, targets })));
        self.readiness.send_replace(Readiness::Ready);
    }

    fn target_stack(&self, spec: &TargetSpec, resolver: Resolver) -> TargetStack {
        let counters = targets::counters(&self.service, &spec.id);
        let channel = stack::target_channel(spec, &resolver, &self.options, &self.metrics);
        TargetStack::new(spec.clone(), resolver, channel, counters)
    }

    /// What the routing looks like now.
    pub(crate) fn view(&self) -> ChainView {
        let state = self.chain_state();
        let live = self.live();
        let targets = live
            .as_ref()
            .map(|live| {
                live.targets
                    .iter()
                    .map(|stack| {
                        let counters = &stack.counters;
                        let load = |counter: &std::sync::atomic::AtomicU64| {
                            counter.load(std::sync::atomic::Ordering::Relaxed)
                        };
                        TargetView {
                            spec: stack.spec.clone(),
                            health: stack.health(),
                            refused: stack.refusal(),
                            endpoints: stack.resolver.snapshot().endpoints.len(),
                            requests: load(&counters.requests),
                            retries: load(&counters.retries),
                            failovers: load(&counters.failovers),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        ChainView {
            service: self.service.clone(),
            table: live.map(|live| live.table.clone()),
            targets,
            stale: state.stale,
            refused: state.refused,
            last_error: state.last_error,
        }
    }
}

/// Follows the chain watch while the routing lives.
async fn follow(routing: Weak<ServiceRouting>, mut states: watch::Receiver<ChainState>) {
    loop {
        let state = states.borrow_and_update().clone();
        match routing.upgrade() {
            Some(routing) => routing.apply(&state),
            None => return,
        }
        if states.changed().await.is_err() {
            return;
        }
    }
}

/// A service's routing as seen from outside (`MeshClient::chain`): the
/// compiled table and each target's state and counts.
#[derive(Debug, Clone)]
pub struct ChainView {
    /// The service.
    pub service: String,
    /// The table in force (`None` before Consul's first answer).
    pub table: Option<RoutingTable>,
    /// Each target of the table.
    pub targets: Vec<TargetView>,
    /// The chain watch's last request failed (the table in force is the last good one).
    pub stale: bool,
    /// Consul refused the chain (403): why.
    pub refused: Option<String>,
    /// The chain watch's last error.
    pub last_error: Option<String>,
}

/// One target in a [`ChainView`].
#[derive(Debug, Clone)]
pub struct TargetView {
    /// The target.
    pub spec: TargetSpec,
    /// Whether calls can go there.
    pub health: TargetHealth,
    /// Why Consul refused its instances, when it did.
    pub refused: Option<String>,
    /// Healthy instances Consul lists.
    pub endpoints: usize,
    /// First attempts sent there.
    pub requests: u64,
    /// Retries sent there.
    pub retries: u64,
    /// Attempts that went on to a failover target while it had no instance.
    pub failovers: u64,
}
