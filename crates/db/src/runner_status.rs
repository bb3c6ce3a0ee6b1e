//! The queue runner's status document (`/status` and `/status/machines`
//! on its status endpoint), in Hydra's field names: the queue runner
//! writes it and the web server reads it (`/queue-runner-status`,
//! `/machines`) with this one type.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `/status`: the queue, the work in progress and the counters since the
/// queue runner started.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerStatus {
    /// `up`.
    pub status: String,
    /// Unix time of the document.
    pub time: i64,
    /// Seconds since the queue runner started.
    pub uptime: u64,
    pub pid: u32,
    pub nr_queued_builds: u64,
    pub nr_unfinished_steps: u64,
    pub nr_runnable_steps: u64,
    pub nr_active_steps: u64,
    pub nr_steps_building: u64,
    pub nr_steps_copying_to: u64,
    pub nr_steps_copying_from: u64,
    pub nr_steps_waiting_for_download_slot: u64,
    pub nr_unsupported_steps: u64,
    pub nr_unsupported_steps_aborted: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub nr_builds_read: u64,
    pub build_read_time_ms: u64,
    pub build_read_time_avg_ms: f64,
    pub nr_builds_done: u64,
    pub nr_builds_succeeded: u64,
    pub nr_builds_failed: u64,
    pub nr_steps_started: u64,
    pub nr_steps_done: u64,
    pub nr_retries: u64,
    pub max_nr_retries: u64,
    pub nr_queue_wakeups: u64,
    pub nr_dispatcher_wakeups: u64,
    pub dispatch_time_ms: u64,
    pub dispatch_time_avg_ms: f64,
    /// Predictions of the queue made (see the queue runner's `eta.rs`),
    /// their average time, and the part of it the queue was locked for.
    pub nr_predictions: u64,
    pub prediction_time_avg_ms: f64,
    pub prediction_lock_time_avg_ms: f64,
    /// The latest prediction's time, and the part with the queue locked.
    pub prediction_time_last_ms: f64,
    pub prediction_lock_time_last_ms: f64,
    /// Seconds.
    pub total_step_time: u64,
    /// Seconds.
    pub total_step_build_time: u64,
    pub avg_step_time: f64,
    pub avg_step_build_time: f64,
    /// Per system: steps runnable and running.
    pub machine_types: BTreeMap<String, MachineTypeStatus>,
    /// By store URI.
    pub machines: BTreeMap<String, MachineStatus>,
    /// By jobset id.
    pub jobsets: BTreeMap<String, JobsetShare>,
    pub store: StoreStatus,
}

/// The steps of one system.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineTypeStatus {
    pub runnable: u64,
    pub running: u64,
}

/// A build machine as the queue runner sees it. Fields a queue runner of
/// another version leaves out take their defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MachineStatus {
    pub enabled: bool,
    pub system_types: Vec<String>,
    pub supported_features: Vec<String>,
    pub mandatory_features: Vec<String>,
    pub max_jobs: u32,
    pub speed_factor: f64,
    pub current_jobs: u32,
    pub nr_steps_done: u64,
    pub consecutive_failures: u32,
    /// Unix time until which it is not used after failures.
    pub disabled_until: Option<i64>,
    pub last_failure: Option<i64>,
    pub idle_since: Option<i64>,
    /// Seconds.
    pub total_step_time: u64,
    /// Seconds.
    pub total_step_build_time: u64,
    pub avg_step_time: f64,
    pub avg_step_build_time: f64,
}

/// A jobset's fair share of build time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobsetShare {
    pub share_used: f64,
    /// Build seconds over the window.
    pub seconds: i64,
    pub shares: i32,
}

/// The destination store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    pub uri: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_keeps_hydra_field_names_and_reads_back() {
        let mut status = RunnerStatus {
            status: "up".into(),
            nr_steps_waiting_for_download_slot: 2,
            build_read_time_avg_ms: 1.5,
            ..RunnerStatus::default()
        };
        status.machines.insert(
            "localhost".into(),
            MachineStatus {
                system_types: vec!["x86_64-linux".into()],
                idle_since: Some(5),
                ..MachineStatus::default()
            },
        );
        let json = serde_json::to_value(&status).unwrap_or_default();
        assert_eq!(json["nrStepsWaitingForDownloadSlot"], 2);
        assert_eq!(json["buildReadTimeAvgMs"], 1.5);
        assert_eq!(
            json["machines"]["localhost"]["systemTypes"][0],
            "x86_64-linux"
        );
        assert_eq!(json["machines"]["localhost"]["idleSince"], 5);
        assert_eq!(
            json["machines"]["localhost"]["disabledUntil"],
            serde_json::Value::Null
        );
        let back: RunnerStatus = serde_json::from_value(json).unwrap_or_default();
        assert_eq!(back, status);
    }
}
