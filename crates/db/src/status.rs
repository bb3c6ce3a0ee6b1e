//! Hydra's vocabulary of build and step states, as stored: the status codes
//! of `Builds.buildStatus` and `BuildSteps.status` (one code space), and
//! the progress codes of `BuildSteps.busy`. Nothing else writes these
//! numbers.

use serde::{Deserialize, Serialize};

/// How a build ended (`Builds.buildStatus`). Steps share the code space
/// but not every code: see [`StepStatus`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, sqlx::Type, Serialize, Deserialize)]
#[repr(i32)]
pub enum BuildStatus {
    #[default]
    Succeeded = 0,
    /// The build's own step failed.
    Failed = 1,
    /// A dependency failed (`propagatedFrom` of the failed step row says
    /// which build really built it).
    DependencyFailed = 2,
    /// An internal or transient failure.
    Aborted = 3,
    Cancelled = 4,
    /// Succeeded, but an output holds `nix-support/failed`.
    FailedWithOutput = 6,
    TimedOut = 7,
    /// No machine supports the system or the features.
    Unsupported = 9,
    LogLimitExceeded = 10,
    OutputLimitExceeded = 11,
    NotDeterministic = 12,
}

/// How a step ended (`BuildSteps.status`; NULL while the step runs).
/// Hydra's codes: a failed dependency (2) and a failed-with-output (6) are
/// never a step's; a cached failure (8) and a resolved derivation (13) are
/// never a build's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, sqlx::Type, Serialize, Deserialize)]
#[repr(i32)]
pub enum StepStatus {
    Succeeded = 0,
    Failed = 1,
    /// An internal or transient failure (the step may be tried again).
    Aborted = 3,
    /// Stopped: no build needs it any more.
    Cancelled = 4,
    TimedOut = 7,
    /// An output failed before (it is in `FailedPaths`); nothing ran.
    CachedFailure = 8,
    Unsupported = 9,
    LogLimitExceeded = 10,
    OutputLimitExceeded = 11,
    NotDeterministic = 12,
    /// A content-addressed derivation was resolved to another.
    Resolved = 13,
}

impl StepStatus {
    /// The stored code.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The status with a stored code, if it is a step's.
    pub fn from_code(code: i32) -> Option<StepStatus> {
        use StepStatus::*;
        [
            Succeeded,
            Failed,
            Aborted,
            Cancelled,
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
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Aborted => "aborted",
            StepStatus::Cancelled => "cancelled",
            StepStatus::TimedOut => "timed out",
            StepStatus::CachedFailure => "cached failure",
            StepStatus::Unsupported => "unsupported system type",
            StepStatus::LogLimitExceeded => "log limit exceeded",
            StepStatus::OutputLimitExceeded => "output limit exceeded",
            StepStatus::NotDeterministic => "non-deterministic",
            StepStatus::Resolved => "resolved",
        }
    }

    /// How a build that needed a step ending so ends: its own derivation's
    /// failure (cached or not) fails it, a dependency's failure fails it
    /// as "dependency failed"; other endings (timed out, limits, …) are
    /// the build's too, whoever's step it was.
    pub fn build_status(self, own: bool) -> BuildStatus {
        match self {
            StepStatus::Failed | StepStatus::CachedFailure if own => BuildStatus::Failed,
            StepStatus::Failed | StepStatus::CachedFailure => BuildStatus::DependencyFailed,
            StepStatus::Succeeded | StepStatus::Resolved => BuildStatus::Succeeded,
            StepStatus::Aborted => BuildStatus::Aborted,
            StepStatus::Cancelled => BuildStatus::Cancelled,
            StepStatus::TimedOut => BuildStatus::TimedOut,
            StepStatus::Unsupported => BuildStatus::Unsupported,
            StepStatus::LogLimitExceeded => BuildStatus::LogLimitExceeded,
            StepStatus::OutputLimitExceeded => BuildStatus::OutputLimitExceeded,
            StepStatus::NotDeterministic => BuildStatus::NotDeterministic,
        }
    }
}

/// The codes of steps whose failure is recorded in `FailedPaths` and
/// propagated to later builds of the same outputs.
pub const CACHEABLE_FAILURES: [StepStatus; 5] = [
    StepStatus::Failed,
    StepStatus::TimedOut,
    StepStatus::LogLimitExceeded,
    StepStatus::OutputLimitExceeded,
    StepStatus::NotDeterministic,
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
            Unsupported,
            LogLimitExceeded,
            OutputLimitExceeded,
            NotDeterministic,
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
            BuildStatus::Unsupported => "unsupported system type",
            BuildStatus::LogLimitExceeded => "log limit exceeded",
            BuildStatus::OutputLimitExceeded => "output limit exceeded",
            BuildStatus::NotDeterministic => "non-deterministic",
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
                None => assert!([5, 8, 13].contains(&code), "{code} is a build status"),
            }
            match StepStatus::from_code(code) {
                Some(s) => assert_eq!(s.code(), code),
                None => assert!([2, 5, 6].contains(&code), "{code} is a step status"),
            }
        }
        assert_eq!(BuildStatus::from_code(100), None);
        assert_eq!(StepStatus::from_code(100), None);
    }

    #[test]
    fn a_failed_step_fails_its_own_build_and_its_dependents_differently() {
        for failed in [StepStatus::Failed, StepStatus::CachedFailure] {
            assert_eq!(failed.build_status(true), BuildStatus::Failed);
            assert_eq!(failed.build_status(false), BuildStatus::DependencyFailed);
        }
        for other in [
            StepStatus::TimedOut,
            StepStatus::Aborted,
            StepStatus::Unsupported,
        ] {
            assert_eq!(other.build_status(true), other.build_status(false));
            assert_eq!(other.build_status(true).code(), other.code());
        }
    }
}
