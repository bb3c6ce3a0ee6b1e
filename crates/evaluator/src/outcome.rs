//! How an evaluation ended, as the scheduler, the metrics and the log see
//! it.

use std::fmt;
use std::time::Duration;

/// How an evaluation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An evaluation was recorded.
    Evaluated {
        eval_id: i32,
        new_builds: usize,
        reused: usize,
        /// Jobs that failed to evaluate.
        job_errors: usize,
        /// Whether the evaluation differs from the previous one.
        changed: bool,
    },
    /// The inputs are those of the latest evaluation: nothing was done.
    Unchanged { previous_eval: i32 },
    /// An input could not be fetched (`fetchErrorMsg`).
    FetchFailed(String),
    /// The evaluation failed as a whole (`errorMsg`).
    Failed(String),
    /// A declarative project's static specification was applied.
    SpecApplied { jobsets: usize },
}

/// An evaluation's outcome and timings.
#[derive(Clone, Debug)]
pub struct Summary {
    pub project: String,
    pub jobset: String,
    pub outcome: Outcome,
    pub checkout_time: Duration,
    pub eval_time: Duration,
    pub total_time: Duration,
}

impl Summary {
    /// Whether the evaluation failed (no evaluation recorded because of an
    /// error).
    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::FetchFailed(_) | Outcome::Failed(_))
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = format!("{}:{}", self.project, self.jobset);
        let times = format!(
            "checkout {:.1} s, evaluation {:.1} s, total {:.1} s",
            self.checkout_time.as_secs_f64(),
            self.eval_time.as_secs_f64(),
            self.total_time.as_secs_f64()
        );
        match &self.outcome {
            Outcome::Evaluated {
                eval_id,
                new_builds,
                reused,
                job_errors,
                changed,
            } => write!(
                f,
                "{name}: evaluation {eval_id}{}: {new_builds} new builds, {reused} reused, {job_errors} job errors ({times})",
                if *changed { "" } else { " (no changes)" }
            ),
            Outcome::Unchanged { previous_eval } => write!(
                f,
                "{name}: inputs unchanged since evaluation {previous_eval}, nothing to do ({times})"
            ),
            Outcome::FetchFailed(e) => {
                write!(f, "{name}: fetching the inputs failed ({times}):\n{e}")
            }
            Outcome::Failed(e) => write!(f, "{name}: evaluation failed ({times}):\n{e}"),
            Outcome::SpecApplied { jobsets } => write!(
                f,
                "{name}: declarative specification applied to {jobsets} jobsets ({times})"
            ),
        }
    }
}
