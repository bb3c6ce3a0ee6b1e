//! The events notify hears, one per NOTIFY: the channel names the kind,
//! the payload its fields, TAB-separated.
//!
//! Parsing follows Hydra's rules exactly, since the payloads come from
//! Hydra-compatible roles (and from Hydra itself on a shared database):
//! fields are split on TAB keeping leading empty fields and dropping
//! trailing ones (`"\t5"` has two fields, `"1\t2\t"` two, `""` none);
//! integer fields are ASCII digits only (`"012"` is 12); trace ids are
//! opaque. A payload that does not parse is an error naming the channel,
//! the payload and what is wrong; it is logged and dropped, never retried.

use hydra_db::ids::{BuildId, EvalId, JobsetId};

/// The channels notify LISTENs on (besides `hydra_notify_dump_metrics`).
pub const CHANNELS: &[&str] = &[
    "build_finished",
    "build_queued",
    "build_started",
    "cached_build_finished",
    "cached_build_queued",
    "eval_added",
    "eval_cached",
    "eval_checked_out",
    "eval_failed",
    "eval_started",
    "step_finished",
];

/// A notification event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An evaluation of `jobset` began.
    EvalStarted {
        trace_id: String,
        jobset: JobsetId,
    },
    /// An evaluation of `jobset` fetched its inputs (our channel, not
    /// Hydra's): `hydra_db::evals::checkout` has them by trace id.
    EvalCheckedOut {
        trace_id: String,
        jobset: JobsetId,
    },
    /// An evaluation of `jobset` failed.
    EvalFailed {
        trace_id: String,
        jobset: JobsetId,
    },
    /// An evaluation of `jobset` found nothing new: `eval` is the earlier,
    /// identical one.
    EvalCached {
        trace_id: String,
        jobset: JobsetId,
        eval: EvalId,
    },
    /// Evaluation `eval` of `jobset` was recorded.
    EvalAdded {
        trace_id: String,
        jobset: JobsetId,
        eval: EvalId,
    },
    BuildQueued {
        build: BuildId,
    },
    BuildStarted {
        build: BuildId,
    },
    /// Evaluation `eval` took over `build`, still queued, from an earlier
    /// evaluation.
    CachedBuildQueued {
        eval: EvalId,
        build: BuildId,
    },
    /// Evaluation `eval` took over `build`, already finished.
    CachedBuildFinished {
        eval: EvalId,
        build: BuildId,
    },
    /// `build` finished; `dependents` failed because of it.
    BuildFinished {
        build: BuildId,
        dependents: Vec<BuildId>,
    },
    /// Step `step` of `build` finished, its log at `log_path` (none: `-`).
    StepFinished {
        build: BuildId,
        step: i32,
        log_path: Option<String>,
    },
}

/// A payload that is not what its channel carries.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{channel}: payload ‘{payload}’ {problem}")]
pub struct ParseError {
    pub channel: String,
    pub payload: String,
    pub problem: String,
}

impl Event {
    /// The build a `build_finished` event is about.
    pub fn finished_build(&self) -> Option<BuildId> {
        match self {
            Event::BuildFinished { build, .. } => Some(*build),
            _ => None,
        }
    }

