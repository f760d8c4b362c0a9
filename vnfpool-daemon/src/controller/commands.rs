//! What the controller is asked to change, each with its own answer, and why it may refuse.
//! Reads (status, summaries, metrics) are not commands: they come from the published
//! [`super::snapshot::Snapshot`].

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use utoipa::ToSchema;

use crate::model::spec::Origin;

/// Where a command's answer goes.
pub type Reply<T> = oneshot::Sender<Result<T, Refusal>>;

/// A change asked of the controller.
#[derive(Debug)]
pub enum Command {
    /// No new flows to `element`; its flows stay until they end or `deadline` passes.
    Drain {
        pool: String,
        element: String,
        deadline: Option<Duration>,
        reply: Reply<String>,
    },
    /// Ends a drain.
    Undrain {
        pool: String,
        element: String,
        reply: Reply<String>,
    },
    /// Re-reads the configuration file and applies the difference.
    Reload { reply: Reply<String> },
    /// See [`AddElement`].
    AddElement(AddElement),
    /// See [`RemoveElement`].
    RemoveElement(RemoveElement),
    /// See [`SetRedundancy`].
    SetRedundancy(SetRedundancy),
}

/// Adds `element` to `pool` as `body` (the keys of a file element) says; when it is there
/// already with the same origin, the same body and the same registrant, nothing changes
/// (idempotent), and a new body replaces the old one. `subject` is the client's for an element
/// that registers itself.
#[derive(Debug)]
pub struct AddElement {
    pub pool: String,
    pub element: String,
    pub body: serde_json::Value,
    pub origin: Origin,
    pub subject: Option<String>,
    pub reply: Reply<ElementAdded>,
}

/// Removes an element added at run time. `subject`: the caller when it is an element, which
/// may remove only itself; `None` for an operator.
#[derive(Debug)]
pub struct RemoveElement {
    pub pool: String,
    pub element: String,
    pub subject: Option<String>,
    pub reply: Reply<String>,
}

/// The Service Control Entity's redundancy request: `active` actives (N) in `pool`.
#[derive(Debug)]
pub struct SetRedundancy {
    pub pool: String,
    pub active: u32,
    pub reply: Reply<LevelAnswer>,
}

/// Why a command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no pool {pool}")]
    NoPool { pool: String },
    #[error("pool {pool} has no element {element}")]
    NoElement { pool: String, element: String },
    /// The element comes from the configuration file, which only the operator changes.
    #[error("pool {pool}: element {element} is in the configuration file; {verb} it there")]
    InFile {
        pool: String,
        element: String,
        verb: &'static str,
    },
    #[error("pool {pool}: element {element} was added by {by}")]
    AddedBy {
        pool: String,
        element: String,
        by: &'static str,
    },
    /// Another client registered the element.
    #[error("pool {pool}: element {element} {why}")]
    NotYours {
        pool: String,
        element: String,
        why: &'static str,
    },
    /// The caller's grant does not cover the request (an `element` client outside its
    /// pools, names, prefixes or quota).
    #[error("{0}")]
    Forbidden(String),
    /// The request cannot be met by this pool (an active-active pool asked for N actives…).
    #[error("pool {pool}: {why}")]
    Conflict { pool: String, why: String },
    /// The request breaks the configuration's rules.
    #[error("{0}")]
    Invalid(String),
    /// The configuration file could not be loaded, or cannot be carried out; the running one
    /// stays.
    #[error("{0}")]
    Config(String),
    /// Something the daemon needed failed; nothing changed.
    #[error("{0}")]
    Failed(String),
    /// The daemon stops.
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

/// What kind of refusal, for a caller that maps it to its own codes (the API to HTTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    NotFound,
    Forbidden,
    Conflict,
    Invalid,
    Unavailable,
    Internal,
}

impl Refusal {
    #[must_use]
    pub fn kind(&self) -> RefusalKind {
        match self {
            Self::NoPool { .. } | Self::NoElement { .. } => RefusalKind::NotFound,
            Self::NotYours { .. } | Self::Forbidden(_) => RefusalKind::Forbidden,
            Self::InFile { .. } | Self::AddedBy { .. } | Self::Conflict { .. } => RefusalKind::Conflict,
            Self::Invalid(_) | Self::Config(_) => RefusalKind::Invalid,
            Self::ShuttingDown => RefusalKind::Unavailable,
            Self::Failed(_) => RefusalKind::Internal,
        }
    }
}

/// Where and how a self-registered element sends its heartbeats (the wire format is in the
/// `heartbeat` module's documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegistrationInfo {
    /// The element's id, the first field of each heartbeat.
    pub id: u64,
    /// The element's HMAC-SHA256 key, 64 hexadecimal digits. Secret.
    pub key: String,
    /// UDP port of the daemon's heartbeat listener.
    pub heartbeat_port: u16,
    /// Its address when it listens on one; otherwise send to the address the API was reached at.
    pub heartbeat_address: Option<String>,
    /// Time between two heartbeats, in microseconds.
    pub interval_us: u64,
    /// Intervals the element may miss before it is failed.
    pub misses: u32,
}

/// The answer to adding an element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ElementAdded {
    pub pool: String,
    pub element: String,
    /// Whether this request added or changed it (`false`: it was there as asked).
    pub created: bool,
    /// For an element that registered itself (role `element`).
    pub registration: Option<RegistrationInfo>,
}

/// The answer to a redundancy request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LevelAnswer {
    pub pool: String,
    /// Actives requested, now the pool's level.
    pub active: u32,
    /// Whether the pool meets its level now (actives and standbys).
    pub met: bool,
    pub actives: u32,
    pub standbys: u32,
    pub message: String,
}

/// Sends `command` (built around a fresh reply channel) and waits for its answer.
pub async fn ask<T>(
    commands: &tokio::sync::mpsc::Sender<Command>,
    command: impl FnOnce(Reply<T>) -> Command,
) -> Result<T, Refusal> {
    let (reply, answer) = oneshot::channel();
    commands
        .send(command(reply))
        .await
        .map_err(|_| Refusal::ShuttingDown)?;
    answer.await.map_err(|_| Refusal::ShuttingDown)?
}
