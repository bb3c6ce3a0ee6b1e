//! `hydra create-user` with every flag of Hydra's `hydra-create-user`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::io::Write;
use std::process::{Output, Stdio};

use common::{hydra, stderr};
use hydra_db::password::{self, Verified};
use hydra_db::rows::{self, User};
use hydra_db::users;
use hydra_test_support::{TestDb, shared_tempdir};

fn create_user(db: &TestDb, args: &[&str]) -> Output {
    create_user_with_input(db, args, "")
}

fn create_user_with_input(db: &TestDb, args: &[&str], input: &str) -> Output {
    let data = shared_tempdir();
    let mut child = hydra(data.path())
        .env("HYDRA_DATABASE_URL", db.url())
        .arg("create-user")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", stderr(&out));
    stderr(&out)
}

fn refused(out: Output, message: &str) {
    assert!(
        !out.status.success(),
        "expected a refusal containing `{message}`"
    );
    assert!(
        stderr(&out).contains(message),
        "`{}` does not contain `{message}`",
        stderr(&out)
    );
}

async fn user(db: &TestDb, name: &str) -> Option<User> {
    rows::user(&mut db.pool.acquire().await.unwrap(), name)
        .await
        .unwrap()
}

async fn roles(db: &TestDb, name: &str) -> Vec<String> {
    users::roles(&mut db.pool.acquire().await.unwrap(), name)
        .await
        .unwrap()
}

#[tokio::test]
async fn creating_updating_and_roles() {
    let db = TestDb::new().await;
    let log = ok(create_user(&db, &["alice"]));
    assert!(log.contains("created user `alice`"), "{log}");
    let alice = user(&db, "alice").await.unwrap();
    assert_eq!(
        (
            alice.kind.as_str(),
            alice.email_address.as_str(),
            alice.password.as_str()
        ),
        ("hydra", "", "!")
    );
    assert_eq!(alice.full_name, None);

    let log = ok(create_user(
        &db,
        &[
            "alice",
            "--full-name",
            "Alice Liddell",
            "--email-address",
            "alice@example.org",
            "--role",
            "admin",
            "--role",
            "bump-to-front",
        ],
    ));
    assert!(log.contains("updated user `alice`"), "{log}");
    let alice = user(&db, "alice").await.unwrap();
    assert_eq!(alice.full_name.as_deref(), Some("Alice Liddell"));
    assert_eq!(alice.email_address, "alice@example.org");
    assert_eq!(roles(&db, "alice").await, vec!["admin", "bump-to-front"]);

    // Roles are added to the existing ones...
    ok(create_user(&db, &["alice", "--role", "cancel-build"]));
    assert_eq!(
        roles(&db, "alice").await,
        vec!["admin", "bump-to-front", "cancel-build"]
    );
    // ...unless wiped first.
    ok(create_user(
        &db,
        &["alice", "--wipe-roles", "--role", "eval-jobset"],
    ));
    assert_eq!(roles(&db, "alice").await, vec!["eval-jobset"]);
    ok(create_user(&db, &["alice", "--wipe-roles"]));
    assert!(roles(&db, "alice").await.is_empty());

    // An empty full name clears it.
    ok(create_user(&db, &["alice", "--full-name", ""]));
    assert_eq!(user(&db, "alice").await.unwrap().full_name, None);

    refused(
        create_user(&db, &["alice", "--role", "superuser"]),
        "unknown role `superuser`",
    );
    refused(
        create_user(&db, &["alice", "--type", "ldap"]),
        "--type must be `hydra`, `google` or `github`",
    );
}

#[tokio::test]
async fn renaming() {
    let db = TestDb::new().await;
    ok(create_user(
        &db,
        &[
            "old-name",
            "--role",
            "admin",
            "--email-address",
            "o@example.org",
        ],
    ));
    let log = ok(create_user(
        &db,
        &[
            "new-name",
            "--rename-from",
            "old-name",
            "--full-name",
            "Renamed",
        ],
    ));
    assert!(
        log.contains("renamed user `old-name` to `new-name`"),
        "{log}"
    );
    assert!(user(&db, "old-name").await.is_none());
    let renamed = user(&db, "new-name").await.unwrap();
    assert_eq!(renamed.email_address, "o@example.org");
    assert_eq!(renamed.full_name.as_deref(), Some("Renamed"));
    assert_eq!(roles(&db, "new-name").await, vec!["admin"]);

    refused(
        create_user(&db, &["x", "--rename-from", "ghost"]),
        "user `ghost` does not exist",
    );
    ok(create_user(&db, &["other"]));
    refused(
        create_user(&db, &["other", "--rename-from", "new-name"]),
        "user `other` already exists",
    );
    assert!(
        user(&db, "new-name").await.is_some(),
        "a refused rename changes nothing"
    );
}

