//! What the evaluator's tests share: a database, a chroot Nix store, an
//! evaluation context that uses both, and a recorder of notifications.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hydra_config::Config;
use hydra_db::{Listener, Wakeup};
use hydra_evaluator::engine::NixEnv;
use hydra_evaluator::evaluation::{self, Context, Outcome, Summary};
use hydra_evaluator::metrics::Metrics;
use hydra_test_support::TestDb;

/// The channels the evaluator sends on.
pub const EVAL_CHANNELS: &[&str] = &[
    "eval_started",
    "eval_failed",
    "eval_cached",
    "eval_added",
    "build_queued",
    "cached_build_finished",
    "cached_build_queued",
    "builds_added",
];

/// Evaluations use the machine's Nix store, as in production (Nix 2.8
/// cannot look up search-path entries in a chroot store), with settings of
/// their own: nothing is downloaded and the flake registry is empty.
pub struct Setup {
    pub db: TestDb,
    pub data: tempfile::TempDir,
    pub ctx: Context,
}

impl Setup {
    pub async fn new() -> Setup {
        Self::with_config("").await
    }

    /// With extra `hydra.conf` text.
    pub async fn with_config(extra: &str) -> Setup {
        let db = TestDb::new().await;
        let data = hydra_test_support::temp_data_dir();
        let conf = data.path().join("nix");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(conf.join("registry.json"), r#"{"flakes":[],"version":2}"#).unwrap();
        std::fs::write(
            conf.join("nix.conf"),
            format!(
                "substituters =\nexperimental-features = nix-command flakes\nflake-registry = {}\nwarn-dirty = false\n\
                 sandbox = false\nbuild-users-group =\n",
                conf.join("registry.json").display()
            ),
        )
        .unwrap();
        let text = format!(
            "gc_roots_dir = {}\nevaluator_metrics_address =\n{extra}\n",
            data.path().join("gcroots").display()
        );
        let (config, _) = Config::load_str(&data.path().join("hydra.conf"), &text).unwrap();
        let ctx = Context {
            pool: db.pool.clone(),
            config: Arc::new(config),
            data_dir: data.path().into(),
            nix: NixEnv {
                args: Vec::new(),
                env: vec![
                    ("NIX_CONF_DIR".into(), conf.display().to_string()),
                    (
                        "XDG_CACHE_HOME".into(),
                        data.path().join("cache").display().to_string(),
                    ),
                ],
            },
            metrics: Arc::new(Metrics::new()),
        };
        Setup { db, data, ctx }
    }

    /// Project `p` with jobset `p:j` evaluating `release.nix` (`expr`) from
    /// a `path` input `src`; returns the directory and the jobset's id.
    pub async fn simple_jobset(&self, expr: &str) -> (tempfile::TempDir, i32) {
        let src = source_dir(&[("release.nix", expr)]);
        hydra_test_support::jobsets::create_project(&self.db.pool, "p").await;
        let id = hydra_test_support::jobsets::create_jobset(
            &self.db.pool,
            "p",
            "j",
            "src",
            "release.nix",
            &[("src", "path", src.path().to_str().unwrap())],
        )
        .await;
        (src, id)
    }

    /// `errorMsg` of the only jobset.
    pub async fn jobset_error(&self) -> String {
        sqlx::query_scalar::<_, Option<String>>("select errorMsg from Jobsets")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
            .unwrap_or_default()
    }

    pub fn gc_roots(&self) -> PathBuf {
        self.data.path().join("gcroots")
    }

    pub async fn eval(&self, project: &str, jobset: &str) -> Summary {
        evaluation::evaluate_jobset(&self.ctx, project, jobset)
            .await
            .unwrap()
    }

    /// Evaluates and expects an evaluation to be recorded; returns its id.
    pub async fn eval_ok(&self, project: &str, jobset: &str) -> i32 {
        let summary = self.eval(project, jobset).await;
        match summary.outcome {
            Outcome::Evaluated { eval_id, .. } => eval_id,
            other => panic!("expected an evaluation, got {other:?}"),
        }
    }

    /// Builds the newest build of `job` with Nix (in the machine's store)
    /// and marks it succeeded, as the queue runner would; returns the
    /// output path.
    pub async fn build_for_real(&self, job: &str) -> String {
        let (id, drv): (i32, String) = sqlx::query_as(
            "select id, drvPath from Builds where job = $1 order by id desc limit 1",
        )
        .bind(job)
        .fetch_one(&self.db.pool)
        .await
        .unwrap();
        let out = self
            .ctx
            .nix
            .command("nix-store")
            .args([
                "--realise",
                &drv,
                "--option",
                "sandbox",
                "false",
                "--option",
                "build-users-group",
                "",
            ])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        sqlx::query("update Builds set finished = 1, buildStatus = 0, startTime = 1, stopTime = 2 where id = $1")
            .bind(id)
            .execute(&self.db.pool)
            .await
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub async fn scalar_i64(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&self.db.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub async fn strings(&self, sql: &str) -> Vec<String> {
        sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_all(&self.db.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

/// Records notifications in the order they arrive.
pub struct Recorder {
    listener: Listener,
}

impl Recorder {
    pub async fn new(db: &TestDb, channels: &[&str]) -> Recorder {
        Recorder {
            listener: Listener::connect(&db.pool, channels).await.unwrap(),
        }
    }

    /// Everything received until nothing more arrives for a moment.
    pub async fn take(&mut self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while let Ok(wakeup) =
            tokio::time::timeout(Duration::from_millis(300), self.listener.recv()).await
        {
            match wakeup.unwrap() {
                Wakeup::Notification { channel, payload } => out.push((channel, payload)),
                Wakeup::Rescan => panic!("the notification connection was lost"),
            }
        }
        out
    }

    /// Just the channels of [`Recorder::take`].
    pub async fn channels(&mut self) -> Vec<String> {
        self.take().await.into_iter().map(|(c, _)| c).collect()
    }
}

/// Writes `files` (relative name, contents) into `dir`.
pub fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, text).unwrap();
    }
}

/// A directory with the fixtures' `config.nix` and `files`.
pub fn source_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        hydra_test_support::fixtures_dir().join("config.nix"),
        dir.path().join("config.nix"),
    )
    .unwrap();
    write_files(dir.path(), files);
    dir
}
