//! What a log subscriber writes, captured: for the tests of the services' log set-up and of
//! what a whole run logs.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use tracing_subscriber::fmt::MakeWriter;

/// A log writer that keeps every byte written to it; clones share the bytes.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// Everything written so far; a log that is not UTF-8 fails the test.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()).expect("logs are UTF-8")
    }
}

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(bytes);
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

/// Checks a service's log set-up, `dispatch(format, writer, ansi)`: text without escape codes
/// unless colour is asked for (a file or a log collector gets plain text), colour when it is,
/// JSON never coloured.
pub fn assert_colour_only_when_asked<E: std::fmt::Debug>(
    dispatch: impl Fn(&str, Capture, bool) -> Result<tracing::Dispatch, E>,
) {
    let written = |format: &str, ansi: bool| {
        let capture = Capture::default();
        let dispatch = dispatch(format, capture.clone(), ansi).unwrap();
        tracing::dispatcher::with_default(&dispatch, || tracing::info!(figure = 7, "a line"));
        capture.text()
    };
    let plain = written("text", false);
    assert!(plain.contains("a line") && plain.contains("figure=7"), "{plain:?}");
    assert!(!plain.contains('\x1b'), "escape codes in a file's log: {plain:?}");
    assert!(written("text", true).contains('\x1b'), "a terminal gets colour");
    assert!(!written("json", false).contains('\x1b'));
}
