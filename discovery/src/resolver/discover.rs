//! Snapshots → a tower `Discover` stream of `Change::Insert` / `Change::Remove`.

use std::{
    collections::{BTreeMap, VecDeque},
    convert::Infallible,
    fmt,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures::Stream;
use tokio::sync::watch;
use tower::discover::Change;

use super::{Inner, Snapshot};
use crate::health::Endpoint;

type Changes = Pin<Box<dyn Stream<Item = Result<Change<String, Endpoint>, Infallible>> + Send>>;

/// A tower `Discover` of one service's healthy endpoints, keyed by service ID
/// (made by [`Resolver::discover`](super::Resolver::discover)). It implements
/// `Stream<Item = Result<Change<String, Endpoint>, Infallible>>`, so it is a
/// `tower::discover::Discover` with `Key = String`, `Service = Endpoint`.
/// It keeps the resolver's watch running while it exists.
pub struct Discover {
    changes: Changes,
    _resolver: Arc<Inner>,
}

impl fmt::Debug for Discover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discover").finish_non_exhaustive()
    }
}

struct State {
    snapshots: watch::Receiver<Snapshot>,
    current: Arc<BTreeMap<String, Endpoint>>,
    pending: VecDeque<Change<String, Endpoint>>,
}

impl Discover {
    pub(super) fn new(mut snapshots: watch::Receiver<Snapshot>, resolver: Arc<Inner>) -> Self {
        let current = snapshots.borrow_and_update().endpoints.clone();
        let state = State {
            pending: diff(&BTreeMap::new(), &current).into(),
            snapshots,
            current,
        };
        let changes = futures::stream::unfold(state, |mut state| async move {
            loop {
                if let Some(change) = state.pending.pop_front() {
                    return Some((Ok(change), state));
                }
                state.snapshots.changed().await.ok()?;
                let next = state.snapshots.borrow_and_update().endpoints.clone();
                if !Arc::ptr_eq(&next, &state.current) {
                    state.pending.extend(diff(&state.current, &next));
                    state.current = next;
                }
            }
        });
        Self {
            changes: Box::pin(changes),
            _resolver: resolver,
        }
    }
}

impl Stream for Discover {
    type Item = Result<Change<String, Endpoint>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.changes.as_mut().poll_next(cx)
    }
}

