//! An in-process server over a fresh database, fixture rows, and helpers
//! to send requests as anonymous users, session holders or token holders.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use hydra_db::status::BuildStatus;
use hydra_server::AppState;
use hydra_test_support::TestDb;
use hydra_test_support::builds::TestBuild;
use serde_json::Value;
use tower::ServiceExt;

pub const HOST: &str = "hydra.test";
pub const BASE: &str = "http://hydra.test/";

pub struct App {
    pub db: TestDb,
    pub state: AppState,
    pub router: Router,
    pub data: tempfile::TempDir,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Who sends a request.
#[derive(Clone, Debug)]
pub enum As {
    Anonymous,
    /// A session cookie value.
    Session(String),
    /// An API token.
    Token(String),
}

impl App {
    pub async fn new() -> App {
        App::with_config("").await
    }

    pub async fn with_config(text: &str) -> App {
        App::with_nix(text, hydra_nix::env::NixEnv::default()).await
    }

    /// An app whose machine store is `nix` (e.g. a chroot store).
    pub async fn with_nix(text: &str, nix: hydra_nix::env::NixEnv) -> App {
        let db = TestDb::new().await;
        let data = hydra_test_support::temp_data_dir();
        let (config, warnings) =
            hydra_config::Config::load_str(std::path::Path::new("hydra.conf"), text).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let state = AppState::new(
            db.pool.clone(),
            Arc::new(config),
            data.path().to_path_buf(),
            nix,
        )
        .unwrap();
        let router = hydra_server::router(state.clone());
        App {
            db,
            state,
            router,
            data,
        }
    }

    /// Sends a request as a browser page of this server would (Referer set
    /// for writes), asking for JSON.
    pub async fn send(&self, who: &As, method: Method, uri: &str, body: Option<Value>) -> Reply {
        self.send_with(who, method, uri, body, &[("referer", BASE)])
            .await
    }

