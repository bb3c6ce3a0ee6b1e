//! What the queue runner's tests share: a database, a chroot Nix store as
//! the local store (where `localhost` builds), builds queued from Nix
//! expressions, a running queue runner, and waiting for builds.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hydra_config::Config;
use hydra_db::{Listener, Wakeup};
use hydra_nix::env::NixEnv;
use hydra_queue_runner::Context;
use hydra_test_support::jobsets::{create_jobset, create_project};
use hydra_test_support::{NixStore, TestDb};
use tokio_util::sync::CancellationToken;

pub struct Setup {
    pub db: TestDb,
    pub store: NixStore,
    pub data: tempfile::TempDir,
    pub exprs: tempfile::TempDir,
    pub jobset_id: i32,
    pub extra_config: String,
}

/// A build as the test sees it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BuildRow {
    pub id: i32,
    pub finished: i32,
    #[sqlx(rename = "buildstatus")]
    pub status: Option<i32>,
    #[sqlx(rename = "iscachedbuild")]
    pub cached: Option<i32>,
}

impl Setup {
    /// A database with project `p` and jobset `p:j`, a local chroot store,
    /// and the fixtures' `config.nix` next to the test's expressions.
    pub async fn new() -> Setup {
        let db = TestDb::new().await;
        create_project(&db.pool, "p").await;
        let jobset_id = create_jobset(&db.pool, "p", "j", "src", "release.nix", &[]).await;
        let exprs = tempfile::tempdir().unwrap();
        std::fs::copy(
            hydra_test_support::fixtures_dir().join("config.nix"),
            exprs.path().join("config.nix"),
        )
        .unwrap();
        Setup {
            db,
            store: NixStore::new(),
            data: hydra_test_support::temp_data_dir(),
            exprs,
            jobset_id,
            extra_config: String::new(),
        }
    }

    pub fn local(&self) -> NixEnv {
        let (_, args, env) = self.store.serve_command();
        NixEnv { args, env }
    }

    /// The machines file `localhost` alone, with `jobs` slots.
    pub fn localhost(&self, jobs: u32) -> String {
        format!("localhost x86_64-linux,builtin - {jobs} 1 - - -\n")
    }

    /// The context, with `machines` as the machines file and `extra`
    /// hydra.conf text.
    pub fn context(&self, machines: &str, extra: &str) -> Context {
        let machines_file = self.data.path().join("machines");
        std::fs::write(&machines_file, machines).unwrap();
        let text = format!(
            "gc_roots_dir = {}\nmachines_file = {}\nqueue_runner_metrics_address = 127.0.0.1:0\n{}\n{extra}\n",
            self.data.path().join("gcroots").display(),
            machines_file.display(),
            self.extra_config,
        );
        let (config, _) = Config::load_str(&self.data.path().join("hydra.conf"), &text).unwrap();
        let local = self.local();
        let dest = hydra_store::open(&config.queue_runner.store_uri, &local).unwrap();
        Context {
            pool: self.db.pool.clone(),
            config: Arc::new(config),
            data_dir: self.data.path().into(),
            local_root: local.detect_root(),
            local,
            dest: Arc::new(dest),
        }
    }

    /// Writes `file` (a Nix expression) next to `config.nix`.
    pub fn write(&self, file: &str, text: &str) -> PathBuf {
        let path = self.exprs.path().join(file);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Instantiates `attr` of `file` into the local store and queues it as
    /// job `attr` (with `meta`-like columns); returns the build id.
    pub async fn queue(&self, file: &Path, attr: &str) -> i32 {
        self.queue_with(file, attr, None, None, 0).await
    }

    pub async fn queue_with(
        &self,
        file: &Path,
        attr: &str,
        max_silent: Option<i32>,
        timeout: Option<i32>,
        global_priority: i32,
    ) -> i32 {
        hydra_test_support::jobsets::queue_build(
            &self.db.pool,
            &self.store,
            self.jobset_id,
            file,
            attr,
            hydra_test_support::jobsets::QueueOptions {
                max_silent,
                timeout,
                global_priority,
            },
        )
        .await
    }

    pub async fn build(&self, id: i32) -> BuildRow {
        sqlx::query_as("select id, finished, buildStatus, isCachedBuild from Builds where id = $1")
            .bind(id)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    /// Waits until every build in `ids` is finished.
    pub async fn wait(&self, ids: &[i32], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let unfinished: i64 = sqlx::query_scalar(
                "select count(*) from Builds where id = any($1) and finished = 0",
            )
            .bind(ids)
            .fetch_one(&self.db.pool)
            .await
            .unwrap();
            if unfinished == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "builds {ids:?} did not finish in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
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

/// A queue runner running in this process.
pub struct Running {
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), hydra_queue_runner::QueueError>>,
}

impl Running {
    pub fn start(ctx: Context) -> Running {
        init_logging();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(hydra_queue_runner::run(ctx, shutdown.clone()));
        Running { shutdown, task }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Records notifications in order.
pub struct Recorder {
    listener: Listener,
}

impl Recorder {
    pub async fn new(db: &TestDb, channels: &[&str]) -> Recorder {
        Recorder {
            listener: Listener::connect(&db.pool, channels).await.unwrap(),
        }
    }

    /// What arrived until nothing more came for a moment.
    pub async fn take(&mut self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while let Ok(wakeup) =
            tokio::time::timeout(Duration::from_millis(500), self.listener.recv()).await
        {
            match wakeup.unwrap() {
                Wakeup::Notification { channel, payload } => out.push((channel, payload)),
                Wakeup::Rescan => panic!("lost the notification connection"),
            }
        }
        out
    }
}

/// Logs to the test output when RUST_LOG is set.
pub fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
