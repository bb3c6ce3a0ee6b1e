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
            error: cx.extra_text("error"),
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
    /// The text as written, in pieces: `(true, url)` for a web address
    /// shown as a link, `(false, text)` for the rest. News is text, not
    /// HTML: what an administrator types is shown, never interpreted.
    pub(super) contents: Vec<(bool, String)>,
}

/// `text` cut into plain pieces and the `http://`/`https://` addresses
/// in it (without a sentence's closing punctuation).
pub(super) fn linkify(text: &str) -> Vec<(bool, String)> {
    let mut parts: Vec<(bool, String)> = Vec::new();
    let mut plain = String::new();
    let mut rest = text;
    while let Some(at) = ["http://", "https://"]
        .iter()
        .filter_map(|scheme| rest.find(scheme))
        .min()
    {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"'))
            .unwrap_or(tail.len());
        let url = tail[..end].trim_end_matches(['.', ',', ';', ':', '!', '?', ')', '\'']);
        plain.push_str(&rest[..at]);
        if url.len() <= "https://".len() {
            plain.push_str(&tail[..url.len().max(1)]);
            rest = &tail[url.len().max(1)..];
            continue;
        }
        if !plain.is_empty() {
            parts.push((false, std::mem::take(&mut plain)));
        }
        parts.push((true, url.to_string()));
        rest = &tail[url.len()..];
    }
    plain.push_str(rest);
    if !plain.is_empty() {
        parts.push((false, plain));
    }
    parts
}

impl NewsView {
    pub(super) fn of(n: Fields) -> NewsView {
        NewsView {
            id: n.int("id").unwrap_or(0),
            when: Time::of(n.int("createtime").unwrap_or(0)),
            author: n.text("author"),
            contents: linkify(&n.text("contents")),
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

#[cfg(test)]
mod tests {
    use super::linkify;

    #[test]
    fn news_text_keeps_its_words_and_links_its_addresses() {
        assert_eq!(
            linkify("See https://example.org/a?b=1. And <b>this</b>, http://x.y/z)"),
            vec![
                (false, "See ".to_string()),
                (true, "https://example.org/a?b=1".to_string()),
                (false, ". And <b>this</b>, ".to_string()),
                (true, "http://x.y/z".to_string()),
                (false, ")".to_string()),
            ]
        );
        assert_eq!(linkify(""), Vec::<(bool, String)>::new());
        assert_eq!(
            linkify("just http:// ünïcode"),
            vec![(false, "just http:// ünïcode".to_string())]
        );
        assert_eq!(
            linkify("<a href=\"https://e.org/\">x</a>"),
            vec![
                (false, "<a href=\"".to_string()),
                (true, "https://e.org/".to_string()),
                (false, "\">x</a>".to_string()),
            ]
        );
    }
}
