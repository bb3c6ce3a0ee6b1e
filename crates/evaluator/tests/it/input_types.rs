//! Every version-control input type against the real tool: a change queues
//! exactly one new build, and evaluating again without a change queues
//! none. Also git's branch discovery, fixed revisions, deep clones and the
//! attributes passed to Nix, and `build` and `eval` inputs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::Path;
use std::process::Command;

use common::{Setup, source_dir};
use hydra_evaluator::evaluation::Outcome;
use hydra_test_support::GitRepo;
use hydra_test_support::jobsets::{create_jobset, create_project, set_inputs};

/// Copies the input into its output: a new input revision, a new build.
const SCM_RELEASE: &str = r#"
with import ./config.nix;
{ src }:
{
  copy = mkDerivation { name = "scm-input"; builder = builtins.toFile "b.sh" "cp -r $src $out"; inherit src; };
}
"#;

fn run(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("BRZ_EMAIL", "Test <test@example.org>")
        .env("HGPLAIN", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A repository of some type that can take changes.
trait Repo {
    /// The input's type and value.
    fn input(&self) -> (&'static str, String);
    /// Commits a change to `file`.
    fn change(&self, n: u32);
}

struct Hg(tempfile::TempDir);
impl Hg {
    fn new() -> Hg {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), "hg", &["init", "-q"]);
        let r = Hg(dir);
        r.change(0);
        r
    }
}
impl Repo for Hg {
    fn input(&self) -> (&'static str, String) {
        ("hg", self.0.path().display().to_string())
    }
    fn change(&self, n: u32) {
        std::fs::write(self.0.path().join("file"), format!("version {n}\n")).unwrap();
        run(
            self.0.path(),
            "hg",
            &[
                "commit",
                "-A",
                "-q",
                "-u",
                "test",
                "-m",
                &format!("change {n}"),
            ],
        );
    }
}

struct Svn {
    dir: tempfile::TempDir,
    checkout: bool,
}
impl Svn {
    fn new(checkout: bool) -> Svn {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), "svnadmin", &["create", "repo"]);
        let url = format!("file://{}/repo", dir.path().display());
        run(
            dir.path(),
            "svn",
            &["checkout", "-q", "--non-interactive", &url, "wc"],
        );
        let r = Svn { dir, checkout };
        std::fs::write(r.dir.path().join("wc/file"), "version 0\n").unwrap();
        run(&r.dir.path().join("wc"), "svn", &["add", "-q", "file"]);
        run(
            &r.dir.path().join("wc"),
            "svn",
            &["commit", "-q", "--non-interactive", "-m", "first"],
        );
        r
    }
}
impl Repo for Svn {
    fn input(&self) -> (&'static str, String) {
        (
            if self.checkout { "svn-checkout" } else { "svn" },
            format!("file://{}/repo", self.dir.path().display()),
        )
    }
    fn change(&self, n: u32) {
        std::fs::write(self.dir.path().join("wc/file"), format!("version {n}\n")).unwrap();
        run(
            &self.dir.path().join("wc"),
            "svn",
            &[
                "commit",
                "-q",
                "--non-interactive",
                "-m",
                &format!("change {n}"),
            ],
        );
    }
}

struct Bzr {
    dir: tempfile::TempDir,
    checkout: bool,
}
impl Bzr {
    fn new(checkout: bool) -> Bzr {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), "brz", &["init", "-q"]);
        let r = Bzr { dir, checkout };
        std::fs::write(r.dir.path().join("file"), "version 0\n").unwrap();
        run(r.dir.path(), "brz", &["add", "-q"]);
        run(r.dir.path(), "brz", &["commit", "-q", "-m", "first"]);
        r
    }
}
impl Repo for Bzr {
    fn input(&self) -> (&'static str, String) {
        (
            if self.checkout { "bzr-checkout" } else { "bzr" },
            self.dir.path().display().to_string(),
        )
    }
    fn change(&self, n: u32) {
        std::fs::write(self.dir.path().join("file"), format!("version {n}\n")).unwrap();
        run(
            self.dir.path(),
            "brz",
            &["commit", "-q", "-m", &format!("change {n}")],
        );
    }
}

