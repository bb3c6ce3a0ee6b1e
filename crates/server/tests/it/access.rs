//! Accounts and permissions: sign-in with Hydra's password forms, sessions
//! (new id at every sign-in), the CSRF rule, the role table, API tokens,
//! private servers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use axum::http::{Method, StatusCode};
use common::{App, As, BASE, Reply, fixture};
use serde_json::json;

fn cookie_of(reply: &common::Reply) -> String {
    let set = reply.header("set-cookie").expect("a session cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    set.split(';')
        .next()
        .unwrap()
        .trim_start_matches("hydra_session=")
        .to_string()
}

#[tokio::test]
async fn login_starts_a_new_session_and_logout_ends_it() {
    let app = App::new().await;
    fixture(&app).await;
    let hash = hydra_db::password::hash("correct horse").unwrap();
    sqlx::query("update Users set password = $1 where userName = 'owner'")
        .bind(&hash)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let creds = json!({ "username": "owner", "password": "correct horse" });
    let reply = app
        .send(&As::Anonymous, Method::POST, "/login", Some(creds.clone()))
        .await;
    assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.text());
    assert_eq!(
        reply.header("location").unwrap(),
        format!("{BASE}current-user")
    );
    assert_eq!(reply.json()["username"], "owner");
    let first = As::Session(cookie_of(&reply));
    let me = app.send(&first, Method::GET, "/current-user", None).await;
    assert_eq!(me.json()["fullname"], "Olive Owner");

    // Signing in again (fixation: a planted cookie) gives a new id and the
    // old one stops working.
    let again = app.send(&first, Method::POST, "/login", Some(creds)).await;
    let second = As::Session(cookie_of(&again));
    assert_ne!(format!("{first:?}"), format!("{second:?}"));
    assert_eq!(
        app.send(&first, Method::GET, "/current-user", None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.send(&second, Method::GET, "/current-user", None)
            .await
            .status,
        StatusCode::OK
    );

    let bad = app
        .send(
            &As::Anonymous,
            Method::POST,
            "/login",
            Some(json!({ "username": "owner", "password": "wrong" })),
        )
        .await;
    assert_eq!(bad.status, StatusCode::FORBIDDEN);
    assert!(bad.header("set-cookie").is_none());

    let out = app.send(&second, Method::POST, "/logout", None).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.send(&second, Method::GET, "/current-user", None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn a_legacy_sha1_password_signs_in_and_is_upgraded() {
    let app = App::new().await;
    fixture(&app).await;
    app.set_legacy_password("nobody", "old secret").await;
    let reply = app
        .send(
            &As::Anonymous,
            Method::POST,
            "/login",
            Some(json!({ "username": "nobody", "password": "old secret" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FOUND);
    let stored: String = sqlx::query_scalar("select password from Users where userName = 'nobody'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert!(stored.starts_with("$argon2id$"), "{stored}");
}

#[tokio::test]
async fn posts_from_other_sites_are_refused_with_403() {
    let app = App::new().await;
    fixture(&app).await;
    let nobody = app.session("nobody").await;
    let star = json!({ "star": "1" });
    for extra in [
        vec![],
        vec![("referer", "http://evil.test/")],
        vec![("origin", "http://evil.test")],
        vec![("referer", "http://hydra.test.evil.test/")],
        vec![("referer", "http://hydra.testing/")],
    ] {
        let reply = app
            .send_with(
                &nobody,
                Method::POST,
                "/job/demo/trunk/hello/star",
                Some(star.clone()),
                &extra,
            )
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{extra:?}");
        assert_eq!(
            reply.error(),
            "POST requests should come from ‘http://hydra.test/’.",
            "{extra:?}"
        );
    }
    assert_eq!(app.scalar("select count(*) from StarredJobs").await, 0);
    // The GET actions obey the rule too (Hydra leaves them open).
    let admin = app.session("admin").await;
    let reply = app
        .send_with(&admin, Method::GET, "/build/3/cancel", None, &[])
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.scalar("select finished::bigint from Builds where id = 3")
            .await,
        0
    );
    // The base URL and the header are compared ending in a slash: an
    // Origin, or a Referer without a path, is from this server.
    for extra in [
        [("origin", "http://hydra.test")],
        [("referer", "http://hydra.test")],
        [("referer", "http://hydra.test/job/demo/trunk/hello")],
    ] {
        app.exec("delete from StarredJobs").await;
        let reply = app
            .send_with(
                &nobody,
                Method::POST,
                "/job/demo/trunk/hello/star",
                Some(star.clone()),
                &extra,
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{extra:?}: {}", reply.text());
        assert_eq!(
            app.strings(
                "select userName || ':' || project || ':' || jobset || ':' || job from StarredJobs"
            )
            .await,
            ["nobody:demo:trunk:hello"]
        );
    }
}

#[tokio::test]
async fn put_and_delete_need_no_referer_since_browsers_cannot_send_them_cross_site() {
    let app = App::new().await;
    fixture(&app).await;
    let admin = app.session("admin").await;
    let reply = app
        .send_with(
            &admin,
            Method::PUT,
            "/project/x",
            Some(json!({ "displayname": "X" })),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let reply = app
        .send_with(&admin, Method::DELETE, "/project/x", None, &[])
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        app.scalar("select count(*) from Projects where name = 'x'")
            .await,
        0
    );
}

#[tokio::test]
async fn api_clients_sign_in_with_a_referer_that_has_no_slash() {
    let app = App::new().await;
    fixture(&app).await;
    app.set_legacy_password("nobody", "a secret").await;
    let reply = app
        .send_with(
            &As::Anonymous,
            Method::POST,
            "/login",
            Some(json!({ "username": "nobody", "password": "a secret" })),
            &[("referer", "http://hydra.test")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.text());
    assert_eq!(reply.json()["username"], "nobody");
    assert!(
        reply
            .header("set-cookie")
            .is_some_and(|c| c.starts_with("hydra_session="))
    );
}

/// Every action of Hydra's role table, for each kind of user.
#[tokio::test]
async fn the_role_table_is_enforced_on_every_action() {
    let app = App::new().await;
    fixture(&app).await;
    let users = [
        "admin",
        "owner",
        "member",
        "restarter",
        "canceller",
        "bumper",
        "evaluator",
        "creator",
        "nobody",
    ];
    let mut sessions = Vec::new();
    for u in users {
        sessions.push((u, app.session(u).await));
    }
    type Row<'a> = (
        &'a str,
        Method,
        &'a str,
        Option<serde_json::Value>,
        &'a [&'a str],
    );
    let rows: Vec<Row> = vec![
        (
            "restart build",
            Method::GET,
            "/build/2/restart",
            None,
            &["admin", "owner", "member", "restarter"],
        ),
        (
            "cancel build",
            Method::GET,
            "/build/3/cancel",
            None,
            &["admin", "owner", "member", "canceller"],
        ),
        (
            "bump build",
            Method::GET,
            "/build/3/bump",
            None,
            &["admin", "owner", "member", "bumper"],
        ),
        (
            "keep build",
            Method::GET,
            "/build/1/keep/1",
            None,
            &["admin", "owner", "member"],
        ),
        (
            "restart eval",
            Method::GET,
            "/eval/1/restart-failed",
            None,
            &["admin", "owner", "member", "restarter"],
        ),
        (
            "cancel eval",
            Method::GET,
            "/eval/1/cancel",
            None,
            &["admin", "owner", "member", "canceller"],
        ),
        (
            "bump eval",
            Method::GET,
            "/eval/1/bump",
            None,
            &["admin", "owner", "member", "bumper"],
        ),
        (
            "push",
            Method::POST,
            "/api/push?jobsets=demo:trunk",
            None,
            &["admin", "owner", "member", "evaluator"],
        ),
        (
            "edit project",
            Method::PUT,
            "/project/demo",
            Some(json!({"displayname": "Demo"})),
            &["admin", "owner", "member"],
        ),
        (
            "create jobset",
            Method::PUT,
            "/jobset/demo/new",
            Some(json!({"nixexprinput": "src", "nixexprpath": "release.nix"})),
            &["admin", "owner", "member"],
        ),
        (
            "create project",
            Method::PUT,
            "/project/fresh",
            Some(json!({"displayname": "Fresh"})),
            &["admin", "creator"],
        ),
        (
            "register",
            Method::PUT,
            "/register",
            Some(json!({"username": "newbie"})),
            &["admin"],
        ),
        (
            "edit other user",
            Method::PUT,
            "/user/nobody",
            Some(json!({"fullname": "N"})),
            &["admin", "nobody"],
        ),
    ];
    for (what, method, uri, body, allowed) in rows {
        let anonymous = app
            .send(&As::Anonymous, method.clone(), uri, body.clone())
            .await;
        assert_eq!(anonymous.status, StatusCode::FORBIDDEN, "{what} anonymous");
        for (user, session) in &sessions {
            // Undo what the previous user did, so each starts alike.
            app.exec(
                "update Builds set finished = 0, buildStatus = null where id = 3; \
                 update Builds set finished = 1, buildStatus = 1 where id = 2; \
                 delete from Projects where name = 'fresh'; delete from Jobsets where name = 'new'; \
                 delete from Users where userName = 'newbie'",
            )
            .await;
            let reply = app.send(session, method.clone(), uri, body.clone()).await;
            if allowed.contains(user) {
                assert!(
                    reply.status.is_success() || reply.status.is_redirection(),
                    "{what} by {user}: {} {}",
                    reply.status,
                    reply.text()
                );
            } else {
                assert_eq!(
                    reply.status,
                    StatusCode::FORBIDDEN,
                    "{what} by {user}: {}",
                    reply.text()
                );
            }
        }
    }
    // Deleting a jobset is for admins only; the project for its owners.
    let owner = app.session("owner").await;
    let admin = app.session("admin").await;
    let r = app
        .send(&owner, Method::DELETE, "/jobset/demo/trunk", None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .send(&admin, Method::DELETE, "/jobset/demo/trunk", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let nobody = app.session("nobody").await;
    let r = app
        .send(&nobody, Method::DELETE, "/project/demo", None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .send(&owner, Method::DELETE, "/project/demo", None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(app.scalar("select count(*) from Builds").await, 0);
}

#[tokio::test]
async fn api_tokens_authenticate_scripts_until_revoked() {
    let app = App::new().await;
    fixture(&app).await;
    let owner = app.session("owner").await;
    let created = app
        .send(
            &owner,
            Method::POST,
            "/user/owner/tokens",
            Some(json!({ "name": "ci" })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let token = created.json()["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("hydra_"));
    let stored: i64 = app
        .scalar(&format!(
            "select count(*) from ApiTokens where hash = '{token}'"
        ))
        .await;
    assert_eq!(stored, 0, "only a digest is stored");
    let who = As::Token(token.clone());
    // No Referer needed: a token is not an ambient credential.
    let reply = app
        .send_with(&who, Method::GET, "/build/3/cancel", None, &[])
        .await;
    assert_eq!(reply.status, StatusCode::FOUND, "{}", reply.text());
    assert_eq!(
        app.scalar("select buildStatus::bigint from Builds where id = 3")
            .await,
        4
    );
    let list = app
        .send(&owner, Method::GET, "/user/owner/tokens", None)
        .await
        .json();
    assert_eq!(list[0]["name"], "ci");
    assert!(list[0].get("token").is_none());
    assert!(list[0]["lastused"].is_i64());
    // Someone else cannot create tokens for the owner or see them.
    let nobody = app.session("nobody").await;
    assert_eq!(
        app.send(&nobody, Method::GET, "/user/owner/tokens", None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let id = list[0]["id"].as_i64().unwrap();
    let revoked = app
        .send(
            &owner,
            Method::DELETE,
            &format!("/user/owner/tokens/{id}"),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let reply = app.send(&who, Method::GET, "/current-user", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_private_server_needs_a_login_except_from_readonly_ips() {
    let app = App::with_config("private = 1\nreadonly_ips = 10.1.2.3\n").await;
    fixture(&app).await;
    let reply = app.get("/project/demo").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let nobody = app.session("nobody").await;
    assert_eq!(
        app.send(&nobody, Method::GET, "/project/demo", None)
            .await
            .status,
        StatusCode::OK
    );
    let from_ip = app
        .send_with(
            &As::Anonymous,
            Method::GET,
            "/project/demo",
            None,
            &[("x-forwarded-for", "10.1.2.3")],
        )
        .await;
    assert_eq!(from_ip.status, StatusCode::OK);
    // Signing in is possible without being signed in.
    let login = app
        .send(
            &As::Anonymous,
            Method::POST,
            "/login",
            Some(json!({"username": "x", "password": "y"})),
        )
        .await;
    assert_eq!(login.status, StatusCode::FORBIDDEN);
    assert_eq!(login.error(), "Bad username or password.");
}

#[tokio::test]
async fn nul_characters_are_client_errors_not_database_errors() {
    let app = App::new().await;
    fixture(&app).await;
    for uri in [
        "/project/de%00mo",
        "/jobset/demo/%00",
        "/search?query=a%00b",
        "/api/latestbuilds?nr=1&project=%00",
        "/build/1/download/1/a%00b",
    ] {
        let reply = app.get(uri).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(reply.error(), "The URL contains a NUL character.", "{uri}");
    }
    let admin = app.session("admin").await;
    let reply = app
        .send(
            &admin,
            Method::PUT,
            "/project/x",
            Some(json!({ "displayname": "a\u{0}b" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.error(),
        "The parameter ‘displayname’ contains a NUL character."
    );
    let reply = app
        .send(
            &admin,
            Method::PUT,
            "/jobset/demo/x",
            Some(json!({ "inputs": { "src": { "type": "git", "value": "a\u{0}" } } })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.error().contains("‘inputs.src.value’"),
        "{}",
        reply.error()
    );
    // A form.
    let req = axum::http::Request::post("/login")
        .header("host", common::HOST)
        .header("referer", common::BASE)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(axum::body::Body::from("username=no%00body&password=x"))
        .unwrap();
    let reply = app.raw(req).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    assert_eq!(
        app.scalar("select count(*) from Projects where name = 'x'")
            .await,
        0
    );
}

#[tokio::test]
async fn pages_refuse_to_be_framed() {
    let app = App::new().await;
    fixture(&app).await;
    let req = axum::http::Request::get("/project/demo")
        .header("host", common::HOST)
        .header("accept", "text/html")
        .body(axum::body::Body::empty())
        .unwrap();
    let reply = app.raw(req).await;
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(reply.header("x-frame-options").as_deref(), Some("DENY"));
}

#[tokio::test]
async fn a_configured_base_uri_wins_over_the_clients_host() {
    let app = App::with_config("base_uri = https://ci.example.org\n").await;
    fixture(&app).await;
    let nobody = app.session("nobody").await;
    // The client claims to be evil.test and comes from there: refused, and
    // the message names the real base.
    let reply = app
        .send_with(
            &nobody,
            Method::POST,
            "/job/demo/trunk/hello/star",
            Some(json!({ "star": "1" })),
            &[("host", "evil.test"), ("referer", "http://evil.test/")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.error(),
        "POST requests should come from ‘https://ci.example.org/’."
    );
    let reply = app
        .send_with(
            &nobody,
            Method::POST,
            "/job/demo/trunk/hello/star",
            Some(json!({ "star": "1" })),
            &[("referer", "https://ci.example.org/job/demo/trunk/hello")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    // Redirects point at the configured base, whatever the Host says.
    let reply = app
        .send_with(
            &As::Anonymous,
            Method::GET,
            "/job/demo/trunk/hello/latest",
            None,
            &[("host", "evil.test")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert!(
        reply
            .header("location")
            .unwrap()
            .starts_with("https://ci.example.org/build/"),
        "{:?}",
        reply.header("location")
    );
}

/// A sign-in attempt as `user`; the status.
async fn sign_in(app: &App, user: &str, password: &str) -> Reply {
    app.send(
        &As::Anonymous,
        Method::POST,
        "/login",
        Some(json!({ "username": user, "password": password })),
    )
    .await
}

#[tokio::test]
async fn failed_sign_ins_make_the_account_wait_before_any_hashing() {
    let app = App::with_config(
        "login_max_failures = 3\npassword_hash_memory = 8192\npassword_hash_iterations = 1\n",
    )
    .await;
    fixture(&app).await;
    app.set_legacy_password("nobody", "right").await;
    app.set_legacy_password("owner", "also right").await;
    for _ in 0..3 {
        assert_eq!(
            sign_in(&app, "nobody", "wrong").await.status,
            StatusCode::FORBIDDEN
        );
    }
    let checks = app.state.passwords.argon2_checks.get();
    // Now even the right password waits, and no hashing is done for it.
    let reply = sign_in(&app, "nobody", "right").await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        reply
            .error()
            .starts_with("Too many failed sign-in attempts")
    );
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    assert_eq!(app.state.passwords.argon2_checks.get(), checks);
    // Another account from the same address is not affected (the address
    // allows more failures).
    assert_eq!(
        sign_in(&app, "owner", "also right").await.status,
        StatusCode::FOUND
    );
    // Once the wait is over, the right password works and clears it.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        sign_in(&app, "nobody", "right").await.status,
        StatusCode::FOUND
    );
    assert_eq!(
        sign_in(&app, "nobody", "wrong").await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn unknown_accounts_cost_the_same_argon2_work_as_known_ones() {
    let app = App::with_config("password_hash_memory = 8192\npassword_hash_iterations = 1\n").await;
    fixture(&app).await;
    let hash = hydra_db::password::hash_with(
        "right",
        &hydra_db::password::Cost {
            memory_kib: 8192,
            iterations: 1,
            parallelism: 1,
        },
    )
    .unwrap();
    sqlx::query("update Users set password = $1 where userName = 'nobody'")
        .bind(&hash)
        .execute(&app.db.pool)
        .await
        .unwrap();
    app.set_legacy_password("owner", "legacy").await;
    let checks = || app.state.passwords.argon2_checks.get();
    // An existing account with a wrong password, an account that does not
    // exist, one without a password and one with a legacy hash: one
    // Argon2 check each, so timing does not tell them apart.
    for (user, password) in [
        ("nobody", "wrong"),
        ("no-such-user", "whatever"),
        ("member", "whatever"),
        ("owner", "wrong"),
    ] {
        let before = checks();
        let reply = sign_in(&app, user, password).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{user}");
        assert_eq!(reply.error(), "Bad username or password.", "{user}");
        assert_eq!(checks(), before + 1, "{user}");
    }
    assert_eq!(
        sign_in(&app, "nobody", "right").await.status,
        StatusCode::FOUND
    );
}

#[tokio::test]
async fn the_cost_of_new_password_hashes_is_an_option() {
    let app =
        App::with_config("password_hash_memory = 16384\npassword_hash_iterations = 2\n").await;
    fixture(&app).await;
    let admin = app.session("admin").await;
    let reply = app
        .send(
            &admin,
            Method::PUT,
            "/user/nobody",
            Some(json!({ "password": "a new one", "password2": "a new one" })),
        )
        .await;
    assert!(reply.status.is_success(), "{}", reply.text());
    let stored: String = sqlx::query_scalar("select password from Users where userName = 'nobody'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert!(
        stored.starts_with("$argon2id$v=19$m=16384,t=2,p=1$"),
        "{stored}"
    );
    assert_eq!(
        sign_in(&app, "nobody", "a new one").await.status,
        StatusCode::FOUND
    );
}
