//! How Nix programs are run: which store and settings they use.

use std::path::PathBuf;

use tokio::process::Command;

use crate::serve::Transport;

/// Extra arguments (such as `--store DIR`) and environment (such as
/// `NIX_CONF_DIR`) for every Nix program run against a store. Empty for
/// the machine's own store with its own settings.
#[derive(Clone, Debug, Default)]
pub struct NixEnv {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl NixEnv {
    /// `program` with these settings, without `NIX_PATH`, killed when
    /// dropped.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(&self.args)
            .env_remove("NIX_PATH")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .kill_on_drop(true);
        cmd
    }

    /// Like [`NixEnv::command`], for a child that must not outlive this
    /// process even when it is killed with SIGKILL: run through util-linux's
    /// `setpriv --pdeathsig KILL`, so the kernel kills it when its parent
    /// dies (a child that reads no stdin never notices otherwise).
    pub fn command_dying_with_parent(&self, program: &str) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "KILL", "--", program])
            .args(&self.args)
            .env_remove("NIX_PATH")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .kill_on_drop(true);
        cmd
    }

    /// Where the store keeps its files when it is a chroot store (`--store
    /// DIR`, or `store = DIR` / `local?root=DIR` in Nix's settings): store
    /// paths are then under `DIR`. `None` for the machine's `/nix/store`.
    pub fn detect_root(&self) -> Option<PathBuf> {
        if let Some(i) = self.args.iter().position(|a| a == "--store") {
            return self.args.get(i + 1).and_then(|s| root_of(s));
        }
        let out = std::process::Command::new("nix")
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args([
                "--extra-experimental-features",
                "nix-command",
                "show-config",
                "--json",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())?;
        let config: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let store = config.get("store")?.get("value")?.as_str()?.to_string();
        root_of(&store)
    }

    /// `nix-store --serve --write` on this store, as a serve-protocol
    /// transport (with `--builders ''`, so nothing is delegated).
    pub fn serve_transport(&self) -> Transport {
        let mut args = self.args.clone();
        args.extend(["--builders".to_string(), String::new()]);
        Transport::Local {
            program: PathBuf::from("nix-store"),
            args,
            env: self.env.clone(),
        }
    }
}

/// The root directory a store URI names, if it is a chroot store.
fn root_of(store: &str) -> Option<PathBuf> {
    if store.starts_with('/') {
        return Some(PathBuf::from(store));
    }
    let query = store.strip_prefix("local?")?;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "root" && v.starts_with('/')).then(|| PathBuf::from(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chroot_stores_have_roots() {
        assert_eq!(root_of("/tmp/x/root"), Some(PathBuf::from("/tmp/x/root")));
        assert_eq!(
            root_of("local?root=/srv/r&other=1"),
            Some(PathBuf::from("/srv/r"))
        );
        assert_eq!(root_of("auto"), None);
        assert_eq!(root_of("daemon"), None);
        let env = NixEnv {
            args: vec!["--store".into(), "/a/b".into()],
            env: Vec::new(),
        };
        assert_eq!(env.detect_root(), Some(PathBuf::from("/a/b")));
    }
}
