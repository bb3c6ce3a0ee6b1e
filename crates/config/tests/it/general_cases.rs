//! The hydra.conf corpus in `tests/cases`: every case is read by our parser
//! and compared with its expected tree (`expect.json`) or error (`error`);
//! the oracle test reads every case with Perl's Config::General itself.
//!
//! A case is a directory holding `hydra.conf` and the files it includes.
//! `@DIR@` in any file stands for the absolute path the case is copied to.
//! A `deviation` file marks a case where we deliberately refuse input that
//! Config::General silently accepts; `no-oracle` in it means Perl cannot be
//! run on the case at all (an include cycle makes it recurse without end).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use hydra_config::general::parse_file;

fn case_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Copies a case into a fresh directory, replacing `@DIR@`.
fn materialize(case: &Path) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap().to_string();
    copy_tree(case, tmp.path(), &dir);
    tmp
}

fn copy_tree(from: &Path, to: &Path, dir: &str) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target, dir);
        } else {
            let bytes = std::fs::read(entry.path()).unwrap();
            let text = String::from_utf8(bytes).unwrap().replace("@DIR@", dir);
            std::fs::write(&target, text).unwrap();
        }
    }
}

fn read_opt(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

#[test]
fn the_corpus_has_at_least_forty_cases() {
    let dirs = case_dirs();
    assert!(dirs.len() >= 40, "only {} cases", dirs.len());
    let with_includes = dirs
        .iter()
        .filter(|d| {
            std::fs::read_to_string(d.join("hydra.conf"))
                .unwrap()
                .to_lowercase()
                .contains("include")
        })
        .count();
    assert!(
        with_includes >= 10,
        "only {with_includes} cases use includes"
    );
}

#[test]
fn every_case_reads_as_expected() {
    let mut failures = Vec::new();
    for case in case_dirs() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let tmp = materialize(&case);
        let result = parse_file(&tmp.path().join("hydra.conf"));
        match (
            read_opt(&tmp.path().join("expect.json")),
            read_opt(&tmp.path().join("error")),
        ) {
            (Some(expected), None) => {
                let expected: serde_json::Value = serde_json::from_str(&expected).unwrap();
                match result {
                    Ok(parsed) if parsed.tree.to_json() == expected => {}
                    Ok(parsed) => failures.push(format!(
                        "{name}: got {}\nexpected {}",
                        parsed.tree.to_json(),
                        expected
                    )),
                    Err(e) => failures.push(format!("{name}: unexpected error: {e}")),
                }
            }
            (None, Some(expected_error)) => match result {
                Ok(parsed) => failures.push(format!(
                    "{name}: expected an error, got {}",
                    parsed.tree.to_json()
                )),
                Err(e) => {
                    let message = e.to_string();
                    if !message.contains(expected_error.trim()) {
                        failures.push(format!(
                            "{name}: error `{message}` does not contain `{}`",
                            expected_error.trim()
                        ));
                    }
                }
            },
            _ => failures.push(format!(
                "{name}: needs exactly one of expect.json and error"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

fn oracle_available() -> Result<(), String> {
    let out = Command::new("perl")
        .args(["-MConfig::General", "-MJSON::PP", "-e", "1"])
        .output()
        .map_err(|e| format!("cannot run perl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Perl's Config::General is the reference: it must produce exactly the
/// expected tree for every case we accept, refuse every case we refuse (but
/// for documented deviations, which it must accept).
#[test]
fn config_general_agrees_on_every_case() {
    if let Err(e) = oracle_available() {
        panic!(
            "the oracle needs perl with Config::General (Debian: libconfig-general-perl); \
             the README's test command installs it: {e}"
        );
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config_general_oracle.pl");
    let mut failures = Vec::new();
    let mut compared = 0;
    for case in case_dirs() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let deviation = read_opt(&case.join("deviation"));
        if deviation.as_deref().map(str::trim) == Some("no-oracle") {
            continue;
        }
        let tmp = materialize(&case);
        let out = Command::new("perl")
            .arg(&script)
            .arg(tmp.path().join("hydra.conf"))
            .current_dir(tmp.path())
            .output()
            .unwrap();
        let perl_tree: Option<serde_json::Value> = out
            .status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap());
        let ours = parse_file(&tmp.path().join("hydra.conf"));
        compared += 1;
        match (&perl_tree, &ours, deviation.is_some()) {
            (Some(p), Ok(o), false) if *p == o.tree.to_json() => {}
            (None, Err(_), false) => {}
            (Some(_), Err(_), true) => {}
            _ => failures.push(format!(
                "{name}: Config::General {} / ours {}",
                match &perl_tree {
                    Some(t) => t.to_string(),
                    None => format!("failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
                },
                match &ours {
                    Ok(p) => p.tree.to_json().to_string(),
                    Err(e) => format!("failed: {e}"),
                }
            )),
        }
    }
    assert!(compared >= 40);
    assert!(
        failures.is_empty(),
        "{} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
