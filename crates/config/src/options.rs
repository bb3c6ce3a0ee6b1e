//! The typed configuration: every `hydra.conf` option the system knows, with
//! its default. [`OPTIONS`] is the single list of known top-level keys; it
//! drives the unknown-key warnings and `docs/configuration.md` is checked
//! against it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::general::{self, ConfigError, Origin, Tree, Value, Warning};

/// A value that must never appear in logs or debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One documented top-level option.
#[derive(Clone, Copy, Debug)]
pub struct OptionDoc {
    pub key: &'static str,
    /// The default as a user would write it; empty when unset by default.
    pub default: &'static str,
    pub section: &'static str,
    pub description: &'static str,
}

macro_rules! options {
    ($( $section:literal { $( $key:literal = $default:literal : $doc:literal ;)* } )*) => {
        /// Every top-level key of `hydra.conf` this system knows.
        pub const OPTIONS: &[OptionDoc] = &[
            $($( OptionDoc { key: $key, default: $default, section: $section, description: $doc }, )*)*
        ];
    };
}

options! {
    "Web server" {
        "base_uri" = "http://localhost:3000" : "Public URL of this instance, used in links, mails and commit statuses.";
        "using_frontend_proxy" = "0" : "Trust `X-Request-Base` and `X-Forwarded-*` headers from a reverse proxy.";
        "private" = "0" : "Require a login for every page.";
        "readonly_ips" = "" : "Comma-separated addresses that may read a `private` instance without logging in.";
        "max_servers" = "25" : "Accepted for compatibility; the server is asynchronous and has no worker count.";
        "connection_idle_timeout" = "30" : "Seconds a connection may take to send a request's headers, or stay idle between requests, before the web server closes it.";
        "max_connections" = "0" : "Open connections the web server accepts at once; more are closed at once with a log line (0: three quarters of the open-file limit, which hydra raises to its hard limit at start).";
        "hydra_logo" = "" : "Image file served at `/logo`.";
        "tracker" = "" : "HTML inserted into the head of every page.";
        "log_prefix" = "" : "Base URL for logs that are not on local disk (`<log_prefix>log/<drv>`).";
        "server_store_uri" = "" : "Store the web server reads outputs from; defaults to `store_uri`.";
        "binary_cache_secret_key_file" = "" : "Key file used to sign narinfos served by the web server; when unset, hydra up and hydra server generate one in $HYDRA_DATA/keys/binary-cache.secret.";
        "binary_cache_public_uri" = "" : "Binary cache URL shown on build pages.";
        "password_hash_memory" = "262144" : "Argon2id memory cost of new password hashes, in KiB (Hydra's: 256 MiB).";
        "password_hash_iterations" = "3" : "Argon2id time cost (passes) of new password hashes.";
        "password_hash_parallelism" = "1" : "Argon2id parallelism of new password hashes.";
        "password_check_memory" = "512" : "MiB the web server may spend at once on checking and hashing passwords; further sign-ins wait (up to 10 s, then 503).";
        "login_max_failures" = "5" : "Failed sign-ins of one account before each further attempt waits (1 s, doubling up to 15 min; answered 429).";
        "login_max_failures_per_address" = "20" : "Failed sign-ins from one client address before its attempts wait the same way.";
        "compress_num_threads" = "0" : "Threads for compressing NAR downloads (0: one per core).";
        "enable_google_login" = "0" : "Allow logging in with Google.";
        "google_client_id" = "" : "OAuth client id for Google logins.";
        "google_tokeninfo_url" = "https://www.googleapis.com/oauth2/v3/tokeninfo" : "Where `POST /google-login` checks the Google ID token it is given.";
        "github_client_id" = "" : "OAuth client id for GitHub logins.";
        "github_client_secret" = "" : "OAuth client secret for GitHub logins.";
        "github_client_secret_file" = "" : "File holding the OAuth client secret for GitHub logins.";
        "github_url" = "https://github.com" : "GitHub's web address, where GitHub sign-in sends people to authorize (for GitHub Enterprise: `https://HOST`); its API is `github_api_url`.";
        "allowed_domains" = "" : "Comma-separated mail domains allowed to log in with Google.";
        "persona_allowed_domains" = "" : "Legacy name of `allowed_domains`.";
        "ldap" = "" : "`<ldap>` block: LDAP login (`<config>` and `<role_mapping>`).";
        "oidc" = "" : "`<oidc>` block with a `<provider NAME>` block per OpenID Connect provider: `client_id`, `client_secret` (or `client_secret_file`), `discovery_url` (or `issuer`, `authorization_endpoint`, `token_endpoint`, `jwks_uri`), optional `display_name`, `extra_scopes`, `end_session_endpoint`.";
        "webhooks" = "" : "`<webhooks>` block with `<github>`, `<gitea>` and `<gitlab>` blocks holding one or more `secret` lines (GitLab sends its secret token as it is, in `X-Gitlab-Token`).";
        "dynamicruncommand" = "" : "`<dynamicruncommand> enable = 1 </dynamicruncommand>` allows `runCommandHook.*` jobs.";
        "queue_runner_endpoint" = "" : "Base URL of the queue runner's status endpoint.";
        "email_notification" = "0" : "Send mail about finished builds.";
        "notification_sender" = "" : "Sender address of notification mails (default: `$USER@<host name>`).";
        "statsd" = "" : "`<statsd>` block with `host` (localhost) and `port` (8125).";
        "hydra_notify" = "" : "`<hydra_notify> <prometheus> listen_address port </prometheus> </hydra_notify>`: metrics of the notify role.";
        "gc_roots_dir" = "/nix/var/nix/gcroots/per-user/$LOGNAME/hydra-roots" : "Directory of the garbage collector roots kept for builds and evaluations.";
        "database_url" = "" : "PostgreSQL URL; when no database is configured anywhere, a private cluster in `$HYDRA_DATA/postgres` is used.";
    }
    "Evaluator" {
        "max_concurrent_evals" = "4" : "Evaluations that may run at the same time.";
        "evaluator_workers" = "1" : "Evaluation worker processes per evaluation.";
        "evaluator_max_memory_size" = "4096" : "Resident memory (MiB) after which a worker is restarted.";
        "allow_import_from_derivation" = "0" : "Allow import-from-derivation during evaluation.";
        "evaluator_pure_eval" = "" : "Evaluate in pure mode (always on for flakes).";
        "eval_substituter" = "" : "Store that `build` inputs are copied from.";
        "path_input_cache_validity_seconds" = "30" : "How long a `path` input's hash is trusted before it is recomputed.";
        "evaluator_time_limit" = "3600" : "Seconds one evaluation may take before it is stopped and recorded as failed.";
        "evaluator_metrics_address" = "127.0.0.1:9199" : "Address of the evaluator's Prometheus metrics endpoint (empty: none). A taken address stops the evaluator.";
        "git-input" = "" : "`<git-input>` block: `timeout` (600), `fallback_branch`, and `<project:jobset:input>` blocks overriding them.";
        "github_authorization" = "" : "`<github_authorization>` block: `owner = token …` lines.";
        "github_api_url" = "https://api.github.com" : "GitHub's API (for GitHub Enterprise: `https://HOST/api/v3`): commit statuses and the `githubpulls` and `github_refs` inputs.";
        "github_endpoint" = "" : "Older name of `github_api_url`.";
        "bitbucket_api_url" = "https://api.bitbucket.org" : "Bitbucket's API, for Bitbucket statuses and `bitbucketpulls` inputs.";
        "gitlab_authorization" = "" : "`<gitlab_authorization>` block: `projectId = token` lines.";
        "bitbucket_authorization" = "" : "`<bitbucket_authorization>` block: `owner = token` lines.";
        "gitea_authorization" = "" : "`<gitea_authorization>` block: `owner = token` lines.";
        "pull_requests_reconcile_interval" = "600" : "Seconds between two readings of the open pull requests of every project that builds pull requests (webhooks bring changes at once; this catches missed deliveries).";
    }
    "Queue runner" {
        "store_uri" = "auto" : "Destination store for build outputs: the machine's Nix store (`auto`), or a binary cache `file://DIR` or `s3://BUCKET` with Nix's parameters (`?secret-key=…&compression=…`; for buckets `region`, `endpoint`, `profile`, `multipart-upload`, …).";
        "use-substitutes" = "0" : "Substitute missing outputs instead of building them.";
        "max_db_connections" = "128" : "Database connections of the queue runner.";
        "max_local_worker_threads" = "" : "Concurrent output downloads (default: cores − 2, at least 2, at most 1022).";
        "max_output_size" = "2147483648" : "Largest output NAR in bytes; larger outputs fail with status 11.";
        "max_log_size" = "67108864" : "Largest build log in bytes; longer logs fail with status 10.";
        "max_unsupported_time" = "0" : "Seconds a step may wait for a machine supporting it before it fails with status 9.";
        "upload_logs_to_binary_cache" = "0" : "Also store build logs in the binary cache.";
        "queue_runner_metrics_address" = "127.0.0.1:9198" : "Address of the queue runner's status and metrics endpoint (empty: none; the web server then shows no queue runner status). A taken address stops the queue runner.";
        "xxx-jobset-repeats" = "" : "`project:jobset:N …`: build steps of these jobsets N extra times to check determinism.";
        "machines_file" = "" : "Machines file(s), colon-separated; default: `NIX_REMOTE_SYSTEMS`, else `/etc/nix/machines`, else the local machine alone.";
        "max_tries" = "5" : "Attempts of a step that fails in a way that may pass another time (aborted, transient).";
        "retry_interval" = "60" : "Seconds before the first retry of a step.";
        "retry_backoff" = "3" : "Factor by which the wait grows with each retry.";
        "default_max_silent_time" = "3600" : "Seconds a build may print nothing when its job sets no `meta.maxSilent`.";
        "default_build_timeout" = "36000" : "Seconds a build may take when its job sets no `meta.timeout`.";
    }
    "Notifications" {
        "compress_build_logs" = "1" : "Compress step logs when steps finish.";
        "compress_build_logs_compression" = "bzip2" : "`bzip2` or `zstd`.";
        "compress_build_logs_silent" = "0" : "Do not log each compressed file.";
        "githubstatus" = "" : "`<githubstatus>` blocks: GitHub commit statuses for builds of `jobs` (`inputs`, `context`, `useShortContext`, `excludeBuildFromContext`, `description`, `authorization`; every matching block is honoured), and one status per evaluation of `jobsets` (`project:jobset` pattern; context `evalContext`, default `ci/hydra:<project>:<jobset>` without `-pr-N`).";
        "github_app" = "" : "`<github_app>` block: GitHub check runs from a GitHub App (`app_id`, `private_key_file`, `jobs`, `inputs`): one per revision and job, updated in place, with the failing log's end and a Re-run button; sent through the same outbox as commit statuses.";
        "gitea_status" = "" : "Reserved; Gitea statuses are enabled by `gitea_authorization`.";
        "enable_bitbucket_status" = "0" : "Report Bitbucket build statuses.";
        "bitbucket" = "" : "`<bitbucket> username password </bitbucket>` for Bitbucket statuses.";
        "slack" = "" : "`<slack>` blocks: Slack notifications.";
        "circleci" = "" : "`<circleci>` blocks: trigger CircleCI builds.";
        "circleci_api_url" = "https://circleci.com" : "CircleCI's address, for `<circleci>` triggers.";
        "influxdb" = "" : "`<influxdb> url db </influxdb>`: write build results to InfluxDB.";
        "runcommand" = "" : "`<runcommand>` blocks: run a command on events.";
        "s3backup" = "" : "`<s3backup>` blocks: upload outputs to S3 (legacy).";
        "coverityscan" = "" : "`<coverityscan>` blocks: upload Coverity builds.";
        "sotest" = "" : "`<sotest>` block: submit builds to SoTest.";
    }
}

