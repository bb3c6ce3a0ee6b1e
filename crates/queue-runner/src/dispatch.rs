//! The dispatcher: gives runnable steps to machines with free slots the
//! moment it is woken (a step became runnable, a step finished, a build
//! was loaded or bumped), and at the next retry or back-off deadline.
//!
//! Steps go in this order: highest global priority, least fair share used
//! by their jobsets over the last day, longest chain of steps waiting for
//! them, highest local priority, lowest build id. Machines are taken least
//! loaded (relative to their speed) first, then fastest. A machine gets a
//! step only if it builds the step's system, has every feature the step
//! requires, and the step requires every one of its mandatory features.

use hydra_db::ids::BuildId;
use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::QueueError;
use crate::ready::Rank;
use crate::state::{Queue, Running, State, Stats};
use crate::step;

/// Runs the dispatcher until the queue stops.
pub(crate) async fn run(queue: Arc<Queue>) -> Result<(), QueueError> {
    loop {
        // Without the single-instance lock another queue runner may be
        // dispatching: start nothing until it is taken again.
        if !queue.lock_held.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::select! {
                _ = queue.dispatch.notified() => {}
                _ = queue.stopping.cancelled() => return Ok(()),
            }
            continue;
        }
        let started = Instant::now();
        let Plan {
            assigned,
            unsupported,
            wake_in,
        } = plan(&queue);
        for Assignment {
            drv,
            machine,
            cancel,
        } in assigned
        {
            let q = queue.clone();
            let mut tasks = queue.tasks.lock().await;
            // Finished tasks are reaped so the set does not grow.
            while tasks.try_join_next().is_some() {}
            tasks.spawn(async move { step::run(q, drv, machine, cancel).await });
        }
        for drv in unsupported {
            step::fail_unsupported(&queue, &drv).await;
        }
        Stats::add(
            &queue.stats.dispatch_time_us,
            started.elapsed().as_micros() as u64,
        );
        Stats::add(&queue.stats.dispatcher_wakeups, 1);
        let wait = wake_in.unwrap_or(Duration::from_secs(60));
        tokio::select! {
            _ = queue.dispatch.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = queue.stopping.cancelled() => return Ok(()),
        }
    }
}

/// What makes a runnable step go first, in this order: highest global
/// priority, least share used, longest critical path, highest local
/// priority, lowest build id.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct StepKey {
    pub(crate) global_priority: i32,
    pub(crate) share_used: f64,
    pub(crate) critical_path: u32,
    pub(crate) local_priority: i32,
    pub(crate) lowest_build_id: BuildId,
}

impl StepKey {
    /// `Less` when `self` goes first.
    pub(crate) fn order(&self, other: &StepKey) -> Ordering {
        other
            .global_priority
            .cmp(&self.global_priority)
            .then(
                self.share_used
                    .partial_cmp(&other.share_used)
                    .unwrap_or(Ordering::Equal),
            )
            .then(other.critical_path.cmp(&self.critical_path))
            .then(other.local_priority.cmp(&self.local_priority))
            .then(self.lowest_build_id.cmp(&other.lowest_build_id))
    }
}

/// A step given to a machine.
struct Assignment {
    drv: String,
    /// The machine's store URI.
    machine: String,
    cancel: CancellationToken,
}

/// What one round of dispatching decided.
struct Plan {
    assigned: Vec<Assignment>,
    /// Steps no machine has supported for `max_unsupported_time`.
    unsupported: Vec<String>,
    /// How long until something may change without a wake-up.
    wake_in: Option<Duration>,
}

/// The earliest of the moments something may change.
#[derive(Default)]
struct Wake(Option<Instant>);

impl Wake {
    fn at(&mut self, t: Instant) {
        self.0 = Some(self.0.map_or(t, |n| n.min(t)));
    }
}

/// Decides which steps start where; marks them running and the machines
/// busy.
fn plan(queue: &Queue) -> Plan {
    let now = Instant::now();
    let now_unix = i64::from(hydra_db::now());
    let max_unsupported = Duration::from_secs(queue.ctx.config.queue_runner.max_unsupported_time);
    let mut guard = queue.lock();
    let state = &mut *guard;
    state.machines.reload_if_changed();
    for j in state.jobsets.values_mut() {
        j.prune(now_unix);
    }
    let mut wake = Wake::default();
    for m in state.machines.list() {
        if let Some(t) = m.disabled_until
            && t > now
        {
            wake.at(t);
        }
    }
    if let Some(t) = state.list_due(now) {
        wake.at(t);
    }
    let (supported, unsupported) = supported_groups(state, now, max_unsupported, &mut wake);
    let picks = choose(state, &supported, now);
    let assigned = picks
        .into_iter()
        .map(|(mi, drv)| {
            let machine = {
                let m = &mut state.machines.list_mut()[mi];
                m.current_jobs += 1;
                m.idle_since = None;
                m.machine.store_uri.clone()
            };
            let cancel = queue.stopping.child_token();
            state.start(
                &drv,
                Running {
                    machine: machine.clone(),
                    started: Instant::now(),
                    cancel: cancel.clone(),
                },
            );
            Assignment {
                drv,
                machine,
                cancel,
            }
        })
        .collect();
    Plan {
        assigned,
        unsupported,
        wake_in: wake
            .0
            .map(|t| t.saturating_duration_since(now) + Duration::from_millis(5)),
    }
}

