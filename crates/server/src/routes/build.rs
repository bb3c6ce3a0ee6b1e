//! `/build/<id>`: a build, its steps, and the actions on it.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use serde_json::{Value, json};

use super::actions::{self, Action};
use hydra_db::ids::BuildId;

use super::parse_id;
use crate::auth::{SameOrigin, Viewer};
use crate::error::{ApiError, ApiResult};
use crate::extract::BuildPath;
use crate::negotiate::{Page, WantsPage};
use crate::state::AppState;
use crate::views;

/// The Build object, straight from the one query that renders it.
pub(crate) async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    WantsPage(page): WantsPage,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = BuildId(parse_id(&id, "build")?);
    let json = views::build_json(&state.pool, id)
        .await?
        .ok_or_else(|| BuildPath::missing(id))?;
    let mut extra = serde_json::Map::new();
    if page {
        let pool = &state.pool;
        if let Some(r) = views::build::reproduction(pool, id).await? {
            extra.insert(
                "reproduce".into(),
                json!(
                    crate::reproduce::flake_command(&r).unwrap_or_else(|| format!(
                        "curl -sSf {}build/{id}/reproduce | bash",
                        crate::auth::base_url(&state, &headers)
                    ))
                ),
            );
        }
        let steps = views::build::steps(pool, id).await?;
        extra.insert("steps".into(), json!(steps));
        if hydra_db::builds::progress(pool, id).await? == Some(hydra_db::builds::Progress::Queued) {
            // The queue runner's latest prediction, else the last recorded.
            let waiting = super::admin::waiting(&state, id).await;
            let live = waiting
                .as_ref()
                .and_then(|w| w.get("eta"))
                .filter(|e| !e.is_null())
                .cloned();
            if let Some(waiting) = waiting {
                extra.insert("waiting".into(), waiting);
            }
            match live {
                Some(eta) => {
                    extra.insert("eta".into(), eta);
                }
                None => {
                    if let Some(eta) = hydra_db::etas::latest(pool, id).await? {
                        extra.insert("eta".into(), json!(eta));
                    }
                }
            }
        }
        if let Some((reason, eval)) = hydra_db::builds::cancellation(pool, id).await? {
            extra.insert(
                "cancellation".into(),
                json!({ "reason": reason, "eval": eval }),
            );
        }
        extra.insert(
            "details".into(),
            json!(views::build::details(pool, id).await?),
        );
        let (success, broken) = views::build::previous(pool, id).await?;
        extra.insert("last_success".into(), json!(success));
        extra.insert("first_broken".into(), json!(broken));
        if let Some(uri) = &state.config.web.binary_cache_public_uri {
            extra.insert("cache_uri".into(), json!(uri));
        }
        let used_by = views::build::used_by(pool, id, 100).await?;
        if !used_by.is_empty() {
            extra.insert("used_by".into(), json!(used_by));
        }
        extra.insert(
            "notifications".into(),
            views::build::notifications(pool, id).await?,
        );
        if let Some(hook) = hydra_db::run_commands::hook_facts(pool, id).await?
            && hydra_db::run_commands::is_hook(&hook.job)
        {
            let state_text =
                super::jobset::dynamic_run_command_state(&state, &hook.project, hook.jobset_allows)
                    .await?;
            extra.insert("dynamic_runcommand".into(), json!(state_text));
        }
        let runs = hydra_db::run_commands::of_build(pool, id).await?;
        if !runs.is_empty() {
            let now = hydra_db::now();
            let runs: Vec<serde_json::Value> = runs
                .iter()
                .map(|r| {
                    json!({
                        "uuid": r.uuid,
                        "command": r.command,
                        "start_time": r.start_time,
                        "end_time": r.end_time,
                        "running_for": r.start_time.map(|s| i64::from(r.end_time.unwrap_or(now)) - i64::from(s)),
                        "succeeded": r.did_succeed(),
                        "outcome": run_outcome(r),
                    })
                })
                .collect();
            extra.insert("runcommands".into(), json!(runs));
        }
        let constituents = views::build::constituents(pool, id).await?;
        if !constituents.is_empty() {
            extra.insert(
                "constituents".into(),
                json!(views::builds_json(pool, &constituents).await?),
            );
        }
        let evals = views::build::evals(pool, id).await?;
        if let Some(eval) = evals.last() {
            // The inputs of the first evaluation that has it.
            let e = views::evals_json(pool, &[*eval]).await?;
            extra.insert(
                "inputs".into(),
                e.first()
                    .and_then(|e| e.get("jobsetevalinputs"))
                    .cloned()
                    .unwrap_or_default(),
            );
        }
    }
    Ok(crate::negotiate::json_text_with("build", json, extra))
}

