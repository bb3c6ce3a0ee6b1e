//! A reader for `hydra.conf` that gives the same tree as Perl's
//! `Config::General` with the options Hydra passes to it
//! (`-UseApacheInclude`, `-IncludeAgain`, `-IncludeRelative`), plus
//! `-IncludeGlob` so that `Include conf.d/*.conf` works.
//!
//! Like the Perl module it works in two phases. The *read* phase goes through
//! each file line by line, removes comments, joins continued lines, collects
//! here-documents, expands `<block/>` and splices included files in place; it
//! yields one flat list of items, so a block may open in one file and close in
//! another. The *parse* phase turns the items into a tree: `key value` pairs,
//! `<block>` and `<block name>` sections, and repeated keys or blocks become
//! lists.
//!
//! Where `Config::General` silently drops text (an unterminated here-document
//! or C comment, a continuation at the end of a file) or recurses forever (an
//! include cycle), this reader stops with an error naming the file and line
//! instead: a configuration that loses its tail without a word is worse than
//! one that refuses to load.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;

/// Separates a here-document's name from its body inside an item. NUL cannot
/// occur in an item: files containing it are rejected.
const HEREDOC_SEP: char = '\0';

/// How deep includes may nest before we call it a cycle.
const MAX_INCLUDE_DEPTH: usize = 64;

/// A place in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub file: Arc<Path>,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A configuration error. The message always says where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{origin}: {message}")]
    Syntax { origin: Origin, message: String },
    #[error("cannot read configuration file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Value { origin: Origin, message: String },
}

impl ConfigError {
    fn syntax(origin: &Origin, message: impl Into<String>) -> Self {
        ConfigError::Syntax {
            origin: origin.clone(),
            message: message.into(),
        }
    }
}

/// Something the reader noticed that `Config::General` accepts but that is
/// probably a mistake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub origin: Origin,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

/// A value in the tree.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `key value`; `None` for a key written without a value.
    Scalar {
        value: Option<String>,
        origin: Origin,
    },
    /// `<key> … </key>`, or the outer level of `<key name> … </key>`.
    Block { tree: Tree, origin: Origin },
    /// A key or block that occurs more than once, in order. The elements are
    /// never lists themselves.
    List(Vec<Value>),
}

impl Value {
    /// Where this value (its first element, for a list) was written.
    pub fn origin(&self) -> Option<&Origin> {
        match self {
            Value::Scalar { origin, .. } | Value::Block { origin, .. } => Some(origin),
            Value::List(items) => items.first().and_then(Value::origin),
        }
    }

    /// The value as a list of its occurrences.
    pub fn occurrences(&self) -> Vec<&Value> {
        match self {
            Value::List(items) => items.iter().collect(),
            other => vec![other],
        }
    }

    /// The same shape as `JSON::PP` prints the Perl structure: hashes as
    /// objects, arrays as arrays, strings as strings, undef as null.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Scalar { value, .. } => match value {
                Some(s) => serde_json::Value::String(s.clone()),
                None => serde_json::Value::Null,
            },
            Value::Block { tree, .. } => tree.to_json(),
            Value::List(items) => {
                serde_json::Value::Array(items.iter().map(Value::to_json).collect())
            }
        }
    }
}

/// A level of the configuration: keys in the order they first appeared.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tree {
    entries: IndexMap<String, Value>,
}

impl Tree {
    /// The last value of `key`, trimmed and unquoted (`None` when unset,
    /// empty or only a block): how plugin blocks read their settings.
    pub fn text(&self, key: &str) -> Option<String> {
        self.get(key)?
            .occurrences()
            .into_iter()
            .rev()
            .find_map(|v| match v {
                Value::Scalar { value, .. } => Some(value.clone().unwrap_or_default()),
                _ => None,
            })
            .map(|s| s.trim().trim_matches('"').to_owned())
            .filter(|s| !s.is_empty())
    }

