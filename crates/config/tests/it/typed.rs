//! The typed configuration: defaults, conversions, warnings and errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use hydra_config::{Config, LogCompression, OPTIONS, Paths};

fn load(text: &str) -> (Config, Vec<String>) {
    let (config, warnings) = Config::load_str(Path::new("/etc/hydra/hydra.conf"), text).unwrap();
    (config, warnings.iter().map(|w| w.to_string()).collect())
}

fn load_err(text: &str) -> String {
    Config::load_str(Path::new("/etc/hydra/hydra.conf"), text)
        .unwrap_err()
        .to_string()
}

#[test]
fn defaults_match_hydra() {
    let c = Config::default();
    assert_eq!(c.web.base_uri, "http://localhost:3000");
    assert!(!c.web.private);
    assert_eq!(c.evaluator.max_concurrent_evals, 4);
    assert_eq!(c.evaluator.workers, 1);
    assert_eq!(c.evaluator.max_memory_size_mib, 4096);
    assert!(!c.evaluator.allow_import_from_derivation);
    assert_eq!(c.evaluator.path_input_cache_validity_seconds, 30);
    assert_eq!(c.evaluator.git_input.timeout, 600);
    assert_eq!(c.evaluator.github_api_url, "https://api.github.com");
    assert_eq!(c.queue_runner.store_uri, "auto");
    assert!(!c.queue_runner.use_substitutes);
    assert_eq!(c.queue_runner.max_db_connections, 128);
    assert_eq!(c.queue_runner.max_output_size, 2 * 1024 * 1024 * 1024);
    assert_eq!(c.queue_runner.max_log_size, 64 * 1024 * 1024);
    assert_eq!(c.queue_runner.max_unsupported_time, 0);
    assert_eq!(c.queue_runner.metrics_address, "127.0.0.1:9198");
    let cores = std::thread::available_parallelism().unwrap().get() as u32;
    assert_eq!(
        c.queue_runner.max_local_worker_threads,
        cores.clamp(4, 1024) - 2
    );
    assert_eq!(
        (c.notify.statsd_host.as_str(), c.notify.statsd_port),
        ("localhost", 8125)
    );
    assert!(c.notify.prometheus.is_none());
    assert!(c.notify.compress_build_logs);
    assert_eq!(
        c.notify.compress_build_logs_compression,
        LogCompression::Bzip2
    );
    assert!(c.database_url.is_none());
    assert!(c.gc_roots_dir.ends_with("hydra-roots"));
}

