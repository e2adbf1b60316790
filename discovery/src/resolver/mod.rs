//! The watch of one service's healthy instances: a single blocking-query loop
//! per [`Resolver`], shared by every subscriber.

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

use tokio::{sync::watch, task::JoinHandle};
use tracing::Instrument;

mod discover;

pub use discover::Discover;

use crate::{
    blocking::{BlockingLoop, Failed},
    config::ConsulConfig,
    health::{self, Endpoint, HealthQuery, DEFAULT_WAIT},
    http::ConsulHttp,
};

/// Tuning of the watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverOptions {
    /// Only instances with this Consul tag.
    pub tag: Option<String>,
    /// Longest blocking wait per request (default 5 min, capped at Consul's 10 min).
    pub wait: Duration,
    /// `?stale` reads: any server answers, spreading load off the leader (default false).
    pub stale: bool,
    /// First retry delay after a failed request (default 100 ms).
    pub min_backoff: Duration,
    /// Longest retry delay (default 10 s).
    pub max_backoff: Duration,
    /// Watch `/v1/health/connect/<name>` (Connect-native instances only: what an
    /// mTLS client may dial) instead of `/v1/health/service/<name>` (default false).
    pub connect: bool,
    /// Only instances matching this Consul filter expression (a resolver
    /// subset's `Filter`, e.g. `Service.Meta.version == "v2"`); default none.
    pub filter: Option<String>,
    /// `true` (the default): only instances whose every check passes.
    /// `false`: an instance with a `warning` check counts too, one with a
    /// `critical` check does not (a resolver subset without `OnlyPassing`).
    pub only_passing: bool,
}

impl Default for ResolverOptions {
    fn default() -> Self {
        Self {
            tag: None,
            wait: DEFAULT_WAIT,
            stale: false,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            connect: false,
            filter: None,
            only_passing: true,
        }
    }
}

/// The resolver's view at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Healthy instances keyed by service ID.
    pub endpoints: Arc<BTreeMap<String, Endpoint>>,
    /// `X-Consul-Index` of the last answer.
    pub index: u64,
    /// Consul has answered at least once.
    pub initialized: bool,
    /// The last request failed: `endpoints` is the last good set.
    pub stale: bool,
    /// Why the last request failed, cleared by the next answer.
    pub last_error: Option<String>,
    /// Answers that changed the set (the first answer counts).
    pub updates: u64,
    /// Failed requests.
    pub errors: u64,
    /// Set while Consul answers with no instance *because the token may not
    /// read the service*: with ACLs default-deny, a health query without
    /// `service:read` is not refused but answered with an empty list, so an
    /// empty answer is checked with a read that Consul does refuse (the
    /// service's discovery chain). `None` when the service is readable (an
    /// empty set then really means "no passing instance").
    pub refused: Option<String>,
}

impl Snapshot {
    /// The endpoints' socket addresses, in service-ID order.
    pub fn addresses(&self) -> Vec<std::net::SocketAddr> {
        self.endpoints
            .values()
            .map(|endpoint| endpoint.address)
            .collect()
    }
}

/// Watches `GET /v1/health/service/<name>?passing` (or `/v1/health/connect/…`,
/// with a subset's filter) and publishes [`Snapshot`]s.
///
/// Cheap to clone; the background task ends when the last clone and the last
/// [`Discover`] made from it are dropped.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

struct Inner {
    service: String,
    snapshots: watch::Receiver<Snapshot>,
    task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snapshot = self.inner.snapshots.borrow();
        f.debug_struct("Resolver")
            .field("service", &self.inner.service)
            .field("endpoints", &snapshot.endpoints.len())
            .field("index", &snapshot.index)
            .field("stale", &snapshot.stale)
            .finish()
    }
}

impl Resolver {
    /// Starts one blocking-query watch of `GET /v1/health/service/<service>?passing`
    /// (`&tag=…`, `&stale`) with `index` + `wait`, following Consul's guide: the
    /// index is reset when it goes backwards and never sent as 0 after an
    /// answer; watches that return at once too often are rate-limited; errors
    /// back off exponentially with jitter; while Consul is unreachable the last
    /// good set is kept and [`Snapshot::stale`] is true. Must be called inside a
    /// tokio runtime.
    pub fn spawn(config: ConsulConfig, service: &str, options: ResolverOptions) -> Resolver {
        let query = HealthQuery::new(service, options.tag.as_deref(), options.stale, options.wait)
            .connect(options.connect)
            .filter(options.filter.as_deref())
            .only_passing(options.only_passing);
        let (sender, snapshots) = watch::channel(Snapshot::default());
        let span = tracing::info_span!("consul_watch", service = %service);
        let task =
            tokio::spawn(run(ConsulHttp::new(&config), query, options, sender).instrument(span));
        Resolver {
            inner: Arc::new(Inner {
                service: service.to_owned(),
                snapshots,
                task,
            }),
        }
    }

