//! Failed tasks are kept, backed off and given up as Hydra does, against a
//! real database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hydra_db::ids::BuildId;
use hydra_db::status::BuildStatus;
use hydra_db::task_retries;
use hydra_notify::retry::{self, Failed, MAX_ATTEMPTS};
use hydra_test_support::TestDb;
use hydra_test_support::builds::TestBuild;

const PLUGIN: &str = "Hydra::Plugin::GithubStatus";

/// The plugin's failure on `build_finished` of build 7 (with dependent 8).
fn failure(error: &str) -> retry::Failure<'_> {
    retry::Failure {
        channel: "build_finished",
        payload: "7\t8",
        plugin: PLUGIN,
        error,
        build: Some(BuildId(7)),
    }
}

#[tokio::test]
async fn a_failing_task_is_retried_later_and_later_then_given_up() {
    let db = TestDb::new().await;
    let pool = &db.pool;
    hydra_test_support::jobsets::create_project(pool, "p").await;
    let jobset =
        hydra_test_support::jobsets::create_jobset(pool, "p", "j", "src", "release.nix", &[]).await;
    TestBuild::new(jobset, "a")
        .id(7)
        .finished(BuildStatus::Succeeded, 1, 2)
        .insert(pool)
        .await;
    let now = 1_800_000_000;
    // The first failure: again in 2 s.
    let first = retry::failed(pool, failure("down"), None, now)
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
    let again = retry::failed(pool, failure("down"), Some(&row), now)
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
    let third = retry::failed(pool, failure("down"), Some(&row), now)
        .await
        .unwrap();
    assert_eq!(
        third,
        Failed::Retry {
            attempts: 3,
            retry_at: now + 8
        }
    );
    // The build page lists it, with its next attempt.
    let listed = task_retries::of_build(pool, BuildId(7)).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (
            listed[0].plugin.as_str(),
            listed[0].attempts,
            listed[0].next_attempt
        ),
        (PLUGIN, 3, Some(now + 8))
    );
    // Past the limit, it is given up.
    let mut row = task_retries::next_due(pool, now + 8)
        .await
        .unwrap()
        .unwrap();
    row.attempts = MAX_ATTEMPTS + 1;
    assert_eq!(
        retry::failed(pool, failure("forge said 401"), Some(&row), now)
            .await
            .unwrap(),
        Failed::Dropped
    );
    assert_eq!(
        task_retries::seconds_to_next(pool, now).await.unwrap(),
        None
    );
    // Kept apart with its error, and the admin can revive it.
    let listed = task_retries::of_build(pool, BuildId(7)).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let dropped = &listed[0];
    assert_eq!(
        (
            dropped.next_attempt,
            dropped.dropped_at,
            dropped.last_error.as_deref()
        ),
        (None, Some(now), Some("forge said 401"))
    );
    assert!(
        !task_retries::revive(pool, dropped.id, BuildId(8), now)
            .await
            .unwrap(),
        "only as a task of its own build"
    );
    assert!(
        task_retries::revive(pool, dropped.id, BuildId(7), now + 50)
            .await
            .unwrap()
    );
    assert!(
        !task_retries::revive(pool, dropped.id, BuildId(7), now)
            .await
            .unwrap(),
        "once"
    );
    let row = task_retries::next_due(pool, now + 50)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.attempts, row.payload.as_str()), (1, "7\t8"));
}

#[tokio::test]
async fn a_retried_task_that_succeeds_is_forgotten() {
    let db = TestDb::new().await;
    let pool = &db.pool;
    let now = 1_800_000_000;
    retry::succeeded(pool, None).await.unwrap();
    let started = retry::Failure {
        channel: "build_started",
        payload: "3",
        plugin: PLUGIN,
        error: "down",
        build: None,
    };
    retry::failed(pool, started, None, now).await.unwrap();
    let row = task_retries::next_due(pool, now + 2)
        .await
        .unwrap()
        .unwrap();
    retry::succeeded(pool, Some(&row)).await.unwrap();
    assert_eq!(task_retries::next_due(pool, now + 2).await.unwrap(), None);
}
