//! Logs: `tracing` with JSON lines by default. What is logged is chosen where it is logged:
//! order numbers, codes and statuses; never a packet, a signature, a key or an account number.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The filter does not parse.
    #[error("log.level {level:?} is not a filter like \"info\" or \"mps_merchant=debug,info\"")]
    Level {
        /// What was configured.
        level: String,
    },
    /// Not json or text.
    #[error("log.format must be \"json\" or \"text\", not {0:?}")]
    Format(String),
    /// A subscriber is installed already.
    #[error("a log subscriber is installed already")]
    Installed,
}

/// Installs the global subscriber writing to `writer`.
pub fn init<W>(level: &str, format: &str, writer: W) -> Result<(), LogError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(level).map_err(|_| LogError::Level { level: level.to_owned() })?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_target(true);
    let installed = match format {
        "json" => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
        "text" => builder.try_init(),
        other => return Err(LogError::Format(other.to_owned())),
    };
    installed.map_err(|_| LogError::Installed)
}
