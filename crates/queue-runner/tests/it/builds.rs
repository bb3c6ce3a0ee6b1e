//! Building on `localhost` (a chroot store): dependency order, products,
//! metrics, release names, `nix-support/failed`, cached successes, and the
//! NOTIFY sequences.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)]

use crate::common;

use std::time::Duration;

use common::{Recorder, Running, Setup};

const DAG: &str = r#"
with import ./config.nix;
let step = name: deps: mkDerivation ({
  inherit name;
  builder = builtins.toFile "${name}.sh" ''
    for d in $deps; do cat $d/log >> log.tmp; done
    mkdir $out
    echo ${name} >> log.tmp
    cp log.tmp $out/log
  '';
  deps = deps;
});
in rec {
  a = step "a" [ ];
  b = step "b" [ a ];
  c = step "c" [ a ];
  d = step "d" [ b c ];
  e = step "e" [ d ];
  f = step "f" [ e ];
}
"#;

#[tokio::test]
async fn a_diamond_and_a_chain_build_in_dependency_order() {
    let s = Setup::new().await;
    let file = s.write("dag.nix", DAG);
    let f = s.queue(&file, "f").await;
    let running = Running::start(s.context(&s.localhost(2), ""));
    s.wait(&[f], Duration::from_secs(120)).await;
    let row = s.build(f).await;
    assert_eq!((row.status, row.cached), (Some(0), Some(0)));
    // Every derivation was a step of f, in an order the graph allows.
    let steps = s
        .strings(&format!(
            "select substring(drvPath from 45) from BuildSteps where build = {f} and status = 0 order by stepnr"
        ))
        .await;
    let names: Vec<String> = steps
        .iter()
        .map(|d| d.trim_end_matches(".drv").to_string())
        .collect();
    assert_eq!(names.len(), 6, "{names:?}");
    let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
    assert!(pos("a") < pos("b") && pos("a") < pos("c"));
    assert!(pos("b") < pos("d") && pos("c") < pos("d"));
    assert!(pos("d") < pos("e") && pos("e") < pos("f"));
    let out: String = sqlx::query_scalar("select path from BuildOutputs where build = $1")
        .bind(f)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    let log = std::fs::read_to_string(s.store.real_path(&format!("{out}/log"))).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.first(), Some(&"a"));
    assert_eq!(lines.last(), Some(&"f"));
    // Logs were written where Hydra puts them.
    let drv: String = sqlx::query_scalar("select drvPath from Builds where id = $1")
        .bind(f)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    let base = drv.rsplit('/').next().unwrap();
    let log_file = s
        .data
        .path()
        .join("build-logs")
        .join(&base[..2])
        .join(&base[2..]);
    assert!(log_file.exists(), "{}", log_file.display());
    assert_eq!(
        s.scalar("select count(*) from BuildSteps where busy <> 0")
            .await,
        0
    );
    running.stop().await;
}

const PRODUCTS: &str = r#"
with import ./config.nix;
{
  products = mkDerivation {
    name = "products";
    builder = builtins.toFile "p.sh" ''
      mkdir -p $out/nix-support $out/doc "$out/with space"
      echo hello > $out/hello.txt
      echo index > $out/doc/index.html
      echo spaced > "$out/with space/file.txt"
      echo "file text $out/hello.txt" > $out/nix-support/hydra-build-products
      echo "file text \"$out/with space/file.txt\"" >> $out/nix-support/hydra-build-products
      echo "doc manual $out/doc index.html" >> $out/nix-support/hydra-build-products
      echo "junk" >> $out/nix-support/hydra-build-products
      echo "file text $out/missing.txt" >> $out/nix-support/hydra-build-products
      echo "lines 42 count" > $out/nix-support/hydra-metrics
      echo "time 1.5 s" >> $out/nix-support/hydra-metrics
      echo "lines 43 count" >> $out/nix-support/hydra-metrics
      echo "bad notanumber" >> $out/nix-support/hydra-metrics
      echo "products-1.0" > $out/nix-support/hydra-release-name
    '';
  };
  withFailedMarker = mkDerivation {
    name = "failed-marker";
    builder = builtins.toFile "f.sh" "mkdir -p $out/nix-support; touch $out/nix-support/failed";
  };
  plainDir = mkDerivation {
    name = "plain-dir-1.2";
    builder = builtins.toFile "d.sh" "mkdir $out; echo x > $out/x";
  };
}
"#;

