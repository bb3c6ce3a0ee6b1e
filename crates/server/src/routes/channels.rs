//! Nix channels: `…/channel/latest` under `/`, a project, a jobset and a
//! job, `/eval/<id>/channel` and `/build/<id>/nix`. A channel is the latest
//! successful build of each job (and system) in its scope that has a
//! `nix-build` product (or, for an evaluation, its successful builds).
//! Sub-URLs: the package list, `nixexprs.tar.bz2` (an expression whose
//! attributes are the outputs, fetched from this server's binary cache)
//! and `binary-cache-url`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use async_compression::tokio::write::BzEncoder;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use super::{parse_id, path_param as param};
use crate::auth::base_url;
use crate::error::{ApiError, ApiResult};
use crate::negotiate::Page;
use crate::state::AppState;

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Package {
    pub id: i32,
    pub project: String,
    pub jobset: String,
    pub job: String,
    pub system: String,
    pub nixname: Option<String>,
    #[sqlx(skip)]
    pub outputs: BTreeMap<String, String>,
}

/// What a channel holds.
#[derive(Debug, Default)]
struct Scope {
    project: Option<String>,
    jobset: Option<String>,
    job: Option<String>,
    eval: Option<i32>,
    build: Option<i32>,
}

async fn packages(state: &AppState, scope: &Scope) -> ApiResult<Vec<Package>> {
    let mut packages: Vec<Package> = sqlx::query_as(
        "select distinct on (j.project, j.name, b.job, b.system) \
           b.id, j.project, j.name as jobset, b.job, b.system, b.nixName as nixname \
         from Builds b join Jobsets j on j.id = b.jobset_id \
         where b.finished = 1 and b.buildStatus = $6 \
           and exists (select 1 from BuildProducts p where p.build = b.id and p.type = 'nix-build') \
           and ($1::text is null or j.project = $1) and ($2::text is null or j.name = $2) \
           and ($3::text is null or b.job = $3) \
           and ($4::int is null or b.id in (select build from JobsetEvalMembers where eval = $4)) \
           and ($5::int is null or b.id = $5) \
         order by j.project, j.name, b.job, b.system, b.id desc",
    )
    .bind(&scope.project)
    .bind(&scope.jobset)
    .bind(&scope.job)
    .bind(scope.eval)
    .bind(scope.build)
    .bind(hydra_db::status::BuildStatus::Succeeded)
    .fetch_all(&state.pool)
    .await?;
    let ids: Vec<i32> = packages.iter().map(|p| p.id).collect();
    let outputs: Vec<(i32, String, String)> = sqlx::query_as(
        "select build, name, path from BuildOutputs where build = any($1) and path is not null",
    )
    .bind(&ids)
    .fetch_all(&state.pool)
    .await?;
    let mut by_build: BTreeMap<i32, BTreeMap<String, String>> = BTreeMap::new();
    for (build, name, path) in outputs {
        by_build.entry(build).or_default().insert(name, path);
    }
    for p in &mut packages {
        p.outputs = by_build.remove(&p.id).unwrap_or_default();
    }
    Ok(packages)
}

/// A Nix string literal.
fn nix_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '$' => out.push_str("\\$"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Jobs of one system as a tree of attribute names (`a.b.c`).
#[derive(Default)]
struct JobTree<'a> {
    package: Option<&'a Package>,
    children: BTreeMap<&'a str, JobTree<'a>>,
}

impl<'a> JobTree<'a> {
    /// Adds `package` under its job's attribute path. A job whose path is
    /// another job's, or lies inside it, cannot be shown next to it: the
    /// first one stays.
    fn insert(&mut self, package: &'a Package) {
        let mut node = self;
        for part in package.job.split('.') {
            if node.package.is_some() {
                return;
            }
            node = node.children.entry(part).or_default();
        }
        if node.package.is_none() && node.children.is_empty() {
            node.package = Some(package);
        }
    }

    /// The members of this node's attribute set, indented by `depth`.
    fn write(&self, s: &mut String, depth: usize) {
        let indent = "  ".repeat(depth);
        for (name, child) in &self.children {
            let _ = write!(s, "{indent}{} = ", nix_string(name));
            match child.package {
                Some(p) => write_built(s, p),
                None => {
                    // So that `nix-env -qa` lists the jobs of nested sets.
                    let _ = writeln!(s, "{{\n{indent}  recurseForDerivations = true;");
                    child.write(s, depth + 1);
                    let _ = write!(s, "{indent}}}");
                }
            }
            s.push_str(";\n");
        }
    }
}

