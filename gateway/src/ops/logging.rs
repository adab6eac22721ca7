//! Logs: `tracing` with JSON lines by default. What is logged is chosen where it is logged: the
//! route, the issuer, the merchant id, statuses and timings; never a body, a payer packet, a
//! signature or a key.

use tracing::Dispatch;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
#[error("log configuration: {0} (fix log.level or log.format)")]
pub struct LogError(String);

/// Installs the global subscriber writing to `writer`, with colour codes only when `ansi` (give
/// whether the writer is a terminal: a file or a log collector gets plain text).
pub fn init<W>(level: &str, format: &str, writer: W, ansi: bool) -> Result<(), LogError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    dispatch(level, format, writer, ansi)?.try_init().map_err(|e| LogError(e.to_string()))
}

fn dispatch<W>(level: &str, format: &str, writer: W, ansi: bool) -> Result<Dispatch, LogError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(level).map_err(|e| LogError(format!("bad level {level:?}: {e}")))?;
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_target(true).with_ansi(ansi);
    Ok(match format {
        "json" => {
            Dispatch::new(builder.json().flatten_event(true).with_current_span(true).with_span_list(false).finish())
        }
        "text" => Dispatch::new(builder.finish()),
        other => return Err(LogError(format!("log.format must be \"json\" or \"text\", not {other:?}"))),
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::ErrorKind::Other)?.extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl MakeWriter<'_> for Capture {
        type Writer = Capture;
        fn make_writer(&self) -> Capture {
            self.clone()
        }
    }

    fn written(format: &str, ansi: bool) -> String {
        let capture = Capture::default();
        let Ok(dispatch) = dispatch("info", format, capture.clone(), ansi) else { panic!("{format}") };
        tracing::dispatcher::with_default(&dispatch, || tracing::info!(figure = 7, "a line"));
        let bytes = capture.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn colour_codes_only_when_asked_for() {
        let plain = written("text", false);
        assert!(plain.contains("a line") && plain.contains("figure=7"), "{plain:?}");
        assert!(!plain.contains('\x1b'), "escape codes in a file's log: {plain:?}");
        assert!(written("text", true).contains('\x1b'), "a terminal gets colour");
        assert!(!written("json", false).contains('\x1b'));
    }
}
