//! The load: `concurrency` tasks calling in a loop until the duration is
//! over or N requests were sent, optionally paced to R requests/s.
//!
//! Pacing is a shared schedule: request number `i` (counted over all
//! workers) may start at `start + i / R`. A worker that is late starts at
//! once, so the rate holds on average even when the timer is coarser than
//! the interval (1 ms timers, 10k/s), and the workers share it evenly.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use tokio::time::Instant;
use tonic::Code;

use mesh::telemetry::grpc_code_name as code_name;

/// Highest latency recorded exactly (larger ones count as this), in µs.
const MAX_LATENCY_US: u64 = 60_000_000;

/// One request of the RPC under load.
pub(crate) trait Call: Clone + Send + 'static {
    /// Sends one request; the error is the gRPC code.
    fn call(&mut self) -> impl Future<Output = Result<(), Code>> + Send;
}

/// When the run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// No request starts after this long (those in flight finish).
    After(Duration),
    /// After exactly this many requests.
    Requests(u64),
}

/// The shape of a run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// Concurrent workers (each one request at a time).
    pub(crate) concurrency: usize,
    /// When to stop.
    pub(crate) stop: Stop,
    /// Requests per second over all workers; unlimited when `None`.
    pub(crate) rate: Option<f64>,
    /// Keep every request's start and latency (for a timeline).
    pub(crate) keep_samples: bool,
}

/// One request of a run whose samples are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    /// When it started, µs after the run began.
    pub(crate) start_us: u64,
    /// How long it took, µs.
    pub(crate) latency_us: u64,
    /// Answered OK.
    pub(crate) ok: bool,
}

/// What a run measured.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Latency of every request (ok or not), in µs.
    pub(crate) latency: Histogram<u64>,
    /// Requests answered OK.
    pub(crate) ok: u64,
    /// Failed requests by gRPC code name.
    pub(crate) errors: BTreeMap<&'static str, u64>,
    /// From the first request to the last answer.
    pub(crate) elapsed: Duration,
    /// Every request, when the plan keeps samples (unordered).
    pub(crate) samples: Vec<Sample>,
}

impl Outcome {
    fn empty() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("valid histogram bounds"),
            ok: 0,
            errors: BTreeMap::new(),
            elapsed: Duration::ZERO,
            samples: Vec::new(),
        }
    }

    /// Every request sent.
    pub(crate) fn requests(&self) -> u64 {
        self.ok + self.errors.values().sum::<u64>()
    }

    fn merge(&mut self, other: Outcome) {
        self.latency
            .add(&other.latency)
            .expect("histograms with the same bounds");
        self.ok += other.ok;
        for (code, count) in other.errors {
            *self.errors.entry(code).or_default() += count;
        }
        self.samples.extend(other.samples);
    }
}

/// State shared by the workers.
#[derive(Debug)]
struct Shared {
    /// Request slots taken so far (the pacing schedule's index too).
    issued: AtomicU64,
    /// Requests answered so far (for the progress bar).
    done: AtomicU64,
    /// Failed so far (for the progress bar).
    failed: AtomicU64,
    start: Instant,
    plan: Plan,
}

impl Shared {
    /// Takes the next request slot, waiting for its turn when paced;
    /// `false` when the run is over.
    async fn next_slot(&self) -> bool {
        let slot = self.issued.fetch_add(1, Ordering::Relaxed);
        if let Stop::Requests(limit) = self.plan.stop {
            if slot >= limit {
                return false;
            }
        }
        if let Some(rate) = self.plan.rate {
            let due = self.start + Duration::from_secs_f64(slot as f64 / rate);
            tokio::time::sleep_until(due).await;
        }
        if let Stop::After(duration) = self.plan.stop {
            if self.start.elapsed() >= duration {
                return false;
            }
        }
        true
    }
}

/// Runs the load with clones of `caller`; `progress` follows it.
pub(crate) async fn run<C: Call>(plan: Plan, caller: C, progress: &ProgressBar) -> Outcome {
    let shared = Arc::new(Shared {
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        start: Instant::now(),
        plan,
    });
    let ticker = tokio::spawn(follow(Arc::clone(&shared), progress.clone()));
    let workers: Vec<_> = (0..plan.concurrency.max(1))
        .map(|_| tokio::spawn(worker(Arc::clone(&shared), caller.clone())))
        .collect();
    let mut total = Outcome::empty();
    for worker in workers {
        match worker.await {
            Ok(outcome) => total.merge(outcome),
            Err(error) => eprintln!("warning: a bench worker failed: {error}"),
        }
    }
    total.elapsed = shared.start.elapsed();
    ticker.abort();
    progress.set_position(match plan.stop {
        Stop::Requests(_) => total.requests(),
        Stop::After(duration) => duration.as_millis().try_into().unwrap_or(u64::MAX),
    });
    total
}

