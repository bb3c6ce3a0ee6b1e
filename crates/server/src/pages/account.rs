//! Signing in and the first administrator.

use askama::Template;

use super::{Ctx, Frame, Html};

/// Any request that failed: its status and why.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    frame: Frame<'a>,
    status: &'a str,
    message: &'a str,
}

pub(super) fn error(cx: &Ctx) -> Html {
    Some(
        ErrorPage {
            frame: cx.frame(),
            status: cx
                .extra_value("status")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("Error"),
            message: cx.data.str("error"),
        }
        .render(),
    )
}

/// The sign-in form (`GET /login`, and again after a failed attempt).
#[derive(Template)]
#[template(path = "login.html")]
struct Login<'a> {
    frame: Frame<'a>,
    error: Option<&'a str>,
    next: &'a str,
    username: &'a str,
    /// GitHub sign-in is configured (a button is shown).
    github: bool,
    /// OpenID Connect providers: name and what the button says.
    oidc: Vec<(String, String)>,
    /// Google's client id, when its sign-in button is shown.
    google: Option<String>,
}

impl Login<'_> {
    /// The GitHub button's link, returning to `next`.
    fn github_link(&self) -> String {
        format!("/github-redirect?after={}", self.next_encoded())
    }

    /// An OpenID Connect provider's button's link, returning to `next`.
    fn oidc_link(&self, name: &str) -> String {
        format!("/oidc-redirect/{name}?after={}", self.next_encoded())
    }

    fn next_encoded(&self) -> String {
        percent_encoding::utf8_percent_encode(self.next, percent_encoding::NON_ALPHANUMERIC)
            .to_string()
    }
}

pub(super) fn login(cx: &Ctx) -> Html {
    Some(
        Login {
            frame: cx.frame(),
            error: Some(cx.data.str("error")).filter(|e| !e.is_empty()),
            next: cx
                .extra_value("next")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("/"),
            username: cx
                .extra_value("username")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default(),
            github: cx.extra_flag("github"),
            google: Some(cx.extra_text("google_client_id")).filter(|id| !id.is_empty()),
            oidc: cx
                .extra("oidc")
                .iter()
                .filter_map(|p| {
                    Some((
                        p.get(0)?.as_str()?.to_owned(),
                        p.get(1)?.as_str()?.to_owned(),
                    ))
                })
                .collect(),
        }
        .render(),
    )
}

/// The first administrator's form (`/setup`, from the link `hydra up`
/// prints while there is no administrator).
#[derive(Template)]
#[template(path = "setup.html")]
struct Setup<'a> {
    frame: Frame<'a>,
    error: Option<&'a str>,
    token: &'a str,
    username: &'a str,
    fullname: &'a str,
    emailaddress: &'a str,
    min_password: usize,
}

pub(super) fn setup(cx: &Ctx) -> Html {
    let d = cx.data;
    Some(
        Setup {
            frame: cx.frame(),
            error: Some(d.str("error")).filter(|e| !e.is_empty()),
            token: d.str("token"),
            username: d.str("username"),
            fullname: d.str("fullname"),
            emailaddress: d.str("emailaddress"),
            min_password: hydra_db::password::MIN_LENGTH,
        }
        .render(),
    )
}

/// An API token as the preferences list it.
#[derive(Debug)]
struct TokenView {
    id: i64,
    name: String,
    created: Option<super::common::Time>,
    last_used: Option<super::common::When>,
}

/// `/user/U`: the preferences, API tokens and, for administrators, roles.
#[derive(Template)]
#[template(path = "user.html")]
struct UserPage<'a> {
    frame: Frame<'a>,
    username: String,
    fullname: String,
    emailaddress: String,
    email_on_error: bool,
    public_dashboard: bool,
    /// Passwords are kept here (not by LDAP, GitHub, Google).
    local: bool,
    /// Every role, and whether the user has it.
    roles: Vec<(String, bool)>,
    tokens: Vec<TokenView>,
    error: String,
    min_password: usize,
    /// The signed-in user is this one (only they create tokens).
    own: bool,
}

