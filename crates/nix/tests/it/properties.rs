//! Round trips of every format, and every parser given arbitrary bytes (and
//! damaged valid input) returns an error rather than panicking.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use hydra_nix::derivation::{Derivation, DerivationOutput};
use hydra_nix::export::{self, ExportedPath};
use hydra_nix::hash::{HashAlgo, NixHash, sha256};
use hydra_nix::machines::{self, Dialect, Machine, ParseOptions};
use hydra_nix::nar::{self, EntryKind, NarReader, Node};
use hydra_nix::narinfo::NarInfo;
use hydra_nix::store_path::{StoreDir, StorePath};
use hydra_nix::{base32, wire};
use proptest::prelude::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

// --- generators -------------------------------------------------------------

fn name_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0),
        1..12,
    )
    .prop_filter("not . or ..", |n| n != b"." && n != b"..")
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        (any::<bool>(), prop::collection::vec(any::<u8>(), 0..300)).prop_map(
            |(executable, contents)| Node::Regular {
                executable,
                contents
            }
        ),
        prop::collection::vec(any::<u8>().prop_filter("no NUL", |b| *b != 0), 1..40)
            .prop_map(|target| Node::Symlink { target }),
    ];
    leaf.prop_recursive(3, 30, 6, |inner| {
        prop::collection::btree_map(name_bytes(), inner, 0..6).prop_map(Node::Directory)
    })
}

fn store_path_string() -> impl Strategy<Value = String> {
    ("[0-9a-df-np-sv-z]{32}", "[a-zA-Z0-9+._?=-]{1,20}")
        .prop_map(|(h, n)| format!("/nix/store/{h}-{n}"))
}

fn derivation() -> impl Strategy<Value = Derivation> {
    let raw = "[a-zA-Z0-9/._:+-]{0,20}";
    let any_text = ".{0,30}";
    (
        prop::collection::btree_map("[a-z]{1,6}", (raw, raw, raw), 1..4),
        prop::collection::btree_map(
            store_path_string(),
            prop::collection::btree_set("[a-z]{1,5}", 1..3),
            0..3,
        ),
        prop::collection::btree_set(store_path_string(), 0..3),
        raw,
        any_text,
        prop::collection::vec(any_text, 0..4),
        prop::collection::btree_map(any_text, any_text, 0..6),
    )
        .prop_map(
            |(outputs, input_drvs, input_srcs, platform, builder, args, env)| Derivation {
                outputs: outputs
                    .into_iter()
                    .map(|(k, (path, hash_algo, hash))| {
                        (
                            k,
                            DerivationOutput {
                                path,
                                hash_algo,
                                hash,
                            },
                        )
                    })
                    .collect(),
                input_drvs,
                input_srcs,
                platform,
                builder,
                args,
                env,
            },
        )
}

fn nar_bytes(n: &Node) -> Vec<u8> {
    let mut buf = Vec::new();
    nar::write_node(n, &mut buf).unwrap();
    buf
}

