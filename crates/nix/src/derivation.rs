//! Derivations: the `.drv` ATerm format, hash modulo, and the paths Nix
//! computes from them.
//!
//! Paths inside a derivation are kept as the strings in the file, so that
//! printing a parsed derivation gives back exactly the same bytes.

use std::collections::{BTreeMap, BTreeSet};

use crate::hash::{HashAlgo, NixHash, sha256};
use crate::store_path::{StoreDir, StorePath, StorePathError};

/// One output: `(name, path, hashAlgo, hash)` in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DerivationOutput {
    /// The output path, or empty for content-addressed and deferred outputs.
    pub path: String,
    /// `""`, or `[r:]algo` for fixed and floating content-addressed outputs.
    pub hash_algo: String,
    /// `""`, the base16 hash of a fixed output, or `impure`.
    pub hash: String,
}

impl DerivationOutput {
    /// The fixed hash of a fixed-output derivation's output, and whether it
    /// is recursive (a NAR hash).
    pub fn fixed_hash(&self) -> Result<Option<(bool, NixHash)>, DerivationError> {
        if self.hash_algo.is_empty() || self.hash.is_empty() || self.hash == "impure" {
            return Ok(None);
        }
        let (recursive, algo) = match self.hash_algo.strip_prefix("r:") {
            Some(a) => (true, a),
            None => (false, self.hash_algo.as_str()),
        };
        let algo = HashAlgo::parse(algo).map_err(|e| DerivationError::Invalid(e.to_string()))?;
        let hash = NixHash::parse_bare(&self.hash, algo)
            .map_err(|e| DerivationError::Invalid(e.to_string()))?;
        Ok(Some((recursive, hash)))
    }
}

/// A derivation as in a `.drv` file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Derivation {
    pub outputs: BTreeMap<String, DerivationOutput>,
    /// Input derivation path → the outputs wanted from it.
    pub input_drvs: BTreeMap<String, BTreeSet<String>>,
    pub input_srcs: BTreeSet<String>,
    pub platform: String,
    pub builder: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DerivationError {
    #[error("invalid derivation at byte {offset}: {message}")]
    Parse { offset: usize, message: String },
    #[error("invalid derivation: {0}")]
    Invalid(String),
    #[error(transparent)]
    StorePath(#[from] StorePathError),
    #[error("content-addressed derivation {0} has no output paths to compute")]
    ContentAddressed(String),
}

/// How a derivation's outputs are addressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DerivationKind {
    InputAddressed,
    FixedOutput,
    /// Floating content-addressed, deferred or impure: no output paths known
    /// before building.
    ContentAddressed,
}

impl Derivation {
    /// Parses the ATerm text of a `.drv` file.
    pub fn parse(text: &str) -> Result<Derivation, DerivationError> {
        let mut p = Parser {
            s: text.as_bytes(),
            pos: 0,
        };
        p.expect("Derive(")?;
        let mut drv = Derivation::default();
        p.list(|p| {
            p.expect("(")?;
            let name = p.string()?;
            p.expect(",")?;
            let path = p.string()?;
            p.expect(",")?;
            let hash_algo = p.string()?;
            p.expect(",")?;
            let hash = p.string()?;
            p.expect(")")?;
            if drv
                .outputs
                .insert(
                    name.clone(),
                    DerivationOutput {
                        path,
                        hash_algo,
                        hash,
                    },
                )
                .is_some()
            {
                return Err(p.error(format!("duplicate output `{name}`")));
            }
            Ok(())
        })?;
        p.expect(",")?;
        p.list(|p| {
            p.expect("(")?;
            let path = p.string()?;
            p.expect(",")?;
            let mut outputs = BTreeSet::new();
            p.list(|p| {
                outputs.insert(p.string()?);
                Ok(())
            })?;
            p.expect(")")?;
            drv.input_drvs.insert(path, outputs);
            Ok(())
        })?;
        p.expect(",")?;
        p.list(|p| {
            drv.input_srcs.insert(p.string()?);
            Ok(())
        })?;
        p.expect(",")?;
        drv.platform = p.string()?;
        p.expect(",")?;
        drv.builder = p.string()?;
        p.expect(",")?;
        p.list(|p| {
            drv.args.push(p.string()?);
            Ok(())
        })?;
        p.expect(",")?;
        p.list(|p| {
            p.expect("(")?;
            let key = p.string()?;
            p.expect(",")?;
            let value = p.string()?;
            p.expect(")")?;
            drv.env.insert(key, value);
            Ok(())
        })?;
        p.expect(")")?;
        if p.pos != p.s.len() {
            return Err(p.error("unexpected text after the derivation"));
        }
        Ok(drv)
    }

