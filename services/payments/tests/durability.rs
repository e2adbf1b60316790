//! Group commit in a real `payments` process: concurrent charges share
//! commits, and every charge the process acknowledged is in its database
//! after the process is SIGKILLed in the middle of the load — the writer
//! answers a unit only after its batch's COMMIT has returned.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use mesh::proto::payments::v1::{payments_client::PaymentsClient, ChargeRequest};
use testkit::{free_port, scrape_metrics, ServiceOptions, ServiceProcess};
use tonic::transport::Channel;

/// Callers in flight at once.
const CALLERS: usize = 16;
/// Acknowledged charges to collect before the kill.
const ACKNOWLEDGED_BEFORE_KILL: usize = 300;

/// Charges with fresh keys until `stop`, recording `(key, payment_id)` of
/// every answered charge.
async fn charge_until_stopped(
    mut client: PaymentsClient<Channel>,
    caller: usize,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<(String, String)>>>,
) {
    for attempt in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let key = format!("sigkill-{caller}-{attempt}");
        let request = ChargeRequest {
            idempotency_key: key.clone(),
            user_id: "u_durable".into(),
            amount_cents: 100,
            currency: "EUR".into(),
        };
        match tokio::time::timeout(Duration::from_secs(10), client.charge(request)).await {
            Ok(Ok(answer)) => acknowledged
                .lock()
                .expect("lock")
                .push((key, answer.into_inner().payment_id)),
            // The process is gone (or going): stop once told to.
            Ok(Err(_)) | Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_charge_survives_a_sigkill_in_the_middle_of_the_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut process = ServiceProcess::start(
        "payments",
        ServiceOptions {
            data_dir: Some(dir.path().to_owned()),
            args: vec!["--metrics-listen".into(), metrics.clone()],
            ..ServiceOptions::default()
        },
    );
    let channel = Channel::from_shared(format!("http://{}", process.addr()))
        .expect("address")
        .connect()
        .await
        .expect("connect to payments");
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let callers: Vec<_> = (0..CALLERS)
        .map(|caller| {
            tokio::spawn(charge_until_stopped(
                PaymentsClient::new(channel.clone()),
                caller,
                Arc::clone(&stop),
                Arc::clone(&acknowledged),
            ))
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(120);
    while acknowledged.lock().expect("lock").len() < ACKNOWLEDGED_BEFORE_KILL {
        assert!(
            Instant::now() < deadline,
            "payments acknowledged only {} charges in 120 s",
            acknowledged.lock().expect("lock").len()
        );
        assert!(process.child.is_running(), "payments exited on its own");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Read while the load runs: the writer really grouped charges.
    let scrape = tokio::task::spawn_blocking(move || scrape_metrics(&metrics))
        .await
        .expect("scrape task");
    let payments = [("database", "payments")];
    let batches = scrape.sum("mesh_storage_write_batches_total", &payments);
    let committed = scrape.sum(
        "mesh_storage_write_units_total",
        &[("database", "payments"), ("outcome", "committed")],
    );
    assert!(
        committed >= ACKNOWLEDGED_BEFORE_KILL as f64 && committed > batches && batches > 0.0,
        "{committed} charges committed in {batches} batches: {CALLERS} concurrent callers \
         should share commits"
    );

    // SIGKILL with charges in flight; then stop the callers.
    process.child.kill();
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        tokio::time::timeout(Duration::from_secs(30), caller)
            .await
            .expect("callers stop within 30 s")
            .expect("caller task");
    }

    let acknowledged = acknowledged.lock().expect("lock").clone();
    let pool = mesh::storage::open("payments", None, dir.path(), &payments::MIGRATOR)
        .await
        .expect("reopen the killed process's database");
    let mut missing = Vec::new();
    for (key, payment_id) in &acknowledged {
        let stored: Option<String> =
            sqlx::query_scalar("SELECT payment_id FROM payments WHERE idempotency_key = $1")
                .bind(key)
                .fetch_optional(&pool)
                .await
                .expect("look the charge up");
        if stored.as_deref() != Some(payment_id.as_str()) {
            missing.push((key.clone(), payment_id.clone(), stored));
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged charges are not in the database after SIGKILL: {:?}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(10)]
    );
}
