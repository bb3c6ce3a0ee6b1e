//! The schema's triggers send exactly Hydra's notifications: each channel
//! fires for the statement that should fire it and stays silent for an
//! unrelated change. `NrBuilds` follows finished builds.
//!
//! To know that a notification did *not* come without waiting for a timeout,
//! each check sends a sentinel notification after the statement: notifications
//! arrive in commit order, so everything the statement caused arrives first.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hydra_db::{Listener, Wakeup};
use hydra_test_support::TestDb;

const CHANNELS: &[&str] = &[
    "jobsets_added",
    "jobsets_deleted",
    "jobset_scheduling_changed",
    "jobset_shares_changed",
    "builds_deleted",
    "builds_restarted",
    "builds_cancelled",
    "builds_bumped",
    "test_sentinel",
];

/// The channels notified while `sql` ran, in order.
async fn channels_fired_by(db: &TestDb, sql: &str) -> Vec<String> {
    let mut listener = Listener::connect(&db.pool, CHANNELS).await.unwrap();
    db.exec(sql).await;
    db.exec("notify test_sentinel").await;
    let mut fired = Vec::new();
    loop {
        let wakeup = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("sentinel never arrived")
            .unwrap();
        match wakeup {
            Wakeup::Notification { channel, .. } if channel == "test_sentinel" => return fired,
            Wakeup::Notification { channel, payload } => {
                assert_eq!(payload, "", "trigger notifications carry no payload");
                fired.push(channel);
            }
            Wakeup::Rescan => panic!("unexpected reconnection"),
        }
    }
}

async fn setup() -> TestDb {
    let db = TestDb::new().await;
    db.exec("insert into Users (userName, emailAddress, password) values ('root', '', '!');
         insert into Projects (name, displayName, owner) values ('p', 'P', 'root');
         insert into Jobsets (project, name, nixExprInput, nixExprPath, emailOverride) values ('p', 'j', 'src', 'release.nix', '');
         insert into Builds (id, finished, timestamp, jobset_id, job, drvPath, system)
             select 1, 0, 1, id, 'queued', '/nix/store/a.drv', 'x86_64-linux' from Jobsets;
         insert into Builds (id, finished, timestamp, jobset_id, job, drvPath, system, startTime, stopTime, buildStatus)
             select 2, 1, 1, id, 'done', '/nix/store/b.drv', 'x86_64-linux', 5, 6, 0 from Jobsets;",
    )
    .await;
    db
}