    /// The ATerm text, exactly as Nix writes it.
    pub fn to_aterm(&self) -> String {
        self.unparse(false, None)
    }

    /// Nix's `unparse`: with `mask_outputs`, output paths and the output
    /// environment variables are blanked; `input_drvs` replaces the input
    /// derivations (hash modulo of each input → outputs).
    fn unparse(
        &self,
        mask_outputs: bool,
        input_drvs: Option<&BTreeMap<String, BTreeSet<String>>>,
    ) -> String {
        let mut s = String::with_capacity(4096);
        s.push_str("Derive([");
        for (i, (name, out)) in self.outputs.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push('(');
            raw(&mut s, name);
            s.push(',');
            raw(&mut s, if mask_outputs { "" } else { &out.path });
            s.push(',');
            raw(&mut s, &out.hash_algo);
            s.push(',');
            raw(&mut s, &out.hash);
            s.push(')');
        }
        s.push_str("],[");
        for (i, (path, outputs)) in input_drvs.unwrap_or(&self.input_drvs).iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push('(');
            raw(&mut s, path);
            s.push_str(",[");
            for (j, o) in outputs.iter().enumerate() {
                if j > 0 {
                    s.push(',');
                }
                raw(&mut s, o);
            }
            s.push_str("])");
        }
        s.push_str("],[");
        for (i, src) in self.input_srcs.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            raw(&mut s, src);
        }
        s.push_str("],");
        raw(&mut s, &self.platform);
        s.push(',');
        escaped(&mut s, &self.builder);
        s.push_str(",[");
        for (i, arg) in self.args.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            escaped(&mut s, arg);
        }
        s.push_str("],[");
        for (i, (key, value)) in self.env.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push('(');
            escaped(&mut s, key);
            s.push(',');
            if mask_outputs && self.outputs.contains_key(key) {
                escaped(&mut s, "");
            } else {
                escaped(&mut s, value);
            }
            s.push(')');
        }
        s.push_str("])");
        s
    }

    pub fn kind(&self) -> DerivationKind {
        let fixed = self.outputs.len() == 1
            && self
                .outputs
                .get("out")
                .is_some_and(|o| !o.hash.is_empty() && o.hash != "impure" && !o.path.is_empty());
        if fixed {
            DerivationKind::FixedOutput
        } else if self.outputs.values().any(|o| o.path.is_empty()) {
            DerivationKind::ContentAddressed
        } else {
            DerivationKind::InputAddressed
        }
    }

    /// Nix's `hashDerivationModulo`. `input_hash` gives the (unmasked) hash
    /// modulo of an input derivation by path; callers usually memoise it.
    pub fn hash_modulo<E>(
        &self,
        store_dir: &StoreDir,
        mask_outputs: bool,
        input_hash: &mut impl FnMut(&str) -> Result<NixHash, E>,
    ) -> Result<NixHash, E>
    where
        E: From<DerivationError>,
    {
        if self.kind() == DerivationKind::FixedOutput
            && let Some(out) = self.outputs.get("out")
        {
            let Some((recursive, hash)) = out.fixed_hash()? else {
                return Err(DerivationError::Invalid("fixed output without a hash".into()).into());
            };
            // The path is checked as a store path, as Nix prints it parsed.
            store_dir.parse(&out.path).map_err(DerivationError::from)?;
            let text = format!(
                "fixed:out:{}{}:{}:{}",
                if recursive { "r:" } else { "" },
                hash.algo(),
                hash.to_base16(),
                out.path
            );
            return Ok(sha256(text.as_bytes()));
        }
        let mut inputs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (path, outputs) in &self.input_drvs {
            let h = input_hash(path)?;
            inputs
                .entry(h.to_base16())
                .or_default()
                .extend(outputs.iter().cloned());
        }
        Ok(sha256(self.unparse(mask_outputs, Some(&inputs)).as_bytes()))
    }

    /// The output paths this derivation must have, computed from scratch.
    pub fn compute_output_paths<E>(
        &self,
        store_dir: &StoreDir,
        name: &str,
        input_hash: &mut impl FnMut(&str) -> Result<NixHash, E>,
    ) -> Result<BTreeMap<String, StorePath>, E>
    where
        E: From<DerivationError>,
    {
        match self.kind() {
            DerivationKind::ContentAddressed => {
                Err(DerivationError::ContentAddressed(name.to_string()).into())
            }
            DerivationKind::FixedOutput => {
                let mut out = BTreeMap::new();
                for (output, o) in &self.outputs {
                    let Some((recursive, hash)) = o.fixed_hash()? else {
                        continue;
                    };
                    let path = store_dir
                        .make_fixed_output_path(name, recursive, &hash)
                        .map_err(DerivationError::from)?;
                    out.insert(output.clone(), path);
                }
                Ok(out)
            }
            DerivationKind::InputAddressed => {
                let h = self.hash_modulo(store_dir, true, input_hash)?;
                let mut out = BTreeMap::new();
                for output in self.outputs.keys() {
                    let path = store_dir
                        .make_output_path(output, &h, name)
                        .map_err(DerivationError::from)?;
                    out.insert(output.clone(), path);
                }
                Ok(out)
            }
        }
    }

    /// The path of the `.drv` file for this derivation named `name`: a text
    /// path referring to its input sources and input derivations.
    pub fn drv_path(&self, store_dir: &StoreDir, name: &str) -> Result<StorePath, DerivationError> {
        let mut refs = Vec::new();
        for p in self.input_srcs.iter().chain(self.input_drvs.keys()) {
            refs.push(store_dir.parse(p)?);
        }
        Ok(store_dir.make_text_path(
            &format!("{name}.drv"),
            self.to_aterm().as_bytes(),
            refs.iter(),
        )?)
    }

    /// The output paths written in the derivation, for outputs that have one.
    pub fn output_paths(
        &self,
        store_dir: &StoreDir,
    ) -> Result<BTreeMap<String, StorePath>, DerivationError> {
        let mut out = BTreeMap::new();
        for (name, o) in &self.outputs {
            if !o.path.is_empty() {
                out.insert(name.clone(), store_dir.parse(&o.path)?);
            }
        }
        Ok(out)
    }

    /// The form sent to a builder (serve command 8): no input derivations;
    /// instead the wanted outputs of each are input sources. `outputs_of`
    /// gives an input derivation's output paths by name.
    pub fn to_basic<E>(
        &self,
        outputs_of: &mut impl FnMut(&str) -> Result<BTreeMap<String, String>, E>,
    ) -> Result<BasicDerivation, E>
    where
        E: From<DerivationError>,
    {
        let mut input_srcs = self.input_srcs.clone();
        for (path, wanted) in &self.input_drvs {
            let outputs = outputs_of(path)?;
            for output in wanted {
                let p = outputs
                    .get(output)
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| {
                        DerivationError::Invalid(format!(
                            "input derivation {path} has no output path for `{output}`"
                        ))
                    })?;
                input_srcs.insert(p.clone());
            }
        }
        Ok(BasicDerivation {
            outputs: self.outputs.clone(),
            input_srcs,
            platform: self.platform.clone(),
            builder: self.builder.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
        })
    }
}

