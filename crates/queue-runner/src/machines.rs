//! Build machines: read from the machines file(s) (`machines_file`, else
//! `NIX_REMOTE_SYSTEMS`, else `/etc/nix/machines`), or the local machine
//! alone when there is none; re-read when a file changes, keeping each
//! machine's counters (by store URI) and never disturbing running steps.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use hydra_nix::machines::{self, Dialect, Machine, ParseOptions};
use hydra_nix::serve::Transport;

use crate::{Context, QueueError};

/// A machine and what the queue runner knows of it.
#[derive(Clone, Debug)]
pub struct MachineState {
    pub machine: Machine,
    /// Removed from the machines file: gets no new steps.
    pub enabled: bool,
    pub current_jobs: u32,
    pub consecutive_failures: u32,
    pub disabled_until: Option<Instant>,
    pub last_failure: Option<Instant>,
    pub steps_done: u64,
    pub total_step_time: Duration,
    pub total_build_time: Duration,
    pub idle_since: Option<Instant>,
}

impl MachineState {
    fn new(machine: Machine) -> MachineState {
        MachineState {
            machine,
            enabled: true,
            current_jobs: 0,
            consecutive_failures: 0,
            disabled_until: None,
            last_failure: None,
            steps_done: 0,
            total_step_time: Duration::ZERO,
            total_build_time: Duration::ZERO,
            idle_since: Some(Instant::now()),
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(
            self.machine.store_uri.as_str(),
            "localhost" | "ssh://localhost" | "local" | "auto"
        )
    }

    /// Usable now (enabled and not backed off).
    pub fn available(&self, now: Instant) -> bool {
        self.enabled && self.disabled_until.is_none_or(|t| t <= now)
    }

    pub fn has_capacity(&self) -> bool {
        self.current_jobs < self.machine.max_jobs
    }

    /// Records a failure to reach the machine or to talk to it: it is
    /// backed off for 60 s × 3^(n−1) (plus up to 30 s), n the consecutive
    /// failures (at most 4), unless it failed less than 30 s ago.
    pub fn failed(&mut self, now: Instant) {
        let recent = self
            .last_failure
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(30));
        if !recent {
            self.consecutive_failures = (self.consecutive_failures + 1).min(4);
            let n = self.consecutive_failures.saturating_sub(1);
            let delay = 60 * 3u64.pow(n) + rand::random_range(0..30u64);
            self.disabled_until = Some(now + Duration::from_secs(delay));
        }
        self.last_failure = Some(now);
    }

    pub fn succeeded(&mut self) {
        self.consecutive_failures = 0;
        self.disabled_until = None;
    }

    /// How to reach the machine's store.
    pub fn transport(&self, ctx: &Context) -> Result<Transport, String> {
        if self.is_local() {
            return Ok(ctx.local.serve_transport());
        }
        Transport::for_machine(&self.machine).map_err(|e| e.to_string())
    }
}

/// The machines, and where they come from.
#[derive(Clone, Debug, Default)]
pub struct Machines {
    list: Vec<MachineState>,
    files: Vec<PathBuf>,
    stamps: Vec<Option<(u64, SystemTime, u64)>>,
    last_check: Option<Instant>,
    local_system: String,
    local_features: BTreeSet<String>,
    local_max_jobs: u32,
}

fn stamp(file: &PathBuf) -> Option<(u64, SystemTime, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(file).ok()?;
    Some((meta.ino(), meta.modified().ok()?, meta.len()))
}

impl Machines {
    /// Reads the machines of `ctx`'s configuration and environment.
    pub fn load(ctx: &Context) -> Result<Machines, QueueError> {
        let files: Vec<PathBuf> = match &ctx.config.queue_runner.machines_file {
            Some(list) => list
                .split(':')
                .filter(|f| !f.is_empty())
                .map(PathBuf::from)
                .collect(),
            None => match std::env::var("NIX_REMOTE_SYSTEMS") {
                Ok(list) if !list.is_empty() => list
                    .split(':')
                    .filter(|f| !f.is_empty())
                    .map(PathBuf::from)
                    .collect(),
                _ => vec![PathBuf::from("/etc/nix/machines")],
            },
        };
        let (local_system, local_features, local_max_jobs) = local_settings(ctx);
        let mut machines = Machines {
            list: Vec::new(),
            files,
            stamps: Vec::new(),
            last_check: None,
            local_system,
            local_features,
            local_max_jobs,
        };
        machines.read()?;
        Ok(machines)
    }

