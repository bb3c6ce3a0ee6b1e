//! The LISTEN helper survives a dropped connection and says so; transactions
//! are retried on deadlocks; builds are locked in id order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hydra_db::ids::BuildId;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hydra_db::{DbError, Listener, Tx, Wakeup, lock_builds, transaction};
use hydra_test_support::TestDb;
use sqlx::PgConnection;

async fn next(listener: &mut Listener) -> Wakeup {
    tokio::time::timeout(Duration::from_secs(20), listener.recv())
        .await
        .expect("no wakeup")
        .unwrap()
}

/// Kills the backends that are LISTENing in this database.
async fn terminate_listeners(db: &TestDb) -> i64 {
    sqlx::query_scalar(
        "select count(pg_terminate_backend(pid)) from pg_stat_activity \
         where datname = current_database() and query like 'LISTEN%' and pid <> pg_backend_pid()",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn notifications_arrive_with_channel_and_payload() {
    let db = TestDb::new().await;
    let mut listener = Listener::connect(&db.pool, &["build_started", "build_finished"])
        .await
        .unwrap();
    db.exec("select pg_notify('build_finished', '12\t13\t14'); select pg_notify('other', 'x'); notify build_started, '7'").await;
    assert_eq!(
        next(&mut listener).await,
        Wakeup::Notification {
            channel: "build_finished".into(),
            payload: "12\t13\t14".into()
        }
    );
    assert_eq!(
        next(&mut listener).await,
        Wakeup::Notification {
            channel: "build_started".into(),
            payload: "7".into()
        }
    );
}

#[tokio::test]
async fn a_dropped_connection_is_reported_as_rescan_and_listening_resumes() {
    let db = TestDb::new().await;
    let mut listener = Listener::connect(&db.pool, &["builds_added"])
        .await
        .unwrap();
    assert_eq!(terminate_listeners(&db).await, 1);
    assert_eq!(next(&mut listener).await, Wakeup::Rescan);
    // Listening again on all channels, on a new connection.
    db.exec("notify builds_added, '42'").await;
    assert_eq!(
        next(&mut listener).await,
        Wakeup::Notification {
            channel: "builds_added".into(),
            payload: "42".into()
        }
    );
    // And again: every loss is reported.
    assert_eq!(terminate_listeners(&db).await, 1);
    assert_eq!(next(&mut listener).await, Wakeup::Rescan);
}

#[tokio::test]
async fn a_closed_pool_ends_listening() {
    let db = TestDb::new().await;
    let mut listener = Listener::connect(&db.pool, &["x"]).await.unwrap();
    let waiting = tokio::spawn(async move {
        let result = listener.recv().await;
        (listener, result)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Closing waits for every connection, the listener's included: it must
    // give its connection back while the listener itself is still alive.
    tokio::time::timeout(Duration::from_secs(20), db.pool.close())
        .await
        .expect("pool.close() hung");
    let (_listener, result) = waiting.await.unwrap();
    assert!(matches!(result, Err(DbError::Closed)), "{result:?}");
}

async fn setup_builds(db: &TestDb) {
    db.exec("insert into Users (userName, emailAddress, password) values ('root', '', '!');
         insert into Projects (name, displayName, owner) values ('p', 'P', 'root');
         insert into Jobsets (project, name, nixExprInput, nixExprPath, emailOverride) values ('p', 'j', 's', 'r.nix', '');
         insert into Builds (id, finished, timestamp, jobset_id, job, drvPath, system)
             select n, 0, 1, (select id from Jobsets), 'job' || n, '/nix/store/x.drv', 'x86_64-linux'
             from generate_series(1, 3) n;",
    )
    .await;
}

async fn bump(conn: &mut PgConnection, id: i32) -> Result<(), sqlx::Error> {
    sqlx::query("update Builds set priority = priority + 1 where id = $1")
        .bind(id)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Two transactions update builds 1 and 2 in opposite orders at the same
/// time: PostgreSQL aborts one with a deadlock, and `transaction` retries it.
#[tokio::test]
async fn a_deadlocked_transaction_is_retried_until_it_succeeds() {
    let db = TestDb::new().await;
    setup_builds(&db).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let attempts = Arc::new(AtomicU32::new(0));
    let run = |first: i32, second: i32| {
        let pool = db.pool.clone();
        let barrier = barrier.clone();
        let attempts = attempts.clone();
        async move {
            transaction(&pool, |mut tx: Tx| {
                let barrier = &barrier;
                let first_attempt = attempts.fetch_add(1, Ordering::SeqCst) < 2;
                Box::pin(async move {
                    bump(&mut tx, first).await?;
                    if first_attempt {
                        // Both hold their first row before either takes its second.
                        barrier.wait().await;
                    }
                    bump(&mut tx, second).await?;
                    Ok::<_, DbError>(())
                })
            })
            .await
        }
    };
    let (a, b) = tokio::join!(tokio::spawn(run(1, 2)), tokio::spawn(run(2, 1)));
    a.unwrap().unwrap();
    b.unwrap().unwrap();
    assert!(
        attempts.load(Ordering::SeqCst) >= 3,
        "a deadlock should have forced a retry"
    );
    let priorities: Vec<i32> =
        sqlx::query_scalar("select priority from Builds where id in (1, 2) order by id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    // Each transaction counted exactly once: retries do not double-apply.
    assert_eq!(priorities, vec![2, 2]);
}

#[tokio::test]
async fn errors_that_are_not_conflicts_are_not_retried() {
    let db = TestDb::new().await;
    let attempts = AtomicU32::new(0);
    let result = transaction(&db.pool, |mut tx: Tx| {
        attempts.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            sqlx::query("select no_such_function()")
                .execute(&mut *tx)
                .await?;
            Ok::<_, DbError>(())
        })
    })
    .await;
    assert!(result.is_err());
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failed_body_rolls_back() {
    let db = TestDb::new().await;
    setup_builds(&db).await;
    let result: Result<(), DbError> = transaction(&db.pool, |mut tx: Tx| {
        Box::pin(async move {
            bump(&mut tx, 1).await?;
            Err(DbError::NotInitialised)
        })
    })
    .await;
    assert!(matches!(result, Err(DbError::NotInitialised)));
    let p: i32 = sqlx::query_scalar("select priority from Builds where id = 1")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(p, 0);
}

/// With `lock_builds`, the same two crossing transactions queue behind each
/// other instead of deadlocking: nobody is retried.
#[tokio::test]
async fn builds_locked_in_id_order_never_deadlock() {
    let db = TestDb::new().await;
    setup_builds(&db).await;
    let attempts = Arc::new(AtomicU32::new(0));
    let (locked_tx, locked_rx) = tokio::sync::oneshot::channel::<()>();
    let first = {
        let pool = db.pool.clone();
        let attempts = attempts.clone();
        let mut locked_tx = Some(locked_tx);
        tokio::spawn(async move {
            transaction(&pool, |mut tx: Tx| {
                attempts.fetch_add(1, Ordering::SeqCst);
                let signal = locked_tx.take();
                Box::pin(async move {
                    assert_eq!(
                        lock_builds(&mut tx, &[BuildId(2), BuildId(1)]).await?,
                        vec![BuildId(1), BuildId(2)]
                    );
                    if let Some(signal) = signal {
                        let _ = signal.send(());
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    bump(&mut tx, 2).await?;
                    bump(&mut tx, 1).await?;
                    Ok::<_, DbError>(())
                })
            })
            .await
        })
    };
    locked_rx.await.unwrap();
    let second = transaction(&db.pool, |mut tx: Tx| {
        attempts.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            assert_eq!(
                lock_builds(&mut tx, &[BuildId(1), BuildId(2), BuildId(99)]).await?,
                vec![BuildId(1), BuildId(2)]
            );
            bump(&mut tx, 1).await?;
            bump(&mut tx, 2).await?;
            Ok::<_, DbError>(())
        })
    })
    .await;
    first.await.unwrap().unwrap();
    second.unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
}
