//! The notification plugins.

use std::sync::Arc;

use crate::plugin::Plugin;

pub mod declarative;
pub mod run_command;

/// The plugins `config` enables (DeclarativeJobsets always), or what is
/// wrong with a plugin's configuration.
pub fn enabled(config: &hydra_config::Config) -> Result<Vec<Arc<dyn Plugin>>, String> {
    let mut plugins: Vec<Arc<dyn Plugin>> = vec![Arc::new(declarative::DeclarativeJobsets)];
    if let Some(run_command) = run_command::RunCommand::from_config(config)? {
        plugins.push(Arc::new(run_command));
    }
    Ok(plugins)
}
