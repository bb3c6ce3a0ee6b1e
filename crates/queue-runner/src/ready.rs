//! The runnable steps, kept in the dispatcher's order as the queue
//! changes, so that a dispatcher pass costs what it starts, not what is
//! queued.
//!
//! Steps are grouped by what a machine must offer (system and required
//! features); within a group, by jobset. Within one jobset the fair share
//! is the same for every step, so each jobset's set is ordered by the
//! rest of the dispatcher's key (global priority, critical path, local
//! priority, build id) and stays ordered as steps come and go. A pass
//! merges the sets of a group by the full key, shares included (see
//! `dispatch.rs`). A step of several jobsets is in the set of each; the
//! merge meets it first where its share is least, which is its key.
//!
//! Steps waiting to be retried wait apart, ordered by when they may run.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use hydra_db::ids::{BuildId, JobsetId};

use crate::dispatch::StepKey;

/// A runnable step's place within its jobset: what goes first sorts first.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Rank {
    pub(crate) global_priority: Reverse<i32>,
    pub(crate) critical_path: Reverse<u32>,
    pub(crate) local_priority: Reverse<i32>,
    pub(crate) lowest_build_id: BuildId,
    pub(crate) drv: String,
}

impl Rank {
    /// The dispatcher's key of the step, with the share its jobset used.
    pub(crate) fn key(&self, share_used: f64) -> StepKey {
        StepKey {
            global_priority: self.global_priority.0,
            share_used,
            critical_path: self.critical_path.0,
            local_priority: self.local_priority.0,
            lowest_build_id: self.lowest_build_id,
        }
    }
}

/// The runnable steps a kind of machine can take.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) system: String,
    pub(crate) features: BTreeSet<String>,
    /// When some machine last supported the group (or when it was made).
    pub(crate) since_supported: Instant,
    /// Ranked steps by jobset (`None`: steps no build of a jobset needs
    /// yet).
    pub(crate) by_jobset: HashMap<Option<JobsetId>, BTreeSet<Rank>>,
    /// How many distinct steps are ranked.
    pub(crate) len: usize,
}

impl Group {
    /// Every ranked step once.
    pub(crate) fn drvs(&self) -> BTreeSet<&str> {
        self.by_jobset
            .values()
            .flat_map(|set| set.iter().map(|r| r.drv.as_str()))
            .collect()
    }
}

/// The index.
#[derive(Debug, Default)]
pub(crate) struct Ready {
    groups: Vec<Group>,
    ids: HashMap<(String, BTreeSet<String>), usize>,
    /// Steps to be retried, by when.
    delayed: BTreeSet<(Instant, String)>,
}

/// The sets a step with `jobsets` is ranked in.
fn keys(jobsets: &BTreeSet<JobsetId>) -> Vec<Option<JobsetId>> {
    if jobsets.is_empty() {
        vec![None]
    } else {
        jobsets.iter().copied().map(Some).collect()
    }
}

impl Ready {
    /// The group of steps for `system` with `features` (made if new).
    pub(crate) fn group(
        &mut self,
        system: &str,
        features: &BTreeSet<String>,
        now: Instant,
    ) -> usize {
        let key = (system.to_string(), features.clone());
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = self.groups.len();
        self.groups.push(Group {
            system: key.0.clone(),
            features: key.1.clone(),
            since_supported: now,
            by_jobset: HashMap::new(),
            len: 0,
        });
        self.ids.insert(key, id);
        id
    }

    pub(crate) fn groups(&self) -> &[Group] {
        &self.groups
    }

    pub(crate) fn groups_mut(&mut self) -> &mut [Group] {
        &mut self.groups
    }

    pub(crate) fn insert(&mut self, group: usize, jobsets: &BTreeSet<JobsetId>, rank: Rank) {
        let g = &mut self.groups[group];
        for key in keys(jobsets) {
            g.by_jobset.entry(key).or_default().insert(rank.clone());
        }
        g.len += 1;
    }

    pub(crate) fn remove(&mut self, group: usize, jobsets: &BTreeSet<JobsetId>, rank: &Rank) {
        let g = &mut self.groups[group];
        for key in keys(jobsets) {
            if let Some(set) = g.by_jobset.get_mut(&key) {
                set.remove(rank);
                if set.is_empty() {
                    g.by_jobset.remove(&key);
                }
            }
        }
        g.len = g.len.saturating_sub(1);
    }

    pub(crate) fn delay(&mut self, until: Instant, drv: &str) {
        self.delayed.insert((until, drv.to_string()));
    }

    pub(crate) fn undelay(&mut self, until: Instant, drv: &str) {
        self.delayed.remove(&(until, drv.to_string()));
    }

    /// Takes the delayed steps whose time has come.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<String> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.delayed.first()
            && *at <= now
        {
            if let Some((_, drv)) = self.delayed.pop_first() {
                due.push(drv);
            }
        }
        due
    }

    /// When the next delayed step may run.
    pub(crate) fn next_delayed(&self) -> Option<Instant> {
        self.delayed.first().map(|(at, _)| *at)
    }
}
