//! Destination stores against real Nix: outputs built in one store are
//! streamed into a `file://` binary cache (every compression, signed, with
//! listings) and fetched back by a real `nix-store -r` that trusts only that
//! cache; into an `s3://` cache on a real S3-compatible server (multipart,
//! encoded listings and logs, an interrupted upload leaving nothing); and
//! into another Nix store through the serve protocol.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use hydra_nix::env::NixEnv;
use hydra_nix::nar::ScanOptions;
use hydra_nix::narinfo::SecretKey;
use hydra_nix::serve::{ServeClient, Transport};
use hydra_store::{DestStore, StoreError};
use hydra_test_support::NixStore;

const EXPR: &str = r#"
let dep = derivation { name = "dep"; system = builtins.currentSystem; builder = "/bin/sh";
                       args = [ "-c" "echo dependency > $out" ]; };
in derivation {
  name = "top"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin";
  args = [ "-c" "mkdir -p $out/nix-support $out/bin; echo ${dep} > $out/ref; echo file doc $out/ref > $out/nix-support/hydra-build-products; printf '#!/bin/sh\necho hi\n' > $out/bin/hi; chmod +x $out/bin/hi; ln -s ref $out/link" ];
}
"#;

/// Builds the expression in a fresh chroot store; returns the store, the
/// output and its dependency.
fn built() -> (NixStore, String, String) {
    let store = NixStore::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("top.nix");
    std::fs::write(&file, EXPR).unwrap();
    let out = store.run("nix-build", &[file.to_str().unwrap(), "--no-out-link"]);
    let top = out.trim().to_string();
    let refs = store.run("nix-store", &["--query", "--references", &top]);
    let dep = refs
        .lines()
        .find(|l| l.ends_with("-dep"))
        .unwrap()
        .to_string();
    (store, top, dep)
}

fn transport(store: &NixStore) -> Transport {
    let (program, args, env) = store.serve_command();
    Transport::Local {
        program: program.into(),
        args,
        env,
    }
}

/// Copies `paths` (dependencies first) from `from` into `dest`.
async fn copy_into(from: &NixStore, dest: &DestStore, paths: &[&str]) {
    let mut client = ServeClient::connect(&transport(from), Duration::from_secs(30))
        .await
        .unwrap();
    for path in paths {
        let infos = client
            .query_path_infos(&BTreeSet::from([path.to_string()]))
            .await
            .unwrap();
        let info = infos.into_iter().next().unwrap();
        let (mut tx, mut rx) = tokio::io::duplex(64 * 1024);
        let (sent, added) = tokio::join!(
            async {
                let r = client
                    .dump_store_path(path, Some(&mut tx), &ScanOptions::default())
                    .await;
                drop(tx);
                r
            },
            dest.add_nar(&info, &mut rx)
        );
        sent.unwrap();
        added.unwrap();
    }
}

