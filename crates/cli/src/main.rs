//! The `hydra` command: one binary for every role of the system and its
//! administration. Argument parsing, logging and wiring live here; the work
//! is done by the library crates.

mod create_user;
mod database;
mod evaluator;
mod init;
mod notify;
mod queue_runner;
mod server;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hydra_config::{Config, Paths};

#[derive(Debug, Parser)]
#[command(
    name = "hydra",
    version,
    about = "Continuous integration and binary cache for Nix, compatible with Hydra",
    long_about = "Continuous integration and binary cache for Nix, compatible with Hydra.\n\n\
        State lives in HYDRA_DATA (default /var/lib/hydra, or ~/.local/share/hydra for users who \
        cannot write there) and the configuration in HYDRA_CONFIG \
        (default $HYDRA_DATA/hydra.conf). Without a configured database (HYDRA_DATABASE_URL, \
        HYDRA_DBI or database_url in hydra.conf) a private PostgreSQL cluster is run in \
        $HYDRA_DATA/postgres. RUST_LOG sets the log level (default: info)."
)]
struct Cli {
    /// State directory [env: HYDRA_DATA; default: /var/lib/hydra, or ~/.local/share/hydra for users who cannot write there]
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Configuration file [env: HYDRA_CONFIG; default: $HYDRA_DATA/hydra.conf]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the system in one process: the database (a managed one if none is configured), migrated, the evaluator, the queue runner, notify and the web server
    Up(server::ListenArgs),
    /// Create the database schema, or bring it up to date (adopting an existing Hydra database)
    Init,
    /// Create a user account or change one (name, type, email, password, roles)
    CreateUser(create_user::CreateUser),
    /// Evaluate jobsets when they are due (the scheduler of evaluations), until stopped
    Evaluator(evaluator::EvaluatorArgs),
    /// Evaluate one jobset now and print a summary
    EvalJobset(evaluator::EvalJobsetArgs),
    /// Register garbage collector roots for what must be kept (keepnr) and remove stale ones
    UpdateGcRoots,
    /// Build queued builds on the build machines (the queue runner), until stopped
    QueueRunner,
    /// Build one build (and what it needs) now, then exit
    BuildOne(queue_runner::BuildOneArgs),
    /// Serve the web interface, the JSON API and the binary cache, until stopped
    Server(server::ListenArgs),
    /// Run the notification plugins on builds and evaluations as they happen, until stopped
    Notify(notify::NotifyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    raise_open_file_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The soft limit on open files up to the hard one: the web server holds a
/// descriptor per connection, and the default soft limit (1,024) is
/// reached by a modest crowd of idle clients.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// `HYDRA_DATA` when it is not set: Hydra's `/var/lib/hydra` for root and
/// for accounts that may write there (Hydra's own `hydra` user), else
/// `$XDG_DATA_HOME/hydra` (`~/.local/share/hydra`), so that `hydra up`
/// works for anyone without settings.
fn default_data_dir() -> PathBuf {
    let system = PathBuf::from(hydra_config::DEFAULT_DATA_DIR);
    let writable =
        |p: &std::path::Path| nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok();
    if nix::unistd::geteuid().is_root() || writable(&system) {
        return system;
    }
    let home = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local/share"))
        });
    match home {
        Some(dir) => dir.join("hydra"),
        None => system,
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let env_paths = Paths::from_env();
    let data_dir = match (
        cli.data_dir,
        std::env::var_os("HYDRA_DATA").filter(|v| !v.is_empty()),
    ) {
        (Some(dir), _) => dir,
        (None, Some(_)) => env_paths.data_dir.path().to_path_buf(),
        (None, None) => default_data_dir(),
    };
    let paths = match cli.config {
        Some(file) => Paths::new(Some(data_dir), Some(file)),
        None if env_paths.config_explicit => {
            Paths::new(Some(data_dir), Some(env_paths.config_file))
        }
        None => Paths::new(Some(data_dir), None),
    };
    let config = load_config(&paths)?;
    match cli.command {
        Command::Up(args) => up::run(&paths, &config, args).await,
        Command::Init => init::run(&paths, &config).await,
        Command::CreateUser(args) => create_user::run(&paths, &config, args).await,
        Command::Evaluator(args) => evaluator::run(&paths, &config, args).await,
        Command::EvalJobset(args) => evaluator::eval_jobset(&paths, &config, args).await,
        Command::UpdateGcRoots => evaluator::update_gc_roots(&paths, &config).await,
        Command::QueueRunner => queue_runner::run(&paths, &config).await,
        Command::BuildOne(args) => queue_runner::build_one(&paths, &config, args).await,
        Command::Server(args) => server::run(&paths, &config, args).await,
        Command::Notify(args) => notify::run(&paths, &config, args).await,
    }
}

fn load_config(paths: &Paths) -> anyhow::Result<Config> {
    let (config, warnings) = paths.load_config()?;
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    Ok(config)
}

/// A token cancelled at the first SIGTERM or SIGINT (logged as stopping
/// `role`): how a role run by one command stops.
fn stop_on_signals(role: &'static str) -> std::io::Result<tokio_util::sync::CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received; stopping {role}"),
            _ = interrupt.recv() => tracing::info!("SIGINT received; stopping {role}"),
        }
        stop.cancel();
    });
    Ok(shutdown)
}
