//! Real git repositories in temporary directories.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A git repository with a work tree; commits are made with a fixed
/// identity and no host configuration.
#[derive(Debug)]
pub struct GitRepo {
    dir: tempfile::TempDir,
}

impl Default for GitRepo {
    fn default() -> Self {
        Self::new()
    }
}

impl GitRepo {
    /// An empty repository whose branch is `master`.
    pub fn new() -> GitRepo {
        let dir = tempfile::Builder::new()
            .prefix("hydra-git-")
            .tempdir()
            .unwrap();
        let repo = GitRepo { dir };
        repo.git(&["init", "-q", "-b", "master"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `file://` URL of the repository.
    pub fn url(&self) -> String {
        format!("file://{}", self.path().display())
    }

    /// Runs git in the repository and returns its trimmed output; panics
    /// with git's stderr when it fails.
    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.org"])
            .args([
                "-c",
                "commit.gpgsign=false",
                "-c",
                "protocol.file.allow=always",
            ])
            .args(args)
            .current_dir(self.path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Writes files (relative name, contents) into the work tree.
    pub fn write(&self, files: &[(&str, &str)]) {
        for (name, text) in files {
            let path: PathBuf = self.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
            std::fs::write(path, text).unwrap();
        }
    }

    /// Writes `files` and commits everything; returns the new revision.
    pub fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        self.write(files);
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }
}