/// A derivation without input derivations, as sent to a builder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BasicDerivation {
    pub outputs: BTreeMap<String, DerivationOutput>,
    pub input_srcs: BTreeSet<String>,
    pub platform: String,
    pub builder: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// The name of a derivation from its `.drv` store path.
pub fn name_from_drv_path(path: &StorePath) -> Result<&str, DerivationError> {
    path.name()
        .strip_suffix(".drv")
        .ok_or_else(|| DerivationError::Invalid(format!("{path} is not a .drv path")))
}

fn raw(s: &mut String, text: &str) {
    s.push('"');
    s.push_str(text);
    s.push('"');
}

fn escaped(s: &mut String, text: &str) {
    s.push('"');
    for c in text.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c => s.push(c),
        }
    }
    s.push('"');
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, message: impl Into<String>) -> DerivationError {
        DerivationError::Parse {
            offset: self.pos,
            message: message.into(),
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), DerivationError> {
        if self.s[self.pos..].starts_with(token.as_bytes()) {
            self.pos += token.len();
            Ok(())
        } else {
            let found =
                String::from_utf8_lossy(&self.s[self.pos..(self.pos + 10).min(self.s.len())])
                    .into_owned();
            Err(self.error(format!("expected `{token}`, found `{found}`")))
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    /// `[item,item,…]`
    fn list(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<(), DerivationError>,
    ) -> Result<(), DerivationError> {
        self.expect("[")?;
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.error("expected `,` or `]`")),
            }
        }
    }

    fn string(&mut self) -> Result<String, DerivationError> {
        self.expect("\"")?;
        let mut out = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.error("unterminated string"));
            };
            self.pos += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let Some(e) = self.peek() else {
                        return Err(self.error("unterminated string"));
                    };
                    self.pos += 1;
                    out.push(match e {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        other => other,
                    });
                }
                other => out.push(other),
            }
        }
        String::from_utf8(out).map_err(|_| self.error("string is not valid UTF-8"))
    }
}