pub(super) fn user(cx: &Ctx) -> Html {
    use super::common::{Fields, Time, When};
    let d = cx.data;
    let settings = Fields(
        cx.extra_value("settings")
            .unwrap_or(&serde_json::Value::Null),
    );
    let has: Vec<&str> = d
        .list("userroles")
        .iter()
        .filter_map(serde_json::Value::as_str)
        .collect();
    let username = d.text("username");
    Some(
        UserPage {
            frame: cx.frame(),
            own: cx.user.name.as_deref() == Some(username.as_str()),
            fullname: d.text("fullname"),
            emailaddress: d.text("emailaddress"),
            email_on_error: settings.flag("emailonerror"),
            public_dashboard: settings.flag("publicdashboard"),
            local: matches!(settings.str("type"), "hydra" | ""),
            roles: cx
                .extra("roles")
                .iter()
                .filter_map(serde_json::Value::as_str)
                .map(|r| (r.to_string(), has.contains(&r)))
                .collect(),
            tokens: cx
                .extra("tokens")
                .iter()
                .map(Fields)
                .map(|t| TokenView {
                    id: t.int("id").unwrap_or(0),
                    name: t.text("name"),
                    created: t.int("created").map(Time::of),
                    last_used: t.int("lastused").map(|u| When::of(u, cx.now)),
                })
                .collect(),
            error: cx.extra_text("error"),
            min_password: hydra_db::password::MIN_LENGTH,
            username,
        }
        .render(),
    )
}

/// A new API token, shown once.
#[derive(Template)]
#[template(path = "user-token.html")]
struct NewTokenPage<'a> {
    frame: Frame<'a>,
    user: &'a str,
    name: &'a str,
    token: &'a str,
}

pub(super) fn new_token(cx: &Ctx) -> Html {
    Some(
        NewTokenPage {
            frame: cx.frame(),
            user: cx
                .extra_value("user")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default(),
            name: cx.data.str("name"),
            token: cx.data.str("token"),
        }
        .render(),
    )
}

/// A starred job with its latest builds.
#[derive(Debug)]
struct StarredView {
    project: String,
    jobset: String,
    job: String,
    /// Build id and status, newest first.
    builds: Vec<(i64, super::common::StatusView)>,
}

/// `/dashboard/U`.
#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage<'a> {
    frame: Frame<'a>,
    user: String,
    email: String,
    starred: Vec<StarredView>,
    my_jobs: Vec<super::build::BuildRowView>,
    /// Project and its jobsets.
    my_jobsets: Vec<(String, Vec<super::project::JobsetRowView>)>,
}

pub(super) fn dashboard(cx: &Ctx) -> Html {
    use super::common::{Fields, StatusView};
    let d = cx.data;
    Some(
        DashboardPage {
            frame: cx.frame(),
            user: d.text("user"),
            email: d.text("emailaddress"),
            starred: d
                .list("starred")
                .iter()
                .map(Fields)
                .map(|s| StarredView {
                    project: s.text("project"),
                    jobset: s.text("jobset"),
                    job: s.text("job"),
                    builds: s
                        .list("builds")
                        .iter()
                        .map(Fields)
                        .map(|b| {
                            let status =
                                StatusView::of(b.int("finished") == Some(1), b.int("buildstatus"));
                            (b.int("id").unwrap_or(0), status)
                        })
                        .collect(),
                })
                .collect(),
            my_jobs: d
                .list("myjobs")
                .iter()
                .map(|b| super::build::BuildRowView::of(Fields(b), false, cx.now))
                .collect(),
            my_jobsets: d
                .list("myjobsets")
                .iter()
                .map(Fields)
                .map(|p| {
                    let rows = p
                        .list("jobsets")
                        .iter()
                        .map(|j| super::project::JobsetRowView::of(Fields(j)))
                        .collect();
                    (p.text("project"), rows)
                })
                .collect(),
        }
        .render(),
    )
}

/// A reset password, shown once to the administrator.
#[derive(Template)]
#[template(path = "user-password.html")]
struct NewPasswordPage<'a> {
    frame: Frame<'a>,
    username: &'a str,
    password: &'a str,
}

pub(super) fn new_password(cx: &Ctx) -> Html {
    Some(
        NewPasswordPage {
            frame: cx.frame(),
            username: cx.data.str("username"),
            password: cx.data.str("password"),
        }
        .render(),
    )
}
