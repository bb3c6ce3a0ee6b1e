//! Why a queued build is still waiting, in one sentence and the detail,
//! from the queue as it is: the steps it waits for, the machines that
//! could take it, and how many steps go before it.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::time::Instant;

use hydra_db::ids::BuildId;
use serde::Serialize;

use crate::dispatch::StepKey;
use crate::state::{Listed, State, Step};
use hydra_db::etas::Eta;

/// At most this many of the steps a build waits for are named.
const NAMED: usize = 20;

/// Why a build waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Reason {
    /// The queue runner has not read it yet (or it finished meanwhile).
    NotLoaded,
    /// Its own step is being built.
    Building,
    /// Steps it needs are not built yet.
    Dependencies,
    /// No machine builds its system with its features.
    NoMachine,
    /// Every machine that could is backed off after failures.
    MachinesBackedOff,
    /// Every slot that could take it is taken, or others go first.
    MachinesBusy,
    /// It failed and is tried again later.
    Retrying,
}

/// A step the build waits for.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Blocking {
    pub(crate) drv_path: String,
    /// `building`, `runnable` or `retrying`.
    pub(crate) state: &'static str,
    pub(crate) machine: Option<String>,
    /// When a step to be retried may run again (Unix time).
    pub(crate) retry_at: Option<i64>,
    /// When it is expected to be built.
    pub(crate) eta: Option<Eta>,
}

/// Why runnable steps go before a build's own, counted by the first
/// reason that puts each ahead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Ahead {
    /// A higher global priority (a bumped build or jobset).
    pub(crate) priority: usize,
    /// Same priority, of jobsets that used less of their share.
    pub(crate) share: usize,
    /// Same priority and share: a longer chain waiting for them, a higher
    /// local priority or an older build.
    pub(crate) order: usize,
}

impl Ahead {
    fn total(&self) -> usize {
        self.priority + self.share + self.order
    }

    /// "3 steps go first (2 of higher priority, 1 of jobsets with more
    /// share left)".
    fn describe(&self) -> String {
        let mut causes = Vec::new();
        if self.priority > 0 {
            causes.push(format!("{} of higher priority", self.priority));
        }
        if self.share > 0 {
            causes.push(format!("{} of jobsets with more share left", self.share));
        }
        if self.order > 0 && !causes.is_empty() {
            causes.push(format!(
                "{} needed by longer chains or older builds",
                self.order
            ));
        }
        let total = plural(self.total(), "step goes", "steps go");
        if causes.is_empty() {
            format!("{total} first")
        } else {
            format!("{total} first ({})", causes.join(", "))
        }
    }
}

/// The answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Waiting {
    pub(crate) build: BuildId,
    pub(crate) reason: Reason,
    pub(crate) sentence: String,
    /// Its steps not built yet, its own included.
    pub(crate) unfinished: usize,
    /// The steps that can move now (building, runnable, to be retried)
    /// among those it waits for; at most 20 named.
    pub(crate) blocking: Vec<Blocking>,
    pub(crate) blocking_count: usize,
    /// Runnable steps that go before its own on the machines it needs.
    pub(crate) ahead: Option<usize>,
    /// Those steps by why they go first.
    pub(crate) ahead_by: Option<Ahead>,
    pub(crate) system: Option<String>,
    /// When it is expected to finish.
    pub(crate) eta: Option<Eta>,
}