/// The changes that turn `old` into `new`: inserts (new or changed endpoints)
/// first, so that a balancer is never emptied by a wholesale replacement, then
/// removals.
pub(crate) fn diff(
    old: &BTreeMap<String, Endpoint>,
    new: &BTreeMap<String, Endpoint>,
) -> Vec<Change<String, Endpoint>> {
    let inserts = new
        .iter()
        .filter(|(id, endpoint)| old.get(*id) != Some(endpoint))
        .map(|(id, endpoint)| Change::Insert(id.clone(), endpoint.clone()));
    let removes = old
        .keys()
        .filter(|id| !new.contains_key(*id))
        .map(|id| Change::Remove(id.clone()));
    inserts.chain(removes).collect()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn endpoint(id: &str, port: u16) -> Endpoint {
        Endpoint {
            id: id.into(),
            service: "users".into(),
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            tags: vec![],
            meta: BTreeMap::new(),
            node: "node".into(),
        }
    }

    fn set(endpoints: &[Endpoint]) -> BTreeMap<String, Endpoint> {
        endpoints
            .iter()
            .map(|endpoint| (endpoint.id.clone(), endpoint.clone()))
            .collect()
    }

    fn describe(changes: &[Change<String, Endpoint>]) -> Vec<String> {
        changes
            .iter()
            .map(|change| match change {
                Change::Insert(id, endpoint) => format!("+{id}@{}", endpoint.address.port()),
                Change::Remove(id) => format!("-{id}"),
            })
            .collect()
    }

    #[test]
    fn diffs_inserts_changes_and_removals() {
        let a = endpoint("a", 1);
        let b = endpoint("b", 2);
        let c = endpoint("c", 3);
        assert_eq!(
            describe(&diff(&set(&[]), &set(&[a.clone(), b.clone()]))),
            ["+a@1", "+b@2"]
        );
        assert!(diff(&set(&[a.clone(), b.clone()]), &set(&[a.clone(), b.clone()])).is_empty());
        assert_eq!(
            describe(&diff(
                &set(&[a.clone(), b.clone()]),
                &set(&[b.clone(), c.clone()])
            )),
            ["+c@3", "-a"]
        );
        let moved = endpoint("b", 20);
        assert_eq!(
            describe(&diff(
                &set(&[a.clone(), b.clone()]),
                &set(&[a.clone(), moved])
            )),
            ["+b@20"]
        );
        let mut retagged = a.clone();
        retagged.tags.push("canary".into());
        assert_eq!(
            describe(&diff(&set(std::slice::from_ref(&a)), &set(&[retagged]))),
            ["+a@1"]
        );
        assert_eq!(describe(&diff(&set(&[a, b]), &set(&[]))), ["-a", "-b"]);
    }

    #[test]
    fn diffs_applied_in_order_rebuild_the_new_set() {
        let sets = [
            set(&[]),
            set(&[endpoint("a", 1), endpoint("b", 2)]),
            set(&[endpoint("b", 2), endpoint("c", 3)]),
            set(&[endpoint("b", 4)]),
            set(&[]),
            set(&[endpoint("d", 5)]),
        ];
        let mut applied = BTreeMap::new();
        for window in sets.windows(2) {
            for change in diff(&window[0], &window[1]) {
                match change {
                    Change::Insert(id, endpoint) => {
                        applied.insert(id, endpoint);
                    }
                    Change::Remove(id) => {
                        assert!(applied.remove(&id).is_some(), "removed unknown {id}");
                    }
                }
            }
            assert_eq!(applied, window[1]);
        }
    }

    fn snapshot(endpoints: &[Endpoint]) -> Snapshot {
        Snapshot {
            endpoints: Arc::new(set(endpoints)),
            initialized: true,
            ..Snapshot::default()
        }
    }

    async fn next(discover: &mut Discover) -> Option<String> {
        use futures::StreamExt;
        let item =
            tokio::time::timeout(std::time::Duration::from_millis(200), discover.next()).await;
        match item {
            Ok(Some(Ok(change))) => Some(describe(std::slice::from_ref(&change)).remove(0)),
            Ok(Some(Err(never))) => match never {},
            Ok(None) => Some("end".into()),
            Err(_) => None,
        }
    }

    #[tokio::test]
    async fn streams_start_with_the_current_set_then_follow_diffs() {
        let (sender, receiver) = watch::channel(snapshot(&[endpoint("a", 1), endpoint("b", 2)]));
        let resolver = crate::Resolver::from_channel("users", receiver);
        let mut first = resolver.discover();
        assert_eq!(next(&mut first).await.as_deref(), Some("+a@1"));
        assert_eq!(next(&mut first).await.as_deref(), Some("+b@2"));
        assert_eq!(
            next(&mut first).await,
            None,
            "nothing more until the set changes"
        );

        sender.send_modify(|snapshot| {
            *snapshot = Snapshot {
                updates: 2,
                ..self::snapshot(&[endpoint("b", 2), endpoint("c", 3)])
            }
        });
        assert_eq!(next(&mut first).await.as_deref(), Some("+c@3"));
        assert_eq!(next(&mut first).await.as_deref(), Some("-a"));

        // A second stream from the same resolver starts from the current set.
        let mut second = resolver.discover();
        assert_eq!(next(&mut second).await.as_deref(), Some("+b@2"));
        assert_eq!(next(&mut second).await.as_deref(), Some("+c@3"));

        // Consul unreachable: the set is kept, no change is emitted.
        sender.send_modify(|snapshot| {
            snapshot.stale = true;
            snapshot.errors += 1;
        });
        assert_eq!(next(&mut first).await, None);
        assert_eq!(next(&mut second).await, None);

        // Both follow the next change; the streams outlive the Resolver handle.
        drop(resolver);
        sender.send_modify(|snapshot| snapshot.endpoints = Arc::new(set(&[endpoint("c", 3)])));
        assert_eq!(next(&mut first).await.as_deref(), Some("-b"));
        assert_eq!(next(&mut second).await.as_deref(), Some("-b"));

        drop(sender);
        assert_eq!(next(&mut first).await.as_deref(), Some("end"));
    }

    #[tokio::test]
    async fn an_uninitialized_resolver_emits_nothing_first() {
        let (sender, receiver) = watch::channel(Snapshot::default());
        let resolver = crate::Resolver::from_channel("users", receiver);
        let mut discover = resolver.discover();
        assert_eq!(next(&mut discover).await, None);
        sender.send_replace(snapshot(&[endpoint("a", 1)]));
        assert_eq!(next(&mut discover).await.as_deref(), Some("+a@1"));
    }

    #[test]
    fn discover_is_a_tower_discover() {
        fn assert_discover<D>(_: &D)
        where
            D: tower::discover::Discover<Key = String, Service = Endpoint, Error = Infallible>
                + Send
                + Unpin
                + 'static,
        {
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (_sender, receiver) = watch::channel(Snapshot::default());
            assert_discover(&crate::Resolver::from_channel("users", receiver).discover());
        });
    }
}
