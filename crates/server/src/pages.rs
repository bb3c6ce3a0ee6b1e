//! HTML for browsers. Until the page templates exist, every page shows its
//! data as indented, escaped text with links to the API documentation of
//! the same URL; the templates replace this function without touching any
//! handler.

use crate::negotiate::Rendered;

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
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

pub fn render(page: &Rendered) -> String {
    let text = serde_json::to_string_pretty(&page.value()).unwrap_or_default();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Hydra - {title}</title></head><body><h1>{title}</h1><pre>{body}</pre></body></html>\n",
        title = escape(page.template),
        body = escape(&text)
    )
}
