//! Pull requests as jobsets without a generator, under `hydra up` with a
//! fake GitHub on 127.0.0.1 and a real git repository serving the heads:
//! signed `pull_request` webhooks open, push to and close a pull request;
//! the superseded head's builds (and only those) are cancelled; a late
//! delivery is ignored; a fork's pull request waits for an approval by a
//! project member; the reconcile finds a pull request no webhook told of,
//! trusted by the policy file on the default branch.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hmac::{KeyInit, Mac};
use hydra_test_support::GitRepo;
use hydra_test_support::http::{Recorder, Reply};
use hydra_test_support::{TestDb, shared_tempdir};
use serde_json::{Value, json};
use sha2::Digest;

use crate::common::{Banner, Up, curl, eventually, hydra, until};

const SECRET: &str = "webhook secret";

/// Commits `files` on the checked-out branch and sets `pull_ref` (a
/// pull request's head as the forge serves it) to the commit.
fn push(repo: &GitRepo, files: &[(&str, &str)], pull_ref: &str) -> String {
    let head = repo.commit(files, "change");
    repo.git(&["update-ref", pull_ref, &head]);
    head
}

/// Two jobs that no machine can build (so they stay queued): `same`
/// never changes, `changed` follows the file `version`.
const RELEASE: &str = r#"
let mk = name: text: derivation {
  inherit name;
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo ${text} > $out" ];
  requiredSystemFeatures = [ "unobtainium" ];
};
in {
  same = mk "same" "1";
  changed = mk "changed" (builtins.readFile ./version);
}
"#;

/// A GitHub pull request object as the API and webhooks give it.
/// `who`: the author, their association and whether from a fork.
fn pull(
    number: i32,
    who: (&str, &str, bool),
    sha: &str,
    at: &str,
    state: &str,
    clone_url: &str,
) -> Value {
    let (author, association, fork) = who;
    json!({
        "number": number, "title": format!("Change {number}"), "state": state,
        "user": {"login": author}, "author_association": association,
        "updated_at": at,
        "head": {"sha": sha, "ref": "topic", "repo": {"full_name": if fork { format!("{author}/r") } else { "o/r".to_string() }}},
        "base": {"ref": "main", "repo": {"full_name": "o/r", "clone_url": clone_url, "default_branch": "main"}},
    })
}

