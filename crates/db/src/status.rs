//! Hydra's vocabulary of build and step states, as stored: the status codes
//! of `Builds.buildStatus` and `BuildSteps.status` (one code space), and
//! the progress codes of `BuildSteps.busy`. Nothing else writes these
//! numbers.

use serde::{Deserialize, Serialize};

/// How a build or a step ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, sqlx::Type, Serialize, Deserialize)]
#[repr(i32)]
pub enum BuildStatus {
    #[default]
    Succeeded = 0,
    /// The builder exited with an error (for a build: its own step did).
    Failed = 1,
    /// A dependency failed (builds only; `propagatedFrom` says which build).
    DependencyFailed = 2,
    /// An internal or transient failure.
    Aborted = 3,
    Cancelled = 4,
    /// Succeeded, but an output holds `nix-support/failed` (builds only).
    FailedWithOutput = 6,
    TimedOut = 7,
    /// An output failed before (steps only; builds get 1 or 2).
    CachedFailure = 8,
    /// No machine supports the system or the features.
    Unsupported = 9,
    LogLimitExceeded = 10,
    OutputLimitExceeded = 11,
    NotDeterministic = 12,
    /// A content-addressed derivation was resolved to another (steps only).
    Resolved = 13,
}

/// How a step ended: the same codes as builds (Hydra has one code space
/// for both; each variant says when it is one kind's only).
pub type StepStatus = BuildStatus;

/// The codes of steps whose failure is recorded in `FailedPaths` and
/// propagated to later builds of the same outputs.
pub const CACHEABLE_FAILURES: [BuildStatus; 5] = [
    BuildStatus::Failed,
    BuildStatus::TimedOut,
    BuildStatus::LogLimitExceeded,
    BuildStatus::OutputLimitExceeded,
    BuildStatus::NotDeterministic,
];

impl TryFrom<i32> for BuildStatus {
    type Error = String;

    fn try_from(code: i32) -> Result<Self, Self::Error> {
        BuildStatus::from_code(code).ok_or_else(|| format!("{code} is not a build status"))
    }
}

impl BuildStatus {
    /// The stored code.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The status with a stored code, if it is one.
    pub fn from_code(code: i32) -> Option<BuildStatus> {
        use BuildStatus::*;
        [
            Succeeded,
            Failed,
            DependencyFailed,
            Aborted,
            Cancelled,
            FailedWithOutput,
            TimedOut,
            CachedFailure,
            Unsupported,
            LogLimitExceeded,
            OutputLimitExceeded,
            NotDeterministic,
            Resolved,
        ]
        .into_iter()
        .find(|s| s.code() == code)
    }

    /// What Hydra's pages call it.
    pub fn describe(self) -> &'static str {
        match self {
            BuildStatus::Succeeded => "succeeded",
            BuildStatus::Failed => "failed",
            BuildStatus::DependencyFailed => "dependency failed",
            BuildStatus::Aborted => "aborted",
            BuildStatus::Cancelled => "cancelled",
            BuildStatus::FailedWithOutput => "failed with output",
            BuildStatus::TimedOut => "timed out",
            BuildStatus::CachedFailure => "cached failure",
            BuildStatus::Unsupported => "unsupported system type",
            BuildStatus::LogLimitExceeded => "log limit exceeded",
            BuildStatus::OutputLimitExceeded => "output limit exceeded",
            BuildStatus::NotDeterministic => "non-deterministic",
            BuildStatus::Resolved => "resolved",
        }
    }

    /// Successful: the outputs exist (with `nix-support/failed` or not).
    pub fn has_outputs(self) -> bool {
        matches!(self, BuildStatus::Succeeded | BuildStatus::FailedWithOutput)
    }
}

/// What a running step is doing (`BuildSteps.busy`; 0 is "not running").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, sqlx::Type)]
#[repr(i32)]
pub enum Busy {
    NotRunning = 0,
    Preparing = 1,
    Connecting = 10,
    SendingInputs = 20,
    Building = 30,
    WaitingForLocalSlot = 35,
    ReceivingOutputs = 40,
    PostProcessing = 50,
}

/// Whether and how a jobset is evaluated (`Jobsets.enabled`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, sqlx::Type, Serialize, Deserialize)]
#[repr(i32)]
pub enum JobsetState {
    Disabled = 0,
    #[default]
    Enabled = 1,
    /// Evaluated once, then disabled.
    OneShot = 2,
    /// Evaluated only when the previous evaluation's builds are finished.
    OneAtATime = 3,
}

impl JobsetState {
    /// The stored code.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The state with a stored code, if it is one.
    pub fn from_code(code: i32) -> Option<JobsetState> {
        use JobsetState::*;
        [Disabled, Enabled, OneShot, OneAtATime]
            .into_iter()
            .find(|s| s.code() == code)
    }
}

impl From<i32> for JobsetState {
    /// A code this version does not know counts as enabled (as anything
    /// but 0 does for scheduling).
    fn from(code: i32) -> Self {
        JobsetState::from_code(code).unwrap_or(JobsetState::Enabled)
    }
}

/// What a jobset evaluates (`Jobsets.type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, sqlx::Type, Serialize, Deserialize)]
#[repr(i32)]
pub enum JobsetType {
    /// A Nix expression with inputs.
    #[default]
    Legacy = 0,
    Flake = 1,
}

impl JobsetType {
    /// The stored code.
    pub fn code(self) -> i32 {
        self as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_ones_are_none() {
        for code in 0..=13 {
            match BuildStatus::from_code(code) {
                Some(s) => assert_eq!(s.code(), code),
                None => assert_eq!(code, 5, "5 is Hydra's obsolete code"),
            }
        }
        assert_eq!(BuildStatus::from_code(100), None);
    }
}
