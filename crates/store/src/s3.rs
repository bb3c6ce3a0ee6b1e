//! The S3 client of `s3://` binary caches, configured as Nix configures
//! its own: the bucket from the URI; `region` (else `AWS_REGION`,
//! `AWS_DEFAULT_REGION`, else `us-east-1`); `endpoint` (else
//! `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`) for an S3-compatible server
//! (with `scheme`, `https` unless given in the endpoint; buckets are then
//! addressed by path); credentials from
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, else
//! from the profile `profile` (else `AWS_PROFILE`, else `default`) of the
//! shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
//! `~/.aws/credentials`), else from the instance's metadata service.

use std::collections::{BTreeMap, HashMap};

use object_store::aws::{AmazonS3, AmazonS3Builder};

use crate::StoreError;
use crate::binary_cache::uri_error;

/// Keys and token of one account.
#[derive(Clone, PartialEq, Eq)]
struct Credentials {
    access_key: String,
    secret_key: String,
    token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// The profile `profile` of a shared credentials file's `text` (INI:
/// `[profile]` then `key = value` lines; `#` and `;` start comments).
fn profile_credentials(text: &str, profile: &str) -> Option<Credentials> {
    let mut section = String::new();
    let mut found: HashMap<String, String> = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            continue;
        }
        if section != profile {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            found.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    Some(Credentials {
        access_key: found.remove("aws_access_key_id")?,
        secret_key: found.remove("aws_secret_access_key")?,
        token: found.remove("aws_session_token"),
    })
}

/// The credentials `vars` and `params` lead to, if any (without them the
/// client asks the instance's metadata service).
fn credentials(
    uri: &str,
    params: &BTreeMap<String, String>,
    vars: &HashMap<String, String>,
) -> Result<Option<Credentials>, StoreError> {
    let var = |name: &str| vars.get(name).filter(|v| !v.is_empty()).cloned();
    if params.get("profile").is_none()
        && let (Some(access_key), Some(secret_key)) =
            (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
    {
        return Ok(Some(Credentials {
            access_key,
            secret_key,
            token: var("AWS_SESSION_TOKEN"),
        }));
    }
    let profile = params
        .get("profile")
        .filter(|p| !p.is_empty())
        .cloned()
        .or_else(|| var("AWS_PROFILE"))
        .unwrap_or_else(|| "default".into());
    let file = var("AWS_SHARED_CREDENTIALS_FILE")
        .or_else(|| var("HOME").map(|home| format!("{home}/.aws/credentials")));
    let text = match file.as_deref().map(std::fs::read_to_string) {
        Some(Ok(text)) => text,
        Some(Err(e)) if params.contains_key("profile") => {
            return Err(uri_error(
                uri,
                format!(
                    "profile `{profile}`: cannot read {}: {e}",
                    file.unwrap_or_default()
                ),
            ));
        }
        _ => return Ok(None),
    };
    match profile_credentials(&text, &profile) {
        Some(c) => Ok(Some(c)),
        None if params.contains_key("profile") => Err(uri_error(
            uri,
            format!(
                "profile `{profile}` has no aws_access_key_id and aws_secret_access_key in {}",
                file.unwrap_or_default()
            ),
        )),
        None => Ok(None),
    }
}

/// The client of `bucket`.
pub(crate) fn bucket(
    uri: &str,
    bucket: &str,
    params: &BTreeMap<String, String>,
    vars: &HashMap<String, String>,
) -> Result<AmazonS3, StoreError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let var = |name: &str| vars.get(name).filter(|v| !v.is_empty()).cloned();
    let region = params
        .get("region")
        .filter(|r| !r.is_empty())
        .cloned()
        .or_else(|| var("AWS_REGION"))
        .or_else(|| var("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".into());
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(region);
    let endpoint = params
        .get("endpoint")
        .filter(|e| !e.is_empty())
        .cloned()
        .or_else(|| var("AWS_ENDPOINT_URL_S3"))
        .or_else(|| var("AWS_ENDPOINT_URL"));
    if let Some(endpoint) = endpoint {
        let url = if endpoint.contains("://") {
            endpoint
        } else {
            let scheme = params.get("scheme").map_or("https", String::as_str);
            if !matches!(scheme, "http" | "https") {
                return Err(uri_error(
                    uri,
                    format!("scheme `{scheme}` is not http or https"),
                ));
            }
            format!("{scheme}://{endpoint}")
        };
        builder = builder
            .with_allow_http(url.starts_with("http://"))
            .with_endpoint(url)
            .with_virtual_hosted_style_request(false);
    }
    // Without credentials the client asks the instance's metadata service.
    if let Some(c) = credentials(uri, params, vars)? {
        builder = builder
            .with_access_key_id(c.access_key)
            .with_secret_access_key(c.secret_key);
        if let Some(token) = c.token {
            builder = builder.with_token(token);
        }
    }
    builder.build().map_err(|e| uri_error(uri, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_is_read_from_its_section_only() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key = B\n\n\
                    # comment\n[ci]\nAWS_ACCESS_KEY_ID=C\naws_secret_access_key= D \naws_session_token = T\n";
        let ci = profile_credentials(text, "ci").unwrap();
        assert_eq!((ci.access_key.as_str(), ci.secret_key.as_str()), ("C", "D"));
        assert_eq!(ci.token.as_deref(), Some("T"));
        let default = profile_credentials(text, "default").unwrap();
        assert_eq!(default.access_key, "A");
        assert_eq!(default.token, None);
        assert!(profile_credentials(text, "other").is_none());
        assert!(profile_credentials("[x]\naws_access_key_id = A\n", "x").is_none());
    }

    #[test]
    fn variables_win_unless_a_profile_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "[p]\naws_access_key_id = FILE\naws_secret_access_key = S\n",
        )
        .unwrap();
        let vars: HashMap<String, String> = [
            ("AWS_ACCESS_KEY_ID", "ENV"),
            ("AWS_SECRET_ACCESS_KEY", "S"),
            ("AWS_SHARED_CREDENTIALS_FILE", file.to_str().unwrap()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let none = BTreeMap::new();
        let from_env = credentials("s3://b", &none, &vars).unwrap().unwrap();
        assert_eq!(from_env.access_key, "ENV");
        let named = BTreeMap::from([("profile".to_string(), "p".to_string())]);
        let from_file = credentials("s3://b", &named, &vars).unwrap().unwrap();
        assert_eq!(from_file.access_key, "FILE");
        let missing = BTreeMap::from([("profile".to_string(), "nope".to_string())]);
        let e = credentials("s3://b?profile=nope", &missing, &vars).unwrap_err();
        assert!(e.to_string().contains("profile `nope`"), "{e}");
    }
}