/// Which kind of compression step logs get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogCompression {
    Bzip2,
    Zstd,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WebConfig {
    pub base_uri: String,
    /// Whether `base_uri` was set (rather than its default): then it, not
    /// the client's `Host`, is the web server's own URL.
    pub base_uri_configured: bool,
    pub using_frontend_proxy: bool,
    pub private: bool,
    pub readonly_ips: Vec<String>,
    pub hydra_logo: Option<PathBuf>,
    pub tracker: String,
    pub log_prefix: Option<String>,
    pub server_store_uri: Option<String>,
    pub binary_cache_secret_key_file: Option<PathBuf>,
    pub binary_cache_public_uri: Option<String>,
    pub password_hash_memory_kib: u32,
    pub password_hash_iterations: u32,
    pub password_hash_parallelism: u32,
    pub password_check_memory_mib: u32,
    pub login_max_failures: u32,
    pub login_max_failures_per_address: u32,
    pub max_connections: u32,
    pub connection_idle_timeout: u64,
    pub compress_num_threads: u32,
    pub enable_google_login: bool,
    pub google_client_id: Option<String>,
    /// `google_tokeninfo_url`.
    pub google_tokeninfo_url: String,
    pub github_client_id: Option<String>,
    pub github_client_secret: Option<Secret>,
    pub github_client_secret_file: Option<PathBuf>,
    /// `github_url`, without a trailing slash.
    pub github_url: String,
    pub allowed_domains: Vec<String>,
    /// `<ldap>`, read and checked.
    pub ldap: Option<crate::ldap::LdapConfig>,
    /// `<oidc>`'s providers.
    pub oidc: Vec<crate::oidc::OidcProvider>,
    pub github_webhook_secrets: Vec<Secret>,
    pub gitea_webhook_secrets: Vec<Secret>,
    pub gitlab_webhook_secrets: Vec<Secret>,
    pub dynamic_run_command: bool,
    pub queue_runner_endpoint: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GitInputConfig {
    pub timeout: u64,
    pub fallback_branch: Option<String>,
    /// `<project:jobset:input>` blocks: option → value.
    pub overrides: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EvaluatorConfig {
    pub max_concurrent_evals: u32,
    pub workers: u32,
    pub max_memory_size_mib: u64,
    pub allow_import_from_derivation: bool,
    pub pure_eval: Option<bool>,
    pub eval_substituter: Option<String>,
    pub path_input_cache_validity_seconds: u64,
    pub time_limit: u64,
    /// `None` when the metrics endpoint is turned off.
    pub metrics_address: Option<String>,
    pub git_input: GitInputConfig,
    pub github_authorization: BTreeMap<String, Secret>,
    /// `github_api_url` (or its older name `github_endpoint`), without a
    /// trailing slash.
    pub github_api_url: String,
    /// `bitbucket_api_url`, without a trailing slash.
    pub bitbucket_api_url: String,
    pub gitlab_authorization: BTreeMap<String, Secret>,
    pub bitbucket_authorization: BTreeMap<String, Secret>,
    pub gitea_authorization: BTreeMap<String, Secret>,
    /// `pull_requests_reconcile_interval`, seconds (at least 10).
    pub pull_requests_reconcile_interval: u64,
}

/// `xxx-jobset-repeats`: extra determinism runs for one jobset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobsetRepeats {
    pub project: String,
    pub jobset: String,
    pub repeats: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct QueueRunnerConfig {
    pub store_uri: String,
    pub use_substitutes: bool,
    pub max_db_connections: u32,
    pub max_local_worker_threads: u32,
    pub max_output_size: u64,
    pub max_log_size: u64,
    pub max_unsupported_time: u64,
    pub upload_logs_to_binary_cache: bool,
    pub metrics_address: String,
    pub jobset_repeats: Vec<JobsetRepeats>,
    /// Colon-separated machines files, when configured.
    pub machines_file: Option<String>,
    pub max_tries: u32,
    pub retry_interval: u64,
    pub retry_backoff: f64,
    pub default_max_silent_time: u64,
    pub default_build_timeout: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NotifyConfig {
    pub email_notification: bool,
    pub notification_sender: Option<String>,
    pub statsd_host: String,
    pub statsd_port: u16,
    /// `<hydra_notify><prometheus>`: address and port, when both are valid.
    pub prometheus: Option<(String, u16)>,
    pub compress_build_logs: bool,
    pub compress_build_logs_compression: LogCompression,
    pub compress_build_logs_silent: bool,
}

/// The whole configuration. Its `Debug` output shows only the keys of the
/// raw tree, whose values may hold secrets.
#[derive(Clone, PartialEq)]
pub struct Config {
    /// The files that were read, main file first; empty when there was none.
    pub files: Vec<PathBuf>,
    /// The tree as read, for plugin blocks interpreted by their plugins.
    pub raw: Tree,
    pub database_url: Option<Secret>,
    pub gc_roots_dir: PathBuf,
    pub web: WebConfig,
    pub evaluator: EvaluatorConfig,
    pub queue_runner: QueueRunnerConfig,
    pub notify: NotifyConfig,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let raw_keys: Vec<&String> = self.raw.iter().map(|(k, _)| k).collect();
        f.debug_struct("Config")
            .field("files", &self.files)
            .field("raw_keys", &raw_keys)
            .field("database_url", &self.database_url)
            .field("gc_roots_dir", &self.gc_roots_dir)
            .field("web", &self.web)
            .field("evaluator", &self.evaluator)
            .field("queue_runner", &self.queue_runner)
            .field("notify", &self.notify)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        let mut warnings = Vec::new();
        match Config::from_tree(Tree::default(), &mut warnings) {
            Ok(config) => config,
            Err(_) => unreachable!("the empty configuration is valid"),
        }
    }
}

impl Config {
    /// Reads `path` and everything it includes.
    pub fn load_file(path: &Path) -> Result<(Config, Vec<Warning>), ConfigError> {
        let parsed = general::parse_file(path)?;
        let mut warnings = parsed.warnings;
        let mut config = Config::from_tree(parsed.tree, &mut warnings)?;
        config.files = parsed.files;
        Ok((config, warnings))
    }

    /// Reads configuration text as if it were the file `path`.
    pub fn load_str(path: &Path, text: &str) -> Result<(Config, Vec<Warning>), ConfigError> {
        let parsed = general::parse_str(path, text)?;
        let mut warnings = parsed.warnings;
        let mut config = Config::from_tree(parsed.tree, &mut warnings)?;
        config.files = parsed.files;
        Ok((config, warnings))
    }

    /// Interprets a tree; problems that do not stop the system are added to
    /// `warnings`.
    pub fn from_tree(tree: Tree, warnings: &mut Vec<Warning>) -> Result<Config, ConfigError> {
        for (key, value) in tree.iter() {
            if !OPTIONS.iter().any(|o| o.key == key) {
                warnings.push(warning(value, format!("unknown option `{key}` is ignored")));
            }
        }
        let t = &tree;
        let w = warnings;

        let webhooks = block(t, "webhooks", w)?;
        let secrets = |name: &str, w: &mut Vec<Warning>| -> Result<Vec<Secret>, ConfigError> {
            let mut out = Vec::new();
            for hook in blocks(webhooks.as_ref(), name, w)? {
                for value in strings(Some(&hook), "secret")? {
                    out.push(Secret(value));
                }
            }
            Ok(out)
        };
        let github_webhook_secrets = secrets("github", w)?;
        let gitea_webhook_secrets = secrets("gitea", w)?;
        let gitlab_webhook_secrets = secrets("gitlab", w)?;

        let dynamic = block(t, "dynamicruncommand", w)?;
        let mut allowed_domains = comma_list(string(t, "allowed_domains", w)?);
        if allowed_domains.is_empty() {
            allowed_domains = comma_list(string(t, "persona_allowed_domains", w)?);
        }

        let base_uri = string(t, "base_uri", w)?;
        let web = WebConfig {
            base_uri_configured: base_uri.as_deref().is_some_and(|b| !b.is_empty()),
            base_uri: base_uri.unwrap_or_else(|| "http://localhost:3000".into()),
            using_frontend_proxy: boolean(t, "using_frontend_proxy", w)?.unwrap_or(false),
            private: boolean(t, "private", w)?.unwrap_or(false),
            readonly_ips: comma_list(string(t, "readonly_ips", w)?),
            hydra_logo: string(t, "hydra_logo", w)?.map(PathBuf::from),
            tracker: string(t, "tracker", w)?.unwrap_or_default(),
            log_prefix: string(t, "log_prefix", w)?,
            server_store_uri: string(t, "server_store_uri", w)?,
            binary_cache_secret_key_file: string(t, "binary_cache_secret_key_file", w)?
                .map(PathBuf::from),
            binary_cache_public_uri: string(t, "binary_cache_public_uri", w)?,
            password_hash_memory_kib: number(t, "password_hash_memory", w)?.unwrap_or(262_144),
            password_hash_iterations: number(t, "password_hash_iterations", w)?.unwrap_or(3),
            password_hash_parallelism: number(t, "password_hash_parallelism", w)?.unwrap_or(1),
            password_check_memory_mib: number(t, "password_check_memory", w)?.unwrap_or(512),
            login_max_failures: number(t, "login_max_failures", w)?.unwrap_or(5),
            login_max_failures_per_address: number(t, "login_max_failures_per_address", w)?
                .unwrap_or(20),
            max_connections: number(t, "max_connections", w)?.unwrap_or(0),
            connection_idle_timeout: number(t, "connection_idle_timeout", w)?
                .unwrap_or(30)
                .max(1),
            compress_num_threads: number(t, "compress_num_threads", w)?.unwrap_or(0),
            enable_google_login: boolean(t, "enable_google_login", w)?.unwrap_or(false),
            google_client_id: string(t, "google_client_id", w)?,
            google_tokeninfo_url: string(t, "google_tokeninfo_url", w)?
                .filter(|u| !u.trim().is_empty())
                .unwrap_or_else(|| "https://www.googleapis.com/oauth2/v3/tokeninfo".into()),
            github_client_id: string(t, "github_client_id", w)?,
            github_client_secret: string(t, "github_client_secret", w)?.map(Secret),
            github_url: string(t, "github_url", w)?
                .filter(|u| !u.trim().is_empty())
                .map_or_else(
                    || "https://github.com".into(),
                    |u| u.trim().trim_end_matches('/').to_owned(),
                ),
            github_client_secret_file: string(t, "github_client_secret_file", w)?
                .map(PathBuf::from),
            allowed_domains,
            ldap: match block(t, "ldap", w)? {
                Some(tree) => Some(
                    crate::ldap::parse(&tree)
                        .map_err(|message| value_error(t.get("ldap"), message))?,
                ),
                None => None,
            },
            oidc: match block(t, "oidc", w)? {
                Some(tree) => crate::oidc::parse(&tree)
                    .map_err(|message| value_error(t.get("oidc"), message))?,
                None => Vec::new(),
            },
            github_webhook_secrets,
            gitea_webhook_secrets,
            gitlab_webhook_secrets,
            dynamic_run_command: match &dynamic {
                Some(d) => boolean(d, "enable", w)?.unwrap_or(false),
                None => false,
            },
            queue_runner_endpoint: string(t, "queue_runner_endpoint", w)?,
        };

        let git = block(t, "git-input", w)?;
        let mut overrides = BTreeMap::new();
        if let Some(git) = &git {
            for (name, value) in git.iter() {
                if let Value::Block { tree: inner, .. } = value {
                    let mut map = BTreeMap::new();
                    for (k, _) in inner.iter() {
                        if let Some(v) = string(inner, k, w)? {
                            map.insert(k.clone(), v);
                        }
                    }
                    overrides.insert(name.clone(), map);
                }
            }
        }
        let git_input = GitInputConfig {
            timeout: match &git {
                Some(g) => number(g, "timeout", w)?.unwrap_or(600),
                None => 600,
            },
            fallback_branch: match &git {
                Some(g) => string(g, "fallback_branch", w)?,
                None => None,
            },
            overrides,
        };

        let evaluator = EvaluatorConfig {
            max_concurrent_evals: positive(t, "max_concurrent_evals", w)?.unwrap_or(4),
            workers: positive(t, "evaluator_workers", w)?.unwrap_or(1),
            max_memory_size_mib: positive(t, "evaluator_max_memory_size", w)?.unwrap_or(4096),
            allow_import_from_derivation: boolean(t, "allow_import_from_derivation", w)?
                .unwrap_or(false),
            pure_eval: boolean(t, "evaluator_pure_eval", w)?,
            eval_substituter: string(t, "eval_substituter", w)?,
            path_input_cache_validity_seconds: number(t, "path_input_cache_validity_seconds", w)?
                .unwrap_or(30),
            time_limit: positive(t, "evaluator_time_limit", w)?.unwrap_or(3600),
            metrics_address: match t.get("evaluator_metrics_address") {
                None => Some("127.0.0.1:9199".into()),
                Some(_) => string(t, "evaluator_metrics_address", w)?.filter(|a| !a.is_empty()),
            },
            git_input,
            github_authorization: token_map(t, "github_authorization", w)?,
            github_api_url: match string(t, "github_api_url", w)? {
                Some(url) => Some(url),
                None => string(t, "github_endpoint", w)?,
            }
            .filter(|url| !url.is_empty())
            .map_or_else(
                || "https://api.github.com".into(),
                |url| url.trim_end_matches('/').to_string(),
            ),
            bitbucket_api_url: string(t, "bitbucket_api_url", w)?
                .filter(|url| !url.is_empty())
                .map_or_else(
                    || "https://api.bitbucket.org".into(),
                    |url| url.trim_end_matches('/').to_string(),
                ),
            gitlab_authorization: token_map(t, "gitlab_authorization", w)?,
            bitbucket_authorization: token_map(t, "bitbucket_authorization", w)?,
            gitea_authorization: token_map(t, "gitea_authorization", w)?,
            pull_requests_reconcile_interval: positive(t, "pull_requests_reconcile_interval", w)?
                .unwrap_or(600)
                .max(10),
        };

        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as u32;
        let queue_runner = QueueRunnerConfig {
            store_uri: string(t, "store_uri", w)?.unwrap_or_else(|| "auto".into()),
            use_substitutes: boolean(t, "use-substitutes", w)?.unwrap_or(false),
            max_db_connections: positive(t, "max_db_connections", w)?.unwrap_or(128),
            max_local_worker_threads: positive(t, "max_local_worker_threads", w)?
                .unwrap_or_else(|| cores.clamp(4, 1024) - 2),
            max_output_size: number(t, "max_output_size", w)?.unwrap_or(2 << 30),
            max_log_size: number(t, "max_log_size", w)?.unwrap_or(64 << 20),
            max_unsupported_time: number(t, "max_unsupported_time", w)?.unwrap_or(0),
            upload_logs_to_binary_cache: boolean(t, "upload_logs_to_binary_cache", w)?
                .unwrap_or(false),
            metrics_address: string(t, "queue_runner_metrics_address", w)?
                .unwrap_or_else(|| "127.0.0.1:9198".into()),
            jobset_repeats: jobset_repeats(t, w)?,
            machines_file: string(t, "machines_file", w)?.filter(|f| !f.is_empty()),
            max_tries: positive(t, "max_tries", w)?.unwrap_or(5),
            retry_interval: number(t, "retry_interval", w)?.unwrap_or(60),
            retry_backoff: number(t, "retry_backoff", w)?.unwrap_or(3.0),
            default_max_silent_time: number(t, "default_max_silent_time", w)?.unwrap_or(3600),
            default_build_timeout: number(t, "default_build_timeout", w)?.unwrap_or(36000),
        };

        let statsd = block(t, "statsd", w)?;
        let compression = match string(t, "compress_build_logs_compression", w)?.as_deref() {
            None | Some("bzip2") => LogCompression::Bzip2,
            Some("zstd") => LogCompression::Zstd,
            Some(other) => {
                return Err(value_error(
                    t.get("compress_build_logs_compression"),
                    format!(
                        "compress_build_logs_compression must be `bzip2` or `zstd`, not `{other}`"
                    ),
                ));
            }
        };
        let notify = NotifyConfig {
            email_notification: boolean(t, "email_notification", w)?.unwrap_or(false),
            notification_sender: string(t, "notification_sender", w)?,
            statsd_host: match &statsd {
                Some(s) => string(s, "host", w)?.unwrap_or_else(|| "localhost".into()),
                None => "localhost".into(),
            },
            statsd_port: match &statsd {
                Some(s) => port(s, "port", w)?.unwrap_or(8125),
                None => 8125,
            },
            prometheus: notify_prometheus(t, w)?,
            compress_build_logs: boolean(t, "compress_build_logs", w)?.unwrap_or(true),
            compress_build_logs_compression: compression,
            compress_build_logs_silent: boolean(t, "compress_build_logs_silent", w)?
                .unwrap_or(false),
        };

        Ok(Config {
            files: Vec::new(),
            database_url: string(t, "database_url", w)?.map(Secret),
            gc_roots_dir: match string(t, "gc_roots_dir", w)? {
                Some(dir) => PathBuf::from(dir),
                None => default_gc_roots_dir(),
            },
            raw: tree,
            web,
            evaluator,
            queue_runner,
            notify,
        })
    }
}

/// `/nix/var/nix/gcroots/per-user/$LOGNAME/hydra-roots`.
pub fn default_gc_roots_dir() -> PathBuf {
    let user = std::env::var("LOGNAME")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "hydra".into());
    PathBuf::from(format!("/nix/var/nix/gcroots/per-user/{user}/hydra-roots"))
}

// ---------------------------------------------------------------------------
// Reading typed values out of a tree.

fn warning(value: &Value, message: String) -> Warning {
    Warning {
        origin: value.origin().cloned().unwrap_or_else(|| Origin {
            file: std::sync::Arc::from(Path::new("hydra.conf")),
            line: 0,
        }),
        message,
    }
}

fn value_error(value: Option<&Value>, message: String) -> ConfigError {
    match value.and_then(Value::origin) {
        Some(origin) => ConfigError::Value {
            origin: origin.clone(),
            message,
        },
        None => ConfigError::Value {
            origin: Origin {
                file: std::sync::Arc::from(Path::new("hydra.conf")),
                line: 0,
            },
            message,
        },
    }
}

/// A single string. A key given several times takes its last value, with a
/// warning; a key given as a block is an error.
fn string(
    tree: &Tree,
    key: &str,
    warnings: &mut Vec<Warning>,
) -> Result<Option<String>, ConfigError> {
    let Some(value) = tree.get(key) else {
        return Ok(None);
    };
    let occurrences = value.occurrences();
    let Some(last) = occurrences.last() else {
        return Ok(None);
    };
    if occurrences.len() > 1 {
        warnings.push(warning(
            last,
            format!(
                "`{key}` is set {} times; the last one counts",
                occurrences.len()
            ),
        ));
    }
    match last {
        Value::Scalar { value, .. } => Ok(Some(value.clone().unwrap_or_default())),
        other => Err(value_error(
            Some(other),
            format!("`{key}` must be a value, not a block"),
        )),
    }
}

/// Every value of a key that may repeat.
fn strings(tree: Option<&Tree>, key: &str) -> Result<Vec<String>, ConfigError> {
    let Some(value) = tree.and_then(|t| t.get(key)) else {
        return Ok(Vec::new());
    };
    value
        .occurrences()
        .into_iter()
        .map(|v| match v {
            Value::Scalar { value, .. } => Ok(value.clone().unwrap_or_default()),
            other => Err(value_error(
                Some(other),
                format!("`{key}` must be a value, not a block"),
            )),
        })
        .collect()
}

/// `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`; empty is false.
fn boolean(
    tree: &Tree,
    key: &str,
    warnings: &mut Vec<Warning>,
) -> Result<Option<bool>, ConfigError> {
    let Some(text) = string(tree, key, warnings)? else {
        return Ok(None);
    };
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(Some(true)),
        "0" | "false" | "no" | "off" | "" => Ok(Some(false)),
        _ => Err(value_error(
            tree.get(key),
            format!("`{key}` must be 1 or 0 (or true/false, yes/no, on/off), not `{text}`"),
        )),
    }
}

