//! Builds as rows for tests that need them without an evaluation: a
//! builder with Hydra's defaults, so a test names only what it is about.

use hydra_db::status::BuildStatus;
use sqlx::PgPool;

/// A build to add: queued unless [`TestBuild::finished`] says otherwise.
#[derive(Clone, Debug)]
pub struct TestBuild {
    id: Option<i32>,
    jobset_id: i32,
    job: String,
    nix_name: Option<String>,
    drv_path: String,
    system: String,
    timestamp: i32,
    finished: Option<(BuildStatus, i32, i32)>,
    is_current: bool,
    priority: i32,
    global_priority: i32,
    release_name: Option<String>,
    sizes: Option<(i64, i64)>,
    outputs: Vec<(String, Option<String>)>,
}

impl TestBuild {
    /// A queued, current build of `job` in jobset `jobset_id`, for
    /// `x86_64-linux`, named after the job; other columns have the
    /// schema's defaults (priority 0).
    pub fn new(jobset_id: i32, job: &str) -> TestBuild {
        TestBuild {
            id: None,
            jobset_id,
            job: job.to_string(),
            nix_name: Some(job.to_string()),
            drv_path: format!("/nix/store/{}-{job}.drv", "a".repeat(32)),
            system: "x86_64-linux".into(),
            timestamp: 1,
            finished: None,
            is_current: true,
            priority: 0,
            global_priority: 0,
            release_name: None,
            sizes: None,
            outputs: Vec::new(),
        }
    }

    /// With this id (the id sequence is moved past it).
    pub fn id(mut self, id: i32) -> TestBuild {
        self.id = Some(id);
        self
    }

    pub fn nix_name(mut self, name: Option<&str>) -> TestBuild {
        self.nix_name = name.map(String::from);
        self
    }

    pub fn drv(mut self, drv_path: &str) -> TestBuild {
        self.drv_path = drv_path.to_string();
        self
    }

    pub fn system(mut self, system: &str) -> TestBuild {
        self.system = system.to_string();
        self
    }

    pub fn timestamp(mut self, timestamp: i32) -> TestBuild {
        self.timestamp = timestamp;
        self
    }

    /// Finished with `status`, started and stopped at those times.
    pub fn finished(mut self, status: BuildStatus, start: i32, stop: i32) -> TestBuild {
        self.finished = Some((status, start, stop));
        self
    }

    pub fn current(mut self, current: bool) -> TestBuild {
        self.is_current = current;
        self
    }

    pub fn priority(mut self, priority: i32) -> TestBuild {
        self.priority = priority;
        self
    }

    pub fn global_priority(mut self, priority: i32) -> TestBuild {
        self.global_priority = priority;
        self
    }

    pub fn release_name(mut self, name: &str) -> TestBuild {
        self.release_name = Some(name.to_string());
        self
    }

    /// Output size and closure size, in bytes.
    pub fn sizes(mut self, size: i64, closure_size: i64) -> TestBuild {
        self.sizes = Some((size, closure_size));
        self
    }

    /// With output `name` at `path`.
    pub fn output(mut self, name: &str, path: &str) -> TestBuild {
        self.outputs
            .push((name.to_string(), Some(path.to_string())));
        self
    }

    /// Adds the build and its outputs; returns its id.
    pub async fn insert(&self, pool: &PgPool) -> i32 {
        let (status, start, stop) = match self.finished {
            Some((status, start, stop)) => (Some(status), Some(start), Some(stop)),
            None => (None, None, None),
        };
        let id: i32 = sqlx::query_scalar(
            "insert into Builds (id, finished, timestamp, jobset_id, job, nixName, drvPath, system, \
             buildStatus, startTime, stopTime, isCurrent, priority, globalPriority, releaseName, size, closureSize) \
             values (coalesce($1, nextval('builds_id_seq')::int), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
             $13, $14, $15, $16, $17) returning id",
        )
        .bind(self.id)
        .bind(i32::from(self.finished.is_some()))
        .bind(self.timestamp)
        .bind(self.jobset_id)
        .bind(&self.job)
        .bind(&self.nix_name)
        .bind(&self.drv_path)
        .bind(&self.system)
        .bind(status)
        .bind(start)
        .bind(stop)
        .bind(i32::from(self.is_current))
        .bind(self.priority)
        .bind(self.global_priority)
        .bind(&self.release_name)
        .bind(self.sizes.map(|s| s.0))
        .bind(self.sizes.map(|s| s.1))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("cannot add build {self:?}: {e}"));
        if self.id.is_some() {
            sqlx::query(
                "select setval('builds_id_seq', greatest((select max(id) from Builds), 1))",
            )
            .execute(pool)
            .await
            .unwrap();
        }
        for (name, path) in &self.outputs {
            sqlx::query("insert into BuildOutputs (build, name, path) values ($1, $2, $3)")
                .bind(id)
                .bind(name)
                .bind(path)
                .execute(pool)
                .await
                .unwrap();
        }
        id
    }
}