struct Darcs(tempfile::TempDir, bool);
impl Darcs {
    /// A repository named by its path, or by a `file://` URL.
    fn new(file_url: bool) -> Darcs {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), "darcs", &["init", "-q"]);
        std::fs::write(dir.path().join("file"), "version 0\n").unwrap();
        run(
            dir.path(),
            "darcs",
            &[
                "record", "-q", "-l", "-a", "--author", "test", "-m", "first",
            ],
        );
        Darcs(dir, file_url)
    }
}
impl Repo for Darcs {
    fn input(&self) -> (&'static str, String) {
        let path = self.0.path().display();
        if self.1 {
            ("darcs", format!("file://{path}"))
        } else {
            ("darcs", path.to_string())
        }
    }
    fn change(&self, n: u32) {
        std::fs::write(self.0.path().join("file"), format!("version {n}\n")).unwrap();
        run(
            self.0.path(),
            "darcs",
            &[
                "record",
                "-q",
                "-a",
                "--author",
                "test",
                "-m",
                &format!("change {n}"),
            ],
        );
    }
}

struct Git(GitRepo);
impl Repo for Git {
    fn input(&self) -> (&'static str, String) {
        ("git", self.0.url())
    }
    fn change(&self, n: u32) {
        self.0.commit(
            &[("file", &format!("version {n}\n"))],
            &format!("change {n}"),
        );
    }
}

/// A change queues exactly one new build; no change queues none.
async fn one_build_per_change(repo: &dyn Repo) {
    let s = Setup::new().await;
    let jobs = source_dir(&[("release.nix", SCM_RELEASE)]);
    create_project(&s.db.pool, "p").await;
    let (kind, value) = repo.input();
    create_jobset(
        &s.db.pool,
        "p",
        "j",
        "jobs",
        "release.nix",
        &[
            ("jobs", "path", jobs.path().to_str().unwrap()),
            ("src", kind, &value),
        ],
    )
    .await;
    let summary = s.eval("p", "j").await;
    assert!(
        matches!(
            summary.outcome,
            Outcome::Evaluated {
                new_builds: 1,
                job_errors: 0,
                ..
            }
        ),
        "{kind}: {summary}"
    );
    let first_rev = s
        .strings("select revision from JobsetEvalInputs where name = 'src'")
        .await;

    let summary = s.eval("p", "j").await;
    assert!(
        matches!(summary.outcome, Outcome::Unchanged { .. }),
        "{kind}: {summary}"
    );

    repo.change(1);
    let summary = s.eval("p", "j").await;
    assert!(
        matches!(summary.outcome, Outcome::Evaluated { new_builds: 1, .. }),
        "{kind}: {summary}"
    );
    let revs = s
        .strings("select revision from JobsetEvalInputs where name = 'src' order by eval")
        .await;
    assert_eq!(revs.len(), 2);
    assert_ne!(revs[1], first_rev[0], "{kind}: a new revision is recorded");

    let summary = s.eval("p", "j").await;
    assert!(
        matches!(summary.outcome, Outcome::Unchanged { .. }),
        "{kind}: {summary}"
    );
    assert_eq!(
        s.scalar_i64("select count(*) from Builds").await,
        2,
        "{kind}"
    );

    // What the build copies is the new version, without metadata unless
    // the type keeps it.
    let path: String = sqlx::query_scalar(
        "select path from JobsetEvalInputs where name = 'src' order by eval desc limit 1",
    )
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(Path::new(&path).join("file")).unwrap(),
        "version 1\n",
        "{kind}"
    );
    let keeps = match kind {
        "svn-checkout" => Some(".svn"),
        "bzr-checkout" => Some(".bzr"),
        _ => None,
    };
    for meta in [".git", ".hg", ".svn", ".bzr", "_darcs", ".hg_archival.txt"] {
        assert_eq!(
            Path::new(&path).join(meta).exists(),
            keeps == Some(meta),
            "{kind}: {meta}"
        );
    }
}

