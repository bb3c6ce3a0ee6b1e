//! Migrations: a fresh database gets the whole schema; a database made by
//! Hydra at version 87 is adopted with every row kept; anything else is
//! refused with a clear message; failures change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hydra_db::DbError;
use hydra_db::migrate::{self, MIGRATIONS, Migration};
use hydra_test_support::TestDb;

/// A database as Hydra's `hydra-init` leaves it at version 87: Hydra's
/// schema, without our bookkeeping.
async fn hydra_database() -> TestDb {
    let db = TestDb::empty().await;
    db.exec(MIGRATIONS[0].sql).await;
    db
}

const TABLES: &[(&str, &str)] = &[
    ("Users", "userName"),
    ("UserRoles", "userName, role"),
    ("Projects", "name"),
    ("Jobsets", "id"),
    ("JobsetInputs", "project, jobset, name"),
    ("Builds", "id"),
    ("BuildOutputs", "build, name"),
    ("BuildSteps", "build, stepnr"),
    ("JobsetEvals", "id"),
    ("JobsetEvalMembers", "eval, build"),
    ("NrBuilds", "what"),
    ("SchemaVersion", "version"),
];

/// Every row of the tables that matter, as JSON.
async fn snapshot(db: &TestDb) -> Vec<String> {
    let mut out = Vec::new();
    for (table, order) in TABLES {
        let rows: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select json_agg(t order by {order})::text from {table} t"
        )))
        .fetch_one(&db.pool)
        .await
        .unwrap();
        out.push(format!("{table}: {}", rows.unwrap_or_default()));
    }
    out
}

async fn fill(db: &TestDb) {
    db.exec(r#"
        insert into Users (userName, fullName, emailAddress, password, type)
            values ('alice', 'Alice', 'alice@example.org', '$argon2id$v=19$m=262144,t=3,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA', 'hydra'),
                   ('bob@example.org', null, 'bob@example.org', '!', 'google');
        insert into UserRoles (userName, role) values ('alice', 'admin'), ('alice', 'bump-to-front');
        insert into Projects (name, displayName, owner, description) values ('nixpkgs', 'Nixpkgs', 'alice', 'the packages');
        insert into Jobsets (project, name, nixExprInput, nixExprPath, emailOverride, triggerTime)
            values ('nixpkgs', 'trunk', 'src', 'release.nix', '', 17);
        insert into Jobsets (project, name, type, flake, emailOverride) values ('nixpkgs', 'flake', 1, 'github:NixOS/nixpkgs', '');
        insert into JobsetInputs (project, jobset, name, type) values ('nixpkgs', 'trunk', 'src', 'git');
        insert into Builds (finished, timestamp, jobset_id, job, drvPath, system, startTime, stopTime, buildStatus, size)
            select 1, 1000, id, 'hello.x86_64-linux', '/nix/store/aaa-hello.drv', 'x86_64-linux', 1001, 1002, 0, 12345678901
            from Jobsets where name = 'trunk';
        insert into Builds (finished, timestamp, jobset_id, job, drvPath, system, globalPriority)
            select 0, 1003, id, 'world.x86_64-linux', '/nix/store/bbb-world.drv', 'x86_64-linux', 7 from Jobsets where name = 'trunk';
        insert into BuildOutputs (build, name, path) select id, 'out', '/nix/store/ccc-hello' from Builds where job like 'hello%';
        insert into BuildSteps (build, stepnr, type, drvPath, busy, status, startTime, stopTime, machine)
            select id, 1, 0, drvPath, 0, 0, 1001, 1002, 'ssh://builder' from Builds where job like 'hello%';
        insert into BuildSteps (build, stepnr, type, drvPath, busy, machine)
            select id, 1, 0, drvPath, 30, 'localhost' from Builds where job like 'world%';
        insert into JobsetEvals (jobset_id, timestamp, checkoutTime, evalTime, hasNewBuilds, hash)
            select id, 999, 1, 2, 1, 'abc' from Jobsets where name = 'trunk';
        insert into JobsetEvalMembers (eval, build, isNew) select e.id, b.id, 1 from JobsetEvals e, Builds b;
        "#,
    )
    .await;
}

#[tokio::test]
async fn a_fresh_database_gets_the_whole_schema_once() {
    let db = TestDb::empty().await;
    assert!(matches!(
        migrate::check(&db.pool).await,
        Err(DbError::NotInitialised)
    ));
    let report = migrate::migrate(&db.pool).await.unwrap();
    assert!(!report.adopted_hydra_database);
    let all: Vec<(i32, &str)> = MIGRATIONS.iter().map(|m| (m.version, m.name)).collect();
    assert_eq!(report.applied, all);
    assert_eq!(report.applied[0], (1, "hydra_schema_v87"));
    migrate::check(&db.pool).await.unwrap();
    let again = migrate::migrate(&db.pool).await.unwrap();
    assert!(again.applied.is_empty());
    let versions: Vec<i32> = sqlx::query_scalar("select version from SchemaVersion")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(versions, vec![87]);
}

