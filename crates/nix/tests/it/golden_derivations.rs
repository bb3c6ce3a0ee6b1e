//! Real `.drv` files made by `nix-instantiate` parse and print back to the
//! same bytes, and their `.drv` paths and output paths are recomputed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use hydra_nix::derivation::{
    Derivation, DerivationError, DerivationKind, HashModuloCache, name_from_drv_path,
};
use hydra_nix::store_path::StoreDir;
use hydra_test_support::NixStore;

/// An expression with a few hundred derivations of every shape Nix makes.
const CORPUS: &str = r#"
let
  system = builtins.currentSystem;
  mod = a: b: a - b * (a / b);
  mk = attrs: derivation ({ inherit system; builder = "/bin/sh"; args = [ "-c" "echo" ]; } // attrs);
  strange = "quote\" backslash\\ newline\n tab\t cr\r dollar$ braces{} parens() comma, unicode é ✓";
  src = builtins.toFile "corpus-src.txt" "some \"quoted\" text\n";
  dir = ./corpus-dir;
  zeros = n: builtins.concatStringsSep "" (builtins.genList (_: "0") n);
  fods = [
    (mk { name = "fod-flat-sha256-b32"; outputHash = zeros 52; outputHashAlgo = "sha256"; })
    (mk { name = "fod-rec-sha256-sri"; outputHashMode = "recursive"; outputHash = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="; })
    (mk { name = "fod-flat-sha1-b16"; outputHashAlgo = "sha1"; outputHash = zeros 40; })
    (mk { name = "fod-rec-sha512-b16"; outputHashMode = "recursive"; outputHashAlgo = "sha512"; outputHash = zeros 128; })
    (mk { name = "fod-rec-sha1"; outputHashMode = "recursive"; outputHashAlgo = "sha1"; outputHash = zeros 32; })
  ];
  outputSets = [ [ "out" ] [ "out" "dev" "lib" ] [ "bin" "out" ] [ "out" "doc" ] ];
  drvs = builtins.genList (i:
    let
      prev = if i == 0 then null else builtins.elemAt drvs (i - 1);
      older = if i < 7 then null else builtins.elemAt drvs (i - 7);
      outputs = builtins.elemAt outputSets (mod i 4);
      base = {
        name = "corpus-${toString i}";
        inherit outputs;
        args = [ "-c" "echo ${toString i}" strange ];
        "attr-${toString i}" = strange + toString i;
        number = i;
        flag = mod i 2 == 0;
        list = [ "a" i "c" ];
        fod = builtins.elemAt fods (mod i 5);
      }
      // (if prev != null then { dep = prev; } else { })
      // (if older != null && older ? dev then { devDep = older.dev; libDep = older.lib; } else { })
      // (if mod i 3 == 0 then { source = src; tree = dir; } else { })
      // (if mod i 10 == 3 then { passAsFile = [ "big" ]; big = strange; } else { })
      // (if mod i 10 == 7 then { __structuredAttrs = true; nested = { a = [ 1 2 ]; b = strange; }; } else { });
    in mk base) 200;
  floating = mk { name = "ca-floating"; __contentAddressed = true; outputHashMode = "recursive"; outputHashAlgo = "sha256"; dep = builtins.elemAt drvs 5; };
  all = drvs ++ fods ++ [ floating ];
in builtins.listToAttrs (map (d: { name = d.name; value = d; }) all)
"#;

#[test]
fn hundreds_of_real_derivations_round_trip_and_their_paths_are_recomputed() {
    let store = NixStore::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("corpus.nix"), CORPUS).unwrap();
    std::fs::create_dir(dir.path().join("corpus-dir")).unwrap();
    std::fs::write(dir.path().join("corpus-dir/file"), "in a directory").unwrap();
    let out = store
        .command("nix-instantiate")
        .args([
            "--option",
            "experimental-features",
            "nix-command ca-derivations",
        ])
        .arg(dir.path().join("corpus.nix"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let store_dir = StoreDir::default();
    let real_store = store.real_path("/nix/store");
    let mut files: Vec<String> = std::fs::read_dir(&real_store)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".drv"))
        .collect();
    files.sort();
    assert!(files.len() >= 200, "only {} derivations", files.len());

    let load = |path: &str| -> Result<Derivation, DerivationError> {
        let text = std::fs::read_to_string(store.real_path(path)).unwrap();
        Derivation::parse(&text)
    };
    let mut cache = HashModuloCache::new(&store_dir);
    let mut kinds = BTreeMap::new();
    let mut with_inputs = 0;
    for file in &files {
        let full = format!("/nix/store/{file}");
        let text = std::fs::read_to_string(real_store.join(file)).unwrap();
        let drv = Derivation::parse(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            drv.to_aterm(),
            text,
            "{file} does not print back identically"
        );

        let path = store_dir.parse(&full).unwrap();
        let name = name_from_drv_path(&path).unwrap();
        assert_eq!(
            drv.drv_path(&store_dir, name).unwrap(),
            path,
            "drv path of {file}"
        );

        *kinds.entry(format!("{:?}", drv.kind())).or_insert(0) += 1;
        if !drv.input_drvs.is_empty() {
            with_inputs += 1;
        }
        if drv.kind() == DerivationKind::ContentAddressed {
            assert!(
                drv.compute_output_paths(
                    &store_dir,
                    name,
                    &mut |_: &str| -> Result<_, DerivationError> { unreachable!() }
                )
                .is_err()
            );
            continue;
        }
        let computed = drv
            .compute_output_paths(&store_dir, name, &mut |input: &str| {
                cache.get(input, &mut |p| load(p))
            })
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            computed,
            drv.output_paths(&store_dir).unwrap(),
            "output paths of {file}"
        );
    }
    eprintln!(
        "{} derivations: {kinds:?}, {with_inputs} with inputs",
        files.len()
    );
    assert_eq!(kinds.get("FixedOutput"), Some(&5), "{kinds:?}");
    assert_eq!(kinds.get("ContentAddressed"), Some(&1), "{kinds:?}");
    assert!(
        kinds.get("InputAddressed").copied().unwrap_or(0) >= 200,
        "{kinds:?}"
    );
    assert!(with_inputs >= 199, "{with_inputs} derivations with inputs");
}

#[test]
fn the_basic_derivation_replaces_input_derivations_by_their_outputs() {
    let store = NixStore::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("chain.nix"),
        r#"let mk = a: derivation ({ system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" "echo"]; } // a);
               dep = mk { name = "dep"; outputs = [ "out" "dev" ]; };
               src = builtins.toFile "s.txt" "x";
           in mk { name = "top"; d = dep.dev; s = src; }"#,
    )
    .unwrap();
    let top = String::from_utf8(
        store
            .command("nix-instantiate")
            .arg(dir.path().join("chain.nix"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let top = top.trim();
    let load =
        |p: &str| Derivation::parse(&std::fs::read_to_string(store.real_path(p)).unwrap()).unwrap();
    let drv = load(top);
    let basic = drv
        .to_basic(&mut |input: &str| -> Result<_, DerivationError> {
            Ok(load(input)
                .outputs
                .into_iter()
                .map(|(k, v)| (k, v.path))
                .collect())
        })
        .unwrap();
    let (dep_path, wanted) = drv.input_drvs.iter().next().unwrap();
    assert_eq!(wanted.iter().collect::<Vec<_>>(), vec!["dev"]);
    let dep_dev = load(dep_path).outputs["dev"].path.clone();
    assert!(basic.input_srcs.contains(&dep_dev));
    assert!(
        !basic
            .input_srcs
            .contains(&load(dep_path).outputs["out"].path),
        "only wanted outputs"
    );
    assert_eq!(basic.input_srcs.len(), 2);
    assert_eq!(basic.env, drv.env);
}