/// Unix time of `at`, an instant of the monotonic clock.
fn unix(at: Instant, now: Instant, now_unix: i64) -> i64 {
    match at.checked_duration_since(now) {
        Some(later) => now_unix + later.as_secs() as i64,
        None => now_unix - now.duration_since(at).as_secs() as i64,
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Why build `id` waits.
pub(crate) fn explain(state: &State, id: BuildId, now: Instant, now_unix: i64) -> Waiting {
    let mut waiting = Waiting {
        build: id,
        reason: Reason::NotLoaded,
        sentence: "The queue runner has not read this build yet.".into(),
        unfinished: 0,
        blocking: Vec::new(),
        blocking_count: 0,
        ahead: None,
        ahead_by: None,
        system: None,
        eta: None,
    };
    let Some(top) = state
        .builds
        .get(&id)
        .and_then(|b| state.steps.get(&b.toplevel))
    else {
        return waiting;
    };
    waiting.system = Some(top.system.clone());
    // Its unfinished closure, and what in it can move.
    let closure = state.closure(id);
    let mut moving: Vec<&Step> = closure
        .iter()
        .copied()
        .filter(|s| s.running.is_some() || s.deps.is_empty())
        .collect();
    waiting.unfinished = closure.len();
    moving.sort_by(|a, b| a.drv_path.cmp(&b.drv_path));
    waiting.blocking_count = moving.len();
    waiting.blocking = moving
        .iter()
        .take(NAMED)
        .map(|s| Blocking {
            drv_path: s.drv_path.clone(),
            state: match (&s.running, s.listed) {
                (Some(_), _) => "building",
                (None, Listed::Delayed(_)) => "retrying",
                _ => "runnable",
            },
            machine: s.running.as_ref().map(|r| r.machine.clone()),
            retry_at: match s.listed {
                Listed::Delayed(at) => Some(unix(at, now, now_unix)),
                _ => None,
            },
            eta: None,
        })
        .collect();
    if let Some(running) = &top.running {
        waiting.reason = Reason::Building;
        waiting.sentence = format!("It is being built on {}.", running.machine);
        return waiting;
    }
    if !top.deps.is_empty() {
        let building = moving.iter().filter(|s| s.running.is_some()).count();
        let retrying = moving
            .iter()
            .filter(|s| matches!(s.listed, Listed::Delayed(_)))
            .count();
        let runnable = moving.len() - building - retrying;
        waiting.reason = Reason::Dependencies;
        waiting.sentence = format!(
            "It waits for {} to be built first: {} building, {} runnable{}.",
            plural(waiting.unfinished - 1, "dependency", "dependencies"),
            building,
            runnable,
            if retrying > 0 {
                format!(", {retrying} to be tried again")
            } else {
                String::new()
            }
        );
        return waiting;
    }
    if let Listed::Delayed(at) = top.listed {
        waiting.reason = Reason::Retrying;
        waiting.sentence = format!(
            "It failed {} and is tried again after {} s.",
            plural(top.tries as usize, "time", "times"),
            at.saturating_duration_since(now).as_secs()
        );
        return waiting;
    }
    let features = if top.required_features.is_empty() {
        String::new()
    } else {
        let list: Vec<&str> = top.required_features.iter().map(String::as_str).collect();
        format!(" with {}", list.join(", "))
    };
    let machines: Vec<_> = state
        .machines
        .list()
        .iter()
        .filter(|m| m.enabled && m.machine.supports(&top.system, &top.required_features))
        .collect();
    if machines.is_empty() {
        waiting.reason = Reason::NoMachine;
        waiting.sentence = format!(
            "No machine builds {}{features}: it fails as unsupported unless one is added.",
            top.system
        );
        return waiting;
    }
    let available: Vec<_> = machines.iter().filter(|m| m.available(now)).collect();
    if available.is_empty() {
        let until = machines.iter().filter_map(|m| m.disabled_until).min();
        waiting.reason = Reason::MachinesBackedOff;
        waiting.sentence = format!(
            "Every machine that builds {}{features} failed lately and is backed off{}.",
            top.system,
            until.map_or(String::new(), |t| format!(
                " for {} s more",
                t.saturating_duration_since(now).as_secs()
            ))
        );
        return waiting;
    }
    let slots: u32 = available.iter().map(|m| m.machine.max_jobs).sum();
    let busy: u32 = available.iter().map(|m| m.current_jobs).sum();
    let ahead = ahead_of(state, top);
    waiting.ahead = Some(ahead.total());
    waiting.ahead_by = Some(ahead);
    waiting.reason = Reason::MachinesBusy;
    waiting.sentence = if busy >= slots {
        format!(
            "Every slot for {}{features} is taken ({} on {}); {}.",
            top.system,
            plural(slots as usize, "slot", "slots"),
            plural(available.len(), "machine", "machines"),
            ahead.describe()
        )
    } else {
        format!(
            "It is about to start: {} free for {}{features}; {}.",
            plural((slots - busy) as usize, "slot is", "slots are"),
            top.system,
            ahead.describe()
        )
    };
    waiting
}

/// How many runnable steps of `step`'s group go before it (higher
/// priority, less share used, longer chain, …), each counted once, by
/// the first reason that puts it ahead.
fn ahead_of(state: &State, step: &Step) -> Ahead {
    let key = step.key(state.share_used(step));
    let Some(group) = state.ready.groups().get(step.group) else {
        return Ahead::default();
    };
    let mut before: HashMap<&str, StepKey> = HashMap::new();
    for (jobset, ranks) in &group.by_jobset {
        let share_used = state.jobset_share_used(*jobset);
        // Within a jobset the set is in the dispatcher's order: stop at
        // the first that does not go first.
        for rank in ranks {
            if rank.key(share_used).order(&key) != Ordering::Less {
                break;
            }
            if rank.drv != step.drv_path {
                // A step of several jobsets goes where its share is least.
                let k = rank.key(share_used);
                before
                    .entry(rank.drv.as_str())
                    .and_modify(|was| {
                        if k.order(was) == Ordering::Less {
                            *was = k;
                        }
                    })
                    .or_insert(k);
            }
        }
    }
    let mut ahead = Ahead::default();
    for k in before.values() {
        if k.global_priority > key.global_priority {
            ahead.priority += 1;
        } else if k.share_used < key.share_used {
            ahead.share += 1;
        } else {
            ahead.order += 1;
        }
    }
    ahead
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::tests::{build, machine, step};
    use crate::machines::Machines;
    use crate::state::Running;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    fn state_with(machines: Vec<hydra_nix::machines::Machine>) -> State {
        State {
            machines: Machines::of(machines),
            ..State::default()
        }
    }

    fn why(state: &State, id: i32) -> Waiting {
        explain(state, BuildId(id), Instant::now(), 1_700_000_000)
    }

    fn running(machine: &str) -> Running {
        Running {
            machine: machine.into(),
            started: Instant::now(),
            cancel: CancellationToken::new(),
        }
    }

    #[test]
    fn a_build_not_read_yet_says_so() {
        let state = State::default();
        assert_eq!(why(&state, 7).reason, Reason::NotLoaded);
    }

    #[test]
    fn a_build_waits_for_its_dependencies_and_names_those_that_can_move() {
        let mut state = state_with(vec![machine("x86", "x86_64-linux", 1, &[])]);
        step(&mut state, "cc", "x86_64-linux", &[], "");
        step(&mut state, "lib", "x86_64-linux", &["cc"], "");
        step(&mut state, "app", "x86_64-linux", &["lib"], "");
        build(&mut state, 1, 1, "app", 0);
        state.start("cc", running("x86"));
        let w = why(&state, 1);
        assert_eq!(w.reason, Reason::Dependencies);
        assert_eq!(w.unfinished, 3);
        assert_eq!(
            w.sentence,
            "It waits for 2 dependencies to be built first: 1 building, 0 runnable."
        );
        assert_eq!(w.blocking.len(), 1);
        assert_eq!(
            (w.blocking[0].drv_path.as_str(), w.blocking[0].state),
            ("cc", "building")
        );
        assert_eq!(w.blocking[0].machine.as_deref(), Some("x86"));
        // Its own step running: being built.
        state.remove_step("cc");
        state.remove_step("lib");
        state.start("app", running("x86"));
        let w = why(&state, 1);
        assert_eq!(w.reason, Reason::Building);
        assert_eq!(w.sentence, "It is being built on x86.");
    }

    #[test]
    fn a_build_no_machine_can_take_says_which_system_and_features() {
        let mut state = state_with(vec![machine("x86", "x86_64-linux", 1, &[])]);
        step(&mut state, "vm-test", "x86_64-linux", &[], "kvm");
        build(&mut state, 1, 1, "vm-test", 0);
        let w = why(&state, 1);
        assert_eq!(w.reason, Reason::NoMachine);
        assert!(
            w.sentence
                .starts_with("No machine builds x86_64-linux with kvm"),
            "{}",
            w.sentence
        );
    }

    #[test]
    fn a_build_whose_machines_are_backed_off_says_for_how_long() {
        let mut state = state_with(vec![machine("arm", "aarch64-linux", 1, &[])]);
        step(&mut state, "a", "aarch64-linux", &[], "");
        build(&mut state, 1, 1, "a", 0);
        if let Some(m) = state.machines.get_mut("arm") {
            m.disabled_until = Some(Instant::now() + Duration::from_secs(120));
        }
        let w = why(&state, 1);
        assert_eq!(w.reason, Reason::MachinesBackedOff);
        assert!(w.sentence.contains("backed off for 11"), "{}", w.sentence);
    }

    #[test]
    fn a_build_behind_others_says_how_many_go_first() {
        let mut state = state_with(vec![machine("x86", "x86_64-linux", 1, &[])]);
        step(&mut state, "busy", "x86_64-linux", &[], "");
        build(&mut state, 1, 1, "busy", 0);
        state.start("busy", running("x86"));
        if let Some(m) = state.machines.get_mut("x86") {
            m.current_jobs = 1;
        }
        step(&mut state, "urgent", "x86_64-linux", &[], "");
        build(&mut state, 2, 1, "urgent", 10);
        step(&mut state, "older", "x86_64-linux", &[], "");
        build(&mut state, 3, 1, "older", 0);
        step(&mut state, "mine", "x86_64-linux", &[], "");
        build(&mut state, 4, 1, "mine", 0);
        step(&mut state, "newer", "x86_64-linux", &[], "");
        build(&mut state, 5, 1, "newer", 0);
        let w = why(&state, 4);
        assert_eq!(w.reason, Reason::MachinesBusy);
        assert_eq!(w.ahead, Some(2), "the urgent one and the older one");
        assert_eq!(
            w.sentence,
            "Every slot for x86_64-linux is taken (1 slot on 1 machine); 2 steps go first \
             (1 of higher priority, 1 needed by longer chains or older builds)."
        );
        // Jobset 1 used its share; a step of jobset 2, which used none,
        // goes first for that reason (though its build is newer).
        step(&mut state, "thrifty", "x86_64-linux", &[], "");
        build(&mut state, 6, 2, "thrifty", 0);
        if let Some(j) = state.jobsets.get_mut(&hydra_db::ids::JobsetId(1)) {
            j.add(hydra_db::now().into(), 1000);
        }
        let w = why(&state, 4);
        assert_eq!(
            w.ahead_by,
            Some(Ahead {
                priority: 1,
                share: 1,
                order: 1
            })
        );
        assert!(
            w.sentence.ends_with(
                "3 steps go first (1 of higher priority, 1 of jobsets with more share left, \
                 1 needed by longer chains or older builds)."
            ),
            "{}",
            w.sentence
        );
        // A slot frees: about to start.
        if let Some(m) = state.machines.get_mut("x86") {
            m.current_jobs = 0;
        }
        assert!(
            why(&state, 4)
                .sentence
                .starts_with("It is about to start: 1 slot is free")
        );
    }

    #[test]
    fn a_build_that_failed_says_when_it_is_tried_again() {
        let mut state = state_with(vec![machine("x86", "x86_64-linux", 1, &[])]);
        step(&mut state, "flaky", "x86_64-linux", &[], "");
        build(&mut state, 1, 1, "flaky", 0);
        state.start("flaky", running("x86"));
        if let Some(s) = state.steps.get_mut("flaky") {
            s.tries = 2;
        }
        state.stop("flaky", Some(Instant::now() + Duration::from_secs(300)));
        let w = why(&state, 1);
        assert_eq!(w.reason, Reason::Retrying);
        assert!(
            w.sentence
                .starts_with("It failed 2 times and is tried again after 29"),
            "{}",
            w.sentence
        );
    }
}
