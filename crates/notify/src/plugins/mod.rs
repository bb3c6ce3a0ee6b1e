//! The notification plugins.

use std::sync::Arc;

use crate::plugin::Plugin;

pub mod declarative;

/// The plugins `config` enables (DeclarativeJobsets always).
pub fn enabled(_config: &hydra_config::Config) -> Vec<Arc<dyn Plugin>> {
    vec![Arc::new(declarative::DeclarativeJobsets)]
}