    /// The Consul service name watched.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// Whether `other` is a clone of this resolver (the same watch).
    pub fn same_watch(&self, other: &Resolver) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The current view.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.snapshots.borrow().clone()
    }

    /// Follows the view: notified when the set, `initialized`, `stale`,
    /// `last_error` or `errors` change (not for index-only changes).
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.inner.snapshots.clone()
    }

    /// A tower `Discover` keyed by service ID: first an `Insert` for each
    /// current endpoint, then the differences between successive sets
    /// (`Insert` for new or changed endpoints, `Remove` for gone ones).
    /// Any number of streams share this resolver's one watch.
    pub fn discover(&self) -> Discover {
        Discover::new(self.inner.snapshots.clone(), self.inner.clone())
    }
}

async fn run(
    http: ConsulHttp,
    query: HealthQuery,
    options: ResolverOptions,
    sender: watch::Sender<Snapshot>,
) {
    let mut watch = BlockingLoop::new(options.min_backoff, options.max_backoff);
    let mut last_skipped = Vec::new();
    loop {
        let (http, query) = (&http, &query);
        let answer = watch
            .next(|index| async move {
                let answer = health::fetch(http, query, index).await?;
                Ok((answer.index, answer))
            })
            .await;
        match answer {
            Ok(answer) => {
                if answer.skipped != last_skipped {
                    for reason in &answer.skipped {
                        tracing::warn!(reason = %reason, "ignoring a Consul health entry");
                    }
                    last_skipped = answer.skipped;
                }
                let refused = if answer.endpoints.is_empty() {
                    refusal(http, query.service()).await
                } else {
                    None
                };
                publish(&sender, answer.endpoints, answer.index, refused);
            }
            Err(Failed { error, retry_in }) => {
                sender.send_modify(|snapshot| {
                    if snapshot.stale {
                        tracing::debug!(%error, ?retry_in, "Consul health query failed");
                    } else {
                        tracing::warn!(
                            %error,
                            ?retry_in,
                            kept = snapshot.endpoints.len(),
                            "Consul health query failed: keeping the last known endpoints"
                        );
                    }
                    snapshot.stale = true;
                    snapshot.errors += 1;
                    snapshot.last_error = Some(error.to_string());
                });
                tokio::time::sleep(retry_in).await;
            }
        }
    }
}

/// Stores an answer; subscribers hear of it when something they see changed.
fn publish(
    sender: &watch::Sender<Snapshot>,
    endpoints: BTreeMap<String, Endpoint>,
    index: u64,
    refused: Option<String>,
) {
    sender.send_if_modified(|snapshot| {
        let changed = !snapshot.initialized || *snapshot.endpoints != endpoints;
        let notify = changed
            || snapshot.stale
            || snapshot.last_error.is_some()
            || snapshot.refused != refused;
        if changed {
            tracing::debug!(endpoints = endpoints.len(), index, "endpoints changed");
            snapshot.endpoints = Arc::new(endpoints);
            snapshot.updates += 1;
        }
        if snapshot.stale {
            tracing::info!("Consul answers again");
        }
        if refused.is_some() && snapshot.refused.is_none() {
            tracing::warn!(
                reason = refused.as_deref().unwrap_or_default(),
                "Consul answers no instance because the token may not read the service"
            );
        }
        snapshot.index = index;
        snapshot.initialized = true;
        snapshot.stale = false;
        snapshot.last_error = None;
        snapshot.refused = refused;
        notify
    });
}

/// Whether an empty answer hides a refusal: `Some(reason)` when Consul
/// refuses to read `service` with our token. Any other outcome (readable, or
/// the check itself failed) is taken as "really empty".
async fn refusal(http: &ConsulHttp, service: &str) -> Option<String> {
    match crate::chain::read_permission(http, service).await {
        Err(denied @ crate::ConsulError::Denied { .. }) => Some(denied.to_string()),
        Err(error) => {
            tracing::debug!(%error, "could not check whether the token may read the service");
            None
        }
        Ok(()) => None,
    }
}

#[cfg(test)]
impl Resolver {
    /// A resolver fed by hand instead of by Consul.
    pub(crate) fn from_channel(service: &str, snapshots: watch::Receiver<Snapshot>) -> Self {
        Resolver {
            inner: Arc::new(Inner {
                service: service.to_owned(),
                snapshots,
                task: tokio::spawn(std::future::pending()),
            }),
        }
    }
}