/// Which groups of runnable steps some enabled machine supports; and the
/// steps of the others that no machine has supported for
/// `max_unsupported` (the rest say when to look again).
fn supported_groups(
    state: &mut State,
    now: Instant,
    max_unsupported: Duration,
    wake: &mut Wake,
) -> (Vec<bool>, Vec<String>) {
    let mut unsupported = Vec::new();
    let mut supported = Vec::with_capacity(state.ready.groups().len());
    for gi in 0..state.ready.groups().len() {
        let group = &state.ready.groups()[gi];
        let ok = state
            .machines
            .list()
            .iter()
            .any(|m| m.enabled && m.machine.supports(&group.system, &group.features));
        supported.push(ok);
        if ok {
            state.ready.groups_mut()[gi].since_supported = now;
            continue;
        }
        if group.len == 0 {
            continue;
        }
        let since = group.since_supported;
        if now < since + max_unsupported {
            wake.at(since + max_unsupported);
            continue;
        }
        for drv in group.drvs() {
            let Some(step) = state.steps.get(drv) else {
                continue;
            };
            let deadline = step.queued_at.max(since) + max_unsupported;
            if now >= deadline {
                unsupported.push(drv.to_string());
            } else {
                wake.at(deadline);
            }
        }
    }
    (supported, unsupported)
}

/// One jobset's ranked steps of a group, in order, with the jobset's share.
struct Cursor<'a> {
    share_used: f64,
    ranks: std::iter::Peekable<std::collections::btree_set::Iter<'a, Rank>>,
}

