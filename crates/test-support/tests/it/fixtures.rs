//! The fixtures themselves work: a chroot store builds the fixture jobs with
//! `/bin/sh` inside the sandbox, and the throwaway database is migrated.

use hydra_test_support::{NixStore, TestDb, fixtures_dir};

#[test]
fn a_chroot_store_builds_fixture_jobs() {
    let store = NixStore::new();
    let basic = fixtures_dir().join("basic.nix");
    let out = store.build(&basic, "empty_dir");
    assert_eq!(out.len(), 1);
    assert!(
        out[0].starts_with("/nix/store/") && out[0].ends_with("-empty-dir"),
        "{out:?}"
    );
    assert!(store.real_path(&out[0]).is_dir());

    let failed = store.try_run(
        "nix-build",
        &[basic.to_str().unwrap(), "-A", "fails", "--no-out-link"],
    );
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("this build fails on purpose"));

    let out = store.build(&basic, "succeed_with_failed");
    assert!(
        store
            .real_path(&out[0])
            .join("nix-support/failed")
            .is_file()
    );

    let products = store.build(&fixtures_dir().join("build-products.nix"), "with_spaces");
    let listing = std::fs::read_to_string(
        store
            .real_path(&products[0])
            .join("nix-support/hydra-build-products"),
    )
    .unwrap();
    assert_eq!(
        listing.trim(),
        format!("doc none \"{}/some text.txt\"", products[0])
    );
}

#[test]
fn two_stores_are_independent() {
    let a = NixStore::new();
    let b = NixStore::new();
    let out = a.build(&fixtures_dir().join("basic.nix"), "empty_dir");
    assert!(a.real_path(&out[0]).exists());
    assert!(!b.real_path(&out[0]).exists());
    let valid = b.try_run("nix-store", &["--check-validity", &out[0]]);
    assert!(!valid.status.success());
}

#[tokio::test]
async fn test_databases_are_fresh_and_migrated() {
    let a = TestDb::new().await;
    let b = TestDb::new().await;
    assert_ne!(a.name, b.name);
    sqlx::query(
        "insert into Users (userName, emailAddress, password) values ('only-in-a', '', '!')",
    )
    .execute(&a.pool)
    .await
    .unwrap();
    let in_b: i64 = sqlx::query_scalar("select count(*) from Users")
        .fetch_one(&b.pool)
        .await
        .unwrap();
    assert_eq!(in_b, 0);
    let version: i32 = sqlx::query_scalar("select version from SchemaVersion")
        .fetch_one(&b.pool)
        .await
        .unwrap();
    assert_eq!(version, 87);
}
