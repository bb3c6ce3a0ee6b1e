//! Projects and jobsets as rows, the way the web interface creates them.

use sqlx::PgPool;

/// Creates project `name` (and its owner `root` if needed).
pub async fn create_project(pool: &PgPool, name: &str) {
    sqlx::query(
        "insert into Users (userName, emailAddress, password) values ('root', 'root@example.org', '!') \
         on conflict do nothing",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("insert into Projects (name, displayName, owner) values ($1, $1, 'root')")
        .bind(name)
        .execute(pool)
        .await
        .unwrap();
}

/// Creates a legacy jobset whose expression is `expr_path` in input
/// `expr_input`, with `inputs` as (name, type, value); returns its id. It
/// is enabled with a check interval of 0 (evaluated only when asked).
pub async fn create_jobset(
    pool: &PgPool,
    project: &str,
    name: &str,
    expr_input: &str,
    expr_path: &str,
    inputs: &[(&str, &str, &str)],
) -> i32 {
    let id: i32 = sqlx::query_scalar(
        "insert into Jobsets (project, name, nixExprInput, nixExprPath, emailOverride, checkInterval) \
         values ($1, $2, $3, $4, '', 0) returning id",
    )
    .bind(project)
    .bind(name)
    .bind(expr_input)
    .bind(expr_path)
    .fetch_one(pool)
    .await
    .unwrap();
    set_inputs(pool, project, name, inputs).await;
    id
}

/// Creates a flake jobset; returns its id.
pub async fn create_flake_jobset(pool: &PgPool, project: &str, name: &str, flake: &str) -> i32 {
    sqlx::query_scalar(
        "insert into Jobsets (project, name, type, flake, emailOverride, checkInterval) \
         values ($1, $2, 1, $3, '', 0) returning id",
    )
    .bind(project)
    .bind(name)
    .bind(flake)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Replaces the inputs of a jobset.
pub async fn set_inputs(pool: &PgPool, project: &str, jobset: &str, inputs: &[(&str, &str, &str)]) {
    sqlx::query("delete from JobsetInputs where project = $1 and jobset = $2")
        .bind(project)
        .bind(jobset)
        .execute(pool)
        .await
        .unwrap();
    for (input, kind, value) in inputs {
        sqlx::query(
            "insert into JobsetInputs (project, jobset, name, type) values ($1, $2, $3, $4)",
        )
        .bind(project)
        .bind(jobset)
        .bind(input)
        .bind(kind)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "insert into JobsetInputAlts (project, jobset, input, altnr, value) values ($1, $2, $3, 0, $4)",
        )
        .bind(project)
        .bind(jobset)
        .bind(input)
        .bind(value)
        .execute(pool)
        .await
        .unwrap();
    }
}

/// Columns of a queued build the tests set.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueueOptions {
    pub max_silent: Option<i32>,
    pub timeout: Option<i32>,
    pub global_priority: i32,
}

/// Instantiates `attr` of `file` in `store` and queues it in jobset
/// `jobset_id` as job `attr`, the way the evaluator does; sends
/// `builds_added`. Returns the build id.
pub async fn queue_build(
    pool: &PgPool,
    store: &crate::NixStore,
    jobset_id: i32,
    file: &std::path::Path,
    attr: &str,
    options: QueueOptions,
) -> i32 {
    let drv = store
        .run("nix-instantiate", &[file.to_str().unwrap(), "-A", attr])
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    let shown = store.run(
        "nix",
        &[
            "--extra-experimental-features",
            "nix-command",
            "show-derivation",
            &drv,
        ],
    );
    let json: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let info = &json[&drv];
    let system = info["system"].as_str().unwrap().to_string();
    let id: i32 = sqlx::query_scalar(
        "insert into Builds (finished, timestamp, jobset_id, job, nixName, drvPath, system, maxsilent, timeout, \
         isCurrent, priority, globalPriority) values (0, $1, $2, $3, $3, $4, $5, $6, $7, 1, 100, $8) returning id",
    )
    .bind(hydra_db::now())
    .bind(jobset_id)
    .bind(attr)
    .bind(&drv)
    .bind(&system)
    .bind(options.max_silent)
    .bind(options.timeout)
    .bind(options.global_priority)
    .fetch_one(pool)
    .await
    .unwrap();
    for (name, output) in info["outputs"].as_object().unwrap() {
        sqlx::query("insert into BuildOutputs (build, name, path) values ($1, $2, $3)")
            .bind(id)
            .bind(name)
            .bind(output["path"].as_str())
            .execute(pool)
            .await
            .unwrap();
    }
    sqlx::query("select pg_notify('builds_added', $1)")
        .bind(id.to_string())
        .execute(pool)
        .await
        .unwrap();
    id
}

/// An input of an evaluation, as `JobsetEvalInputs` records it.
#[derive(Clone, Copy, Debug)]
pub enum EvalInput<'a> {
    /// A version-controlled input: name, type, URI and revision.
    Revision(&'a str, &'a str, &'a str, &'a str),
    /// A string input: name and value.
    Text(&'a str, &'a str),
}

/// Records evaluation `id` of jobset `jobset_id` with `inputs` (first
/// alternatives), as the evaluator does.
pub async fn create_eval(pool: &PgPool, jobset_id: i32, id: i32, inputs: &[EvalInput<'_>]) {
    sqlx::query(
        "insert into JobsetEvals (id, jobset_id, timestamp, checkoutTime, evalTime, hasNewBuilds, hash) \
         values ($1, $2, 1, 0, 0, 1, 'h' || $1)",
    )
    .bind(id)
    .bind(jobset_id)
    .execute(pool)
    .await
    .unwrap();
    for input in inputs {
        let (name, kind, uri, revision, value) = match *input {
            EvalInput::Revision(name, kind, uri, revision) => {
                (name, kind, Some(uri), Some(revision), None)
            }
            EvalInput::Text(name, value) => (name, "string", None, None, Some(value)),
        };
        sqlx::query(
            "insert into JobsetEvalInputs (eval, name, altNr, type, uri, revision, value) \
             values ($1, $2, 0, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(name)
        .bind(kind)
        .bind(uri)
        .bind(revision)
        .bind(value)
        .execute(pool)
        .await
        .unwrap();
    }
}

/// Makes build `build` a (new) member of evaluation `eval`.
pub async fn add_to_eval(pool: &PgPool, eval: i32, build: i32) {
    sqlx::query("insert into JobsetEvalMembers (eval, build, isNew) values ($1, $2, 1)")
        .bind(eval)
        .bind(build)
        .execute(pool)
        .await
        .unwrap();
}
