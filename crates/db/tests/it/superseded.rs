//! Superseded work: the queued builds that only a jobset's earlier
//! evaluations want are cancelled or lowered as the project's policy says;
//! what a live evaluation (the latest of an enabled jobset) wants stays.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hydra_db::builds::CancelReason;
use hydra_db::ids::{BuildId, EvalId, JobsetId};
use hydra_db::superseded::{self, LOWERED_PRIORITY, Policy};
use hydra_test_support::TestDb;
use hydra_test_support::builds::TestBuild;
use hydra_test_support::jobsets::{add_to_eval, create_eval, create_jobset, create_project};

/// Jobsets `pr` and `main`; `pr` has evaluations 1 (builds 1, 2, 3) and
/// 2 (builds 1, 4); `main`'s evaluation 3 has build 3 (a build of `pr`
/// it also wants, as a shared constituent would be).
async fn fixture(db: &TestDb) -> (JobsetId, JobsetId) {
    create_project(&db.pool, "p").await;
    let pr = create_jobset(&db.pool, "p", "main-pr-1", "src", "release.nix", &[]).await;
    let main = create_jobset(&db.pool, "p", "main", "src", "release.nix", &[]).await;
    for id in 1..=4 {
        TestBuild::new(pr, &format!("job{id}"))
            .id(id)
            .insert(&db.pool)
            .await;
    }
    create_eval(&db.pool, pr, 1, &[]).await;
    create_eval(&db.pool, pr, 2, &[]).await;
    create_eval(&db.pool, main, 3, &[]).await;
    for (eval, build) in [(1, 1), (1, 2), (1, 3), (2, 1), (2, 4), (3, 3)] {
        add_to_eval(&db.pool, eval, build).await;
    }
    (JobsetId(pr), JobsetId(main))
}

async fn state(db: &TestDb) -> Vec<(i32, i32, Option<i32>, i32)> {
    sqlx::query_as("select id, finished, buildStatus, globalPriority from Builds order by id")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn only_builds_no_live_evaluation_wants_are_cancelled() {
    let db = TestDb::new().await;
    let (pr, _) = fixture(&db).await;
    assert_eq!(
        superseded::policy(&db.pool, "p").await.unwrap(),
        Policy::Keep
    );
    let kept = superseded::apply(
        &db.pool,
        pr,
        Policy::Keep,
        CancelReason::Superseded(Some(EvalId(2))),
    )
    .await
    .unwrap();
    assert!(kept.is_empty(), "Hydra's default keeps everything");

    assert_eq!(
        superseded::unwanted(&db.pool, pr).await.unwrap(),
        vec![BuildId(2)]
    );
    let cancelled = superseded::apply(
        &db.pool,
        pr,
        Policy::Cancel,
        CancelReason::Superseded(Some(EvalId(2))),
    )
    .await
    .unwrap();
    assert_eq!(cancelled, vec![BuildId(2)]);
    let rows = state(&db).await;
    assert_eq!(rows[1], (2, 1, Some(4), 0), "{rows:?}");
    assert!(
        rows.iter().filter(|r| r.0 != 2).all(|r| r.1 == 0),
        "{rows:?}"
    );
    assert_eq!(
        hydra_db::builds::cancellation(&db.pool, BuildId(2))
            .await
            .unwrap(),
        Some(("superseded".to_string(), Some(EvalId(2))))
    );

    // A restart forgets why it was cancelled.
    hydra_db::builds::restart_builds(&db.pool, &[BuildId(2)])
        .await
        .unwrap();
    assert_eq!(
        hydra_db::builds::cancellation(&db.pool, BuildId(2))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_retired_jobset_wants_nothing_and_lowering_moves_builds_back() {
    let db = TestDb::new().await;
    let (pr, main) = fixture(&db).await;
    hydra_db::jobsets::retire(&db.pool, pr).await.unwrap();
    // Build 3 is still wanted by main's live evaluation.
    assert_eq!(
        superseded::unwanted(&db.pool, pr).await.unwrap(),
        vec![BuildId(1), BuildId(2), BuildId(4)]
    );
    let lowered = superseded::apply(&db.pool, pr, Policy::Lower, CancelReason::Closed)
        .await
        .unwrap();
    assert_eq!(lowered, vec![BuildId(1), BuildId(2), BuildId(4)]);
    let rows = state(&db).await;
    assert!(
        rows.iter().all(|r| r.1 == 0),
        "lowered, not cancelled: {rows:?}"
    );
    let priorities: Vec<i32> = rows.iter().map(|r| r.3).collect();
    assert_eq!(
        priorities,
        vec![LOWERED_PRIORITY, LOWERED_PRIORITY, 0, LOWERED_PRIORITY]
    );
    // Lowering again changes nothing.
    let again = superseded::apply(&db.pool, pr, Policy::Lower, CancelReason::Closed)
        .await
        .unwrap();
    assert!(again.is_empty());

    // Once main is disabled too, nothing live wants build 3.
    hydra_db::jobsets::retire(&db.pool, main).await.unwrap();
    superseded::set_policy(&db.pool, "p", Policy::Cancel)
        .await
        .unwrap();
    let policy = superseded::policy(&db.pool, "p").await.unwrap();
    let cancelled = superseded::apply(&db.pool, pr, policy, CancelReason::Closed)
        .await
        .unwrap();
    assert_eq!(
        cancelled,
        vec![BuildId(1), BuildId(2), BuildId(3), BuildId(4)]
    );
    assert_eq!(
        hydra_db::builds::cancellation(&db.pool, BuildId(3))
            .await
            .unwrap(),
        Some(("closed".to_string(), None))
    );
}
