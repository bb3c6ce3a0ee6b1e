//! Pull-request and refs inputs against a recording HTTP server standing in
//! for the forge: the pages are followed, the JSON reaches Nix keyed as
//! Hydra keys it, and each pull request becomes a job.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{Setup, source_dir};
use hydra_evaluator::evaluation::Outcome;
use hydra_test_support::http::{Recorder, Reply};
use hydra_test_support::jobsets::{create_jobset, create_project};

/// One job per pull request, `pr-N`, writing its title and head.
const RELEASE: &str = r#"
with import ./config.nix;
{ pulls, refs, ... }:
let
  prs = builtins.fromJSON (builtins.readFile pulls);
  branches = builtins.fromJSON (builtins.readFile refs);
  job = n: mkDerivation {
    name = "pr-${n}";
    builder = builtins.toFile "b.sh" "echo '${prs.${n}.title} ${prs.${n}.head.sha}' > $out";
  };
in
builtins.listToAttrs (map (n: { name = "pr-${n}"; value = job n; }) (builtins.attrNames prs))
// { branches = mkDerivation { name = "branches"; builder = builtins.toFile "b.sh" "echo '${builtins.concatStringsSep " " (builtins.attrNames branches)}' > $out"; }; }
"#;

#[tokio::test]
async fn github_pulls_and_refs_are_paged_stored_and_passed_to_nix() {
    let recorder = Recorder::start();
    let url = recorder.url();
    let s = Setup::with_config(&format!(
        "github_api_url = {url}/api/v3\n<github_authorization>\nowner = token secret\n</github_authorization>\n"
    ))
    .await;
    // Two pages of pull requests, then the refs.
    recorder.reply_next(
        Reply::new(200)
            .header(
                "Link",
                &format!(r#"<{url}/api/v3/repos/owner/repo/pulls?per_page=100&page=2>; rel="next", <{url}/last>; rel="last""#),
            )
            .body(r#"[{"number": 1, "title": "fix", "head": {"sha": "aaa"}}]"#),
    );
    recorder.reply_next(
        Reply::new(200).body(r#"[{"number": 12, "title": "feature", "head": {"sha": "bbb"}}]"#),
    );
    recorder.reply_next(Reply::new(200).body(
        r#"[{"ref": "refs/heads/main", "object": {"sha": "ccc"}}, {"ref": "refs/heads/dev", "object": {"sha": "ddd"}}]"#,
    ));
    let jobs = source_dir(&[("release.nix", RELEASE)]);
    create_project(&s.db.pool, "p").await;
    create_jobset(
        &s.db.pool,
        "p",
        "j",
        "jobs",
        "release.nix",
        &[
            ("jobs", "path", jobs.path().to_str().unwrap()),
            ("pulls", "githubpulls", "owner repo"),
            ("refs", "github_refs", "owner repo heads - ."),
        ],
    )
    .await;
    let summary = s.eval("p", "j").await;
    assert!(
        matches!(
            summary.outcome,
            Outcome::Evaluated {
                new_builds: 3,
                job_errors: 0,
                ..
            }
        ),
        "{summary}"
    );
    let got = recorder.requests();
    let paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/v3/repos/owner/repo/pulls?per_page=100",
            "/api/v3/repos/owner/repo/pulls?per_page=100&page=2",
            "/api/v3/repos/owner/repo/git/matching-refs/heads/?per_page=100",
        ]
    );
    assert!(
        got.iter()
            .all(|r| r.header("authorization") == Some("token secret"))
    );
    assert!(
        got.iter()
            .all(|r| r.header("accept") == Some("application/vnd.github.v3+json"))
    );
    assert_eq!(
        s.strings("select job from Builds order by job").await,
        ["branches", "pr-1", "pr-12"]
    );
    // The input's revision is the time of the fetch; its file is in the store.
    let (revision, path): (Option<String>, Option<String>) =
        sqlx::query_as("select revision, path from JobsetEvalInputs where name = 'pulls'")
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    let revision = revision.unwrap();
    assert!(
        revision.len() == 14 && revision.bytes().all(|b| b.is_ascii_digit()),
        "{revision}"
    );
    assert!(path.unwrap().ends_with("-github-pulls.json"));

    // A forge that refuses: the fetch fails with its answer.
    recorder.reply_next(Reply::new(401).body(r#"{"message":"Bad credentials"}"#));
    let summary = s.eval("p", "j").await;
    assert!(
        matches!(&summary.outcome, Outcome::FetchFailed(text) if text.contains("401") && text.contains("Bad credentials")),
        "{summary}"
    );
}

/// A job per merge request (GitLab, with the target repository added),
/// pull request (Gitea) and pull request (Bitbucket, over two pages).
const FORGES: &str = r#"
with import ./config.nix;
{ a_gitlab, b_gitea, c_bitbucket, ... }:
let
  read = f: builtins.fromJSON (builtins.readFile f);
  jobs = prefix: set: ok: map (n: {
    name = "${prefix}-${n}";
    value = mkDerivation { name = "${prefix}-${n}"; builder = builtins.toFile "b.sh" "echo ${if ok set.${n} then "ok" else "missing"} > $out"; };
  }) (builtins.attrNames set);
in
builtins.listToAttrs (
  jobs "gl" (read a_gitlab) (mr: mr.target_repo_url == "https://gitlab.example.org/group/app.git")
  ++ jobs "gt" (read b_gitea) (pr: pr.number == 4)
  ++ jobs "bb" (read c_bitbucket) (pr: pr.id > 0))
"#;

#[tokio::test]
async fn gitlab_gitea_and_bitbucket_pulls_are_read_as_hydra_reads_them() {
    let recorder = Recorder::start();
    let url = recorder.url();
    let host = url.trim_start_matches("http://").to_string();
    let s = Setup::with_config(&format!(
        "bitbucket_api_url = {url}/bitbucket\n\
         <gitlab_authorization>\n42 = gl-secret\n</gitlab_authorization>\n\
         <gitea_authorization>\nteam = gt-secret\n</gitea_authorization>\n\
         <bitbucket_authorization>\nteam = Bearer bb-secret\n</bitbucket_authorization>\n"
    ))
    .await;
    recorder.reply_next(
        Reply::new(200)
            .body(r#"{"id": 42, "http_url_to_repo": "https://gitlab.example.org/group/app.git"}"#),
    );
    recorder.reply_next(Reply::new(200).body(r#"[{"iid": 3, "title": "mr"}]"#));
    recorder.reply_next(Reply::new(200).body(r#"[{"number": 4, "title": "pr"}]"#));
    recorder.reply_next(Reply::new(200).body(&format!(
        r#"{{"values": [{{"id": 5}}], "next": "{url}/bitbucket/2.0/repositories/team/app/pullrequests?state=OPEN&page=2"}}"#
    )));
    recorder.reply_next(Reply::new(200).body(r#"{"values": [{"id": 6}]}"#));
    let jobs = source_dir(&[("release.nix", FORGES)]);
    create_project(&s.db.pool, "p").await;
    create_jobset(
        &s.db.pool,
        "p",
        "j",
        "jobs",
        "release.nix",
        &[
            ("jobs", "path", jobs.path().to_str().unwrap()),
            ("a_gitlab", "gitlabpulls", &format!("{url}/gitlab 42")),
            ("b_gitea", "giteapulls", &format!("{host} team app http")),
            ("c_bitbucket", "bitbucketpulls", "team app"),
        ],
    )
    .await;
    let summary = s.eval("p", "j").await;
    assert!(
        matches!(summary.outcome, Outcome::Evaluated { job_errors: 0, .. }),
        "{summary}"
    );
    assert_eq!(
        s.strings("select job from Builds order by job").await,
        ["bb-5", "bb-6", "gl-3", "gt-4"]
    );
    let got = recorder.requests();
    let seen: Vec<(&str, Option<&str>, Option<&str>)> = got
        .iter()
        .map(|r| {
            (
                r.path.as_str(),
                r.header("private-token"),
                r.header("authorization"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("/gitlab/api/v4/projects/42", Some("gl-secret"), None),
            (
                "/gitlab/api/v4/projects/42/merge_requests?per_page=100&state=opened",
                Some("gl-secret"),
                None
            ),
            (
                "/api/v1/repos/team/app/pulls?limit=100",
                None,
                Some("token gt-secret")
            ),
            (
                "/bitbucket/2.0/repositories/team/app/pullrequests?state=OPEN",
                None,
                Some("Bearer bb-secret")
            ),
            (
                "/bitbucket/2.0/repositories/team/app/pullrequests?state=OPEN&page=2",
                None,
                Some("Bearer bb-secret")
            ),
        ]
    );
}