    /// The first block named `key`.
    pub fn block(&self, key: &str) -> Option<&Tree> {
        self.get(key)?
            .occurrences()
            .into_iter()
            .find_map(|v| match v {
                Value::Block { tree, .. } => Some(tree),
                _ => None,
            })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.entries.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds `other`'s keys, replacing keys that exist.
    pub(crate) fn merge(&mut self, other: Tree) {
        self.entries.extend(other.entries);
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.entries
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        )
    }
}

/// The result of reading a configuration: the tree, every file that was read
/// (in order, with repeats), and warnings.
#[derive(Clone, Debug, Default)]
pub struct Parsed {
    pub tree: Tree,
    pub files: Vec<PathBuf>,
    pub warnings: Vec<Warning>,
}

/// Reads a configuration file and everything it includes.
pub fn parse_file(path: &Path) -> Result<Parsed, ConfigError> {
    let path = absolute(path);
    let bytes = std::fs::read(&path).map_err(|source| ConfigError::Io {
        path: path.clone(),
        source,
    })?;
    parse_bytes(path, &bytes)
}

/// Reads configuration text as if it were the file `path` (which is used for
/// error messages and to resolve relative includes).
pub fn parse_str(path: &Path, text: &str) -> Result<Parsed, ConfigError> {
    parse_bytes(absolute(path), text.as_bytes())
}

