//! The controller's event stream, served by the API at `/v1/events`: what changed in the
//! pools, with increasing ids, kept for a bounded window so that a client that reconnects with
//! `Last-Event-ID` receives what it missed.
//!
//! Every event has two renderings: the Service Control Entity's, which never names an element,
//! and the operator's, which does. The controller pushes; `/v1/events` reads.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::{controller::snapshot::PoolSummary, model::spec::ApiRole as Role};

/// Events kept for clients that reconnect.
pub const WINDOW: usize = 4096;

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: u64,
    /// `pool` (state or capacity changed), `policy_violation`, `failover`, `path_down` and
    /// `path_up` (these three operator only).
    pub kind: &'static str,
    /// What the `sce` role sees; `None`: the event is not for it.
    pub sce: Option<serde_json::Value>,
    /// What the `operator` role sees.
    pub operator: serde_json::Value,
}

impl Event {
    /// The rendering for `role`, if the role may see the event.
    #[must_use]
    pub fn for_role(&self, role: Role) -> Option<&serde_json::Value> {
        match role {
            Role::Sce => self.sce.as_ref(),
            Role::Operator => Some(&self.operator),
            Role::Element => None,
        }
    }
}

struct Inner {
    next: u64,
    window: VecDeque<Arc<Event>>,
    /// The last summary pushed per pool: a pool event is raised only when it differs.
    last: HashMap<String, PoolSummary>,
}

/// The event log, shared by the controller (writer) and the API (readers).
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Mutex<Inner>>,
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self::new()
    }
}

/// What a client that resumes gets: the events it missed (oldest first), whether some were
/// already gone, and a receiver for the ones to come.
pub struct Resume {
    pub missed: Vec<Arc<Event>>,
    pub gap: bool,
    pub live: broadcast::Receiver<Arc<Event>>,
}

impl EventLog {
    #[must_use]
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(WINDOW);
        Self {
            inner: Arc::new(Mutex::new(Inner {
                next: 1,
                window: VecDeque::new(),
                last: HashMap::new(),
            })),
            tx,
        }
    }

    fn push(&self, kind: &'static str, sce: Option<serde_json::Value>, operator: serde_json::Value) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let event = Arc::new(Event {
            id: inner.next,
            kind,
            sce,
            operator,
        });
        inner.next += 1;
        if inner.window.len() == WINDOW {
            inner.window.pop_front();
        }
        inner.window.push_back(Arc::clone(&event));
        // Sent under the lock, so that a reader who read the window under it and subscribed
        // under it sees every event exactly once.
        let _ = self.tx.send(event);
    }

    /// The pool's state or capacity may have changed: an event when the summary differs from
    /// the last one pushed.
    pub fn pool(&self, summary: &PoolSummary) {
        {
            let mut inner = self
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if inner.last.get(&summary.name) == Some(summary) {
                return;
            }
            inner.last.insert(summary.name.clone(), summary.clone());
        }
        let value = serde_json::to_value(summary).unwrap_or_default();
        self.push("pool", Some(value.clone()), value);
    }

    /// A policy violation: the SCE learns that the pool's redundancy shares a risk, the operator
    /// which elements.
    pub fn policy_violation(&self, pool: &str, active: &str, backup: &str, shared: &[String]) {
        #[derive(Serialize)]
        struct Sce<'a> {
            pool: &'a str,
        }
        #[derive(Serialize)]
        struct Operator<'a> {
            pool: &'a str,
            active: &'a str,
            backup: &'a str,
            shared: &'a [String],
        }
        self.push(
            "policy_violation",
            serde_json::to_value(Sce { pool }).ok(),
            serde_json::to_value(Operator {
                pool,
                active,
                backup,
                shared,
            })
            .unwrap_or_default(),
        );
    }

    /// A heartbeat path of an element went silent (`path_down`) or came back (`path_up`),
    /// for operators only; the element itself stays up while another path delivers.
    pub fn heartbeat_path(&self, pool: &str, element: &str, path: &str, up: bool) {
        let kind = if up { "path_up" } else { "path_down" };
        self.push(
            kind,
            None,
            serde_json::json!({ "pool": pool, "element": element, "path": path }),
        );
    }

    /// A failover, for operators only (it names elements).
    pub fn failover(&self, record: &serde_json::Value) {
        self.push("failover", None, record.clone());
    }

    /// Events after `last_seen` (0: none seen), and a receiver for the next ones.
    #[must_use]
    pub fn resume(&self, last_seen: u64) -> Resume {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let live = self.tx.subscribe();
        let oldest = inner.window.front().map_or(inner.next, |e| e.id);
        let missed = inner
            .window
            .iter()
            .filter(|e| e.id > last_seen)
            .cloned()
            .collect();
        Resume {
            missed,
            gap: last_seen > 0 && last_seen + 1 < oldest,
            live,
        }
    }

    /// Clients following the stream (for tests and status).
    #[must_use]
    pub fn followers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// The id the next event will have.
    #[must_use]
    pub fn next_id(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .next
    }
}