#[tokio::test]
async fn jobsets_added_fires_on_insert_only() {
    let db = setup().await;
    assert_eq!(
        channels_fired_by(&db, "insert into Jobsets (project, name, nixExprInput, nixExprPath, emailOverride) values ('p', 'k', 's', 'r.nix', '')").await,
        vec!["jobsets_added"]
    );
    assert!(
        channels_fired_by(&db, "update Jobsets set description = 'x' where name = 'k'")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn jobsets_deleted_fires_on_delete() {
    let db = setup().await;
    db.exec("insert into Jobsets (project, name, nixExprInput, nixExprPath, emailOverride) values ('p', 'k', 's', 'r.nix', '')").await;
    // The cascade to Builds runs a delete statement there too, and the
    // statement-level trigger fires even when no build row goes.
    assert_eq!(
        channels_fired_by(&db, "delete from Jobsets where name = 'k'").await,
        vec!["jobsets_deleted", "builds_deleted"]
    );
}

#[tokio::test]
async fn jobset_scheduling_changed_fires_for_trigger_interval_and_enabled() {
    let db = setup().await;
    let fired = |sql: &'static str| {
        let db = &db;
        async move { channels_fired_by(db, sql).await }
    };
    assert_eq!(
        fired("update Jobsets set triggerTime = 100").await,
        vec!["jobset_scheduling_changed"]
    );
    // Changing an already set trigger time to another value also fires.
    assert_eq!(
        fired("update Jobsets set triggerTime = 200").await,
        vec!["jobset_scheduling_changed"]
    );
    // Clearing it (the evaluator does, when it starts) does not.
    assert!(
        fired("update Jobsets set triggerTime = null")
            .await
            .is_empty()
    );
    assert_eq!(
        fired("update Jobsets set checkInterval = 60").await,
        vec!["jobset_scheduling_changed"]
    );
    assert_eq!(
        fired("update Jobsets set enabled = 0").await,
        vec!["jobset_scheduling_changed"]
    );
    assert!(
        fired("update Jobsets set enabled = 0, checkInterval = 60")
            .await
            .is_empty()
    );
    assert!(
        fired("update Jobsets set lastCheckedTime = 5, errorMsg = 'x', startTime = 3")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn jobset_shares_changed_fires_for_scheduling_shares_only() {
    let db = setup().await;
    assert_eq!(
        channels_fired_by(&db, "update Jobsets set schedulingShares = 250").await,
        vec!["jobset_shares_changed"]
    );
    assert!(
        channels_fired_by(&db, "update Jobsets set schedulingShares = 250, keepnr = 9")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn builds_deleted_fires_on_delete() {
    let db = setup().await;
    assert_eq!(
        channels_fired_by(&db, "delete from Builds where id = 1").await,
        vec!["builds_deleted"]
    );
    assert!(
        channels_fired_by(&db, "update Builds set keep = 1 where id = 2")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn builds_restarted_fires_when_a_finished_build_is_queued_again() {
    let db = setup().await;
    assert_eq!(
        channels_fired_by(&db, "update Builds set finished = 0 where id = 2").await,
        vec!["builds_restarted"]
    );
    assert!(
        channels_fired_by(&db, "update Builds set finished = 0 where id = 1")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn builds_cancelled_fires_only_for_status_4() {
    let db = setup().await;
    assert!(
        channels_fired_by(&db, "update Builds set finished = 1, buildStatus = 0, startTime = 1, stopTime = 1 where id = 1")
            .await
            .is_empty()
    );
    db.exec("update Builds set finished = 0, buildStatus = null where id = 1")
        .await;
    assert_eq!(
        channels_fired_by(&db, "update Builds set finished = 1, buildStatus = 4, startTime = 1, stopTime = 1 where id = 1")
            .await,
        vec!["builds_cancelled"]
    );
}

#[tokio::test]
async fn builds_bumped_fires_when_global_priority_changes() {
    let db = setup().await;
    assert_eq!(
        channels_fired_by(
            &db,
            "update Builds set globalPriority = 1700000000 where id = 1"
        )
        .await,
        vec!["builds_bumped"]
    );
    assert!(
        channels_fired_by(&db, "update Builds set priority = 5 where id = 1")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn one_notification_per_statement_not_per_row() {
    let db = setup().await;
    // The channel payloads are empty and PostgreSQL folds identical
    // notifications of one transaction; a statement touching many rows
    // wakes the listener once.
    assert_eq!(
        channels_fired_by(&db, "delete from Builds").await,
        vec!["builds_deleted"]
    );
}

#[tokio::test]
async fn nr_builds_counts_finished_builds() {
    let db = setup().await;
    let count = async || -> i32 {
        sqlx::query_scalar("select count from NrBuilds where what = 'finished'")
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    // The fixture inserted one finished build.
    assert_eq!(count().await, 1);
    db.exec(
        "update Builds set finished = 1, buildStatus = 0, startTime = 1, stopTime = 1 where id = 1",
    )
    .await;
    assert_eq!(count().await, 2);
    db.exec("update Builds set finished = 0 where id = 2").await;
    assert_eq!(count().await, 1);
    db.exec("delete from Builds where id = 1").await;
    assert_eq!(count().await, 0);
    db.exec("update Builds set keep = 1").await;
    assert_eq!(count().await, 0);
}