/// Which runnable steps go to which machines (by index), in order: each
/// round the most preferred machine with a free slot gets the first step
/// (see [`StepKey`]) it supports. Looks only at the heads of the ordered
/// sets, so it costs what it starts.
fn choose(state: &State, supported: &[bool], now: Instant) -> Vec<(usize, String)> {
    let machines = state.machines.list();
    let mut jobs: Vec<u32> = machines.iter().map(|m| m.current_jobs).collect();
    let usable: Vec<usize> = (0..machines.len())
        .filter(|&i| machines[i].available(now))
        .collect();
    if usable.iter().all(|&i| !machines[i].has_capacity()) {
        return Vec::new();
    }
    // The groups some machine takes, with their jobsets' cursors, and
    // which usable machine takes which group.
    let mut groups: Vec<(usize, Vec<Cursor<'_>>)> = state
        .ready
        .groups()
        .iter()
        .enumerate()
        .filter(|(gi, g)| supported[*gi] && g.len > 0)
        .map(|(gi, g)| {
            let cursors = g
                .by_jobset
                .iter()
                .map(|(jobset, ranks)| Cursor {
                    share_used: state.jobset_share_used(*jobset),
                    ranks: ranks.iter().peekable(),
                })
                .collect();
            (gi, cursors)
        })
        .collect();
    let fits: Vec<Vec<bool>> = machines
        .iter()
        .map(|m| {
            groups
                .iter()
                .map(|(gi, _)| {
                    let g = &state.ready.groups()[*gi];
                    m.machine.supports(&g.system, &g.features)
                })
                .collect()
        })
        .collect();
    let mut taken: HashSet<&str> = HashSet::new();
    let mut picks = Vec::new();
    loop {
        // Machines with a free slot, in order of preference.
        let mut free: Vec<usize> = usable
            .iter()
            .copied()
            .filter(|&i| jobs[i] < machines[i].machine.max_jobs)
            .collect();
        let load = |i: usize| {
            (f64::from(jobs[i]) / machines[i].machine.speed_factor.max(0.001)).round() as i64
        };
        free.sort_by(|&a, &b| {
            load(a)
                .cmp(&load(b))
                .then(
                    machines[b]
                        .machine
                        .speed_factor
                        .partial_cmp(&machines[a].machine.speed_factor)
                        .unwrap_or(Ordering::Equal),
                )
                .then(jobs[b].cmp(&jobs[a]))
        });
        let mut picked = None;
        for &mi in &free {
            let mut best: Option<(StepKey, usize, usize)> = None;
            for (k, (_, cursors)) in groups.iter_mut().enumerate() {
                if !fits[mi][k] {
                    continue;
                }
                for (ci, cursor) in cursors.iter_mut().enumerate() {
                    while cursor
                        .ranks
                        .next_if(|r| taken.contains(r.drv.as_str()))
                        .is_some()
                    {}
                    let Some(rank) = cursor.ranks.peek() else {
                        continue;
                    };
                    let key = rank.key(cursor.share_used);
                    if best
                        .as_ref()
                        .is_none_or(|(b, _, _)| key.order(b) == Ordering::Less)
                    {
                        best = Some((key, k, ci));
                    }
                }
            }
            if let Some((_, k, ci)) = best {
                picked = Some((mi, k, ci));
                break;
            }
        }
        let Some((mi, k, ci)) = picked else { break };
        let Some(rank) = groups[k].1[ci].ranks.next() else {
            break;
        };
        taken.insert(rank.drv.as_str());
        jobs[mi] += 1;
        picks.push((mi, rank.drv.clone()));
    }
    picks
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn key(global: i32, share: f64, path: u32, local: i32, id: i32) -> StepKey {
        StepKey {
            global_priority: global,
            share_used: share,
            critical_path: path,
            local_priority: local,
            lowest_build_id: BuildId(id),
        }
    }

    use crate::machines::Machines;
    use crate::state::Build;
    use hydra_db::ids::JobsetId;
    use hydra_nix::derivation::Derivation;
    use hydra_nix::machines::Machine;
    use std::collections::{BTreeMap, BTreeSet};

    pub(crate) fn machine(uri: &str, system: &str, max_jobs: u32, features: &[&str]) -> Machine {
        Machine {
            store_uri: uri.into(),
            systems: vec![system.into()],
            ssh_key: None,
            max_jobs,
            speed_factor: 1.0,
            supported_features: features.iter().map(|f| f.to_string()).collect(),
            mandatory_features: BTreeSet::new(),
            host_key: None,
        }
    }

    /// Adds step `name` for `system` waiting for `deps` (added before).
    pub(crate) fn step(state: &mut State, name: &str, system: &str, deps: &[&str], features: &str) {
        let mut drv = Derivation {
            platform: system.into(),
            ..Derivation::default()
        };
        if !features.is_empty() {
            drv.env
                .insert("requiredSystemFeatures".into(), features.into());
        }
        state.add_step(name, &drv, BTreeMap::new(), Instant::now());
        for d in deps {
            state.link(name, d);
        }
    }

    /// Queues build `id` of `jobset` with top-level step `top`.
    pub(crate) fn build(state: &mut State, id: i32, jobset: i32, top: &str, global_priority: i32) {
        let build = Build {
            id: BuildId(id),
            drv_path: top.into(),
            jobset_id: JobsetId(jobset),
            project: "p".into(),
            jobset: format!("j{jobset}"),
            job: format!("b{id}"),
            max_silent: None,
            timeout: None,
            timestamp: 0,
            local_priority: 0,
            global_priority,
            toplevel: top.into(),
        };
        if let Some(s) = state.steps.get_mut(top) {
            s.builds.insert(build.id);
        }
        state.propagate(top, &build);
        state.jobsets.entry(JobsetId(jobset)).or_default().shares = 1;
        state.builds.insert(build.id, build);
    }

    fn picks(state: &State) -> Vec<(String, String)> {
        let supported = vec![true; state.ready.groups().len()];
        choose(state, &supported, Instant::now())
            .into_iter()
            .map(|(mi, drv)| (state.machines.list()[mi].machine.store_uri.clone(), drv))
            .collect()
    }

    fn path(state: &State, drv: &str) -> u32 {
        state.steps[drv].critical_path
    }

    #[test]
    fn critical_paths_follow_the_graph_as_it_grows_and_shrinks() {
        let mut state = State::default();
        step(&mut state, "cc", "x86_64-linux", &[], "");
        step(&mut state, "lib", "x86_64-linux", &["cc"], "");
        assert_eq!((path(&state, "cc"), path(&state, "lib")), (2, 1));
        step(&mut state, "app", "x86_64-linux", &["lib"], "");
        step(&mut state, "tool", "x86_64-linux", &["cc"], "");
        assert_eq!(path(&state, "cc"), 3);
        // The longest chain leaves: the path shrinks to the other one.
        build(&mut state, 1, 1, "tool", 0);
        state.remove_step("app");
        assert_eq!((path(&state, "lib"), path(&state, "cc")), (1, 2));
        // `lib` waits for nothing a build needs: released, with nothing
        // else, since `tool` still needs `cc`.
        assert!(state.release(["lib".to_string()]).is_empty());
        assert!(!state.steps.contains_key("lib"));
        assert_eq!(path(&state, "cc"), 2);
        assert!(state.steps.contains_key("cc"));
        // The build leaves: its steps go with it.
        state.builds.clear();
        state.release(["tool".to_string()]);
        assert!(state.steps.is_empty());
        assert!(picks(&state).is_empty());
    }

    #[test]
    fn a_pass_takes_the_best_runnable_steps_each_machine_can_build() {
        let mut state = State {
            machines: Machines::of(vec![
                machine("x86", "x86_64-linux", 2, &[]),
                machine("arm", "aarch64-linux", 1, &["big"]),
            ]),
            ..State::default()
        };
        // Jobset 1 used more than its share; jobset 2 nothing.
        step(&mut state, "x-old", "x86_64-linux", &[], "");
        build(&mut state, 1, 1, "x-old", 0);
        step(&mut state, "x-new", "x86_64-linux", &[], "");
        build(&mut state, 5, 2, "x-new", 0);
        step(&mut state, "x-deep", "x86_64-linux", &[], "");
        step(&mut state, "x-top", "x86_64-linux", &["x-deep"], "");
        build(&mut state, 3, 2, "x-top", 0);
        step(&mut state, "x-urgent", "x86_64-linux", &[], "");
        build(&mut state, 9, 1, "x-urgent", 10);
        step(&mut state, "a-big", "aarch64-linux", &[], "big");
        build(&mut state, 2, 1, "a-big", 0);
        step(&mut state, "a-plain", "aarch64-linux", &[], "");
        build(&mut state, 4, 2, "a-plain", 0);
        if let Some(j) = state.jobsets.get_mut(&JobsetId(1)) {
            j.add(0, 1000);
        }
        // Priority first, then the lesser share, then the longer chain.
        // The arm machine, less loaded, comes second: of its two steps the
        // one of the jobset with less share used goes first (its feature
        // is not mandatory, so it takes steps without it).
        assert_eq!(
            picks(&state),
            [
                ("x86".to_string(), "x-urgent".to_string()),
                ("arm".to_string(), "a-plain".to_string()),
                ("x86".to_string(), "x-deep".to_string()),
            ]
        );
        // Started steps leave the index; the next pass takes the rest.
        for (machine, drv) in picks(&state) {
            let Some(m) = state.machines.get_mut(&machine) else {
                panic!("no machine {machine}")
            };
            m.current_jobs += 1;
            state.start(
                &drv,
                Running {
                    machine,
                    started: Instant::now(),
                    cancel: CancellationToken::new(),
                },
            );
        }
        assert!(picks(&state).is_empty());
        // `x-deep` finishes: `x-top` becomes runnable; a slot frees.
        state.remove_step("x-deep");
        if let Some(m) = state.machines.get_mut("x86") {
            m.current_jobs -= 1;
        }
        assert_eq!(picks(&state), [("x86".to_string(), "x-top".to_string())]);
        // A step to retry waits for its time, then runs again.
        state.stop("x-urgent", Some(Instant::now() + Duration::from_secs(3600)));
        if let Some(m) = state.machines.get_mut("x86") {
            m.current_jobs -= 1;
        }
        assert_eq!(
            picks(&state),
            [
                ("x86".to_string(), "x-top".to_string()),
                ("x86".to_string(), "x-new".to_string())
            ]
        );
        assert!(state.list_due(Instant::now()).is_some());
        assert!(
            state
                .list_due(Instant::now() + Duration::from_secs(3601))
                .is_none()
        );
        assert_eq!(
            picks(&state)[0],
            ("x86".to_string(), "x-urgent".to_string())
        );
        // A bump reorders what is already ranked.
        let bumped = Build {
            global_priority: 20,
            ..state.builds[&BuildId(1)].clone()
        };
        state.propagate("x-old", &bumped);
        assert_eq!(picks(&state)[0], ("x86".to_string(), "x-old".to_string()));
    }

    #[test]
    fn steps_go_by_priority_then_share_then_path_then_local_priority_then_age() {
        let mut keys = [
            key(0, 0.5, 1, 0, 1),
            key(0, 0.1, 1, 0, 2),
            key(5, 0.9, 1, 0, 3),
            key(0, 0.1, 4, 0, 4),
            key(0, 0.1, 4, 7, 5),
            key(0, 0.1, 4, 7, 0),
        ];
        keys.sort_by(StepKey::order);
        let ids: Vec<i32> = keys.iter().map(|k| k.lowest_build_id.0).collect();
        assert_eq!(ids, [3, 0, 5, 4, 2, 1]);
    }
}
