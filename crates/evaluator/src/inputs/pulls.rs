//! Pull-request and refs inputs, as Hydra's input plugins: `githubpulls`
//! (`OWNER REPO`), `github_refs` (`OWNER REPO TYPE - PREFIX`),
//! `gitlabpulls` (`BASE_URL PROJECT_ID`), `giteapulls` (`HOST[:PORT] OWNER
//! REPO [SCHEME]`) and `bitbucketpulls` (`OWNER REPO`). Each pages through
//! its forge's API, writes a JSON object keyed by PR number (iid, ref
//! name) to the store and passes that file; its revision is the time of
//! the fetch (`YYYYMMDDHHMMSS`, UTC), so the jobset is evaluated again at
//! each check interval, and its builds change only when the JSON does.
//!
//! GitHub is `github_api_url` (GitHub Enterprise too), Bitbucket
//! `bitbucket_api_url`; tokens are `github_authorization.<owner>` and
//! `bitbucket_authorization.<owner>` (whole header values),
//! `gitlab_authorization.<project id>` and `gitea_authorization.<owner>`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{FetchContext, FetchError, Fetched, Input, run_nix};

/// How a forge is asked.
pub(crate) struct Query {
    /// The first page.
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    /// The items are in this field of each page (Bitbucket), not the page.
    pub items_in: Option<&'static str>,
}

/// The HTTP client (rustls with ring, this program's user agent).
pub(crate) fn client() -> Result<reqwest::Client, FetchError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("hydra-evaluator/", env!("CARGO_PKG_VERSION")))
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| FetchError(format!("cannot make an HTTP client: {e}")))
}

