//! The fault suite: the roles as separate `hydra` processes on a
//! PostgreSQL cluster of the test's own, building real derivations in the
//! machine's Nix store, while faults are injected: `kill -9` of the queue
//! runner at random moments of a DAG build, `kill -9` of the evaluator
//! during evaluation and recording (and half way through an evaluation,
//! which then carries on where it stopped), a PostgreSQL fast restart and a
//! postmaster kill under all roles. After each: no build lost, none built
//! twice after it succeeded, every status right, no step row left busy, no
//! child process orphaned, and a new jobset still evaluates and builds.
//!
//! Random moments come from a seed printed at the start of each test
//! (`fault seed: N`); `FAULT_SEED=N` replays it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use crate::common;

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use hydra_db::managed::{ClusterSpec, ManagedCluster};
use hydra_test_support::{fixtures_dir, shared_tempdir};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sqlx::PgPool;

/// The scenarios run one at a time: each runs every role and builds.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A small deterministic generator (xorshift64*), so a seed replays a run.
struct Rng(u64);

impl Rng {
    fn from_env(test: &str) -> Rng {
        let seed = std::env::var("FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("{test}: fault seed: {seed} (replay with FAULT_SEED={seed})");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A duration between `lo` and `hi` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }
}

/// A DAG of sleeping steps, a failing job and its dependant; `salt` makes
/// every run's derivations new to the store.
const DAG: &str = r#"
with import ./config.nix;
{ salt }:
let
  step = name: deps: mkDerivation {
    inherit name salt deps;
    builder = builtins.toFile "step.sh" "sleep 0.4; mkdir $out; for d in $deps; do cat $d/log >> $out/log; done; echo $name >> $out/log";
  };
  a0 = step "a0" [ ]; a1 = step "a1" [ ]; a2 = step "a2" [ ]; a3 = step "a3" [ ];
  b0 = step "b0" [ a0 a1 ]; b1 = step "b1" [ a1 a2 ]; b2 = step "b2" [ a2 a3 ]; b3 = step "b3" [ a3 a0 ];
  c0 = step "c0" [ b0 b1 ]; c1 = step "c1" [ b2 b3 ];
  broken = mkDerivation { name = "broken"; inherit salt; builder = builtins.toFile "broken.sh" "sleep 0.2; exit 1"; };
in {
  inherit a0 a1 a2 a3 b0 b1 b2 b3 c0 c1 broken;
  top = step "top" [ c0 c1 ];
  victim = step "victim" [ broken ];
}
"#;

/// Jobs of [`DAG`] and the status each must end with.
fn dag_statuses() -> Vec<(String, i32)> {
    let mut wanted: Vec<(String, i32)> = [
        "a0", "a1", "a2", "a3", "b0", "b1", "b2", "b3", "c0", "c1", "top",
    ]
    .iter()
    .map(|j| (j.to_string(), 0))
    .collect();
    wanted.push(("broken".into(), 1));
    wanted.push(("victim".into(), 2));
    wanted.sort();
    wanted
}

/// Many cheap jobs: an evaluation worth interrupting.
const WIDE: &str = r#"
with import ./config.nix;
{ salt }:
builtins.listToAttrs (builtins.genList (i: {
  name = "w${toString i}";
  value = mkDerivation { name = "w${toString i}"; inherit salt; builder = builtins.toFile "w.sh" "echo > $out"; };
}) 3000)
"#;

/// Jobs that each cost milliseconds of evaluation and say, on the
/// worker's stderr, that they were evaluated.
const COUNTED: &str = r#"
with import ./config.nix;
{ salt }:
builtins.listToAttrs (builtins.genList (i: {
  name = "c${toString i}";
  value = builtins.trace "counted: evaluated c${toString i}" (mkDerivation {
    name = "c${toString i}";
    inherit salt;
    work = toString (builtins.foldl' (a: b: a + b) i (builtins.genList (x: x * i) 30000));
    builder = builtins.toFile "c.sh" "echo > $out";
  });
}) 1500)
"#;

/// One role as a process of its own.
struct Role {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Role {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn kill9(&mut self) {
        let _ = kill(Pid::from_raw(self.pid()), Signal::SIGKILL);
        let _ = self.child.wait();
    }

    fn stop(mut self) {
        let _ = kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The processes descending from `pid`.
fn descendants(pid: i32) -> Vec<i32> {
    let mut parents: Vec<(i32, i32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
            parents.push((p, ppid));
        }
    }
    let mut found = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for (child, parent) in &parents {
            if *parent == p && !found.contains(child) {
                found.push(*child);
                todo.push(*child);
            }
        }
    }
    found
}

/// Everything one scenario runs on.
struct World {
    _dir: tempfile::TempDir,
    data: PathBuf,
    exprs: PathBuf,
    spec: ClusterSpec,
    cluster: Option<ManagedCluster>,
    /// Removed after the cluster stopped (fields drop in this order).
    _cluster_dir: tempfile::TempDir,
    url: String,
    pool: PgPool,
    roles: Vec<Role>,
    salt: u64,
}

impl World {
    async fn new(salt: u64) -> World {
        let dir = shared_tempdir();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let exprs = dir.path().join("exprs");
        std::fs::create_dir_all(&exprs).unwrap();
        std::fs::copy(fixtures_dir().join("config.nix"), exprs.join("config.nix")).unwrap();
        std::fs::write(exprs.join("dag.nix"), DAG).unwrap();
        std::fs::write(exprs.join("wide.nix"), WIDE).unwrap();
        std::fs::write(exprs.join("counted.nix"), COUNTED).unwrap();
        let nix_conf = data.join("nix");
        std::fs::create_dir_all(&nix_conf).unwrap();
        std::fs::write(
            nix_conf.join("nix.conf"),
            "substituters =\nsandbox = false\nbuild-users-group =\nexperimental-features = nix-command flakes\n",
        )
        .unwrap();
        std::fs::write(data.join("machines"), "localhost x86_64-linux - 3 1\n").unwrap();
        std::fs::write(
            data.join("hydra.conf"),
            format!(
                "{}gc_roots_dir = {}\nmachines_file = {}\nretry_interval = 1\nretry_backoff = 1\nmax_tries = 10\n",
                common::FREE_PORTS,
                data.join("gcroots").display(),
                data.join("machines").display()
            ),
        )
        .unwrap();
        let cluster_dir = tempfile::Builder::new()
            .prefix("hydra-fault-pg-")
            .tempdir_in("/dev/shm")
            .unwrap();
        let spec = ClusterSpec {
            dir: cluster_dir.path().to_path_buf(),
            settings: vec![
                ("fsync".into(), "off".into()),
                ("max_connections".into(), "200".into()),
            ],
            remove_when_orphaned: true,
            search_path: None,
        };
        let cluster = ManagedCluster::start(&spec).unwrap();
        cluster.ensure_database("hydra").await.unwrap();
        let url = cluster.url("hydra");
        let pool = hydra_db::connect(cluster.connect_options("hydra"), 4, Duration::from_secs(30))
            .await
            .unwrap();
        hydra_db::migrate::migrate(&pool).await.unwrap();
        sqlx::raw_sql(
            "insert into Users (userName, emailAddress, password) values ('root', '', '!');
             insert into Projects (name, displayName, owner) values ('p', 'P', 'root');",
        )
        .execute(&pool)
        .await
        .unwrap();
        World {
            _dir: dir,
            data,
            exprs,
            spec,
            cluster: Some(cluster),
            _cluster_dir: cluster_dir,
            url,
            pool,
            roles: Vec::new(),
            salt,
        }
    }

    fn start(&mut self, name: &'static str, command: &str) {
        self.start_with(name, command, &[]);
    }

    fn start_with(&mut self, name: &'static str, command: &str, env: &[(&str, String)]) {
        let log = self.data.join(format!("{name}.{}.log", self.roles.len()));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut cmd = common::hydra(&self.data);
        cmd.env("HYDRA_DATABASE_URL", &self.url)
            .env("NIX_CONF_DIR", self.data.join("nix"))
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg(command)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd.spawn().unwrap();
        self.roles.retain(|r| r.name != name);
        self.roles.push(Role { name, child, log });
    }

    fn role(&mut self, name: &str) -> &mut Role {
        self.roles.iter_mut().find(|r| r.name == name).unwrap()
    }

    /// A jobset evaluating `file` with a salt of its own.
    async fn jobset(&self, name: &str, file: &str) -> i32 {
        let id: i32 = sqlx::query_scalar(
            "insert into Jobsets (project, name, nixExprInput, nixExprPath, emailOverride, checkInterval) \
             values ('p', $1, 'src', $2, '', 0) returning id",
        )
        .bind(name)
        .bind(file)
        .fetch_one(&self.pool)
        .await
        .unwrap();
        hydra_test_support::jobsets::set_inputs(
            &self.pool,
            "p",
            name,
            &[
                ("src", "path", &format!("{} 0", self.exprs.display())),
                ("salt", "string", &format!("{}-{name}", self.salt)),
            ],
        )
        .await;
        // Due once its inputs are there.
        sqlx::query("update Jobsets set triggerTime = 1 where id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .unwrap();
        id
    }

    /// The DAG jobset, evaluated (its builds queued).
    async fn evaluated_dag(&self) {
        self.jobset("dag", "dag.nix").await;
        self.wait_for(
            "select count(*) from Builds",
            13,
            Duration::from_secs(120),
            "the evaluation",
        )
        .await;
    }

    async fn query_i64(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Waits until `sql` (a count) is at least `n`, across faults.
    async fn wait_for(&self, sql: &str, n: i64, within: Duration, what: &str) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(got) = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_string()))
                .fetch_one(&self.pool)
                .await
                && got >= n
            {
                return;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn logs(&self) -> String {
        self.roles
            .iter()
            .map(|r| {
                let log = r.log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                format!(
                    "--- {} (last lines)\n{}",
                    r.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The DAG jobset's builds, all finished with the right statuses, none
    /// lost, none built twice after succeeding, no step row busy.
    async fn check_dag(&self, jobset: &str) {
        let jobset_id: i32 = sqlx::query_scalar("select id from Jobsets where name = $1")
            .bind(jobset)
            .fetch_one(&self.pool)
            .await
            .unwrap();
        self.wait_for(
            &format!(
                "select count(*) from Builds where jobset_id = {jobset_id} and finished = 1 \
                 and not exists (select 1 from Builds b where b.jobset_id = {jobset_id} and b.finished = 0)"
            ),
            13,
            Duration::from_secs(120),
            &format!("every build of {jobset} to finish"),
        )
        .await;
        let got: Vec<(String, i32)> =
            sqlx::query_as("select job, buildStatus from Builds where jobset_id = $1 order by job")
                .bind(jobset_id)
                .fetch_all(&self.pool)
                .await
                .unwrap();
        assert_eq!(got, dag_statuses(), "statuses of {jobset}\n{}", self.logs());
        let twice = self
            .query_i64(&format!(
                "select count(*) from (select s.drvPath from BuildSteps s join Builds b on b.id = s.build \
                 where b.jobset_id = {jobset_id} and s.type = 0 and s.status = 0 \
                 group by s.drvPath having count(*) > 1) t"
            ))
            .await;
        assert_eq!(
            twice,
            0,
            "derivations built twice after succeeding\n{}",
            self.logs()
        );
        self.check_not_busy().await;
    }

    async fn check_not_busy(&self) {
        let busy = self
            .query_i64("select count(*) from BuildSteps where busy <> 0")
            .await;
        assert_eq!(busy, 0, "step rows left busy\n{}", self.logs());
    }

    /// A new jobset evaluates and builds with the roles as they are.
    async fn check_new_jobset_builds(&self, name: &str) {
        self.jobset(name, "dag.nix").await;
        self.check_dag(name).await;
    }

    fn restart_database(&mut self, how: Signal) {
        let cluster = self.cluster.take().unwrap();
        if how == Signal::SIGKILL {
            let pid: i32 = std::fs::read_to_string(self.spec.dir.join("data/postmaster.pid"))
                .unwrap()
                .lines()
                .next()
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        }
        // A fast shutdown (SIGINT), or the leftovers of the killed one.
        cluster.stop().unwrap();
        self.cluster = Some(ManagedCluster::start(&self.spec).unwrap());
    }

    fn stop(&mut self) {
        for role in std::mem::take(&mut self.roles) {
            let pid = role.pid();
            let children = descendants(pid);
            role.stop();
            assert_no_orphans(&children, "a stopped role");
        }
    }
}

/// Waits for `pids` to be gone: children that outlive their role are
/// orphans.
fn assert_no_orphans(pids: &[i32], after: &str) {
    let alive = || {
        pids.iter()
            .copied()
            .filter(|p| common::alive(*p))
            .collect::<Vec<_>>()
    };
    assert!(
        common::eventually(Duration::from_secs(15), || alive().is_empty()),
        "processes outlived {after}: {:?}",
        alive()
            .iter()
            .map(|p| std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .unwrap_or_default()
                .replace('\0', " "))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_queue_runner_at_random_moments_loses_and_repeats_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut rng = Rng::from_env("queue runner kills");
    let mut world = World::new(rng.next()).await;
    world.start("evaluator", "evaluator");
    world.start("queue-runner", "queue-runner");
    world.evaluated_dag().await;
    for round in 0..5 {
        tokio::time::sleep(rng.millis(100, 1500)).await;
        let runner = world.role("queue-runner");
        let children = descendants(runner.pid());
        runner.kill9();
        eprintln!(
            "round {round}: killed the queue runner ({} children)",
            children.len()
        );
        assert_no_orphans(&children, "a killed queue runner");
        world.start("queue-runner", "queue-runner");
    }
    world.check_dag("dag").await;
    world.check_new_jobset_builds("after").await;
    world.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_evaluator_during_evaluation_and_recording_loses_and_repeats_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut rng = Rng::from_env("evaluator kills");
    let mut world = World::new(rng.next()).await;
    world.start("evaluator", "evaluator");
    let wide = world.jobset("wide", "wide.nix").await;
    let mut killed = Vec::new();
    for round in 0..4 {
        // From the start: fetching, the workers, recording.
        tokio::time::sleep(rng.millis(50, 1200)).await;
        let evaluator = world.role("evaluator");
        let children = descendants(evaluator.pid());
        killed.push(evaluator.pid());
        evaluator.kill9();
        let recorded = world.query_i64("select count(*) from JobsetEvals").await;
        eprintln!(
            "round {round}: killed the evaluator ({} children, {recorded} evaluations recorded)",
            children.len()
        );
        assert_no_orphans(&children, "a killed evaluator");
        // Evaluate again, whether or not it was recorded.
        sqlx::query("update Jobsets set triggerTime = 1, forceEval = true where id = $1")
            .bind(wide)
            .execute(&world.pool)
            .await
            .unwrap();
        world.start("evaluator", "evaluator");
    }
    world
        .wait_for(
            "select count(*) from Builds where isCurrent = 1",
            3000,
            Duration::from_secs(180),
            "an evaluation of every job",
        )
        .await;
    // Each job has one build whatever was interrupted, all current.
    let per_job = world
        .query_i64(
            "select count(*) from (select job from Builds group by job having count(*) > 1) t",
        )
        .await;
    assert_eq!(per_job, 0, "a job got two builds\n{}", world.logs());
    assert_eq!(
        world
            .query_i64("select count(distinct job) from Builds where isCurrent = 1")
            .await,
        3000
    );
    // The killed evaluators' working directories are gone, once the last
    // evaluator has started (it removes them first).
    let started = common::eventually(Duration::from_secs(30), || {
        world
            .roles
            .iter()
            .any(|r| r.name == "evaluator" && r.log().contains("evaluator started"))
    });
    assert!(started, "{}", world.logs());
    let stale: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| n.starts_with("hydra-eval-"))
        .filter(|n| {
            n.trim_start_matches("hydra-eval-")
                .split('-')
                .next()
                .and_then(|p| p.parse::<i32>().ok())
                .is_some_and(|p| killed.contains(&p))
        })
        .collect();
    assert!(stale.is_empty(), "left behind: {stale:?}\n{}", world.logs());
    // The wide builds are not what this test builds; a new jobset is.
    sqlx::query(
        "update Builds set finished = 1, buildStatus = 4, startTime = 1, stopTime = 1 where finished = 0",
    )
        .execute(&world.pool)
        .await
        .unwrap();
    world.start("queue-runner", "queue-runner");
    world.check_new_jobset_builds("after").await;
    world.stop();
}

async fn database_restart_under_all_roles(signal: Signal, test: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut rng = Rng::from_env(test);
    let mut world = World::new(rng.next()).await;
    world.start("evaluator", "evaluator");
    world.start("queue-runner", "queue-runner");
    world.start("server", "server");
    world.evaluated_dag().await;
    tokio::time::sleep(rng.millis(200, 1500)).await;
    world.restart_database(signal);
    eprintln!("{test}: PostgreSQL restarted");
    // No role was restarted: they carry on.
    world.check_dag("dag").await;
    world.check_new_jobset_builds("after").await;
    let address = world
        .role("server")
        .log()
        .lines()
        .find_map(|l| {
            l.split("address=")
                .nth(1)
                .and_then(|a| a.split_whitespace().next())
                .map(String::from)
        })
        .unwrap();
    let (status, body) = common::curl(&[&format!("http://{address}/api/nrqueue")]);
    assert_eq!((status, body.trim()), (200, "0"), "the web server answers");
    world.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_fast_restart_under_all_roles_loses_and_repeats_nothing() {
    database_restart_under_all_roles(Signal::SIGINT, "fast restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postmaster_kill_under_all_roles_loses_and_repeats_nothing() {
    database_restart_under_all_roles(Signal::SIGKILL, "postmaster kill").await;
}

/// An evaluation whose evaluator is killed half way carries on from what
/// its workers had reported: counted by the jobs themselves (each traces
/// when it is evaluated, and a wrapper around `nix-instantiate` keeps the
/// workers' stderr), at most one report line per worker is evaluated twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evaluation_killed_half_way_carries_on_where_it_stopped() {
    const JOBS: usize = 1500;
    const WORKERS: usize = 2;
    // Reports per trace line of a worker (the engine's batch).
    const BATCH: usize = 64;
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut world = World::new(Rng::from_env("resumed evaluation").next()).await;
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(world.data.join("hydra.conf"))
        .unwrap();
    std::io::Write::write_all(
        &mut conf,
        format!("evaluator_workers = {WORKERS}\n").as_bytes(),
    )
    .unwrap();
    // A log per worker process: lines of two processes appending to one
    // file could interleave.
    let logs = world.data.join("evaluated");
    std::fs::create_dir_all(&logs).unwrap();
    let bin = world.data.join("wrapped");
    std::fs::create_dir_all(&bin).unwrap();
    let real = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v nix-instantiate"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let wrapper = bin.join("nix-instantiate");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/bash\nset -o pipefail\nsetpriv --pdeathsig KILL -- {} \"$@\" 2>&1 >/dev/null | tee {}/$$.log >&2\n",
            real.trim(),
            logs.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let evaluated = || -> Vec<String> {
        std::fs::read_dir(&logs)
            .unwrap()
            .flatten()
            .flat_map(|f| {
                std::fs::read_to_string(f.path())
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.strip_prefix("trace: counted: evaluated "))
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect()
    };

    world.start_with("evaluator", "evaluator", &[("PATH", path.clone())]);
    let jobset = world.jobset("counted", "counted.nix").await;
    assert!(
        common::eventually(Duration::from_secs(120), || evaluated().len() >= JOBS / 2),
        "half the jobs were never evaluated\n{}",
        world.logs()
    );
    let evaluator = world.role("evaluator");
    let children = descendants(evaluator.pid());
    evaluator.kill9();
    let before = evaluated().len();
    assert!(before < JOBS, "the evaluation ended before the kill");
    assert_no_orphans(&children, "a killed evaluator");
    let journaled = world
        .query_i64("select count(*) from EvaluationJournal")
        .await;
    eprintln!("killed after {before} jobs were evaluated, {journaled} reports journaled");
    assert_eq!(
        world.query_i64("select count(*) from JobsetEvals").await,
        0,
        "the evaluation was recorded before the kill"
    );

    sqlx::query("update Jobsets set triggerTime = 1 where id = $1")
        .bind(jobset)
        .execute(&world.pool)
        .await
        .unwrap();
    world.start_with("evaluator", "evaluator", &[("PATH", path)]);
    world
        .wait_for(
            "select count(*) from Builds where isCurrent = 1",
            JOBS as i64,
            Duration::from_secs(180),
            "the resumed evaluation",
        )
        .await;
    let all = evaluated();
    let distinct: std::collections::BTreeSet<&String> = all.iter().collect();
    let twice = all.len() - distinct.len();
    eprintln!(
        "{} evaluations of {} jobs: {twice} evaluated twice (budget {})",
        all.len(),
        distinct.len(),
        WORKERS * BATCH
    );
    assert_eq!(distinct.len(), JOBS);
    assert!(
        twice <= WORKERS * BATCH,
        "{twice} jobs evaluated twice\n{}",
        world.logs()
    );
    assert!(
        world
            .role("evaluator")
            .log()
            .contains("carrying on from an interrupted evaluation"),
        "{}",
        world.logs()
    );
    assert_eq!(
        world
            .query_i64("select count(distinct job) from Builds where isCurrent = 1")
            .await,
        JOBS as i64
    );
    // The journal goes with the evaluation (once it is recorded).
    let pool = world.pool.clone();
    let cleared = common::until(Duration::from_secs(30), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("select count(*) from EvaluationJournal")
                .fetch_one(&pool)
                .await
                .is_ok_and(|n| n == 0)
        }
    })
    .await;
    assert!(cleared, "the journal outlived its evaluation");
    world.stop();
}