fn write_built(s: &mut String, p: &Package) {
    let name = p.nixname.clone().unwrap_or_else(|| p.job.clone());
    let _ = write!(
        s,
        "built {{ name = {}; system = {}; meta.hydraBuild = {}; }} {{",
        nix_string(&name),
        nix_string(&p.system),
        p.id
    );
    for (output, path) in &p.outputs {
        let _ = write!(s, " {} = {};", nix_string(output), nix_string(path));
    }
    s.push_str(" }");
}

/// The channel's `default.nix`: per system, the jobs (nested by their
/// attribute paths), each a derivation-like attribute set whose outputs
/// are the built store paths.
fn default_nix(packages: &[Package]) -> String {
    let mut by_system: BTreeMap<&str, JobTree> = BTreeMap::new();
    for p in packages.iter().filter(|p| !p.outputs.is_empty()) {
        by_system.entry(&p.system).or_default().insert(p);
    }
    let mut s = String::from(
        "# Generated by Hydra: the latest successful builds of this channel.\n\
         { system ? builtins.currentSystem }:\n\
         let\n\
         \x20 built = attrs: outputs:\n\
         \x20   let\n\
         \x20     names = builtins.attrNames outputs;\n\
         \x20     one = name: attrs // all // {\n\
         \x20       type = \"derivation\";\n\
         \x20       outputName = name;\n\
         \x20       outputs = names;\n\
         \x20       outPath = builtins.storePath outputs.${name};\n\
         \x20     };\n\
         \x20     all = builtins.listToAttrs (map (name: { inherit name; value = one name; }) names);\n\
         \x20   in one (if outputs ? out then \"out\" else builtins.head names);\n\
         \x20 jobs = {\n",
    );
    for (system, tree) in by_system {
        let _ = writeln!(s, "    {} = {{", nix_string(system));
        tree.write(&mut s, 3);
        s.push_str("    };\n");
    }
    s.push_str("  };\nin jobs.${system} or { }\n");
    s
}

async fn nixexprs(name: &str, packages: &[Package]) -> ApiResult<Vec<u8>> {
    let mtime = u64::try_from(hydra_db::now()).unwrap_or(0);
    let mut archive = tar::Builder::new(Vec::new());
    let files = [
        ("channel/channel-name", format!("{name}\n")),
        ("channel/default.nix", default_nix(packages)),
    ];
    for (path, text) in &files {
        let mut header = tar::Header::new_ustar();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        archive
            .append_data(&mut header, path, text.as_bytes())
            .map_err(|e| ApiError::Internal(format!("writing the channel: {e}")))?;
    }
    let tar = archive
        .into_inner()
        .map_err(|e| ApiError::Internal(format!("writing the channel: {e}")))?;
    let mut out = Vec::new();
    let mut encoder = BzEncoder::new(&mut out);
    let written = async {
        encoder.write_all(&tar).await?;
        encoder.shutdown().await
    }
    .await;
    written.map_err(|e| ApiError::Internal(format!("compressing the channel: {e}")))?;
    Ok(out)
}

async fn serve(
    state: &AppState,
    headers: &HeaderMap,
    name: String,
    scope: Scope,
    file: Option<&str>,
) -> ApiResult<Response> {
    match file.unwrap_or("") {
        "" => {
            let packages = packages(state, &scope).await?;
            Ok(Page::new(
                "channel",
                serde_json::json!({ "name": name, "packages": packages }),
            )
            .into_response())
        }
        "nixexprs.tar.bz2" => {
            let packages = packages(state, &scope).await?;
            let body = nixexprs(&name, &packages).await?;
            Ok((
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-bzip2"),
                )],
                body,
            )
                .into_response())
        }
        "binary-cache-url" => {
            let url = state
                .config
                .web
                .binary_cache_public_uri
                .clone()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| base_url(state, headers));
            Ok((
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                )],
                url,
            )
                .into_response())
        }
        other => Err(ApiError::not_found(format!("No channel file ‘{other}’."))),
    }
}

