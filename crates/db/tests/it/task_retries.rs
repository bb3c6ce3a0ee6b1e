//! `TaskRetries` and the builds whose notifications are pending: what the
//! notify role stores between attempts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hydra_db::ids::BuildId;
use hydra_db::status::BuildStatus;
use hydra_db::task_retries as retries;
use hydra_test_support::TestDb;
use hydra_test_support::builds::TestBuild;

#[tokio::test]
async fn failed_tasks_are_kept_and_come_back_due_soonest_first() {
    let db = TestDb::new().await;
    let pool = &db.pool;
    let now = 1_800_000_000;
    assert_eq!(retries::seconds_to_next(pool, now).await.unwrap(), None);
    assert_eq!(retries::next_due(pool, now).await.unwrap(), None);

    let later = retries::save(
        pool,
        "build_finished",
        "Hydra::Plugin::GithubStatus",
        "5\t6",
        now + 100,
    )
    .await
    .unwrap();
    assert_eq!(
        retries::seconds_to_next(pool, now).await.unwrap(),
        Some(100)
    );
    assert_eq!(retries::next_due(pool, now).await.unwrap(), None, "not yet");

    let sooner = retries::save(
        pool,
        "build_started",
        "Hydra::Plugin::SlackNotification",
        "5",
        now - 10,
    )
    .await
    .unwrap();
    assert_eq!(
        retries::seconds_to_next(pool, now).await.unwrap(),
        Some(0),
        "overdue"
    );
    let due = retries::next_due(pool, now).await.unwrap().unwrap();
    assert_eq!(due.id, sooner);
    assert_eq!(
        (
            due.channel.as_str(),
            due.plugin.as_str(),
            due.payload.as_str(),
            due.attempts
        ),
        ("build_started", "Hydra::Plugin::SlackNotification", "5", 1)
    );

    retries::reschedule(pool, sooner, 2, now + 4).await.unwrap();
    assert_eq!(retries::next_due(pool, now).await.unwrap(), None);
    let due = retries::next_due(pool, now + 200).await.unwrap().unwrap();
    assert_eq!((due.id, due.attempts), (sooner, 2), "due soonest first");
    retries::delete(pool, sooner).await.unwrap();
    let due = retries::next_due(pool, now + 200).await.unwrap().unwrap();
    assert_eq!(due.id, later);
    assert_eq!(due.payload, "5\t6", "the payload as it came");
}

#[tokio::test]
async fn pending_notifications_are_cleared_only_for_finished_builds() {
    let db = TestDb::new().await;
    let pool = &db.pool;
    hydra_test_support::jobsets::create_project(pool, "p").await;
    let jobset =
        hydra_test_support::jobsets::create_jobset(pool, "p", "j", "src", "release.nix", &[]).await;
    for (id, finished) in [(1, true), (2, true), (3, false)] {
        let mut b = TestBuild::new(jobset, &format!("job{id}"))
            .id(id)
            .drv(&format!("/nix/store/{}-job{id}.drv", "a".repeat(32)));
        if finished {
            b = b.finished(BuildStatus::Succeeded, 1, 2);
        }
        b.insert(pool).await;
    }
    db.exec("update Builds set notificationPendingSince = 100 where id in (1, 3)")
        .await;
    assert_eq!(
        retries::pending_builds(pool).await.unwrap(),
        [BuildId(1), BuildId(3)]
    );
    let cleared = retries::clear_pending(pool, &[BuildId(1), BuildId(2), BuildId(3)])
        .await
        .unwrap();
    assert_eq!(cleared, 1, "build 2 had nothing pending, build 3 runs");
    assert_eq!(retries::pending_builds(pool).await.unwrap(), [BuildId(3)]);
}