fn parse_bytes(path: PathBuf, bytes: &[u8]) -> Result<Parsed, ConfigError> {
    let mut reader = Reader {
        items: Vec::new(),
        files: Vec::new(),
        warnings: Vec::new(),
        main_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    reader.read(&path, bytes, 0)?;
    let mut tree = Tree::default();
    let mut warnings = reader.warnings;
    parse_items(&reader.items, &mut tree, &mut warnings)?;
    Ok(Parsed {
        tree,
        files: reader.files,
        warnings,
    })
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

// ---------------------------------------------------------------------------
// Helpers with Perl's meaning.

/// Perl's `\s` on byte strings.
fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

fn trim_ws(s: &str) -> &str {
    s.trim_matches(is_ws)
}

fn trim_start_ws(s: &str) -> &str {
    s.trim_start_matches(is_ws)
}

fn trim_end_ws(s: &str) -> &str {
    s.trim_end_matches(is_ws)
}

/// Perl truthiness of a defined string: everything but "" and "0".
fn perl_true(s: &str) -> bool {
    !s.is_empty() && s != "0"
}

// ---------------------------------------------------------------------------
// Read phase.

#[derive(Clone, Debug)]
struct Item {
    text: String,
    origin: Origin,
}

struct Heredoc {
    name: String,
    end: String,
    lines: Vec<String>,
    origin: Origin,
}

struct Reader {
    items: Vec<Item>,
    files: Vec<PathBuf>,
    warnings: Vec<Warning>,
    /// The directory of the main file: the last place an include is looked
    /// for (`Config::General`'s `ConfigPath`).
    main_dir: PathBuf,
}

impl Reader {
    fn read(&mut self, path: &Path, bytes: &[u8], depth: usize) -> Result<(), ConfigError> {
        self.files.push(path.to_path_buf());
        let file: Arc<Path> = Arc::from(path);
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);

        let mut c_comment: Option<Origin> = None;
        let mut longline: Option<(String, Origin)> = None;
        let mut heredoc: Option<Heredoc> = None;

        let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        if bytes.ends_with(b"\n") || bytes.is_empty() {
            lines.pop();
        }
        for (idx, raw) in lines.into_iter().enumerate() {
            let origin = Origin {
                file: file.clone(),
                line: idx + 1,
            };
            if raw.contains(&0) {
                return Err(ConfigError::syntax(
                    &origin,
                    "NUL byte in configuration file",
                ));
            }
            let line = std::str::from_utf8(raw)
                .map_err(|_| ConfigError::syntax(&origin, "line is not valid UTF-8"))?;
            let mut line = line.to_string();

            if let Some(mut doc) = heredoc.take() {
                match heredoc_end(&line, &doc.end) {
                    Some(indent) => {
                        let mut text = format!("{} {}", doc.name, HEREDOC_SEP);
                        if indent.is_empty() {
                            text.push_str(&doc.lines.join("\n"));
                        } else {
                            for l in &doc.lines {
                                text.push_str(l.strip_prefix(indent.as_str()).unwrap_or(l));
                                text.push('\n');
                            }
                        }
                        self.items.push(Item {
                            text,
                            origin: doc.origin,
                        });
                    }
                    None => {
                        doc.lines.push(line);
                        heredoc = Some(doc);
                    }
                }
                continue;
            }

            // C comments.
            if let Some((start, end)) = inline_c_comment(&line) {
                line.replace_range(start..end, "");
            } else if trim_start_ws(&line).starts_with("/*") {
                if trim_end_ws(&line).ends_with("*/") {
                    c_comment = None;
                } else if c_comment.is_none() {
                    c_comment = Some(origin.clone());
                }
            } else if let Some(pos) = line.rfind("*/") {
                if c_comment.is_none() {
                    self.warnings.push(Warning {
                        origin: origin.clone(),
                        message: "found `*/` without a preceding `/*`".into(),
                    });
                }
                c_comment = None;
                line.replace_range(..pos + 2, "");
            }
            if c_comment.is_some() {
                continue;
            }

            // `#` comments, unless escaped as `\#`.
            if let Some(pos) = unescaped_hash(&line) {
                line.truncate(pos);
            }

            // A trailing backslash continues the line.
            if line.ends_with('\\') && !line.ends_with("\\\\") {
                line.pop();
                let part = trim_start_ws(&line);
                match longline.as_mut() {
                    Some((text, _)) => text.push_str(part),
                    None => longline = Some((part.to_string(), origin.clone())),
                }
                continue;
            }

            // `<block/>` is an empty block.
            if let Some((block, orig)) = empty_block(&line) {
                let name = match block.find(is_ws) {
                    Some(i) => block[..i].to_string(),
                    None => block,
                };
                self.items.push(Item {
                    text: orig,
                    origin: origin.clone(),
                });
                self.items.push(Item {
                    text: format!("</{name}>"),
                    origin: origin.clone(),
                });
                continue;
            }

            if let Some((name, end)) = heredoc_start(&line) {
                // Config::General only enters here-document mode when the
                // name is true in Perl's sense.
                if perl_true(&name) {
                    heredoc = Some(Heredoc {
                        name,
                        end,
                        lines: Vec::new(),
                        origin: origin.clone(),
                    });
                }
                continue;
            }

            if let Some((text, start)) = longline.take() {
                if perl_true(&text) {
                    let mut text = text;
                    text.push_str(trim_start_ws(&line));
                    self.items.push(Item {
                        text,
                        origin: start,
                    });
                    continue;
                }
                // A continuation that collected nothing true (`""` or `"0"`)
                // stays pending, as in Perl, and this line is read normally.
                longline = Some((text, start));
            }

            if trim_ws(&line).is_empty() {
                continue;
            }

            match include_statement(&line) {
                Some((file_name, optional)) if perl_true(&file_name) => {
                    if depth >= MAX_INCLUDE_DEPTH {
                        return Err(ConfigError::syntax(
                            &origin,
                            format!(
                                "includes nest more than {MAX_INCLUDE_DEPTH} levels deep (an include cycle?)"
                            ),
                        ));
                    }
                    self.include(&dir, &file_name, optional, &origin, depth + 1)?;
                }
                _ => self.items.push(Item { text: line, origin }),
            }
        }

        if let Some(doc) = heredoc {
            return Err(ConfigError::syntax(
                &doc.origin,
                format!(
                    "here-document is not terminated: no line `{}` follows",
                    doc.end
                ),
            ));
        }
        if let Some(start) = c_comment {
            return Err(ConfigError::syntax(
                &start,
                "comment `/*` is not closed by `*/`",
            ));
        }
        if let Some((text, start)) = longline
            && !trim_ws(&text).is_empty()
        {
            return Err(ConfigError::syntax(
                &start,
                "line continued with `\\` at the end of the file",
            ));
        }
        Ok(())
    }

    fn include(
        &mut self,
        dir: &Path,
        name: &str,
        optional: bool,
        origin: &Origin,
        depth: usize,
    ) -> Result<(), ConfigError> {
        let mut name = name.to_string();
        if optional && !has_glob_meta(&name) {
            // `IncludeOptional file` becomes a glob matching only that file,
            // so that a missing file is skipped.
            let (head, tail) = match name.rfind('/') {
                Some(i) => name.split_at(i + 1),
                None => ("", name.as_str()),
            };
            let tail: String = tail.chars().map(|c| format!("[{c}]")).collect();
            name = format!("{head}{tail}");
        }
        let relative = !name.starts_with('/');
        let candidate = if relative {
            dir.join(&name)
        } else {
            PathBuf::from(&name)
        };

        if has_glob_meta(&candidate.to_string_lossy()) {
            let mut matches = glob(&candidate.to_string_lossy());
            if matches.is_empty() && relative {
                matches = glob(&self.main_dir.join(&name).to_string_lossy());
            }
            for file in matches {
                self.read_included(&file, origin, depth)?;
            }
            return Ok(());
        }

        let mut path = candidate;
        if !path.exists() {
            let fallback = self.main_dir.join(&name);
            if relative && fallback.exists() {
                path = fallback;
            } else {
                return Err(ConfigError::syntax(
                    origin,
                    format!("included file {} does not exist", path.display()),
                ));
            }
        }
        if path.is_dir() {
            return Err(ConfigError::syntax(
                origin,
                format!("included file {} is a directory", path.display()),
            ));
        }
        self.read_included(&path, origin, depth)
    }

    fn read_included(
        &mut self,
        path: &Path,
        origin: &Origin,
        depth: usize,
    ) -> Result<(), ConfigError> {
        let bytes = std::fs::read(path).map_err(|e| {
            ConfigError::syntax(
                origin,
                format!("cannot read included file {}: {e}", path.display()),
            )
        })?;
        self.read(path, &bytes, depth)
    }
}

/// If `line` ends a here-document with marker `end`, the indentation before
/// the marker.
fn heredoc_end(line: &str, end: &str) -> Option<String> {
    let rest = trim_start_ws(line);
    let indent = &line[..line.len() - rest.len()];
    let after = rest.strip_prefix(end)?;
    if trim_ws(after).is_empty() {
        Some(indent.to_string())
    } else {
        None
    }
}

/// `key = <<END` or `key <<END`: the key and the end marker.
fn heredoc_start(line: &str) -> Option<(String, String)> {
    // `^\s*([^=]+?)\s*=\s*<<\s*(.+?)\s*$`
    if let Some(eq) = line.find('=') {
        let before = &line[..eq];
        let rest = trim_start_ws(&line[eq + 1..]);
        if !before.is_empty()
            && let Some(marker) = rest.strip_prefix("<<")
        {
            let marker = trim_ws(marker);
            if !marker.is_empty() {
                let name = trim_ws(before);
                // All white space: the leading `\s*` gives back one character.
                let name = if name.is_empty() {
                    &before[before.len() - 1..]
                } else {
                    name
                };
                return Some((name.to_string(), marker.to_string()));
            }
        }
    }
    // `^\s*(\S+?)\s+<<\s*(.+?)\s*$`
    let body = trim_start_ws(line);
    let key_end = body.find(is_ws)?;
    let name = &body[..key_end];
    let rest = trim_start_ws(&body[key_end..]);
    let marker = trim_ws(rest.strip_prefix("<<")?);
    if name.is_empty() || marker.is_empty() {
        return None;
    }
    Some((name.to_string(), marker.to_string()))
}

/// The byte range removed by Config::General's one-line C comment rule
/// (`\s*/\*.*\*/\s*`, first `/*` to last `*/`, with the white space around).
fn inline_c_comment(line: &str) -> Option<(usize, usize)> {
    let open = line.find("/*")?;
    let close = line.rfind("*/")?;
    if close < open + 2 {
        return None;
    }
    let start = trim_end_ws(&line[..open]).len();
    let after = close + 2;
    let end = after + (line[after..].len() - trim_start_ws(&line[after..]).len());
    Some((start, end))
}

/// The position of the first `#` not preceded by a backslash.
fn unescaped_hash(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    (0..bytes.len()).find(|&i| bytes[i] == b'#' && (i == 0 || bytes[i - 1] != b'\\'))
}

/// `<name …/>` at the end of a line: the text between `<` and `/>`, and the
/// line with its final `/>` turned into `>`.
fn empty_block(line: &str) -> Option<(String, String)> {
    let body = trim_end_ws(line);
    let inner_end = body.strip_suffix("/>")?.len();
    for (lt, _) in body.match_indices('<') {
        let inner = body.get(lt + 1..inner_end)?;
        if !inner.is_empty() && !inner.starts_with('/') {
            let orig = match line.strip_suffix("/>") {
                Some(head) => format!("{head}>"),
                None => line.to_string(),
            };
            return Some((inner.to_string(), orig));
        }
    }
    None
}

/// `include FILE`, `include "FILE"`, `IncludeOptional …`: the file name and
/// whether it is optional.
fn include_statement(line: &str) -> Option<(String, bool)> {
    let body = trim_start_ws(line);
    let lower = body.to_ascii_lowercase();
    let mut keywords = Vec::new();
    if lower.starts_with("include") {
        keywords.push(("include".len(), false));
    }
    if lower.starts_with("includeoptional") {
        keywords.push(("includeoptional".len(), true));
    }
    // Quoted: `include "file"` up to a closing quote at the very end.
    for &(len, optional) in &keywords {
        let rest = trim_start_ws(&body[len..]);
        let Some(q) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        if rest.len() >= 2 && rest.ends_with(q) && !rest[..rest.len() - 1].ends_with('\\') {
            return Some((rest[1..rest.len() - 1].to_string(), optional));
        }
    }
    // Unquoted: at least one white space after the keyword.
    for &(len, optional) in &keywords {
        let rest = &body[len..];
        if !rest.starts_with(is_ws) {
            continue;
        }
        let name = trim_ws(rest);
        if !name.is_empty() {
            return Some((name.to_string(), optional));
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Parse phase.

/// `<…>` that opens a block: the text between the brackets.
fn block_start(text: &str) -> Option<&str> {
    let inner = text.strip_prefix('<')?.strip_suffix('>')?;
    if inner.is_empty() || inner.starts_with('/') {
        return None;
    }
    // Perl: `[^\/]+?.*?` — every newline must come before the first slash.
    if let (Some(slash), Some(nl)) = (inner.find('/'), inner.rfind('\n'))
        && nl > slash
    {
        return None;
    }
    Some(inner)
}

/// `</…>` that closes a block: the name in it.
fn block_end(text: &str) -> Option<&str> {
    let inner = text.strip_prefix("</")?.strip_suffix('>')?;
    if inner.is_empty() || inner.contains('\n') {
        return None;
    }
    Some(inner)
}

/// Splits `<name>`, `<name other>`, `<"quoted name">` into the block and the
/// optional name of the block, the way Config::General's patterns
/// `^"([^"]+)"$` and `^(?:"([^"]+)"|(\S+))(?:\s+(?:"([^"]+)"|(.*)))?$` do.
fn split_block(inner: &str) -> (String, Option<String>) {
    if inner.len() >= 3
        && inner.starts_with('"')
        && inner.ends_with('"')
        && !inner[1..inner.len() - 1].contains('"')
    {
        return (inner.replace('"', ""), None);
    }
    // First alternative: a quoted block.
    if let Some(stripped) = inner.strip_prefix('"')
        && let Some(close) = stripped.find('"')
        && close > 0
        && let Some(name) = block_name_group(&stripped[close + 1..])
    {
        let first = &stripped[..close];
        // `$1 || $2`: a false quoted name leaves Perl with undef, which as a
        // hash key is "".
        let first = if perl_true(first) { first } else { "" };
        return (first.to_string(), name);
    }
    // Second alternative: a block without white space.
    let end = inner.find(is_ws).unwrap_or(inner.len());
    if end > 0
        && let Some(name) = block_name_group(&inner[end..])
    {
        return (inner[..end].to_string(), name);
    }
    (inner.to_string(), None)
}

/// Matches `(?:\s+(?:"([^"]+)"|(.*)))?$` against what follows the block:
/// `None` if it does not match, else the block's name if there is one.
fn block_name_group(rest: &str) -> Option<Option<String>> {
    if rest.is_empty() {
        return Some(None);
    }
    if !rest.starts_with(is_ws) {
        return None;
    }
    let after = trim_start_ws(rest);
    if let Some(quoted) = after.strip_prefix('"').and_then(|s| s.strip_suffix('"'))
        && !quoted.is_empty()
        && !quoted.contains('"')
    {
        // `$3 || $4` with `$4` unset.
        return Some(perl_true(quoted).then(|| quoted.to_string()));
    }
    if after.contains('\n') {
        return None;
    }
    Some(Some(after.to_string()))
}

/// Splits an item into key and value: at the first `=` (with the white space
/// around it) or white space, whichever comes first.
fn split_option(text: &str) -> (String, Option<String>) {
    if let Some(sep) = text.find(HEREDOC_SEP) {
        let key = trim_end_ws(&text[..sep]);
        let value = trim_start_ws(&text[sep + HEREDOC_SEP.len_utf8()..]);
        return (key.to_string(), Some(value.to_string()));
    }
    for (i, c) in text.char_indices() {
        if c == '=' || is_ws(c) {
            let rest = trim_start_ws(&text[i..]);
            let rest = match rest.strip_prefix('=') {
                // `\s*=\s*` matches when the white space run ends in `=`.
                Some(after) => trim_start_ws(after),
                None => rest,
            };
            return (text[..i].to_string(), Some(rest.to_string()));
        }
    }
    (text.to_string(), None)
}

/// Config::General's value post-processing: outer double quotes removed, and
/// `\$`, `\\`, `\"`, `\#` unescaped.
fn clean_value(value: Option<String>) -> Option<String> {
    let mut value = value?;
    if perl_true(&value) && value.starts_with('"') && value.ends_with('"') {
        value.remove(0);
        if value.ends_with('"') {
            value.pop();
        }
    }
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&next) = chars.peek()
            && matches!(next, '$' | '\\' | '"' | '#')
        {
            out.push(next);
            chars.next();
            continue;
        }
        out.push(c);
    }
    Some(out)
}

struct OpenBlock {
    name: String,
    block_name: Option<String>,
    origin: Origin,
    content: Vec<Item>,
    nesting: usize,
}

fn parse_items(
    items: &[Item],
    tree: &mut Tree,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    let mut open: Option<OpenBlock> = None;
    for item in items {
        let text = trim_ws(&item.text);
        let Some(block) = open.as_mut() else {
            if let Some(inner) = block_start(text) {
                let (name, block_name) = split_block(inner);
                open = Some(OpenBlock {
                    name,
                    block_name,
                    origin: item.origin.clone(),
                    content: Vec::new(),
                    nesting: 0,
                });
            } else if let Some(name) = block_end(text) {
                return Err(ConfigError::syntax(
                    &item.origin,
                    format!("`</{name}>` closes a block that was never opened"),
                ));
            } else {
                let (key, value) = split_option(text);
                let value = Value::Scalar {
                    value: clean_value(value),
                    origin: item.origin.clone(),
                };
                add_option(tree, key, value);
            }
            continue;
        };

        let trimmed = Item {
            text: text.to_string(),
            origin: item.origin.clone(),
        };
        if block_start(text).is_some() {
            block.nesting += 1;
            block.content.push(trimmed);
        } else if let Some(end_name) = block_end(text) {
            if block.nesting > 0 {
                block.nesting -= 1;
                block.content.push(trimmed);
                continue;
            }
            if end_name != block.name {
                warnings.push(Warning {
                    origin: item.origin.clone(),
                    message: format!(
                        "`</{end_name}>` closes `<{}>` opened at {}",
                        block.name, block.origin
                    ),
                });
            }
            let Some(block) = open.take() else {
                unreachable!()
            };
            close_block(tree, block, warnings)?;
        } else {
            block.content.push(trimmed);
        }
    }
    if let Some(block) = open {
        return Err(ConfigError::syntax(
            &block.origin,
            format!(
                "block `<{}>` is not closed by `</{}>`",
                block.name, block.name
            ),
        ));
    }
    Ok(())
}

fn add_option(tree: &mut Tree, key: String, value: Value) {
    match tree.entries.get_mut(&key) {
        None => {
            tree.entries.insert(key, value);
        }
        Some(existing) => push_onto(existing, value),
    }
}

/// Makes `existing` a list (keeping its elements if it already is one) and
/// appends `value`.
fn push_onto(existing: &mut Value, value: Value) {
    match existing {
        Value::List(items) => items.push(value),
        other => {
            let first = std::mem::replace(other, Value::List(Vec::new()));
            *other = Value::List(vec![first, value]);
        }
    }
}

fn close_block(
    tree: &mut Tree,
    block: OpenBlock,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    let mut inner = Tree::default();
    parse_items(&block.content, &mut inner, warnings)?;
    let new = Value::Block {
        tree: inner,
        origin: block.origin.clone(),
    };
    match block.block_name {
        Some(block_name) => {
            let outer = tree
                .entries
                .entry(block.name.clone())
                .or_insert_with(|| Value::Block {
                    tree: Tree::default(),
                    origin: block.origin.clone(),
                });
            match outer {
                Value::Scalar { origin, .. } => Err(ConfigError::syntax(
                    &block.origin,
                    format!(
                        "block `<{} {block_name}>` conflicts with option `{}` set at {origin}",
                        block.name, block.name
                    ),
                )),
                Value::List(_) => Err(ConfigError::syntax(
                    &block.origin,
                    format!(
                        "named block `<{} {block_name}>` cannot be added: `{}` occurs more than once already",
                        block.name, block.name
                    ),
                )),
                Value::Block {
                    tree: outer_tree, ..
                } => {
                    match outer_tree.entries.get_mut(&block_name) {
                        Some(existing) => push_onto(existing, new),
                        None => {
                            outer_tree.entries.insert(block_name, new);
                        }
                    }
                    Ok(())
                }
            }
        }
        None => match tree.entries.get_mut(&block.name) {
            None => {
                tree.entries.insert(block.name, new);
                Ok(())
            }
            Some(Value::Scalar { origin, .. }) => Err(ConfigError::syntax(
                &block.origin,
                format!(
                    "block `<{}>` conflicts with option `{}` set at {origin}",
                    block.name, block.name
                ),
            )),
            Some(existing) => {
                push_onto(existing, new);
                Ok(())
            }
        },
    }
}

// ---------------------------------------------------------------------------
// Globbing with BSD glob's rules (braces, `*`, `?`, `[...]`, backslash
// quoting; a leading dot only matched literally), keeping regular files.

fn has_glob_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', '{', '\\'])
}

fn glob(pattern: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for alternative in expand_braces(pattern) {
        let mut matches = glob_one(&alternative);
        matches.sort_by(|a, b| {
            a.as_os_str()
                .as_encoded_bytes()
                .cmp(b.as_os_str().as_encoded_bytes())
        });
        out.extend(matches.into_iter().filter(|p| p.is_file()));
    }
    out
}

/// `a{b,c}d` → `abd`, `acd`; nested braces are expanded; `{}` is literal.
fn expand_braces(pattern: &str) -> Vec<String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '{' if chars.get(i + 1) == Some(&'}') => i += 2,
            '{' => {
                // Find the matching close brace and the top-level commas.
                let mut depth = 0;
                let mut commas = Vec::new();
                let mut close = None;
                let mut j = i + 1;
                while j < chars.len() {
                    match chars[j] {
                        '\\' => j += 1,
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            close = Some(j);
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => commas.push(j),
                        _ => {}
                    }
                    j += 1;
                }
                let Some(close) = close else {
                    return vec![pattern.to_string()];
                };
                let prefix: String = chars[..i].iter().collect();
                let suffix: String = chars[close + 1..].iter().collect();
                let mut bounds = vec![i];
                bounds.extend(commas);
                bounds.push(close);
                let mut out = Vec::new();
                for w in bounds.windows(2) {
                    let middle: String = chars[w[0] + 1..w[1]].iter().collect();
                    out.extend(expand_braces(&format!("{prefix}{middle}{suffix}")));
                }
                return out;
            }
            _ => i += 1,
        }
    }
    vec![pattern.to_string()]
}