/// `/build/<id>/notifications`: the build's commit statuses and the
/// notification tasks about it being retried or given up (the build
/// object itself stays Hydra's).
pub(crate) async fn notifications(
    State(state): State<AppState>,
    build: BuildPath,
) -> ApiResult<Page> {
    Ok(Page::value(
        "build-notifications",
        views::build::notifications(&state.pool, build.id).await?,
    ))
}

/// `/build/<id>/notifications/<status|task>/<n>/retry`: the admin tries a
/// given-up commit status or notification task of the build again.
pub(crate) async fn retry_notification(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    _csrf: SameOrigin,
    build: BuildPath,
    Path((_, kind, n)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    viewer.require_admin()?;
    let n: i32 = n
        .parse()
        .map_err(|_| ApiError::bad_request(format!("Invalid notification number ‘{n}’.")))?;
    let now = hydra_db::now();
    let retried = match kind.as_str() {
        "status" => hydra_db::commit_statuses::retry_dropped(&state.pool, n, build.id, now).await?,
        "task" => hydra_db::task_retries::revive(&state.pool, n, build.id, now).await?,
        _ => {
            return Err(ApiError::not_found(format!(
                "No such kind of notification ‘{kind}’: use status or task."
            )));
        }
    };
    if !retried {
        return Err(ApiError::not_found(format!(
            "Build {} has no given-up {kind} {n}.",
            build.id
        )));
    }
    Ok(actions::back_saying(
        &state,
        &headers,
        &format!("build/{}#tabs-notifications", build.id),
        "The notification will be sent again.",
    ))
}

/// How a RunCommand run ended, as Hydra's build page says it (empty
/// while it runs or before it starts).
fn run_outcome(r: &hydra_db::run_commands::RunCommandLog) -> String {
    if r.is_running() {
        return String::new();
    }
    if let Some(signal) = r.signal {
        let core = if r.core_dumped == Some(true) {
            " (Core Dumped)"
        } else {
            ""
        };
        return format!("Exit signal {signal}{core}");
    }
    if let Some(errno) = r.error_number {
        return format!("Exec error {errno}");
    }
    match r.exit_code {
        Some(code) => format!("Exit code {code}"),
        None => String::new(),
    }
}

/// `/build/<id>/reproduce`: a script that builds the job from the inputs
/// of the build's evaluation (a flake evaluation: its `nix build`).
pub(crate) async fn reproduce(
    State(state): State<AppState>,
    build: BuildPath,
) -> ApiResult<Response> {
    let id = build.id;
    let r = views::build::reproduction(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Build {id} is in no evaluation.")))?;
    let script = match crate::reproduce::flake_command(&r) {
        Some(command) => format!(
            "#! /usr/bin/env bash\n# Reproduces build {id} of job {}.\nexec {command} \"$@\"\n",
            r.full_name
        ),
        None => crate::reproduce::script(&r),
    };
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/x-shellscript; charset=utf-8".to_string(),
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"build-{id}-reproduce.sh\""),
            ),
        ],
        script,
    )
        .into_response())
}

