//! The schema is Hydra's: every table and column of reference §2.1 with
//! Hydra's type, nullability and default, no more and no less; its check
//! constraints reject what they should; its indexes and triggers exist.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use hydra_test_support::TestDb;

/// `table column type nullable default` (`-` for no default), in Hydra's
/// spelling lowercased, as PostgreSQL reports them.
const COLUMNS: &str = r#"
schemaversion version integer NO -
users username text NO -
users fullname text YES -
users emailaddress text NO -
users password text NO -
users emailonerror integer NO 0
users type text NO 'hydra'::text
users publicdashboard boolean NO false
userroles username text NO -
userroles role text NO -
projects name text NO -
projects displayname text NO -
projects description text YES -
projects enabled integer NO 1
projects hidden integer NO 0
projects owner text NO -
projects homepage text YES -
projects declfile text YES -
projects decltype text YES -
projects declvalue text YES -
projects enable_dynamic_run_command boolean NO false
projectmembers project text NO -
projectmembers username text NO -
jobsets name text NO -
jobsets id integer NO nextval('jobsets_id_seq'::regclass)
jobsets project text NO -
jobsets description text YES -
jobsets nixexprinput text YES -
jobsets nixexprpath text YES -
jobsets errormsg text YES -
jobsets errortime integer YES -
jobsets lastcheckedtime integer YES -
jobsets triggertime integer YES -
jobsets enabled integer NO 1
jobsets enableemail integer NO 1
jobsets hidden integer NO 0
jobsets emailoverride text NO -
jobsets keepnr integer NO 3
jobsets checkinterval integer NO 300
jobsets schedulingshares integer NO 100
jobsets fetcherrormsg text YES -
jobsets forceeval boolean YES -
jobsets starttime integer YES -
jobsets type integer NO 0
jobsets flake text YES -
jobsets enable_dynamic_run_command boolean NO false
jobsetrenames project text NO -
jobsetrenames from_ text NO -
jobsetrenames to_ text NO -
jobsetinputs project text NO -
jobsetinputs jobset text NO -
jobsetinputs name text NO -
jobsetinputs type text NO -
jobsetinputs emailresponsible integer NO 0
jobsetinputalts project text NO -
jobsetinputalts jobset text NO -
jobsetinputalts input text NO -
jobsetinputalts altnr integer NO -
jobsetinputalts value text YES -
jobsetinputalts revision text YES -
builds id integer NO nextval('builds_id_seq'::regclass)
builds finished integer NO -
builds timestamp integer NO -
builds jobset_id integer NO -
builds job text NO -
builds nixname text YES -
builds description text YES -
builds drvpath text NO -
builds system text NO -
builds license text YES -
builds homepage text YES -
builds maintainers text YES -
builds maxsilent integer YES 3600
builds timeout integer YES 36000
builds ischannel integer NO 0
builds iscurrent integer YES 0
builds priority integer NO 0
builds globalpriority integer NO 0
builds starttime integer YES -
builds stoptime integer YES -
builds iscachedbuild integer YES -
builds buildstatus integer YES -
builds size bigint YES -
builds closuresize bigint YES -
builds releasename text YES -
builds keep integer NO 0
builds notificationpendingsince integer YES -
buildoutputs build integer NO -
buildoutputs name text NO -
buildoutputs path text YES -
buildsteps build integer NO -
buildsteps stepnr integer NO -
buildsteps type integer NO -
buildsteps drvpath text NO -
buildsteps busy integer NO -
buildsteps status integer YES -
buildsteps errormsg text YES -
buildsteps starttime integer YES -
buildsteps stoptime integer YES -
buildsteps machine text NO ''::text
buildsteps system text YES -
buildsteps propagatedfrom integer YES -
buildsteps overhead integer YES -
buildsteps timesbuilt integer YES -
buildsteps isnondeterministic boolean YES -
buildsteps resolveddrvpath text YES -
buildstepoutputs build integer NO -
buildstepoutputs stepnr integer NO -
buildstepoutputs name text NO -
buildstepoutputs path text YES -
buildinputs id integer NO nextval('buildinputs_id_seq'::regclass)
buildinputs build integer YES -
buildinputs name text NO -
buildinputs type text NO -
buildinputs uri text YES -
buildinputs revision text YES -
buildinputs value text YES -
buildinputs emailresponsible integer NO 0
buildinputs dependency integer YES -
buildinputs path text YES -
buildinputs sha256hash text YES -
buildproducts build integer NO -
buildproducts productnr integer NO -
buildproducts type text NO -
buildproducts subtype text NO -
buildproducts filesize bigint YES -
buildproducts sha256hash text YES -
buildproducts path text YES -
buildproducts name text NO -
buildproducts defaultpath text YES -
buildmetrics build integer NO -
buildmetrics name text NO -
buildmetrics unit text YES -
buildmetrics value double_precision NO -
buildmetrics project text NO -
buildmetrics jobset text NO -
buildmetrics job text NO -
buildmetrics timestamp integer NO -
cachedpathinputs srcpath text NO -
cachedpathinputs timestamp integer NO -
cachedpathinputs lastseen integer NO -
cachedpathinputs sha256hash text NO -
cachedpathinputs storepath text NO -
cachedsubversioninputs uri text NO -
cachedsubversioninputs revision integer NO -
cachedsubversioninputs sha256hash text NO -
cachedsubversioninputs storepath text NO -
cachedbazaarinputs uri text NO -
cachedbazaarinputs revision integer NO -
cachedbazaarinputs sha256hash text NO -
cachedbazaarinputs storepath text NO -
cachedgitinputs uri text NO -
cachedgitinputs branch text NO -
cachedgitinputs revision text NO -
cachedgitinputs isdeepclone boolean NO -
cachedgitinputs sha256hash text NO -
cachedgitinputs storepath text NO -
cacheddarcsinputs uri text NO -
cacheddarcsinputs revision text NO -
cacheddarcsinputs sha256hash text NO -
cacheddarcsinputs storepath text NO -
cacheddarcsinputs revcount integer NO -
cachedhginputs uri text NO -
cachedhginputs branch text NO -
cachedhginputs revision text NO -
cachedhginputs sha256hash text NO -
cachedhginputs storepath text NO -
cachedcvsinputs uri text NO -
cachedcvsinputs module text NO -
cachedcvsinputs timestamp integer NO -
cachedcvsinputs lastseen integer NO -
cachedcvsinputs sha256hash text NO -
cachedcvsinputs storepath text NO -
evaluationerrors id integer NO nextval('evaluationerrors_id_seq'::regclass)
evaluationerrors errormsg text YES -
evaluationerrors errortime integer YES -
jobsetevals id integer NO nextval('jobsetevals_id_seq'::regclass)
jobsetevals jobset_id integer NO -
jobsetevals evaluationerror_id integer YES -
jobsetevals timestamp integer NO -
jobsetevals checkouttime integer NO -
jobsetevals evaltime integer NO -
jobsetevals hasnewbuilds integer NO -
jobsetevals hash text NO -
jobsetevals nrbuilds integer YES -
jobsetevals nrsucceeded integer YES -
jobsetevals flake text YES -
jobsetevals nixexprinput text YES -
jobsetevals nixexprpath text YES -
jobsetevalinputs eval integer NO -
jobsetevalinputs name text NO -
jobsetevalinputs altnr integer NO -
jobsetevalinputs type text NO -
jobsetevalinputs uri text YES -
jobsetevalinputs revision text YES -
jobsetevalinputs shortrevlength smallint YES -
jobsetevalinputs value text YES -
jobsetevalinputs dependency integer YES -
jobsetevalinputs path text YES -
jobsetevalinputs sha256hash text YES -
jobsetevalmembers eval integer NO -
jobsetevalmembers build integer NO -
jobsetevalmembers isnew integer NO -
urirevmapper baseuri text NO -
urirevmapper uri text NO -
newsitems id integer NO nextval('newsitems_id_seq'::regclass)
newsitems contents text NO -
newsitems createtime integer NO -
newsitems author text NO -
aggregateconstituents aggregate integer NO -
aggregateconstituents constituent integer NO -
starredjobs username text NO -
starredjobs project text NO -
starredjobs jobset text NO -
starredjobs job text NO -
taskretries id integer NO nextval('taskretries_id_seq'::regclass)
taskretries channel text NO -
taskretries pluginname text NO -
taskretries payload text NO -
taskretries attempts integer NO -
taskretries retry_at integer NO -
runcommandlogs id integer NO nextval('runcommandlogs_id_seq'::regclass)
runcommandlogs uuid uuid NO -
runcommandlogs job_matcher text NO -
runcommandlogs build_id integer NO -
runcommandlogs command text NO -
runcommandlogs start_time integer YES -
runcommandlogs end_time integer YES -
runcommandlogs error_number integer YES -
runcommandlogs exit_code integer YES -
runcommandlogs signal integer YES -
runcommandlogs core_dumped boolean YES -
failedpaths path text NO -
systemstatus what text NO -
systemstatus status json NO -
nrbuilds what text NO -
nrbuilds count integer NO -
"#;

