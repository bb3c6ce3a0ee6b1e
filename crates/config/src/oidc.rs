//! `<oidc>`: sign-in with OpenID Connect providers, one `<provider NAME>`
//! block each.

use crate::Secret;
use crate::general::{Tree, Value};

/// One provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcProvider {
    /// The block's name: in URLs (`/oidc-redirect/NAME`) and user names
    /// (`NAME:sub`).
    pub name: String,
    pub display_name: String,
    pub discovery_url: Option<String>,
    /// Explicit endpoints win over discovered ones.
    pub issuer: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    pub end_session_endpoint: Option<String>,
    pub client_id: String,
    pub client_secret: Secret,
    pub extra_scopes: Vec<String>,
}

/// Reads an `<oidc>` block; the error names the provider and what is
/// missing.
pub fn parse(oidc: &Tree) -> Result<Vec<OidcProvider>, String> {
    let Some(providers) = oidc.get("provider") else {
        return Ok(Vec::new());
    };
    let Value::Block { tree, .. } = providers else {
        return Err("<oidc>: write each provider as <provider NAME> … </provider>".into());
    };
    let mut out = Vec::new();
    for (name, block) in tree.iter() {
        let Value::Block { tree: p, .. } = block else {
            return Err(format!("<oidc><provider {name}> must be a block"));
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "<oidc><provider {name}>: the name may have letters, digits, - and _ only"
            ));
        }
        let client_id = p
            .text("client_id")
            .ok_or_else(|| format!("<oidc><provider {name}> needs client_id"))?;
        let client_secret = match (p.text("client_secret"), p.text("client_secret_file")) {
            (Some(s), _) => s,
            (None, Some(file)) => std::fs::read_to_string(&file)
                .map_err(|e| {
                    format!("<oidc><provider {name}>: cannot read client_secret_file {file}: {e}")
                })?
                .trim()
                .to_owned(),
            (None, None) => {
                return Err(format!(
                    "<oidc><provider {name}> needs client_secret or client_secret_file"
                ));
            }
        };
        let provider = OidcProvider {
            name: name.clone(),
            display_name: p
                .text("display_name")
                .unwrap_or_else(|| format!("OIDC ({name})")),
            discovery_url: p.text("discovery_url"),
            issuer: p.text("issuer"),
            authorization_endpoint: p.text("authorization_endpoint"),
            token_endpoint: p.text("token_endpoint"),
            jwks_uri: p.text("jwks_uri"),
            end_session_endpoint: p.text("end_session_endpoint"),
            client_id,
            client_secret: Secret::new(client_secret),
            extra_scopes: p
                .text("extra_scopes")
                .map(|s| s.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
        };
        let explicit = provider.issuer.is_some()
            && provider.authorization_endpoint.is_some()
            && provider.token_endpoint.is_some()
            && provider.jwks_uri.is_some();
        if provider.discovery_url.is_none() && !explicit {
            return Err(format!(
                "<oidc><provider {name}> needs discovery_url, or all of issuer, \
                 authorization_endpoint, token_endpoint and jwks_uri"
            ));
        }
        out.push(provider);
    }
    Ok(out)
}