/// Delivers a signed `pull_request` webhook; the status and the answer.
fn deliver(base: &str, action: &str, pr: &Value) -> (u16, Value) {
    let body = json!({
        "action": action, "number": pr["number"], "pull_request": pr,
        "repository": {"full_name": "o/r", "name": "r", "owner": {"login": "o"}},
    })
    .to_string();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    let (status, text) = curl(&[
        "-H",
        "Content-Type: application/json",
        "-H",
        "X-GitHub-Event: pull_request",
        "-H",
        &format!("X-Hub-Signature-256: sha256={signature}"),
        "--data-binary",
        &body,
        &format!("{base}api/push-github"),
    ]);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// An API call with `token`.
fn call(base: &str, token: &str, method: &str, path: &str, body: &Value) -> (u16, String) {
    curl(&[
        "-X",
        method,
        "-H",
        &format!("Authorization: Bearer {token}"),
        "-H",
        "Accept: application/json",
        "-H",
        "Content-Type: application/json",
        "-d",
        &body.to_string(),
        &format!("{base}{path}"),
    ])
}

async fn add_user(db: &TestDb, name: &str, token: &str) {
    sqlx::query("insert into Users (userName, emailAddress, password) values ($1, '', '!')")
        .bind(name)
        .execute(&db.pool)
        .await
        .unwrap();
    let digest = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    hydra_db::sessions::add_token(&db.pool, name, "test", &digest, 1)
        .await
        .unwrap();
}

/// The builds of jobset `name`'s evaluations: (job, build id, finished,
/// status, derivation).
async fn builds(db: &TestDb, name: &str) -> Vec<(String, i32, i32, Option<i32>, String)> {
    sqlx::query_as(
        "select b.job, b.id, b.finished, b.buildStatus, b.drvPath from Builds b \
         join Jobsets j on j.id = b.jobset_id where j.project = 'p' and j.name = $1 order by b.id",
    )
    .bind(name)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

async fn evals(db: &TestDb, name: &str) -> Vec<i32> {
    sqlx::query_scalar(
        "select e.id from JobsetEvals e join Jobsets j on j.id = e.jobset_id \
         where j.project = 'p' and j.name = $1 order by e.id",
    )
    .bind(name)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// What `hydra up` said so far.
fn said(up: &mut Up) -> String {
    up.wait_for("\u{0}never said", Duration::from_millis(10));
    up.seen.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_is_built_superseded_and_retired_and_forks_wait_for_approval() {
    let db = TestDb::new().await;
    let data = shared_tempdir();
    // The forge's repository: `master`, and the heads of pull requests
    // under refs/pull/N/head.
    let repo = GitRepo::new();
    repo.commit(&[("release.nix", RELEASE), ("version", "v1")], "start");
    let clone_url = repo.url();
    // Pull request 1: first head changes nothing the jobs see; the second
    // changes `changed`.
    repo.git(&["checkout", "-q", "-b", "topic"]);
    let head1 = push(&repo, &[("README", "hello")], "refs/pull/1/head");
    let head2 = push(&repo, &[("version", "v2")], "refs/pull/1/head");
    // Pull request 2, from a fork; 3, known only from the forge's list.
    repo.git(&["checkout", "-q", "-b", "fork", "master"]);
    let head_fork = push(&repo, &[("version", "fork")], "refs/pull/2/head");
    repo.git(&["checkout", "-q", "-b", "listed", "master"]);
    let head_listed = push(&repo, &[("version", "listed")], "refs/pull/3/head");
    repo.git(&["checkout", "-q", "master"]);

    // The fake GitHub: the open pull requests, and the trust policy on
    // the default branch only.
    let forge = Recorder::start();
    let listed = pull(
        3,
        ("carol", "NONE", false),
        &head_listed,
        "2026-01-01T00:00:00Z",
        "open",
        &clone_url,
    );
    let list = |open: Vec<&Value>| Reply::new(200).body(&json!(open).to_string());
    forge.reply_at("/repos/o/r/pulls", list(vec![&listed]));
    forge.reply_at(
        "/repos/o/r/contents/.hydra/pull-requests.json?ref=main",
        Reply::new(200).body(r#"{"trusted_authors": ["carol"]}"#),
    );
    forge.reply_at("/repos/o/r/contents/", Reply::new(404).body("{}"));

    hydra_test_support::jobsets::create_project(&db.pool, "p").await;
    hydra_test_support::jobsets::create_jobset(
        &db.pool,
        "p",
        "main",
        "src",
        "release.nix",
        &[("src", "git", &format!("{clone_url} master"))],
    )
    .await;
    add_user(&db, "alice", "alice-token").await;
    add_user(&db, "bob", "bob-token").await;
    db.exec("insert into ProjectMembers (project, userName) values ('p', 'alice')")
        .await;
    std::fs::write(
        data.path().join("hydra.conf"),
        format!(
            "{}github_api_url = {}\nmax_unsupported_time = 86400\npull_requests_reconcile_interval = 3600\n\
             <webhooks>\n<github>\nsecret = {SECRET}\n</github>\n</webhooks>\n",
            crate::common::FREE_PORTS,
            forge.url()
        ),
    )
    .unwrap();
    let mut up = Up::start({
        let mut cmd = hydra(data.path());
        cmd.env("HYDRA_DATABASE_URL", db.url());
        cmd
    });
    let base = Banner::of(&up).open;

    // Settings: a member may turn it on, others may not.
    let settings = json!({
        "forge": "github", "repository": "o/r", "template": "main", "input": "src",
        "superseded": "cancel"
    });
    let (status, _) = call(
        &base,
        "bob-token",
        "PUT",
        "project/p/pull-requests",
        &settings,
    );
    assert_eq!(status, 403, "bob is not a member of p");
    let (status, body) = call(
        &base,
        "alice-token",
        "PUT",
        "project/p/pull-requests",
        &settings,
    );
    assert_eq!(status, 200, "{body}");

    // The template's own evaluation: its builds must survive everything.
    db.exec("update Jobsets set triggerTime = 1 where name = 'main'")
        .await;
    let done = until(Duration::from_secs(120), || async {
        builds(&db, "main").await.len() == 2
    })
    .await;
    assert!(done, "timed out: main evaluated\n{}", said(&mut up));

    // The reconcile found pull request 3 (no webhook) and trusted carol
    // by the policy file read on the default branch.
    let done = until(Duration::from_secs(120), || async {
        !evals(&db, "main-pr-3").await.is_empty()
    })
    .await;
    assert!(
        done,
        "timed out: pull request 3 evaluated\n{}",
        said(&mut up)
    );

    // Pull request 1 opened: its first head is evaluated.
    let t1 = "2026-12-04T10:00:00Z";
    let opened = pull(
        1,
        ("alice", "MEMBER", false),
        &head1,
        t1,
        "open",
        &clone_url,
    );
    let (status, answer) = deliver(&base, "opened", &opened);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["pullRequests"][0]["result"],
        json!("recorded"),
        "{answer}"
    );
    forge.reply_at("/repos/o/r/pulls", list(vec![&opened, &listed]));
    let done = until(Duration::from_secs(120), || async {
        builds(&db, "main-pr-1").await.len() == 2
    })
    .await;
    assert!(done, "timed out: head 1 evaluated\n{}", said(&mut up));
    let first = builds(&db, "main-pr-1").await;
    let jobset: (i32, i32, Option<String>) = sqlx::query_as(
        "select enabled, hidden, description from Jobsets where project = 'p' and name = 'main-pr-1'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((jobset.0, jobset.1), (1, 0));
    assert!(jobset.2.unwrap().contains("Pull request #1"));
    let revision: String = sqlx::query_scalar(
        "select i.revision from JobsetEvalInputs i join JobsetEvals e on e.id = i.eval \
         join Jobsets j on j.id = e.jobset_id where j.name = 'main-pr-1' and i.name = 'src'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(revision, head1, "the head the webhook named");

    // The second head: the first head's `changed` is cancelled as
    // superseded; `same` is wanted by both and stays; the template's
    // builds of the same derivations are untouched.
    let t2 = "2026-12-04T10:05:00Z";
    let pushed = pull(
        1,
        ("alice", "MEMBER", false),
        &head2,
        t2,
        "open",
        &clone_url,
    );
    let (status, answer) = deliver(&base, "synchronize", &pushed);
    assert_eq!(status, 200, "{answer}");
    forge.reply_at("/repos/o/r/pulls", list(vec![&pushed, &listed]));
    let done = until(Duration::from_secs(120), || async {
        evals(&db, "main-pr-1").await.len() == 2
    })
    .await;
    assert!(done, "timed out: head 2 evaluated\n{}", said(&mut up));
    let second_eval = *evals(&db, "main-pr-1").await.last().unwrap();
    let old_changed = first.iter().find(|b| b.0 == "changed").unwrap().1;
    let kept_same = first.iter().find(|b| b.0 == "same").unwrap().1;
    let done = until(Duration::from_secs(30), || async {
        builds(&db, "main-pr-1")
            .await
            .iter()
            .any(|b| b.1 == old_changed && b.3 == Some(4))
    })
    .await;
    assert!(
        done,
        "timed out: the superseded build cancelled\n{}",
        said(&mut up)
    );
    let now = builds(&db, "main-pr-1").await;
    assert_eq!(now.len(), 3, "{now:?}");
    let cancelled: Vec<i32> = now.iter().filter(|b| b.3 == Some(4)).map(|b| b.1).collect();
    assert_eq!(
        cancelled,
        vec![old_changed],
        "only the superseded build: {now:?}"
    );
    assert!(now.iter().any(|b| b.1 == kept_same && b.2 == 0), "{now:?}");
    let reason: (String, Option<i32>) =
        sqlx::query_as("select reason, eval_id from BuildCancellations where build_id = $1")
            .bind(old_changed)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(reason, ("superseded".to_string(), Some(second_eval)));
    let main = builds(&db, "main").await;
    assert!(
        main.iter().all(|b| b.2 == 0),
        "the template's builds stay queued: {main:?}"
    );
    assert!(
        main.iter()
            .any(|b| b.4 == first.iter().find(|f| f.1 == old_changed).unwrap().4),
        "a live build still wants the superseded build's derivation: {main:?}"
    );
    // The build page says why.
    let (status, page) = curl(&[&format!("{base}build/{old_changed}")]);
    assert_eq!(status, 200);
    assert!(page.contains("Superseded"), "{page}");
    assert!(
        !page.contains("Cancelled by user"),
        "the system cancelled it: {page}"
    );
    assert!(page.contains(&format!("/eval/{second_eval}")), "{page}");

    // A late delivery of the first head is ignored.
    let (status, answer) = deliver(&base, "synchronize", &opened);
    assert_eq!(status, 200);
    assert!(
        answer["pullRequests"][0]["result"]
            .as_str()
            .unwrap()
            .starts_with("ignored"),
        "{answer}"
    );
    let head: String = sqlx::query_scalar("select headSha from PullRequests where number = 1")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(head, head2);

    // Closed: the jobset is disabled and hidden, its queue cancelled.
    let closed = pull(
        1,
        ("alice", "MEMBER", false),
        &head2,
        "2026-12-04T10:10:00Z",
        "closed",
        &clone_url,
    );
    let (status, _) = deliver(&base, "closed", &closed);
    assert_eq!(status, 200);
    forge.reply_at("/repos/o/r/pulls", list(vec![&listed]));
    let done = until(Duration::from_secs(30), || async {
        let state: (i32, i32) = sqlx::query_as(
            "select enabled, hidden from Jobsets where project = 'p' and name = 'main-pr-1'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        state == (0, 1) && builds(&db, "main-pr-1").await.iter().all(|b| b.2 == 1)
    })
    .await;
    assert!(done, "timed out: pull request 1 retired\n{}", said(&mut up));
    let main = builds(&db, "main").await;
    assert!(main.iter().all(|b| b.2 == 0), "still queued: {main:?}");

    // A fork's pull request waits for an approval by a member.
    let fork = pull(
        2,
        ("mallory", "NONE", true),
        &head_fork,
        "2026-12-04T11:00:00Z",
        "open",
        &clone_url,
    );
    let (status, _) = deliver(&base, "opened", &fork);
    assert_eq!(status, 200);
    forge.reply_at("/repos/o/r/pulls", list(vec![&fork, &listed]));
    let done = until(Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i32>(
            "select enabled from Jobsets where project = 'p' and name = 'main-pr-2'",
        )
        .fetch_optional(&db.pool)
        .await
        .unwrap()
            == Some(0)
    })
    .await;
    assert!(done, "timed out: the fork's jobset made\n{}", said(&mut up));
    let (status, page) = curl(&[&format!("{base}jobset/p/main-pr-2")]);
    assert_eq!(status, 200);
    assert!(page.contains("a project member must approve"), "{page}");
    // Not even a forced evaluation of the enabled jobset runs it.
    db.exec("update Jobsets set enabled = 1, forceEval = true, triggerTime = 1 where name = 'main-pr-2'")
        .await;
    let done = until(Duration::from_secs(60), || async {
        sqlx::query_scalar::<_, Option<String>>(
            "select errorMsg from Jobsets where project = 'p' and name = 'main-pr-2'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .is_some_and(|e| e.contains("waits for an approval"))
    })
    .await;
    assert!(done, "a forced evaluation is refused\n{}", said(&mut up));
    assert!(evals(&db, "main-pr-2").await.is_empty());
    let approve = json!({ "sha": head_fork });
    let (status, body) = call(
        &base,
        "bob-token",
        "POST",
        "jobset/p/main-pr-2/approve",
        &approve,
    );
    assert_eq!(status, 403, "{body}");
    let stale = json!({ "sha": head1 });
    let (status, body) = call(
        &base,
        "alice-token",
        "POST",
        "jobset/p/main-pr-2/approve",
        &stale,
    );
    assert_eq!(
        status, 409,
        "approving a head that is not the current one: {body}"
    );
    let (status, body) = call(
        &base,
        "alice-token",
        "POST",
        "jobset/p/main-pr-2/approve",
        &approve,
    );
    assert_eq!(status, 200, "{body}");
    let recorded: (Option<String>, Option<String>) =
        sqlx::query_as("select approvedSha, approvedBy from PullRequests where number = 2")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        recorded,
        (Some(head_fork.clone()), Some("alice".to_string()))
    );
    let done = until(Duration::from_secs(120), || async {
        !evals(&db, "main-pr-2").await.is_empty()
    })
    .await;
    assert!(
        done,
        "timed out: the approved fork evaluated\n{}",
        said(&mut up)
    );

    // The forge was asked for the policy on the default branch only.
    let asked: Vec<String> = forge
        .requests()
        .into_iter()
        .map(|r| r.path)
        .filter(|p| p.contains("/contents/"))
        .collect();
    assert!(!asked.is_empty());
    assert!(asked.iter().all(|p| p.ends_with("?ref=main")), "{asked:?}");
    assert!(
        eventually(Duration::from_secs(1), || forge
            .requests()
            .iter()
            .any(|r| r.path.starts_with("/repos/o/r/pulls?state=open"))),
        "the reconcile read the open pull requests"
    );
    up.stop();
}