#[tokio::test]
async fn a_file_cache_in_every_compression_serves_a_real_nix_store_r() {
    let (source, top, dep) = built();
    let key = SecretKey::generate("test-cache-1").unwrap();
    let keys = tempfile::tempdir().unwrap();
    std::fs::write(keys.path().join("sk"), key.to_text()).unwrap();
    let public = key.public_key().to_text();
    for compression in ["xz", "bzip2", "zstd", "none"] {
        let cache_dir = tempfile::tempdir().unwrap();
        let uri = format!(
            "file://{}?compression={compression}&secret-key={}&write-nar-listing=1",
            cache_dir.path().display(),
            keys.path().join("sk").display()
        );
        let dest = hydra_store::open(&uri, &NixEnv::default()).unwrap();
        copy_into(&source, &dest, &[&dep, &top]).await;

        let all = BTreeSet::from([top.clone(), dep.clone()]);
        assert_eq!(dest.query_valid(&all).await.unwrap(), all, "{compression}");
        let infos = dest.path_infos(&all).await.unwrap();
        assert_eq!(
            infos[&top].references,
            BTreeSet::from([dep.clone(), top.clone()])
        );
        let closure = dest
            .closure_size(&BTreeSet::from([top.clone()]))
            .await
            .unwrap();
        assert_eq!(closure, infos[&top].nar_size + infos[&dep].nar_size);
        let hash_part = &top["/nix/store/".len()..][..32];
        let listing =
            std::fs::read_to_string(cache_dir.path().join(format!("{hash_part}.ls"))).unwrap();
        let listing: serde_json::Value = serde_json::from_str(&listing).unwrap();
        let hi = &listing["root"]["entries"]["bin"]["entries"]["hi"];
        assert_eq!(
            (
                hi["type"].as_str(),
                hi["executable"].as_bool(),
                hi["size"].as_u64()
            ),
            (Some("regular"), Some(true), Some(18))
        );
        assert_eq!(listing["root"]["entries"]["link"]["target"], "ref");
        let narinfo =
            std::fs::read_to_string(cache_dir.path().join(format!("{hash_part}.narinfo"))).unwrap();
        assert!(
            narinfo.contains(&format!("Compression: {compression}\n")),
            "{narinfo}"
        );
        assert!(narinfo.contains("Sig: test-cache-1:"), "{narinfo}");

        // Files of an output can be read back from the cache.
        let scan = dest
            .scan(
                &top,
                &ScanOptions {
                    extract: vec![b"nix-support/hydra-build-products".to_vec()],
                    max_extract: 1 << 20,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let products = String::from_utf8(
            scan.extracted[b"nix-support/hydra-build-products".as_slice()].clone(),
        )
        .unwrap();
        assert_eq!(products, format!("file doc {top}/ref\n"));

        // A fresh store that trusts only this cache fetches and checks it.
        let fresh = NixStore::new();
        let out = fresh
            .command("nix-store")
            .args(["--realise", &top])
            .args([
                "--option",
                "substituters",
                &format!("file://{}", cache_dir.path().display()),
            ])
            .args(["--option", "trusted-public-keys", &public])
            .args(["--option", "require-sigs", "true"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{compression}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(fresh.real_path(&format!("{top}/ref")))
                .unwrap()
                .trim(),
            dep
        );
        let verify = fresh.try_run("nix-store", &["--verify-path", &top]);
        assert!(verify.status.success());
    }
}

#[tokio::test]
async fn an_unsigned_cache_is_refused_by_a_store_requiring_signatures() {
    let (source, top, dep) = built();
    let cache_dir = tempfile::tempdir().unwrap();
    let dest = hydra_store::open(
        &format!("file://{}", cache_dir.path().display()),
        &NixEnv::default(),
    )
    .unwrap();
    copy_into(&source, &dest, &[&dep, &top]).await;
    let other = SecretKey::generate("other").unwrap().public_key().to_text();
    let fresh = NixStore::new();
    let out = fresh
        .command("nix-store")
        .args(["--realise", &top])
        .args([
            "--option",
            "substituters",
            &format!("file://{}", cache_dir.path().display()),
        ])
        .args(["--option", "trusted-public-keys", &other])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a cache without a trusted signature must not be used"
    );
}

#[tokio::test]
async fn a_nar_that_does_not_match_its_hash_is_refused() {
    let (source, top, _dep) = built();
    let cache_dir = tempfile::tempdir().unwrap();
    let dest = hydra_store::open(
        &format!("file://{}", cache_dir.path().display()),
        &NixEnv::default(),
    )
    .unwrap();
    let mut client = ServeClient::connect(&transport(&source), Duration::from_secs(30))
        .await
        .unwrap();
    let mut info = client
        .query_path_infos(&BTreeSet::from([top.clone()]))
        .await
        .unwrap()
        .remove(0);
    let mut nar = Vec::new();
    client
        .dump_store_path(&top, Some(&mut nar), &ScanOptions::default())
        .await
        .unwrap();
    info.nar_hash = Some(hydra_nix::hash::sha256(b"something else"));
    let err = dest.add_nar(&info, &mut nar.as_slice()).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Mismatch {
                what: "NAR hash",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        dest.query_valid(&BTreeSet::from([top.clone()]))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn outputs_stream_into_another_nix_store() {
    let (source, top, dep) = built();
    let target = NixStore::new();
    let (_, args, env) = target.serve_command();
    let dest = hydra_store::open("auto", &NixEnv { args, env }).unwrap();
    assert!(dest.is_machine_store());
    copy_into(&source, &dest, &[&dep, &top]).await;
    let all = BTreeSet::from([top.clone(), dep.clone()]);
    assert_eq!(dest.query_valid(&all).await.unwrap(), all);
    let verify = target.try_run("nix-store", &["--verify-path", &top]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // Adding it again is a no-op.
    copy_into(&source, &dest, &[&top]).await;
}

#[tokio::test]
async fn logs_go_to_the_cache_and_bad_uris_are_refused() {
    let cache_dir = tempfile::tempdir().unwrap();
    let dest = hydra_store::open(
        &format!("file://{}", cache_dir.path().display()),
        &NixEnv::default(),
    )
    .unwrap();
    let log = cache_dir.path().join("step.log");
    std::fs::write(&log, "building\n").unwrap();
    assert!(
        dest.upload_log("/nix/store/00000000000000000000000000000000-x.drv", &log)
            .await
            .unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(
            cache_dir
                .path()
                .join("log/00000000000000000000000000000000-x.drv")
        )
        .unwrap(),
        "building\n"
    );
    assert_eq!(
        std::fs::read_to_string(cache_dir.path().join("nix-cache-info")).unwrap(),
        "StoreDir: /nix/store\n"
    );
    for bad in [
        "s3://",
        "gs://bucket",
        "file://relative/dir",
        "file:///tmp/x?compression=lz5",
        "file:///tmp/x?region=eu-west-1",
        "s3://bucket?endpoint=example.org&scheme=ftp",
        "s3://bucket?multipart-upload=1&buffer-size=1024",
    ] {
        let err = hydra_store::open(bad, &NixEnv::default()).unwrap_err();
        assert!(
            err.to_string().contains(bad.split('?').next().unwrap()),
            "{err}"
        );
    }
}

/// Settings whose program environment carries the S3 test credentials.
fn s3_env() -> NixEnv {
    use hydra_test_support::s3::{ACCESS_KEY, SECRET_KEY};
    NixEnv {
        args: Vec::new(),
        env: vec![
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
        ],
    }
}

/// A NAR reader that fails after `left` bytes, as a build machine's
/// connection that drops.
struct Dropping<'a> {
    inner: &'a [u8],
    left: usize,
}

impl tokio::io::AsyncRead for Dropping<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.left == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "the machine went away",
            )));
        }
        let n = self.left.min(buf.remaining()).min(self.inner.len());
        let (now, rest) = self.inner.split_at(n);
        buf.put_slice(now);
        self.inner = rest;
        self.left -= n;
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_cache_holds_signed_paths_in_parts_and_an_interrupted_upload_leaves_nothing() {
    // A 12 MiB output of incompressible bytes goes up in three parts.
    let store = NixStore::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.nix");
    std::fs::write(
        &file,
        r#"derivation { name = "big"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin";
             args = [ "-c" "head -c 12582912 /dev/urandom > $out" ]; }"#,
    )
    .unwrap();
    let big = store
        .run("nix-build", &[file.to_str().unwrap(), "--no-out-link"])
        .trim()
        .to_string();
    let (source, top, dep) = built();

    let server = hydra_test_support::s3::S3Server::start();
    server.create_bucket("cache");
    let key = SecretKey::generate("s3-cache-1").unwrap();
    std::fs::write(dir.path().join("sk"), key.to_text()).unwrap();
    let uri = format!(
        "s3://cache?region=us-east-1&endpoint={}&compression=zstd&secret-key={}&write-nar-listing=1\
         &ls-compression=br&narinfo-compression=xz&log-compression=br&multipart-upload=true&buffer-size=5242880",
        server.url(),
        dir.path().join("sk").display()
    );
    let dest = hydra_store::open(&uri, &s3_env()).unwrap();
    assert_eq!(dest.describe(), "s3://cache");
    copy_into(&source, &dest, &[&dep, &top]).await;
    copy_into(&store, &dest, &[&big]).await;

    let all = BTreeSet::from([top.clone(), dep.clone(), big.clone()]);
    assert_eq!(dest.query_valid(&all).await.unwrap(), all);
    let hash_part = |p: &str| p["/nix/store/".len()..][..32].to_string();
    // The narinfo is stored xz-encoded and reads back signed.
    let raw = server
        .get("cache", &format!("{}.narinfo", hash_part(&top)))
        .unwrap();
    assert!(raw.starts_with(b"\xfd7zXZ"), "the narinfo is xz-encoded");
    let infos = dest.path_infos(&all).await.unwrap();
    assert_eq!(
        infos[&top].references,
        BTreeSet::from([dep.clone(), top.clone()])
    );
    assert!(
        infos[&top]
            .sigs
            .iter()
            .any(|s| s.starts_with("s3-cache-1:"))
    );
    // The big NAR went up whole, and comes back whole.
    let scan = dest.scan(&big, &ScanOptions::default()).await.unwrap();
    assert_eq!(scan.summary.nar_size, infos[&big].nar_size);
    assert!(infos[&big].nar_size > 12 << 20);
    let keys = server.keys("cache");
    assert!(keys.contains(&"nix-cache-info".to_string()), "{keys:?}");
    assert!(
        keys.contains(&format!("{}.ls", hash_part(&top))),
        "{keys:?}"
    );
    // Logs go up brotli-encoded.
    let log = dir.path().join("step.log");
    std::fs::write(&log, "building top\n").unwrap();
    let drv = "/nix/store/00000000000000000000000000000000-top.drv";
    assert!(dest.upload_log(drv, &log).await.unwrap());
    let stored = server
        .get("cache", "log/00000000000000000000000000000000-top.drv")
        .unwrap();
    assert_ne!(stored, b"building top\n", "the log is encoded");
    let mut decoded = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(
        &mut async_compression::tokio::bufread::BrotliDecoder::new(stored.as_slice()),
        &mut decoded,
    )
    .await
    .unwrap();
    assert_eq!(decoded, b"building top\n");

    // The paths come back into a fresh store from the bucket alone.
    let fresh = NixStore::new();
    let local = hydra_store::LocalStore::new(NixEnv {
        args: Vec::new(),
        env: fresh.env(),
    });
    dest.copy_to_local(&local, &BTreeSet::from([top.clone()]))
        .await
        .unwrap();
    let verify = fresh.try_run("nix-store", &["--verify-path", &top]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // An upload whose NAR stops half way leaves neither a narinfo nor a NAR.
    let half = dir.path().join("half.nix");
    std::fs::write(
        &half,
        r#"derivation { name = "half"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin";
             args = [ "-c" "head -c 65536 /dev/urandom > $out" ]; }"#,
    )
    .unwrap();
    let path = store
        .run("nix-build", &[half.to_str().unwrap(), "--no-out-link"])
        .trim()
        .to_string();
    let mut client = ServeClient::connect(&transport(&store), Duration::from_secs(30))
        .await
        .unwrap();
    let info = client
        .query_path_infos(&BTreeSet::from([path.clone()]))
        .await
        .unwrap()
        .remove(0);
    let mut nar = Vec::new();
    client
        .dump_store_path(&path, Some(&mut nar), &ScanOptions::default())
        .await
        .unwrap();
    let before = server.keys("cache");
    let mut dropping = Dropping {
        inner: &nar,
        left: nar.len() / 2,
    };
    let err = dest.add_nar(&info, &mut dropping).await.unwrap_err();
    assert!(err.to_string().contains("went away"), "{err}");
    assert_eq!(server.keys("cache"), before, "nothing new in the bucket");
    assert!(
        dest.query_valid(&BTreeSet::from([path.clone()]))
            .await
            .unwrap()
            .is_empty()
    );
}