/// `/build/<id>/build-deps`: the derivations the build's derivation
/// needs, as a tree read from the store's `.drv` files, each linked to the
/// step that built it.
pub(crate) async fn build_deps(State(state): State<AppState>, build: BuildPath) -> ApiResult<Page> {
    let (drv, _) = views::build::drv_and_out(&state.pool, build.id).await?;
    let available = state.real_path(&drv).exists();
    let (reader, root) = (state.clone(), drv.clone());
    let graph = tokio::task::spawn_blocking(move || {
        crate::deps::graph(&root, |d| {
            let text = std::fs::read_to_string(reader.real_path(d)).ok()?;
            let parsed = hydra_nix::derivation::Derivation::parse(&text).ok()?;
            Some(parsed.input_drvs.keys().cloned().collect())
        })
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let drvs: Vec<String> = graph.keys().cloned().collect();
    let steps = views::build::steps_of(&state.pool, &drvs).await?;
    let tree = crate::deps::tree(&drv, &graph, &steps);
    let html = crate::deps::html(std::slice::from_ref(&tree));
    Ok(Page::new(
        "build-deps",
        json!({ "build": build.id, "available": available, "tree": tree }),
    )
    .with_extra("html", json!(html)))
}

/// `/build/<id>/graph`: the build's steps as a graph (see `graph.rs`).
pub(crate) async fn graph(State(state): State<AppState>, build: BuildPath) -> ApiResult<Page> {
    let pool = &state.pool;
    let (drv, _) = views::build::drv_and_out(pool, build.id).await?;
    let available = state.real_path(&drv).exists();
    let (reader, root) = (state.clone(), drv.clone());
    let (dag, outputs) = tokio::task::spawn_blocking(move || {
        let outputs = std::cell::RefCell::new(BTreeMap::<String, Vec<String>>::new());
        let dag = crate::deps::graph(&root, |d| {
            let text = std::fs::read_to_string(reader.real_path(d)).ok()?;
            let parsed = hydra_nix::derivation::Derivation::parse(&text).ok()?;
            outputs.borrow_mut().insert(
                d.to_string(),
                parsed
                    .outputs
                    .values()
                    .map(|o| o.path.clone())
                    .filter(|p| !p.is_empty())
                    .collect(),
            );
            Some(parsed.input_drvs.keys().cloned().collect())
        });
        (dag, outputs.into_inner())
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let drvs: Vec<String> = dag.keys().cloned().collect();
    let now = i64::from(hydra_db::now());
    let mut facts = views::build::step_facts(pool, &drvs, now).await?;
    // Derivations no step was run for: present in the store, or to build.
    let unknown: std::collections::BTreeSet<String> = drvs
        .iter()
        .filter(|d| !facts.contains_key(*d))
        .filter_map(|d| outputs.get(d))
        .flatten()
        .cloned()
        .collect();
    if !unknown.is_empty()
        && let Ok(present) = state.store.path_infos(&unknown).await
    {
        for d in &drvs {
            let outs = outputs.get(d).map_or(&[][..], Vec::as_slice);
            if !facts.contains_key(d)
                && !outs.is_empty()
                && outs.iter().all(|o| present.contains_key(o))
            {
                facts.insert(
                    d.clone(),
                    crate::graph::Fact {
                        state: crate::graph::State::Present,
                        step: None,
                        seconds: None,
                        end: None,
                    },
                );
            }
        }
    }
    // The queue runner's expected ends of the steps still to build.
    if !build.finished {
        let expected = super::admin::queue_runner_json::<BTreeMap<String, hydra_db::etas::Eta>>(
            &state,
            &format!("/status/build/{}/steps", build.id),
        )
        .await
        .unwrap_or_default();
        for (d, eta) in expected {
            let fact = facts.entry(d).or_insert(crate::graph::Fact {
                state: crate::graph::State::Queued,
                step: None,
                seconds: None,
                end: None,
            });
            if matches!(
                fact.state,
                crate::graph::State::Queued | crate::graph::State::Building
            ) {
                fact.end = Some(i64::from(eta.finish_at));
            }
        }
    }
    let graph = crate::graph::layout(&drv, &dag, &facts, crate::graph::LIMIT);
    let svg = crate::graph::svg(&graph);
    let (project, jobset) = hydra_db::jobsets::names_of(pool, &[build.id.0], None)
        .await?
        .pop()
        .unwrap_or_default();
    Ok(Page::new(
        "build-graph",
        json!({ "build": build.id, "available": available, "graph": graph }),
    )
    .with_extra("svg", json!(svg))
    .with_extra("scope", json!(format!("jobset:{project}:{jobset}"))))
}

/// `/build/<id>/runtime-deps`: what the build's outputs refer to, and so
/// on, as trees read from the store, each path linked to the step that
/// built or substituted it.
pub(crate) async fn runtime_deps(
    State(state): State<AppState>,
    build: BuildPath,
) -> ApiResult<Page> {
    let outputs: Vec<String> = hydra_db::builds::outputs(&state.pool, build.id)
        .await?
        .into_iter()
        .filter_map(|(_, path)| path)
        .collect();
    let graph = crate::deps::references(&state.store, &outputs)
        .await
        .map_err(|e| ApiError::Internal(format!("reading the store: {e}")))?;
    let available = !outputs.is_empty() && outputs.iter().all(|o| graph.contains_key(o));
    let paths: Vec<String> = graph.keys().cloned().collect();
    let steps = views::build::steps_of_outputs(&state.pool, &paths).await?;
    let trees = if available {
        crate::deps::forest(&outputs, &graph, &steps)
    } else {
        Vec::new()
    };
    let html = crate::deps::html(&trees);
    Ok(Page::new(
        "runtime-deps",
        json!({ "build": build.id, "available": available, "trees": trees }),
    )
    .with_extra("html", json!(html)))
}

pub(crate) async fn constituents(
    State(state): State<AppState>,
    build: BuildPath,
) -> ApiResult<Response> {
    let ids = views::build::constituents(&state.pool, build.id).await?;
    Ok(crate::negotiate::json_text(
        "build-constituents",
        views::builds_json_text(&state.pool, &ids).await?,
    ))
}

pub(crate) async fn evals(
    State(state): State<AppState>,
    WantsPage(wanted): WantsPage,
    build: BuildPath,
) -> ApiResult<Page> {
    let ids = views::build::evals(&state.pool, build.id).await?;
    let page = Page::value(
        "build-evals",
        Value::Array(views::evals_json(&state.pool, &ids).await?),
    )
    .with_extra("build", json!(build.id));
    if !wanted {
        return Ok(page);
    }
    let total = i64::try_from(ids.len()).unwrap_or(i64::MAX);
    super::eval::with_summaries(&state, page, &ids, Some(0), total).await
}

pub(crate) async fn get_info(State(state): State<AppState>, build: BuildPath) -> ApiResult<Page> {
    let (drv, out) = views::build::drv_and_out(&state.pool, build.id).await?;
    Ok(Page::value(
        "build-info",
        json!({ "buildId": build.id, "drvPath": drv, "outPath": out }),
    ))
}

pub(crate) async fn step(
    State(state): State<AppState>,
    WantsPage(wanted): WantsPage,
    build: BuildPath,
    Path((_, nr)): Path<(String, String)>,
) -> ApiResult<Page> {
    let id = build.id;
    let nr: i32 = nr
        .parse()
        .map_err(|_| ApiError::bad_request(format!("Invalid step number ‘{nr}’.")))?;
    let step = views::build::step(&state.pool, id, nr)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Build {id} has no step {nr}.")))?;
    let shown = Page::value("build-step", step);
    if !wanted {
        return Ok(shown);
    }
    let job = views::root::job_names(&state.pool, &[id.0]).await?;
    let outputs = views::build::step_outputs(&state.pool, id, nr).await?;
    Ok(shown
        .with_extra("job", json!(job.first().map(|(_, name)| name)))
        .with_extra("outputs", json!(outputs)))
}

/// `/build/<id>/<action>`: restart (a finished build), cancel (an
/// unfinished one) or bump, then back to the build's page.
fn act(action: Action) -> MethodRouter<AppState> {
    let handler = move |State(state): State<AppState>,
                        headers: HeaderMap,
                        viewer: Viewer,
                        _csrf: SameOrigin,
                        build: BuildPath| async move {
        actions::authorize(&state, &viewer, &build.project, action).await?;
        match (action, build.finished) {
            (Action::Restart, false) => {
                return Err(ApiError::bad_request(
                    "This build cannot be restarted: it has not finished.",
                ));
            }
            (Action::Cancel, true) => {
                return Err(ApiError::bad_request(
                    "This build cannot be cancelled: it has finished.",
                ));
            }
            _ => {}
        }
        let n = actions::take(&state, action, &[build.id]).await?;
        Ok::<_, ApiError>(actions::back_saying(
            &state,
            &headers,
            &format!("build/{}", build.id),
            &action.done(n),
        ))
    };
    get(handler).post(handler)
}

pub(crate) async fn keep(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
    _csrf: SameOrigin,
    build: BuildPath,
    Path((_, keep)): Path<(String, String)>,
) -> ApiResult<Response> {
    viewer
        .require_project_owner(&state.pool, &build.project)
        .await?;
    let keep = match keep.as_str() {
        "1" => true,
        "0" => false,
        _ => {
            return Err(ApiError::bad_request(format!(
                "Invalid keep value ‘{keep}’: use 1 or 0."
            )));
        }
    };
    hydra_db::builds::set_keep(&state.pool, build.id, keep).await?;
    Ok(actions::back_saying(
        &state,
        &headers,
        &format!("build/{}", build.id),
        if keep {
            "The build's outputs are kept from now on."
        } else {
            "The build's outputs are no longer kept: they may be garbage-collected."
        },
    ))
}

/// The routes this module serves.
/// Why a queued build is still waiting (the queue runner's answer), or
/// that it is not queued.
async fn waiting(State(state): State<AppState>, build: BuildPath) -> ApiResult<Response> {
    let queued = hydra_db::builds::progress(&state.pool, build.id).await?
        == Some(hydra_db::builds::Progress::Queued);
    if !queued {
        return Err(ApiError::not_found(format!(
            "Build {} is not queued.",
            build.id
        )));
    }
    let answer = super::admin::waiting(&state, build.id).await.ok_or_else(|| {
        ApiError::Unavailable("The queue runner cannot be asked (no queue_runner_endpoint, or it does not answer).".into())
    })?;
    Ok(axum::Json(answer).into_response())
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/build/{id}", get(show))
        .route("/build/{id}/constituents", get(constituents))
        .route("/build/{id}/evals", get(evals))
        .route("/build/{id}/api/get-info", get(get_info))
        .route("/build/{id}/step/{nr}", get(step))
        .route("/build/{id}/reproduce", get(reproduce))
        .route("/build/{id}/waiting", get(waiting))
        .route("/build/{id}/build-deps", get(build_deps))
        .route("/build/{id}/runtime-deps", get(runtime_deps))
        .route("/build/{id}/graph", get(graph))
        .route("/build/{id}/restart", act(Action::Restart))
        .route("/build/{id}/cancel", act(Action::Cancel))
        .route("/build/{id}/bump", act(Action::Bump))
        .route("/build/{id}/keep/{keep}", get(keep).post(keep))
        .route("/build/{id}/notifications", get(notifications))
        .route(
            "/build/{id}/notifications/{kind}/{n}/retry",
            axum::routing::post(retry_notification),
        )
}