    /// The event NOTIFYed on `channel` with `payload`.
    pub fn parse(channel: &str, payload: &str) -> Result<Event, ParseError> {
        let fields = split(payload);
        let fail = |problem: &str| ParseError {
            channel: channel.to_string(),
            payload: payload.to_string(),
            problem: problem.to_string(),
        };
        let exactly = |n: usize, words: &str| {
            if fields.len() == n {
                Ok(())
            } else {
                Err(fail(&format!(
                    "should have {words} (it has {})",
                    fields.len()
                )))
            }
        };
        let int = |field: &str, what: &str| {
            integer(field).ok_or_else(|| fail(&format!("{what} ‘{field}’ should be an integer")))
        };
        let ints = |fields: &[&str]| {
            fields
                .iter()
                .map(|f| integer(f).map(BuildId))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| fail("should be integers"))
        };
        Ok(match channel {
            "eval_started" | "eval_failed" | "eval_checked_out" => {
                exactly(2, "two arguments")?;
                let trace_id = fields[0].to_string();
                let jobset = JobsetId(int(fields[1], "the jobset id")?);
                match channel {
                    "eval_started" => Event::EvalStarted { trace_id, jobset },
                    "eval_failed" => Event::EvalFailed { trace_id, jobset },
                    _ => Event::EvalCheckedOut { trace_id, jobset },
                }
            }
            "eval_cached" | "eval_added" => {
                exactly(3, "three arguments")?;
                let trace_id = fields[0].to_string();
                let jobset = JobsetId(int(fields[1], "the jobset id")?);
                let eval = EvalId(int(fields[2], "the evaluation id")?);
                if channel == "eval_cached" {
                    Event::EvalCached {
                        trace_id,
                        jobset,
                        eval,
                    }
                } else {
                    Event::EvalAdded {
                        trace_id,
                        jobset,
                        eval,
                    }
                }
            }
            "build_queued" | "build_started" => {
                exactly(1, "only one argument")?;
                let build = BuildId(int(fields[0], "the build id")?);
                if channel == "build_queued" {
                    Event::BuildQueued { build }
                } else {
                    Event::BuildStarted { build }
                }
            }
            "cached_build_queued" | "cached_build_finished" => {
                if fields.len() != 2 {
                    return Err(fail(&format!(
                        "takes two arguments (it has {})",
                        fields.len()
                    )));
                }
                let ids = ints(&fields)?;
                let (eval, build) = (EvalId(ids[0].0), ids[1]);
                if channel == "cached_build_queued" {
                    Event::CachedBuildQueued { eval, build }
                } else {
                    Event::CachedBuildFinished { eval, build }
                }
            }
            "build_finished" => {
                if fields.is_empty() {
                    return Err(fail("should have at least one argument"));
                }
                let ids = ints(&fields)?;
                Event::BuildFinished {
                    build: ids[0],
                    dependents: ids[1..].to_vec(),
                }
            }
            "step_finished" => {
                exactly(3, "three arguments")?;
                let build = BuildId(int(fields[0], "the build id")?);
                let step = int(fields[1], "the step number")?;
                let log_path = (fields[2] != "-").then(|| fields[2].to_string());
                Event::StepFinished {
                    build,
                    step,
                    log_path,
                }
            }
            _ => return Err(fail("comes on an invalid channel name")),
        })
    }

    /// The builds the event is about, the head first.
    pub fn builds(&self) -> Vec<BuildId> {
        match self {
            Event::BuildQueued { build }
            | Event::BuildStarted { build }
            | Event::CachedBuildQueued { build, .. }
            | Event::CachedBuildFinished { build, .. }
            | Event::StepFinished { build, .. } => vec![*build],
            Event::BuildFinished { build, dependents } => std::iter::once(*build)
                .chain(dependents.iter().copied())
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// `payload`'s fields as Perl's `split /\t/` gives them: leading empty
/// fields kept, trailing ones dropped.
fn split(payload: &str) -> Vec<&str> {
    let mut fields: Vec<&str> = payload.split('\t').collect();
    while fields.last().is_some_and(|f| f.is_empty()) {
        fields.pop();
    }
    fields
}

/// A field of ASCII digits as a number (`"012"` is 12); `None` for
/// anything else, or a number no id can have.
fn integer(field: &str) -> Option<i32> {
    if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    field.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(channel: &str, payload: &str) -> String {
        Event::parse(channel, payload).unwrap_err().to_string()
    }

    #[test]
    fn fields_split_as_perl_does() {
        assert_eq!(split("\t5"), ["", "5"]);
        assert_eq!(split("1\t2\t"), ["1", "2"]);
        assert_eq!(split("1\t\t"), ["1"]);
        assert_eq!(split(""), Vec::<&str>::new());
        assert_eq!(split("\t\t"), Vec::<&str>::new());
        assert_eq!(split("a\t\tb"), ["a", "", "b"]);
    }

    #[test]
    fn build_events_take_one_integer() {
        assert_eq!(
            Event::parse("build_started", "19"),
            Ok(Event::BuildStarted { build: BuildId(19) })
        );
        assert_eq!(
            Event::parse("build_queued", "012"),
            Ok(Event::BuildQueued { build: BuildId(12) })
        );
        assert!(err("build_queued", "1\t2").contains("only one argument"));
        assert!(err("build_queued", "").contains("only one argument"));
        assert!(err("build_started", "x").contains("should be an integer"));
        assert!(err("build_started", "-1").contains("should be an integer"));
        assert!(err("build_started", "99999999999").contains("should be an integer"));
    }

    #[test]
    fn a_finished_build_names_its_dependents() {
        assert_eq!(
            Event::parse("build_finished", "123\t456\t789\t012\t345"),
            Ok(Event::BuildFinished {
                build: BuildId(123),
                dependents: vec![BuildId(456), BuildId(789), BuildId(12), BuildId(345)],
            })
        );
        assert_eq!(
            Event::parse("build_finished", "7").unwrap().builds(),
            [BuildId(7)]
        );
        assert!(err("build_finished", "").contains("at least one argument"));
        assert!(err("build_finished", "1\tx").contains("should be integers"));
        // A leading empty field is a field, and not an integer.
        assert!(err("build_finished", "\t5").contains("should be integers"));
    }

    #[test]
    fn cached_builds_name_the_evaluation_and_the_build() {
        assert_eq!(
            Event::parse("cached_build_finished", "3\t9"),
            Ok(Event::CachedBuildFinished {
                eval: EvalId(3),
                build: BuildId(9),
            })
        );
        assert!(err("cached_build_queued", "3").contains("takes two arguments"));
        assert!(err("cached_build_queued", "3\t9\t1").contains("takes two arguments"));
        // Trailing empty fields are dropped, so this has two fields.
        assert!(Event::parse("cached_build_queued", "3\t9\t").is_ok());
        assert!(err("cached_build_queued", "3\tx").contains("should be integers"));
    }

    #[test]
    fn evaluation_events_carry_an_opaque_trace_id() {
        assert_eq!(
            Event::parse("eval_started", "abc.1\t5"),
            Ok(Event::EvalStarted {
                trace_id: "abc.1".into(),
                jobset: JobsetId(5),
            })
        );
        assert_eq!(
            Event::parse("eval_added", "\t5\t8"),
            Ok(Event::EvalAdded {
                trace_id: String::new(),
                jobset: JobsetId(5),
                eval: EvalId(8),
            })
        );
        assert!(err("eval_failed", "t").contains("two arguments"));
        assert!(err("eval_failed", "t\tx").contains("should be an integer"));
        assert!(err("eval_cached", "t\t5").contains("three arguments"));
        assert!(err("eval_cached", "t\t5\tx").contains("should be an integer"));
    }

    #[test]
    fn a_finished_step_may_have_no_log() {
        assert_eq!(
            Event::parse("step_finished", "5\t2\t/var/log/x"),
            Ok(Event::StepFinished {
                build: BuildId(5),
                step: 2,
                log_path: Some("/var/log/x".into()),
            })
        );
        assert_eq!(
            Event::parse("step_finished", "5\t2\t-"),
            Ok(Event::StepFinished {
                build: BuildId(5),
                step: 2,
                log_path: None,
            })
        );
        assert!(err("step_finished", "5\t2").contains("three arguments"));
        assert!(err("step_finished", "5\tx\t-").contains("should be an integer"));
    }

    #[test]
    fn an_unknown_channel_is_refused_by_name() {
        let e = err("bogus", "1");
        assert!(
            e.contains("invalid channel name") && e.starts_with("bogus:"),
            "{e}"
        );
    }
}
