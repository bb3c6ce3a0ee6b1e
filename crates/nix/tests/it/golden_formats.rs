//! Byte-for-byte agreement with real Nix on hashes, store paths, NAR and the
//! export format. Every vector is produced by Nix while the test runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use hydra_nix::export::{self, ExportedPath};
use hydra_nix::hash::{HashAlgo, NixHash, sha256};
use hydra_nix::nar::{self, EntryKind, NarReader};
use hydra_nix::store_path::StoreDir;
use hydra_test_support::NixStore;

fn output(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn text(cmd: &mut Command) -> String {
    String::from_utf8(output(cmd)).unwrap().trim().to_string()
}

/// A tree with every kind of entry and awkward names.
fn make_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    std::fs::create_dir(dir.join("empty-dir")).unwrap();
    std::fs::write(dir.join("plain.txt"), "hello\n").unwrap();
    std::fs::write(dir.join("empty"), "").unwrap();
    std::fs::write(dir.join("seven.."), "7 bytes").unwrap();
    std::fs::write(dir.join("with space"), "spaced").unwrap();
    std::fs::write(dir.join("Upper"), "sorts before lower case").unwrap();
    std::fs::write(dir.join("ünïcødé"), "non-ascii name").unwrap();
    std::fs::write(
        dir.join("sub/deeper/big.bin"),
        (0..1_000_003u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(dir.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("plain.txt", dir.join("link")).unwrap();
    std::os::unix::fs::symlink("../nowhere/at all", dir.join("sub/dangling")).unwrap();
}

#[test]
fn hashes_in_every_encoding_match_nix_hash() {
    let dir = tempfile::tempdir().unwrap();
    for (i, contents) in [&b""[..], b"abc", b"\x00\xff binary \n", &[7u8; 100_000]]
        .iter()
        .enumerate()
    {
        let file = dir.path().join(format!("f{i}"));
        std::fs::write(&file, contents).unwrap();
        for algo in [HashAlgo::Sha1, HashAlgo::Sha256, HashAlgo::Sha512] {
            let ours = NixHash::digest(algo, contents);
            let nix = |fmt: &[&str]| {
                text(
                    Command::new("nix-hash")
                        .args(["--type", algo.name(), "--flat"])
                        .args(fmt)
                        .arg(&file),
                )
            };
            assert_eq!(
                nix(&["--base32"]),
                ours.to_base32(),
                "{algo} base32 of {file:?}"
            );
            assert_eq!(nix(&[]), ours.to_base16(), "{algo} base16 of {file:?}");
            let sri = text(
                Command::new("nix")
                    .args([
                        "--experimental-features",
                        "nix-command",
                        "hash",
                        "file",
                        "--sri",
                        "--type",
                        algo.name(),
                    ])
                    .arg(&file),
            );
            assert_eq!(sri, ours.to_sri());
            assert_eq!(NixHash::parse(&sri).unwrap(), ours);
            let to32 = text(Command::new("nix-hash").args([
                "--type",
                algo.name(),
                "--to-base32",
                &ours.to_base16(),
            ]));
            assert_eq!(to32, ours.to_base32());
        }
    }
}

#[test]
fn nar_dump_matches_nix_store_dump_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    make_tree(&tree);
    let single = dir.path().join("single-file");
    std::fs::write(&single, "hello").unwrap();
    let link = dir.path().join("just-a-link");
    std::os::unix::fs::symlink("/some/where", &link).unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for path in [&tree, &single, &link] {
        let nix = output(Command::new("nix-store").arg("--dump").arg(path));
        let mut ours = Vec::new();
        nar::dump_path(path, &mut ours).unwrap();
        assert_eq!(ours.len(), nix.len(), "{path:?}");
        assert!(
            ours == nix,
            "our NAR of {path:?} differs from nix-store --dump"
        );
        let nix_hash = text(
            Command::new("nix-hash")
                .args(["--type", "sha256", "--base32"])
                .arg(path),
        );
        assert_eq!(sha256(&nix).to_base32(), nix_hash);

        // Reading Nix's NAR gives its hash and size, and unpacking it gives
        // a tree that dumps to the same bytes.
        let summary = runtime.block_on(NarReader::new(&nix[..]).finish()).unwrap();
        assert_eq!(
            (summary.nar_hash.to_base32(), summary.nar_size),
            (nix_hash, nix.len() as u64)
        );
        let restored = dir.path().join(format!(
            "restored-{}",
            path.file_name().unwrap().to_string_lossy()
        ));
        runtime.block_on(nar::unpack(&nix[..], &restored)).unwrap();
        let mut again = Vec::new();
        nar::dump_path(&restored, &mut again).unwrap();
        assert!(again == nix, "unpacking and dumping {path:?} changed it");
    }

    // The single-file NAR of the reference document, byte for byte.
    let nix = output(Command::new("nix-store").arg("--dump").arg(&single));
    assert_eq!(nix.len(), 120);
    assert_eq!(&nix[8..21], b"nix-archive-1");
}

#[test]
fn nar_entries_come_in_order_with_contents_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path());
    let nix = output(Command::new("nix-store").arg("--dump").arg(dir.path()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut reader = NarReader::new(&nix[..]);
        let mut seen = Vec::new();
        while let Some(entry) = reader.next().await.unwrap() {
            if let EntryKind::Regular {
                size,
                nar_offset,
                executable,
            } = &entry.kind
            {
                let mut contents = Vec::new();
                let mut buf = [0u8; 1000];
                loop {
                    let n = reader.read_contents(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    contents.extend_from_slice(&buf[..n]);
                }
                assert_eq!(contents.len() as u64, *size);
                assert_eq!(
                    &nix[*nar_offset as usize..*nar_offset as usize + contents.len()],
                    &contents[..]
                );
                let on_disk =
                    std::fs::read(dir.path().join(std::str::from_utf8(&entry.path).unwrap()))
                        .unwrap();
                assert_eq!(contents, on_disk);
                assert_eq!(*executable, entry.path == b"run.sh");
            }
            seen.push(String::from_utf8(entry.path).unwrap());
        }
        let summary = reader.finish().await.unwrap();
        assert_eq!(summary.nar_size, nix.len() as u64);
        assert_eq!(
            seen,
            vec![
                "",
                "Upper",
                "empty",
                "empty-dir",
                "link",
                "plain.txt",
                "run.sh",
                "seven..",
                "sub",
                "sub/dangling",
                "sub/deeper",
                "sub/deeper/big.bin",
                "with space",
                "ünïcødé"
            ]
        );
    });
}

#[test]
fn store_paths_match_nix_for_sources_fixed_outputs_and_text() {
    let store = NixStore::new();
    let store_dir = StoreDir::default();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("src-tree");
    make_tree(&tree);
    let file = dir.path().join("a-file.txt");
    std::fs::write(&file, "fixed contents\n").unwrap();

    // nix-store --add: a source path from the NAR hash.
    let added = text(store.command("nix-store").arg("--add").arg(&tree));
    let mut nar_bytes = Vec::new();
    nar::dump_path(&tree, &mut nar_bytes).unwrap();
    let ours = store_dir
        .make_source_path("src-tree", &sha256(&nar_bytes), [], false)
        .unwrap();
    assert_eq!(store_dir.display(&ours), added);
    assert_eq!(store_dir.parse(&added).unwrap(), ours);

    // Flat and recursive fixed outputs, in several algorithms.
    for (algo, recursive) in [
        ("sha256", false),
        ("sha1", false),
        ("sha512", false),
        ("sha256", true),
        ("sha1", true),
    ] {
        let mut cmd = store.command("nix-store");
        cmd.args(["--add-fixed", algo]);
        if recursive {
            cmd.arg("--recursive");
        }
        let added = text(cmd.arg(&file));
        let algo = HashAlgo::parse(algo).unwrap();
        let hash = if recursive {
            let mut n = Vec::new();
            nar::dump_path(&file, &mut n).unwrap();
            NixHash::digest(algo, &n)
        } else {
            NixHash::digest(algo, &std::fs::read(&file).unwrap())
        };
        let ours = store_dir
            .make_fixed_output_path("a-file.txt", recursive, &hash)
            .unwrap();
        assert_eq!(
            store_dir.display(&ours),
            added,
            "{algo} recursive={recursive}"
        );
    }

    // builtins.toFile: a text path, with references when the text has
    // string context.
    let expr = r#"let dep = builtins.toFile "dep.txt" "dependency"; in [ dep (builtins.toFile "user.txt" "uses ${dep} here") ]"#;
    let paths = text(store.command("nix-instantiate").args([
        "--eval",
        "--read-write-mode",
        "--strict",
        "--json",
        "--expr",
        expr,
    ]));
    let paths: Vec<String> = serde_json::from_str(&paths).unwrap();
    let dep = store_dir
        .make_text_path("dep.txt", b"dependency", [])
        .unwrap();
    assert_eq!(store_dir.display(&dep), paths[0]);
    let user = store_dir
        .make_text_path(
            "user.txt",
            format!("uses {} here", paths[0]).as_bytes(),
            [&dep],
        )
        .unwrap();
    assert_eq!(store_dir.display(&user), paths[1]);
}

#[test]
fn export_streams_match_nix_store_export_both_ways() {
    let store = NixStore::new();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("exported");
    make_tree(&tree);
    let expr = r#"let a = builtins.toFile "a.txt" "first"; in builtins.toFile "b.txt" "second refers to ${a}""#;
    let b = text(store.command("nix-instantiate").args([
        "--eval",
        "--read-write-mode",
        "--expr",
        expr,
    ]));
    let b = b.trim_matches('"').to_string();
    let tree_path = text(store.command("nix-store").arg("--add").arg(&tree));
    let a = text(
        store
            .command("nix-store")
            .args(["--query", "--references", &b]),
    );

    let nix = output(
        store
            .command("nix-store")
            .args(["--export", &a, &b, &tree_path]),
    );

    // Ours, from the files on disk, is byte-identical.
    let mut ours = Vec::new();
    for path in [&a, &b, &tree_path] {
        let refs: Vec<String> =
            text(
                store
                    .command("nix-store")
                    .args(["--query", "--references", path]),
            )
            .lines()
            .map(String::from)
            .collect();
        let info = ExportedPath {
            path: path.clone(),
            references: refs,
            deriver: None,
        };
        let real = store.real_path(path);
        export::write_item(&mut ours, &info, |w| nar::dump_path(&real, &mut { w })).unwrap();
    }
    export::write_end(&mut ours).unwrap();
    assert!(
        ours == nix,
        "our export stream differs from nix-store --export"
    );

    // Reading Nix's stream gives each path with its metadata and NAR hash.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut r = &nix[..];
        let mut items = Vec::new();
        while let Some((info, summary)) = export::read_item(&mut r, None).await.unwrap() {
            let nix_hash = text(
                store
                    .command("nix-store")
                    .args(["--query", "--hash", &info.path]),
            );
            assert_eq!(summary.nar_hash.to_typed_base32(), nix_hash);
            items.push(info);
        }
        assert!(r.is_empty(), "the whole stream was read");
        assert_eq!(items.len(), 3);
        assert_eq!(items[1].path, b);
        assert_eq!(items[1].references, vec![a.clone()]);
        assert_eq!(items[1].deriver, None);
    });
}

