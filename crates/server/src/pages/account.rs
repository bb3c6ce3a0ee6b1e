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
