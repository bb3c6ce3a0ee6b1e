//! A separate Nix store in a directory (`--store <dir>`), as used for build
//! machines and for anything that must not touch the machine's own store.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A chroot Nix store: store paths are `/nix/store/…` but live under
/// `<root>/nix/store`. Builds run in Nix's sandbox with `/bin /usr /lib
/// /lib64 /etc` visible, so fixture builders can use `/bin/sh`.
#[derive(Debug)]
pub struct NixStore {
    dir: tempfile::TempDir,
}

impl Default for NixStore {
    fn default() -> Self {
        Self::new()
    }
}

impl NixStore {
    pub fn new() -> NixStore {
        let dir = crate::shared_tempdir();
        std::fs::create_dir_all(dir.path().join("root")).unwrap();
        std::fs::create_dir_all(dir.path().join("conf")).unwrap();
        std::fs::create_dir_all(dir.path().join("cache")).unwrap();
        let conf = format!(
            "store = {}\n{}",
            dir.path().join("root").display(),
            Self::nix_conf()
        );
        std::fs::write(dir.path().join("conf/nix.conf"), conf).unwrap();
        NixStore { dir }
    }

    /// The settings every test store uses: nothing is downloaded, builds are
    /// sandboxed with the host's `/bin` and friends, and run as root.
    pub fn nix_conf() -> &'static str {
        "substituters =\n\
         sandbox = true\n\
         sandbox-paths = /bin /usr /lib /lib64 /etc\n\
         build-users-group =\n\
         experimental-features = nix-command flakes\n\
         warn-dirty = false\n"
    }

    /// The directory the store lives under (`--store` argument).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Where store paths physically are.
    pub fn real_path(&self, store_path: &str) -> PathBuf {
        self.root().join(store_path.trim_start_matches('/'))
    }

    /// A Nix command (`nix-build`, `nix-store`, …) working on this store.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg("--store")
            .arg(self.root())
            .env("NIX_CONF_DIR", self.dir.path().join("conf"))
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .env("HOME", self.dir.path())
            .env_remove("NIX_PATH")
            .env_remove("NIX_REMOTE");
        cmd
    }

    /// The command line of `nix-store --serve --write` for this store, as
    /// (program, arguments before `--serve`, environment): a build machine.
    pub fn serve_command(&self) -> (String, Vec<String>, Vec<(String, String)>) {
        let args = vec!["--store".to_string(), self.root().display().to_string()];
        (
            "nix-store".to_string(),
            args,
            vec![
                (
                    "NIX_CONF_DIR".to_string(),
                    self.conf_dir().display().to_string(),
                ),
                (
                    "XDG_CACHE_HOME".to_string(),
                    self.dir.path().join("cache").display().to_string(),
                ),
            ],
        )
    }

    /// Environment under which every Nix program uses this store (its
    /// `nix.conf` names it as `store`) and its caches: what the evaluator
    /// and the `hydra` binary get in tests.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "NIX_CONF_DIR".to_string(),
                self.conf_dir().display().to_string(),
            ),
            (
                "XDG_CACHE_HOME".to_string(),
                self.dir.path().join("cache").display().to_string(),
            ),
        ]
    }

    /// The directory with this store's `nix.conf`.
    pub fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("conf")
    }

    /// Runs a Nix command on this store and returns its output; panics with
    /// the command's stderr when it fails.
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        let out = self.try_run(program, args);
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn try_run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program).args(args).output().unwrap()
    }

    /// Builds `attr` of the expression `file` and returns its output paths.
    pub fn build(&self, file: &Path, attr: &str) -> Vec<String> {
        let file = file.to_str().unwrap();
        self.run("nix-build", &[file, "-A", attr, "--no-out-link"])
            .lines()
            .map(String::from)
            .collect()
    }
}
