//! EmailNotification (`email_notification = 1`): when a build finishes,
//! mail about it to the addresses of the builds of the event (the head
//! and its dependents): the jobset's `emailoverride`, else the build's
//! maintainers. A build is mailed about when its jobset has `enableemail`,
//! it was not aborted or cancelled, and it ended differently from the
//! build before it (or has none); `HYDRA_FORCE_SEND_MAIL` skips these
//! checks. Each address gets one mail about the head build, listing the
//! other builds it matched. Subject and `X-Hydra-*` headers are Hydra's.
//!
//! Also the evaluation-error mail: when a jobset's evaluation fails with
//! an error other than the one last mailed, its project's owner hears of
//! it (if they set `emailonerror`; `HYDRA_MAIL_TEST` mails every time).
//!
//! How mail is sent: `crate::mail`.

use std::sync::Arc;

use hydra_db::build_reports::{self, BuildReport};
use hydra_db::ids::JobsetId;
use hydra_db::status::BuildStatus;
use lettre::Message;
use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, SinglePart};

use crate::Event;
use crate::mail::{self, Mailer};
use crate::plugin::{Context, Plugin, Work};
use crate::plugins::authors::{self, Blame};
use crate::plugins::show_status;

/// The plugin.
#[derive(Debug)]
pub struct Email {
    mailer: Mailer,
    sender: String,
    force: bool,
    test: bool,
}

impl Email {
    /// On with `email_notification = 1`; the transport from the
    /// environment.
    pub fn from_config(config: &hydra_config::Config) -> Result<Option<Arc<Email>>, String> {
        if !config.notify.email_notification {
            return Ok(None);
        }
        let flag = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty());
        Ok(Some(Arc::new(Email {
            mailer: Mailer::from_env()?,
            sender: mail::sender(config),
            force: flag("HYDRA_FORCE_SEND_MAIL"),
            test: flag("HYDRA_MAIL_TEST"),
        })))
    }
}

/// The addresses a mail about `build` goes to: the jobset's override,
/// else the maintainers (comma-separated, trimmed, empty ones dropped).
pub fn recipients(build: &BuildReport) -> Vec<String> {
    let list = if build.email_override.trim().is_empty() {
        build.maintainers.clone().unwrap_or_default()
    } else {
        build.email_override.clone()
    };
    list.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect()
}

/// The subject of a mail about `build` and `others` more builds.
pub fn subject(build: &BuildReport, others: usize) -> String {
    let mut subject = format!(
        "{}: Hydra job {}",
        show_status(build.status),
        build.full_name()
    );
    if !build.job.contains(&build.system) {
        subject.push_str(&format!(" on {}", build.system));
    }
    if others > 0 {
        subject.push_str(&format!(" (and {others} others)"));
    }
    subject
}

