//! "Reproduce locally": the shell script that fetches a build's inputs as
//! its evaluation had them and builds its job with `nix-build`, or the
//! `nix build` command of a flake evaluation.

/// An input of the evaluation, as the script fetches or passes it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct Input {
    pub name: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub uri: Option<String>,
    pub revision: Option<String>,
    pub value: Option<String>,
}

/// What a build is reproduced from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Build {
    pub id: i32,
    pub job: String,
    /// `project:jobset:job`.
    pub full_name: String,
    pub eval: i32,
    pub flake: Option<String>,
    pub nix_expr_input: Option<String>,
    pub nix_expr_path: Option<String>,
    pub inputs: Vec<Input>,
}

/// `text` quoted for a POSIX shell.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// `text` as a Nix string literal.
fn nix_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '$' => out.push_str("\\$"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The command of a flake evaluation.
pub(crate) fn flake_command(build: &Build) -> Option<String> {
    let flake = build.flake.as_deref()?;
    Some(format!(
        "nix build {}",
        quote(&format!("{flake}#hydraJobs.{}", build.job))
    ))
}

/// The script for a legacy evaluation: each input fetched into a
/// directory of its name (or passed as a value), then `nix-build`.
pub(crate) fn script(build: &Build) -> String {
    let mut s = String::new();
    s.push_str("#! /usr/bin/env bash\n");
    s.push_str(&format!(
        "# Reproduces build {} of job {} (evaluation {}) from the inputs of\n\
         # that evaluation. Extra arguments go to nix-build.\n",
        build.id, build.full_name, build.eval
    ));
    s.push_str("set -euo pipefail\n\n");
    s.push_str(&format!(
        "work=\"${{HYDRA_REPRODUCE_DIR:-${{TMPDIR:-/tmp}}/hydra-reproduce-{}}}\"\n\
         mkdir -p \"$work\"\ncd \"$work\"\nargs=()\n\n",
        build.id
    ));
    for input in &build.inputs {
        let name = &input.name;
        let value = input.value.clone().unwrap_or_default();
        let uri = input.uri.clone().unwrap_or_default();
        let revision = input.revision.clone().unwrap_or_default();
        s.push_str(&format!("# Input {name} ({})\n", input.kind));
        match input.kind.as_str() {
            "string" => s.push_str(&format!(
                "args+=(--argstr {} {})\n",
                quote(name),
                quote(&value)
            )),
            "boolean" | "nix" => s.push_str(&format!(
                "args+=(--arg {} {})\n",
                quote(name),
                quote(&value)
            )),
            "git" => {
                s.push_str(&format!(
                    "[ -d {dir} ] || git clone -q {uri} {dir}\n\
                     git -C {dir} fetch -q origin {rev} 2>/dev/null || true\n\
                     git -C {dir} checkout -q {rev}\n",
                    dir = quote(name),
                    uri = quote(&uri),
                    rev = quote(&revision),
                ));
                s.push_str(&input_arg(name, &revision));
            }
            "hg" => {
                s.push_str(&format!(
                    "[ -d {dir} ] || hg clone -q {uri} {dir}\nhg -R {dir} update -q -r {rev}\n",
                    dir = quote(name),
                    uri = quote(&uri),
                    rev = quote(&revision),
                ));
                s.push_str(&input_arg(name, &revision));
            }
            "path" => {
                s.push_str(&format!(
                    "[ -e {dir} ] || cp -r {uri} {dir}\n",
                    dir = quote(name),
                    uri = quote(&uri),
                ));
                s.push_str(&input_arg(name, ""));
            }
            other => s.push_str(&format!(
                "echo {} >&2\nexit 1\n",
                quote(&format!(
                    "input {name} is of type {other}, which this script cannot fetch"
                ))
            )),
        }
        s.push('\n');
    }
    let input = build.nix_expr_input.clone().unwrap_or_default();
    let path = build.nix_expr_path.clone().unwrap_or_default();
    s.push_str(&format!(
        "exec nix-build {} -A {} \"${{args[@]}}\" \"$@\"\n",
        quote(&format!("./{input}/{path}")),
        quote(&build.job)
    ));
    s
}

/// The `--arg` that passes a fetched input as Hydra does: its path and,
/// when known, its revision.
fn input_arg(name: &str, revision: &str) -> String {
    let mut attrs = format!("{{ outPath = ./{name}; ");
    if !revision.is_empty() {
        let short: String = revision.chars().take(7).collect();
        attrs.push_str(&format!(
            "rev = {}; shortRev = {}; ",
            nix_string(revision),
            nix_string(&short)
        ));
    }
    attrs.push('}');
    format!("args+=(--arg {} {})\n", quote(name), quote(&attrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(inputs: Vec<Input>) -> Build {
        Build {
            id: 7,
            job: "hello".into(),
            full_name: "p:j:hello".into(),
            eval: 3,
            flake: None,
            nix_expr_input: Some("src".into()),
            nix_expr_path: Some("release.nix".into()),
            inputs,
        }
    }

    fn input(name: &str, kind: &str, uri: &str, revision: &str, value: &str) -> Input {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Input {
            name: name.into(),
            kind: kind.into(),
            uri: some(uri),
            revision: some(revision),
            value: some(value),
        }
    }

    #[test]
    fn the_script_fetches_inputs_at_their_revisions_and_builds_the_job() {
        let s = script(&build(vec![
            input(
                "src",
                "git",
                "https://example.org/r.git",
                "0123456789abcdef",
                "",
            ),
            input("greeting", "string", "", "", "it's \"hi\""),
            input("debug", "boolean", "", "", "true"),
        ]));
        assert!(s.starts_with("#! /usr/bin/env bash\n"));
        assert!(s.contains("git clone -q 'https://example.org/r.git' 'src'"));
        assert!(s.contains("git -C 'src' checkout -q '0123456789abcdef'"));
        assert!(s.contains(
            r#"args+=(--arg 'src' '{ outPath = ./src; rev = "0123456789abcdef"; shortRev = "0123456"; }')"#
        ));
        assert!(
            s.contains(r#"args+=(--argstr 'greeting' 'it'\''s "hi"')"#),
            "{s}"
        );
        assert!(s.contains("args+=(--arg 'debug' 'true')"));
        assert!(
            s.ends_with("exec nix-build './src/release.nix' -A 'hello' \"${args[@]}\" \"$@\"\n")
        );
    }

    #[test]
    fn inputs_it_cannot_fetch_stop_the_script_with_the_reason() {
        let s = script(&build(vec![input("dep", "build", "", "", "12")]));
        assert!(s.contains("input dep is of type build, which this script cannot fetch"));
        assert!(s.contains("exit 1"));
    }

    #[test]
    fn a_flake_evaluation_is_one_command() {
        let mut b = build(Vec::new());
        assert_eq!(flake_command(&b), None);
        b.flake = Some("github:o/r/abc".into());
        assert_eq!(
            flake_command(&b).as_deref(),
            Some("nix build 'github:o/r/abc#hydraJobs.hello'")
        );
    }

    #[test]
    fn nix_strings_escape_what_nix_reads() {
        assert_eq!(nix_string(r#"a"b\c${d}"#), r#""a\"b\\c\${d}""#);
    }
}
