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
