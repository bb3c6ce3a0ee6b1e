//! Build logs: `/log/<drv>`, the build and step log routes, the live
//! stream of a running step (Server-Sent Events), and the output of
//! RunCommand runs (`/runcommandlog/<uuid>`, `/build/N/runcommandlog/…`).
//!
//! Logs are the queue runner's files under `$HYDRA_DATA/build-logs/`, plain
//! while a step runs and possibly compressed (`.bz2`, `.zst`) afterwards.
//! They are always served as `text/plain` with `nosniff`, never inside a
//! page, so what a build prints cannot run in a browser.

use axum::Router;
use axum::routing::get;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use async_compression::tokio::bufread::{BzDecoder, ZstdDecoder};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use hydra_nix::store_path::StorePath;
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncSeekExt, BufReader};

use super::{parse_id, redirect, redirect_below};
use crate::auth::base_url;
use crate::error::{ApiError, ApiResult};
use crate::extract::BuildPath;
use crate::negotiate::Page;
use crate::state::AppState;
use hydra_db::ids::BuildId;

/// Lines `tail` mode shows when `?tail=` is not given.
const TAIL_LINES: usize = 50;
/// How often a live stream looks for new lines.
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Default, Deserialize)]
pub(crate) struct TailQuery {
    tail: Option<String>,
    /// The viewer's window: lines `from` to `to`, around `line`, or those
    /// matching `search`.
    from: Option<String>,
    to: Option<String>,
    line: Option<String>,
    search: Option<String>,
    /// The live stream: the lines the client already has (when it sends
    /// no `Last-Event-ID`), and whether it wants them as HTML.
    after: Option<String>,
    html: Option<String>,
}

impl TailQuery {
    /// The viewer's window; numbers that are not numbers are ignored.
    fn window(&self) -> crate::logview::Window {
        let n = |v: &Option<String>| v.as_deref().and_then(|t| t.trim().parse::<u64>().ok());
        crate::logview::Window::of(
            n(&self.from),
            n(&self.to),
            n(&self.line),
            self.search.as_deref(),
        )
    }

    fn lines(&self) -> ApiResult<Option<usize>> {
        match self.tail.as_deref() {
            None | Some("") => Ok(None),
            Some(t) => t.parse::<usize>().map(Some).map_err(|_| {
                ApiError::bad_request(format!("Invalid ‘tail’ parameter ‘{t}’: not a number."))
            }),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compression {
    None,
    Bzip2,
    Zstd,
}

/// The log file of `drv_path`, if there is one: plain, `.bz2` or `.zst`.
fn find_file(state: &AppState, drv_path: &str) -> Option<(PathBuf, Compression)> {
    let plain = state.data_dir.build_log(drv_path);
    [
        ("", Compression::None),
        (".bz2", Compression::Bzip2),
        (".zst", Compression::Zstd),
    ]
    .into_iter()
    .map(|(ext, c)| {
        let mut p = plain.clone().into_os_string();
        p.push(ext);
        (PathBuf::from(p), c)
    })
    .find(|(p, _)| p.is_file())
}

async fn open(
    path: &std::path::Path,
    c: Compression,
) -> ApiResult<Box<dyn AsyncRead + Unpin + Send>> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
    Ok(match c {
        Compression::None => Box::new(file),
        Compression::Bzip2 => Box::new(BzDecoder::new(BufReader::new(file))),
        Compression::Zstd => Box::new(ZstdDecoder::new(BufReader::new(file))),
    })
}

/// The last `n` lines of `reader`, read through once.
async fn tail(reader: Box<dyn AsyncRead + Unpin + Send>, n: usize) -> std::io::Result<Vec<u8>> {
    let mut reader = BufReader::new(reader);
    let mut lines: VecDeque<Vec<u8>> = VecDeque::with_capacity(n.min(4096) + 1);
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            break;
        }
        lines.push_back(line);
        if lines.len() > n {
            lines.pop_front();
        }
    }
    Ok(lines.into_iter().flatten().collect())
}

