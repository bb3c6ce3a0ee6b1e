//! Machines files (`/etc/nix/machines`, `NIX_REMOTE_SYSTEMS`): one build
//! machine per line, eight whitespace-separated fields, `-` or nothing for a
//! default: the store URI (`user@host` means `ssh://user@host`), systems,
//! SSH identity file, maximum jobs, speed factor, supported features,
//! mandatory features, and the host's public key, base64-encoded.
//!
//! Lines may also be separated by `;`; `#` starts a comment; `@file`
//! includes another file. Nix's dialect accepts a line with only a store
//! URI; Hydra's skips lines with fewer than three fields (with a warning
//! here) and adds mandatory features to the supported ones.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Nix,
    Hydra,
}

/// A build machine.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    /// `ssh://user@host`, `ssh://host?remote-store=…`, `localhost`, …
    pub store_uri: String,
    pub systems: Vec<String>,
    pub ssh_key: Option<String>,
    pub max_jobs: u32,
    pub speed_factor: f64,
    pub supported_features: BTreeSet<String>,
    pub mandatory_features: BTreeSet<String>,
    /// The host key line (`ssh-ed25519 AAAA…`), decoded from base64.
    pub host_key: Option<String>,
}

impl Machine {
    /// Whether this machine may run a step for `system` needing `required`
    /// features: it has every required feature, and every one of its
    /// mandatory features is required.
    pub fn supports(&self, system: &str, required: &BTreeSet<String>) -> bool {
        (self.systems.iter().any(|s| s == system) || system == "builtin")
            && required
                .iter()
                .all(|f| self.supported_features.contains(f) || self.mandatory_features.contains(f))
            && self.mandatory_features.iter().all(|f| required.contains(f))
    }

    /// The host part of an `ssh://` store URI (`user@host`), if it is one.
    pub fn ssh_host(&self) -> Option<&str> {
        let rest = self.store_uri.strip_prefix("ssh://")?;
        Some(rest.split_once('?').map_or(rest, |(h, _)| h))
    }

    /// `?remote-store=…` of an `ssh://` URI.
    pub fn remote_store(&self) -> Option<String> {
        let (_, query) = self.store_uri.split_once('?')?;
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == "remote-store").then(|| percent_decode(v))
        })
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}:{line}: {message}")]
pub struct MachinesError {
    pub source_name: String,
    pub line: usize,
    pub message: String,
}

/// Machines and what was noticed while reading them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Machines {
    pub machines: Vec<Machine>,
    pub warnings: Vec<String>,
}

/// How machines files are read: the dialect, the local system (default for
/// field 2), and how `@file` includes are read.
#[derive(Clone, Debug)]
pub struct ParseOptions {
    pub dialect: Dialect,
    pub local_system: String,
}

/// Parses machines text; `source_name` names it in errors and `@file`
/// paths are read relative to the working directory, as Nix does.
pub fn parse(
    text: &str,
    source_name: &str,
    options: &ParseOptions,
) -> Result<Machines, MachinesError> {
    let mut out = Machines::default();
    parse_into(text, source_name, options, &mut out, 0)?;
    Ok(out)
}

/// Reads machines files; a missing file is skipped, one that cannot be
/// read is an error (the caller keeps what it had rather than no machine).
pub fn read_files(files: &[PathBuf], options: &ParseOptions) -> Result<Machines, MachinesError> {
    let mut out = Machines::default();
    for file in files {
        if let Some(text) = read_optional(file)? {
            parse_into(&text, &file.display().to_string(), options, &mut out, 0)?;
        }
    }
    Ok(out)
}

/// A file's text, read as bytes as Nix does: bytes that are not UTF-8
/// become U+FFFD, harmless in comments and refused in fields.
fn read_optional(file: &Path) -> Result<Option<String>, MachinesError> {
    match std::fs::read(file) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(MachinesError {
            source_name: file.display().to_string(),
            line: 0,
            message: format!("cannot read the file: {e}"),
        }),
    }
}

