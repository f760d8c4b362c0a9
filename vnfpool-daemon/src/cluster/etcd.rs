//! The cluster's store in etcd v3 ([`etcd_client`], over gRPC).
//!
//! # Keys (under the configured prefix, `/vnfpool/` by default)
//! | key | value | lease |
//! |---|---|---|
//! | `members/<node>` | [`Member`] as JSON | the node's |
//! | `leaders/<pool>` | the leader's node name | the leader's |
//! | `decisions/<pool>` | [`Decision`] as JSON | none: outlives every node |
//! | `verdicts/<pool>/<node>` | [`Verdicts`] as JSON | the node's |
//! | `drains/<pool>/<element>` | [`Drain`] as JSON | none: an operator's, until undrained |
//! | `levels/<pool>` | `{"active": n}`, the SCE's redundancy level | none |
//! | `elements/<pool>/<name>` | an element added at run time as JSON (a registration's heartbeat key included) | none |
//!
//! A leader is elected by creating `leaders/<pool>` only if it does not exist (a transaction
//! comparing its create revision with 0), bound to the node's lease: when the node dies or is
//! cut off for longer than the TTL, etcd deletes the key and the other nodes, watching, try
//! again. A decision is written in a transaction that checks the writer still holds
//! `leaders/<pool>`.

use std::{
    sync::{Mutex, PoisonError},
    time::Duration,
};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity, KeyValue,
    PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchStream,
};
use tokio::time::{Instant, timeout};
use tracing::{debug, warn};

use super::{Coordinator, CoordinatorError, Decision, Intent, Member, Update, Verdicts};
use crate::model::spec::ClusterSpec;

/// HTTP/2 ping period: just above etcd's default minimum.
const PING_INTERVAL: Duration = Duration::from_secs(6);

/// How much shorter than `lease_ttl` the lease asked of etcd is: etcd looks for ended leases
/// every 500 ms, so that a dead node's leaderships end, and its pools move, within `lease_ttl`.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(1);

/// One node's sessions with etcd.
pub struct Etcd {
    endpoints: Vec<String>,
    options: ConnectOptions,
    prefix: String,
    /// The lease's TTL in etcd: `lease_ttl` less [`EXPIRY_MARGIN`].
    ttl: Duration,
    node: String,
    /// The client and lease of the current session.
    session: Mutex<Option<(Client, i64)>>,
}

impl Etcd {
    /// A coordinator for `spec` (certificates read now). Nothing is connected before
    /// [`Coordinator::join`].
    ///
    /// # Errors
    /// When a certificate or key file cannot be read.
    pub fn new(spec: &ClusterSpec) -> Result<Self, CoordinatorError> {
        let ttl = spec
            .lease_ttl
            .saturating_sub(EXPIRY_MARGIN)
            .max(Duration::from_secs(1));
        // HTTP/2 pings find a dead connection (and end the watch on it); etcd closes
        // connections that ping more often than every 5 s (its `--grpc-keepalive-min-time`).
        // Requests are timed one by one ([`Etcd::within`]): a timeout for every request would
        // also cut the watch stream.
        let mut options = ConnectOptions::new()
            .with_connect_timeout(ttl / 3)
            .with_keep_alive(PING_INTERVAL, ttl / 3);
        if let Some(tls) = &spec.etcd.tls {
            let read = |path: &std::path::Path| {
                std::fs::read(path)
                    .map_err(|e| CoordinatorError::Store(format!("reading {}: {e}", path.display())))
            };
            let mut config = TlsOptions::new().ca_certificate(Certificate::from_pem(read(&tls.ca)?));
            if let Some((cert, key)) = &tls.identity {
                config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            options = options.with_tls(config);
        }
        Ok(Self {
            endpoints: spec.etcd.endpoints.clone(),
            options,
            prefix: spec.prefix.clone(),
            ttl,
            node: spec.node.clone(),
            session: Mutex::new(None),
        })
    }

    fn session(&self) -> Result<(Client, i64), CoordinatorError> {
        self.session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| CoordinatorError::Store("no session".to_owned()))
    }