fn text_headers(response: &mut Response, finished: bool) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if finished {
            "public, max-age=86400"
        } else {
            "no-cache"
        }),
    );
}

/// The log of `drv_path` as text (all of it, streamed, or its last lines).
async fn serve_text(
    state: &AppState,
    drv_path: &str,
    tail_lines: Option<usize>,
) -> ApiResult<Response> {
    let base = hydra_nix::store_path::base_name(drv_path);
    let Some((path, compression)) = find_file(state, drv_path) else {
        if let Some(prefix) = state
            .config
            .web
            .log_prefix
            .as_deref()
            .filter(|p| !p.is_empty())
        {
            let mut location = format!("{prefix}log/{base}");
            if let Some(n) = tail_lines {
                location.push_str(&format!("?tail={n}"));
            }
            return Ok(redirect(&location));
        }
        return Err(ApiError::not_found(format!(
            "Log of {base} is not available."
        )));
    };
    let running = hydra_db::steps::is_running(&state.pool, drv_path).await?;
    let reader = open(&path, compression).await?;
    let mut response = match tail_lines {
        Some(n) => tail(reader, n)
            .await
            .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?
            .into_response(),
        None => Body::from_stream(tokio_util::io::ReaderStream::new(reader)).into_response(),
    };
    text_headers(&mut response, !running);
    Ok(response)
}

/// `/log/<drv base name>[?tail=N]`.
pub(crate) async fn log(
    State(state): State<AppState>,
    Path(base): Path<String>,
    Query(q): Query<TailQuery>,
) -> ApiResult<Response> {
    let path = StorePath::from_base_name(&base)
        .ok()
        .filter(StorePath::is_derivation)
        .ok_or_else(|| ApiError::bad_request(format!("‘{base}’ is not a derivation.")))?;
    let drv = hydra_nix::store_path::StoreDir::default().display(&path);
    serve_text(&state, &drv, q.lines()?).await
}

/// The derivation whose log is a build's log: its own, or (when that has
/// none, e.g. a substituted or cached build) that of a step that produced
/// the build's outputs.
async fn build_log_drv(state: &AppState, id: BuildId) -> ApiResult<String> {
    let drv = hydra_db::builds::drv_path(&state.pool, id)
        .await?
        .ok_or_else(|| BuildPath::missing(id))?;
    if find_file(state, &drv).is_some() {
        return Ok(drv);
    }
    let others = hydra_db::steps::producers(&state.pool, id, &drv).await?;
    Ok(others
        .into_iter()
        .find(|d| find_file(state, d).is_some())
        .unwrap_or(drv))
}

async fn step_drv(state: &AppState, id: BuildId, nr: &str) -> ApiResult<(i32, String)> {
    let nr: i32 = nr
        .parse()
        .map_err(|_| ApiError::bad_request(format!("Invalid step number ‘{nr}’.")))?;
    let drv = hydra_db::steps::drv_path(&state.pool, id, nr).await?;
    let drv = drv.ok_or_else(|| ApiError::not_found(format!("Build {id} has no step {nr}.")))?;
    Ok((nr, drv))
}

/// What a log URL shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Pretty,
    Raw,
    Tail,
    Live,
}

fn mode(text: Option<&str>) -> ApiResult<Mode> {
    match text {
        None | Some("") | Some("pretty") => Ok(Mode::Pretty),
        Some("raw") => Ok(Mode::Raw),
        Some("tail") => Ok(Mode::Tail),
        Some("live") => Ok(Mode::Live),
        Some(other) => Err(ApiError::not_found(format!("No log mode ‘{other}’."))),
    }
}

/// What is followed until it ends.
#[derive(Clone, Copy, Debug)]
enum Watch {
    Build(BuildId),
    Step(BuildId, i32),
}