/// Rebuilds a node from the reader's entries.
async fn read_back(bytes: &[u8]) -> Result<(Node, nar::NarSummary), nar::NarError> {
    let mut reader = NarReader::new(bytes);
    let mut entries: Vec<(Vec<u8>, Node)> = Vec::new();
    while let Some(entry) = reader.next().await? {
        let node = match entry.kind {
            EntryKind::Directory => Node::Directory(BTreeMap::new()),
            EntryKind::Symlink { target } => Node::Symlink { target },
            EntryKind::Regular { executable, .. } => {
                // Never trust the size field for an allocation: read as it comes.
                let mut contents = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = reader.read_contents(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    contents.extend_from_slice(&buf[..n]);
                }
                Node::Regular {
                    executable,
                    contents,
                }
            }
        };
        entries.push((entry.path, node));
    }
    let summary = reader.finish().await?;
    // Entries come parents first; attach children to their directories.
    let mut root: Option<Node> = None;
    for (path, node) in entries {
        if path.is_empty() {
            root = Some(node);
            continue;
        }
        let parts: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
        let mut dir = root.as_mut().unwrap();
        for part in &parts[..parts.len() - 1] {
            let Node::Directory(children) = dir else {
                unreachable!()
            };
            dir = children.get_mut(*part).unwrap();
        }
        let Node::Directory(children) = dir else {
            unreachable!()
        };
        children.insert(parts[parts.len() - 1].to_vec(), node);
    }
    Ok((root.unwrap(), summary))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn base32_round_trips(bytes in prop::collection::vec(any::<u8>(), 0..100)) {
        prop_assert_eq!(base32::decode(&base32::encode(&bytes)).unwrap(), bytes);
    }

    #[test]
    fn hash_forms_round_trip(data in prop::collection::vec(any::<u8>(), 0..64), algo in prop_oneof![Just(HashAlgo::Sha1), Just(HashAlgo::Sha256), Just(HashAlgo::Sha512)]) {
        let h = NixHash::digest(algo, &data);
        for form in [h.to_typed_base16(), h.to_typed_base32(), h.to_sri()] {
            prop_assert_eq!(NixHash::parse(&form).unwrap(), h.clone());
        }
    }

    #[test]
    fn aterm_round_trips(drv in derivation()) {
        let text = drv.to_aterm();
        prop_assert_eq!(Derivation::parse(&text).unwrap(), drv);
    }

    #[test]
    fn nar_round_trips(n in node()) {
        let bytes = nar_bytes(&n);
        let (back, summary) = runtime().block_on(read_back(&bytes)).unwrap();
        prop_assert_eq!(back, n);
        prop_assert_eq!(summary.nar_hash, sha256(&bytes));
        prop_assert_eq!(summary.nar_size, bytes.len() as u64);
    }

    #[test]
    fn nar_unpacks_and_dumps_to_the_same_bytes(n in node()) {
        // Symlinks and regular files can be a NAR's root; unpack anything.
        let bytes = nar_bytes(&n);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        runtime().block_on(nar::unpack(&bytes[..], &dest)).unwrap();
        let mut again = Vec::new();
        nar::dump_path(&dest, &mut again).unwrap();
        prop_assert_eq!(again, bytes);
    }

    #[test]
    fn export_round_trips(items in prop::collection::vec((node(), store_path_string(), prop::collection::btree_set(store_path_string(), 0..3), prop::option::of(store_path_string())), 0..4)) {
        let mut buf = Vec::new();
        for (n, path, refs, deriver) in &items {
            let info = ExportedPath { path: path.clone(), references: refs.iter().cloned().collect(), deriver: deriver.clone() };
            export::write_item(&mut buf, &info, |w| nar::write_node(n, &mut { w })).unwrap();
        }
        export::write_end(&mut buf).unwrap();
        let read = runtime().block_on(async {
            let mut r = &buf[..];
            let mut out = Vec::new();
            while let Some((info, summary)) = export::read_item(&mut r, None).await.unwrap() {
                out.push((info, summary));
            }
            out
        });
        prop_assert_eq!(read.len(), items.len());
        for ((info, summary), (n, path, refs, deriver)) in read.iter().zip(&items) {
            prop_assert_eq!(&info.path, path);
            prop_assert_eq!(info.references.iter().cloned().collect::<BTreeSet<_>>(), refs.clone());
            prop_assert_eq!(&info.deriver, deriver);
            prop_assert_eq!(&summary.nar_hash, &sha256(&nar_bytes(n)));
        }
    }

    #[test]
    fn narinfo_round_trips(
        path in store_path_string(),
        data in prop::collection::vec(any::<u8>(), 1..50),
        refs in prop::collection::vec("[0-9a-df-np-sv-z]{32}-[a-z]{1,8}", 0..4),
        size in 1u64..u64::MAX,
        file in prop::option::of(1u64..1_000_000),
        deriver in prop::option::of("[0-9a-df-np-sv-z]{32}-[a-z]{1,8}\\.drv"),
        sigs in prop::collection::vec("[a-z0-9.-]{1,10}:[A-Za-z0-9+/]{86}==", 0..3),
        ca in prop::option::of("fixed:sha256:[0-9a-df-np-sv-z]{52}"),
    ) {
        let info = NarInfo {
            store_path: path,
            url: format!("nar/{}.nar.xz", sha256(&data).to_base32()),
            compression: "xz".into(),
            file_hash: file.map(|_| sha256(&data)),
            file_size: file,
            nar_hash: sha256(&data),
            nar_size: size,
            references: refs,
            deriver,
            system: Some("x86_64-linux".into()),
            sigs,
            ca,
        };
        prop_assert_eq!(NarInfo::parse(&info.to_text()).unwrap(), info);
    }

    #[test]
    fn machines_round_trip(items in prop::collection::vec((
        "[a-z]{1,8}@[a-z]{1,8}", prop::collection::vec("[a-z0-9_]{1,8}-linux", 1..3), prop::option::of("/[a-z/]{1,20}"),
        1u32..100, 0u32..40, prop::collection::btree_set("[a-z][a-z-]{0,7}", 0..3), prop::collection::btree_set("[a-z][a-z-]{0,7}", 0..2),
        prop::option::of("ssh-ed25519 [A-Za-z0-9+/]{20,40}"),
    ), 0..5)) {
        let list: Vec<Machine> = items.into_iter().map(|(host, systems, key, jobs, speed, supported, mandatory, host_key)| Machine {
            store_uri: format!("ssh://{host}"),
            systems,
            ssh_key: key,
            max_jobs: jobs,
            speed_factor: f64::from(speed) / 4.0,
            supported_features: supported,
            mandatory_features: mandatory,
            host_key,
        }).collect();
        let text = machines::to_text(&list);
        let options = ParseOptions { dialect: Dialect::Nix, local_system: "x86_64-linux".into() };
        prop_assert_eq!(machines::parse(&text, "m", &options).unwrap().machines, list);
    }

    // --- no panics --------------------------------------------------------

    #[test]
    fn parsers_survive_arbitrary_text(text in ".{0,200}", bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = base32::decode(&text);
        let _ = NixHash::parse(&text);
        let _ = StorePath::from_base_name(&text);
        let _ = StoreDir::default().parse(&text);
        let _ = Derivation::parse(&text);
        let _ = Derivation::parse(&format!("Derive({text}"));
        let _ = NarInfo::parse(&text);
        let _ = hydra_nix::narinfo::CacheInfo::parse(&text);
        let _ = hydra_nix::narinfo::SecretKey::parse(&text);
        let _ = hydra_nix::narinfo::PublicKey::parse(&text);
        for dialect in [Dialect::Nix, Dialect::Hydra] {
            let _ = machines::parse(&text, "m", &ParseOptions { dialect, local_system: "x".into() });
        }
        let _ = wire::read_bytes(&mut &bytes[..], 1000);
        runtime().block_on(async {
            let _ = NarReader::new(&bytes[..]).finish().await;
            let mut r = &bytes[..];
            let _ = export::read_item(&mut r, None).await;
        });
    }

    #[test]
    fn the_nar_reader_rejects_damaged_nars_without_panicking(n in node(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let bytes = nar_bytes(&n);
        let truncated = &bytes[..cut.index(bytes.len())];
        let rt = runtime();
        prop_assert!(rt.block_on(NarReader::new(truncated).finish()).is_err());
        let mut damaged = bytes.clone();
        let i = flip.index(damaged.len());
        damaged[i] ^= byte | 1;
        // Damage is either detected or the NAR still parses (a changed byte
        // inside file contents); never a panic or a hang.
        let _ = rt.block_on(read_back(&damaged));
    }
}

#[test]
fn hostile_nars_are_rejected_with_a_reason() {
    let rt = runtime();
    let check = |node: Node, expected: &str| {
        let bytes = nar_bytes(&node);
        let err = rt
            .block_on(NarReader::new(&bytes[..]).finish())
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{err}");
    };
    let file = || Node::Regular {
        executable: false,
        contents: b"x".to_vec(),
    };
    check(
        Node::Directory([(b"..".to_vec(), file())].into()),
        "invalid entry name `..`",
    );
    check(
        Node::Directory([(b"a/b".to_vec(), file())].into()),
        "invalid entry name `a/b`",
    );
    check(
        Node::Directory([(b"".to_vec(), file())].into()),
        "invalid entry name ``",
    );
    check(
        Node::Symlink {
            target: b"a\0b".to_vec(),
        },
        "invalid symlink target",
    );

    // Out of order and duplicate names, written by hand.
    let mut bytes = Vec::new();
    let w = |b: &mut Vec<u8>, s: &[u8]| wire::write_bytes(b, s).unwrap();
    w(&mut bytes, b"nix-archive-1");
    for t in [&b"("[..], b"type", b"directory"] {
        w(&mut bytes, t);
    }
    for name in [&b"b"[..], b"a"] {
        for t in [
            &b"entry"[..],
            b"(",
            b"name",
            name,
            b"node",
            b"(",
            b"type",
            b"symlink",
            b"target",
            b"x",
            b")",
            b")",
        ] {
            w(&mut bytes, t);
        }
    }
    w(&mut bytes, b")");
    let err = rt
        .block_on(NarReader::new(&bytes[..]).finish())
        .unwrap_err()
        .to_string();
    assert!(err.contains("entry `a` is not after `b`"), "{err}");

    // A file whose contents end early.
    let full = nar_bytes(&Node::Regular {
        executable: true,
        contents: vec![1; 100],
    });
    let err = rt
        .block_on(NarReader::new(&full[..60]).finish())
        .unwrap_err()
        .to_string();
    assert!(err.contains("byte"), "{err}");
}

#[test]
fn unpacking_never_writes_outside_the_destination() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    // A symlink pointing out, then (impossible in a valid NAR) nothing can
    // be written through it because names are unique and sorted.
    let node = Node::Directory(
        [
            (
                b"escape".to_vec(),
                Node::Symlink {
                    target: b"/etc".to_vec(),
                },
            ),
            (
                b"file".to_vec(),
                Node::Regular {
                    executable: false,
                    contents: b"inside".to_vec(),
                },
            ),
        ]
        .into(),
    );
    let dest = dir.path().join("dest");
    rt.block_on(nar::unpack(&nar_bytes(&node)[..], &dest))
        .unwrap();
    assert_eq!(
        std::fs::read_link(dest.join("escape")).unwrap(),
        std::path::Path::new("/etc")
    );
    assert_eq!(std::fs::read(dest.join("file")).unwrap(), b"inside");
    // An existing destination is refused.
    assert!(
        rt.block_on(nar::unpack(&nar_bytes(&node)[..], &dest))
            .is_err()
    );
}