#[tokio::test]
async fn products_metrics_release_names_and_failed_markers_are_recorded() {
    let s = Setup::new().await;
    let file = s.write("products.nix", PRODUCTS);
    let products = s.queue(&file, "products").await;
    let failed = s.queue(&file, "withFailedMarker").await;
    let plain = s.queue(&file, "plainDir").await;
    let running = Running::start(s.context(&s.localhost(2), ""));
    s.wait(&[products, failed, plain], Duration::from_secs(120))
        .await;

    assert_eq!(s.build(products).await.status, Some(0));
    let rows: Vec<(i32, String, String, Option<i64>, Option<String>, Option<String>, String, Option<String>)> = sqlx::query_as(
        "select productnr, type, subtype, fileSize, sha256hash, path, name, defaultPath from BuildProducts \
         where build = $1 order by productnr",
    )
    .bind(products)
    .fetch_all(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 3, "{rows:#?}");
    let out: String = sqlx::query_scalar("select path from BuildOutputs where build = $1")
        .bind(products)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(rows[0].0, 1);
    assert_eq!((rows[0].1.as_str(), rows[0].2.as_str()), ("file", "text"));
    assert_eq!(rows[0].3, Some(6));
    assert_eq!(
        rows[0].4.as_deref(),
        Some(hydra_nix::hash::sha256(b"hello\n").to_base16().as_str())
    );
    assert_eq!(
        rows[0].5.as_deref(),
        Some(format!("{out}/hello.txt").as_str())
    );
    assert_eq!(rows[0].6, "hello.txt");
    assert_eq!(
        rows[1].5.as_deref(),
        Some(format!("{out}/with space/file.txt").as_str())
    );
    assert_eq!((rows[1].6.as_str(), rows[1].3), ("file.txt", Some(7)));
    assert_eq!(
        (rows[2].1.as_str(), rows[2].2.as_str(), rows[2].6.as_str()),
        ("doc", "manual", "doc")
    );
    assert_eq!(
        (rows[2].3, rows[2].7.as_deref()),
        (None, Some("index.html"))
    );

    let metrics: Vec<(String, f64, Option<String>, String, String, String)> = sqlx::query_as(
        "select name, value, unit, project, jobset, job from BuildMetrics where build = $1 order by name",
    )
    .bind(products)
    .fetch_all(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(metrics.len(), 2);
    assert_eq!(
        (metrics[0].0.as_str(), metrics[0].1, metrics[0].2.as_deref()),
        ("lines", 43.0, Some("count"))
    );
    assert_eq!(
        (metrics[1].0.as_str(), metrics[1].1, metrics[1].2.as_deref()),
        ("time", 1.5, Some("s"))
    );
    assert_eq!(
        (
            metrics[0].3.as_str(),
            metrics[0].4.as_str(),
            metrics[0].5.as_str()
        ),
        ("p", "j", "products")
    );
    let (release, size, closure): (Option<String>, Option<i64>, Option<i64>) =
        sqlx::query_as("select releaseName, size, closureSize from Builds where id = $1")
            .bind(products)
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(release.as_deref(), Some("products-1.0"));
    assert!(size.unwrap() > 0 && closure.unwrap() >= size.unwrap());

    // nix-support/failed: status 6, the step itself succeeded.
    assert_eq!(s.build(failed).await.status, Some(6));
    assert_eq!(
        s.scalar(&format!(
            "select status::bigint from BuildSteps where build = {failed}"
        ))
        .await,
        0
    );

    // No products file: each directory output is a nix-build product.
    let default: (String, String, String, Option<String>) =
        sqlx::query_as("select type, subtype, name, path from BuildProducts where build = $1")
            .bind(plain)
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (default.0.as_str(), default.1.as_str(), default.2.as_str()),
        ("nix-build", "", "plain-dir-1.2")
    );
    let notification_pending = s
        .scalar(&format!("select count(*) from Builds where id in ({products}, {failed}, {plain}) and notificationPendingSince is not null"))
        .await;
    assert_eq!(notification_pending, 3);
    running.stop().await;
}

#[tokio::test]
async fn a_build_of_outputs_already_there_is_a_cached_success_with_the_same_products() {
    let s = Setup::new().await;
    let file = s.write("products.nix", PRODUCTS);
    let first = s.queue(&file, "products").await;
    let running = Running::start(s.context(&s.localhost(1), ""));
    s.wait(&[first], Duration::from_secs(120)).await;

    let mut rec = Recorder::new(
        &s.db,
        &[
            "build_started",
            "step_started",
            "step_finished",
            "build_finished",
        ],
    )
    .await;
    let second = s.queue(&file, "products").await;
    s.wait(&[second], Duration::from_secs(60)).await;
    let row = s.build(second).await;
    assert_eq!((row.status, row.cached), (Some(0), Some(1)));
    assert_eq!(
        s.scalar(&format!(
            "select count(*) from BuildProducts where build = {second}"
        ))
        .await,
        3
    );
    assert_eq!(
        s.strings(&format!(
            "select releaseName from Builds where id = {second}"
        ))
        .await,
        ["products-1.0"]
    );
    assert_eq!(
        s.scalar(&format!(
            "select count(*) from BuildSteps where build = {second}"
        ))
        .await,
        0
    );
    // A substitutable/present build emits only build_finished.
    let got = rec.take().await;
    assert_eq!(got, [("build_finished".to_string(), second.to_string())]);
    running.stop().await;
}

#[tokio::test]
async fn a_real_build_sends_started_step_finished_and_finished() {
    let s = Setup::new().await;
    let file = s.write("products.nix", PRODUCTS);
    let running = Running::start(s.context(&s.localhost(1), ""));
    let mut rec = Recorder::new(
        &s.db,
        &[
            "build_started",
            "step_started",
            "step_finished",
            "build_finished",
        ],
    )
    .await;
    let id = s.queue(&file, "plainDir").await;
    s.wait(&[id], Duration::from_secs(60)).await;
    let got = rec.take().await;
    let channels: Vec<&str> = got.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        channels,
        [
            "step_started",
            "build_started",
            "step_finished",
            "build_finished"
        ],
        "{got:?}"
    );
    assert_eq!(got[0].1, format!("{id}\t1"));
    assert_eq!(got[1].1, id.to_string());
    let parts: Vec<&str> = got[2].1.split('\t').collect();
    assert_eq!(&parts[..2], &[id.to_string().as_str(), "1"]);
    assert!(parts[2].contains("/build-logs/"), "{parts:?}");
    assert_eq!(got[3].1, id.to_string());
    running.stop().await;
}