    fn read(&mut self) -> Result<(), QueueError> {
        self.stamps = self.files.iter().map(stamp).collect();
        self.last_check = Some(Instant::now());
        let options = ParseOptions {
            dialect: Dialect::Hydra,
            local_system: self.local_system.clone(),
        };
        let read = machines::read_files(&self.files, &options)
            .map_err(|e| QueueError::Machines(e.to_string()))?;
        for warning in &read.warnings {
            tracing::warn!("{warning}");
        }
        let mut found = read.machines;
        if found.is_empty() && self.stamps.iter().all(Option::is_none) {
            found.push(self.localhost());
        }
        for m in &mut self.list {
            m.enabled = false;
        }
        for machine in found {
            match self
                .list
                .iter_mut()
                .find(|m| m.machine.store_uri == machine.store_uri)
            {
                Some(state) => {
                    state.machine = machine;
                    state.enabled = true;
                }
                None => self.list.push(MachineState::new(machine)),
            }
        }
        // Machines that are gone and idle are forgotten.
        self.list.retain(|m| m.enabled || m.current_jobs > 0);
        Ok(())
    }

    /// The implicit machine when no machines file exists.
    fn localhost(&self) -> Machine {
        let mut systems = vec![self.local_system.clone()];
        if self.local_system == "x86_64-linux" {
            systems.push("i686-linux".into());
        }
        Machine {
            store_uri: "localhost".into(),
            systems,
            ssh_key: None,
            max_jobs: self.local_max_jobs.max(1),
            speed_factor: 1.0,
            supported_features: self.local_features.clone(),
            mandatory_features: BTreeSet::new(),
            host_key: None,
        }
    }

    /// Re-reads the files if one changed (looked at once a second at most).
    /// Exactly `machines`, read from no file (for tests of the dispatcher).
    #[cfg(test)]
    pub(crate) fn of(machines: Vec<Machine>) -> Machines {
        Machines {
            list: machines.into_iter().map(MachineState::new).collect(),
            ..Machines::default()
        }
    }

    pub fn reload_if_changed(&mut self) {
        if self
            .last_check
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last_check = Some(Instant::now());
        let now: Vec<_> = self.files.iter().map(stamp).collect();
        if now == self.stamps {
            return;
        }
        match self.read() {
            Ok(()) => tracing::info!(machines = self.list.len(), "re-read the machines file"),
            Err(e) => {
                // Keep the machines we have; try again on the next change.
                self.stamps = now;
                tracing::error!(error = %e, "cannot re-read the machines file; keeping the machines");
            }
        }
    }

    pub fn list(&self) -> &[MachineState] {
        &self.list
    }

    pub fn list_mut(&mut self) -> &mut [MachineState] {
        &mut self.list
    }

    pub fn get_mut(&mut self, uri: &str) -> Option<&mut MachineState> {
        self.list.iter_mut().find(|m| m.machine.store_uri == uri)
    }

    /// The system the local machine builds for.
    pub fn local_system(&self) -> &str {
        &self.local_system
    }
}

/// The local Nix's `system`, `system-features` and `max-jobs` (machine
/// defaults when Nix cannot be asked).
fn local_settings(ctx: &Context) -> (String, BTreeSet<String>, u32) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let fallback_system = format!("{}-linux", std::env::consts::ARCH);
    let mut cmd = std::process::Command::new("nix");
    cmd.args(&ctx.local.args)
        .envs(ctx.local.env.iter().map(|(k, v)| (k, v)))
        .args([
            "--extra-experimental-features",
            "nix-command",
            "show-config",
            "--json",
        ]);
    let parsed = cmd
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok());
    let Some(config) = parsed else {
        return (fallback_system, BTreeSet::new(), cores);
    };
    let value = |key: &str| config.get(key).and_then(|v| v.get("value")).cloned();
    let system = value("system")
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or(fallback_system);
    let features = value("system-features")
        .and_then(|v| {
            v.as_array().map(|a| {
                a.iter()
                    .filter_map(|f| f.as_str().map(String::from))
                    .collect::<BTreeSet<_>>()
            })
        })
        .unwrap_or_default();
    let max_jobs = value("max-jobs")
        .and_then(|v| v.as_u64())
        .map(|n| n as u32)
        .unwrap_or(cores);
    (system, features, max_jobs)
}
