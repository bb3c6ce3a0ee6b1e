//! Failed tasks are kept, backed off and given up as Hydra does, against a
//! real database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hydra_db::task_retries;
use hydra_notify::retry::{self, Failed, MAX_ATTEMPTS};
use hydra_test_support::TestDb;

const PLUGIN: &str = "Hydra::Plugin::GithubStatus";

#[tokio::test]
async fn a_failing_task_is_retried_later_and_later_then_given_up() {
    let db = TestDb::new().await;
    let pool = &db.pool;
    let now = 1_800_000_000;
    // The first failure: again in 2 s.
    let first = retry::failed(pool, "build_finished", PLUGIN, "7\t8", None, now)
        .await
        .unwrap();
    assert_eq!(
        first,
        Failed::Retry {
            attempts: 1,
            retry_at: now + 2
        }
    );
    let row = task_retries::next_due(pool, now + 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.attempts, row.payload.as_str()), (1, "7\t8"));
    // Failing again: 4 s, then 8 s.
    let again = retry::failed(pool, "build_finished", PLUGIN, "7\t8", Some(&row), now)
        .await
        .unwrap();
    assert_eq!(
        again,
        Failed::Retry {
            attempts: 2,
            retry_at: now + 4
        }
    );
    let row = task_retries::next_due(pool, now + 4)
        .await
        .unwrap()
        .unwrap();
    let third = retry::failed(pool, "build_finished", PLUGIN, "7\t8", Some(&row), now)
        .await
        .unwrap();
    assert_eq!(
        third,
        Failed::Retry {
            attempts: 3,
            retry_at: now + 8
        }
    );
    // Past the limit, it is given up.
    let mut row = task_retries::next_due(pool, now + 8)
        .await
        .unwrap()
        .unwrap();
    row.attempts = MAX_ATTEMPTS + 1;
    assert_eq!(
        retry::failed(pool, "build_finished", PLUGIN, "7\t8", Some(&row), now)
            .await
            .unwrap(),
        Failed::Dropped
    );
    assert_eq!(
        task_retries::seconds_to_next(pool, now).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn a_retried_task_that_succeeds_is_forgotten() {
    let db = TestDb::new().await;
    let pool = &db.pool;
    let now = 1_800_000_000;
    retry::succeeded(pool, None).await.unwrap();
    retry::failed(pool, "build_started", PLUGIN, "3", None, now)
        .await
        .unwrap();
    let row = task_retries::next_due(pool, now + 2)
        .await
        .unwrap()
        .unwrap();
    retry::succeeded(pool, Some(&row)).await.unwrap();
    assert_eq!(task_retries::next_due(pool, now + 2).await.unwrap(), None);
}
