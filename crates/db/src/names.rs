//! Hydra's name rules: what a project, jobset, job, user and system may be
//! called, so that each can be a URL segment (the web server checks them
//! in URLs and when things are created; the evaluator refuses job names
//! that break them).

fn valid(name: &str, extra_first: &str, rest: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || extra_first.contains(c))
        && chars.all(|c| c.is_ascii_alphanumeric() || rest.contains(c))
}

pub fn project(name: &str) -> bool {
    valid(name, "_", "-_")
}

pub fn jobset(name: &str) -> bool {
    valid(name, "_", "-_.")
}

/// Attribute names of `[A-Za-z_][A-Za-z0-9_-]*` joined by `.`.
pub fn job(name: &str) -> bool {
    !name.is_empty() && name.split('.').all(|part| valid(part, "_", "-_"))
}

pub fn user(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
}

pub fn system(name: &str) -> bool {
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    name.split_once('-').is_some_and(|(a, b)| ok(a) && ok(b))
}
