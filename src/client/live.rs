//! One target service's routing at run time: follows its discovery chain
//! (`discovery::chain::ChainWatch`), compiles each new chain into a
//! [`RoutingTable`], gives every chain target a [`TargetStack`] (kept across
//! chains while the target stays the same), and swaps the result in
//! atomically: every call reads the table in force once, without a lock
//! (`arc-swap`). What Consul accepted but gRPC cannot use is logged once per
//! service, not at every chain change.
//!
//! A target that leaves the table keeps its stack (and so its Consul watch)
//! for [`LINGER`]: a chain that comes back — a split flipped back, a canary
//! rolled back — finds it again. Consul 1.8 keeps a blocking query whose
//! client went away, and its connection, until the query's wait ends (5 min),
//! so watches dropped and opened again at each change would pile up against
//! the agent's per-client connection limit (`http_max_conns_per_client`,
//! 200) — measured: flipping a chain 30 times with a fresh watch each time
//! left the agent refusing new connections.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
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

/// How long the stack of a target that left the table is kept (longer than
/// Consul's 5 min blocking wait, see the module docs).
pub(crate) const LINGER: Duration = Duration::from_secs(600);

/// The Consul watch of a service's instances: per service, filter and `OnlyPassing`.
type ResolverKey = (String, Option<String>, bool);

fn resolver_key(spec: &TargetSpec) -> ResolverKey {
    (spec.service.clone(), spec.filter.clone(), spec.only_passing)
}

/// A target's stack, and since when no table uses it.
struct Kept {
    stack: Arc<TargetStack>,
    idle_since: Option<Instant>,
}

#[derive(Default)]
struct Pool {
    chain: Option<Arc<DiscoveryChain>>,
    /// Every stack of the tables in force, and those left idle for less than [`LINGER`].
    stacks: HashMap<TargetSpec, Kept>,
    /// The service's whole-service watch, once [`ServiceRouting::default_resolver`] handed it out.
    pinned: Option<Resolver>,
    reported: HashSet<String>,
    last_error: Option<String>,
}

impl Pool {
    /// A watch of `key` already running (pinned, or a kept stack's).
    fn resolver(&self, key: &ResolverKey, default_key: &ResolverKey) -> Option<Resolver> {
        if key == default_key {
            if let Some(pinned) = &self.pinned {
                return Some(pinned.clone());
            }
        }
        self.stacks
            .iter()
            .find(|(spec, _)| resolver_key(spec) == *key)
            .map(|(_, kept)| kept.stack.resolver.clone())
    }
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
        let key = self.default_key();
        let resolver = pool
            .resolver(&key, &key)
            .unwrap_or_else(|| self.spawn_resolver(&key));
        pool.pinned = Some(resolver.clone());
        resolver
    }

    /// The whole service's watch key (Consul's default chain target).
    fn default_key(&self) -> ResolverKey {
        (self.service.clone(), None, false)
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
        let default_key = self.default_key();
        let mut targets = Vec::with_capacity(table.targets().len());
        for spec in table.targets() {
            let stack = match pool.stacks.get_mut(spec) {
                Some(kept) => {
                    kept.idle_since = None;
                    kept.stack.clone()
                }
                None => {
                    let key = resolver_key(spec);
                    let resolver = pool
                        .resolver(&key, &default_key)
                        .unwrap_or_else(|| self.spawn_resolver(&key));
                    let stack = Arc::new(self.target_stack(spec, resolver));
                    let kept = Kept {
                        stack: stack.clone(),
                        idle_since: None,
                    };
                    pool.stacks.insert(spec.clone(), kept);
                    stack
                }
            };
            targets.push(stack);
        }
        let now = Instant::now();
        let in_use: HashSet<&TargetSpec> = table.targets().iter().collect();
        for (spec, kept) in pool.stacks.iter_mut() {
            if !in_use.contains(spec) {
                kept.idle_since.get_or_insert(now);
            }
        }
        pool.stacks.retain(|_, kept| {
            kept.idle_since
                .is_none_or(|since| now.duration_since(since) < LINGER)
        });
        tracing::info!(
            service = %self.service,
            routes = table.routes().len(),
            targets = %table.targets().iter().map(|t| t.id.as_str()).collect::<Vec<_>>().join(", "),
            "routing table in force"
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/discovery/tests/fixtures");

    fn chain(name: &str) -> Arc<DiscoveryChain> {
        let body = std::fs::read(format!("{FIXTURES}/chain_{name}.json")).expect("fixture");
        let mut chain = DiscoveryChain::parse(&body).expect("chain");
        chain.service_name = "inventory".into();
        Arc::new(chain)
    }

    fn install(routing: &ServiceRouting, chain: Arc<DiscoveryChain>) -> Arc<LiveTable> {
        routing.install(RoutingTable::compile(&chain).expect("compiles"), chain);
        routing.live().expect("a table in force")
    }

    fn stack<'a>(live: &'a LiveTable, subset: &str) -> &'a Arc<TargetStack> {
        live.targets
            .iter()
            .find(|stack| stack.spec.subset == subset)
            .expect("the subset's stack")
    }

    #[tokio::test]
    async fn a_chain_that_comes_back_finds_its_targets_watches_again() {
        // No agent listens there: the watches only retry in the background.
        let consul = ConsulConfig::new("127.0.0.1:9", None).expect("config");
        let routing = ServiceRouting::start(
            &consul,
            "inventory",
            &ClientOptions::default(),
            TargetMetrics::default(),
        );
        let canary = install(&routing, chain("canary"));
        let v2 = stack(&canary, "v2").clone();
        let default = routing.default_resolver();

        // Plain, then the canary again: the same stacks, the same watches.
        let plain = install(&routing, Arc::new(DiscoveryChain::default_for("inventory")));
        assert_eq!(plain.targets.len(), 1);
        assert!(
            plain.targets[0].resolver.same_watch(&default),
            "the whole-service target uses the pinned watch"
        );
        let again = install(&routing, chain("canary"));
        assert!(Arc::ptr_eq(stack(&again, "v2"), &v2), "v2's stack was kept");
        assert!(stack(&again, "v2").resolver.same_watch(&v2.resolver));
        assert_eq!(
            routing.pool().stacks.len(),
            3,
            "v1, v2 and the whole service"
        );
    }
}
