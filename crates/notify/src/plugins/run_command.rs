//! RunCommand: runs the commands of `<runcommand>` blocks when a build
//! finishes (its head build: dependents run nothing). A block names the
//! jobs it is for (`job = project:jobset:job`, each part `*` or exact,
//! missing parts `*`), the `command`, and the `events` (default
//! `buildFinished`). The command gets `HYDRA_JSON`, the path of a JSON
//! document about the build; each run is a `RunCommandLogs` row and its
//! output a file (`DataDir::run_command_log`), which the web pages show.
//!
//! As Hydra: a command without shell metacharacters is run directly (a
//! missing program is an exec error, not exit code 127); one with them
//! through `/bin/sh -c`. A command that fails is logged, not retried.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use hydra_db::run_commands::{self, Ended};

use crate::Event;
use crate::plugin::{Context, Plugin, Work};
use crate::plugins::{config_blocks, text};

/// Characters that make Perl hand a command to the shell.
const SHELL_METACHARACTERS: &[char] = &[
    '$', '&', '*', '(', ')', '{', '}', '[', ']', '\'', '"', ';', '\\', '|', '?', '<', '>', '~',
    '`', '\n',
];

/// A `<runcommand>` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Project, jobset and job: `None` for `*`.
    matcher: [Option<String>; 3],
    /// As written (`*:*:*` when absent).
    label: String,
    command: String,
    events: Vec<String>,
}

impl Block {
    fn matches(&self, project: &str, jobset: &str, job: &str) -> bool {
        self.events.iter().any(|e| e == "buildFinished")
            && self
                .matcher
                .iter()
                .zip([project, jobset, job])
                .all(|(m, v)| m.as_deref().is_none_or(|m| m == v))
    }
}

/// The plugin, with its blocks.
#[derive(Debug)]
pub struct RunCommand {
    blocks: Vec<Block>,
    /// `<dynamicruncommand> enable = 1`: `runCommandHook.*` jobs run
    /// their own output (when their project and jobset allow it too).
    dynamic: bool,
}

impl RunCommand {
    /// The plugin `config`'s `<runcommand>` blocks and
    /// `<dynamicruncommand>` make (`None`: neither); a block with an
    /// invalid `job` is an error naming it, one without `command` is
    /// skipped with a warning.
    pub fn from_config(config: &hydra_config::Config) -> Result<Option<RunCommand>, String> {
        let dynamic = config.web.dynamic_run_command;
        if config.raw.get("runcommand").is_none() && !dynamic {
            return Ok(None);
        }
        let mut blocks = Vec::new();
        for tree in config_blocks(config, "runcommand") {
            let Some(command) = text(tree, "command") else {
                tracing::warn!("a <runcommand> block has no command; skipped");
                continue;
            };
            let label = text(tree, "job").unwrap_or_else(|| "*:*:*".into());
            let parts: Vec<&str> = label.split(':').collect();
            if parts.len() > 3 {
                return Err(format!(
                    "<runcommand> job ‘{label}’ is an invalid section name: at most project:jobset:job"
                ));
            }
            // A missing or empty part, like `*`, matches anything.
            let part = |i: usize| {
                parts
                    .get(i)
                    .filter(|p| !p.is_empty() && **p != "*")
                    .map(|p| (*p).to_string())
            };
            let events = text(tree, "events")
                .unwrap_or_else(|| "buildFinished".into())
                .split_whitespace()
                .map(String::from)
                .collect();
            blocks.push(Block {
                matcher: [part(0), part(1), part(2)],
                label,
                command,
                events,
            });
        }
        Ok(Some(RunCommand { blocks, dynamic }))
    }
}

impl Plugin for RunCommand {
    fn name(&self) -> &'static str {
        "Hydra::Plugin::RunCommand"
    }

    fn run<'a>(&'a self, cx: &'a Context, event: &'a Event) -> Work<'a> {
        Box::pin(async move {
            let Some(build) = event.finished_build() else {
                return Ok(());
            };
            let Some(document) = run_commands::build_document(&cx.pool, build)
                .await
                .map_err(|e| e.to_string())?
            else {
                return Err(format!("build {build} does not exist"));
            };
            let field = |k: &str| document.get(k).and_then(|v| v.as_str()).unwrap_or_default();
            let (project, jobset, job) = (field("project"), field("jobset"), field("job"));
            let mut chosen: Vec<Block> = self
                .blocks
                .iter()
                .filter(|b| b.matches(project, jobset, job))
                .cloned()
                .collect();
            if self.dynamic
                && let Some(block) = dynamic_command(cx, build, &document).await?
            {
                chosen.push(block);
            }
            if chosen.is_empty() {
                return Ok(());
            }
            let dir = tempfile_dir(cx)?;
            let json = dir.join(format!("build-{build}.json"));
            tokio::fs::write(&json, document.to_string())
                .await
                .map_err(|e| format!("{}: {e}", json.display()))?;
            for block in &chosen {
                run_one(cx, build, block, &json).await?;
            }
            let _ = tokio::fs::remove_file(&json).await;
            Ok(())
        })
    }
}