    /// `request`, given a third of the lease: a keep-alive that times out still leaves time
    /// for another before the lease ends.
    async fn within<T>(
        &self,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, CoordinatorError> {
        let limit = self.ttl / 3;
        timeout(limit, request)
            .await
            .map_err(|_| CoordinatorError::Store(format!("no answer within {limit:?}")))?
            .map_err(|e| store(&e))
    }

    fn key(&self, parts: &[&str]) -> String {
        format!("{}{}", self.prefix, parts.join("/"))
    }

    /// The update a key's new value (or deletion, `kv` holding the key only) stands for; `None`
    /// for keys that are not vnfpool's. A value that does not parse is logged and skipped.
    fn update(&self, kv: &KeyValue, deleted: bool) -> Option<Update> {
        let key = kv.key_str().ok()?.strip_prefix(&self.prefix)?;
        let parts: Vec<&str> = key.split('/').collect();
        match parts.as_slice() {
            ["members", node] => Some(Update::Member {
                node: (*node).to_owned(),
                member: decode(key, kv.value(), "member record", deleted),
            }),
            ["leaders", pool] => Some(Update::Leader {
                pool: (*pool).to_owned(),
                node: if deleted {
                    None
                } else {
                    Some(kv.value_str().ok()?.to_owned())
                },
            }),
            ["decisions", _] => decode(key, kv.value(), "decision", deleted).map(Update::Decision),
            ["verdicts", pool, node] => Some(Update::Verdicts {
                pool: (*pool).to_owned(),
                node: (*node).to_owned(),
                verdicts: decode(key, kv.value(), "verdict", deleted),
            }),
            ["drains", pool, element] => Some(Update::Intent {
                pool: (*pool).to_owned(),
                intent: Intent::Drain {
                    element: (*element).to_owned(),
                    drain: decode(key, kv.value(), "drain", deleted),
                },
            }),
            ["elements", pool, name] => Some(Update::Intent {
                pool: (*pool).to_owned(),
                intent: Intent::Element {
                    name: (*name).to_owned(),
                    element: decode(key, kv.value(), "element", deleted).map(Box::new),
                },
            }),
            ["levels", pool] => {
                decode(key, kv.value(), "redundancy level", deleted).map(|Level { active }| Update::Intent {
                    pool: (*pool).to_owned(),
                    intent: Intent::Level { active },
                })
            }
            _ => None,
        }
    }
}

/// The value of `levels/<pool>`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Level {
    active: u32,
}

/// A value as vnfpool writes it (`None` for a deleted key); anything else is logged and
/// skipped.
fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8], what: &str, deleted: bool) -> Option<T> {
    if deleted {
        return None;
    }
    serde_json::from_slice(bytes)
        .inspect_err(|e| warn!(key, error = %e, "skipping a {what} that is not what vnfpool writes"))
        .ok()
}

fn store(e: &etcd_client::Error) -> CoordinatorError {
    CoordinatorError::Store(e.to_string())
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("cluster values serialize")
}

impl Coordinator for Etcd {
    type Changes = WatchStream;

    async fn join(&self, me: &Member) -> Result<(), CoordinatorError> {
        let mut client = self
            .within(Box::pin(Client::connect(
                &self.endpoints,
                Some(self.options.clone()),
            )))
            .await?;
        let lease = self
            .within(client.lease_grant(self.ttl.as_secs().cast_signed(), None))
            .await?
            .id();
        self.within(client.put(
            self.key(&["members", &me.node]),
            encode(me),
            Some(PutOptions::new().with_lease(lease)),
        ))
        .await?;
        *self.session.lock().unwrap_or_else(PoisonError::into_inner) = Some((client, lease));
        debug!(lease, "etcd lease granted");
        Ok(())
    }

    async fn keep_alive(&self) -> CoordinatorError {
        let (mut client, lease) = match self.session() {
            Ok(s) => s,
            Err(e) => return e,
        };
        let period = self.ttl / 3;
        let mut alive_until = Instant::now() + self.ttl;
        let mut stream = None;
        loop {
            tokio::time::sleep(period).await;
            if stream.is_none() {
                match self.within(client.lease_keep_alive(lease)).await {
                    Ok(s) => stream = Some(s),
                    Err(e) => warn!(error = %e, "etcd keep-alive"),
                }
            }
            if let Some((keeper, responses)) = &mut stream {
                let renewed = async {
                    keeper.keep_alive().await?;
                    responses.message().await
                };
                match timeout(period, renewed).await {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => {
                        alive_until = Instant::now() + Duration::from_secs(r.ttl().cast_unsigned());
                    }
                    Ok(Ok(Some(_))) => return CoordinatorError::LeaseLost,
                    Ok(Ok(None)) => stream = None,
                    Ok(Err(e)) => {
                        warn!(error = %e, "etcd keep-alive");
                        stream = None;
                    }
                    Err(_) => {
                        warn!("etcd keep-alive timed out");
                        stream = None;
                    }
                }
            }
            if Instant::now() >= alive_until {
                // Probably gone, but only etcd can say so: a node that cannot reach etcd stays
                // a member (an etcd away from every node must not take every route away).
                return CoordinatorError::Store("no renewal of the lease for its TTL".to_owned());
            }
        }
    }