fn number<T: std::str::FromStr>(
    tree: &Tree,
    key: &str,
    warnings: &mut Vec<Warning>,
) -> Result<Option<T>, ConfigError> {
    let Some(text) = string(tree, key, warnings)? else {
        return Ok(None);
    };
    text.trim().parse::<T>().map(Some).map_err(|_| {
        value_error(
            tree.get(key),
            format!("`{key}` must be a non-negative whole number, not `{text}`"),
        )
    })
}

fn positive<T: std::str::FromStr + PartialEq + Default>(
    tree: &Tree,
    key: &str,
    warnings: &mut Vec<Warning>,
) -> Result<Option<T>, ConfigError> {
    let value = number::<T>(tree, key, warnings)?;
    if value.as_ref() == Some(&T::default()) {
        return Err(value_error(
            tree.get(key),
            format!("`{key}` must be at least 1"),
        ));
    }
    Ok(value)
}

fn port(tree: &Tree, key: &str, warnings: &mut Vec<Warning>) -> Result<Option<u16>, ConfigError> {
    number::<u16>(tree, key, warnings)
}

/// A block; a block given several times is merged, later keys winning, with a
/// warning.
fn block(tree: &Tree, key: &str, warnings: &mut Vec<Warning>) -> Result<Option<Tree>, ConfigError> {
    let found = blocks(Some(tree), key, warnings)?;
    if found.len() > 1 {
        warnings.push(warning(
            tree.get(key).unwrap_or(&Value::List(Vec::new())),
            format!(
                "block `<{key}>` occurs {} times; later ones override earlier ones",
                found.len()
            ),
        ));
    }
    let mut merged: Option<Tree> = None;
    for b in found {
        match merged.as_mut() {
            None => merged = Some(b),
            Some(m) => m.merge(b),
        }
    }
    Ok(merged)
}