/// A log in `mode`; `watch` is what it belongs to (the live stream ends
/// when that finishes).
async fn show(
    state: &AppState,
    headers: &HeaderMap,
    mode: Mode,
    drv: String,
    watch: Watch,
    q: &TailQuery,
) -> ApiResult<Response> {
    let base = hydra_nix::store_path::base_name(&drv).to_string();
    match mode {
        Mode::Raw => match q.lines()? {
            Some(n) => Ok(redirect_below(
                state,
                headers,
                &format!("log/{base}?tail={n}"),
                None,
            )),
            None => Ok(redirect_below(state, headers, &format!("log/{base}"), None)),
        },
        Mode::Tail => serve_text(state, &drv, Some(q.lines()?.unwrap_or(TAIL_LINES))).await,
        Mode::Live => Ok(live(
            state.clone(),
            drv,
            watch,
            last_event_id(headers)
                .or_else(|| q.after.as_deref().and_then(|a| a.trim().parse().ok()))
                .unwrap_or(0),
            q.html.as_deref() == Some("1"),
        )),
        Mode::Pretty => {
            let (build, step) = match watch {
                Watch::Build(b) => (b, None),
                Watch::Step(b, s) => (b, Some(s)),
            };
            let base_url = base_url(state, headers);
            let file = find_file(state, &drv);
            let page = Page::value(
                "log",
                json!({
                    "build": build,
                    "step": step,
                    "drvpath": drv,
                    "available": file.is_some(),
                    "raw": format!("{base_url}log/{base}"),
                    "live": match step {
                        Some(s) => format!("{base_url}build/{build}/step/{s}/log/live"),
                        None => format!("{base_url}build/{build}/log/live"),
                    },
                }),
            );
            let Some((path, compression)) = file else {
                return Ok(page.into_response());
            };
            let running = hydra_db::steps::is_running(&state.pool, &drv).await?;
            Ok(with_lines(page, &path, compression, q)
                .await?
                .with_extra("running", json!(running))
                .into_response())
        }
    }
}

/// `page` (a log viewer) with the lines of the log at `path` that `q`
/// asks for, read here so that the browser gets only what it shows.
async fn with_lines(
    page: Page,
    path: &std::path::Path,
    compression: Compression,
    q: &TailQuery,
) -> ApiResult<Page> {
    let window = q.window();
    let read = crate::logview::read(open(path, compression).await?, &window)
        .await
        .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
    let lines: Vec<serde_json::Value> = read
        .lines
        .iter()
        .map(|(n, text)| json!([n, crate::logview::ansi_html(text)]))
        .collect();
    let (search, tail) = match &window {
        crate::logview::Window::Search(s) => (s.clone(), false),
        crate::logview::Window::Tail(_) => (String::new(), true),
        _ => (String::new(), false),
    };
    Ok(page
        .with_extra("lines", serde_json::Value::Array(lines))
        .with_extra("total", json!(read.total))
        .with_extra("more_matches", json!(read.more_matches))
        .with_extra("search", json!(search))
        .with_extra("tail", json!(tail)))
}

// --- RunCommand logs ---------------------------------------------------------

/// RunCommand run `uuid`, or the 404 naming it.
async fn run_command(
    state: &AppState,
    uuid: &str,
) -> ApiResult<hydra_db::run_commands::RunCommandLog> {
    hydra_db::run_commands::by_uuid(&state.pool, uuid)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No RunCommand run ‘{uuid}’.")))
}

/// `/runcommandlog/<uuid>[?tail=N]`: what a RunCommand run printed, as
/// text.
pub(crate) async fn run_command_text(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
    Query(q): Query<TailQuery>,
) -> ApiResult<Response> {
    let run = run_command(&state, &uuid).await?;
    let path = state.data_dir.run_command_log(&run.uuid);
    if !path.is_file() {
        return Err(ApiError::not_found(format!(
            "The output of RunCommand run ‘{uuid}’ is not available."
        )));
    }
    let reader = open(&path, Compression::None).await?;
    let mut response = match q.lines()? {
        Some(n) => tail(reader, n)
            .await
            .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?
            .into_response(),
        None => Body::from_stream(tokio_util::io::ReaderStream::new(reader)).into_response(),
    };
    text_headers(&mut response, !run.is_running());
    Ok(response)
}