/// `/channel/latest[/<file>]`, and the same under a project, jobset or job.
pub async fn latest(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(params): Path<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let scope = Scope {
        project: param(&params, "project"),
        jobset: param(&params, "jobset"),
        job: param(&params, "job"),
        ..Scope::default()
    };
    if let Some(p) = &scope.project {
        let exists: bool = sqlx::query_scalar(
            "select exists (select 1 from Jobsets j right join Projects p on p.name = j.project \
             where p.name = $1 and ($2::text is null or j.name = $2))",
        )
        .bind(p)
        .bind(&scope.jobset)
        .fetch_one(&state.pool)
        .await?;
        if !exists {
            return Err(ApiError::not_found("No such project or jobset."));
        }
    }
    let name = match (&scope.project, &scope.jobset, &scope.job) {
        (Some(p), Some(j), Some(job)) => format!("{p}-{j}-{job}"),
        (Some(p), Some(j), None) => format!("{p}-{j}"),
        (Some(p), _, _) => p.clone(),
        _ => "everything".to_string(),
    };
    let file = param(&params, "file");
    serve(&state, &headers, name, scope, file.as_deref()).await
}

/// `/eval/<id>/channel[/<file>]`.
pub async fn eval(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(params): Path<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let id = parse_id(&param(&params, "id").unwrap_or_default(), "evaluation")?;
    let row: Option<(String, String)> = sqlx::query_as(
        "select j.project, j.name from JobsetEvals e join Jobsets j on j.id = e.jobset_id where e.id = $1",
    )
    .bind(id)
    .fetch_optional(&state.pool)
    .await?;
    let (project, jobset) =
        row.ok_or_else(|| ApiError::not_found(format!("Evaluation {id} doesn't exist.")))?;
    let scope = Scope {
        eval: Some(id),
        ..Scope::default()
    };
    let file = param(&params, "file");
    serve(
        &state,
        &headers,
        format!("{project}-{jobset}-latest"),
        scope,
        file.as_deref(),
    )
    .await
}

/// `/build/<id>/nix[/<file>]`: a channel of one build.
pub async fn build(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(params): Path<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let id = parse_id(&param(&params, "id").unwrap_or_default(), "build")?;
    let exists: bool = sqlx::query_scalar("select exists (select 1 from Builds where id = $1)")
        .bind(id)
        .fetch_one(&state.pool)
        .await?;
    if !exists {
        return Err(ApiError::not_found(format!(
            "Build with ID {id} doesn't exist."
        )));
    }
    let scope = Scope {
        build: Some(id),
        ..Scope::default()
    };
    let file = param(&params, "file");
    serve(
        &state,
        &headers,
        format!("build-{id}"),
        scope,
        file.as_deref(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(id: i32, job: &str) -> Package {
        Package {
            id,
            project: "p".into(),
            jobset: "j".into(),
            job: job.into(),
            system: "x86_64-linux".into(),
            nixname: Some(job.into()),
            outputs: BTreeMap::from([("out".into(), format!("/nix/store/{id}-{job}"))]),
        }
    }

    #[test]
    fn nested_jobs_are_nested_sets_that_nix_env_recurses_into() {
        let text = default_nix(&[package(1, "a.b.c"), package(2, "a.d"), package(3, "top")]);
        assert!(text.contains("\"a\" = {\n        recurseForDerivations = true;\n        \"b\" = {\n          recurseForDerivations = true;\n          \"c\" = built"), "{text}");
        assert!(text.contains("\"d\" = built"), "{text}");
        assert!(text.contains("\"top\" = built"), "{text}");
    }

    #[test]
    fn a_job_inside_another_jobs_path_is_left_out() {
        let text = default_nix(&[
            package(1, "a"),
            package(2, "a.b"),
            package(3, "c.d"),
            package(4, "c"),
        ]);
        assert!(text.contains("meta.hydraBuild = 1;"), "{text}");
        assert!(!text.contains("meta.hydraBuild = 2;"), "{text}");
        assert!(text.contains("meta.hydraBuild = 3;"), "{text}");
        assert!(!text.contains("meta.hydraBuild = 4;"), "{text}");
    }
}
