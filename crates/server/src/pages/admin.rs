//! The administrators' pages: users, a new user, build machines, news.

use askama::Template;

use super::common::{Fields, Time};
use super::{Ctx, Frame, Html};

/// A row of the users' list.
#[derive(Debug)]
struct UserRowView {
    name: String,
    fullname: String,
    email: String,
    roles: String,
    email_on_error: bool,
}

/// `/admin/users`.
#[derive(Template)]
#[template(path = "admin-users.html")]
struct UsersPage<'a> {
    frame: Frame<'a>,
    users: Vec<UserRowView>,
}

pub(super) fn users(cx: &Ctx) -> Html {
    let users = cx
        .data
        .0
        .as_array()?
        .iter()
        .map(Fields)
        .map(|u| UserRowView {
            name: u.text("username"),
            fullname: u.text("fullname"),
            email: u.text("emailaddress"),
            roles: u
                .list("roles")
                .iter()
                .filter_map(serde_json::Value::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            email_on_error: u.flag("emailonerror"),
        })
        .collect();
    Some(
        UsersPage {
            frame: cx.frame(),
            users,
        }
        .render(),
    )
}

/// `/register`: a new user.
#[derive(Template)]
#[template(path = "register.html")]
struct RegisterPage<'a> {
    frame: Frame<'a>,
    username: String,
    fullname: String,
    emailaddress: String,
    /// Every role, and whether it is ticked.
    roles: Vec<(String, bool)>,
    error: String,
    min_password: usize,
}

pub(super) fn register(cx: &Ctx) -> Html {
    let d = cx.data;
    let ticked: Vec<&str> = d
        .list("roles")
        .iter()
        .filter_map(serde_json::Value::as_str)
        .collect();
    Some(
        RegisterPage {
            frame: cx.frame(),
            username: d.text("username"),
            fullname: d.text("fullname"),
            emailaddress: d.text("emailaddress"),
            roles: cx
                .extra("roles")
                .iter()
                .filter_map(serde_json::Value::as_str)
                .map(|r| (r.to_string(), ticked.contains(&r)))
                .collect(),
            error: cx
                .extra_value("error")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_string(),
            min_password: hydra_db::password::MIN_LENGTH,
        }
        .render(),
    )
}

/// A build machine as its administrators' list shows it.
#[derive(Debug)]
struct MachineRowView {
    name: String,
    enabled: bool,
    max_jobs: u32,
    speed_factor: f64,
    systems: String,
    features: String,
}

/// `/admin/machines`.
#[derive(Template)]
#[template(path = "admin-machines.html")]
struct MachinesPage<'a> {
    frame: Frame<'a>,
    known: bool,
    machines: Vec<MachineRowView>,
}

pub(super) fn machines(cx: &Ctx) -> Html {
    use hydra_db::runner_status::MachineStatus;
    let reported: Option<std::collections::BTreeMap<String, MachineStatus>> = cx
        .data
        .0
        .get("machines")
        .and_then(|m| serde_json::from_value(m.clone()).ok());
    Some(
        MachinesPage {
            frame: cx.frame(),
            known: reported.is_some(),
            machines: reported
                .unwrap_or_default()
                .into_iter()
                .map(|(name, m)| MachineRowView {
                    name,
                    enabled: m.enabled && m.max_jobs > 0,
                    max_jobs: m.max_jobs,
                    speed_factor: m.speed_factor,
                    systems: m.system_types.join(", "),
                    features: m.supported_features.join(", "),
                })
                .collect(),
        }
        .render(),
    )
}

/// A news item.
#[derive(Debug)]
pub(super) struct NewsView {
    pub(super) id: i64,
    pub(super) when: Time,
    pub(super) author: String,
    /// HTML, as an administrator wrote it.
    pub(super) contents: String,
}

impl NewsView {
    pub(super) fn of(n: Fields) -> NewsView {
        NewsView {
            id: n.int("id").unwrap_or(0),
            when: Time::of(n.int("createtime").unwrap_or(0)),
            author: n.text("author"),
            contents: n.text("contents"),
        }
    }
}

/// `/admin/news`.
#[derive(Template)]
#[template(path = "admin-news.html")]
struct NewsPage<'a> {
    frame: Frame<'a>,
    news: Vec<NewsView>,
}

pub(super) fn news(cx: &Ctx) -> Html {
    Some(
        NewsPage {
            frame: cx.frame(),
            news: cx
                .data
                .0
                .as_array()?
                .iter()
                .map(|n| NewsView::of(Fields(n)))
                .collect(),
        }
        .render(),
    )
}
