//! Sign-in with GitHub against a fake GitHub on 127.0.0.1: the state is
//! bound to the browser and checked, the return path is honoured but
//! never leaves the site, Hydra's email rules hold.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hydra_test_support::http::{Recorder, Reply as Answer};
use serde_json::json;

use crate::common::{self, App, BASE};

async fn app(forge: &Recorder, extra: &str) -> App {
    App::with_config(&format!(
        "github_client_id = the-client\ngithub_client_secret = the-secret\n\
         github_url = {url}\ngithub_api_url = {url}/api\n{extra}",
        url = forge.url()
    ))
    .await
}

fn fake_github(forge: &Recorder, email: &str) {
    forge.reply_at(
        "/login/oauth/access_token",
        Answer::new(200).body(r#"{"access_token": "gho_token", "token_type": "bearer"}"#),
    );
    forge.reply_at(
        "/api/user/emails",
        Answer::new(200).body(
            &json!([
                {"email": "old@example.org", "verified": true, "primary": false},
                {"email": email, "verified": true, "primary": true}
            ])
            .to_string(),
        ),
    );
    forge.reply_at(
        "/api/user",
        Answer::new(200).body(r#"{"login": "ann", "name": "Ann Example"}"#),
    );
}

/// Starts a sign-in: the authorize URL's query and the cookie.
async fn start(app: &App, after: &str) -> (String, String) {
    let r = app.get(&format!("/github-redirect?after={after}")).await;
    assert!(r.status.is_redirection(), "{}: {}", r.status, r.text());
    let location = r.header("location").unwrap();
    let cookie = r.header("set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_string();
    (location, cookie)
}

fn param(url: &str, name: &str) -> String {
    url.split(['?', '&'])
        .find_map(|p| p.strip_prefix(&format!("{name}=")))
        .map(|v| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8()
                .unwrap()
                .into_owned()
        })
        .unwrap_or_default()
}

async fn callback(app: &App, query: &str, cookie: Option<&str>) -> common::Reply {
    let mut req = Request::get(format!("/github-login?{query}")).header("host", common::HOST);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    app.raw(req.body(Body::empty()).unwrap()).await
}

/// A page as a browser asks for it.
async fn page(app: &App, uri: &str) -> common::Reply {
    let req = Request::get(uri)
        .header("host", common::HOST)
        .header("accept", "text/html");
    app.raw(req.body(Body::empty()).unwrap()).await
}

#[tokio::test]
async fn github_sign_in_checks_the_state_and_returns_to_the_page() {
    let forge = Recorder::start();
    fake_github(&forge, "ann@example.org");
    let app = app(&forge, "").await;

    let (location, cookie) = start(&app, "/project/demo").await;
    assert!(
        location.starts_with(&format!("{}/login/oauth/authorize?", forge.url())),
        "{location}"
    );
    assert_eq!(param(&location, "client_id"), "the-client");
    assert_eq!(param(&location, "scope"), "user:email");
    assert_eq!(
        param(&location, "redirect_uri"),
        format!("{BASE}github-login")
    );
    let state = param(&location, "state");
    assert_eq!(state.len(), 64, "a fresh random state: {state}");

    // A forged or missing state is refused, and nothing is asked of GitHub.
    let r = callback(&app, "code=c1&state=forged", Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("state does not match"), "{}", r.text());
    let r = callback(&app, &format!("code=c1&state={state}"), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.text().contains("not started from this browser"),
        "{}",
        r.text()
    );
    assert!(forge.requests().is_empty());

    // The real answer signs in and goes back to the page.
    let r = callback(&app, &format!("code=c1&state={state}"), Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text());
    assert_eq!(r.header("location").unwrap(), format!("{BASE}project/demo"));
    let cookies: Vec<String> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("hydra_session=") && !c.starts_with("hydra_session=;")),
        "{cookies:?}"
    );
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("hydra_oauth=;") && c.contains("Max-Age=0")),
        "the state is spent: {cookies:?}"
    );
    assert_eq!(
        app.scalar("select count(*) from UserRoles where userName = 'ann@example.org'")
            .await,
        0,
        "GitHub sign-ins get no roles"
    );
    let kind = app
        .strings("select type || ' ' || fullName || ' ' || emailAddress from Users where userName = 'ann@example.org'")
        .await;
    assert_eq!(kind, vec!["github Ann Example ann@example.org"]);

    let requests = forge.requests();
    let token = requests
        .iter()
        .find(|r| r.path == "/login/oauth/access_token")
        .unwrap();
    assert_eq!(token.method, "POST");
    assert!(
        token.body.contains("client_secret=the-secret") && token.body.contains("code=c1"),
        "{}",
        token.body
    );
    assert_eq!(token.header("accept"), Some("application/json"));
    let emails = requests
        .iter()
        .find(|r| r.path == "/api/user/emails")
        .unwrap();
    assert_eq!(emails.header("authorization"), Some("token gho_token"));
}

