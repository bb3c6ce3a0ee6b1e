//! Destination stores against real Nix: outputs built in one store are
//! streamed into a `file://` binary cache (every compression, signed, with
//! listings) and fetched back by a real `nix-store -r` that trusts only that
//! cache; and into another Nix store through the serve protocol.

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
        "s3://bucket",
        "file://relative/dir",
        "file:///tmp/x?compression=lz5",
    ] {
        let err = hydra_store::open(bad, &NixEnv::default()).unwrap_err();
        assert!(
            err.to_string().contains(bad.split('?').next().unwrap()),
            "{err}"
        );
    }
}