/// Tables of ours, beyond Hydra's.
const OUR_TABLES: &[&str] = &[
    "schemamigrations",
    "websessions",
    "apitokens",
    "commitstatuses",
    "droppedtasks",
    "jobseterrormails",
    "jobsetcheckouts",
    "projectpullrequests",
    "projectsupersededpolicy",
    "pullrequests",
    "buildcancellations",
    "oidclogins",
    "evaluationjournal",
    "evaluationcosts",
    "buildetas",
];

const INDEXES: &[&str] = &[
    "indextaskretriesordered",
    "indexruncommandlogsonbuildid",
    "indexbuildinputsonbuild",
    "indexbuildinputsondependency",
    "indexbuildmetricsonjobtimestamp",
    "indexbuildproducstonbuildandtype",
    "indexbuildproductsonbuild",
    "indexbuildstepsonbusy",
    "indexbuildstepsondrvpath",
    "indexbuildstepsonpropagatedfrom",
    "indexbuildstepsonstoptime",
    "indexbuildstepoutputsonpath",
    "indexbuildsonfinished",
    "indexbuildsoniscurrent",
    "indexbuildsjobsetidcurrentunfinished",
    "indexbuildsjobsetidcurrentfinishedstatus",
    "indexbuildsjobsetidcurrent",
    "indexbuildsontimestamp",
    "indexbuildsonfinishedstoptime",
    "indexbuildsonjobsetidfinishedid",
    "indexfinishedsuccessfulbuilds",
    "indexbuildsondrvpath",
    "indexcachedhginputsonhash",
    "indexcachedgitinputsonhash",
    "indexcachedsubversioninputsonurirevision",
    "indexcachedbazaarinputsonurirevision",
    "indexjobsetevalmembersonbuild",
    "indexjobsetevalmembersoneval",
    "indexjobsetinputaltsoninput",
    "indexjobsetinputaltsonjobset",
    "indexprojectsonenabled",
    "indexbuildoutputspath",
    "indexbuildsonkeep",
    "indexjobsetevalsonjobsetid",
    "indexjobsetidevals",
    "indexbuildsonnotificationpendingsince",
    "indextrgmbuildsondrvpath",
    "indexbuildsfinishedbystoptime",
    "indexbuildsjobsetfinishedbystoptime",
    "indexbuildsjobfinishedbystoptime",
    "indexbuildstepsfinishedbystoptime",
];