    pub async fn send_with(
        &self,
        who: &As,
        method: Method,
        uri: &str,
        body: Option<Value>,
        extra: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, HOST)
            .header(header::ACCEPT, "application/json");
        match who {
            As::Anonymous => {}
            As::Session(s) => req = req.header(header::COOKIE, format!("hydra_session={s}")),
            As::Token(t) => req = req.header(header::AUTHORIZATION, format!("Bearer {t}")),
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let req = match body {
            Some(body) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        self.raw(req).await
    }

    pub async fn raw(&self, req: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.send(&As::Anonymous, Method::GET, uri, None).await
    }

    /// The page at `uri`, as a browser gets it (anonymously).
    pub async fn html(&self, uri: &str) -> String {
        let request = Request::get(uri)
            .header(header::ACCEPT, "text/html")
            .body(Body::empty())
            .unwrap();
        String::from_utf8(self.raw(request).await.body).unwrap()
    }

    /// A session for `user`, as signing in would make.
    pub async fn session(&self, user: &str) -> As {
        As::Session(
            hydra_server::start_session(&self.db.pool, user, None)
                .await
                .unwrap(),
        )
    }

    /// Gives `user` the password `password` as an unsalted SHA-1 hash, as
    /// Hydra stored them (fast to set; signing in upgrades it).
    pub async fn set_legacy_password(&self, user: &str, password: &str) {
        sqlx::query("update Users set password = $1 where userName = $2")
            .bind(hydra_db::password::sha1_hex(password))
            .bind(user)
            .execute(&self.db.pool)
            .await
            .unwrap();
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    pub async fn strings(&self, sql: &str) -> Vec<String> {
        sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
    }

    pub async fn exec(&self, sql: &str) {
        self.db.exec(sql).await;
    }
}

/// Users: `admin` (admin), `owner` (owns project `demo`), `member` (member
/// of `demo`), `restarter` (restart-jobs), `canceller` (cancel-build),
/// `bumper` (bump-to-front), `evaluator` (eval-jobset), `creator`
/// (create-projects), `nobody`. Project `demo` with legacy jobset `trunk`
/// (input `src`, git), evaluation 1 with build 1 (succeeded: outputs,
/// products, metrics), build 2 (failed), build 3 (queued), build 4 (an
/// aggregate of 1 and 2). Fixed timestamps, so JSON is stable.
pub async fn fixture(app: &App) {
    app.exec(
        r#"
        insert into Users (userName, fullName, emailAddress, password) values
            ('admin', 'Ada Admin', 'admin@example.org', '!'),
            ('owner', 'Olive Owner', 'owner@example.org', '!'),
            ('member', null, 'member@example.org', '!'),
            ('restarter', null, '', '!'), ('canceller', null, '', '!'), ('bumper', null, '', '!'),
            ('evaluator', null, '', '!'), ('creator', null, '', '!'), ('nobody', null, '', '!');
        insert into UserRoles (userName, role) values ('admin', 'admin'), ('restarter', 'restart-jobs'),
            ('canceller', 'cancel-build'), ('bumper', 'bump-to-front'), ('evaluator', 'eval-jobset'),
            ('creator', 'create-projects');
        insert into Projects (name, displayName, description, homepage, owner) values
            ('demo', 'Demo', 'the demo project', 'https://example.org', 'owner');
        insert into ProjectMembers (project, userName) values ('demo', 'member');
        insert into Jobsets (project, name, description, nixExprInput, nixExprPath, emailOverride, checkInterval,
                             lastCheckedTime, schedulingShares, keepnr)
            values ('demo', 'trunk', 'main line', 'src', 'release.nix', '', 60, 1700000100, 50, 5);
        insert into JobsetInputs (project, jobset, name, type, emailResponsible) values ('demo', 'trunk', 'src', 'git', 1);
        insert into JobsetInputAlts (project, jobset, input, altnr, value) values ('demo', 'trunk', 'src', 0, 'https://example.org/demo.git main');
        "#,
    )
    .await;
    let pool = &app.db.pool;
    let jobset: i32 = sqlx::query_scalar("select id from Jobsets")
        .fetch_one(pool)
        .await
        .unwrap();
    let store = |name: &str| format!("/nix/store/{name}");
    TestBuild::new(jobset, "hello")
        .id(1)
        .timestamp(1700000000)
        .nix_name(Some("hello-1.0"))
        .drv(&store("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-hello-1.0.drv"))
        .finished(BuildStatus::Succeeded, 1700000010, 1700000020)
        .priority(100)
        .release_name("hello-1.0-release")
        .sizes(1234, 5678)
        .output("out", &store("eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-hello-1.0"))
        .output(
            "doc",
            &store("ffffffffffffffffffffffffffffffff-hello-1.0-doc"),
        )
        .insert(pool)
        .await;
    TestBuild::new(jobset, "broken")
        .id(2)
        .timestamp(1700000000)
        .nix_name(Some("broken-1.0"))
        .drv(&store("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-broken-1.0.drv"))
        .finished(BuildStatus::Failed, 1700000010, 1700000030)
        .output("out", &store("gggggggggggggggggggggggggggggggg-broken-1.0"))
        .insert(pool)
        .await;
    TestBuild::new(jobset, "slow")
        .id(3)
        .timestamp(1700000000)
        .nix_name(Some("slow-1.0"))
        .drv(&store("cccccccccccccccccccccccccccccccc-slow-1.0.drv"))
        .system("aarch64-linux")
        .output("out", &store("hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh-slow-1.0"))
        .insert(pool)
        .await;
    TestBuild::new(jobset, "all")
        .id(4)
        .timestamp(1700000000)
        .nix_name(Some("all"))
        .drv(&store("dddddddddddddddddddddddddddddddd-all.drv"))
        .finished(BuildStatus::DependencyFailed, 1700000040, 1700000040)
        .output("out", &store("iiiiiiiiiiiiiiiiiiiiiiiiiiiiiiii-all"))
        .insert(pool)
        .await;
    app.exec(
        r#"
        insert into BuildProducts (build, productnr, type, subtype, fileSize, sha256hash, path, name, defaultPath) values
            (1, 1, 'nix-build', '', null, null, '/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-hello-1.0', 'hello-1.0', ''),
            (1, 2, 'file', 'source-dist', 42, 'abc123', '/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-hello-1.0/hello.tar.gz', 'hello.tar.gz', null);
        insert into BuildMetrics (build, name, unit, value, project, jobset, job, timestamp) values
            (1, 'runtime', 's', 1.5, 'demo', 'trunk', 'hello', 1700000000);
        insert into BuildSteps (build, stepnr, type, drvPath, busy, status, startTime, stopTime, machine, system) values
            (1, 1, 0, '/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-hello-1.0.drv', 0, 0, 1700000010, 1700000020, 'localhost', 'x86_64-linux'),
            (3, 1, 0, '/nix/store/cccccccccccccccccccccccccccccccc-slow-1.0.drv', 30, null, 1700000050, null, 'ssh://builder', 'aarch64-linux');
        insert into AggregateConstituents (aggregate, constituent) values (4, 1), (4, 2);
        insert into JobsetEvals (id, jobset_id, timestamp, checkoutTime, evalTime, hasNewBuilds, hash, nrBuilds, nrSucceeded)
            select 1, id, 1700000000, 3, 7, 1, 'hash1', 4, 1 from Jobsets;
        select setval('jobsetevals_id_seq', 1);
        insert into JobsetEvalInputs (eval, name, altNr, type, uri, revision) values
            (1, 'src', 0, 'git', 'https://example.org/demo.git', '0123456789abcdef0123456789abcdef01234567');
        insert into JobsetEvalMembers (eval, build, isNew) values (1, 1, 1), (1, 2, 1), (1, 3, 1), (1, 4, 1);
        "#,
    )
    .await;
}