#[test]
fn a_nar_sink_receives_exactly_the_nar() {
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path());
    let nix = output(Command::new("nix-store").arg("--dump").arg(dir.path()));
    // Something follows the NAR in the stream; the reader must not touch it.
    let mut stream = nix.clone();
    stream.extend_from_slice(b"TRAILER!");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut input = &stream[..];
        let mut sink: Vec<u8> = Vec::new();
        let scan = nar::scan(
            &mut input,
            Some(&mut sink),
            &nar::ScanOptions {
                extract: vec![
                    b"plain.txt".to_vec(),
                    b"sub/deeper/big.bin".to_vec(),
                    b"missing".to_vec(),
                ],
                max_extract: 1000,
                listing: true,
                members: true,
            },
        )
        .await
        .unwrap();
        assert!(sink == nix);
        // Every regular file's size and SHA-256 agree with the file itself.
        let mut regular = 0;
        for (path, member) in &scan.members {
            let on_disk = dir.path().join(String::from_utf8_lossy(path).as_ref());
            match member {
                nar::Member::Regular { size, sha256, .. } => {
                    let bytes = std::fs::read(&on_disk).unwrap();
                    assert_eq!(*size, bytes.len() as u64);
                    assert_eq!(*sha256, hydra_nix::hash::sha256(&bytes));
                    regular += 1;
                }
                nar::Member::Directory => assert!(on_disk.is_dir()),
                nar::Member::Symlink { target } => {
                    assert_eq!(
                        std::fs::read_link(&on_disk)
                            .unwrap()
                            .as_os_str()
                            .as_encoded_bytes(),
                        target.as_slice()
                    );
                }
            }
        }
        assert!(regular >= 3, "{:?}", scan.members.keys());
        assert_eq!(input, b"TRAILER!");
        assert_eq!(
            scan.extracted.len(),
            1,
            "big.bin is over the limit, missing is missing"
        );
        assert_eq!(scan.extracted[&b"plain.txt".to_vec()], b"hello\n");
        let listing = scan.listing.unwrap();
        assert_eq!(listing["root"]["entries"]["run.sh"]["executable"], true);
        assert_eq!(listing["root"]["entries"]["link"]["target"], "plain.txt");
        assert_eq!(
            listing["root"]["entries"]["sub"]["entries"]["deeper"]["entries"]["big.bin"]["size"],
            1_000_003
        );
    });
}
