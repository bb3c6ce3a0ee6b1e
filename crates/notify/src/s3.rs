//! A small S3 client for S3Backup: HEAD and PUT of objects, signed with
//! AWS Signature Version 4. Credentials and place come from the usual
//! environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optionally
//! `AWS_SESSION_TOKEN`, the region from `AWS_REGION` or
//! `AWS_DEFAULT_REGION` (default `us-east-1`), and an S3-compatible
//! server's address from `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`
//! (then buckets are addressed by path; on AWS by host name).

use std::collections::HashMap;
use std::path::Path;

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = hmac::Hmac<Sha256>;

/// The client.
pub struct S3 {
    client: reqwest::Client,
    /// A custom server (`http://127.0.0.1:9000`), without a trailing slash.
    endpoint: Option<String>,
    region: String,
    access_key: String,
    secret_key: hydra_config::Secret,
    token: Option<hydra_config::Secret>,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .finish()
    }
}

/// When a request is signed: `YYYYMMDD` and `YYYYMMDDTHHMMSSZ`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub date: String,
    pub time: String,
}

impl Stamp {
    pub fn now() -> Stamp {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Stamp::at(secs)
    }

    /// The stamp of `secs` seconds after the epoch (UTC).
    pub fn at(secs: u64) -> Stamp {
        let (year, month, day, hour, minute, second) = hydra_db::utc(secs);
        let date = format!("{year:04}{month:02}{day:02}");
        Stamp {
            time: format!("{date}T{hour:02}{minute:02}{second:02}Z"),
            date,
        }
    }
}

/// URI-encodes `text` as SigV4 wants (unreserved characters kept; `/`
/// kept when `path`).
fn encode(text: &str, path: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if path => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("any key size"));
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// What a request to sign is.
#[derive(Clone, Debug)]
pub struct Unsigned<'a> {
    pub method: &'a str,
    /// The `Host` header.
    pub host: &'a str,
    /// The path, not yet encoded.
    pub path: &'a str,
    /// Query parameters, not yet encoded.
    pub query: &'a [(&'a str, &'a str)],
    /// Headers besides `host` (names in any case).
    pub headers: &'a [(&'a str, &'a str)],
    /// Hex SHA-256 of the body (`x-amz-content-sha256`).
    pub payload_hash: &'a str,
}

/// The `Authorization` header of `request`, signed by `access_key` /
/// `secret_key` for `region` and service `s3` at `stamp`.
pub fn authorization(
    request: &Unsigned<'_>,
    access_key: &str,
    secret_key: &str,
    region: &str,
    stamp: &Stamp,
) -> String {
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    headers.push(("host".into(), request.host.to_string()));
    headers.sort();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let mut query: Vec<(String, String)> = request
        .query
        .iter()
        .map(|(k, v)| (encode(k, false), encode(v, false)))
        .collect();
    query.sort();
    let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let canonical = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        encode(request.path, true),
        query.join("&"),
        headers
            .iter()
            .map(|(k, v)| format!("{k}:{v}\n"))
            .collect::<String>(),
        signed,
        request.payload_hash
    );
    let scope = format!("{}/{region}/s3/aws4_request", stamp.date);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        stamp.time,
        sha256_hex(canonical.as_bytes())
    );
    let key = hmac(format!("AWS4{secret_key}").as_bytes(), &stamp.date);
    let key = hmac(&key, region);
    let key = hmac(&key, "s3");
    let key = hmac(&key, "aws4_request");
    let signature = hex::encode(hmac(&key, &to_sign));
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )
}

impl S3 {
    /// The client the environment `vars` configure.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<S3, String> {
        let var = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
        let access_key = var("AWS_ACCESS_KEY_ID").ok_or("S3Backup needs AWS_ACCESS_KEY_ID")?;
        let secret_key =
            var("AWS_SECRET_ACCESS_KEY").ok_or("S3Backup needs AWS_SECRET_ACCESS_KEY")?;
        Ok(S3 {
            client: crate::http::client()?,
            endpoint: var("AWS_ENDPOINT_URL_S3")
                .or_else(|| var("AWS_ENDPOINT_URL"))
                .map(|e| e.trim_end_matches('/').to_string()),
            region: var("AWS_REGION")
                .or_else(|| var("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".into()),
            access_key,
            secret_key: hydra_config::Secret::new(secret_key),
            token: var("AWS_SESSION_TOKEN").map(hydra_config::Secret::new),
        })
    }

