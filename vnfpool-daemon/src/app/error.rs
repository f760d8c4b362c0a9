//! Why the daemon stopped.

use crate::{
    api,
    config::ConfigErrors,
    control,
    controller::{reconcile::CapacityError, work::ResolveFailure},
    dataplane::DataplaneError,
    store::StoreError,
};

/// Why the daemon stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The configuration is wrong (exit status 2).
    #[error("{0}")]
    Config(ConfigErrors),
    /// An element cannot be reached the way L2 direct server return needs (exit status 2).
    #[error(transparent)]
    Resolve(#[from] ResolveFailure),
    #[error("data plane")]
    Dataplane(#[from] DataplaneError),
    #[error("state store")]
    Store(#[from] StoreError),
    /// The state file cannot be read; starting over it would lose what it holds.
    #[error(
        "the state file cannot be read, and the daemon will not start over it (that would lose registrations and their keys, drains, redundancy levels and the slot numbers adopted flows name): repair or restore it, or start with --move-aside-bad-state to keep it aside and start from probes"
    )]
    BadState {
        #[source]
        error: StoreError,
    },
    #[error("control socket")]
    Control(#[from] control::ControlError),
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Capacity(#[from] CapacityError),
    /// The controller's task ended without being told to (a panic).
    #[error("the controller stopped: {0}")]
    Controller(String),
    #[error("the API (api: in the configuration)")]
    Api(#[from] api::SetupError),
    /// The cluster's store cannot be set up (its certificates).
    #[error("the cluster (cluster: in the configuration): {0}")]
    Cluster(String),
}

impl AppError {
    /// Whether the error is the operator's input (exit status 2) rather than the system's.
    #[must_use]
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Self::Config(_) | Self::Resolve { .. } | Self::Capacity { .. } | Self::Api(_) | Self::Cluster(_)
        )
    }
}
