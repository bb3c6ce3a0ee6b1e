//! What a build's outputs say about themselves (`$out/nix-support/…`):
//! build products, metrics, the release name and the `failed` marker, read
//! from the outputs' NARs as they stream by.

use std::collections::BTreeMap;

use hydra_nix::nar::{Member, Scan, ScanOptions};

pub(crate) const PRODUCTS_FILE: &[u8] = b"nix-support/hydra-build-products";
pub(crate) const METRICS_FILE: &[u8] = b"nix-support/hydra-metrics";
pub(crate) const RELEASE_NAME_FILE: &[u8] = b"nix-support/hydra-release-name";
pub(crate) const FAILED_FILE: &[u8] = b"nix-support/failed";

/// What to collect from an output's NAR.
pub(crate) fn scan_options() -> ScanOptions {
    ScanOptions {
        extract: vec![
            PRODUCTS_FILE.to_vec(),
            METRICS_FILE.to_vec(),
            RELEASE_NAME_FILE.to_vec(),
        ],
        max_extract: 16 << 20,
        listing: false,
        members: true,
    }
}

/// One output of a build, as scanned.
#[derive(Clone, Debug)]
pub(crate) struct OutputScan {
    pub name: String,
    pub path: String,
    pub nar_size: u64,
    pub scan: Scan,
}

pub(crate) use hydra_db::products::{Metric, Product};

/// Everything the outputs say.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Analysis {
    pub products: Vec<Product>,
    pub metrics: BTreeMap<String, Metric>,
    pub release_name: Option<String>,
    /// `nix-support/failed` is in some output: status 6.
    pub failed: bool,
    /// Sum of the outputs' NAR sizes.
    pub size: u64,
}

fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// One line of `hydra-build-products`: type, subtype, path (maybe quoted),
/// default path.
fn parse_product_line(line: &str) -> Option<(String, String, String, Option<String>)> {
    let line = line.trim();
    let (kind, rest) = line.split_once(char::is_whitespace)?;
    let rest = rest.trim_start();
    let (subtype, rest) = rest.split_once(char::is_whitespace)?;
    let rest = rest.trim_start();
    if !is_word(kind) || !is_word(subtype) {
        return None;
    }
    let (path, rest) = if let Some(quoted) = rest.strip_prefix('"') {
        let end = quoted.find('"')?;
        (&quoted[..end], &quoted[end + 1..])
    } else {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        (&rest[..end], &rest[end..])
    };
    let bad = |s: &str| s.contains(['<', '>', '"']);
    if path.is_empty() || bad(path) || (!rest.is_empty() && !rest.starts_with(char::is_whitespace))
    {
        return None;
    }
    let rest = rest.trim();
    let default_path = match rest {
        "" => None,
        d if d.contains(char::is_whitespace) || bad(d) => return None,
        d => Some(d.to_string()),
    };
    Some((kind.into(), subtype.into(), path.into(), default_path))
}

/// `path` with `.` and `..` resolved (no symlinks followed), or `None` if
/// it is not absolute.
fn canonical(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

fn valid_name(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".@:_ -".contains(&b))
}

fn member<'a>(outputs: &'a [OutputScan], path: &str) -> Option<&'a Member> {
    outputs.iter().find_map(|o| {
        if path == o.path {
            o.scan.members.get(&Vec::new())
        } else {
            let rest = path.strip_prefix(&o.path)?.strip_prefix('/')?;
            o.scan.members.get(rest.as_bytes())
        }
    })
}

