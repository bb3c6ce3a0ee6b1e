//! One PostgreSQL cluster per test binary, and a fresh database per test
//! cloned from a migrated template.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use hydra_db::managed::{ClusterSpec, ManagedCluster};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

const TEMPLATE: &str = "hydra_template";

/// The cluster shared by the tests of this process. It is stopped and its
/// directory deleted by the watchdog when the process exits.
#[derive(Debug)]
pub struct TestCluster {
    cluster: ManagedCluster,
}

impl TestCluster {
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        self.cluster.connect_options(database)
    }

    pub fn url(&self, database: &str) -> String {
        self.cluster.url(database)
    }
}

static CLUSTER: OnceLock<TestCluster> = OnceLock::new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The cluster of this test binary, started on first use.
pub fn cluster() -> &'static TestCluster {
    CLUSTER.get_or_init(|| {
        // Set up on a thread of its own: callers are usually inside a runtime.
        std::thread::spawn(start_cluster)
            .join()
            .expect("starting the test cluster panicked")
    })
}

fn start_cluster() -> TestCluster {
    // In memory when possible: creating a database copies ~7 MB, which on a
    // virtual disk takes 150 ms and in tmpfs 12 ms. The cluster is thrown
    // away anyway.
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::Builder::new()
        .prefix("hydra-test-pg-")
        .tempdir_in(base)
        .unwrap()
        .keep();
    let spec = ClusterSpec {
        dir,
        settings: [
            ("fsync", "off"),
            ("synchronous_commit", "off"),
            ("full_page_writes", "off"),
            ("max_connections", "400"),
            ("shared_buffers", "32MB"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        remove_when_orphaned: true,
        search_path: None,
    };
    let cluster = ManagedCluster::start(&spec)
        .unwrap_or_else(|e| panic!("cannot start the test cluster: {e}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        cluster.ensure_database(TEMPLATE).await.unwrap();
        let pool = hydra_db::connect(
            cluster.connect_options(TEMPLATE),
            2,
            std::time::Duration::ZERO,
        )
        .await
        .unwrap();
        hydra_db::migrate::migrate(&pool).await.unwrap();
        pool.close().await;
    });
    TestCluster { cluster }
}

/// A database of its own for one test.
#[derive(Debug)]
pub struct TestDb {
    pub pool: PgPool,
    pub name: String,
}

impl TestDb {
    /// A fresh database with the current schema.
    pub async fn new() -> TestDb {
        Self::create(TEMPLATE).await
    }

    /// A fresh database without any tables.
    pub async fn empty() -> TestDb {
        Self::create("template0").await
    }

    async fn create(template: &str) -> TestDb {
        let cluster = cluster();
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let admin = hydra_db::connect(
            cluster.connect_options("postgres"),
            1,
            std::time::Duration::ZERO,
        )
        .await
        .unwrap();
        let statement =
            format!("create database \"{name}\" template \"{template}\" strategy file_copy");
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let pool = hydra_db::connect(cluster.connect_options(&name), 8, std::time::Duration::ZERO)
            .await
            .unwrap();
        TestDb { pool, name }
    }

    pub fn connect_options(&self) -> PgConnectOptions {
        cluster().connect_options(&self.name)
    }

    /// Runs SQL statements (several, separated by `;`); panics with the
    /// statement and error if they fail.
    pub async fn exec(&self, sql: &str) {
        self.try_exec(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Runs SQL statements and returns what PostgreSQL said.
    pub async fn try_exec(&self, sql: &str) -> Result<(), sqlx::Error> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Waits, up to 10 seconds, until a session of this database LISTENs
    /// (a role started in the background is ready for NOTIFYs).
    pub async fn wait_for_listener(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let listening: i64 = sqlx::query_scalar(
                "select count(*) from pg_stat_activity \
                 where datname = current_database() and query ilike 'listen%'",
            )
            .fetch_one(&self.pool)
            .await
            .unwrap();
            if listening > 0 {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "nothing LISTENs");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        cluster().url(&self.name)
    }
}