    /// The URL, `Host` and path of `key` in `bucket`.
    fn place(&self, bucket: &str, key: &str) -> (String, String, String) {
        match &self.endpoint {
            Some(endpoint) => {
                let host = endpoint
                    .split_once("://")
                    .map_or(endpoint.as_str(), |(_, h)| h)
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let path = format!("/{bucket}/{key}");
                (format!("{endpoint}{}", encode(&path, true)), host, path)
            }
            None => {
                let host = format!("{bucket}.s3.{}.amazonaws.com", self.region);
                let path = format!("/{key}");
                (format!("https://{host}{}", encode(&path, true)), host, path)
            }
        }
    }

    /// A signed request for `key` in `bucket`.
    fn request(
        &self,
        method: reqwest::Method,
        bucket: &str,
        key: &str,
        payload_hash: &str,
        extra: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let (url, host, path) = self.place(bucket, key);
        let stamp = Stamp::now();
        let mut headers: Vec<(&str, &str)> = vec![
            ("x-amz-content-sha256", payload_hash),
            ("x-amz-date", &stamp.time),
        ];
        headers.extend_from_slice(extra);
        let token = self.token.as_ref().map(|t| t.expose().to_string());
        if let Some(token) = &token {
            headers.push(("x-amz-security-token", token));
        }
        let auth = authorization(
            &Unsigned {
                method: method.as_str(),
                host: &host,
                path: &path,
                query: &[],
                headers: &headers,
                payload_hash,
            },
            &self.access_key,
            self.secret_key.expose(),
            &self.region,
            &stamp,
        );
        let mut builder = self.client.request(method, url);
        for (k, v) in headers {
            builder = builder.header(k, v);
        }
        builder.header(reqwest::header::AUTHORIZATION, auth)
    }

    /// Whether `key` exists in `bucket`.
    pub async fn exists(&self, bucket: &str, key: &str) -> Result<bool, String> {
        let empty = sha256_hex(b"");
        let response = self
            .request(reqwest::Method::HEAD, bucket, key, &empty, &[])
            .send()
            .await
            .map_err(|e| format!("S3 HEAD {bucket}/{key}: {e}"))?;
        match response.status().as_u16() {
            200..=299 => Ok(true),
            404 => Ok(false),
            status => Err(format!("S3 HEAD {bucket}/{key}: HTTP {status}")),
        }
    }

    /// Stores `body` as `key` in `bucket`.
    pub async fn put(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(), String> {
        let hash = sha256_hex(&body);
        let response = self
            .request(
                reqwest::Method::PUT,
                bucket,
                key,
                &hash,
                &[("content-type", content_type)],
            )
            .body(body)
            .send()
            .await;
        stored(response, bucket, key).await
    }

    /// Stores the file at `path` as `key` in `bucket`, streamed; its
    /// SHA-256 (hex) and size are `hash` and `size`.
    pub async fn put_file(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
        path: &Path,
        hash: &str,
        size: u64,
    ) -> Result<(), String> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let response = self
            .request(
                reqwest::Method::PUT,
                bucket,
                key,
                hash,
                &[("content-type", content_type)],
            )
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(body)
            .send()
            .await;
        stored(response, bucket, key).await
    }
}

/// The outcome of a PUT of `key` in `bucket`.
async fn stored(
    response: reqwest::Result<reqwest::Response>,
    bucket: &str,
    key: &str,
) -> Result<(), String> {
    let response = response.map_err(|e| format!("S3 PUT {bucket}/{key}: {e}"))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    Err(format!(
        "S3 PUT {bucket}/{key}: HTTP {status}: {}",
        text.chars().take(300).collect::<String>()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's documented example of a signed GET (Signature Version 4, "GET
    /// Object" with a Range header).
    #[test]
    fn signatures_match_the_documented_example() {
        let empty = sha256_hex(b"");
        assert_eq!(
            empty,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let stamp = Stamp {
            date: "20130524".into(),
            time: "20130524T000000Z".into(),
        };
        let auth = authorization(
            &Unsigned {
                method: "GET",
                host: "examplebucket.s3.amazonaws.com",
                path: "/test.txt",
                query: &[],
                headers: &[
                    ("range", "bytes=0-9"),
                    ("x-amz-content-sha256", &empty),
                    ("x-amz-date", "20130524T000000Z"),
                ],
                payload_hash: &empty,
            },
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "us-east-1",
            &stamp,
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn stamps_are_utc_in_the_basic_format() {
        assert_eq!(Stamp::at(0).time, "19700101T000000Z");
        assert_eq!(Stamp::at(1_369_353_600).time, "20130524T000000Z");
        assert_eq!(Stamp::at(951_782_400 + 3661).time, "20000229T010101Z");
        assert_eq!(Stamp::at(1_796_342_400).date, "20261204");
    }
}
