//! Signing in and the first administrator.

use askama::Template;

use super::{Ctx, Frame, Html};

/// The sign-in form (`GET /login`, and again after a failed attempt).
#[derive(Template)]
#[template(path = "login.html")]
struct Login<'a> {
    frame: Frame<'a>,
    error: Option<&'a str>,
}

pub(super) fn login(cx: &Ctx) -> Html {
    Some(
        Login {
            frame: cx.frame(),
            error: Some(cx.data.str("error")).filter(|e| !e.is_empty()),
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