const TRIGGERS: &[(&str, &str)] = &[
    ("jobsets", "jobsetshareschanged"),
    ("jobsets", "jobsetsadded"),
    ("jobsets", "jobsetsdeleted"),
    ("jobsets", "jobsetschedulingchanged"),
    ("builds", "buildsdeleted"),
    ("builds", "buildrestarted"),
    ("builds", "buildcancelled"),
    ("builds", "buildbumped"),
    ("builds", "nrbuildsfinished"),
];

#[tokio::test]
async fn every_table_and_column_is_hydras() {
    let db = TestDb::new().await;
    let actual: Vec<(String, String, String, String, Option<String>)> = sqlx::query_as(
        "select table_name::text, column_name::text, data_type::text, is_nullable::text, column_default::text \
         from information_schema.columns where table_schema = current_schema()",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let actual: BTreeSet<String> = actual
        .into_iter()
        .filter(|(table, ..)| !OUR_TABLES.contains(&table.as_str()))
        .map(|(t, c, ty, null, default)| {
            format!(
                "{t} {c} {} {null} {}",
                ty.replace(' ', "_"),
                default.unwrap_or_else(|| "-".into())
            )
        })
        .collect();
    let expected: BTreeSet<String> = COLUMNS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect();
    let missing: Vec<_> = expected.difference(&actual).collect();
    let extra: Vec<_> = actual.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing or different: {missing:#?}\nunexpected: {extra:#?}"
    );
    assert_eq!(expected.len(), 237);
}

#[tokio::test]
async fn hydras_indexes_and_triggers_exist() {
    let db = TestDb::new().await;
    let indexes: BTreeSet<String> = sqlx::query_scalar(
        "select indexname::text from pg_indexes where schemaname = current_schema()",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    for index in INDEXES {
        assert!(indexes.contains(*index), "index {index} missing");
    }
    let triggers: BTreeSet<(String, String)> = sqlx::query_as(
        "select c.relname::text, t.tgname::text from pg_trigger t join pg_class c on c.oid = t.tgrelid \
         where not t.tgisinternal",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    for (table, trigger) in TRIGGERS {
        assert!(
            triggers.contains(&(table.to_string(), trigger.to_string())),
            "trigger {trigger} missing"
        );
    }
    let version: i32 = sqlx::query_scalar("select version from SchemaVersion")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(version, 87);
    let finished: i32 = sqlx::query_scalar("select count from NrBuilds where what = 'finished'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(finished, 0);
}

/// Asserts that `sql` fails with a check constraint violation (23514).
async fn rejected(db: &TestDb, sql: &str) {
    match db.try_exec(sql).await {
        Err(sqlx::Error::Database(e)) => {
            assert_eq!(e.code().as_deref(), Some("23514"), "{sql}: {e}")
        }
        other => panic!("{sql} was not rejected: {other:?}"),
    }
}

async fn base_rows(db: &TestDb) {
    db.try_exec("insert into Users (userName, emailAddress, password) values ('root', 'root@example.org', '!');
         insert into Projects (name, displayName, owner) values ('p', 'P', 'root');
         insert into Jobsets (project, name, nixExprInput, nixExprPath, emailOverride) values ('p', 'j', 'src', 'release.nix', '');",
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn jobset_check_constraints() {
    let db = TestDb::new().await;
    base_rows(&db).await;
    let legacy = "insert into Jobsets (project, name, emailOverride, type, nixExprInput, nixExprPath, flake, schedulingShares)";
    rejected(
        &db,
        &format!("{legacy} values ('p', 'a', '', 0, 'src', 'r.nix', null, 0)"),
    )
    .await;
    rejected(
        &db,
        &format!("{legacy} values ('p', 'a', '', 0, 'src', 'r.nix', null, -5)"),
    )
    .await;
    rejected(
        &db,
        &format!("{legacy} values ('p', 'a', '', 2, 'src', 'r.nix', null, 1)"),
    )
    .await;
    rejected(
        &db,
        &format!("{legacy} values ('p', 'a', '', 0, 'src', 'r.nix', 'github:x/y', 1)"),
    )
    .await;
    rejected(
        &db,
        &format!("{legacy} values ('p', 'a', '', 0, null, 'r.nix', null, 1)"),
    )
    .await;
    rejected(
        &db,
        &format!("{legacy} values ('p', 'a', '', 0, 'src', null, null, 1)"),
    )
    .await;
    rejected(
        &db,
        &format!("{legacy} values ('p', 'a', '', 1, null, null, null, 1)"),
    )
    .await;
    rejected(
        &db,
        &format!("{legacy} values ('p', 'a', '', 1, 'src', null, 'github:x/y', 1)"),
    )
    .await;
    rejected(
        &db,
        &format!("{legacy} values ('p', 'a', '', 1, null, 'r.nix', 'github:x/y', 1)"),
    )
    .await;
    db.try_exec(&format!(
        "{legacy} values ('p', 'ok-legacy', '', 0, 'src', 'r.nix', null, 1)"
    ))
    .await
    .unwrap();
    db.try_exec(&format!(
        "{legacy} values ('p', 'ok-flake', '', 1, null, null, 'github:x/y', 1)"
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn build_and_step_check_constraints() {
    let db = TestDb::new().await;
    base_rows(&db).await;
    let build = "insert into Builds (finished, timestamp, jobset_id, job, drvPath, system, startTime, stopTime) \
                 select {f}, 1, id, 'job', '/nix/store/x.drv', 'x86_64-linux', {start}, {stop} from Jobsets";
    let b = |f: &str, start: &str, stop: &str| {
        build
            .replace("{f}", f)
            .replace("{start}", start)
            .replace("{stop}", stop)
    };
    rejected(&db, &b("1", "null", "5")).await;
    rejected(&db, &b("1", "5", "null")).await;
    rejected(&db, &b("1", "0", "5")).await;
    rejected(&db, &b("1", "5", "0")).await;
    db.try_exec(&b("0", "null", "null")).await.unwrap();
    db.try_exec(&b("1", "5", "6")).await.unwrap();

    let step = "insert into BuildSteps (build, stepnr, type, drvPath, busy, status, resolvedDrvPath) \
                select min(id), {n}, 0, '/nix/store/x.drv', 0, {status}, {resolved} from Builds";
    let s = |n: &str, status: &str, resolved: &str| {
        step.replace("{n}", n)
            .replace("{status}", status)
            .replace("{resolved}", resolved)
    };
    rejected(&db, &s("1", "13", "null")).await;
    rejected(&db, &s("1", "0", "'abc-x.drv'")).await;
    db.try_exec(&s("1", "13", "'abc-x.drv'")).await.unwrap();
    db.try_exec(&s("2", "0", "null")).await.unwrap();
    db.try_exec(&s("3", "null", "null")).await.unwrap();
}

#[tokio::test]
async fn runcommand_log_constraints() {
    let db = TestDb::new().await;
    base_rows(&db).await;
    db.try_exec(
        "insert into Builds (finished, timestamp, jobset_id, job, drvPath, system) \
         select 0, 1, id, 'job', '/nix/store/x.drv', 'x86_64-linux' from Jobsets",
    )
    .await
    .unwrap();
    let log = "insert into RunCommandLogs (uuid, job_matcher, build_id, command, start_time, end_time, exit_code) \
               select '{uuid}', '*:*:*', min(id), 'true', {start}, {end}, {code} from Builds";
    let l = |uuid: &str, start: &str, end: &str, code: &str| {
        log.replace("{uuid}", uuid)
            .replace("{start}", start)
            .replace("{end}", end)
            .replace("{code}", code)
    };
    rejected(
        &db,
        &l("00000000-0000-4000-8000-000000000001", "null", "null", "0"),
    )
    .await;
    rejected(
        &db,
        &l("00000000-0000-4000-8000-000000000001", "null", "5", "null"),
    )
    .await;
    db.try_exec(&l(
        "00000000-0000-4000-8000-000000000001",
        "null",
        "null",
        "null",
    ))
    .await
    .unwrap();
    db.try_exec(&l("00000000-0000-4000-8000-000000000002", "4", "5", "0"))
        .await
        .unwrap();
    match db
        .try_exec(&l("00000000-0000-4000-8000-000000000002", "4", "5", "0"))
        .await
    {
        Err(sqlx::Error::Database(e)) => assert_eq!(e.code().as_deref(), Some("23505")),
        other => panic!("duplicate uuid accepted: {other:?}"),
    }
}

#[tokio::test]
async fn failed_paths_ignore_duplicates_and_deletes_cascade() {
    let db = TestDb::new().await;
    base_rows(&db).await;
    db.try_exec("insert into FailedPaths (path) values ('/nix/store/a'); insert into FailedPaths (path) values ('/nix/store/a');")
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("select count(*) from FailedPaths")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);

    db.try_exec("insert into Builds (finished, timestamp, jobset_id, job, drvPath, system) \
         select 0, 1, id, 'job', '/nix/store/x.drv', 'x86_64-linux' from Jobsets;
         insert into BuildOutputs (build, name, path) select id, 'out', '/nix/store/y' from Builds;
         insert into BuildSteps (build, stepnr, type, drvPath, busy) select id, 1, 0, '/nix/store/x.drv', 0 from Builds;
         insert into BuildStepOutputs (build, stepnr, name, path) select id, 1, 'out', '/nix/store/y' from Builds;",
    )
    .await
    .unwrap();
    db.try_exec("delete from Projects where name = 'p'")
        .await
        .unwrap();
    for table in [
        "Jobsets",
        "Builds",
        "BuildOutputs",
        "BuildSteps",
        "BuildStepOutputs",
    ] {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) from {table}")))
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(n, 0, "{table} kept rows of a deleted project");
    }
}

#[tokio::test]
async fn renaming_a_user_cascades_to_projects_and_roles() {
    let db = TestDb::new().await;
    base_rows(&db).await;
    db.try_exec("insert into UserRoles (userName, role) values ('root', 'admin'); update Users set userName = 'admin' where userName = 'root';")
        .await
        .unwrap();
    let owner: String = sqlx::query_scalar("select owner from Projects")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let role_user: String = sqlx::query_scalar("select userName from UserRoles")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!((owner.as_str(), role_user.as_str()), ("admin", "admin"));
}