fn glob_one(pattern: &str) -> Vec<PathBuf> {
    let absolute = pattern.starts_with('/');
    let mut current = vec![if absolute {
        PathBuf::from("/")
    } else {
        PathBuf::from(".")
    }];
    let components: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    for (idx, component) in components.iter().enumerate() {
        let last = idx + 1 == components.len();
        let mut next = Vec::new();
        let magic = component.contains(['*', '?', '[']);
        for dir in &current {
            if magic {
                let Ok(entries) = std::fs::read_dir(dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let Some(name) = name.to_str() else { continue };
                    if name.starts_with('.') && !component.starts_with('.') {
                        continue;
                    }
                    if wildcard_match(component, name) {
                        let path = dir.join(name);
                        if last || path.is_dir() {
                            next.push(path);
                        }
                    }
                }
            } else {
                let path = dir.join(unquote(component));
                if path.exists() {
                    next.push(path);
                }
            }
        }
        current = next;
    }
    if absolute {
        current
    } else {
        current
            .into_iter()
            .map(|p| p.strip_prefix(".").map(Path::to_path_buf).unwrap_or(p))
            .collect()
    }
}

fn unquote(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Matches one path component against `*`, `?`, `[...]` (with `!` and
/// ranges) and `\` quoting.
/// One path component against a glob component (`*`, `?`, `[...]` with
/// `!` negation and ranges, `\\` quoting, an unclosed `[` is itself), with
/// the workspace's glob matcher (linear in the name).
fn wildcard_match(pattern: &str, name: &str) -> bool {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .allow_unclosed_class(true)
        .build()
        .map(|glob| glob.compile_matcher().is_match(name))
        .unwrap_or_else(|_| unquote(pattern) == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_option_prefers_the_first_separator() {
        assert_eq!(split_option("a = b"), ("a".into(), Some("b".into())));
        assert_eq!(split_option("a b = c"), ("a".into(), Some("b = c".into())));
        assert_eq!(split_option("a=b=c"), ("a".into(), Some("b=c".into())));
        assert_eq!(split_option("a  =  "), ("a".into(), Some("".into())));
        assert_eq!(split_option("lonely"), ("lonely".into(), None));
    }

    #[test]
    fn split_block_handles_names_and_quotes() {
        assert_eq!(split_block("a"), ("a".into(), None));
        assert_eq!(split_block("a b c"), ("a".into(), Some("b c".into())));
        assert_eq!(split_block("\"a b\""), ("a b".into(), None));
        assert_eq!(
            split_block("\"a\" \"b c\""),
            ("a".into(), Some("b c".into()))
        );
        assert_eq!(split_block("a \"0\""), ("a".into(), None));
        assert_eq!(split_block("a 0"), ("a".into(), Some("0".into())));
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.conf", "a.conf"));
        assert!(!wildcard_match("*.conf", "a.conf~"));
        assert!(wildcard_match("[a-c]?", "bx"));
        assert!(!wildcard_match("[!a-c]?", "bx"));
        assert!(wildcard_match("\\*", "*"));
        assert_eq!(expand_braces("x{a,b{c,d}}y"), vec!["xay", "xbcy", "xbdy"]);
        assert_eq!(expand_braces("x{}y"), vec!["x{}y"]);
    }

    #[test]
    fn values_are_unquoted_and_unescaped() {
        assert_eq!(clean_value(Some("\"a b\"".into())), Some("a b".into()));
        assert_eq!(clean_value(Some("\"".into())), Some("".into()));
        assert_eq!(
            clean_value(Some("a\\#b\\\\c".into())),
            Some("a#b\\c".into())
        );
        assert_eq!(clean_value(None), None);
    }
}
