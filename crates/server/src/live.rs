//! Live pages: one connection of the server LISTENs on the database's
//! channels and fans what happens out to every open page over one
//! Server-Sent-Events stream each (`/events`). No page polls: a page asks
//! for its new content only when something it shows has changed.
//!
//! Each event names the builds, jobsets and projects it concerns, so a
//! page can tell whether it is about it. Event ids are `<instance>-<n>`:
//! a page that reconnects with `Last-Event-ID` is sent what it missed
//! while the server remembers it, and a `reset` (read the page afresh)
//! when it does not: after a restart of the server, a lost database
//! connection, or a gap longer than the memory.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::broadcast;

use crate::state::AppState;

/// The channels whose notifications change what pages show.
const CHANNELS: &[&str] = &[
    "build_queued",
    "build_started",
    "step_started",
    "step_finished",
    "build_finished",
    "cached_build_finished",
    "cached_build_queued",
    "builds_added",
    "builds_deleted",
    "builds_restarted",
    "builds_cancelled",
    "builds_bumped",
    "eval_started",
    "eval_added",
    "eval_failed",
    "eval_cached",
    "jobsets_added",
    "jobsets_deleted",
    "jobset_scheduling_changed",
];

/// Events remembered for pages that reconnect.
const REMEMBERED: usize = 512;

/// Something that happened, and what it concerns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Change {
    /// The channel it came on, or `reset`.
    pub kind: String,
    pub builds: Vec<i64>,
    /// `project:jobset`.
    pub jobsets: Vec<String>,
    pub projects: Vec<String>,
}

/// The fan-out of changes to the open pages.
#[derive(Debug)]
pub struct Live {
    sender: broadcast::Sender<(u64, Change)>,
    recent: Mutex<VecDeque<(u64, Change)>>,
    next: AtomicU64,
    /// Tells this run of the server from others in event ids.
    instance: String,
    started: std::sync::OnceLock<()>,
}

impl Default for Live {
    fn default() -> Live {
        let (sender, _) = broadcast::channel(REMEMBERED);
        let instance = crate::passwords::new_secret()
            .chars()
            .take(8)
            .collect::<String>();
        Live {
            sender,
            recent: Mutex::new(VecDeque::new()),
            next: AtomicU64::new(1),
            instance,
            started: std::sync::OnceLock::new(),
        }
    }
}

impl Live {
    /// Sends `change` to every open page.
    pub(crate) fn publish(&self, change: Change) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut recent) = self.recent.lock() {
            recent.push_back((n, change.clone()));
            while recent.len() > REMEMBERED {
                recent.pop_front();
            }
        }
        // No open page is not an error.
        let _ = self.sender.send((n, change));
    }

    /// What a page that saw event `last` missed, or `None` when that is
    /// not known (another run of the server, or forgotten).
    fn since(&self, last: &str) -> Option<Vec<(u64, Change)>> {
        let (instance, n) = last.rsplit_once('-')?;
        let n: u64 = n.parse().ok()?;
        if instance != self.instance {
            return None;
        }
        let recent = self.recent.lock().ok()?;
        let oldest = recent
            .front()
            .map_or(self.next.load(Ordering::Relaxed), |e| e.0);
        if n + 1 < oldest {
            return None;
        }
        Some(recent.iter().filter(|e| e.0 > n).cloned().collect())
    }

    fn id(&self, n: u64) -> String {
        format!("{}-{n}", self.instance)
    }

    /// The id of the last change sent (`<run>-0` before the first): a
    /// page rendered now asks `/events?since=` for what came after, so a
    /// change between its rendering and its connection is not lost.
    pub(crate) fn last_id(&self) -> String {
        self.id(self.next.load(Ordering::Relaxed).saturating_sub(1))
    }
}

/// The builds a notification's payload names (TAB-separated fields).
fn payload_builds(channel: &str, payload: &str) -> Vec<i64> {
    let fields: Vec<&str> = payload.split('\t').collect();
    let numbers = |fs: &[&str]| fs.iter().filter_map(|f| f.parse().ok()).collect();
    match channel {
        "build_queued" | "build_started" | "build_finished" | "builds_added" => numbers(&fields),
        "step_started" | "step_finished" => numbers(&fields[..fields.len().min(1)]),
        "cached_build_finished" | "cached_build_queued" => numbers(&fields[1.min(fields.len())..]),
        _ => Vec::new(),
    }
}

/// The jobset an evaluation notification names (`traceId`, `jobsetId`, …).
fn payload_jobset(channel: &str, payload: &str) -> Option<i32> {
    channel
        .starts_with("eval_")
        .then(|| payload.split('\t').nth(1)?.parse().ok())?
}

