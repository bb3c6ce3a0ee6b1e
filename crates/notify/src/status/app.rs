//! A GitHub App's credentials: the app's JSON Web Token (RS256, signed
//! with its private key, ten minutes at most) and the installation access
//! tokens it mints for each repository, kept until 80 % of their life is
//! spent. Tokens are never stored in the database or logged.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hydra_config::Secret;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Value, json};

/// An app's private key (PEM, PKCS#1 as GitHub gives it, or PKCS#8).
pub struct AppKey {
    pair: RsaKeyPair,
}

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppKey(…)")
    }
}

impl AppKey {
    /// Reads a PEM private key; the error says what is wrong, never what
    /// the key is.
    pub fn from_pem(text: &str) -> Result<AppKey, String> {
        let mut label = None;
        let mut body = String::new();
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("-----BEGIN ") {
                label = Some(rest.trim_end_matches('-').trim().to_owned());
            } else if line.starts_with("-----END ") {
                break;
            } else if label.is_some() {
                body.push_str(line);
            }
        }
        let label = label.ok_or("not a PEM file (no BEGIN line)")?;
        let der = STANDARD
            .decode(body.as_bytes())
            .map_err(|e| format!("the PEM body is not base64: {e}"))?;
        let pair = match label.as_str() {
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
            other => return Err(format!("a {other} is not an RSA private key")),
        }
        .map_err(|e| format!("not a usable RSA private key: {e}"))?;
        Ok(AppKey { pair })
    }

    /// The app's JWT at `now`: issued a minute early (clock drift), valid
    /// for nine minutes (GitHub allows ten).
    pub fn jwt(&self, app_id: &str, now: i64) -> Result<String, String> {
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "typ": "JWT"}).to_string());
        let claims = URL_SAFE_NO_PAD
            .encode(json!({"iat": now - 60, "exp": now + 540, "iss": app_id}).to_string());
        let signed = format!("{header}.{claims}");
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signed.as_bytes(),
                &mut signature,
            )
            .map_err(|_| "cannot sign the app's token".to_owned())?;
        Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// Why no token could be had.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Worth trying again (network, 5xx, rate limit).
    Transient(String),
    /// The app is not installed on the repository, or refused.
    Refused(String),
}

/// An app and the installation tokens it minted.
#[derive(Debug)]
pub struct App {
    pub app_id: String,
    key: AppKey,
    api: String,
    /// `owner/repo` → (token, renew after).
    tokens: Mutex<HashMap<String, (Secret, i64)>>,
}

impl App {
    pub fn new(app_id: String, key: AppKey, api: String) -> App {
        App {
            app_id,
            key,
            api,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// An installation token for `repo` (`owner/name`), minted when none
    /// is kept or the kept one has spent 80 % of its life.
    pub async fn token(&self, client: &reqwest::Client, repo: &str) -> Result<Secret, TokenError> {
        let now = i64::from(hydra_db::now());
        if let Some((token, renew)) = self.lock().get(repo)
            && now < *renew
        {
            return Ok(token.clone());
        }
        let jwt = self
            .key
            .jwt(&self.app_id, now)
            .map_err(TokenError::Refused)?;
        let installation = self
            .call(
                client,
                reqwest::Method::GET,
                &format!("/repos/{repo}/installation"),
                &jwt,
            )
            .await?;
        let id = installation["id"].as_i64().ok_or_else(|| {
            TokenError::Refused(format!("GitHub gave no installation id for {repo}"))
        })?;
        let minted = self
            .call(
                client,
                reqwest::Method::POST,
                &format!("/app/installations/{id}/access_tokens"),
                &jwt,
            )
            .await?;
        let token = minted["token"]
            .as_str()
            .ok_or_else(|| TokenError::Refused("GitHub minted no token".into()))?;
        let expires = minted["expires_at"]
            .as_str()
            .and_then(hydra_db::pull_requests::parse_time)
            .map_or(now + 3600, i64::from);
        let renew = now + (expires - now).max(0) * 4 / 5;
        let token = Secret::new(format!("token {token}"));
        self.lock().insert(repo.to_owned(), (token.clone(), renew));
        Ok(token)
    }

    /// Forgets `repo`'s token (GitHub refused it).
    pub fn forget(&self, repo: &str) {
        self.lock().remove(repo);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Secret, i64)>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn call(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        jwt: &str,
    ) -> Result<Value, TokenError> {
        let url = format!("{}{path}", self.api);
        let response = client
            .request(method, &url)
            .header("Accept", "application/vnd.github+json")
            .header("Authorization", format!("Bearer {jwt}"))
            .send()
            .await
            .map_err(|e| TokenError::Transient(format!("{url}: {e}")))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let excerpt: String = text.chars().take(300).collect();
        match status.as_u16() {
            200..=299 => serde_json::from_str(&text)
                .map_err(|e| TokenError::Transient(format!("{url}: not JSON: {e}"))),
            408 | 429 | 500..=599 => Err(TokenError::Transient(format!(
                "{url}: HTTP {status}: {excerpt}"
            ))),
            _ => Err(TokenError::Refused(format!(
                "{url}: HTTP {status}: {excerpt}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_are_not_rsa_private_keys_are_refused_with_a_reason() {
        assert!(
            AppKey::from_pem("hello")
                .unwrap_err()
                .contains("not a PEM file")
        );
        let err = AppKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
            .unwrap_err();
        assert!(err.contains("not an RSA private key"), "{err}");
        let err = AppKey::from_pem(
            "-----BEGIN RSA PRIVATE KEY-----\n!!!\n-----END RSA PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(err.contains("not base64"), "{err}");
        let err = AppKey::from_pem(
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(err.contains("not a usable RSA private key"), "{err}");
    }
}
