//! CompressLog (always on, unless `compress_build_logs = 0`): when a step
//! finishes, its log becomes `<log>.bz2` (`compress_build_logs_compression
//! = bzip2`, the default) or `<log>.zst` (`zstd`), and the plain file
//! goes. Compressed here rather than by running `bzip2`/`zstd`, so
//! nothing needs to be installed; the copy is complete (written aside,
//! then renamed) before the plain log is removed, so the log is always
//! readable. Only files under `$HYDRA_DATA/build-logs` are touched.

use std::path::{Path, PathBuf};

use async_compression::tokio::write::{BzEncoder, ZstdEncoder};
use hydra_config::LogCompression;
use tokio::io::AsyncWriteExt;

use crate::Event;
use crate::plugin::{Context, Plugin, Work};

/// The plugin.
#[derive(Debug)]
pub struct CompressLog {
    compression: LogCompression,
    silent: bool,
}

impl CompressLog {
    /// On unless `compress_build_logs = 0`.
    pub fn from_config(config: &hydra_config::Config) -> Option<CompressLog> {
        config.notify.compress_build_logs.then_some(CompressLog {
            compression: config.notify.compress_build_logs_compression,
            silent: config.notify.compress_build_logs_silent,
        })
    }
}

/// `path` with `extension` appended.
fn with_extension(path: &Path, extension: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(extension);
    PathBuf::from(p)
}

/// Compresses `log` to `<log><extension>` with `compression`.
pub async fn compress(log: &Path, compression: LogCompression) -> std::io::Result<PathBuf> {
    let extension = match compression {
        LogCompression::Bzip2 => ".bz2",
        LogCompression::Zstd => ".zst",
    };
    let target = with_extension(log, extension);
    let partial = with_extension(log, &format!("{extension}.partial"));
    let mut input = tokio::fs::File::open(log).await?;
    let output = tokio::fs::File::create(&partial).await?;
    let written = async {
        match compression {
            LogCompression::Bzip2 => {
                let mut encoder = BzEncoder::new(output);
                tokio::io::copy(&mut input, &mut encoder).await?;
                encoder.shutdown().await?;
                encoder.into_inner().sync_all().await
            }
            LogCompression::Zstd => {
                let mut encoder = ZstdEncoder::new(output);
                tokio::io::copy(&mut input, &mut encoder).await?;
                encoder.shutdown().await?;
                encoder.into_inner().sync_all().await
            }
        }
    }
    .await;
    if let Err(e) = written {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(e);
    }
    tokio::fs::rename(&partial, &target).await?;
    tokio::fs::remove_file(log).await?;
    Ok(target)
}

impl Plugin for CompressLog {
    fn name(&self) -> &'static str {
        "Hydra::Plugin::CompressLog"
    }

    fn wants(&self, event: &Event) -> bool {
        matches!(
            event,
            Event::StepFinished {
                log_path: Some(_),
                ..
            }
        )
    }

    fn run<'a>(&'a self, cx: &'a Context, event: &'a Event) -> Work<'a> {
        Box::pin(async move {
            let Event::StepFinished {
                log_path: Some(log),
                ..
            } = event
            else {
                return Ok(());
            };
            let log = Path::new(log);
            let logs = cx.data_dir.path().join("build-logs");
            if !log.starts_with(&logs) || log.components().any(|c| c.as_os_str() == "..") {
                tracing::warn!(log = %log.display(), "not compressing a log outside {}", logs.display());
                return Ok(());
            }
            if !log.is_file() {
                return Ok(());
            }
            let target = compress(log, self.compression)
                .await
                .map_err(|e| format!("compressing {}: {e}", log.display()))?;
            if !self.silent {
                tracing::info!(log = %target.display(), "compressed a build log");
            }
            Ok(())
        })
    }
}
