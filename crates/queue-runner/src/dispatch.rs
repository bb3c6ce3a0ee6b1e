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
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::QueueError;
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

/// The length of the longest chain of steps waiting for each step.
fn critical_paths(state: &State) -> HashMap<&str, u32> {
    let mut lengths: HashMap<&str, u32> = HashMap::with_capacity(state.steps.len());
    for start in state.steps.keys() {
        if lengths.contains_key(start.as_str()) {
            continue;
        }
        // Iterative post-order over rdeps.
        let mut stack: Vec<(&str, bool)> = vec![(start.as_str(), false)];
        while let Some((drv, expanded)) = stack.pop() {
            if lengths.contains_key(drv) {
                continue;
            }
            let Some(step) = state.steps.get(drv) else {
                continue;
            };
            if expanded {
                let longest = step
                    .rdeps
                    .iter()
                    .filter_map(|r| lengths.get(r.as_str()))
                    .max()
                    .copied()
                    .unwrap_or(0);
                lengths.insert(drv, longest + 1);
            } else {
                stack.push((drv, true));
                for r in &step.rdeps {
                    if !lengths.contains_key(r.as_str()) {
                        stack.push((r.as_str(), false));
                    }
                }
            }
        }
    }
    lengths
}

/// What makes a runnable step go first, in this order: highest global
/// priority, least share used, longest critical path, highest local
/// priority, lowest build id.
#[derive(Clone, Copy, Debug, PartialEq)]
struct StepKey {
    global_priority: i32,
    share_used: f64,
    critical_path: u32,
    local_priority: i32,
    lowest_build_id: BuildId,
}

impl StepKey {
    /// `Less` when `self` goes first.
    fn order(&self, other: &StepKey) -> Ordering {
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
    let (candidates, unsupported) = candidates(state, now, max_unsupported, &mut wake);
    let assigned = if candidates.is_empty() {
        Vec::new()
    } else {
        let order = in_order(state, candidates);
        assign(queue, state, order, now)
    };
    Plan {
        assigned,
        unsupported,
        wake_in: wake
            .0
            .map(|t| t.saturating_duration_since(now) + Duration::from_millis(5)),
    }
}

/// The runnable steps that may start now, and those no machine has
/// supported for `max_unsupported`; the others say when to look again.
fn candidates(
    state: &mut State,
    now: Instant,
    max_unsupported: Duration,
    wake: &mut Wake,
) -> (Vec<String>, Vec<String>) {
    let mut unsupported = Vec::new();
    let mut candidates: Vec<String> = Vec::new();
    let drvs: Vec<String> = state
        .steps
        .iter()
        .filter(|(_, s)| s.is_runnable())
        .map(|(d, _)| d.clone())
        .collect();
    for drv in drvs {
        let supported = {
            let Some(step) = state.steps.get(&drv) else {
                continue;
            };
            state
                .machines
                .list()
                .iter()
                .any(|m| m.enabled && m.machine.supports(&step.system, &step.required_features))
        };
        let Some(step) = state.steps.get_mut(&drv) else {
            continue;
        };
        if supported {
            step.last_supported = now;
        } else {
            let deadline = step.last_supported + max_unsupported;
            if now >= deadline {
                unsupported.push(drv);
            } else {
                wake.at(deadline);
            }
            continue;
        }
        if let Some(after) = step.after
            && after > now
        {
            wake.at(after);
            continue;
        }
        candidates.push(drv);
    }
    (candidates, unsupported)
}

/// `candidates` in the order they get machines (see [`StepKey`]).
fn in_order(state: &State, candidates: Vec<String>) -> Vec<String> {
    let paths = critical_paths(state);
    let key = |drv: &String| {
        let s = &state.steps[drv];
        StepKey {
            global_priority: s.highest_global_priority,
            share_used: state.share_used(s),
            critical_path: paths.get(drv.as_str()).copied().unwrap_or(0),
            local_priority: s.highest_local_priority,
            lowest_build_id: s.lowest_build_id,
        }
    };
    let mut keyed: Vec<(StepKey, String)> = candidates.into_iter().map(|d| (key(&d), d)).collect();
    keyed.sort_by(|(a, _), (b, _)| a.order(b));
    keyed.into_iter().map(|(_, d)| d).collect()
}

/// Gives steps, in `order`, to the machines that take them: each round
/// the most preferred machine with a free slot gets the first step it
/// supports.
fn assign(queue: &Queue, state: &mut State, order: Vec<String>, now: Instant) -> Vec<Assignment> {
    let mut order: Vec<Option<String>> = order.into_iter().map(Some).collect();
    let mut assigned = Vec::new();
    loop {
        // Machines in order of preference.
        let mut machines: Vec<usize> = (0..state.machines.list().len())
            .filter(|&i| {
                let m = &state.machines.list()[i];
                m.available(now) && m.has_capacity()
            })
            .collect();
        machines.sort_by(|&a, &b| {
            let (ma, mb) = (&state.machines.list()[a], &state.machines.list()[b]);
            let load = |m: &crate::machines::MachineState| {
                (f64::from(m.current_jobs) / m.machine.speed_factor.max(0.001)).round() as i64
            };
            load(ma)
                .cmp(&load(mb))
                .then(
                    mb.machine
                        .speed_factor
                        .partial_cmp(&ma.machine.speed_factor)
                        .unwrap_or(Ordering::Equal),
                )
                .then(mb.current_jobs.cmp(&ma.current_jobs))
        });
        let mut picked = None;
        'machines: for &mi in &machines {
            let machine = &state.machines.list()[mi];
            for (oi, slot) in order.iter().enumerate() {
                let Some(drv) = slot else { continue };
                let step = &state.steps[drv];
                if machine
                    .machine
                    .supports(&step.system, &step.required_features)
                {
                    picked = Some((mi, oi));
                    break 'machines;
                }
            }
        }
        let Some((mi, oi)) = picked else { break };
        let Some(drv) = order[oi].take() else { break };
        let uri = {
            let m = &mut state.machines.list_mut()[mi];
            m.current_jobs += 1;
            m.idle_since = None;
            m.machine.store_uri.clone()
        };
        let cancel = queue.stopping.child_token();
        if let Some(step) = state.steps.get_mut(&drv) {
            step.running = Some(Running {
                machine: uri.clone(),
                cancel: cancel.clone(),
            });
        }
        assigned.push(Assignment {
            drv,
            machine: uri,
            cancel,
        });
    }
    assigned
}

#[cfg(test)]
mod tests {
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
