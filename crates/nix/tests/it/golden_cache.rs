//! Binary cache records agree with a cache written by `nix copy`, keys with
//! `nix-store --generate-binary-cache-key`, and signatures both ways.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use hydra_nix::nar;
use hydra_nix::narinfo::{CacheInfo, NarInfo, PublicKey, SecretKey};
use hydra_nix::store_path::StoreDir;
use hydra_test_support::NixStore;

const CLOSURE: &str = r#"
let mk = a: derivation ({ system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; } // a);
    dep = mk { name = "cache-dep"; args = [ "-c" "mkdir $out; echo dep > $out/file; echo exe > $out/run; chmod +x $out/run; ln -s file $out/link" ]; };
in mk { name = "cache-top"; args = [ "-c" "echo ${dep} > $out" ]; }
"#;

fn generate_key(dir: &Path, name: &str) -> (String, String) {
    let (sk, pk) = (
        dir.join(format!("{name}.sk")),
        dir.join(format!("{name}.pk")),
    );
    let out = std::process::Command::new("nix-store")
        .args(["--generate-binary-cache-key", name])
        .arg(&sk)
        .arg(&pk)
        .output()
        .unwrap();
    assert!(out.status.success());
    (
        std::fs::read_to_string(sk).unwrap(),
        std::fs::read_to_string(pk).unwrap(),
    )
}

#[test]
fn keys_match_nix_store_generate_binary_cache_key() {
    let dir = tempfile::tempdir().unwrap();
    let (sk_text, pk_text) = generate_key(dir.path(), "cache.example.org-1");
    assert!(!sk_text.ends_with('\n'));
    let sk = SecretKey::parse(&sk_text).unwrap();
    let pk = PublicKey::parse(&pk_text).unwrap();
    assert_eq!(sk.name, "cache.example.org-1");
    assert_eq!(sk.to_text(), sk_text);
    assert_eq!(sk.public_key(), pk);
    assert_eq!(pk.to_text(), pk_text);
    // Trailing newlines (as other tools write them) are fine.
    assert_eq!(
        SecretKey::parse(&format!("{sk_text}\n")).unwrap().to_text(),
        sk_text
    );
    // A key of our own making works the same way.
    let ours = SecretKey::generate("ours-1").unwrap();
    let again = SecretKey::parse(&ours.to_text()).unwrap();
    assert!(again.public_key().verify("message", &ours.sign("message")));
    assert!(
        format!("{ours:?}").contains("***"),
        "secret keys never print"
    );
}

#[test]
fn narinfos_written_by_nix_copy_read_back_verify_and_re_sign_identically() {
    let store = NixStore::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("closure.nix"), CLOSURE).unwrap();
    let (sk_text, pk_text) = generate_key(dir.path(), "golden-1");
    let top = store.build(&dir.path().join("closure.nix"), "")[0].clone();
    let store_dir = StoreDir::default();
    let sk = SecretKey::parse(&sk_text).unwrap();
    let pk = PublicKey::parse(&pk_text).unwrap();
    let other = PublicKey::parse(&generate_key(dir.path(), "other-1").1).unwrap();

    for compression in ["none", "xz"] {
        let cache = dir.path().join(format!("cache-{compression}"));
        let url = format!(
            "file://{}?compression={compression}&write-nar-listing=1&secret-key={}",
            cache.display(),
            dir.path().join("golden-1.sk").display()
        );
        let out = store
            .command("nix")
            .args(["copy", "--to", &url, &top])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let info =
            CacheInfo::parse(&std::fs::read_to_string(cache.join("nix-cache-info")).unwrap())
                .unwrap();
        assert_eq!(info.store_dir, "/nix/store");

        let mut narinfos = 0;
        for entry in std::fs::read_dir(&cache).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "narinfo") {
                continue;
            }
            narinfos += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            let parsed = NarInfo::parse(&text).unwrap();
            assert_eq!(
                parsed.to_text(),
                text,
                "{path:?} does not print back identically"
            );
            assert!(
                parsed.verify(&store_dir, std::slice::from_ref(&pk)),
                "Nix's signature verifies"
            );
            assert!(
                !parsed.verify(&store_dir, std::slice::from_ref(&other)),
                "not with another key"
            );

            // Ed25519 is deterministic: our signature is Nix's.
            let mut unsigned = parsed.clone();
            unsigned.sigs.clear();
            unsigned.sign(&store_dir, &sk).unwrap();
            assert_eq!(unsigned.sigs, parsed.sigs);

            // A tampered record does not verify.
            let mut tampered = parsed.clone();
            tampered.nar_size += 1;
            assert!(!tampered.verify(&store_dir, std::slice::from_ref(&pk)));

            // The NAR hash and listing agree with our reading of the NAR.
            let nar_file = cache.join(&parsed.url);
            if compression == "none" {
                let bytes = std::fs::read(&nar_file).unwrap();
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let scan = runtime
                    .block_on(nar::scan(
                        &bytes[..],
                        None,
                        &nar::ScanOptions {
                            listing: true,
                            ..Default::default()
                        },
                    ))
                    .unwrap();
                assert_eq!(scan.summary.nar_hash, parsed.nar_hash);
                assert_eq!(scan.summary.nar_size, parsed.nar_size);
                assert_eq!(parsed.file_hash.as_ref(), Some(&parsed.nar_hash));
                let ls_file = path.with_extension("ls");
                let nix_listing: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(ls_file).unwrap()).unwrap();
                assert_eq!(scan.listing.unwrap(), nix_listing);
            } else {
                assert_eq!(parsed.compression, "xz");
                assert_eq!(
                    parsed.file_size,
                    Some(std::fs::metadata(&nar_file).unwrap().len())
                );
            }
        }
        assert_eq!(narinfos, 2, "top and its dependency");
    }
}

#[test]
fn narinfo_parsing_is_strict_where_nix_is() {
    let good = "StorePath: /nix/store/wh8fgfgvfajas663nz5fg90ji705gy8r-hello\nURL: nar/x.nar\nNarHash: sha256:0fzd3xy0rg1gdxfi7wg675q1vs7hh332lz0x4ml9l3arvl37yx9d\nNarSize: 288\nReferences: \nDeriver: unknown-deriver\nFutureField: ignored\n";
    let parsed = NarInfo::parse(good).unwrap();
    assert_eq!(parsed.compression, "bzip2", "Nix's default");
    assert_eq!(parsed.deriver, None);
    assert!(parsed.references.is_empty());
    let e = |t: &str| NarInfo::parse(t).unwrap_err().to_string();
    assert!(e(&good.replace("NarSize: 288", "NarSize: 0")).contains("NarSize is 0"));
    assert!(e(&good.replace("NarSize: 288\n", "")).contains("NarSize"));
    assert!(e(&good.replace("URL: nar/x.nar\n", "")).contains("URL"));
    assert!(e(good.trim_end()).contains("newline"));
    assert!(e(&good.replace("NarHash: sha256:", "NarHash: md5:")).contains("line 3"));
    assert!(e(&format!("{good}garbage\n")).contains("line 8"));
}
