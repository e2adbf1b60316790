//! The broker contract (`events/src/broker.rs`) checked against both real
//! servers: the same cases run against a `redis-server` (AOF,
//! `appendfsync always`) and a RabbitMQ node, each started once for this
//! binary on free loopback ports (this file has its own `main`: it stops
//! and reaps both at the end). A few adapter-specific cases follow the
//! common ones.
//!
//! `cargo test -p events --test conformance [-- FILTER]`

use std::{
    process::ExitCode,
    sync::Mutex,
    time::{Duration, Instant},
};

use events::{
    Broker, BrokerError, BrokerSettings, BrokerUrl, Deliveries, Delivery, Event, EventBroker,
    Subscription,
};
use testkit::{
    harness::{self, Case, Tally},
    RabbitServer, RedisServer,
};

/// What a case needs: the server (to stop and start it) and a runtime.
struct Target {
    kind: &'static str,
    server: Mutex<Server>,
    runtime: tokio::runtime::Runtime,
}

enum Server {
    Redis(RedisServer),
    Rabbit(RabbitServer),
}

impl Target {
    fn start(kind: &'static str) -> Self {
        let server = match kind {
            "redis" => Server::Redis(RedisServer::start()),
            _ => Server::Rabbit(RabbitServer::start()),
        };
        Self {
            kind,
            server: Mutex::new(server),
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime"),
        }
    }

    fn url(&self) -> String {
        match &*self.server.lock().unwrap() {
            Server::Redis(server) => server.url(),
            Server::Rabbit(server) => server.url(),
        }
    }

    fn settings(&self) -> BrokerSettings {
        BrokerSettings::new(BrokerUrl::parse(&self.url()).unwrap())
    }

    fn broker(&self) -> Broker {
        // The Redis adapter's connection manager needs the runtime.
        let _runtime = self.runtime.enter();
        events::connect(&self.settings()).unwrap()
    }

    fn kill(&self) {
        match &mut *self.server.lock().unwrap() {
            Server::Redis(server) => server.kill(),
            Server::Rabbit(server) => server.kill(),
        }
    }

    fn resume(&self) {
        match &mut *self.server.lock().unwrap() {
            Server::Redis(server) => server.resume(),
            Server::Rabbit(server) => server.resume(),
        }
    }

    /// The end of the server's own log (for a failing case's reader).
    fn server_log_tail(&self) -> String {
        match &*self.server.lock().unwrap() {
            Server::Redis(_) => String::new(),
            Server::Rabbit(server) => std::fs::read_dir(server.log_dir())
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
                .map(|log| {
                    let lines: Vec<&str> = log
                        .lines()
                        .filter(|line| {
                            !line.contains("Channel error")
                                && !line.contains("caused a channel exception")
                        })
                        .collect();
                    lines[lines.len().saturating_sub(60)..].join("\n")
                })
                .collect::<Vec<_>>()
                .join("\n----\n"),
        }
    }

    /// `redis-cli` against the Redis server.
    fn redis_cli(&self, args: &[&str]) -> String {
        match &*self.server.lock().unwrap() {
            Server::Redis(server) => server.cli(args),
            Server::Rabbit(_) => panic!("not a Redis target"),
        }
    }

    fn block_on<T>(&self, future: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(future)
    }

