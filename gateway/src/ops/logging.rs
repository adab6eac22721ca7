//! Logs: `tracing` with JSON lines by default. What is logged is chosen where it is logged: the
//! route, the issuer, the merchant id, statuses and timings; never a body, a payer packet, a
//! signature or a key.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
#[error("log configuration: {0} (fix log.level or log.format)")]
pub struct LogError(String);

/// Installs the global subscriber writing to `writer`.
pub fn init<W>(level: &str, format: &str, writer: W) -> Result<(), LogError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(level).map_err(|e| LogError(format!("bad level {level:?}: {e}")))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_target(true);
    let installed = match format {
        "json" => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
        "text" => builder.try_init(),
        other => return Err(LogError(format!("log.format must be \"json\" or \"text\", not {other:?}"))),
    };
    installed.map_err(|e| LogError(e.to_string()))
}