/// `/build/<id>/runcommandlog/<uuid>[/tail|/raw]`: the log viewer on a
/// RunCommand run's output (`raw` redirects to the text).
pub(crate) async fn run_command_log(
    State(state): State<AppState>,
    headers: HeaderMap,
    build: BuildPath,
    Path(params): Path<Vec<(String, String)>>,
    Query(q): Query<TailQuery>,
) -> ApiResult<Response> {
    let get = |k: &str| super::path_param(&params, k);
    let uuid = get("uuid").unwrap_or_default();
    let run = run_command(&state, &uuid).await?;
    if run.build_id != build.id {
        return Err(ApiError::not_found(format!(
            "No RunCommand run ‘{uuid}’ for build {}.",
            build.id
        )));
    }
    match mode(get("mode").as_deref())? {
        Mode::Raw => {
            let query = q.lines()?.map(|n| format!("?tail={n}")).unwrap_or_default();
            Ok(redirect_below(
                &state,
                &headers,
                &format!("runcommandlog/{}{query}", run.uuid),
                None,
            ))
        }
        Mode::Live => Err(ApiError::not_found("No log mode ‘live’.")),
        Mode::Pretty | Mode::Tail => {
            let path = state.data_dir.run_command_log(&run.uuid);
            let page = Page::value(
                "log",
                json!({
                    "build": build.id,
                    "step": null,
                    "uuid": run.uuid,
                    "command": run.command,
                    "available": path.is_file(),
                    "raw": format!("{}runcommandlog/{}", base_url(&state, &headers), run.uuid),
                    "live": "",
                }),
            );
            if !path.is_file() {
                return Ok(page.into_response());
            }
            Ok(with_lines(page, &path, Compression::None, &q)
                .await?
                .with_extra("running", json!(false))
                .into_response())
        }
    }
}

fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// `/build/<id>/log[/<mode>]` and `/build/<id>/step/<nr>/log[/<mode>]`.
pub(crate) async fn build_log(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(params): Path<Vec<(String, String)>>,
    Query(q): Query<TailQuery>,
) -> ApiResult<Response> {
    let get = |k: &str| super::path_param(&params, k);
    let id = BuildId(parse_id(&get("id").unwrap_or_default(), "build")?);
    let mode = mode(get("mode").as_deref())?;
    let (drv, watch) = match get("nr") {
        Some(nr) => {
            let (nr, drv) = step_drv(&state, id, &nr).await?;
            (drv, Watch::Step(id, nr))
        }
        None => (build_log_drv(&state, id).await?, Watch::Build(id)),
    };
    show(&state, &headers, mode, drv, watch, &q).await
}

/// `/build/<id>/nixlog/<nr>[/<mode>]`: Hydra's old step log URL.
pub(crate) async fn nixlog(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(params): Path<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let get = |k: &str| super::path_param(&params, k);
    let id = BuildId(parse_id(&get("id").unwrap_or_default(), "build")?);
    let nr = get("nr").unwrap_or_default();
    let mut location = format!("{}build/{id}/step/{nr}/log", base_url(&state, &headers));
    if let Some(m) = get("mode") {
        location.push('/');
        location.push_str(&m);
    }
    let mut response = redirect(&location);
    *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
    Ok(response)
}

// --- live logs ---------------------------------------------------------------

struct Follow {
    state: AppState,
    drv: String,
    watch: Watch,
    /// Bytes of the plain log already read.
    offset: u64,
    /// An incomplete last line.
    partial: Vec<u8>,
    /// Lines read, not yet sent.
    pending: VecDeque<Vec<u8>>,
    /// Lines sent or skipped (the next event's id).
    sent: u64,
    /// The client already has this many lines (`Last-Event-ID`).
    skip: u64,
    ended: bool,
    /// Lines are sent as the log viewer's HTML (colours as classes).
    html: bool,
}

