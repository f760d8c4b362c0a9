//! The failover runtime: the controller and what feeds its decisions, on threads of their own.

use super::{AppError, io};

/// Worker threads of the failover runtime.
const FAILOVER_THREADS: usize = 2;

/// The failover runtime; shut down without waiting when dropped (a runtime may not be dropped
/// the blocking way inside another one, as on an error return of `build`).
pub(super) struct Failover(Option<tokio::runtime::Runtime>);

impl Failover {
    pub(super) fn start() -> Result<Self, AppError> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(FAILOVER_THREADS)
            .thread_name("vnfpool-failover")
            .enable_all()
            .build()
            .map(|rt| Self(Some(rt)))
            .map_err(io("starting the failover runtime"))
    }
}

impl std::ops::Deref for Failover {
    type Target = tokio::runtime::Runtime;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("running until dropped")
    }
}

impl Drop for Failover {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}
