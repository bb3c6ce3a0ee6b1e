//! `hydra init` on empty databases, on databases made by Hydra, and on
//! databases it must refuse; reached through every way of naming a database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{hydra, run, stderr};
use hydra_db::migrate::MIGRATIONS;
use hydra_db::password::{self, Verified};
use hydra_test_support::{TestDb, shared_tempdir};

fn init(db: &TestDb) -> std::process::Output {
    let data = shared_tempdir();
    run(hydra(data.path())
        .env("HYDRA_DATABASE_URL", db.url())
        .arg("init"))
}

async fn dump(db: &TestDb) -> String {
    let mut out = String::new();
    for (table, order) in [
        ("Projects", "name"),
        ("Jobsets", "id"),
        ("Builds", "id"),
        ("BuildSteps", "build, stepnr"),
        ("Users", "userName"),
        ("UserRoles", "userName, role"),
    ] {
        let rows: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select json_agg(t order by {order})::text from {table} t"
        )))
        .fetch_one(&db.pool)
        .await
        .unwrap();
        let rows = rows.unwrap_or_else(|| panic!("{table} is empty"));
        out.push_str(&format!("{table}: {rows}\n"));
    }
    out
}

#[tokio::test]
async fn init_adopts_a_hydra_database_keeping_every_row_twice_in_a_row() {
    let db = TestDb::empty().await;
    // What Hydra's hydra-init leaves, with a project being built.
    db.exec(MIGRATIONS[0].sql).await;
    let argon = password::hash("s3cret").unwrap();
    db.exec(&format!(
            "insert into Users (userName, fullName, emailAddress, password) values ('alice', 'Alice', 'a@example.org', '{argon}');
             insert into UserRoles values ('alice', 'admin');
             insert into Projects (name, displayName, owner) values ('nixpkgs', 'Nixpkgs', 'alice');
             insert into Jobsets (project, name, nixExprInput, nixExprPath, emailOverride) values ('nixpkgs', 'trunk', 'src', 'release.nix', '');
             insert into Builds (finished, timestamp, jobset_id, job, drvPath, system, startTime, stopTime, buildStatus)
                 select 1, 10, id, 'hello', '/nix/store/a-hello.drv', 'x86_64-linux', 11, 12, 0 from Jobsets;
             insert into Builds (finished, timestamp, jobset_id, job, drvPath, system)
                 select 0, 13, id, 'world', '/nix/store/b-world.drv', 'x86_64-linux' from Jobsets;
             insert into BuildSteps (build, stepnr, type, drvPath, busy, status, startTime, stopTime)
                 select id, 1, 0, drvPath, 0, 0, 11, 12 from Builds where job = 'hello';"
        ),
    )
    .await;
    let before = dump(&db).await;

    let out = init(&db);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("adopted the existing Hydra database (schema version 87)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(dump(&db).await, before);

    let out = init(&db);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the database schema is up to date"),
        "{}",
        stderr(&out)
    );
    assert_eq!(dump(&db).await, before);
}

#[tokio::test]
async fn init_rehashes_legacy_sha1_passwords() {
    let db = TestDb::empty().await;
    db.exec(MIGRATIONS[0].sql).await;
    let sha1 = password::sha1_hex("foobar");
    db.exec(&format!(
        "insert into Users (userName, emailAddress, password) values ('old', '', '{sha1}')"
    ))
    .await;
    let out = init(&db);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rehashed 1 legacy SHA-1 password"),
        "{}",
        stderr(&out)
    );
    let stored: String = sqlx::query_scalar("select password from Users where userName = 'old'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(stored.starts_with("$argon2id$"));
    assert_eq!(
        password::verify("foobar", &stored),
        Verified::Yes { rehash: true }
    );
}

#[tokio::test]
async fn init_refuses_other_hydra_versions_clearly() {
    let db = TestDb::empty().await;
    db.exec(MIGRATIONS[0].sql).await;
    db.exec("update SchemaVersion set version = 79").await;
    let out = init(&db);
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains("schema version 79") && message.contains("hydra-init"),
        "{message}"
    );
}

#[tokio::test]
async fn the_database_can_be_named_by_url_dbi_or_hydra_conf() {
    let cluster = hydra_test_support::cluster();
    let socket = {
        let options = cluster.connect_options("x");
        options.get_socket().unwrap().to_path_buf()
    };

    let by_dbi = TestDb::empty().await;
    let data = shared_tempdir();
    let dbi = format!(
        "dbi:Pg:dbname={};host={};user=hydra;",
        by_dbi.name,
        socket.display()
    );
    let out = run(hydra(data.path()).env("HYDRA_DBI", dbi).arg("init"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!data.path().join("postgres").exists());
    let v: i32 = sqlx::query_scalar("select version from SchemaVersion")
        .fetch_one(&by_dbi.pool)
        .await
        .unwrap();
    assert_eq!(v, 87);

    let by_conf = TestDb::empty().await;
    let data = shared_tempdir();
    std::fs::write(
        data.path().join("hydra.conf"),
        format!("database_url = {}\n", by_conf.url()),
    )
    .unwrap();
    let out = run(hydra(data.path()).arg("init"));
    assert!(out.status.success(), "{}", stderr(&out));
    let v: i32 = sqlx::query_scalar("select version from SchemaVersion")
        .fetch_one(&by_conf.pool)
        .await
        .unwrap();
    assert_eq!(v, 87);

    // The environment wins over hydra.conf.
    let by_env = TestDb::empty().await;
    let out = run(hydra(data.path())
        .env("HYDRA_DATABASE_URL", by_env.url())
        .arg("init"));
    assert!(out.status.success(), "{}", stderr(&out));
    let v: i32 = sqlx::query_scalar("select version from SchemaVersion")
        .fetch_one(&by_env.pool)
        .await
        .unwrap();
    assert_eq!(v, 87);
}

#[test]
fn init_with_the_managed_database_starts_and_stops_it() {
    let data = shared_tempdir();
    let out = run(hydra(data.path()).arg("init"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("applied migration 1"),
        "{}",
        stderr(&out)
    );
    assert!(data.path().join("postgres/data/PG_VERSION").exists());
    assert!(
        !data.path().join("postgres/.s.PGSQL.5432").exists(),
        "stopped after the command"
    );
    let out = run(hydra(data.path()).arg("init"));
    assert!(stderr(&out).contains("up to date"), "{}", stderr(&out));
}

#[test]
fn an_unreachable_database_is_a_clear_error() {
    let data = shared_tempdir();
    let out = run(hydra(data.path())
        .env(
            "HYDRA_DATABASE_URL",
            "postgres://u:topsecret@127.0.0.1:1/nothing?connect_timeout=2",
        )
        .arg("init"));
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains("cannot connect to the database u@127.0.0.1:1/nothing"),
        "{message}"
    );
    assert!(!message.contains("topsecret"), "{message}");
}