#[tokio::test]
async fn passwords() {
    let db = TestDb::new().await;

    // Deprecated plain password: works, with a warning.
    let log = ok(create_user(&db, &["p1", "--password", "hunter22"]));
    assert!(log.contains("deprecated"), "{log}");
    let stored = user(&db, "p1").await.unwrap().password;
    assert!(
        stored.starts_with("$argon2id$v=19$m=262144,t=3,p=1$"),
        "{stored}"
    );
    assert_eq!(
        password::verify("hunter22", &stored),
        Verified::Yes { rehash: false }
    );
    assert_eq!(password::verify("hunter23", &stored), Verified::No);

    // A prompt reads it twice from standard input.
    ok(create_user_with_input(
        &db,
        &["p2", "--password-prompt"],
        "correct horse\ncorrect horse\n",
    ));
    let stored = user(&db, "p2").await.unwrap().password;
    assert_eq!(
        password::verify("correct horse", &stored),
        Verified::Yes { rehash: false }
    );
    refused(
        create_user_with_input(&db, &["p3", "--password-prompt"], "one\ntwo\n"),
        "the passwords don't match",
    );
    refused(
        create_user_with_input(&db, &["p3", "--password-prompt"], "only-once\n"),
        "ended before",
    );
    assert!(
        user(&db, "p3").await.is_none(),
        "nothing is created when the prompt fails"
    );

    // An Argon2 hash is stored as given; a SHA-1 hash is wrapped.
    let argon = password::hash("given").unwrap();
    ok(create_user(&db, &["p4", "--password-hash", &argon]));
    assert_eq!(user(&db, "p4").await.unwrap().password, argon);
    let sha1 = password::sha1_hex("foobar");
    ok(create_user(&db, &["p5", "--password-hash", &sha1]));
    let stored = user(&db, "p5").await.unwrap().password;
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert_eq!(
        password::verify("foobar", &stored),
        Verified::Yes { rehash: true }
    );
    refused(
        create_user(&db, &["p6", "--password-hash", "plaintext"]),
        "is not a password hash",
    );

    refused(
        create_user(&db, &["p7", "--password", "a", "--password-hash", &sha1]),
        "only one of --password, --password-hash and --password-prompt",
    );
    refused(
        create_user_with_input(
            &db,
            &["p7", "--password-prompt", "--password", "a"],
            "a\na\n",
        ),
        "only one of",
    );
}

#[tokio::test]
async fn google_and_github_accounts() {
    let db = TestDb::new().await;
    ok(create_user(
        &db,
        &["carol@example.org", "--type", "google", "--role", "admin"],
    ));
    let carol = user(&db, "carol@example.org").await.unwrap();
    assert_eq!(
        (
            carol.kind.as_str(),
            carol.email_address.as_str(),
            carol.password.as_str()
        ),
        ("google", "carol@example.org", "!")
    );
    ok(create_user(&db, &["dave@example.org", "--type", "github"]));
    assert_eq!(user(&db, "dave@example.org").await.unwrap().kind, "github");

    refused(
        create_user(&db, &["eve", "--type", "google"]),
        "must be email addresses",
    );
    assert!(
        user(&db, "eve").await.is_none(),
        "a refusal rolls back the new user"
    );
    refused(
        create_user(&db, &["carol@example.org", "--email-address", "x@y"]),
        "do not have an explicitly set email address",
    );
    refused(
        create_user(&db, &["carol@example.org", "--password", "pw"]),
        "do not have a password",
    );
    // Switching back to a password account.
    ok(create_user(
        &db,
        &[
            "carol@example.org",
            "--type",
            "hydra",
            "--password",
            "pw-now",
        ],
    ));
    let carol = user(&db, "carol@example.org").await.unwrap();
    assert_eq!(
        password::verify("pw-now", &carol.password),
        Verified::Yes { rehash: false }
    );
}

#[tokio::test]
async fn an_uninitialised_database_is_refused() {
    let db = TestDb::empty().await;
    let out = create_user(&db, &["x"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not initialised; run `hydra init`"),
        "{}",
        stderr(&out)
    );
}