#[tokio::test]
async fn a_hydra_database_is_adopted_keeping_every_row_twice_in_a_row() {
    let db = hydra_database().await;
    fill(&db).await;
    let before = snapshot(&db).await;
    assert!(
        before.iter().all(|t| !t.ends_with(": ")),
        "every table has rows: {before:#?}"
    );

    let report = migrate::migrate(&db.pool).await.unwrap();
    assert!(report.adopted_hydra_database);
    let ours: Vec<(i32, &str)> = MIGRATIONS[1..]
        .iter()
        .map(|m| (m.version, m.name))
        .collect();
    assert_eq!(
        report.applied, ours,
        "the baseline must not run on an adopted database; ours must"
    );
    assert_eq!(snapshot(&db).await, before);

    let report = migrate::migrate(&db.pool).await.unwrap();
    assert!(!report.adopted_hydra_database);
    assert!(report.applied.is_empty());
    assert_eq!(snapshot(&db).await, before);
    migrate::check(&db.pool).await.unwrap();
    let adopted: bool =
        sqlx::query_scalar("select adopted from SchemaMigrations where version = 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(adopted);
}

const ADDITIVE: Migration = Migration {
    version: 2,
    name: "test_additive",
    sql: "create table TestAdditive (id serial primary key, note text);
          alter table Builds add column testExtra integer;",
};

#[tokio::test]
async fn adoption_runs_only_the_additive_migrations() {
    let db = hydra_database().await;
    fill(&db).await;
    let before = snapshot(&db).await;
    let report = migrate::migrate_with(&db.pool, &[MIGRATIONS[0], ADDITIVE])
        .await
        .unwrap();
    assert!(report.adopted_hydra_database);
    assert_eq!(report.applied, vec![(2, "test_additive")]);
    let extra: Option<i32> = sqlx::query_scalar("select testExtra from Builds limit 1")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(extra, None);
    // Hydra's columns and rows are as they were.
    assert_eq!(snapshot(&db).await.len(), before.len());
    let names: i64 =
        sqlx::query_scalar("select count(*) from Builds where drvPath like '/nix/store/%'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(names, 2);
}

#[tokio::test]
async fn other_hydra_versions_are_refused() {
    for (version, advice) in [(80, "hydra-init"), (88, "newer Hydra")] {
        let db = hydra_database().await;
        db.exec(&format!("update SchemaVersion set version = {version}"))
            .await;
        let err = migrate::migrate(&db.pool).await.unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, DbError::UnsupportedHydraVersion { found, .. } if found == version),
            "{message}"
        );
        assert!(
            message.contains(&version.to_string()) && message.contains(advice),
            "{message}"
        );
        // Refusing changed nothing.
        let ours: bool = sqlx::query_scalar("select to_regclass('schemamigrations') is not null")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert!(!ours);
    }
}

#[tokio::test]
async fn a_database_of_something_else_is_refused() {
    let db = TestDb::empty().await;
    db.exec("create table invoices (id int); create table customers (id int);")
        .await;
    let message = migrate::migrate(&db.pool).await.unwrap_err().to_string();
    assert!(message.contains("customers, invoices"), "{message}");
    assert!(message.contains("refusing"), "{message}");
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_program_is_refused() {
    let db = TestDb::new().await;
    db.exec("insert into SchemaMigrations (version, name, checksum, appliedAt) values (99, 'from_the_future', 'x', 0)",
    )
    .await;
    let message = migrate::migrate(&db.pool).await.unwrap_err().to_string();
    assert!(
        message.contains("newer version") && message.contains("from_the_future"),
        "{message}"
    );
    let message = migrate::check(&db.pool).await.unwrap_err().to_string();
    assert!(message.contains("from_the_future"), "{message}");
}

#[tokio::test]
async fn a_changed_migration_is_refused() {
    let db = TestDb::new().await;
    db.exec("update SchemaMigrations set checksum = 'tampered' where version = 1")
        .await;
    let message = migrate::migrate(&db.pool).await.unwrap_err().to_string();
    assert!(
        message.contains("migration 1 `hydra_schema_v87`") && message.contains("differs"),
        "{message}"
    );
}

#[tokio::test]
async fn a_failing_migration_leaves_the_database_untouched() {
    let db = TestDb::empty().await;
    let broken = Migration {
        version: 2,
        name: "broken",
        sql: "create table Fine (id int); select no_such_function();",
    };
    let err = migrate::migrate_with(&db.pool, &[MIGRATIONS[0], broken])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("migration 2 `broken` failed"),
        "{err}"
    );
    let tables: i64 = sqlx::query_scalar(
        "select count(*) from information_schema.tables where table_schema = current_schema()",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(tables, 0, "a failed migration run must roll back entirely");
}

#[tokio::test]
async fn concurrent_migrators_apply_the_schema_once() {
    let db = TestDb::empty().await;
    let (a, b, c) = tokio::join!(
        migrate::migrate(&db.pool),
        migrate::migrate(&db.pool),
        migrate::migrate(&db.pool)
    );
    let applied: usize = [a.unwrap(), b.unwrap(), c.unwrap()]
        .iter()
        .map(|r| r.applied.len())
        .sum();
    assert_eq!(applied, MIGRATIONS.len());
}

#[tokio::test]
async fn check_reports_pending_migrations() {
    let db = TestDb::new().await;
    migrate::check(&db.pool).await.unwrap();
    db.exec("delete from SchemaMigrations").await;
    let err = migrate::check(&db.pool).await.unwrap_err();
    assert!(
        matches!(err, DbError::Outdated { pending } if pending == MIGRATIONS.len()),
        "{err}"
    );
    assert!(err.to_string().contains("hydra init"));
}