/// Hash modulo with memoisation over a function that loads derivations.
#[derive(Debug)]
pub struct HashModuloCache<'a> {
    store_dir: &'a StoreDir,
    cache: BTreeMap<String, NixHash>,
}

impl<'a> HashModuloCache<'a> {
    pub fn new(store_dir: &'a StoreDir) -> Self {
        HashModuloCache {
            store_dir,
            cache: BTreeMap::new(),
        }
    }

    /// The unmasked hash modulo of the derivation at `path`, loading it and
    /// its inputs with `load` as needed.
    pub fn get<E>(
        &mut self,
        path: &str,
        load: &mut impl FnMut(&str) -> Result<Derivation, E>,
    ) -> Result<NixHash, E>
    where
        E: From<DerivationError>,
    {
        if let Some(h) = self.cache.get(path) {
            return Ok(h.clone());
        }
        let drv = load(path)?;
        let mut inputs = Vec::new();
        for input in drv.input_drvs.keys() {
            inputs.push((input.clone(), self.get(input, load)?));
        }
        let h = drv.hash_modulo(self.store_dir, false, &mut |p: &str| {
            inputs
                .iter()
                .find(|(q, _)| q == p)
                .map(|(_, h)| h.clone())
                .ok_or_else(|| E::from(DerivationError::Invalid(format!("input {p} not loaded"))))
        })?;
        self.cache.insert(path.to_string(), h.clone());
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"Derive([("out","/nix/store/ykqlvwqvm0hq9aa5bhg9ggj7hh9fr5p8-serveprobe-ok","","")],[],[],"x86_64-linux","/bin/sh",["-c","echo \"hi\"\n\ttab\\"],[("PATH","/usr/bin:/bin"),("builder","/bin/sh"),("name","serveprobe-ok"),("out","/nix/store/ykqlvwqvm0hq9aa5bhg9ggj7hh9fr5p8-serveprobe-ok"),("salt","1"),("system","x86_64-linux")])"#;

    #[test]
    fn round_trip_and_escapes() {
        let drv = Derivation::parse(OK).unwrap();
        assert_eq!(drv.args[1], "echo \"hi\"\n\ttab\\");
        assert_eq!(drv.to_aterm(), OK);
        assert_eq!(drv.kind(), DerivationKind::InputAddressed);
    }

    #[test]
    fn errors_name_the_offset() {
        let err = Derivation::parse("Derive([(\"out\"").unwrap_err();
        assert!(
            matches!(err, DerivationError::Parse { offset: 14, .. }),
            "{err}"
        );
        assert!(
            Derivation::parse(&format!("{OK} "))
                .unwrap_err()
                .to_string()
                .contains("after the derivation")
        );
        assert!(Derivation::parse("Derive([],[],[],\"x\",\"y\",[],[]").is_err());
    }
}