/// The `rel="next"` URL of a `Link` header.
pub(crate) fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let mut pieces = part.split(';');
        let url = pieces.next()?.trim();
        let next = pieces.any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        next.then(|| {
            url.trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

/// Every item of `query`, page after page; errors name `what` (the input).
pub(crate) async fn items(what: &str, query: &Query) -> Result<Vec<Value>, FetchError> {
    let client = client()?;
    let mut url = Some(query.url.clone());
    let mut items = Vec::new();
    let mut pages = 0;
    while let Some(page) = url.take() {
        pages += 1;
        if pages > 1000 {
            return Err(FetchError(format!(
                "{what}: more than 1000 pages at {}",
                query.url
            )));
        }
        let mut request = client.get(&page);
        for (name, value) in &query.headers {
            request = request.header(*name, value);
        }
        let response = request
            .send()
            .await
            .map_err(|e| FetchError(format!("{what}: {page}: {e}")))?;
        let status = response.status();
        let link = response
            .headers()
            .get(reqwest::header::LINK)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(FetchError(format!(
                "{what}: {page} answered {status}: {}",
                text.chars().take(500).collect::<String>()
            )));
        }
        let body: Value = serde_json::from_str(&text)
            .map_err(|e| FetchError(format!("{what}: {page} is not JSON: {e}")))?;
        let list = match query.items_in {
            Some(field) => {
                url = body.get("next").and_then(|n| n.as_str()).map(String::from);
                body.get(field).cloned().unwrap_or(Value::Null)
            }
            None => {
                url = link.as_deref().and_then(next_link);
                body
            }
        };
        match list {
            Value::Array(list) => items.extend(list),
            other => {
                return Err(FetchError(format!(
                    "{what}: {page} did not give a list: {}",
                    other.to_string().chars().take(200).collect::<String>()
                )));
            }
        }
    }
    Ok(items)
}

/// The key of `item` under `field` as text (numbers too).
fn key(item: &Value, field: &str) -> Option<String> {
    match item.get(field)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The current UTC time as `YYYYMMDDHHMMSS`.
fn timestamp() -> String {
    let (year, month, day, hour, minute, second) = hydra_db::utc(i64::from(hydra_db::now()));
    format!("{year:04}{month:02}{day:02}{hour:02}{minute:02}{second:02}")
}

/// Fetches a pull-request or refs input of kind `input.kind`.
pub(crate) async fn fetch(
    ctx: &FetchContext<'_>,
    input: &Input,
    base: Fetched,
) -> Result<Fetched, FetchError> {
    let words: Vec<&str> = input.value.split_whitespace().collect();
    let usage = |form: &str| {
        FetchError(format!(
            "input `{}` ({}): the value must be `{form}`, not `{}`",
            input.name, input.kind, input.value
        ))
    };
    let evaluator = &ctx.config.evaluator;
    let github = evaluator.github_api_url.trim_end_matches('/');
    let github_headers = |owner: &str| {
        let mut headers = vec![("Accept", "application/vnd.github.v3+json".to_string())];
        if let Some(token) = evaluator.github_authorization.get(owner) {
            headers.push(("Authorization", token.expose().to_string()));
        }
        headers
    };
    let (query, file, key_field, pretty): (Query, &str, &str, bool) = match input.kind.as_str() {
        "githubpulls" => {
            let [owner, repo] = words[..] else {
                return Err(usage("OWNER REPO"));
            };
            (
                Query {
                    url: format!("{github}/repos/{owner}/{repo}/pulls?per_page=100"),
                    headers: github_headers(owner),
                    items_in: None,
                },
                "github-pulls.json",
                "number",
                false,
            )
        }
        "github_refs" => {
            let [owner, repo, kind, "-", prefix] = words[..] else {
                return Err(usage("OWNER REPO TYPE - PREFIX"));
            };
            let path = match (kind, prefix) {
                (".", _) => String::new(),
                (kind, ".") => format!("{kind}/"),
                (kind, prefix) => format!("{kind}/{prefix}"),
            };
            (
                Query {
                    url: format!(
                        "{github}/repos/{owner}/{repo}/git/matching-refs/{path}?per_page=100"
                    ),
                    headers: github_headers(owner),
                    items_in: None,
                },
                "github-refs-sorted.json",
                "ref",
                true,
            )
        }
        "gitlabpulls" => {
            let [base_url, project_id] = words[..] else {
                return Err(usage("BASE_URL PROJECT_ID"));
            };
            let base_url = base_url.trim_end_matches('/');
            let mut headers = Vec::new();
            if let Some(token) = evaluator.gitlab_authorization.get(project_id) {
                headers.push(("Private-Token", token.expose().to_string()));
            }
            (
                Query {
                    url: format!(
                        "{base_url}/api/v4/projects/{project_id}/merge_requests?per_page=100&state=opened"
                    ),
                    headers,
                    items_in: None,
                },
                "gitlab-pulls-sorted.json",
                "iid",
                true,
            )
        }
        "giteapulls" => {
            let (host, owner, repo, scheme) = match words[..] {
                [host, owner, repo] => (host, owner, repo, "https"),
                [host, owner, repo, scheme] => (host, owner, repo, scheme),
                _ => return Err(usage("HOST[:PORT] OWNER REPO [SCHEME]")),
            };
            let mut headers = Vec::new();
            if let Some(token) = evaluator.gitea_authorization.get(owner) {
                headers.push(("Authorization", format!("token {}", token.expose())));
            }
            (
                Query {
                    url: format!("{scheme}://{host}/api/v1/repos/{owner}/{repo}/pulls?limit=100"),
                    headers,
                    items_in: None,
                },
                "gitea-pulls.json",
                "number",
                false,
            )
        }
        "bitbucketpulls" => {
            let [owner, repo] = words[..] else {
                return Err(usage("OWNER REPO"));
            };
            let api = &evaluator.bitbucket_api_url;
            let mut headers = Vec::new();
            if let Some(token) = evaluator.bitbucket_authorization.get(owner) {
                headers.push(("Authorization", token.expose().to_string()));
            }
            (
                Query {
                    url: format!("{api}/2.0/repositories/{owner}/{repo}/pullrequests?state=OPEN"),
                    headers,
                    items_in: Some("values"),
                },
                "bitbucket-pulls-sorted.json",
                "id",
                true,
            )
        }
        other => {
            return Err(FetchError(format!(
                "input `{}` has the unsupported type `{other}`",
                input.name
            )));
        }
    };
    let mut listed: BTreeMap<String, Value> = BTreeMap::new();
    let gitlab_repo = if input.kind == "gitlabpulls" {
        gitlab_repo_url(input, &query).await?
    } else {
        None
    };
    for mut item in items(&format!("input `{}`", input.name), &query).await? {
        let Some(mut name) = key(&item, key_field) else {
            continue;
        };
        if input.kind == "github_refs" {
            for prefix in ["refs/heads/", "refs/tags/"] {
                if let Some(rest) = name.strip_prefix(prefix) {
                    name = rest.to_string();
                }
            }
        }
        if let (Some(url), Value::Object(fields)) = (&gitlab_repo, &mut item) {
            fields.insert("target_repo_url".into(), Value::String(url.clone()));
        }
        listed.insert(name, item);
    }
    let document = Value::Object(listed.into_iter().collect());
    let text = if pretty {
        serde_json::to_string_pretty(&document)
    } else {
        serde_json::to_string(&document)
    }
    .map_err(|e| FetchError(format!("input `{}`: {e}", input.name)))?;
    let dir = tempfile::tempdir()
        .map_err(|e| FetchError(format!("input `{}`: a scratch directory: {e}", input.name)))?;
    let path = dir.path().join(file);
    std::fs::write(&path, text).map_err(|e| FetchError(format!("{}: {e}", path.display())))?;
    let store_path = run_nix(
        ctx.nix,
        "nix-store",
        &["--add", path.to_str().unwrap_or_default()],
    )
    .await?;
    Ok(Fetched {
        uri: Some(query.url),
        revision: Some(timestamp()),
        store_path: Some(store_path),
        ..base
    })
}

/// GitLab's `http_url_to_repo` of the input's project.
async fn gitlab_repo_url(input: &Input, query: &Query) -> Result<Option<String>, FetchError> {
    let project_url = query
        .url
        .split("/merge_requests")
        .next()
        .unwrap_or_default()
        .to_string();
    let project = Query {
        url: project_url,
        headers: query.headers.clone(),
        items_in: None,
    };
    let client = client()?;
    let mut request = client.get(&project.url);
    for (name, value) in &project.headers {
        request = request.header(*name, value);
    }
    let response = request
        .send()
        .await
        .map_err(|e| FetchError(format!("input `{}`: {}: {e}", input.name, project.url)))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(FetchError(format!(
            "input `{}`: {} answered {status}: {}",
            input.name,
            project.url,
            text.chars().take(500).collect::<String>()
        )));
    }
    let body: Value = serde_json::from_str(&text).map_err(|e| {
        FetchError(format!(
            "input `{}`: {} is not JSON: {e}",
            input.name, project.url
        ))
    })?;
    Ok(body
        .get("http_url_to_repo")
        .and_then(|v| v.as_str())
        .map(String::from))
}

#[cfg(test)]
mod tests {
    use super::next_link;

    #[test]
    fn the_next_page_is_found_in_a_link_header() {
        let link = r#"<https://api.github.com/repos/o/r/pulls?page=2>; rel="next", <https://api.github.com/repos/o/r/pulls?page=5>; rel="last""#;
        assert_eq!(
            next_link(link).as_deref(),
            Some("https://api.github.com/repos/o/r/pulls?page=2")
        );
        assert_eq!(next_link(r#"<https://x/p?page=1>; rel="prev""#), None);
    }
}