    /// Puts a message that is not an event on `topic`, past the adapter.
    async fn publish_garbage(&self, topic: &str) {
        let url = self.url();
        match self.kind {
            "redis" => {
                self.redis_cli(&[
                    "XADD",
                    &format!("mesh.events.{topic}"),
                    "*",
                    "colour",
                    "blue",
                ]);
            }
            _ => {
                use lapin::{options::BasicPublishOptions, types::ShortString, BasicProperties};
                let connection =
                    lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
                        .await
                        .unwrap();
                let channel = connection.create_channel().await.unwrap();
                channel
                    .confirm_select(lapin::options::ConfirmSelectOptions::default())
                    .await
                    .unwrap();
                let confirm = channel
                    .basic_publish(
                        ShortString::from("mesh.events"),
                        ShortString::from(topic),
                        BasicPublishOptions::default(),
                        b"not an event",
                        BasicProperties::default(),
                    )
                    .await
                    .unwrap()
                    .await
                    .unwrap();
                assert!(confirm.is_ack());
                let _ = connection.close(200, ShortString::from("bye")).await;
            }
        }
    }
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn event(n: usize) -> Event {
    Event::protobuf(
        uuid::Uuid::new_v4().to_string(),
        "/mesh/conformance",
        "mesh.test.v1.Thing",
        format!("subject-{n}"),
        1_700_000_000_000 + n as i64,
        format!("body-{n}").into_bytes(),
    )
    .with_trace(Some(TRACEPARENT.to_owned()), Some("mesh=1".to_owned()))
}

fn subscription(topic: &str, group: &str, consumer: &str) -> Subscription {
    Subscription {
        claim_idle: Duration::from_millis(800),
        ..Subscription::new(topic, group, consumer)
    }
}

/// `consumer` of `group` on `topic`, joined (the group created if new).
async fn join(broker: &Broker, topic: &str, group: &str, consumer: &str) -> Deliveries {
    broker
        .subscribe(&subscription(topic, group, consumer))
        .await
        .unwrap()
}

async fn next(deliveries: &mut Deliveries, within: Duration) -> Option<Delivery> {
    match tokio::time::timeout(within, deliveries.next()).await {
        Ok(result) => Some(result.expect("a delivery")),
        Err(_) => None,
    }
}

async fn expect_next(deliveries: &mut Deliveries) -> Delivery {
    next(deliveries, Duration::from_secs(15))
        .await
        .expect("a delivery within 15 s")
}

async fn publish_all(broker: &Broker, topic: &str, events: &[Event]) {
    for event in events {
        broker.publish(topic, event).await.expect("publish");
    }
}

/// Receives `count` deliveries, acknowledging each; their events.
async fn receive_and_ack(deliveries: &mut Deliveries, count: usize) -> Vec<Event> {
    let mut events = Vec::new();
    for _ in 0..count {
        let delivery = expect_next(deliveries).await;
        events.push(delivery.event.clone().expect("a valid event"));
        delivery.ack().await.expect("ack");
    }
    events
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn every_event_reaches_every_group_with_its_attributes(target: &Target) {
    target.block_on(async {
        let broker = target.broker();
        let topic = unique("t");
        let mut first = join(&broker, &topic, "first", "a").await;
        let mut second = join(&broker, &topic, "second", "a").await;
        let sent: Vec<Event> = (0..10).map(event).collect();
        publish_all(&broker, &topic, &sent).await;
        for deliveries in [&mut first, &mut second] {
            let mut received = receive_and_ack(deliveries, sent.len()).await;
            received.sort_by_key(|event| event.subject.clone());
            let mut expected = sent.clone();
            expected.sort_by_key(|event| event.subject.clone());
            // Every attribute, the trace context and the body, unchanged.
            assert_eq!(received, expected);
            assert!(
                next(deliveries, Duration::from_millis(500)).await.is_none(),
                "no more"
            );
        }
    });
}

fn a_group_created_later_starts_from_the_oldest_retained_event(target: &Target) {
    target.block_on(async {
        let broker = target.broker();
        let topic = unique("t");
        let early: Vec<Event> = (0..5).map(event).collect();
        publish_all(&broker, &topic, &early).await;
        let mut late = join(&broker, &topic, "late", "a").await;
        let after = event(5);
        broker.publish(&topic, &after).await.unwrap();
        let mut ids: Vec<String> = receive_and_ack(&mut late, 6)
            .await
            .into_iter()
            .map(|event| event.id)
            .collect();
        ids.sort();
        ids.dedup();
        let mut expected: Vec<String> = early
            .iter()
            .chain([&after])
            .map(|event| event.id.clone())
            .collect();
        expected.sort();
        assert_eq!(ids, expected);
    });
}

fn a_handed_back_delivery_comes_again_with_the_next_attempt(target: &Target) {
    target.block_on(async {
        let broker = target.broker();
        let topic = unique("t");
        let mut deliveries = join(&broker, &topic, "g", "a").await;
        let sent = event(1);
        broker.publish(&topic, &sent).await.unwrap();
        let first = expect_next(&mut deliveries).await;
        assert_eq!(first.attempt, 1);
        first.retry().await.unwrap();
        let second = expect_next(&mut deliveries).await;
        assert_eq!(second.event.as_ref().unwrap().id, sent.id);
        assert_eq!(second.attempt, 2);
        second.ack().await.unwrap();
        assert!(next(&mut deliveries, Duration::from_secs(2))
            .await
            .is_none());
    });
}

fn a_dead_consumers_deliveries_go_to_another_consumer_of_the_group(target: &Target) {
    target.block_on(async {
        let broker = target.broker();
        let topic = unique("t");
        let mut survivor = join(&broker, &topic, "g", "survivor").await;
        let mut doomed = join(&broker, &topic, "g", "doomed").await;
        // Publish until the doomed consumer holds one.
        let held = loop {
            let sent = event(1);
            broker.publish(&topic, &sent).await.unwrap();
            if let Some(delivery) = next(&mut doomed, Duration::from_millis(500)).await {
                break delivery;
            }
            let taken = expect_next(&mut survivor).await;
            taken.ack().await.unwrap();
        };
        let held_id = held.event.as_ref().unwrap().id.clone();
        // The consumer dies with it unacknowledged.
        drop(held);
        drop(doomed);
        let again = expect_next(&mut survivor).await;
        assert_eq!(again.event.as_ref().unwrap().id, held_id);
        assert_eq!(again.attempt, 2, "a redelivery counts");
        again.ack().await.unwrap();
    });
}

fn an_event_whose_consumers_keep_dying_is_dead_lettered_by_the_broker(target: &Target) {
    target.block_on(async {
        let broker = target.broker();
        let topic = unique("t");
        let spec = |consumer: &str| Subscription {
            max_deliveries: 2,
            ..subscription(&topic, "g", consumer)
        };
        drop(broker.subscribe(&spec("setup")).await.unwrap());
        broker.publish(&topic, &event(1)).await.unwrap();
        let mut attempts = Vec::new();
        for round in 0..4 {
            let mut deliveries = broker.subscribe(&spec(&format!("c{round}"))).await.unwrap();
            match next(&mut deliveries, Duration::from_secs(4)).await {
                // Dies without a verdict.
                Some(delivery) => attempts.push(delivery.attempt),
                None => break,
            }
        }
        assert_eq!(
            attempts,
            [1, 2],
            "delivered max_deliveries times, then no more"
        );
        wait_for("the dead letter", async || {
            broker.dead_letter_count(&topic, "g").await.unwrap() == 1
        })
        .await;
    });
}

fn a_dead_lettered_event_leaves_the_group(target: &Target) {
    target.block_on(async {
        let broker = target.broker();
        let topic = unique("t");
        let mut deliveries = join(&broker, &topic, "g", "a").await;
        assert_eq!(broker.dead_letter_count(&topic, "g").await.unwrap(), 0);
        broker.publish(&topic, &event(1)).await.unwrap();
        let delivery = expect_next(&mut deliveries).await;
        delivery
            .dead_letter("cannot ship to the moon")
            .await
            .unwrap();
        wait_for("the dead letter", async || {
            broker.dead_letter_count(&topic, "g").await.unwrap() == 1
        })
        .await;
        assert!(next(&mut deliveries, Duration::from_secs(2))
            .await
            .is_none());
        let backlog = broker.backlog(&topic, "g").await.unwrap();
        assert_eq!(backlog.total(), 0, "{backlog:?}");
    });
}

fn a_message_that_is_not_an_event_is_delivered_as_malformed(target: &Target) {
    target.block_on(async {
        let broker = target.broker();
        let topic = unique("t");
        let mut deliveries = join(&broker, &topic, "g", "a").await;
        target.publish_garbage(&topic).await;
        let delivery = expect_next(&mut deliveries).await;
        let error = delivery.event.as_ref().unwrap_err().clone();
        assert!(
            error.reason.contains("ce_specversion is missing"),
            "{error}"
        );
        delivery.dead_letter(&error.to_string()).await.unwrap();
        // The consumer keeps going.
        let good = event(2);
        broker.publish(&topic, &good).await.unwrap();
        let next_one = expect_next(&mut deliveries).await;
        assert_eq!(next_one.event.as_ref().unwrap().id, good.id);
        next_one.ack().await.unwrap();
    });
}

fn an_invalid_event_is_refused_before_it_is_sent(target: &Target) {
    target.block_on(async {
        let broker = target.broker();
        let topic = unique("t");
        let mut bad = event(1);
        bad.id = String::new();
        let error = broker.publish(&topic, &bad).await.unwrap_err();
        assert!(matches!(error, BrokerError::Malformed(_)), "{error}");
        assert!(!error.is_transient());
    });
}

fn a_batch_is_answered_per_event_and_stored_in_order(target: &Target) {
    target.block_on(async {
        let broker = target.broker();
        let topic = unique("t");
        let mut deliveries = join(&broker, &topic, "g", "a").await;
        let mut sent: Vec<Event> = (0..5).map(event).collect();
        sent[2].id = String::new();
        let answers = broker
            .publish_batch(&topic, &sent.iter().collect::<Vec<_>>())
            .await;
        assert_eq!(answers.len(), 5, "one answer per event");
        for (at, answer) in answers.iter().enumerate() {
            if at == 2 {
                let error = answer.as_ref().unwrap_err();
                assert!(matches!(error, BrokerError::Malformed(_)), "{error}");
            } else {
                assert!(answer.is_ok(), "event {at}: {answer:?}");
            }
        }
        let received: Vec<String> = receive_and_ack(&mut deliveries, 4)
            .await
            .into_iter()
            .map(|event| event.subject)
            .collect();
        assert_eq!(
            received,
            ["subject-0", "subject-1", "subject-3", "subject-4"],
            "the valid ones, in the order given"
        );
        assert!(
            next(&mut deliveries, Duration::from_millis(500))
                .await
                .is_none(),
            "the invalid one was never sent"
        );
        assert!(broker.publish_batch(&topic, &[]).await.is_empty());
    });
}

fn the_backlog_counts_what_the_group_has_not_acknowledged(target: &Target) {
    target.block_on(async {
        let broker = target.broker();
        let topic = unique("t");
        let deliveries = join(&broker, &topic, "g", "a").await;
        drop(deliveries);
        publish_all(&broker, &topic, &(0..3).map(event).collect::<Vec<_>>()).await;
        wait_for("a backlog of 3", async || {
            broker.backlog(&topic, "g").await.unwrap().total() == 3
        })
        .await;
        let mut deliveries = join(&broker, &topic, "g", "b").await;
        receive_and_ack(&mut deliveries, 3).await;
        wait_for("no backlog", async || {
            broker.backlog(&topic, "g").await.unwrap().total() == 0
        })
        .await;
        // A group nobody created has no backlog, not an error.
        assert_eq!(broker.backlog(&topic, "nobody").await.unwrap().total(), 0);
    });
}

fn publishing_fails_while_the_broker_is_down_and_works_again_after(target: &Target) {
    let broker = target.broker();
    let topic = unique("t");
    let mut deliveries = target.block_on(async {
        let deliveries = join(&broker, &topic, "g", "a").await;
        broker.publish(&topic, &event(0)).await.unwrap();
        deliveries
    });
    let before = target.block_on(receive_and_ack(&mut deliveries, 1));
    target.kill();
    let error = target
        .block_on(broker.publish(&topic, &event(1)))
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
    let batch = [event(3), event(4)];
    let answers = target.block_on(broker.publish_batch(&topic, &batch.iter().collect::<Vec<_>>()));
    assert_eq!(answers.len(), 2);
    for answer in answers {
        let error = answer.expect_err("a batch is not confirmed while the broker is down");
        assert!(error.is_transient(), "{error}");
    }
    target.block_on(async {
        assert!(broker.ping().await.is_err());
        assert!(
            deliveries.next().await.is_err(),
            "the subscription reports the loss"
        );
    });
    target.resume();
    target.block_on(async {
        let sent = event(2);
        let mut last = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Err(error) = broker.publish(&topic, &sent).await {
            assert!(
                Instant::now() < deadline,
                "publishing does not work again: {error}\n{}",
                target.server_log_tail()
            );
            if last.as_ref() != Some(&error.to_string()) {
                eprintln!("after the restart: {error}");
                last = Some(error.to_string());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut again = join(&broker, &topic, "g", "a").await;
        // An acknowledgement sent just before the stop may be lost with it:
        // the event before comes again then (at least once).
        loop {
            let received = receive_and_ack(&mut again, 1).await.remove(0);
            if received.id == sent.id {
                break;
            }
            assert_eq!(
                received.id, before[0].id,
                "only the event before may come again"
            );
        }
    });
}

fn a_wrong_password_is_refused_and_the_right_one_works(target: &Target) {
    target.block_on(async {
        let topic = unique("t");
        let (url, right, _server) = match target.kind {
            "redis" => {
                let server = RedisServer::start_with_password("correct horse");
                (server.url(), "correct horse", Some(server))
            }
            // The node's default user.
            _ => (target.url(), "guest", None),
        };
        let url = BrokerUrl::parse(&url).unwrap();
        let wrong =
            events::connect(&BrokerSettings::new(url.clone()).with_password("battery staple"))
                .unwrap();
        let error = wrong.publish(&topic, &event(1)).await.unwrap_err();
        assert!(
            !error.to_string().contains("battery"),
            "the password is never printed: {error}"
        );
        let right = events::connect(&BrokerSettings::new(url).with_password(right)).unwrap();
        right.publish(&topic, &event(2)).await.unwrap();
    });
}

fn tls_with_the_brokers_ca_works_and_without_it_is_refused(target: &Target) {
    let (url, ca) = match &*target.server.lock().unwrap() {
        Server::Redis(server) => (server.tls_url(), server.tls().ca.clone()),
        Server::Rabbit(server) => (server.tls_url(), server.tls().ca.clone()),
    };
    let url = BrokerUrl::parse(&url).unwrap();
    assert!(url.tls());
    target.block_on(async {
        let topic = unique("t");
        // The system's trust store does not know the test CA.
        let untrusted = events::connect(&BrokerSettings::new(url.clone())).unwrap();
        let error = untrusted.publish(&topic, &event(1)).await.unwrap_err();
        assert!(
            error.to_string().contains("certificate"),
            "refused for the certificate: {error}"
        );
        let mut trusting = BrokerSettings::new(url);
        trusting.ca_pem = Some(std::fs::read(&ca).unwrap());
        let broker = events::connect(&trusting).unwrap();
        let mut deliveries = match broker.subscribe(&subscription(&topic, "g", "a")).await {
            Ok(deliveries) => deliveries,
            Err(error) => panic!("{error}\n{}", target.server_log_tail()),
        };
        let sent = event(2);
        broker.publish(&topic, &sent).await.unwrap();
        assert_eq!(receive_and_ack(&mut deliveries, 1).await[0], sent);
    });
}

fn redis_trimming_never_drops_what_a_group_has_not_acknowledged(target: &Target) {
    target.block_on(async {
        let topic = unique("t");
        let settings = target.settings().with_retention(Duration::from_millis(1));
        let broker = events::connect(&settings).unwrap();
        let mut slow = join(&broker, &topic, "slow", "a").await;
        let mut fast = join(&broker, &topic, "fast", "a").await;
        let sent: Vec<Event> = (0..6).map(event).collect();
        publish_all(&broker, &topic, &sent).await;
        receive_and_ack(&mut fast, 6).await;
        receive_and_ack(&mut slow, 2).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        broker.maintain(&topic).await.unwrap();
        // "slow" has acknowledged 2: only those may go.
        let length: u64 = target
            .redis_cli(&["XLEN", &format!("mesh.events.{topic}")])
            .trim()
            .parse()
            .unwrap();
        assert_eq!(length, 4);
        let rest = receive_and_ack(&mut slow, 4).await;
        let ids: Vec<&str> = rest.iter().map(|event| event.id.as_str()).collect();
        let expected: Vec<&str> = sent[2..].iter().map(|event| event.id.as_str()).collect();
        assert_eq!(ids, expected);
        broker.maintain(&topic).await.unwrap();
        assert_eq!(
            target
                .redis_cli(&["XLEN", &format!("mesh.events.{topic}")])
                .trim(),
            "0"
        );
    });
}

fn redis_a_server_that_does_not_fsync_every_write_is_refused(target: &Target) {
    let cli = |args: &[&str]| target.redis_cli(args);
    cli(&["CONFIG", "SET", "appendfsync", "everysec"]);
    let result = target.block_on(target.broker().publish(&unique("t"), &event(1)));
    cli(&["CONFIG", "SET", "appendfsync", "always"]);
    let error = result.unwrap_err();
    assert!(
        error.to_string().contains("appendfsync everysec"),
        "{error}"
    );
    target
        .block_on(target.broker().publish(&unique("t"), &event(2)))
        .unwrap();
}

/// A case and its name.
type NamedCase = (&'static str, fn(&Target));

fn cases(kind: &'static str) -> Vec<Case<Target>> {
    let common: Vec<NamedCase> = vec![
        (
            "every_event_reaches_every_group_with_its_attributes",
            every_event_reaches_every_group_with_its_attributes,
        ),
        (
            "a_group_created_later_starts_from_the_oldest_retained_event",
            a_group_created_later_starts_from_the_oldest_retained_event,
        ),
        (
            "a_handed_back_delivery_comes_again_with_the_next_attempt",
            a_handed_back_delivery_comes_again_with_the_next_attempt,
        ),
        (
            "a_dead_consumers_deliveries_go_to_another_consumer_of_the_group",
            a_dead_consumers_deliveries_go_to_another_consumer_of_the_group,
        ),
        (
            "an_event_whose_consumers_keep_dying_is_dead_lettered_by_the_broker",
            an_event_whose_consumers_keep_dying_is_dead_lettered_by_the_broker,
        ),
        (
            "a_dead_lettered_event_leaves_the_group",
            a_dead_lettered_event_leaves_the_group,
        ),
        (
            "a_message_that_is_not_an_event_is_delivered_as_malformed",
            a_message_that_is_not_an_event_is_delivered_as_malformed,
        ),
        (
            "an_invalid_event_is_refused_before_it_is_sent",
            an_invalid_event_is_refused_before_it_is_sent,
        ),
        (
            "a_batch_is_answered_per_event_and_stored_in_order",
            a_batch_is_answered_per_event_and_stored_in_order,
        ),
        (
            "the_backlog_counts_what_the_group_has_not_acknowledged",
            the_backlog_counts_what_the_group_has_not_acknowledged,
        ),
        (
            "a_wrong_password_is_refused_and_the_right_one_works",
            a_wrong_password_is_refused_and_the_right_one_works,
        ),
        (
            "tls_with_the_brokers_ca_works_and_without_it_is_refused",
            tls_with_the_brokers_ca_works_and_without_it_is_refused,
        ),
        // Last: it stops and restarts the server.
        (
            "publishing_fails_while_the_broker_is_down_and_works_again_after",
            publishing_fails_while_the_broker_is_down_and_works_again_after,
        ),
    ];
    let specific: Vec<NamedCase> = match kind {
        "redis" => vec![
            (
                "trimming_never_drops_what_a_group_has_not_acknowledged",
                redis_trimming_never_drops_what_a_group_has_not_acknowledged,
            ),
            (
                "a_server_that_does_not_fsync_every_write_is_refused",
                redis_a_server_that_does_not_fsync_every_write_is_refused,
            ),
        ],
        _ => vec![],
    };
    specific
        .into_iter()
        .chain(common)
        .map(|(name, run)| Case::new(format!("{kind}::{name}"), run))
        .collect()
}

fn main() -> ExitCode {
    let filters = harness::filters();
    let started = Instant::now();
    let mut tally = Tally::default();
    for kind in ["redis", "rabbitmq"] {
        let cases = cases(kind);
        if !cases
            .iter()
            .any(|case| harness::selected(&case.name, &filters))
        {
            tally.filtered_out += cases.len();
            continue;
        }
        println!("\nrunning {} cases against {kind}", cases.len());
        let target = Target::start(kind);
        tally.add(harness::run(&target, &cases, &filters));
    }
    tally.finish(started)
}
