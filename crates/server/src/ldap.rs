//! Sign-in against an LDAP directory (`<ldap>`): the search account finds
//! the person by `user_filter`, a bind as them checks the password, and
//! their groups (`role_filter`, named by `role_field`) give Hydra roles
//! through `role_mapping`.

use std::collections::BTreeSet;

use hydra_config::ldap::{LdapConfig, Scope};
use ldap3::{LdapConnAsync, LdapConnSettings, SearchEntry, ldap_escape};

/// A person the directory vouched for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Person {
    pub full_name: String,
    pub email: String,
    /// Hydra roles from their groups.
    pub roles: Vec<String>,
}

fn scope(s: Scope) -> ldap3::Scope {
    match s {
        Scope::Base => ldap3::Scope::Base,
        Scope::One => ldap3::Scope::OneLevel,
        Scope::Sub => ldap3::Scope::Subtree,
    }
}

/// The directory's URL: `ldap_server` as a URL, or a host name.
fn url(server: &str) -> String {
    if server.contains("://") {
        server.to_owned()
    } else {
        format!("ldap://{server}")
    }
}

/// `filter` with `%s` standing for `value` (escaped).
fn fill(filter: &str, value: &str) -> String {
    filter.replace("%s", &ldap_escape(value))
}

/// Checks `user`'s `password` against the directory: the person (`None`:
/// no such person, or a wrong password), or why the directory could not
/// be asked.
pub(crate) async fn authenticate(
    config: &LdapConfig,
    user: &str,
    password: &str,
) -> Result<Option<Person>, String> {
    // An empty password would be an anonymous bind, which "succeeds".
    if user.is_empty() || password.is_empty() {
        return Ok(None);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let settings = LdapConnSettings::new()
        .set_conn_timeout(std::time::Duration::from_secs(10))
        .set_starttls(config.start_tls);
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &url(&config.server))
        .await
        .map_err(|e| format!("cannot reach {}: {e}", config.server))?;
    ldap3::drive!(conn);
    let search_as = |ldap: &mut ldap3::Ldap| {
        let (dn, pw) = (
            config.bind_dn.clone().unwrap_or_default(),
            config
                .bind_password
                .as_ref()
                .map(|p| p.expose().to_owned())
                .unwrap_or_default(),
        );
        let mut ldap = ldap.clone();
        async move {
            ldap.simple_bind(&dn, &pw)
                .await
                .and_then(ldap3::LdapResult::success)
                .map_err(|e| format!("the search account cannot bind: {e}"))
        }
    };
    search_as(&mut ldap).await?;
    let attrs = vec![
        "cn".to_owned(),
        "mail".to_owned(),
        "displayName".to_owned(),
        config.role_value.clone(),
    ];
    let (entries, _) = ldap
        .search(
            &config.user_basedn,
            scope(config.user_scope),
            &fill(&config.user_filter, user),
            attrs,
        )
        .await
        .and_then(ldap3::SearchResult::success)
        .map_err(|e| format!("cannot search for {user}: {e}"))?;
    let mut entries = entries.into_iter().map(SearchEntry::construct);
    let (Some(entry), None) = (entries.next(), entries.next()) else {
        // Nobody, or more than one: not signed in.
        let _ = ldap.unbind().await;
        return Ok(None);
    };
    let bound = ldap.simple_bind(&entry.dn, password).await;
    match bound.map(|r| r.rc) {
        Ok(0) => {}
        Ok(_) => {
            let _ = ldap.unbind().await;
            return Ok(None);
        }
        Err(e) => return Err(format!("cannot bind as {}: {e}", entry.dn)),
    }
    let first = |key: &str| {
        entry
            .attrs
            .get(key)
            .and_then(|v| v.first())
            .cloned()
            .unwrap_or_default()
    };
    let mut groups = BTreeSet::new();
    if config.use_roles {
        search_as(&mut ldap).await?;
        let member = if config.role_value.eq_ignore_ascii_case("dn") {
            entry.dn.clone()
        } else {
            first(&config.role_value)
        };
        let (found, _) = ldap
            .search(
                &config.role_basedn,
                scope(config.role_scope),
                &fill(&config.role_filter, &member),
                vec![config.role_field.clone()],
            )
            .await
            .and_then(ldap3::SearchResult::success)
            .map_err(|e| format!("cannot read the groups of {user}: {e}"))?;
        for group in found.into_iter().map(SearchEntry::construct) {
            groups.extend(
                group
                    .attrs
                    .get(&config.role_field)
                    .cloned()
                    .unwrap_or_default(),
            );
        }
    }
    let _ = ldap.unbind().await;
    let roles: BTreeSet<String> = groups
        .iter()
        .filter_map(|g| config.role_mapping.get(g))
        .flatten()
        .cloned()
        .collect();
    Ok(Some(Person {
        full_name: first("cn"),
        email: first("mail"),
        roles: roles.into_iter().collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_cannot_change_the_filter() {
        assert_eq!(fill("(uid=%s)", "ann"), "(uid=ann)");
        assert_eq!(fill("(uid=%s)", "*)(uid=*"), "(uid=\\2a\\29\\28uid=\\2a)");
        assert_eq!(url("ldap.example.org"), "ldap://ldap.example.org");
        assert_eq!(url("ldaps://x:636"), "ldaps://x:636");
    }
}