#[tokio::test]
async fn github_sign_in_never_leaves_the_site_and_keeps_hydras_account_rules() {
    let forge = Recorder::start();
    fake_github(&forge, "ann@example.org");
    let app = app(&forge, "allowed_domains = example.org, example.com\n").await;

    // An `after` that would leave the site is dropped: back to the root.
    for evil in [
        "//evil.example/x",
        "https://evil.example/",
        "/\\\\evil.example",
    ] {
        let (location, cookie) = start(
            &app,
            &percent_encoding::utf8_percent_encode(evil, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
        )
        .await;
        let state = param(&location, "state");
        let r = callback(&app, &format!("code=c&state={state}"), Some(&cookie)).await;
        assert_eq!(r.status, StatusCode::FOUND, "{evil}: {}", r.text());
        assert_eq!(r.header("location").unwrap(), BASE, "{evil}");
    }

    // An account of the same name but another type is not taken over.
    app.exec("update Users set type = 'hydra' where userName = 'ann@example.org'")
        .await;
    let (location, cookie) = start(&app, "/").await;
    let r = callback(
        &app,
        &format!("code=c&state={}", param(&location, "state")),
        Some(&cookie),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.text().contains("signs in as a hydra account"),
        "{}",
        r.text()
    );

    // Domains outside allowed_domains, and plus-addresses, are refused.
    for (email, why) in [
        ("bob@elsewhere.org", "domain"),
        ("bob+ci@example.org", "not an email address"),
    ] {
        fake_github(&forge, email);
        let (location, cookie) = start(&app, "/").await;
        let r = callback(
            &app,
            &format!("code=c&state={}", param(&location, "state")),
            Some(&cookie),
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{email}");
        assert!(r.text().contains(why), "{email}: {}", r.text());
    }

    // GitHub saying no is shown, not an error page of ours.
    let (location, cookie) = start(&app, "/").await;
    let r = callback(
        &app,
        &format!(
            "error=access_denied&error_description=The+user+said+no&state={}",
            param(&location, "state")
        ),
        Some(&cookie),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.text().contains("The user said no") || r.text().contains("access_denied"),
        "{}",
        r.text()
    );

    // The sign-in page offers the button; without a client id there is
    // no route to start from.
    let login = page(&app, "/login?next=/project/demo").await;
    assert!(
        login
            .text()
            .contains("/github-redirect?after=%2Fproject%2Fdemo"),
        "{}",
        login.text()
    );
    let plain = App::new().await;
    assert_eq!(
        plain.get("/github-redirect").await.status,
        StatusCode::NOT_FOUND
    );
    assert!(
        !page(&plain, "/login")
            .await
            .text()
            .contains("github-redirect")
    );
}

/// People and groups as Hydra's own LDAP test has them.
fn directory() -> hydra_test_support::slapd::Slapd {
    use hydra_test_support::slapd::{SUFFIX, Slapd, ldif};
    let person = |uid: &str, password: &str| {
        format!(
            "dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid} Example\nsn: Example\nmail: {uid}@example.org\nuserPassword: {password}\n\n"
        )
    };
    let group = |cn: &str, members: &[&str]| {
        let mut g =
            format!("dn: cn={cn},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: {cn}\n");
        for m in members {
            g.push_str(&format!("member: uid={m},ou=people,{SUFFIX}\n"));
        }
        g + "\n"
    };
    let entries = [
        person("unrelated_user", "pw-unrelated"),
        person("admin_user", "pw-admin"),
        person("hyphen_user", "pw-hyphen"),
        person("many_roles", "pw-many"),
        person("many_roles_one_group", "pw-one-group"),
        person("localdave", "pw-ldap-dave"),
        group("hydra_admin", &["admin_user"]),
        group("hydra-admin", &["hyphen_user"]),
        group("hydra_create-projects", &["many_roles"]),
        group("hydra_restart-jobs", &["many_roles"]),
        group("hydra_bump-to-front", &["many_roles"]),
        group("hydra_cancel-build", &["many_roles"]),
        group("hydra_eval-jobset", &["many_roles"]),
        group("hydra_one_group_many_roles", &["many_roles_one_group"]),
    ]
    .concat();
    Slapd::start(&ldif(&entries))
}

fn ldap_config(url: &str) -> String {
    use hydra_test_support::slapd::{ADMIN_DN, ADMIN_PASSWORD, SUFFIX};
    format!(
        "<ldap>\n<config>\n<credential>\nclass = Password\npassword_field = password\npassword_type = self_check\n</credential>\n\
         <store>\nclass = LDAP\nldap_server = {url}\nbinddn = \"{ADMIN_DN}\"\nbindpw = {ADMIN_PASSWORD}\n\
         user_basedn = \"ou=people,{SUFFIX}\"\nuser_filter = \"(&(objectClass=inetOrgPerson)(uid=%s))\"\nuser_scope = one\nuser_field = uid\n\
         use_roles = 1\nrole_basedn = \"ou=groups,{SUFFIX}\"\nrole_filter = \"(&(objectClass=groupOfNames)(member=%s))\"\n\
         role_scope = one\nrole_field = cn\nrole_value = dn\n</store>\n</config>\n\
         <role_mapping>\nhydra_admin = admin\nhydra_create-projects = create-projects\nhydra_restart-jobs = restart-jobs\n\
         hydra_bump-to-front = bump-to-front\nhydra_cancel-build = cancel-build\nhydra_eval-jobset = eval-jobset\n\
         hydra_one_group_many_roles = create-projects\nhydra_one_group_many_roles = bump-to-front\n\
         hydra_one_group_many_rolez = cancel-build\nhydra_one_group_many_roles = cancel-build\n</role_mapping>\n</ldap>\n"
    )
}

#[tokio::test]
async fn ldap_sign_ins_bind_map_groups_to_roles_and_leave_local_accounts_alone() {
    use axum::http::Method;
    use common::As;

    let slapd = directory();
    let app = App::with_config(&ldap_config(&slapd.url())).await;
    let login = |user: &'static str, password: &'static str| {
        let app = &app;
        async move {
            app.send(
                &As::Anonymous,
                Method::POST,
                "/login",
                Some(json!({ "username": user, "password": password })),
            )
            .await
        }
    };
    let roles = |r: &common::Reply| -> Vec<String> {
        let mut roles: Vec<String> = r.json()["userroles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        roles.sort();
        roles
    };
    for (user, password, want) in [
        ("unrelated_user", "pw-unrelated", vec![]),
        ("admin_user", "pw-admin", vec!["admin"]),
        ("hyphen_user", "pw-hyphen", vec![]),
        (
            "many_roles",
            "pw-many",
            vec![
                "bump-to-front",
                "cancel-build",
                "create-projects",
                "eval-jobset",
                "restart-jobs",
            ],
        ),
        (
            "many_roles_one_group",
            "pw-one-group",
            vec!["bump-to-front", "cancel-build", "create-projects"],
        ),
    ] {
        let r = login(user, password).await;
        assert_eq!(r.status, StatusCode::FOUND, "{user}: {}", r.text());
        assert_eq!(r.json()["username"], json!(user));
        assert_eq!(
            r.json()["emailaddress"],
            json!(format!("{user}@example.org"))
        );
        assert_eq!(roles(&r), want, "{user}");
    }
    let kind = app
        .strings("select type || ' ' || fullName || ' ' || password from Users where userName = 'admin_user'")
        .await;
    assert_eq!(kind, vec!["LDAP admin_user Example !"]);

    // A wrong password, or nobody by that name: refused.
    assert_eq!(
        login("admin_user", "wrong").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        login("nobody", "pw-admin").await.status,
        StatusCode::FORBIDDEN
    );
    // An empty password would be an anonymous bind, which LDAP accepts.
    let empty = login("admin_user", "").await.status;
    assert!(
        empty == StatusCode::BAD_REQUEST || empty == StatusCode::FORBIDDEN,
        "{empty}"
    );

    // Roles follow the directory: taken away when the group goes.
    app.exec("insert into UserRoles (userName, role) values ('unrelated_user', 'admin')")
        .await;
    let r = login("unrelated_user", "pw-unrelated").await;
    assert_eq!(roles(&r), Vec::<String>::new());

    // A local account of the same name is never taken over.
    let hash = hydra_db::password::hash("local password").unwrap();
    app.exec(&format!(
        "insert into Users (userName, fullName, emailAddress, password, type) \
         values ('localdave', 'Dave', 'dave@local', '{hash}', 'hydra')"
    ))
    .await;
    let r = login("localdave", "pw-ldap-dave").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    let kept = app
        .strings("select type || ' ' || emailAddress from Users where userName = 'localdave'")
        .await;
    assert_eq!(kept, vec!["hydra dave@local"]);
    let r = login("localdave", "local password").await;
    assert_eq!(
        r.status,
        StatusCode::FOUND,
        "the local password still works"
    );
}

/// A test identity provider: discovery and keys on a recording server,
/// ID tokens signed by openssl with its RSA key.
struct Idp {
    server: Recorder,
    keys: tempfile::TempDir,
}

impl Idp {
    fn start() -> Idp {
        use base64::Engine;
        let keys = hydra_test_support::shared_tempdir();
        for name in ["idp.pem", "other.pem"] {
            let out = std::process::Command::new("openssl")
                .args(["genrsa", "-traditional", "-out", name, "2048"])
                .current_dir(keys.path())
                .output()
                .unwrap();
            assert!(out.status.success());
        }
        let out = std::process::Command::new("openssl")
            .args(["rsa", "-in", "idp.pem", "-noout", "-modulus"])
            .current_dir(keys.path())
            .output()
            .unwrap();
        let modulus = String::from_utf8(out.stdout).unwrap();
        let n = hex::decode(modulus.trim().trim_start_matches("Modulus=")).unwrap();
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(n);
        let server = Recorder::start();
        let url = server.url();
        server.reply_at(
            "/.well-known/openid-configuration",
            Answer::new(200).body(
                &json!({
                    "issuer": url,
                    "authorization_endpoint": format!("{url}/authorize"),
                    "token_endpoint": format!("{url}/token"),
                    "jwks_uri": format!("{url}/jwks"),
                })
                .to_string(),
            ),
        );
        server.reply_at(
            "/jwks",
            Answer::new(200).body(
                &json!({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": n, "e": "AQAB"}]})
                    .to_string(),
            ),
        );
        Idp { server, keys }
    }

    fn config(&self) -> String {
        format!(
            "<oidc>\n<provider test>\ndisplay_name = Test IdP\ndiscovery_url = {0}/.well-known/openid-configuration\n\
             client_id = hydra-client\nclient_secret = idp-secret\nend_session_endpoint = {0}/logout\n</provider>\n</oidc>\n",
            self.server.url()
        )
    }

    /// An ID token with `claims`, signed by `key` (`idp.pem`, or another).
    fn token(&self, claims: &serde_json::Value, key: &str) -> String {
        use base64::Engine;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let head = b64(json!({"alg": "RS256", "kid": "k1", "typ": "JWT"})
            .to_string()
            .as_bytes());
        let body = b64(claims.to_string().as_bytes());
        let signed = format!("{head}.{body}");
        std::fs::write(self.keys.path().join("signed"), &signed).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-sign", key, "signed"])
            .current_dir(self.keys.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        format!("{signed}.{}", b64(&out.stdout))
    }

    /// The provider's next ID token.
    fn answer_with(&self, token: &str) {
        self.server.reply_at(
            "/token",
            Answer::new(200).body(
                &json!({"id_token": token, "access_token": "at", "token_type": "Bearer"})
                    .to_string(),
            ),
        );
    }
}

/// Makes a forged token's claims (from the sign-in's nonce) and names the
/// key that signs it.
type Forgery<'a> = Box<dyn Fn(&str) -> (serde_json::Value, &'static str) + 'a>;

/// Starts an OpenID Connect sign-in: the authorize URL and the cookie.
async fn oidc_start(app: &App, after: &str) -> (String, String) {
    let r = app.get(&format!("/oidc-redirect/test?after={after}")).await;
    assert!(r.status.is_redirection(), "{}: {}", r.status, r.text());
    let cookie = r.header("set-cookie").unwrap();
    (
        r.header("location").unwrap(),
        cookie.split(';').next().unwrap().to_string(),
    )
}

async fn oidc_callback(app: &App, state: &str, cookie: Option<&str>) -> common::Reply {
    let mut req = Request::get(format!("/oidc-callback/test?code=the-code&state={state}"))
        .header("host", common::HOST);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    app.raw(req.body(Body::empty()).unwrap()).await
}

#[tokio::test]
async fn oidc_sign_in_checks_the_token_and_refuses_every_forgery() {
    use base64::Engine;
    use sha2::Digest;

    let idp = Idp::start();
    let app = App::with_config(&idp.config()).await;
    let now = hydra_db::now();
    let claims = |nonce: &str| {
        json!({
            "iss": idp.server.url(), "aud": "hydra-client", "sub": "sub-1",
            "exp": now + 300, "iat": now, "nonce": nonce,
            "email": "olga@example.org", "name": "Olga",
            "hydra_roles": ["bump_to_front", "cancel_build", "restart_jobs", "emperor"],
        })
    };

    // The redirect carries what OpenID Connect asks for.
    let (location, cookie) = oidc_start(&app, "/project/demo").await;
    assert!(
        location.starts_with(&format!("{}/authorize?", idp.server.url())),
        "{location}"
    );
    assert_eq!(param(&location, "response_type"), "code");
    assert_eq!(param(&location, "client_id"), "hydra-client");
    assert_eq!(param(&location, "scope"), "openid profile email");
    assert_eq!(param(&location, "code_challenge_method"), "S256");
    assert_eq!(
        param(&location, "redirect_uri"),
        format!("{BASE}oidc-callback/test")
    );
    let state = param(&location, "state");
    let nonce = param(&location, "nonce");
    idp.answer_with(&idp.token(&claims(&nonce), "idp.pem"));
    let r = oidc_callback(&app, &state, Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text());
    assert_eq!(r.header("location").unwrap(), format!("{BASE}project/demo"));
    let user = app
        .strings("select type || ' ' || emailAddress || ' ' || fullName from Users where userName = 'test:sub-1'")
        .await;
    assert_eq!(user, vec!["oidc olga@example.org Olga"]);
    let roles = app
        .strings("select role from UserRoles where userName = 'test:sub-1' order by role")
        .await;
    assert_eq!(roles, vec!["bump-to-front", "cancel-build", "restart-jobs"]);
    // The code was traded with the client's credentials and the PKCE
    // verifier of this sign-in's challenge.
    let exchange = idp
        .server
        .requests()
        .into_iter()
        .find(|r| r.path == "/token")
        .unwrap();
    let basic = base64::engine::general_purpose::STANDARD.encode("hydra-client:idp-secret");
    assert_eq!(
        exchange.header("authorization"),
        Some(format!("Basic {basic}").as_str())
    );
    let verifier = param(&format!("?{}", exchange.body), "code_verifier");
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    assert_eq!(challenge, param(&location, "code_challenge"));
    assert_eq!(param(&format!("?{}", exchange.body), "code"), "the-code");

    // Signing out ends the provider's session too.
    let session = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("hydra_session="))
        .unwrap();
    let session = session.split(';').next().unwrap().to_string();
    let out = app
        .raw(
            Request::post("/logout")
                .header("host", common::HOST)
                .header("referer", BASE)
                .header("accept", "text/html")
                .header("cookie", &session)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.text());
    assert_eq!(
        out.header("location").unwrap(),
        format!(
            "{}/logout?post_logout_redirect_uri={}&client_id=hydra-client",
            idp.server.url(),
            percent_encoding::utf8_percent_encode(BASE, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
                .replace("%2D", "-")
                .replace("%2E", ".")
        )
    );
    let me = app
        .raw(
            Request::get("/current-user")
                .header("host", common::HOST)
                .header("accept", "application/json")
                .header("cookie", &session)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(me.status, StatusCode::FORBIDDEN, "signed out here too");

    // The same answer again: refused.
    let r = oidc_callback(&app, &state, Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "a replayed state");

    // Forgeries, each on a fresh sign-in.
    let cases: Vec<(&str, Forgery)> = vec![
        (
            "meant for another client",
            Box::new(|n: &str| {
                let mut c = claims(n);
                c["aud"] = json!("someone-else");
                (c, "idp.pem")
            }),
        ),
        (
            "not by the provider",
            Box::new(|n: &str| (claims(n), "other.pem")),
        ),
        (
            "has expired",
            Box::new(|n: &str| {
                let mut c = claims(n);
                c["exp"] = json!(now - 3600);
                (c, "idp.pem")
            }),
        ),
        (
            "nonce",
            Box::new(|_: &str| (claims("another-sign-in"), "idp.pem")),
        ),
        (
            "another issuer",
            Box::new(|n: &str| {
                let mut c = claims(n);
                c["iss"] = json!("https://evil.example");
                (c, "idp.pem")
            }),
        ),
    ];
    for (why, make) in cases {
        let (location, cookie) = oidc_start(&app, "/").await;
        let (claims, key) = make(&param(&location, "nonce"));
        idp.answer_with(&idp.token(&claims, key));
        let r = oidc_callback(&app, &param(&location, "state"), Some(&cookie)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{why}: {}", r.text());
        assert!(r.text().contains(why), "{why}: {}", r.text());
    }

    // Another browser's state (login CSRF): refused.
    let (location, _) = oidc_start(&app, "/").await;
    let r = oidc_callback(&app, &param(&location, "state"), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // An `after` off the site lands on the front page.
    let (location, cookie) = oidc_start(&app, "%2F%2Fevil.example%2Fx").await;
    idp.answer_with(&idp.token(&claims(&param(&location, "nonce")), "idp.pem"));
    let r = oidc_callback(&app, &param(&location, "state"), Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text());
    assert_eq!(r.header("location").unwrap(), BASE);

    // The sign-in page offers the provider.
    let login = page(&app, "/login").await;
    assert!(
        login.text().contains("Sign in with Test IdP"),
        "{}",
        login.text()
    );
    assert!(
        login.text().contains("/oidc-redirect/test?after="),
        "{}",
        login.text()
    );
}

#[tokio::test]
async fn google_sign_in_takes_a_token_google_vouches_for() {
    use axum::http::Method;
    use common::As;

    let google = Recorder::start();
    let info = |aud: &str, verified: &str, email: &str| {
        Answer::new(200).body(
            &json!({"aud": aud, "email_verified": verified, "email": email, "name": "Gina"})
                .to_string(),
        )
    };
    let app = App::with_config(&format!(
        "private = 1\nenable_google_login = 1\ngoogle_client_id = gid\ngoogle_tokeninfo_url = {}/tokeninfo\n",
        google.url()
    ))
    .await;
    let post = |token: &'static str| {
        let app = &app;
        async move {
            app.send(
                &As::Anonymous,
                Method::POST,
                "/google-login",
                Some(json!({"id_token": token})),
            )
            .await
        }
    };
    google.reply_at("/tokeninfo", info("gid", "true", "gina@example.org"));
    let r = post("good-token").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert!(
        r.header("set-cookie")
            .unwrap()
            .starts_with("hydra_session=")
    );
    let asked = google
        .requests()
        .into_iter()
        .find(|r| r.path == "/tokeninfo")
        .unwrap();
    assert_eq!(asked.body, "id_token=good-token");
    assert_eq!(
        app.strings(
            "select type || ' ' || fullName from Users where userName = 'gina@example.org'"
        )
        .await,
        vec!["google Gina"]
    );
    // A legacy Persona account becomes a Google one.
    app.exec("insert into Users (userName, emailAddress, password, type) values ('per@example.org', 'per@example.org', '!', 'persona')")
        .await;
    google.reply_at("/tokeninfo", info("gid", "true", "per@example.org"));
    assert_eq!(post("t").await.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.strings("select type from Users where userName = 'per@example.org'")
            .await,
        vec!["google"]
    );
    // Another client's token, an unverified address, a token Google
    // rejects: refused.
    google.reply_at("/tokeninfo", info("other", "true", "gina@example.org"));
    assert_eq!(post("t").await.status, StatusCode::FORBIDDEN);
    google.reply_at("/tokeninfo", info("gid", "false", "gina@example.org"));
    assert_eq!(post("t").await.status, StatusCode::FORBIDDEN);
    google.reply_at(
        "/tokeninfo",
        Answer::new(400).body(r#"{"error": "invalid_token"}"#),
    );
    assert_eq!(post("t").await.status, StatusCode::FORBIDDEN);
    assert_eq!(post("").await.status, StatusCode::BAD_REQUEST);
    // The sign-in page shows Google's button, and lets Google's script
    // (and only it, and only there) in.
    let login = page(&app, "/login").await;
    assert!(
        login.text().contains(r#"data-client_id="gid""#),
        "{}",
        login.text()
    );
    assert!(
        login
            .text()
            .contains("https://accounts.google.com/gsi/client")
    );
    let policy = login.header("content-security-policy").unwrap();
    assert!(
        policy.contains("script-src 'self' https://accounts.google.com/gsi/client"),
        "{policy}"
    );
    let elsewhere = page(&app, "/robots.txt").await;
    assert!(
        !elsewhere
            .header("content-security-policy")
            .unwrap_or_default()
            .contains("google"),
        "other pages keep the strict policy"
    );
    let plain_login = page(&App::new().await, "/login").await;
    assert!(!plain_login.text().contains("accounts.google.com"));
    assert!(
        !plain_login
            .header("content-security-policy")
            .unwrap()
            .contains("google")
    );
    // A private server lets the sign-in routes through (GitHub's answers
    // that it is not configured here, rather than asking to sign in).
    assert_eq!(
        app.get("/github-redirect").await.status,
        StatusCode::NOT_FOUND
    );
    let plain = App::new().await;
    assert_eq!(
        plain
            .send(
                &As::Anonymous,
                Method::POST,
                "/google-login",
                Some(json!({"id_token": "t"}))
            )
            .await
            .status,
        StatusCode::NOT_FOUND,
        "not enabled"
    );
}
