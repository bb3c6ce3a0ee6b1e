//! `hydra up`: the whole system in one process. It brings up the database
//! (the managed cluster unless one is configured), migrates it, runs the
//! evaluator, the queue runner and the web server, and stops everything on
//! SIGINT or SIGTERM.

use hydra_config::{Config, Paths};
use tokio::signal::unix::{SignalKind, signal};

use tokio_util::sync::CancellationToken;

use crate::database::{self, Ownership};
use crate::evaluator;
use crate::init;
use crate::queue_runner;
use crate::server::{self, ListenArgs};

pub async fn run(paths: &Paths, config: &Config, listen: ListenArgs) -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;

    let db = database::open(
        paths,
        config,
        Ownership::Own,
        12 + evaluator::connections(config)
            + queue_runner::connections(config)
            + server::connections(),
    )
    .await?;
    let done = match init::initialise(&db.pool).await {
        Ok(done) => done,
        Err(e) => {
            db.close().await?;
            return Err(e);
        }
    };
    for line in init::describe(&done) {
        tracing::info!("{line}");
    }
    let config_note = match config.files.first() {
        Some(file) => file.display().to_string(),
        None => format!(
            "{} (not present: the defaults are used)",
            paths.config_file.display()
        ),
    };

    // Everything this process listens on is bound before any role starts:
    // an address that is taken stops `hydra up` here, with the option to
    // change, instead of leaving a role without its endpoint (or, worse,
    // the web server showing another program's status as its own).
    let prepared = async {
        let config = server::with_signing_key(paths, config)?;
        let web = server::bind(&listen.listen, server::LISTEN_OPTION).await?;
        let status = match config.queue_runner.metrics_address.as_str() {
            "" => None,
            address => {
                Some(server::bind(address, "queue_runner_metrics_address in hydra.conf").await?)
            }
        };
        let metrics = match &config.evaluator.metrics_address {
            Some(address) => {
                Some(server::bind(address, "evaluator_metrics_address in hydra.conf").await?)
            }
            None => None,
        };
        // The web server reads the status of the queue runner started here.
        let mut web_config = config.clone();
        if web_config.web.queue_runner_endpoint.is_none()
            && let Some(status) = &status
        {
            web_config.web.queue_runner_endpoint = Some(format!("http://{}", status.local_addr()?));
        }
        let web_state = server::state(paths, &web_config, db.pool.clone())?;
        let queue_runner = queue_runner::context(paths, &config, db.pool.clone())?;
        let notify_plugins = super::notify::plugins(&config, &db.pool)?;
        let web_url = server::url_of(web.local_addr()?);
        let setup = server::setup_link(&web_state, &db.pool, &web_url).await?;
        anyhow::Ok((
            config,
            web,
            status,
            metrics,
            web_state,
            queue_runner,
            notify_plugins,
            web_url,
            setup,
        ))
    }
    .await;
    let (
        config,
        listener,
        status,
        metrics,
        web_state,
        queue_runner_ctx,
        notify_plugins,
        web_url,
        setup,
    ) = match prepared {
        Ok(x) => x,
        Err(e) => {
            db.close().await?;
            return Err(e);
        }
    };
    let public_key = web_state
        .signing_key
        .as_ref()
        .map(|key| key.public_key().to_text());

    let shutdown = CancellationToken::new();
    let mut web = tokio::spawn(hydra_server::run(web_state, listener, shutdown.clone()));
    let mut evaluator = tokio::spawn(hydra_evaluator::scheduler::run_with(
        evaluator::context(paths, &config, db.pool.clone()),
        metrics,
        shutdown.clone(),
    ));
    let mut queue_runner = tokio::spawn(hydra_queue_runner::run_with(
        queue_runner_ctx,
        status,
        shutdown.clone(),
    ));
    let mut notify = tokio::spawn(hydra_notify::run(
        super::notify::context(paths, &config, db.pool.clone()),
        notify_plugins,
        hydra_notify::Options::default(),
        shutdown.clone(),
    ));
    announce(&Announcement {
        web: &web_url,
        data: &paths.data_dir,
        config: &config_note,
        database: &db.location,
        managed: db.owns_cluster(),
        public_key: public_key.as_deref(),
        setup: setup.as_deref(),
    });
    let failure = tokio::select! {
        _ = terminate.recv() => { tracing::info!("SIGTERM received; shutting down"); None }
        _ = interrupt.recv() => { tracing::info!("SIGINT received; shutting down"); None }
        ended = &mut evaluator => Some(match ended {
            Ok(Ok(())) => anyhow::anyhow!("the evaluator stopped"),
            Ok(Err(e)) => anyhow::Error::from(e).context("the evaluator failed"),
            Err(e) => anyhow::anyhow!("the evaluator failed: {e}"),
        }),
        ended = &mut queue_runner => Some(match ended {
            Ok(Ok(())) => anyhow::anyhow!("the queue runner stopped"),
            Ok(Err(e)) => anyhow::Error::from(e).context("the queue runner failed"),
            Err(e) => anyhow::anyhow!("the queue runner failed: {e}"),
        }),
        ended = &mut notify => Some(match ended {
            Ok(Ok(())) => anyhow::anyhow!("notify stopped"),
            Ok(Err(e)) => anyhow::Error::from(e).context("notify failed"),
            Err(e) => anyhow::anyhow!("notify failed: {e}"),
        }),
        ended = &mut web => Some(match ended {
            Ok(Ok(())) => anyhow::anyhow!("the web server stopped"),
            Ok(Err(e)) => anyhow::Error::from(e).context("the web server failed"),
            Err(e) => anyhow::anyhow!("the web server failed: {e}"),
        }),
    };
    shutdown.cancel();
    if !evaluator.is_finished()
        && let Ok(Err(e)) = evaluator.await
    {
        tracing::error!("the evaluator failed while stopping: {e}");
    }
    if !queue_runner.is_finished()
        && let Ok(Err(e)) = queue_runner.await
    {
        tracing::error!("the queue runner failed while stopping: {e}");
    }
    if !notify.is_finished()
        && let Ok(Err(e)) = notify.await
    {
        tracing::error!("notify failed while stopping: {e}");
    }
    if !web.is_finished()
        && let Ok(Err(e)) = web.await
    {
        tracing::error!("the web server failed while stopping: {e}");
    }
    db.close().await?;
    if let Some(e) = failure {
        return Err(e);
    }
    tracing::info!("hydra stopped");
    Ok(())
}