async fn worker<C: Call>(shared: Arc<Shared>, mut caller: C) -> Outcome {
    let mut outcome = Outcome::empty();
    while shared.next_slot().await {
        let sent = Instant::now();
        let result = caller.call().await;
        let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
        outcome
            .latency
            .saturating_record(micros.clamp(1, MAX_LATENCY_US));
        if shared.plan.keep_samples {
            let start = sent.saturating_duration_since(shared.start);
            outcome.samples.push(Sample {
                start_us: u64::try_from(start.as_micros()).unwrap_or(u64::MAX),
                latency_us: micros,
                ok: result.is_ok(),
            });
        }
        match result {
            Ok(()) => outcome.ok += 1,
            Err(code) => {
                *outcome.errors.entry(code_name(code)).or_default() += 1;
                shared.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
    outcome
}

/// Moves the progress bar: requests done, or time elapsed for a timed run.
async fn follow(shared: Arc<Shared>, progress: ProgressBar) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let done = shared.done.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        let position = match shared.plan.stop {
            Stop::Requests(_) => done,
            Stop::After(_) => shared
                .start
                .elapsed()
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX),
        };
        progress.set_position(position);
        progress.set_message(format!("{done} requests, {failed} errors"));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Fails every third call with UNAVAILABLE.
    #[derive(Clone)]
    struct Fake(Arc<AtomicUsize>);

    impl Call for Fake {
        fn call(&mut self) -> impl Future<Output = Result<(), Code>> + Send {
            let n = self.0.fetch_add(1, Ordering::Relaxed);
            async move {
                tokio::task::yield_now().await;
                if n % 3 == 2 {
                    Err(Code::Unavailable)
                } else {
                    Ok(())
                }
            }
        }
    }

    #[tokio::test]
    async fn sends_exactly_n_requests_over_all_workers() {
        let calls = Arc::new(AtomicUsize::new(0));
        let plan = Plan {
            concurrency: 7,
            stop: Stop::Requests(300),
            rate: None,
            keep_samples: true,
        };
        let outcome = run(plan, Fake(Arc::clone(&calls)), &ProgressBar::hidden()).await;
        assert_eq!(calls.load(Ordering::Relaxed), 300);
        assert_eq!(outcome.requests(), 300);
        assert_eq!(outcome.ok, 200);
        assert_eq!(outcome.errors.get("UNAVAILABLE"), Some(&100));
        assert_eq!(outcome.latency.len(), 300);
        assert_eq!(outcome.samples.len(), 300);
        assert_eq!(outcome.samples.iter().filter(|s| s.ok).count(), 200);
    }

    #[tokio::test]
    async fn pacing_holds_the_rate_on_average() {
        let calls = Arc::new(AtomicUsize::new(0));
        let plan = Plan {
            concurrency: 4,
            stop: Stop::Requests(50),
            rate: Some(250.0),
            keep_samples: false,
        };
        let outcome = run(plan, Fake(calls), &ProgressBar::hidden()).await;
        assert!(outcome.samples.is_empty(), "samples only when asked");
        // 50 requests at 250/s: the last may start at 49/250 s = 196 ms.
        assert_eq!(outcome.requests(), 50);
        assert!(
            outcome.elapsed >= Duration::from_millis(190),
            "{:?}",
            outcome.elapsed
        );
        assert!(
            outcome.elapsed < Duration::from_secs(2),
            "{:?}",
            outcome.elapsed
        );
    }

    #[tokio::test]
    async fn a_timed_run_stops_starting_requests_after_its_duration() {
        let calls = Arc::new(AtomicUsize::new(0));
        let plan = Plan {
            concurrency: 2,
            stop: Stop::After(Duration::from_millis(200)),
            rate: Some(100.0),
            keep_samples: false,
        };
        let outcome = run(plan, Fake(calls), &ProgressBar::hidden()).await;
        // About 20 requests (100/s for 0.2 s), never many more.
        assert!(
            (15..=22).contains(&outcome.requests()),
            "{}",
            outcome.requests()
        );
        assert!(
            outcome.elapsed < Duration::from_secs(1),
            "{:?}",
            outcome.elapsed
        );
    }
}
