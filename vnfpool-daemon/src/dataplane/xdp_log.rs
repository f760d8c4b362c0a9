//! The drop log (`vnfpool daemon --xdp-log`): the records the XDP program writes with aya-log
//! into its ring buffer ([`vnfpool_common::maps::XDP_LOG`]), read into the daemon's log under
//! the target `vnfpool::xdp`.
//!
//! The program logs the 1st, 2nd, 4th, 8th… packet of each reason (`VNF_REASONS`) on each CPU,
//! so a flood of malformed frames writes a few dozen records, not one per frame. With the flag
//! off the program's log level is 0 in its frozen `.rodata`: the verifier removes the log code,
//! and what is loaded is the program without it (`tests/tests/xdp_log.rs` checks both).
#![expect(
    unsafe_code,
    reason = "registering the log ring's descriptor with tokio (AsyncFd::register_with_interest)"
)]

use aya_log::EbpfLogger;
use tokio::{
    io::{Interest, unix::AsyncFd},
    task::JoinHandle,
};

/// Hands aya-log's records (the `log` crate's) to `tracing`, at their own level.
#[derive(Debug, Clone, Copy, Default)]
pub struct ToTracing;

impl log::Log for ToTracing {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let message = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: "vnfpool::xdp", "{message}"),
            log::Level::Warn => tracing::warn!(target: "vnfpool::xdp", "{message}"),
            log::Level::Info => tracing::info!(target: "vnfpool::xdp", "{message}"),
            log::Level::Debug => tracing::debug!(target: "vnfpool::xdp", "{message}"),
            log::Level::Trace => tracing::trace!(target: "vnfpool::xdp", "{message}"),
        }
    }

    fn flush(&self) {}
}

/// Why the drop log cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum XdpLogError {
    /// The program is gone, or has no log ring.
    #[error("opening the log ring of program {program}")]
    Open {
        program: u32,
        #[source]
        source: aya_log::Error,
    },
    /// The ring cannot be registered with the runtime.
    #[error("polling the log ring of program {program}")]
    Poll {
        program: u32,
        #[source]
        source: std::io::Error,
    },
}

/// Reads the drop log of the loaded program `program` into the log until the runtime stops.
///
/// # Errors
/// See [`XdpLogError`].
pub fn spawn(program: u32) -> Result<JoinHandle<()>, XdpLogError> {
    let logger = EbpfLogger::init_from_id_with_logger(program, ToTracing)
        .map_err(|source| XdpLogError::Open { program, source })?;
    // SAFETY: the logger owns the ring's descriptor (an `OwnedFd` in its map) and neither
    // closes nor replaces it while the `AsyncFd` holds the logger.
    let mut ring =
        unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }.map_err(|source| {
            XdpLogError::Poll {
                program,
                source: source.into(),
            }
        })?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok(mut ready) = ring.readable_mut().await else {
                return;
            };
            ready.get_inner_mut().flush();
            ready.clear_ready();
        }
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use log::Log as _;
    use tracing::subscriber::with_default;
    use tracing_subscriber::{fmt::MakeWriter, layer::SubscriberExt as _};

    use super::ToTracing;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("capture").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[test]
    fn a_record_of_the_program_becomes_an_event_of_its_level_under_vnfpool_xdp() {
        let out = Captured::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(out.clone())
                .with_ansi(false),
        );
        with_default(subscriber, || {
            for (level, text) in [
                (log::Level::Info, "malformed (packet 1)"),
                (log::Level::Warn, "w"),
            ] {
                ToTracing.log(
                    &log::Record::builder()
                        .level(level)
                        .target("vnfpool")
                        .args(format_args!("{text}"))
                        .build(),
                );
            }
        });
        let text = String::from_utf8(out.0.lock().expect("capture").clone()).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains("INFO vnfpool::xdp: malformed (packet 1)"),
            "{text}"
        );
        assert!(lines[1].contains("WARN vnfpool::xdp: w"), "{text}");
    }
}