/// What `hydra up` tells its user once everything listens.
struct Announcement<'a> {
    web: &'a str,
    data: &'a std::path::Path,
    config: &'a str,
    database: &'a str,
    managed: bool,
    public_key: Option<&'a str>,
    setup: Option<&'a str>,
}

/// Prints where to go and what to do next: the one block of the log meant
/// for a person rather than for a log reader.
#[allow(clippy::print_stderr)]
fn announce(a: &Announcement<'_>) {
    let mut text = format!(
        "\nhydra is up.\n\n\
         \x20 Open            {web}\n\
         \x20 Data            {data}\n\
         \x20 Configuration   {config}\n\
         \x20 Database        psql '{database}'{managed}\n",
        web = a.web,
        data = a.data.display(),
        config = a.config,
        database = a.database,
        managed = if a.managed { " (run by hydra)" } else { "" },
    );
    if let Some(key) = a.public_key {
        text.push_str(&format!(
            "\x20 Binary cache    {web}, signed by {key}\n\
             \x20                 nix-store -r PATH --option substituters {web} --option trusted-public-keys '{key}'\n",
            web = a.web.trim_end_matches('/'),
        ));
    }
    match a.setup {
        Some(link) => text.push_str(&format!(
            "\n  There is no administrator yet. Open this link to create one and sign in\n\
             \x20 (it works until an administrator exists):\n\n\
             \x20     {link}\n\n\
             \x20 Or, in a terminal: hydra create-user NAME --role admin --password-prompt\n"
        )),
        None => text.push_str(&format!("\n  Sign in at {}login\n", a.web)),
    }
    text.push_str(
        "\n  Next: create a project and a jobset (the README's \"First run\" shows how),\n\
         \x20 and hydra evaluates and builds it. Stop with Ctrl-C.\n",
    );
    eprintln!("{text}");
}