/// A notification as a change, with the jobsets and projects of what it
/// names read from the database.
async fn change_of(pool: &PgPool, channel: &str, payload: &str) -> Change {
    let builds = payload_builds(channel, payload);
    let jobset = payload_jobset(channel, payload);
    let ids: Vec<i32> = builds
        .iter()
        .filter_map(|b| i32::try_from(*b).ok())
        .collect();
    let names = hydra_db::jobsets::names_of(pool, &ids, jobset)
        .await
        .unwrap_or_default();
    let mut projects: Vec<String> = names.iter().map(|(p, _)| p.clone()).collect();
    projects.sort();
    projects.dedup();
    Change {
        kind: channel.to_string(),
        builds,
        jobsets: names.iter().map(|(p, j)| format!("{p}:{j}")).collect(),
        projects,
    }
}

/// LISTENs and publishes until the pool closes; a lost connection is a
/// `reset` for every page (notifications may have been missed).
async fn feed(state: AppState) {
    let mut listener = match hydra_db::listen::Listener::connect(&state.pool, CHANNELS).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "live pages: cannot listen for changes");
            return;
        }
    };
    loop {
        match listener.recv().await {
            Ok(hydra_db::listen::Wakeup::Notification { channel, payload }) => {
                let change = change_of(&state.pool, &channel, &payload).await;
                state.live.publish(change);
            }
            Ok(hydra_db::listen::Wakeup::Rescan) => state.live.publish(Change {
                kind: "reset".into(),
                ..Change::default()
            }),
            Err(_) => return,
        }
    }
}

fn event(live: &Live, n: u64, change: &Change) -> Event {
    Event::default()
        .id(live.id(n))
        .data(serde_json::to_string(change).unwrap_or_default())
}

fn reset() -> Event {
    Event::default().event("reset").data("{}")
}

/// `?since=`: the last change a page knew of when it was rendered.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct EventsQuery {
    since: Option<String>,
}

/// `/events[?since=ID]`: the changes, as Server-Sent Events; a client
/// that names the last change it knew of (`Last-Event-ID`, else `since`)
/// first gets those that came after it.
pub(crate) async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<EventsQuery>,
) -> Response {
    if state.live.started.set(()).is_ok() {
        tokio::spawn(feed(state.clone()));
    }
    let receiver = state.live.sender.subscribe();
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(String::from)
        .or(q.since);
    let missed: Vec<Event> = match last.as_deref() {
        None => Vec::new(),
        Some(last) => match state.live.since(last) {
            Some(events) => events
                .iter()
                .map(|(n, c)| event(&state.live, *n, c))
                .collect(),
            None => vec![reset()],
        },
    };
    let live = state.clone();
    let upcoming = futures_util::stream::unfold(receiver, move |mut receiver| {
        let live = live.clone();
        async move {
            let event = match receiver.recv().await {
                Ok((n, change)) => event(&live.live, n, &change),
                // Too slow to keep up: read the page afresh.
                Err(broadcast::error::RecvError::Lagged(_)) => reset(),
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((event, receiver))
        }
    });
    let stream = futures_util::StreamExt::chain(futures_util::stream::iter(missed), upcoming);
    let stream = futures_util::StreamExt::map(stream, Ok::<_, std::convert::Infallible>);
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_their_builds_and_jobsets() {
        assert_eq!(payload_builds("build_finished", "5\t6\t7"), [5, 6, 7]);
        assert_eq!(payload_builds("step_finished", "5\t2\t/log"), [5]);
        assert_eq!(payload_builds("cached_build_queued", "9\t5"), [5]);
        assert_eq!(payload_builds("builds_added", "?"), Vec::<i64>::new());
        assert_eq!(payload_jobset("eval_added", "123.4\t7\t9"), Some(7));
        assert_eq!(payload_jobset("build_queued", "1"), None);
    }

    #[test]
    fn a_page_that_reconnects_gets_what_it_missed_or_a_reset() {
        let live = Live::default();
        for kind in ["a", "b", "c"] {
            live.publish(Change {
                kind: kind.into(),
                ..Change::default()
            });
        }
        let kinds = |v: Vec<(u64, Change)>| v.into_iter().map(|(_, c)| c.kind).collect::<Vec<_>>();
        assert_eq!(kinds(live.since(&live.id(1)).unwrap()), ["b", "c"]);
        assert_eq!(
            kinds(live.since(&live.id(3)).unwrap()),
            Vec::<String>::new()
        );
        assert!(live.since("other-1").is_none(), "another run of the server");
        assert!(live.since("garbage").is_none());
        for _ in 0..REMEMBERED {
            live.publish(Change::default());
        }
        assert!(live.since(&live.id(1)).is_none(), "forgotten");
    }
}
