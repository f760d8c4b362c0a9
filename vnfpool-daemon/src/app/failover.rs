//! The failover runtime: the controller and what feeds its decisions, on threads of their own;
//! the probers on one more thread of their own.

use super::{AppError, io};

/// Worker threads of the failover runtime.
const FAILOVER_THREADS: usize = 2;

/// The failover runtime and the probers' thread; both shut down without waiting when dropped (a
/// runtime may not be dropped the blocking way inside another one, as on an error return of
/// `build`).
pub(super) struct Failover {
    runtime: Option<tokio::runtime::Runtime>,
    probes: tokio::runtime::Handle,
    /// Ends the probers' thread when sent or dropped.
    _stop_probes: tokio::sync::oneshot::Sender<()>,
}

impl Failover {
    pub(super) fn start() -> Result<Self, AppError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(FAILOVER_THREADS)
            .thread_name("vnfpool-failover")
            .enable_all()
            .build()
            .map_err(io("starting the failover runtime"))?;
        // The probers run on one thread: their many small wake-ups (a probe's start, its
        // socket's readiness, its report) then cost no hand-over between threads, which on
        // two CPUs cost more than the probes themselves (BENCHMARKS.md, "Probing cost").
        let probes = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io("starting the probers' runtime"))?;
        let handle = probes.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("vnfpool-probe".into())
            .spawn(move || {
                probes.block_on(async {
                    let _ = stopped.await;
                });
                probes.shutdown_background();
            })
            .map_err(io("starting the probers' thread"))?;
        Ok(Self {
            runtime: Some(runtime),
            probes: handle,
            _stop_probes: stop,
        })
    }

    /// Where the probers run.
    pub(super) fn probes(&self) -> &tokio::runtime::Handle {
        &self.probes
    }
}

impl std::ops::Deref for Failover {
    type Target = tokio::runtime::Runtime;

    fn deref(&self) -> &Self::Target {
        self.runtime.as_ref().expect("running until dropped")
    }
}

impl Drop for Failover {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