fn parse_into(
    text: &str,
    source_name: &str,
    options: &ParseOptions,
    out: &mut Machines,
    depth: usize,
) -> Result<(), MachinesError> {
    for (index, physical) in text.split('\n').enumerate() {
        let line_no = index + 1;
        let error = |message: String| MachinesError {
            source_name: source_name.to_string(),
            line: line_no,
            message,
        };
        let without_comment = physical.split('#').next().unwrap_or_default();
        for line in without_comment.split(';') {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(include) = line.strip_prefix('@') {
                if depth >= 16 {
                    return Err(error("machines files include each other too deeply".into()));
                }
                let path = PathBuf::from(include.trim());
                if let Some(text) = read_optional(&path)? {
                    parse_into(&text, &path.display().to_string(), options, out, depth + 1)?;
                }
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let Some((i, _)) = fields
                .iter()
                .enumerate()
                .find(|(_, f)| f.chars().any(|c| c == '\u{FFFD}' || c.is_control()))
            {
                return Err(error(format!(
                    "field {} holds bytes that are not text (not UTF-8, or control characters such as NUL)",
                    i + 1
                )));
            }
            if options.dialect == Dialect::Hydra && fields.len() < 3 {
                out.warnings.push(format!(
                    "{source_name}:{line_no}: skipped: Hydra needs at least three fields"
                ));
                continue;
            }
            if fields.len() > 8 {
                return Err(error(format!(
                    "{} fields where at most 8 are allowed",
                    fields.len()
                )));
            }
            let field = |i: usize| {
                fields
                    .get(i)
                    .copied()
                    .filter(|f| !f.is_empty() && *f != "-")
            };
            let list = |i: usize| -> BTreeSet<String> {
                field(i)
                    .map(|f| {
                        f.split(',')
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let Some(uri) = field(0) else {
                return Err(error("the store URI is missing".into()));
            };
            let store_uri = if uri.contains("://")
                || uri.contains('/')
                || ["auto", "daemon", "local", "localhost"].contains(&uri)
                || uri.starts_with('?')
            {
                uri.to_string()
            } else {
                format!("ssh://{uri}")
            };
            let systems = match field(1) {
                Some(s) => s
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
                None => vec![options.local_system.clone()],
            };
            let max_jobs = match field(3) {
                Some(n) => n
                    .parse::<u32>()
                    .map_err(|_| error(format!("maximum jobs `{n}` is not a whole number")))?,
                None => 1,
            };
            let speed_factor = match field(4) {
                Some(n) => {
                    let v = n
                        .parse::<f64>()
                        .map_err(|_| error(format!("speed factor `{n}` is not a number")))?;
                    if !(v.is_finite() && v >= 0.0) {
                        return Err(error(format!(
                            "speed factor `{n}` must be a non-negative number"
                        )));
                    }
                    v
                }
                None => 1.0,
            };
            let mandatory = list(6);
            let mut supported = list(5);
            if options.dialect == Dialect::Hydra {
                supported.extend(mandatory.iter().cloned());
            }
            let host_key = match field(7) {
                Some(b64) => {
                    let decoded = BASE64
                        .decode(b64)
                        .map_err(|_| error("the host key (field 8) is not valid base64".into()))?;
                    let text = String::from_utf8(decoded).map_err(|_| {
                        error("the host key (field 8) does not decode to text".into())
                    })?;
                    Some(text.trim().to_string())
                }
                None => None,
            };
            out.machines.push(Machine {
                store_uri,
                systems,
                ssh_key: field(2).map(String::from),
                max_jobs,
                speed_factor,
                supported_features: supported,
                mandatory_features: mandatory,
                host_key,
            });
        }
    }
    Ok(())
}

/// Writes machines in the file format (for tests and tools).
pub fn to_text(machines: &[Machine]) -> String {
    let mut s = String::new();
    let or_dash = |v: String| if v.is_empty() { "-".to_string() } else { v };
    for m in machines {
        let join = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(",");
        s.push_str(&format!(
            "{} {} {} {} {} {} {} {}\n",
            m.store_uri,
            or_dash(m.systems.join(",")),
            m.ssh_key.clone().unwrap_or_else(|| "-".into()),
            m.max_jobs,
            m.speed_factor,
            or_dash(join(&m.supported_features)),
            or_dash(join(&m.mandatory_features)),
            m.host_key
                .as_ref()
                .map(|k| BASE64.encode(k))
                .unwrap_or_else(|| "-".into()),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dialect: Dialect) -> ParseOptions {
        ParseOptions {
            dialect,
            local_system: "x86_64-linux".into(),
        }
    }

    #[test]
    fn files_are_read_as_bytes_and_fields_must_be_text() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("machines");
        // A Latin-1 byte in a comment is harmless.
        std::fs::write(&file, b"# caf\xe9\nlocalhost x86_64-linux - 2 1\n").unwrap_or_default();
        let m = read_files(std::slice::from_ref(&file), &opts(Dialect::Hydra))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.machines.len(), 1);
        // In a field, it is an error naming the line, not an empty list.
        std::fs::write(
            &file,
            b"localhost x86_64-linux - 2 1\nbuild\xffer x86_64-linux - 1 1\n",
        )
        .unwrap_or_default();
        let e = read_files(std::slice::from_ref(&file), &opts(Dialect::Hydra))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(format!(
                "{}:2: field 1 holds bytes that are not text (not UTF-8, or control characters such as NUL)",
                file.display()
            ))
            .as_deref()
        );
        // A NUL in a host name is refused when the file is read.
        std::fs::write(&file, b"host\x00name x86_64-linux - 1 1\n").unwrap_or_default();
        assert!(read_files(std::slice::from_ref(&file), &opts(Dialect::Hydra)).is_err());
        // An unreadable file is an error too (a directory here).
        let e = read_files(&[dir.path().to_path_buf()], &opts(Dialect::Hydra));
        assert!(e.is_err());
    }

    #[test]
    fn every_field_and_default() {
        let text = "nix@builder1 x86_64-linux,i686-linux /var/lib/hydra/id_ed25519 8 2 kvm,big-parallel - c3NoLWVkMjU1MTkgQUFBQS4uLgo=\n\
                    # a comment\n\
                    ssh://b2?remote-store=/tmp/x%20y - - - 1.5 - benchmark ; localhost\n";
        let m = parse(text, "machines", &opts(Dialect::Nix))
            .unwrap()
            .machines;
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].store_uri, "ssh://nix@builder1");
        assert_eq!(m[0].ssh_host(), Some("nix@builder1"));
        assert_eq!(m[0].systems, vec!["x86_64-linux", "i686-linux"]);
        assert_eq!(m[0].ssh_key.as_deref(), Some("/var/lib/hydra/id_ed25519"));
        assert_eq!((m[0].max_jobs, m[0].speed_factor), (8, 2.0));
        assert_eq!(m[0].host_key.as_deref(), Some("ssh-ed25519 AAAA..."));
        assert_eq!(m[1].systems, vec!["x86_64-linux"]);
        assert_eq!(m[1].remote_store().as_deref(), Some("/tmp/x y"));
        assert_eq!(m[1].speed_factor, 1.5);
        assert!(m[1].mandatory_features.contains("benchmark"));
        assert!(!m[1].supported_features.contains("benchmark"));
        assert_eq!(m[2].store_uri, "localhost");
        assert_eq!(m[2].max_jobs, 1);
    }

    #[test]
    fn feature_matching() {
        let m = parse(
            "h x86_64-linux - 1 1 kvm benchmark",
            "m",
            &opts(Dialect::Nix),
        )
        .unwrap()
        .machines;
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert!(m[0].supports("x86_64-linux", &set(&["benchmark"])));
        assert!(m[0].supports("x86_64-linux", &set(&["benchmark", "kvm"])));
        assert!(
            !m[0].supports("x86_64-linux", &set(&["kvm"])),
            "mandatory features only for steps needing them"
        );
        assert!(!m[0].supports("aarch64-linux", &set(&["benchmark"])));
    }

    #[test]
    fn dialects_differ_on_short_lines_and_mandatory_features() {
        let text = "host-only\nh x86_64-linux - 1 1 - big\n";
        let nix = parse(text, "m", &opts(Dialect::Nix)).unwrap();
        assert_eq!(nix.machines.len(), 2);
        let hydra = parse(text, "m", &opts(Dialect::Hydra)).unwrap();
        assert_eq!(hydra.machines.len(), 1);
        assert_eq!(hydra.warnings.len(), 1);
        assert!(hydra.machines[0].supported_features.contains("big"));
    }

    #[test]
    fn includes_and_missing_files() {
        let dir = std::env::temp_dir().join(format!("hydra-machines-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let inner = dir.join("inner");
        std::fs::write(&inner, "included x86_64-linux - 2\n").unwrap();
        let text = format!(
            "first\n@{}\n@{}\nlast",
            inner.display(),
            dir.join("missing").display()
        );
        let m = parse(&text, "main", &opts(Dialect::Nix)).unwrap().machines;
        let names: Vec<&str> = m.iter().map(|m| m.store_uri.as_str()).collect();
        assert_eq!(names, vec!["ssh://first", "ssh://included", "ssh://last"]);
        assert_eq!(m[1].max_jobs, 2);
        let files = read_files(&[dir.join("missing"), inner.clone()], &opts(Dialect::Nix)).unwrap();
        assert_eq!(files.machines.len(), 1);
        std::fs::write(&inner, "bad x86_64-linux - lots\n").unwrap();
        let err = read_files(std::slice::from_ref(&inner), &opts(Dialect::Nix))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&format!("{}:1:", inner.display())), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_name_the_line() {
        let e = |t: &str| {
            parse(t, "machines", &opts(Dialect::Nix))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            e("a\nb x - many"),
            "machines:2: maximum jobs `many` is not a whole number"
        );
        assert_eq!(
            e("b x - 1 fast"),
            "machines:1: speed factor `fast` is not a number"
        );
        assert_eq!(
            e("b x - 1 1 - - !!!"),
            "machines:1: the host key (field 8) is not valid base64"
        );
        assert_eq!(
            e("b x - 1 1 - - - extra"),
            "machines:1: 9 fields where at most 8 are allowed"
        );
    }
}
