//! The reader must turn any input into a tree or an error, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use proptest::prelude::*;

fn config_like() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "<",
        ">",
        "</",
        "/>",
        "\"",
        "'",
        "=",
        " ",
        "\t",
        "\n",
        "\r\n",
        "#",
        "\\",
        "\\\n",
        "/*",
        "*/",
        "<<",
        "EOF",
        "key",
        "block",
        "name",
        "0",
        "include",
        "includeoptional",
        "*",
        "{a,b}",
        "[x]",
    ]);
    prop::collection::vec(atoms, 0..60).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(text in config_like()) {
        let dir = tempfile::tempdir().unwrap();
        let _ = hydra_config::general::parse_str(&dir.path().join("hydra.conf"), &text);
        let _ = hydra_config::Config::load_str(&dir.path().join("hydra.conf"), &text);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hydra.conf");
        std::fs::write(&path, &bytes).unwrap();
        let _ = hydra_config::general::parse_file(Path::new(&path));
    }
}