/// Reads products, metrics, release name and the failure marker from the
/// scanned outputs, by Hydra's rules.
pub(crate) fn analyse(outputs: &[OutputScan]) -> Analysis {
    let mut analysis = Analysis {
        size: outputs.iter().map(|o| o.nar_size).sum(),
        ..Default::default()
    };
    // Outputs in name order (`bin` before `out`), as Hydra reads them, so
    // products are numbered the same whatever order the outputs came in.
    let mut by_name: Vec<&OutputScan> = outputs.iter().collect();
    by_name.sort_by(|a, b| a.name.cmp(&b.name));
    let mut has_products_file = false;
    for output in &by_name {
        let extracted = &output.scan.extracted;
        if let Some(text) = extracted.get(PRODUCTS_FILE) {
            has_products_file = true;
            for line in String::from_utf8_lossy(text).lines() {
                let Some((kind, subtype, path, default_path)) = parse_product_line(line) else {
                    continue;
                };
                let Some(path) = canonical(&path) else {
                    continue;
                };
                let Some(found) = member(outputs, &path) else {
                    continue;
                };
                let is_output_root = outputs.iter().any(|o| o.path == path);
                let base = hydra_nix::store_path::base_name(&path);
                let name = if is_output_root || !valid_name(base) {
                    String::new()
                } else {
                    base.to_string()
                };
                let (file_size, sha256) = match found {
                    Member::Regular { size, sha256, .. } => {
                        (Some(*size as i64), Some(sha256.to_base16()))
                    }
                    _ => (None, None),
                };
                analysis.products.push(Product {
                    kind,
                    subtype,
                    file_size,
                    sha256,
                    path,
                    name,
                    default_path,
                });
            }
        }
        if let Some(text) = extracted.get(METRICS_FILE) {
            for line in String::from_utf8_lossy(text).lines() {
                let mut fields = line.split_whitespace();
                let (Some(name), Some(value)) = (fields.next(), fields.next()) else {
                    continue;
                };
                if !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                {
                    continue;
                }
                let Ok(value) = value.parse::<f64>() else {
                    continue;
                };
                let unit = fields.next().filter(|u| {
                    u.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._%-".contains(&b))
                });
                analysis.metrics.insert(
                    name.to_string(),
                    Metric {
                        value,
                        unit: unit.map(String::from),
                    },
                );
            }
        }
        if let Some(text) = extracted.get(RELEASE_NAME_FILE) {
            let name = String::from_utf8_lossy(text).trim().to_string();
            if !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".@:_-".contains(&b))
            {
                analysis.release_name = Some(name);
            }
        }
        if matches!(
            output.scan.members.get(FAILED_FILE),
            Some(Member::Regular { .. })
        ) {
            analysis.failed = true;
        }
    }
    if !has_products_file {
        for output in &by_name {
            if !matches!(
                output.scan.members.get(&Vec::new()),
                Some(Member::Directory)
            ) {
                continue;
            }
            let base = hydra_nix::store_path::base_name(&output.path);
            analysis.products.push(Product {
                kind: "nix-build".into(),
                subtype: if output.name == "out" {
                    String::new()
                } else {
                    output.name.clone()
                },
                file_size: None,
                sha256: None,
                path: output.path.clone(),
                name: base.get(33..).unwrap_or("").to_string(),
                default_path: None,
            });
        }
    }
    analysis
}

#[cfg(test)]
mod tests {
    use super::*;
    use hydra_nix::nar::{Node, write_node};

    async fn directory_output(name: &str, path: &str) -> OutputScan {
        let mut nar = Vec::new();
        write_node(&Node::Directory(BTreeMap::new()), &mut nar).unwrap_or_default();
        let scan = hydra_nix::nar::scan(&nar[..], None, &scan_options())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        OutputScan {
            name: name.into(),
            path: path.into(),
            nar_size: nar.len() as u64,
            scan,
        }
    }

    #[tokio::test]
    async fn outputs_without_declared_products_are_products_in_output_name_order() {
        let out = directory_output("out", "/nix/store/00000000000000000000000000000000-x").await;
        let bin =
            directory_output("bin", "/nix/store/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-x-bin").await;
        for outputs in [vec![out.clone(), bin.clone()], vec![bin, out]] {
            let products = analyse(&outputs).products;
            let subtypes: Vec<&str> = products.iter().map(|p| p.subtype.as_str()).collect();
            assert_eq!(subtypes, ["bin", ""]);
            assert_eq!(products[0].name, "x-bin");
            assert_eq!(products[1].kind, "nix-build");
        }
    }

    #[test]
    fn product_lines() {
        assert_eq!(
            parse_product_line("file source-dist /nix/store/x-a/a.tar.gz"),
            Some((
                "file".into(),
                "source-dist".into(),
                "/nix/store/x-a/a.tar.gz".into(),
                None
            ))
        );
        assert_eq!(
            parse_product_line("doc manual \"/nix/store/x-a/my manual\" index.html"),
            Some((
                "doc".into(),
                "manual".into(),
                "/nix/store/x-a/my manual".into(),
                Some("index.html".into())
            ))
        );
        assert_eq!(parse_product_line("file"), None);
        assert_eq!(parse_product_line("fi/le doc /x"), None);
        assert_eq!(parse_product_line("file doc /x<y"), None);
        assert_eq!(parse_product_line("file doc \"/x"), None);
        assert_eq!(parse_product_line("file doc /x a b"), None);
    }

    #[test]
    fn paths_are_canonical() {
        assert_eq!(
            canonical("/nix/store/a/./b/../c//d").as_deref(),
            Some("/nix/store/a/c/d")
        );
        assert_eq!(canonical("relative"), None);
        assert!(valid_name("my file-1.0@x:y"));
        assert!(!valid_name("tab\there"));
    }
}