#[tokio::test]
async fn git() {
    let repo = Git(GitRepo::new());
    repo.change(0);
    one_build_per_change(&repo).await;
}

#[tokio::test]
async fn hg() {
    one_build_per_change(&Hg::new()).await;
}

#[tokio::test]
async fn svn() {
    one_build_per_change(&Svn::new(false)).await;
}

#[tokio::test]
async fn svn_checkout() {
    one_build_per_change(&Svn::new(true)).await;
}

#[tokio::test]
async fn bzr() {
    one_build_per_change(&Bzr::new(false)).await;
}

#[tokio::test]
async fn bzr_checkout() {
    one_build_per_change(&Bzr::new(true)).await;
}

#[tokio::test]
async fn darcs() {
    one_build_per_change(&Darcs::new(false)).await;
}

#[tokio::test]
async fn darcs_file_urls_are_paths_to_darcs() {
    one_build_per_change(&Darcs::new(true)).await;
}

/// Uses what Hydra passes for git inputs.
const GIT_ATTRS: &str = r#"
with import ./config.nix;
{ src }:
{
  info = mkDerivation {
    name = "git-${toString src.revCount}-${src.shortRev}";
    builder = builtins.toFile "b.sh" "echo $rev $tag > $out";
    rev = src.rev; tag = src.gitTag;
    hasGit = builtins.pathExists (src + "/.git");
  };
}
"#;

async fn git_jobset(s: &Setup, value: &str) -> tempfile::TempDir {
    let jobs = source_dir(&[("release.nix", GIT_ATTRS)]);
    create_project(&s.db.pool, "p").await;
    create_jobset(
        &s.db.pool,
        "p",
        "j",
        "jobs",
        "release.nix",
        &[
            ("jobs", "path", jobs.path().to_str().unwrap()),
            ("src", "git", value),
        ],
    )
    .await;
    jobs
}

#[tokio::test]
async fn git_default_branch_rev_count_tag_and_short_rev() {
    let s = Setup::new().await;
    let repo = GitRepo::new();
    repo.git(&["checkout", "-q", "-b", "main"]);
    repo.commit(&[("file", "1")], "one");
    repo.git(&["tag", "-a", "v1.0", "-m", "release 1.0"]);
    let rev = repo.commit(&[("file", "2")], "two");
    // master exists too, at the first commit; HEAD says main.
    repo.git(&["branch", "-f", "master", "HEAD~1"]);
    let _jobs = git_jobset(&s, &repo.url()).await;
    s.eval_ok("p", "j").await;
    let name: String = sqlx::query_scalar("select nixName from Builds")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(name, format!("git-2-{}", &rev[..7]));
    let (revision, short_len): (String, Option<i16>) =
        sqlx::query_as("select revision, shortRevLength from JobsetEvalInputs where name = 'src'")
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(revision, rev);
    assert_eq!(short_len, Some(7));
    // The clone is kept under HYDRA_DATA, by the URL's hash.
    let clones: Vec<_> = std::fs::read_dir(s.data.path().join("scm/git"))
        .unwrap()
        .collect();
    assert!(!clones.is_empty());
    let (tag,): (String,) = sqlx::query_as("select drvPath from Builds")
        .fetch_one(&s.db.pool)
        .await
        .map(|(d,): (String,)| (std::fs::read_to_string(d).unwrap(),))
        .unwrap();
    assert!(tag.contains("v1.0-1-g"), "gitTag is git describe --always");
}