/// The text of a mail about `build`, with `others` (the other builds the
/// address matched, which failed with it).
pub fn body(base: &str, build: &BuildReport, others: &[&BuildReport], blame: &Blame) -> String {
    let system = if build.job.contains(&build.system) {
        String::new()
    } else {
        format!(" on {}", build.system)
    };
    let status = show_status(build.status);
    let news = match (build.has_previous, build.previous_status) {
        (true, previous) if previous != build.status => format!(
            "has changed from \"{}\" to \"{status}\"",
            show_status(previous)
        ),
        _ => format!("is \"{status}\""),
    };
    let mut text = format!(
        "Hello,\n\nThe build of Hydra job {}{system} {news}.\n\nSee the build for details:\n\n  {base}/build/{}\n",
        build.full_name(),
        build.id
    );
    if !others.is_empty() {
        text.push_str("\nThese jobs that depend on it failed as well:\n\n");
        for other in others {
            text.push_str(&format!(
                "* {} ({base}/build/{})\n",
                other.full_name(),
                other.id
            ));
        }
    }
    if blame.commits > 0 {
        let commits = if blame.commits == 1 {
            "a commit".to_string()
        } else {
            format!("{} commits", blame.commits)
        };
        text.push_str(&format!(
            "\nThis may be due to {commits} by {}.\n",
            blame.names()
        ));
    }
    let succeeded = build.status.and_then(BuildStatus::from_code) == Some(BuildStatus::Succeeded);
    text.push('\n');
    text.push_str(if succeeded {
        "Well done!\n"
    } else if others.is_empty() {
        "Please have a look and fix it.\n"
    } else {
        "Please have a look and fix them.\n"
    });
    text.push_str("\nThe Hydra build daemon\n");
    text.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn header(name: &'static str, value: &str) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value.to_string())
}

impl Email {
    /// A message from the daemon to `to`.
    fn message(
        &self,
        to: &str,
        subject: &str,
        headers: Vec<HeaderValue>,
        text: String,
    ) -> Result<Message, String> {
        let from: Mailbox = format!("Hydra Build Daemon <{}>", self.sender)
            .parse()
            .map_err(|e| format!("notification_sender ‘{}’: {e}", self.sender))?;
        let to: Mailbox = to
            .parse()
            .map_err(|e| format!("mail address ‘{to}’: {e}"))?;
        let mut builder = Message::builder().from(from).to(to).subject(subject);
        for h in headers {
            builder = builder.raw_header(h);
        }
        builder
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .header(ContentTransferEncoding::QuotedPrintable)
                    .body(text),
            )
            .map_err(|e| format!("making a mail: {e}"))
    }

    /// Mails about the builds of a `buildFinished`.
    async fn build_finished(&self, cx: &Context, event: &Event) -> Result<(), String> {
        let builds = build_reports::reports(&cx.pool, &event.builds())
            .await
            .map_err(|e| format!("reading the builds: {e}"))?;
        let Some(head) = builds.first() else {
            return Ok(());
        };
        if !head.finished {
            // A restart got there first; the task is tried again.
            return Err(format!("build {} is not finished", head.id));
        }
        // Address → the builds it hears of, in the event's order.
        let mut addresses: Vec<(String, Vec<&BuildReport>)> = Vec::new();
        for build in builds.iter().filter(|b| b.finished) {
            if !self.force
                && (!build.enable_email || build.aborted_or_cancelled() || build.status_unchanged())
            {
                continue;
            }
            for to in recipients(build) {
                match addresses.iter_mut().find(|(a, _)| *a == to) {
                    Some((_, list)) => list.push(build),
                    None => addresses.push((to, vec![build])),
                }
            }
        }
        // Who committed since the previous build, when the news is a
        // change; committers to inputs marked emailresponsible hear of the
        // head build themselves.
        let blame = if head.has_previous && head.previous_status != head.status {
            authors::blame(cx, head).await
        } else {
            Blame::default()
        };
        for to in &blame.emailable {
            match addresses.iter_mut().find(|(a, _)| a == to) {
                Some((_, list)) => *list = vec![head],
                None => addresses.push((to.clone(), vec![head])),
            }
        }
        let base = cx.config.web.base_uri.trim_end_matches('/');
        let mut failures = Vec::new();
        for (to, list) in addresses {
            let others: Vec<&BuildReport> = list.into_iter().filter(|b| b.id != head.id).collect();
            let headers = vec![
                header("X-Hydra-Instance", base),
                header("X-Hydra-Project", &head.project),
                header("X-Hydra-Jobset", &head.jobset),
                header("X-Hydra-Job", &head.job),
                header("X-Hydra-System", &head.system),
            ];
            let sent = match self.message(
                &to,
                &subject(head, others.len()),
                headers,
                body(base, head, &others, &blame),
            ) {
                Ok(message) => self.mailer.send(&message).await,
                Err(e) => {
                    // A bad address is not worth retrying; the others go.
                    tracing::warn!(error = %e, "not mailing");
                    Ok(())
                }
            };
            if let Err(e) = sent {
                failures.push(e);
            }
        }
        crate::plugins::all_done(failures)
    }

    /// Mails a jobset's owner about its new evaluation error.
    async fn eval_failed(&self, cx: &Context, jobset: JobsetId) -> Result<(), String> {
        let Some(error) = build_reports::jobset_error(&cx.pool, jobset)
            .await
            .map_err(|e| format!("reading jobset {jobset}: {e}"))?
        else {
            return Ok(());
        };
        let message = error.message.trim();
        if message.is_empty() || !error.owner_wants_mail || error.owner_email.trim().is_empty() {
            return Ok(());
        }
        // Claimed before sending, so concurrent reports of one error
        // mail it once; `HYDRA_MAIL_TEST` mails every report.
        let claim = build_reports::claim_error_mail(&cx.pool, jobset, message, hydra_db::now())
            .await
            .map_err(|e| format!("recording the mail about jobset {jobset}: {e}"))?;
        if claim.is_none() && !self.test {
            return Ok(());
        }
        let base = cx.config.web.base_uri.trim_end_matches('/');
        let text = format!(
            "Hello,\n\nThe evaluation of jobset {p}:{j} failed:\n\n{message}\n\nSee the jobset for details:\n\n  {base}/jobset/{p}/{j}#tabs-errors\n\nThe Hydra build daemon\n",
            p = error.project,
            j = error.jobset,
        );
        let mail = self.message(
            error.owner_email.trim(),
            &format!("Hydra {}:{} evaluation error", error.project, error.jobset),
            vec![
                header("X-Hydra-Instance", base),
                header("X-Hydra-Project", &error.project),
                header("X-Hydra-Jobset", &error.jobset),
            ],
            text,
        );
        let sent = match mail {
            Ok(mail) => self.mailer.send(&mail).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        // As Hydra: a mail that cannot be sent is a warning, not a retry;
        // the error is mailed again on its next report.
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot mail an evaluation error");
            if let Some(claim) = claim {
                claim
                    .release(&cx.pool)
                    .await
                    .map_err(|e| format!("releasing the mail about jobset {jobset}: {e}"))?;
            }
        }
        Ok(())
    }
}