/// The command a `runCommandHook.*` job's build gives, when everything
/// allows it: the job's name, the build's success, the project's and
/// jobset's flags, and an `out` output that is (or links to) an
/// executable file. Each refusal is a warning naming its reason.
async fn dynamic_command(
    cx: &Context,
    build: hydra_db::ids::BuildId,
    document: &serde_json::Value,
) -> Result<Option<Block>, String> {
    let job = document
        .get("job")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if !run_commands::is_hook(job) {
        return Ok(None);
    }
    let refuse = |why: &str| {
        tracing::warn!(%build, %job, "dynamic RunCommand not run: {why}");
        Ok(None)
    };
    if document.get("buildStatus").and_then(|v| v.as_i64())
        != Some(i64::from(hydra_db::status::BuildStatus::Succeeded.code()))
    {
        return refuse("the build did not succeed");
    }
    let Some(facts) = run_commands::hook_facts(&cx.pool, build)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    if !facts.project_allows {
        return refuse("its project does not enable dynamic RunCommand");
    }
    if !facts.jobset_allows {
        return refuse("its jobset does not enable dynamic RunCommand");
    }
    let out = document
        .get("outputs")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .find(|o| o.get("name").and_then(|n| n.as_str()) == Some("out"))
        .and_then(|o| o.get("path").and_then(|p| p.as_str()));
    let Some(out) = out else {
        return refuse("the build has no output named out");
    };
    let mut path = cx.real_path(out);
    // One level of symbolic link (a store path linking to the script).
    if let Ok(target) = std::fs::read_link(&path) {
        path = if target.is_absolute() {
            cx.real_path(&target.to_string_lossy())
        } else {
            path.parent()
                .unwrap_or(std::path::Path::new("/"))
                .join(target)
        };
    }
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(&path) {
        Err(_) => refuse("its out output does not exist"),
        Ok(meta) if !meta.is_file() => refuse("its out output is not a regular file"),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => {
            refuse("its out output is not executable")
        }
        Ok(_) => Ok(Some(Block {
            matcher: [None, None, None],
            label: format!("DynamicRunCommand({job})"),
            command: path.to_string_lossy().into_owned(),
            events: vec!["buildFinished".into()],
        })),
    }
}

/// Where the JSON documents are written while their commands run.
fn tempfile_dir(cx: &Context) -> Result<std::path::PathBuf, String> {
    let dir = cx.data_dir.path().join("runcommand-json");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// Runs `block`'s command for `build`, its output to its log file.
async fn run_one(
    cx: &Context,
    build: hydra_db::ids::BuildId,
    block: &Block,
    json: &std::path::Path,
) -> Result<(), String> {
    let uuid = run_commands::start(
        &cx.pool,
        &block.label,
        build,
        &block.command,
        hydra_db::now(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let log = cx.data_dir.run_command_log(&uuid);
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    let mut command = if block.command.contains(SHELL_METACHARACTERS) {
        let mut c = tokio::process::Command::new("/bin/sh");
        c.arg("-c").arg(&block.command);
        c
    } else {
        let mut words = block.command.split_whitespace();
        let mut c = tokio::process::Command::new(words.next().unwrap_or_default());
        c.args(words);
        c
    };
    command
        .env("HYDRA_JSON", json)
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err));
    let ended = match command.status().await {
        Ok(status) => Ended {
            exit_code: status.code(),
            signal: status.signal(),
            core_dumped: status.signal().map(|_| status.core_dumped()),
            error_number: None,
        },
        Err(e) => Ended {
            error_number: Some(e.raw_os_error().unwrap_or(-1)),
            ..Ended::default()
        },
    };
    if ended.exit_code != Some(0) {
        tracing::warn!(build = %build, command = %block.command, ?ended, "a RunCommand command did not succeed");
    }
    run_commands::finish(&cx.pool, &uuid, hydra_db::now(), ended)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(conf: &str) -> Result<Option<RunCommand>, String> {
        let (config, _) =
            hydra_config::Config::load_str(std::path::Path::new("hydra.conf"), conf).unwrap();
        RunCommand::from_config(&config)
    }

    #[test]
    fn blocks_match_jobs_part_by_part_and_only_on_build_finished() {
        assert!(blocks("").unwrap().is_none(), "no block: not enabled");
        let rc = blocks(
            "<runcommand>\ncommand = a\n</runcommand>\n\
             <runcommand>\njob = p:j.*\ncommand = b\n</runcommand>\n\
             <runcommand>\njob = p\ncommand = c\n</runcommand>\n\
             <runcommand>\njob = *:*:x\ncommand = d\nevents = buildStarted\n</runcommand>\n\
             <runcommand>\njob = p:*:x\n</runcommand>\n",
        )
        .unwrap()
        .unwrap();
        let for_job = |p: &str, j: &str, job: &str| -> Vec<&str> {
            rc.blocks
                .iter()
                .filter(|b| b.matches(p, j, job))
                .map(|b| b.command.as_str())
                .collect()
        };
        assert_eq!(
            for_job("p", "j.*", "x"),
            ["a", "b", "c"],
            "literal, not a pattern"
        );
        assert_eq!(for_job("p", "jj", "x"), ["a", "c"]);
        assert_eq!(for_job("q", "j", "x"), ["a"]);
        assert_eq!(rc.blocks.len(), 4, "the block without a command is skipped");
        assert_eq!(rc.blocks[0].label, "*:*:*");
        assert!(
            blocks("<runcommand>\njob = a:b:c:d\ncommand = x\n</runcommand>\n")
                .unwrap_err()
                .contains("invalid section name")
        );
        let none = blocks("<runcommand>\ncommand = x\nevents =\n</runcommand>\n")
            .unwrap()
            .unwrap();
        assert!(!none.blocks[0].matches("p", "j", "x"), "no events: nothing");
    }
}