#[tokio::test]
async fn git_branches_fixed_revisions_and_timeouts() {
    let s = Setup::new().await;
    let repo = GitRepo::new();
    let first = repo.commit(&[("file", "1")], "one");
    repo.git(&["checkout", "-q", "-b", "feature"]);
    let feature = repo.commit(&[("file", "feature")], "feature");
    repo.git(&["checkout", "-q", "master"]);
    repo.commit(&[("file", "2")], "two");

    let _jobs = git_jobset(&s, &format!("{} feature", repo.url())).await;
    s.eval_ok("p", "j").await;
    let revision: String =
        sqlx::query_scalar("select revision from JobsetEvalInputs where name = 'src'")
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(revision, feature);

    // A fixed revision stays put whatever the branches do.
    let jobs = source_dir(&[("release.nix", GIT_ATTRS)]);
    set_inputs(
        &s.db.pool,
        "p",
        "j",
        &[
            ("jobs", "path", jobs.path().to_str().unwrap()),
            ("src", "git", &format!("{} {first} timeout=30", repo.url())),
        ],
    )
    .await;
    s.eval_ok("p", "j").await;
    repo.commit(&[("file", "3")], "three");
    assert!(matches!(
        s.eval("p", "j").await.outcome,
        Outcome::Unchanged { .. }
    ));
    let revisions = s
        .strings("select revision from JobsetEvalInputs where name = 'src' order by eval")
        .await;
    assert_eq!(revisions, [feature, first]);

    // A branch that does not exist is a fetch error naming it.
    set_inputs(
        &s.db.pool,
        "p",
        "j",
        &[
            ("jobs", "path", jobs.path().to_str().unwrap()),
            ("src", "git", &format!("{} nope", repo.url())),
        ],
    )
    .await;
    let summary = s.eval("p", "j").await;
    assert!(
        matches!(summary.outcome, Outcome::FetchFailed(ref e) if e.contains("nope")),
        "{summary}"
    );
}

#[tokio::test]
async fn git_deep_clones_keep_the_history() {
    let s = Setup::new().await;
    let repo = GitRepo::new();
    repo.commit(&[("file", "1")], "one");
    let rev = repo.commit(&[("file", "2")], "two");
    let _jobs = git_jobset(&s, &format!("{} master 1", repo.url())).await;
    s.eval_ok("p", "j").await;
    let path: String = sqlx::query_scalar("select path from JobsetEvalInputs where name = 'src'")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    let log = Command::new("git")
        .args(["-C", &path, "log", "--format=%H"])
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    let log = String::from_utf8(log.stdout).unwrap();
    assert_eq!(log.lines().count(), 2, "{log}");
    assert_eq!(log.lines().next(), Some(rev.as_str()));
}

const CHAIN: &str = r#"
with import ./config.nix;
{ dep ? null, all ? null }:
{
  lib = mkDerivation { name = "lib-1.2"; builder = builtins.toFile "b.sh" "echo library > $out"; };
} // (if dep == null then { } else {
  app = mkDerivation { name = "app"; builder = builtins.toFile "b.sh" "cat $dep > $out"; dep = dep; version = dep.version; };
}) // (if all == null then { } else {
  everything = mkDerivation { name = "everything"; builder = builtins.toFile "b.sh" "cat $lib > $out"; lib = all.lib; };
})
"#;

