//! Commits racing a reservation's expiry, on the real store (two pools on
//! one SQLite file: two inventory instances).

use inventory::{
    domain::{Line, ReservationRequest, State, StockAddition},
    store::{Store, StoreError},
};

async fn open(dir: &std::path::Path) -> Store {
    let pool = mesh::storage::open("inventory", None, dir, &inventory::MIGRATOR)
        .await
        .expect("open the inventory database");
    Store::new(pool).expect("start the inventory writer")
}

/// Reservations contended at their expiry instant.
const TRIALS: usize = 120;
/// Commits per reservation: half just before its expiry, half just after.
const COMMITS: i64 = 8;
const UNITS: i64 = 1_000_000;

/// Hardening finding 3: `Store::commit` settled in one transaction and, when
/// the reservation had expired, released it in a second one; a concurrent
/// Commit could land between the two. Observed: Commits answered "already
/// committed" (FAILED_PRECONDITION) while the reservation ended COMMITTED —
/// orders then refunded the customer of a sale that happened. Here many
/// Commits race each reservation's expiry instant (as seen by each caller's
/// clock), with the expiry sweeper: every answer must agree with the
/// reservation's final state, and the stock must add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_3_commits_around_the_expiry_instant_agree_with_the_final_state() {
    let dir = tempfile::tempdir().expect("temp dir");
    let stores = [open(dir.path()).await, open(dir.path()).await];
    stores[0]
        .add_stock(
            &StockAddition {
                sku: "RACE".into(),
                quantity: UNITS,
                unit_price_cents: 100,
                currency: "EUR".into(),
            },
            1,
        )
        .await
        .expect("add stock");

    let mut disagreements = Vec::new();
    let (mut committed, mut released) = (0, 0);
    for trial in 0..TRIALS {
        let id = format!("race-{trial}");
        let expires_at = 1_000_000 + trial as i64 * 10_000;
        stores[trial % 2]
            .reserve(
                &ReservationRequest {
                    reservation_id: id.clone(),
                    lines: vec![Line {
                        sku: "RACE".into(),
                        quantity: 1,
                    }],
                    ttl_ms: 0,
                    currency: String::new(),
                },
                expires_at,
                expires_at - 1_000,
            )
            .await
            .expect("reserve");
        // Commits at expires_at-4 … expires_at+3, alternating instances and
        // order of arrival, and the sweeper at the instant itself.
        let commits = (0..COMMITS).map(|k| {
            let store = stores[k as usize % 2].clone();
            let id = id.clone();
            let at = if (trial + k as usize) % 2 == 0 {
                expires_at - COMMITS / 2 + k
            } else {
                expires_at + COMMITS / 2 - 1 - k
            };
            tokio::spawn(async move { (at, store.commit(&id, at).await) })
        });
        let sweeper = {
            let store = stores[trial % 2].clone();
            tokio::spawn(async move { store.release_expired(expires_at, 100).await })
        };
        let answers = futures::future::join_all(commits).await;
        sweeper
            .await
            .expect("sweeper task")
            .expect("the sweeper works");
        let fin = stores[0].reservation(&id).await.expect("reservation").state;
        match fin {
            State::Committed => committed += 1,
            State::Released => released += 1,
            other => panic!("{id} ended {other:?}"),
        }
        for answer in answers {
            let (at, result) = answer.expect("commit task");
            let agrees = match (&result, fin) {
                (Ok(reservation), State::Committed) => reservation.state == State::Committed,
                (Err(StoreError::Expired(_) | StoreError::WrongState { .. }), State::Released) => {
                    true
                }
                _ => false,
            };
            if !agrees {
                disagreements.push(format!(
                    "{id} (expires {expires_at}) ended {fin:?}, but Commit at {at} answered {result:?}"
                ));
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} Commits disagree with the final state ({committed} committed, {released} released), e.g. {:#?}",
        disagreements.len(),
        TRIALS as i64 * COMMITS,
        &disagreements[..disagreements.len().min(5)]
    );
    let item = stores[1].item("RACE").await.expect("item");
    assert_eq!(item.reserved, 0);
    assert_eq!(item.committed, committed);
    assert_eq!(item.available + item.reserved + item.committed, UNITS);
}