    async fn watch(&self) -> Result<(Vec<Update>, WatchStream), CoordinatorError> {
        let (mut client, _) = self.session()?;
        let now = self
            .within(client.get(self.prefix.clone(), Some(GetOptions::new().with_prefix())))
            .await?;
        let revision = now.header().map_or(0, etcd_client::ResponseHeader::revision);
        let updates = now.kvs().iter().filter_map(|kv| self.update(kv, false)).collect();
        let stream = self
            .within(
                client.watch(
                    self.prefix.clone(),
                    Some(
                        WatchOptions::new()
                            .with_prefix()
                            .with_start_revision(revision + 1),
                    ),
                ),
            )
            .await?;
        Ok((updates, stream))
    }

    async fn changes(&self, stream: &mut WatchStream) -> Result<Vec<Update>, CoordinatorError> {
        loop {
            let Some(response) = stream.message().await.map_err(|e| store(&e))? else {
                return Err(CoordinatorError::Store("the watch ended".to_owned()));
            };
            if response.canceled() {
                return Err(CoordinatorError::Store(format!(
                    "the watch was cancelled ({})",
                    response.cancel_reason()
                )));
            }
            let updates: Vec<Update> = response
                .events()
                .iter()
                .filter_map(|event| {
                    let kv = event.kv()?;
                    self.update(kv, event.event_type() == EventType::Delete)
                })
                .collect();
            if !updates.is_empty() {
                return Ok(updates);
            }
        }
    }

    async fn campaign(&self, pool: &str) -> Result<String, CoordinatorError> {
        let (mut client, lease) = self.session()?;
        let key = self.key(&["leaders", pool]);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                self.node.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        let response = self.within(client.txn(txn)).await?;
        if response.succeeded() {
            return Ok(self.node.clone());
        }
        let held = response.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().cloned(),
            _ => None,
        });
        let Some(held) = held else {
            // Deleted in between: the watch will say so, and the campaign runs again.
            return Ok(String::new());
        };
        let leader = held.value_str().unwrap_or_default().to_owned();
        if leader == self.node && held.lease() != lease {
            // Still ours from a session that ended: bind it to this session's lease.
            let rebind = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    held.mod_revision(),
                )])
                .and_then([TxnOp::put(
                    key,
                    self.node.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            self.within(client.txn(rebind)).await?;
        }
        Ok(leader)
    }

    async fn decide(&self, decision: &Decision) -> Result<bool, CoordinatorError> {
        let (mut client, _) = self.session()?;
        let txn = Txn::new()
            .when([Compare::value(
                self.key(&["leaders", &decision.pool]),
                CompareOp::Equal,
                self.node.clone(),
            )])
            .and_then([TxnOp::put(
                self.key(&["decisions", &decision.pool]),
                encode(decision),
                None,
            )]);
        Ok(self.within(client.txn(txn)).await?.succeeded())
    }

    async fn report(&self, pool: &str, verdicts: &Verdicts) -> Result<(), CoordinatorError> {
        let (mut client, lease) = self.session()?;
        self.within(client.put(
            self.key(&["verdicts", pool, &self.node]),
            encode(verdicts),
            Some(PutOptions::new().with_lease(lease)),
        ))
        .await?;
        Ok(())
    }

    async fn intend(&self, pool: &str, intent: &Intent) -> Result<(), CoordinatorError> {
        let (mut client, _) = self.session()?;
        // The key, and its value (`None`: the key removed).
        let (key, value) = match intent {
            Intent::Drain { element, drain } => {
                (self.key(&["drains", pool, element]), drain.as_ref().map(encode))
            }
            Intent::Element { name, element } => (
                self.key(&["elements", pool, name]),
                element.as_deref().map(encode),
            ),
            &Intent::Level { active } => (self.key(&["levels", pool]), Some(encode(&Level { active }))),
        };
        match value {
            Some(value) => {
                self.within(client.put(key, value, None)).await?;
            }
            None => {
                self.within(client.delete(key, None)).await?;
            }
        }
        Ok(())
    }

    async fn leave(&self) {
        let Ok((mut client, lease)) = self.session() else {
            return;
        };
        if let Err(e) = self.within(client.lease_revoke(lease)).await {
            warn!(error = %e, "leaving the cluster: the lease was not revoked; it ends with its TTL");
        }
    }
}