impl Plugin for Email {
    fn name(&self) -> &'static str {
        "Hydra::Plugin::EmailNotification"
    }

    fn wants(&self, event: &Event) -> bool {
        matches!(
            event,
            Event::BuildFinished { .. } | Event::EvalFailed { .. }
        )
    }

    fn run<'a>(&'a self, cx: &'a Context, event: &'a Event) -> Work<'a> {
        Box::pin(async move {
            match event {
                Event::BuildFinished { .. } => self.build_finished(cx, event).await,
                Event::EvalFailed { jobset, .. } => self.eval_failed(cx, *jobset).await,
                _ => Ok(()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hydra_db::ids::BuildId;

    fn report(job: &str, status: BuildStatus, previous: Option<BuildStatus>) -> BuildReport {
        BuildReport {
            id: BuildId(7),
            project: "p".into(),
            jobset: "j".into(),
            job: job.into(),
            system: "x86_64-linux".into(),
            finished: true,
            status: Some(status.code()),
            timestamp: 1,
            start_time: Some(2),
            stop_time: Some(3),
            cached: false,
            size: None,
            closure_size: None,
            maintainers: Some(" a@x.org ,, b@x.org,".into()),
            enable_email: true,
            email_override: String::new(),
            previous_id: previous.map(|_| BuildId(6)),
            previous_status: previous.map(BuildStatus::code),
            has_previous: previous.is_some(),
        }
    }

    #[test]
    fn subjects_name_the_system_unless_the_job_does_and_count_the_others() {
        let app = report("app", BuildStatus::Failed, None);
        assert_eq!(
            subject(&app, 0),
            "Failed: Hydra job p:j:app on x86_64-linux"
        );
        let tests = report("tests.x86_64-linux", BuildStatus::Succeeded, None);
        assert_eq!(
            subject(&tests, 2),
            "Success: Hydra job p:j:tests.x86_64-linux (and 2 others)"
        );
        let timed_out = report("app", BuildStatus::TimedOut, None);
        assert!(subject(&timed_out, 0).starts_with("Failed: "));
    }

    #[test]
    fn recipients_are_the_override_or_the_maintainers_without_empty_ones() {
        let mut build = report("app", BuildStatus::Failed, None);
        assert_eq!(recipients(&build), ["a@x.org", "b@x.org"]);
        build.email_override = "ops@x.org".into();
        assert_eq!(recipients(&build), ["ops@x.org"]);
    }

    #[test]
    fn the_body_says_what_changed_and_lists_the_others() {
        let app = report("app", BuildStatus::Failed, Some(BuildStatus::Succeeded));
        let mut lib = report("lib", BuildStatus::DependencyFailed, None);
        lib.id = BuildId(8);
        let mut blame = Blame {
            commits: 2,
            ..Blame::default()
        };
        blame.authors.insert("Ann".into(), "ann@x.org".into());
        let text = body("https://h", &app, &[&lib], &blame);
        assert!(
            text.contains("This may be due to 2 commits by Ann <ann@x.org>."),
            "{text}"
        );
        assert!(
            text.contains("has changed from \"Success\" to \"Failed\""),
            "{text}"
        );
        assert!(text.contains("* p:j:lib (https://h/build/8)"), "{text}");
        assert!(text.contains("fix them"), "{text}");
        assert!(
            text.lines().all(|l| l == l.trim_end()),
            "no trailing spaces"
        );
        let same = report("app", BuildStatus::Failed, Some(BuildStatus::Failed));
        let text = body("https://h", &same, &[], &Blame::default());
        assert!(
            text.contains("is \"Failed\"") && !text.contains("due to"),
            "{text}"
        );
    }
}