/// Every occurrence of a block that may repeat.
fn blocks(
    tree: Option<&Tree>,
    key: &str,
    _warnings: &mut Vec<Warning>,
) -> Result<Vec<Tree>, ConfigError> {
    let Some(value) = tree.and_then(|t| t.get(key)) else {
        return Ok(Vec::new());
    };
    value
        .occurrences()
        .into_iter()
        .map(|v| match v {
            Value::Block { tree, .. } => Ok(tree.clone()),
            other => Err(value_error(
                Some(other),
                format!("`{key}` must be a block `<{key}> … </{key}>`"),
            )),
        })
        .collect()
}

fn comma_list(text: Option<String>) -> Vec<String> {
    text.map(|t| {
        t.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    })
    .unwrap_or_default()
}

/// `<name> key = token … </name>`.
fn token_map(
    tree: &Tree,
    key: &str,
    warnings: &mut Vec<Warning>,
) -> Result<BTreeMap<String, Secret>, ConfigError> {
    let mut out = BTreeMap::new();
    if let Some(b) = block(tree, key, warnings)? {
        for (name, _) in b.iter() {
            if let Some(token) = string(&b, name, warnings)? {
                out.insert(name.clone(), Secret(token));
            }
        }
    }
    Ok(out)
}

fn jobset_repeats(
    tree: &Tree,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<JobsetRepeats>, ConfigError> {
    let Some(text) = string(tree, "xxx-jobset-repeats", warnings)? else {
        return Ok(Vec::new());
    };
    text.split_whitespace()
        .map(|entry| {
            let parts: Vec<&str> = entry.split(':').collect();
            match parts.as_slice() {
                [project, jobset, n] if !project.is_empty() && !jobset.is_empty() => n
                    .parse()
                    .map(|repeats| JobsetRepeats {
                        project: project.to_string(),
                        jobset: jobset.to_string(),
                        repeats,
                    })
                    .ok(),
                _ => None,
            }
            .ok_or_else(|| {
                value_error(
                    tree.get("xxx-jobset-repeats"),
                    format!("`xxx-jobset-repeats` entries are `project:jobset:N`, not `{entry}`"),
                )
            })
        })
        .collect()
}

/// `<hydra_notify><prometheus> listen_address = … port = … </prometheus>`:
/// enabled only when both are present and valid; otherwise disabled with a
/// warning, as Hydra does.
fn notify_prometheus(
    tree: &Tree,
    warnings: &mut Vec<Warning>,
) -> Result<Option<(String, u16)>, ConfigError> {
    let Some(notify) = block(tree, "hydra_notify", warnings)? else {
        return Ok(None);
    };
    let Some(value) = notify.get("prometheus") else {
        return Ok(None);
    };
    let Value::Block { tree: prom, .. } = value else {
        warnings.push(warning(
            value,
            "`<hydra_notify>` has a malformed `prometheus` setting; its metrics are disabled"
                .into(),
        ));
        return Ok(None);
    };
    let address = string(prom, "listen_address", warnings)?;
    let port = string(prom, "port", warnings)?.and_then(|p| p.trim().parse::<u16>().ok());
    match (address, port) {
        (Some(address), Some(port)) if !address.trim().is_empty() => {
            Ok(Some((address.trim().to_string(), port)))
        }
        _ => {
            warnings.push(warning(
                value,
                "`<prometheus>` in `<hydra_notify>` needs `listen_address` and a numeric `port`; its metrics are disabled"
                    .into(),
            ));
            Ok(None)
        }
    }
}

/// The option reference as a Markdown table per section, as included in
/// `docs/configuration.md`.
pub fn options_markdown() -> String {
    let mut out = String::new();
    let mut section = "";
    for option in OPTIONS {
        if option.section != section {
            section = option.section;
            out.push_str(&format!(
                "\n### {section}\n\n| key | default | meaning |\n|---|---|---|\n"
            ));
        }
        let default = if option.default.is_empty() {
            "—".to_string()
        } else {
            format!("`{}`", option.default)
        };
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            option.key, default, option.description
        ));
    }
    out
}