#[test]
fn values_are_converted() {
    let (c, warnings) = load(
        r#"
base_uri = https://ci.example.org
private = true
readonly_ips = 10.0.0.1, 10.0.0.2 ,
max_output_size = 4294967296
use-substitutes = 1
store_uri = file:///var/cache?compression=zstd
evaluator_workers = 2
compress_build_logs_compression = zstd
xxx-jobset-repeats = nixpkgs:trunk:2 p:j:1
gc_roots_dir = /var/lib/hydra/roots
database_url = postgres://hydra@db/hydra
<statsd>
  host = stats.example.org
  port = 9125
</statsd>
<hydra_notify>
  <prometheus>
    listen_address = 127.0.0.1
    port = 9199
  </prometheus>
</hydra_notify>
<git-input>
  timeout = 1200
  <p:j:src>
    timeout = 7200
  </p:j:src>
</git-input>
<github_authorization>
  NixOS = token abc
</github_authorization>
<dynamicruncommand>
  enable = 1
</dynamicruncommand>
"#,
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(c.web.base_uri, "https://ci.example.org");
    assert!(c.web.private);
    assert_eq!(c.web.readonly_ips, vec!["10.0.0.1", "10.0.0.2"]);
    assert!(c.web.dynamic_run_command);
    assert_eq!(c.queue_runner.max_output_size, 4294967296);
    assert!(c.queue_runner.use_substitutes);
    assert_eq!(
        c.queue_runner.store_uri,
        "file:///var/cache?compression=zstd"
    );
    assert_eq!(c.evaluator.workers, 2);
    assert_eq!(
        c.notify.compress_build_logs_compression,
        LogCompression::Zstd
    );
    assert_eq!(c.queue_runner.jobset_repeats.len(), 2);
    assert_eq!(c.queue_runner.jobset_repeats[0].project, "nixpkgs");
    assert_eq!(c.queue_runner.jobset_repeats[0].repeats, 2);
    assert_eq!(c.gc_roots_dir, Path::new("/var/lib/hydra/roots"));
    assert_eq!(
        c.database_url.as_ref().unwrap().expose(),
        "postgres://hydra@db/hydra"
    );
    assert_eq!(
        (c.notify.statsd_host.as_str(), c.notify.statsd_port),
        ("stats.example.org", 9125)
    );
    assert_eq!(c.notify.prometheus, Some(("127.0.0.1".to_string(), 9199)));
    assert_eq!(c.evaluator.git_input.timeout, 1200);
    assert_eq!(
        c.evaluator.git_input.overrides["p:j:src"]["timeout"],
        "7200"
    );
    assert_eq!(
        c.evaluator.github_authorization["NixOS"].expose(),
        "token abc"
    );
}

#[test]
fn webhook_secrets_collect_every_occurrence() {
    let (c, _) = load(
        "<webhooks>\n<github>\nsecret = a\nsecret = b\n</github>\n<gitea>\nsecret = c\n</gitea>\n</webhooks>\n",
    );
    let github: Vec<&str> = c
        .web
        .github_webhook_secrets
        .iter()
        .map(|s| s.expose())
        .collect();
    assert_eq!(github, vec!["a", "b"]);
    assert_eq!(c.web.gitea_webhook_secrets.len(), 1);
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let (c, _) = load(
        "github_client_secret = hunter2\ndatabase_url = postgres://u:pw-hunter3@h/db\n<webhooks>\n<github>\nsecret = hunter4\n</github>\n</webhooks>\n<github_authorization>\no = token hunter5\n</github_authorization>\n",
    );
    let printed = format!("{c:?}");
    assert!(printed.contains("github_client_secret"), "{printed}");
    for secret in ["hunter2", "hunter3", "hunter4", "hunter5"] {
        assert!(!printed.contains(secret), "{secret} printed in {printed}");
    }
}

#[test]
fn unknown_keys_are_warned_about_with_their_place() {
    let (_, warnings) = load("base_uri = x\nmax_ouptut_size = 5\n");
    assert_eq!(
        warnings,
        vec!["/etc/hydra/hydra.conf:2: unknown option `max_ouptut_size` is ignored"]
    );
}

#[test]
fn a_repeated_single_value_key_takes_the_last_with_a_warning() {
    let (c, warnings) = load("evaluator_workers = 2\nevaluator_workers = 3\n");
    assert_eq!(c.evaluator.workers, 3);
    assert_eq!(
        warnings,
        vec!["/etc/hydra/hydra.conf:2: `evaluator_workers` is set 2 times; the last one counts"]
    );
}

#[test]
fn bad_values_are_errors_naming_file_and_line() {
    assert_eq!(
        load_err("a = 1\nmax_log_size = lots\n"),
        "/etc/hydra/hydra.conf:2: `max_log_size` must be a non-negative whole number, not `lots`"
    );
    assert_eq!(
        load_err("private = maybe\n"),
        "/etc/hydra/hydra.conf:1: `private` must be 1 or 0 (or true/false, yes/no, on/off), not `maybe`"
    );
    assert_eq!(
        load_err("evaluator_workers = 0\n"),
        "/etc/hydra/hydra.conf:1: `evaluator_workers` must be at least 1"
    );
    assert_eq!(
        load_err("<base_uri>\n</base_uri>\n"),
        "/etc/hydra/hydra.conf:1: `base_uri` must be a value, not a block"
    );
    assert_eq!(
        load_err("compress_build_logs_compression = xz\n"),
        "/etc/hydra/hydra.conf:1: compress_build_logs_compression must be `bzip2` or `zstd`, not `xz`"
    );
    assert_eq!(
        load_err("xxx-jobset-repeats = p:j\n"),
        "/etc/hydra/hydra.conf:1: `xxx-jobset-repeats` entries are `project:jobset:N`, not `p:j`"
    );
    assert_eq!(
        load_err(
            "<ldap>\n<config>\n<store>\nldap_server = x\nuser_basedn = y\n</store>\n</config>\n\
             <role_mapping>\ng = superuser\n</role_mapping>\n</ldap>\n"
        ),
        "/etc/hydra/hydra.conf:1: Failed to normalize LDAP role mappings: g = superuser \
         (roles are admin, create-projects, restart-jobs, bump-to-front, cancel-build, eval-jobset)"
    );
    assert_eq!(
        load_err("statsd = x\n"),
        "/etc/hydra/hydra.conf:1: `statsd` must be a block `<statsd> … </statsd>`"
    );
}

#[test]
fn malformed_notify_prometheus_blocks_are_disabled() {
    for text in [
        "<hydra_notify>\nprometheus = 1\n</hydra_notify>\n",
        "<hydra_notify>\n<prometheus>\nlisten_address = 127.0.0.1\n</prometheus>\n</hydra_notify>\n",
        "<hydra_notify>\n<prometheus>\nport = 9199\n</prometheus>\n</hydra_notify>\n",
        "<hydra_notify>\n<prometheus>\nlisten_address = 127.0.0.1\nport = nine\n</prometheus>\n</hydra_notify>\n",
    ] {
        let (c, warnings) = load(text);
        assert!(c.notify.prometheus.is_none(), "{text}");
        assert_eq!(warnings.len(), 1, "{text}: {warnings:?}");
    }
}

#[test]
fn statsd_defaults_fill_missing_fields() {
    let (c, _) = load("<statsd>\nport = 1234\n</statsd>\n");
    assert_eq!(
        (c.notify.statsd_host.as_str(), c.notify.statsd_port),
        ("localhost", 1234)
    );
    let (c, _) = load("<statsd>\nhost = h\n</statsd>\n");
    assert_eq!(
        (c.notify.statsd_host.as_str(), c.notify.statsd_port),
        ("h", 8125)
    );
}

#[test]
fn persona_allowed_domains_is_the_legacy_spelling() {
    let (c, _) = load("persona_allowed_domains = a.org,b.org\n");
    assert_eq!(c.web.allowed_domains, vec!["a.org", "b.org"]);
}

#[test]
fn every_documented_option_is_accepted_without_warning() {
    let mut text = String::new();
    for option in OPTIONS {
        let value = match option.key {
            "xxx-jobset-repeats" => "p:j:1",
            _ if option.default.is_empty() || option.default.starts_with('/') => "1",
            _ => option.default,
        };
        let block_like = option.description.starts_with("`<");
        if option.key == "ldap" {
            // An LDAP block must say where the directory is.
            text.push_str(
                "<ldap>\n<config>\n<store>\nldap_server = x\nuser_basedn = y\n</store>\n</config>\n</ldap>\n",
            );
        } else if block_like {
            text.push_str(&format!("<{0}>\n</{0}>\n", option.key));
        } else {
            text.push_str(&format!("{} = {}\n", option.key, value));
        }
    }
    let (_, warnings) = Config::load_str(Path::new("/x/hydra.conf"), &text).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn includes_are_recorded_and_relative_to_the_including_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    std::fs::write(dir.path().join("hydra.conf"), "include conf.d/*.conf\n").unwrap();
    std::fs::write(dir.path().join("conf.d/a.conf"), "include ../secret.conf\n").unwrap();
    std::fs::write(dir.path().join("secret.conf"), "github_client_secret = s\n").unwrap();
    let (c, _) = Config::load_file(&dir.path().join("hydra.conf")).unwrap();
    assert_eq!(c.web.github_client_secret.unwrap().expose(), "s");
    assert_eq!(c.files.len(), 3);
}

#[test]
fn paths_follow_hydra_defaults() {
    let p = Paths::new(None, None);
    assert_eq!(p.data_dir.path(), Path::new("/var/lib/hydra"));
    assert_eq!(p.config_file, Path::new("/var/lib/hydra/hydra.conf"));
    let p = Paths::new(Some("/srv/h".into()), None);
    assert_eq!(p.config_file, Path::new("/srv/h/hydra.conf"));
    assert!(!p.config_explicit);
    let p = Paths::new(Some("/srv/h".into()), Some("/etc/hydra.conf".into()));
    assert!(p.config_explicit);
}

#[test]
fn a_missing_default_config_file_means_defaults_but_an_explicit_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = Paths::new(Some(dir.path().to_path_buf()), None);
    assert_eq!(p.load_config().unwrap().0, Config::default());
    let p = Paths::new(
        Some(dir.path().to_path_buf()),
        Some(dir.path().join("nope.conf")),
    );
    let err = p.load_config().unwrap_err().to_string();
    assert!(err.contains("nope.conf"), "{err}");
}

#[test]
fn docs_list_every_option_with_its_default() {
    let docs_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let generated = hydra_config::options_markdown();
    let begin = "<!-- options:begin -->";
    let end = "<!-- options:end -->";
    let docs = std::fs::read_to_string(&docs_path).unwrap();
    let (head, rest) = docs.split_once(begin).expect("begin marker");
    let (_, tail) = rest.split_once(end).expect("end marker");
    let wanted = format!("{head}{begin}\n{generated}{end}{tail}");
    if docs != wanted {
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(&docs_path, wanted).unwrap();
        } else {
            panic!("docs/configuration.md is out of date; rerun this test with UPDATE_DOCS=1");
        }
    }
}
