//! The binary cache with a real Nix: a fresh chroot store, with only this
//! server as substituter and its public key trusted, fetches and verifies
//! a built output and its dependency, from the machine's store and from a
//! `file://` cache; a wrong key is refused. Also the output NAR route.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use hydra_db::status::BuildStatus;
use hydra_nix::env::NixEnv;
use hydra_nix::narinfo::SecretKey;
use hydra_server::AppState;
use hydra_test_support::builds::TestBuild;
use hydra_test_support::{NixStore, TestDb, fixtures_dir, shared_tempdir};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

const JOBS: &str = r#"
with import ./config.nix;
rec {
  dep = mkDerivation { name = "dep"; builder = builtins.toFile "d.sh" "echo dependency > $out"; };
  hello = mkDerivation {
    name = "hello";
    inherit dep;
    builder = builtins.toFile "h.sh" "mkdir $out; echo hi > $out/hi; echo $dep > $out/dep";
  };
}
"#;

struct Served {
    address: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _db: TestDb,
    _data: tempfile::TempDir,
}

impl Served {
    async fn start(store: &NixStore, config: &str) -> Served {
        Served::start_with(store, config, &[]).await
    }

    /// `start`, with `vars` in the environment Nix programs (and stores)
    /// see.
    async fn start_with(store: &NixStore, config: &str, vars: &[(&str, &str)]) -> Served {
        let db = TestDb::new().await;
        let data = shared_tempdir();
        let (config, warnings) =
            hydra_config::Config::load_str(std::path::Path::new("hydra.conf"), config).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let mut env = store.env();
        env.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let nix = NixEnv {
            args: Vec::new(),
            env,
        };
        let state = AppState::new(
            db.pool.clone(),
            Arc::new(config),
            data.path().to_path_buf(),
            nix,
        )
        .unwrap();
        let listener = hydra_server::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move { hydra_server::run(state, listener, stop).await.unwrap() }
        });
        Served {
            address,
            stop,
            task,
            _db: db,
            _data: data,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

/// `nix-store -r path` in a fresh store, substituting only from `url`.
fn realise_from(url: &str, key: &str, path: &str) -> (NixStore, std::process::Output) {
    let fresh = NixStore::new();
    let out = fresh
        .command("nix-store")
        .args(["-r", path])
        .args(["--option", "substituters", url])
        .args(["--option", "trusted-public-keys", key])
        .args(["--option", "require-sigs", "true"])
        .args(["--option", "narinfo-cache-negative-ttl", "0"])
        .output()
        .unwrap();
    (fresh, out)
}

fn build(store: &NixStore) -> (String, String, tempfile::TempDir) {
    let dir = shared_tempdir();
    std::fs::copy(
        fixtures_dir().join("config.nix"),
        dir.path().join("config.nix"),
    )
    .unwrap();
    std::fs::write(dir.path().join("jobs.nix"), JOBS).unwrap();
    let hello = store.build(&dir.path().join("jobs.nix"), "hello").remove(0);
    let dep = store.build(&dir.path().join("jobs.nix"), "dep").remove(0);
    (hello, dep, dir)
}

fn key_files(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    let key = SecretKey::generate(name).unwrap();
    let file = dir.join(format!("{name}.secret"));
    std::fs::write(&file, key.to_text()).unwrap();
    (file, key.public_key().to_text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nix_substitutes_a_signed_output_and_its_dependency_from_the_machine_store() {
    let store = NixStore::new();
    let (hello, dep, dir) = build(&store);
    let (secret, public) = key_files(dir.path(), "test-cache-1");
    let served = Served::start(
        &store,
        &format!("binary_cache_secret_key_file = {}\n", secret.display()),
    )
    .await;

    let info = get_text(&served, "/nix-cache-info").await;
    assert_eq!(
        info.1,
        "StoreDir: /nix/store\nWantMassQuery: 0\nPriority: 100\n"
    );
    let hash = hello
        .trim_start_matches("/nix/store/")
        .split('-')
        .next()
        .unwrap();
    let (status, narinfo) = get_text(&served, &format!("/{hash}.narinfo")).await;
    assert_eq!(status, 200, "{narinfo}");
    assert!(
        narinfo.contains(&format!("StorePath: {hello}\n")),
        "{narinfo}"
    );
    assert!(narinfo.contains("Compression: xz\n"));
    let dep_base = dep.trim_start_matches("/nix/store/");
    assert!(
        narinfo.contains(&format!("References: {dep_base}\n")),
        "{narinfo}"
    );
    assert!(narinfo.contains("Sig: test-cache-1:"), "{narinfo}");
    let (status, _) = get_text(&served, "/00000000000000000000000000000000.narinfo").await;
    assert_eq!(status, 404);

    let (fresh, out) = realise_from(&served.url(), &public, &hello);
    assert!(
        out.status.success(),
        "nix-store -r failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(fresh.real_path(&format!("{hello}/hi"))).unwrap(),
        "hi\n"
    );
    assert_eq!(
        std::fs::read_to_string(fresh.real_path(&dep)).unwrap(),
        "dependency\n",
        "the dependency came along"
    );
    // Nix checked the NAR hashes and the signatures.
    let verify = fresh.try_run("nix-store", &["--verify-path", &hello]);
    assert!(verify.status.success());

    // Another key is not trusted.
    let (_, other) = key_files(dir.path(), "someone-else");
    let (fresh, out) = realise_from(&served.url(), &other, &hello);
    assert!(!out.status.success(), "an untrusted signature is refused");
    assert!(!fresh.real_path(&hello).exists());
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nix_substitutes_from_a_file_cache_served_by_the_server() {
    let store = NixStore::new();
    let (hello, dep, dir) = build(&store);
    let (cache_secret, cache_public) = key_files(dir.path(), "file-cache-1");
    let cache_dir = dir.path().join("cache");
    let uri = format!(
        "file://{}?secret-key={}&compression=zstd",
        cache_dir.display(),
        cache_secret.display()
    );
    let local = hydra_store::LocalStore::new(NixEnv {
        args: Vec::new(),
        env: store.env(),
    });
    let cache = hydra_store::open(&uri, local.nix()).unwrap();
    cache
        .copy_from_local(&local, &BTreeSet::from([hello.clone(), dep.clone()]))
        .await
        .unwrap();
    // The server signs too, with its own key.
    let (server_secret, server_public) = key_files(dir.path(), "server-1");
    let served = Served::start(
        &store,
        &format!(
            "store_uri = {uri}\nbinary_cache_secret_key_file = {}\n",
            server_secret.display()
        ),
    )
    .await;
    for key in [&cache_public, &server_public] {
        let (fresh, out) = realise_from(&served.url(), key, &hello);
        assert!(
            out.status.success(),
            "nix-store -r with {key} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(fresh.real_path(&dep)).unwrap(),
            "dependency\n"
        );
    }
    let (status, _) = get_text(&served, "/nar/..%2Fnix-cache-info").await;
    assert_eq!(status, 404, "NAR names cannot climb out of nar/");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nix_substitutes_from_an_s3_cache_served_by_the_server() {
    use hydra_test_support::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
    let store = NixStore::new();
    let (hello, dep, dir) = build(&store);
    let (cache_secret, cache_public) = key_files(dir.path(), "s3-cache-1");
    let s3 = S3Server::start();
    s3.create_bucket("cache");
    let uri = format!(
        "s3://cache?endpoint={}&region=us-east-1&secret-key={}&narinfo-compression=xz",
        s3.url(),
        cache_secret.display()
    );
    let credentials = [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
    ];
    let local = hydra_store::LocalStore::new(NixEnv {
        args: Vec::new(),
        env: store.env(),
    });
    let mut env = store.env();
    env.extend(
        credentials
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let cache = hydra_store::open(
        &uri,
        &NixEnv {
            args: Vec::new(),
            env,
        },
    )
    .unwrap();
    cache
        .copy_from_local(&local, &BTreeSet::from([hello.clone(), dep.clone()]))
        .await
        .unwrap();
    let served = Served::start_with(&store, &format!("store_uri = {uri}\n"), &credentials).await;
    let (fresh, out) = realise_from(&served.url(), &cache_public, &hello);
    assert!(
        out.status.success(),
        "nix-store -r failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(fresh.real_path(&dep)).unwrap(),
        "dependency\n"
    );
    // The narinfo is xz-encoded in the bucket and plain text on the wire.
    let hash = &hello["/nix/store/".len()..][..32];
    let (status, text) = get_text(&served, &format!("/{hash}.narinfo")).await;
    assert_eq!(status, 200);
    assert!(text.contains(&format!("StorePath: {hello}")), "{text}");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_is_served_as_an_xz_nar_and_a_missing_one_is_gone() {
    let store = NixStore::new();
    let (hello, _dep, _dir) = build(&store);
    let served = Served::start(&store, "").await;
    let db = &served._db;
    let jobset = jobset_p_j(db).await;
    TestBuild::new(jobset, "hello")
        .id(1)
        .nix_name(None)
        .drv("/nix/store/x.drv")
        .current(false)
        .finished(BuildStatus::Succeeded, 1, 2)
        .output("out", &hello)
        .output("gone", "/nix/store/00000000000000000000000000000000-gone")
        .insert(&db.pool)
        .await;
    let (status, headers, body) = fetch(&served, "/build/1/output/out").await;
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("content-type").unwrap(),
        "application/x-nix-archive"
    );
    let mut nar = Vec::new();
    async_compression::tokio::bufread::XzDecoder::new(&body[..])
        .read_to_end(&mut nar)
        .await
        .unwrap();
    let dumped = std::process::Command::new("nix-store")
        .arg("--dump")
        .arg(store.real_path(&hello))
        .output()
        .unwrap()
        .stdout;
    assert_eq!(nar, dumped, "the NAR nix-store --dump makes");
    assert_eq!(fetch(&served, "/build/1/output/gone").await.0, 410);
    assert_eq!(fetch(&served, "/build/1/output/nope").await.0, 404);
    served.stop().await;
}

/// Project `p` owned by `root` with jobset `j`; returns the jobset's id.
async fn jobset_p_j(db: &TestDb) -> i32 {
    db.exec(
        "insert into Users (userName, emailAddress, password) values ('root', '', '!');
         insert into Projects (name, displayName, owner) values ('p', 'P', 'root');
         insert into Jobsets (project, name, nixExprInput, nixExprPath, emailOverride) values ('p', 'j', 'src', 'r.nix', '');",
    )
    .await;
    sqlx::query_scalar("select id from Jobsets")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn fetch(served: &Served, path: &str) -> (u16, axum::http::HeaderMap, Vec<u8>) {
    fetch_as(served, path, "application/json").await
}

async fn fetch_as(
    served: &Served,
    path: &str,
    accept: &str,
) -> (u16, axum::http::HeaderMap, Vec<u8>) {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(served.address)
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = axum::http::Request::get(path)
        .header("host", served.address.to_string())
        .header("accept", accept)
        .body(http_body_util::Empty::<axum::body::Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, headers, body)
}

async fn get_text(served: &Served, path: &str) -> (u16, String) {
    let (status, _, body) = fetch(served, path).await;
    (status, String::from_utf8(body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobset_channel_is_an_expression_nix_evaluates_to_the_built_outputs() {
    let store = NixStore::new();
    let (hello, dep, _dir) = build(&store);
    let served = Served::start(
        &store,
        "binary_cache_public_uri = https://cache.example.org\n",
    )
    .await;
    let db = &served._db;
    let jobset = jobset_p_j(db).await;
    let build = |id: i32, job: &str, name: &str, drv: &str| {
        TestBuild::new(jobset, job)
            .id(id)
            .nix_name(Some(name))
            .drv(drv)
            .current(false)
    };
    build(1, "hello", "hello-1", "/nix/store/x.drv")
        .finished(BuildStatus::Succeeded, 1, 2)
        .output("out", &hello)
        .insert(&db.pool)
        .await;
    build(2, "tools.dep", "dep", "/nix/store/y.drv")
        .finished(BuildStatus::Succeeded, 1, 2)
        .output("out", &dep)
        .insert(&db.pool)
        .await;
    build(3, "hello", "hello-2", "/nix/store/z.drv")
        .finished(BuildStatus::Failed, 1, 2)
        .output("out", "/nix/store/00000000000000000000000000000000-failed")
        .insert(&db.pool)
        .await;
    db.exec(&format!(
        "insert into BuildProducts (build, productnr, type, subtype, path, name) values
           (1, 1, 'nix-build', '', '{hello}', 'hello'), (2, 1, 'nix-build', '', '{dep}', 'dep'),
           (3, 1, 'nix-build', '', '/nix/store/00000000000000000000000000000000-failed', 'failed');"
    ))
    .await;
    let (status, _, body) = fetch(&served, "/jobset/p/j/channel/latest").await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["name"], "p-j");
    let ids: Vec<i64> = list["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2], "the latest successful build of each job");
    let (_, _, url) = fetch(&served, "/jobset/p/j/channel/latest/binary-cache-url").await;
    assert_eq!(url, b"https://cache.example.org");

    let (status, headers, tarball) =
        fetch(&served, "/jobset/p/j/channel/latest/nixexprs.tar.bz2").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/x-bzip2");
    let mut tar = Vec::new();
    async_compression::tokio::bufread::BzDecoder::new(&tarball[..])
        .read_to_end(&mut tar)
        .await
        .unwrap();
    let unpacked = shared_tempdir();
    let mut child = std::process::Command::new("tar")
        .args(["-x", "-C"])
        .arg(unpacked.path())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &tar).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success(), "tar reads the tarball");
    assert_eq!(
        std::fs::read_to_string(unpacked.path().join("channel/channel-name")).unwrap(),
        "p-j\n"
    );
    let expr = format!(
        "let c = import {}/channel {{ system = \"x86_64-linux\"; }}; in [ c.hello.outPath c.hello.name c.tools.dep.outPath ]",
        unpacked.path().display()
    );
    let out = store.run(
        "nix-instantiate",
        &["--eval", "--strict", "--json", "-E", &expr],
    );
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(got, serde_json::json!([hello, "hello-1", dep]));
    // nix-env lists the jobs of nested attribute sets too.
    let listed = store.run(
        "nix-env",
        &[
            "-qa",
            "--attr-path",
            "-f",
            &unpacked.path().join("channel").display().to_string(),
            "--argstr",
            "system",
            "x86_64-linux",
        ],
    );
    let mut rows: Vec<Vec<&str>> = listed
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        vec![vec!["hello", "hello-1"], vec!["tools.dep", "dep"]],
        "{listed}"
    );

    // One build as a channel; an evaluation's channel.
    let (_, _, body) = fetch(&served, "/build/1/nix").await;
    let one: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(one["packages"].as_array().unwrap().len(), 1);
    assert_eq!(fetch(&served, "/build/9/nix").await.0, 404);
    assert_eq!(fetch(&served, "/jobset/p/nope/channel/latest").await.0, 404);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_dependencies_are_a_tree_of_the_outputs_references_from_the_store() {
    let store = NixStore::new();
    let (hello, dep, _dir) = build(&store);
    let served = Served::start(&store, "").await;
    let db = &served._db;
    let jobset = jobset_p_j(db).await;
    TestBuild::new(jobset, "hello")
        .id(1)
        .drv("/nix/store/x.drv")
        .finished(BuildStatus::Succeeded, 1, 2)
        .output("out", &hello)
        .insert(&db.pool)
        .await;
    TestBuild::new(jobset, "dep")
        .id(2)
        .drv("/nix/store/y.drv")
        .finished(BuildStatus::Succeeded, 1, 2)
        .output("out", &dep)
        .insert(&db.pool)
        .await;
    TestBuild::new(jobset, "gone")
        .id(3)
        .drv("/nix/store/z.drv")
        .finished(BuildStatus::Succeeded, 1, 2)
        .output("out", "/nix/store/00000000000000000000000000000000-gone")
        .insert(&db.pool)
        .await;
    // The step of build 2 that built `dep`.
    db.exec(&format!(
        "insert into BuildSteps (build, stepnr, type, drvPath, busy, status, startTime, stopTime, machine, system)
           values (2, 1, 0, '/nix/store/y.drv', 0, 0, 1, 2, 'localhost', 'x86_64-linux');
         insert into BuildStepOutputs (build, stepnr, name, path) values (2, 1, 'out', '{dep}');"
    ))
    .await;

    let (status, body) = get_text(&served, "/build/1/runtime-deps").await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["available"], true);
    let tree = &json["trees"][0];
    assert_eq!(tree["path"], hello.as_str());
    assert_eq!(tree["name"], "hello");
    assert_eq!(tree["children"][0]["path"], dep.as_str(), "{json}");
    assert_eq!(tree["children"][0]["step"], serde_json::json!([2, 1]));
    assert_eq!(tree["children"].as_array().unwrap().len(), 1, "{json}");

    let (status, _, html) = fetch_as(&served, "/build/1/runtime-deps", "text/html").await;
    assert_eq!(status, 200);
    let html = String::from_utf8(html).unwrap();
    assert!(html.contains("Runtime dependencies of"), "{html}");
    assert!(
        html.contains(r#"<a href="/build/2/step/1">dep</a>"#),
        "{html}"
    );
    assert!(html.contains(r#"hello <span class="muted">(no info)</span>"#));

    // Outputs the store does not have.
    let (_, body) = get_text(&served, "/build/3/runtime-deps").await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["available"], false);
    assert_eq!(json["trees"], serde_json::json!([]));
    served.stop().await;
}
