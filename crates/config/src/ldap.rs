//! `<ldap>`: sign-in against an LDAP directory, in the form Hydra's
//! configuration has (Catalyst's LDAP store under `<config><store>`, and
//! `<role_mapping>` from directory groups to Hydra's roles).

use std::collections::BTreeMap;

use crate::Secret;
use crate::general::{Tree, Value};

/// Hydra's roles, the only ones a group may map to.
pub const ROLES: &[&str] = &[
    "admin",
    "create-projects",
    "restart-jobs",
    "bump-to-front",
    "cancel-build",
    "eval-jobset",
];

/// How people are found and their groups read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LdapConfig {
    /// `ldap_server`: a host (port 389) or an `ldap://` / `ldaps://` URL.
    pub server: String,
    pub start_tls: bool,
    /// `binddn` / `bindpw` for searching (anonymous when unset).
    pub bind_dn: Option<String>,
    pub bind_password: Option<Secret>,
    pub user_basedn: String,
    /// `user_filter`, `%s` standing for the (escaped) user name.
    pub user_filter: String,
    pub user_scope: Scope,
    pub user_field: String,
    pub use_roles: bool,
    pub role_basedn: String,
    /// `role_filter`, `%s` standing for the user's `role_value`.
    pub role_filter: String,
    pub role_scope: Scope,
    /// The group's attribute that names it (`cn`).
    pub role_field: String,
    /// The user's attribute groups list as members (`dn`, or e.g. `uid`).
    pub role_value: String,
    /// Group name → Hydra roles.
    pub role_mapping: BTreeMap<String, Vec<String>>,
}

/// A search scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Base,
    One,
    Sub,
}

fn scope(tree: &Tree, key: &str) -> Result<Scope, String> {
    match tree.text(key).as_deref().unwrap_or("sub") {
        "base" => Ok(Scope::Base),
        "one" | "onelevel" => Ok(Scope::One),
        "sub" | "subtree" => Ok(Scope::Sub),
        other => Err(format!(
            "<ldap><config><store> {key} must be base, one or sub, not `{other}`"
        )),
    }
}

fn truthy(tree: &Tree, key: &str) -> bool {
    matches!(
        tree.text(key)
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("1" | "true" | "yes" | "on")
    )
}

/// Reads an `<ldap>` block; the error names what is wrong (every bad role
/// mapping at once, as Hydra's "Failed to normalize LDAP role mappings").
pub fn parse(ldap: &Tree) -> Result<LdapConfig, String> {
    let store = ldap
        .block("config")
        .and_then(|c| c.block("store"))
        .ok_or("<ldap> needs a <config><store> block (ldap_server, user_basedn, …)")?;
    let need = |key: &str| {
        store
            .text(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("<ldap><config><store> needs {key}"))
    };
    let mut role_mapping: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut bad = Vec::new();
    if let Some(mapping) = ldap.block("role_mapping") {
        for (group, value) in mapping.iter() {
            for v in value.occurrences() {
                let Value::Scalar { value, .. } = v else {
                    bad.push(format!("{group} (not a role name)"));
                    continue;
                };
                for role in value.clone().unwrap_or_default().split_whitespace() {
                    if ROLES.contains(&role) {
                        role_mapping
                            .entry(group.clone())
                            .or_default()
                            .push(role.to_owned());
                    } else {
                        bad.push(format!("{group} = {role}"));
                    }
                }
            }
        }
    }
    if !bad.is_empty() {
        return Err(format!(
            "Failed to normalize LDAP role mappings: {} (roles are {})",
            bad.join(", "),
            ROLES.join(", ")
        ));
    }
    Ok(LdapConfig {
        server: need("ldap_server")?,
        start_tls: truthy(store, "start_tls"),
        bind_dn: store.text("binddn").filter(|v| !v.is_empty()),
        bind_password: store
            .text("bindpw")
            .filter(|v| !v.is_empty())
            .map(Secret::new),
        user_basedn: need("user_basedn")?,
        user_filter: store
            .text("user_filter")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "(uid=%s)".into()),
        user_scope: scope(store, "user_scope")?,
        user_field: store
            .text("user_field")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "uid".into()),
        use_roles: truthy(store, "use_roles"),
        role_basedn: store.text("role_basedn").unwrap_or_default(),
        role_filter: store
            .text("role_filter")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "(memberUid=%s)".into()),
        role_scope: scope(store, "role_scope")?,
        role_field: store
            .text("role_field")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "cn".into()),
        role_value: store
            .text("role_value")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "dn".into()),
        role_mapping,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Tree {
        crate::general::parse_str(std::path::Path::new("hydra.conf"), text)
            .unwrap()
            .tree
    }

    const STORE: &str = "<config>\n<store>\nldap_server = ldap://127.0.0.1:389\nbinddn = \"cn=admin,dc=example\"\nbindpw = s\nuser_basedn = \"ou=people,dc=example\"\nuser_filter = \"(&(objectClass=inetOrgPerson)(uid=%s))\"\nuser_scope = one\nuse_roles = 1\nrole_basedn = \"ou=groups,dc=example\"\nrole_filter = \"(&(objectClass=groupOfNames)(member=%s))\"\nrole_scope = one\nrole_field = cn\nrole_value = dn\n</store>\n</config>\n";

    #[test]
    fn hydras_ldap_block_is_read_with_its_role_mapping() {
        let tree = read(&format!(
            "<ldap>\n{STORE}<role_mapping>\nhydra_admin = admin\nmany = create-projects\nmany = bump-to-front\n</role_mapping>\n</ldap>\n"
        ));
        let Some(Value::Block { tree: ldap, .. }) =
            tree.get("ldap").map(|v| v.occurrences()[0].clone())
        else {
            panic!("no ldap block");
        };
        let c = parse(&ldap).unwrap();
        assert_eq!(c.server, "ldap://127.0.0.1:389");
        assert_eq!(c.bind_dn.as_deref(), Some("cn=admin,dc=example"));
        assert_eq!(c.user_scope, Scope::One);
        assert!(c.use_roles);
        assert_eq!(c.role_mapping["hydra_admin"], vec!["admin"]);
        assert_eq!(
            c.role_mapping["many"],
            vec!["create-projects", "bump-to-front"]
        );
    }

    #[test]
    fn unknown_roles_are_all_named() {
        let tree = read(&format!(
            "<ldap>\n{STORE}<role_mapping>\na = admin\nb = foo\nc = bar\n</role_mapping>\n</ldap>\n"
        ));
        let Some(Value::Block { tree: ldap, .. }) =
            tree.get("ldap").map(|v| v.occurrences()[0].clone())
        else {
            panic!("no ldap block");
        };
        let err = parse(&ldap).unwrap_err();
        assert!(
            err.starts_with("Failed to normalize LDAP role mappings"),
            "{err}"
        );
        assert!(err.contains("b = foo") && err.contains("c = bar"), "{err}");
        let tree = read("<ldap>\n<config>\n</config>\n</ldap>\n");
        let Some(Value::Block { tree: ldap, .. }) =
            tree.get("ldap").map(|v| v.occurrences()[0].clone())
        else {
            panic!("no ldap block");
        };
        assert!(parse(&ldap).unwrap_err().contains("<config><store>"));
    }
}