#[tokio::test]
async fn build_inputs_chain_two_jobsets() {
    let s = Setup::new().await;
    let src = source_dir(&[("release.nix", CHAIN)]);
    create_project(&s.db.pool, "p").await;
    let path = src.path().to_str().unwrap();
    create_jobset(
        &s.db.pool,
        "p",
        "upstream",
        "src",
        "release.nix",
        &[("src", "path", path)],
    )
    .await;
    create_jobset(
        &s.db.pool,
        "p",
        "downstream",
        "src",
        "release.nix",
        &[("src", "path", path), ("dep", "build", "upstream:lib")],
    )
    .await;

    // Nothing built yet: the input is left out, as Hydra does, and the
    // jobs that do not need it are queued, so the two jobsets can start.
    let summary = s.eval("p", "downstream").await;
    assert!(
        matches!(
            summary.outcome,
            Outcome::Evaluated {
                new_builds: 1,
                job_errors: 0,
                ..
            }
        ),
        "{summary}"
    );
    assert_eq!(
        s.strings("select job from Builds order by id").await,
        vec!["lib".to_string()]
    );
    assert_eq!(
        s.scalar_i64("select count(*) from JobsetEvalInputs where name = 'dep'")
            .await,
        0
    );
    s.db.exec("delete from Builds").await;

    s.eval_ok("p", "upstream").await;
    let lib_out = s.build_for_real("lib").await;
    let lib_id: i32 = sqlx::query_scalar("select id from Builds where job = 'lib'")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    let eval = s.eval_ok("p", "downstream").await;
    let (dependency, input_path): (Option<i32>, Option<String>) = sqlx::query_as(
        "select dependency, path from JobsetEvalInputs where eval = $1 and name = 'dep'",
    )
    .bind(eval)
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(dependency, Some(lib_id));
    assert_eq!(input_path.as_deref(), Some(lib_out.as_str()));
    let app_out = s.build_for_real("app").await;
    assert_eq!(std::fs::read_to_string(app_out).unwrap(), "library\n");
    let app_drv: String = sqlx::query_scalar("select drvPath from Builds where job = 'app'")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert!(
        std::fs::read_to_string(app_drv)
            .unwrap()
            .contains("\"version\",\"1.2\""),
        "version from the name"
    );
}

#[tokio::test]
async fn eval_inputs_pass_every_successful_output() {
    let s = Setup::new().await;
    let src = source_dir(&[("release.nix", CHAIN)]);
    create_project(&s.db.pool, "p").await;
    let path = src.path().to_str().unwrap();
    create_jobset(
        &s.db.pool,
        "p",
        "upstream",
        "src",
        "release.nix",
        &[("src", "path", path)],
    )
    .await;
    create_jobset(
        &s.db.pool,
        "p",
        "downstream",
        "src",
        "release.nix",
        &[("src", "path", path), ("all", "eval", "p:upstream")],
    )
    .await;
    s.eval_ok("p", "upstream").await;
    let summary = s.eval("p", "downstream").await;
    assert!(
        matches!(summary.outcome, Outcome::FetchFailed(ref e) if e.contains("no finished evaluation")),
        "{summary}"
    );
    let lib_out = s.build_for_real("lib").await;
    s.eval_ok("p", "downstream").await;
    let errors: Option<String> =
        sqlx::query_scalar("select errorMsg from Jobsets where name = 'downstream'")
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(errors.as_deref(), Some(""));
    let out = s.build_for_real("everything").await;
    assert_eq!(std::fs::read_to_string(out).unwrap(), "library\n");
    let value: Option<String> =
        sqlx::query_scalar("select value from JobsetEvalInputs where name = 'all'")
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    let upstream_eval: i32 = sqlx::query_scalar("select min(id) from JobsetEvals")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(value, Some(upstream_eval.to_string()));
    assert!(lib_out.ends_with("-lib-1.2"));
}

#[tokio::test]
async fn sysbuild_inputs_refuse_several_systems() {
    let s = Setup::new().await;
    let src = source_dir(&[("release.nix", CHAIN)]);
    create_project(&s.db.pool, "p").await;
    let path = src.path().to_str().unwrap();
    create_jobset(
        &s.db.pool,
        "p",
        "upstream",
        "src",
        "release.nix",
        &[("src", "path", path)],
    )
    .await;
    create_jobset(
        &s.db.pool,
        "p",
        "downstream",
        "src",
        "release.nix",
        &[("src", "path", path), ("dep", "sysbuild", "upstream:lib")],
    )
    .await;
    s.eval_ok("p", "upstream").await;
    s.build_for_real("lib").await;
    s.eval_ok("p", "downstream").await;
    assert_eq!(
        s.scalar_i64("select count(*) from Builds where job = 'app'")
            .await,
        1
    );

    // The same job built for a second system: two alternatives.
    let (timestamp, jobset, nix_name, drv): (i32, i32, Option<String>, String) = sqlx::query_as(
        "select timestamp, jobset_id, nixName, drvPath from Builds where job = 'lib'",
    )
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    hydra_test_support::builds::TestBuild::new(jobset, "lib")
        .timestamp(timestamp)
        .nix_name(nix_name.as_deref())
        .drv(&drv)
        .system("aarch64-linux")
        .priority(100)
        .finished(hydra_db::status::BuildStatus::Succeeded, 1, 2)
        .insert(&s.db.pool)
        .await;
    s.db.exec("update Jobsets set forceEval = true where name = 'downstream'")
        .await;
    let summary = s.eval("p", "downstream").await;
    assert!(
        matches!(summary.outcome, Outcome::FetchFailed(ref e) if e.contains("multiple alternatives") && e.contains("aarch64-linux, x86_64-linux")),
        "{summary}"
    );
}

