//! Logging through `tracing`: plain lines by default, JSON with `--log-format json`; the
//! filter comes from `RUST_LOG` (default `info`).

use std::io::IsTerminal as _;

use tracing_subscriber::{EnvFilter, fmt};

use crate::cli::LogFormat;

/// `error: source: source…`, for the one line an operator reads.
#[must_use]
pub fn error_chain(error: &dyn std::error::Error) -> String {
    use std::fmt::Write as _;
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// Installs the global subscriber.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: a log file or the journal gets plain text.
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
