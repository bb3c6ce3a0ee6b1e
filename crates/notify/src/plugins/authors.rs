//! Who probably broke (or fixed) a build: the authors of the commits
//! between the previous build's evaluation and this one's, in the `git`
//! and `hg` inputs that changed, read from the evaluator's clones. Mail
//! and Slack name them; committers to inputs marked `emailresponsible`
//! are mailed themselves.

use std::collections::{BTreeMap, BTreeSet};

use hydra_db::build_reports::{self, BuildReport, InputChange};

use crate::plugin::Context;

/// The authors of the commits behind a build's change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blame {
    /// Name → address.
    pub authors: BTreeMap<String, String>,
    pub commits: usize,
    /// Addresses of commits to inputs with `emailresponsible`.
    pub emailable: BTreeSet<String>,
}

impl Blame {
    /// `A <a@x>, B <b@x> or C <c@x>`, by name.
    pub fn names(&self) -> String {
        join(
            self.authors
                .iter()
                .map(|(name, email)| format!("{name} <{email}>"))
                .collect(),
        )
    }

    /// The authors as Slack links, `<mailto:a@x|A>`, joined the same way.
    pub fn slack_links(&self) -> String {
        join(
            self.authors
                .iter()
                .map(|(name, email)| format!("<mailto:{email}|{name}>"))
                .collect(),
        )
    }
}

/// `a`, `a or b`, `a, b or c`.
fn join(mut items: Vec<String>) -> String {
    match items.len() {
        0 => String::new(),
        1 => items.remove(0),
        _ => {
            let last = items.pop().unwrap_or_default();
            format!("{} or {last}", items.join(", "))
        }
    }
}

/// Revision, author and address of each commit after `from` up to `to`
/// in `change`'s repository clone (none when there is no clone).
async fn commits(cx: &Context, change: &InputChange) -> Vec<(String, String, String)> {
    let clone = cx.data_dir.scm_clone(&change.kind, &change.uri);
    if !clone.exists() {
        return Vec::new();
    }
    let range = format!("{}..{}", change.from, change.to);
    let output = match change.kind.as_str() {
        "git" => {
            tokio::process::Command::new("git")
                .arg("-C")
                .arg(&clone)
                .args(["log", "--format=%H%x09%an%x09%ae", &range, "--"])
                .output()
                .await
        }
        "hg" => {
            tokio::process::Command::new("hg")
                .arg("-R")
                .arg(&clone)
                .args([
                    "log",
                    "-r",
                    &format!("{}::{} - {}", change.from, change.to, change.from),
                    "--template",
                    "{node}\\t{author|person}\\t{author|email}\\n",
                ])
                .output()
                .await
        }
        _ => return Vec::new(),
    };
    match output {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(3, '\t');
                Some((
                    f.next()?.to_string(),
                    f.next()?.to_string(),
                    f.next()?.to_string(),
                ))
            })
            .collect(),
        Ok(out) => {
            tracing::debug!(input = %change.name, stderr = %String::from_utf8_lossy(&out.stderr), "cannot list the commits of an input");
            Vec::new()
        }
        Err(e) => {
            tracing::debug!(input = %change.name, error = %e, "cannot list the commits of an input");
            Vec::new()
        }
    }
}

/// Who is behind `build`'s change from its previous build.
pub async fn blame(cx: &Context, build: &BuildReport) -> Blame {
    let Some(previous) = build.previous_id else {
        return Blame::default();
    };
    let changes = match build_reports::input_changes(&cx.pool, previous, build.id).await {
        Ok(changes) => changes,
        Err(e) => {
            tracing::warn!(build = %build.id, error = %e, "cannot read the inputs that changed");
            return Blame::default();
        }
    };
    let mut blame = Blame::default();
    let mut seen = BTreeSet::new();
    for change in &changes {
        for (revision, author, email) in commits(cx, change).await {
            if !seen.insert(revision) {
                continue;
            }
            blame.commits += 1;
            blame.authors.insert(author, email.clone());
            if change.responsible && !email.is_empty() {
                blame.emailable.insert(email);
            }
        }
    }
    blame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authors_are_listed_by_name_with_or_before_the_last() {
        let mut blame = Blame::default();
        assert_eq!(blame.names(), "");
        blame.authors.insert("Bob".into(), "bob@x".into());
        assert_eq!(blame.names(), "Bob <bob@x>");
        blame.authors.insert("Alice".into(), "alice@x".into());
        blame.authors.insert("Carol".into(), "carol@x".into());
        assert_eq!(
            blame.names(),
            "Alice <alice@x>, Bob <bob@x> or Carol <carol@x>"
        );
        assert_eq!(
            blame.slack_links(),
            "<mailto:alice@x|Alice>, <mailto:bob@x|Bob> or <mailto:carol@x|Carol>"
        );
    }
}