#[tokio::test]
async fn path_inputs_may_be_urls() {
    let s = Setup::new().await;
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("greeting.txt"), "hello").unwrap();
    let jobs = source_dir(&[(
        "release.nix",
        r#"with import ./config.nix;
        { greeting }:
        { hello = mkDerivation { name = "say-${builtins.readFile greeting}"; builder = builtins.toFile "b.sh" "echo > $out"; }; }"#,
    )]);
    create_project(&s.db.pool, "p").await;
    let url = format!("file://{}/greeting.txt", data.path().display());
    // Downloaded again at every evaluation (validity 0 s).
    let value = format!("{url} 0");
    create_jobset(
        &s.db.pool,
        "p",
        "j",
        "jobs",
        "release.nix",
        &[
            ("jobs", "path", jobs.path().to_str().unwrap()),
            ("greeting", "path", &value),
        ],
    )
    .await;
    s.eval_ok("p", "j").await;
    // The same content again: the revision (first seen, hash) is the same.
    let summary = s.eval("p", "j").await;
    assert!(
        matches!(summary.outcome, Outcome::Unchanged { .. }),
        "{summary}"
    );
    std::fs::write(data.path().join("greeting.txt"), "howdy").unwrap();
    s.eval_ok("p", "j").await;
    assert_eq!(
        s.strings("select nixName from Builds order by id").await,
        ["say-hello", "say-howdy"]
    );
    let (uri, revision): (Option<String>, Option<String>) = sqlx::query_as(
        "select uri, revision from JobsetEvalInputs where name = 'greeting' order by eval limit 1",
    )
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(uri.as_deref(), Some(url.as_str()));
    assert!(revision.unwrap().len() > 20);
}

#[tokio::test]
async fn a_build_input_without_builds_fails_only_the_job_that_uses_it() {
    let s = Setup::new().await;
    let src = source_dir(&[(
        "release.nix",
        r#"
with import ./config.nix;
{ ... }@args:
{
  independent = mkDerivation { name = "independent"; builder = builtins.toFile "b.sh" "echo > $out"; };
  needs_dep = mkDerivation { name = "needs-dep"; builder = builtins.toFile "b.sh" "cat $dep > $out"; dep = args.dep; };
}
"#,
    )]);
    create_project(&s.db.pool, "p").await;
    create_jobset(
        &s.db.pool,
        "p",
        "j",
        "src",
        "release.nix",
        &[
            ("src", "path", src.path().to_str().unwrap()),
            ("dep", "build", "p:nowhere:nothing"),
        ],
    )
    .await;
    let summary = s.eval("p", "j").await;
    assert!(
        matches!(
            summary.outcome,
            Outcome::Evaluated {
                new_builds: 1,
                job_errors: 1,
                ..
            }
        ),
        "{summary}"
    );
    assert_eq!(
        s.strings("select job from Builds").await,
        vec!["independent".to_string()]
    );
    let error = s.jobset_error().await;
    assert!(
        error.starts_with("in job ‘needs_dep’:\n") && error.contains("dep"),
        "{error}"
    );
}