impl Follow {
    /// Reads what was appended to the log since the last call.
    async fn read_more(&mut self) -> std::io::Result<()> {
        let Some((path, compression)) = find_file(&self.state, &self.drv) else {
            return Ok(());
        };
        let mut data = Vec::new();
        if compression == Compression::None {
            let mut file = tokio::fs::File::open(&path).await?;
            let len = file.metadata().await?.len();
            if len < self.offset {
                // Rewritten (the step was restarted): start over.
                self.offset = 0;
                self.partial.clear();
            }
            file.seek(std::io::SeekFrom::Start(self.offset)).await?;
            file.read_to_end(&mut data).await?;
            self.offset += data.len() as u64;
        } else if self.offset == 0 {
            // Compressed logs are complete: read once.
            let mut reader = open(&path, compression)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            reader.read_to_end(&mut data).await?;
            self.offset = u64::MAX;
        }
        for byte in data {
            if byte == b'\n' {
                let line = std::mem::take(&mut self.partial);
                self.pending.push_back(line);
            } else {
                self.partial.push(byte);
            }
        }
        Ok(())
    }

    async fn finished(&self) -> Result<bool, sqlx::Error> {
        match self.watch {
            Watch::Build(id) => Ok(!matches!(
                hydra_db::builds::progress(&self.state.pool, id).await?,
                Some(hydra_db::builds::Progress::Queued)
            )),
            Watch::Step(id, nr) => hydra_db::steps::is_over(&self.state.pool, id, nr).await,
        }
    }

    /// The next event: a line, the end marker, or `None` after it.
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                self.sent += 1;
                if self.sent <= self.skip {
                    continue;
                }
                let mut text = String::from_utf8_lossy(&line).into_owned();
                if text.ends_with('\r') {
                    text.pop();
                }
                if self.html {
                    text = crate::logview::ansi_html(&text);
                }
                return Some(Event::default().id(self.sent.to_string()).data(text));
            }
            if self.ended {
                return None;
            }
            // Whether the step had finished is read before the file, so
            // that nothing it wrote before finishing can be missed.
            let finished = match self.finished().await {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(error = %e, "live log: database error");
                    true
                }
            };
            if let Err(e) = self.read_more().await {
                tracing::warn!(error = %e, drv = %self.drv, "live log: cannot read the log");
            }
            if finished {
                if !self.partial.is_empty() {
                    let line = std::mem::take(&mut self.partial);
                    self.pending.push_back(line);
                }
                if self.pending.is_empty() {
                    self.ended = true;
                    return Some(Event::default().event("end").data("finished"));
                }
                // Send what is left, then the end marker.
                continue;
            }
            if self.pending.is_empty() {
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

/// The live stream: what the log holds, then each new line, then an `end`
/// event once the step (or build) finished. Event ids are line numbers;
/// a client reconnecting with `Last-Event-ID` gets only the lines after.
fn live(state: AppState, drv: String, watch: Watch, skip: u64, html: bool) -> Response {
    let follow = Follow {
        html,
        state,
        drv,
        watch,
        offset: 0,
        partial: Vec::new(),
        pending: VecDeque::new(),
        sent: 0,
        skip,
        ended: false,
    };
    let stream = futures_util::stream::unfold(follow, |mut f| async move {
        let event = f.next_event().await?;
        Some((Ok::<_, std::convert::Infallible>(event), f))
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The routes this module serves.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/log/{drv}", get(log))
        .route("/build/{id}/log", get(build_log))
        .route("/build/{id}/log/{mode}", get(build_log))
        .route("/build/{id}/step/{nr}/log", get(build_log))
        .route("/build/{id}/step/{nr}/log/{mode}", get(build_log))
        .route("/build/{id}/nixlog/{nr}", get(nixlog))
        .route("/build/{id}/nixlog/{nr}/{mode}", get(nixlog))
        .route("/runcommandlog/{uuid}", get(run_command_text))
        .route("/build/{id}/runcommandlog/{uuid}", get(run_command_log))
        .route(
            "/build/{id}/runcommandlog/{uuid}/{mode}",
            get(run_command_log),
        )
}
