//! HTML for browsers. Pages with a template (`templates/`, askama, escaped
//! by default) are rendered from their data; until every page has one, the
//! others show their data as indented, escaped text. Templates replace
//! pages here without touching any handler.

/// The data of a page: a value, or JSON text already rendered (by the
/// database, for large lists), parsed only if a page is wanted.
#[derive(Clone, Debug)]
pub(crate) enum Data {
    Value(serde_json::Value),
    Text(std::sync::Arc<str>),
}

/// What a handler produced, kept on the response for the negotiation layer.
#[derive(Clone, Debug)]
pub(crate) struct Rendered {
    pub template: &'static str,
    pub data: Data,
}

impl Rendered {
    pub(crate) fn new(template: &'static str, data: serde_json::Value) -> Rendered {
        Rendered {
            template,
            data: Data::Value(data),
        }
    }

    /// The data as a value.
    pub(crate) fn value(&self) -> serde_json::Value {
        match &self.data {
            Data::Value(v) => v.clone(),
            Data::Text(t) => serde_json::from_str(t).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// Who a page is for, as its frame shows it (the auth layer puts it on
/// every response).
#[derive(Clone, Debug, Default)]
pub(crate) struct PageUser {
    pub(crate) name: Option<String>,
    pub(crate) admin: bool,
}

/// What the frame of every page shows.
#[derive(Debug)]
struct Frame<'a> {
    user: &'a PageUser,
    css: &'static str,
    js: &'static str,
    version: &'static str,
}

impl<'a> Frame<'a> {
    fn new(user: &'a PageUser) -> Frame<'a> {
        Frame {
            user,
            css: crate::assets::css(),
            js: crate::assets::js(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// A project row of the front page.
#[derive(Debug, serde::Deserialize)]
struct OverviewProject {
    name: String,
    displayname: String,
    description: String,
    homepage: String,
    enabled: bool,
    hidden: bool,
    /// The homepage when it is a web address (never `javascript:`).
    #[serde(skip)]
    link: Option<String>,
}

/// `/`: the projects.
#[derive(askama::Template)]
#[template(path = "overview.html")]
struct Overview<'a> {
    frame: Frame<'a>,
    projects: Vec<OverviewProject>,
}

/// `url` if it is an `http` or `https` address.
fn web_link(url: &str) -> Option<String> {
    let lower = url.trim().to_ascii_lowercase();
    (lower.starts_with("http://") || lower.starts_with("https://")).then(|| url.trim().to_string())
}

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The sign-in form (`GET /login`, and again after a failed attempt).
#[derive(askama::Template)]
#[template(path = "login.html")]
struct Login<'a> {
    frame: Frame<'a>,
    error: Option<&'a str>,
}

/// The first administrator's form (`/setup`, from the link `hydra up`
/// prints while there is no administrator).
#[derive(askama::Template)]
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

/// A page without its own template yet: its data, escaped.
#[derive(askama::Template)]
#[template(path = "data.html")]
struct DataPage<'a> {
    frame: Frame<'a>,
    title: &'a str,
    data: &'a str,
}

/// The pages that have templates; `None` for the others.
fn templated(page: &Rendered, user: &PageUser) -> Option<String> {
    use askama::Template;
    let value = page.value();
    let text = |key: &str| value.get(key).and_then(|v| v.as_str());
    let rendered = match page.template {
        "overview" => {
            let mut projects: Vec<OverviewProject> =
                serde_json::from_value(value.clone()).unwrap_or_default();
            for p in &mut projects {
                p.link = web_link(&p.homepage);
            }
            Overview {
                frame: Frame::new(user),
                projects,
            }
            .render()
        }
        "login" => Login {
            frame: Frame::new(user),
            error: text("error"),
        }
        .render(),
        "setup" => Setup {
            frame: Frame::new(user),
            error: text("error"),
            token: text("token").unwrap_or_default(),
            username: text("username").unwrap_or_default(),
            fullname: text("fullname").unwrap_or_default(),
            emailaddress: text("emailaddress").unwrap_or_default(),
            min_password: hydra_db::password::MIN_LENGTH,
        }
        .render(),
        _ => return None,
    };
    match rendered {
        Ok(html) => Some(html),
        Err(e) => {
            tracing::error!(page = page.template, error = %e, "cannot render a page");
            None
        }
    }
}

pub(crate) fn render(page: &Rendered, user: &PageUser) -> String {
    use askama::Template;
    if let Some(html) = templated(page, user) {
        return html;
    }
    let text = serde_json::to_string_pretty(&page.value()).unwrap_or_default();
    // `current-user` → `Current user`: the page's name, for people.
    let mut title = page.template.replace('-', " ");
    if let Some(first) = title.get(..1) {
        title = format!("{}{}", first.to_ascii_uppercase(), &title[1..]);
    }
    DataPage {
        frame: Frame::new(user),
        title: &title,
        data: &text,
    }
    .render()
    .unwrap_or_else(|e| {
        tracing::error!(page = page.template, error = %e, "cannot render a page");
        format!("<!DOCTYPE html>\n<pre>{}</pre>\n", escape(&text))
    })
}
