//! The configuration file as written: serde structs that mirror the YAML, keep the position of
//! every value a later check may point at, and reject unknown keys. `validate` turns them into
//! [`crate::model::spec`] values.
//!
//! The configuration reference is README's "Configuration" section (with `api:` under "The
//! API" and `cluster:` under "A cluster of nodes"), the one copy: a test below fails when a key
//! these structs accept is missing from it.

use std::{fmt, marker::PhantomData};

use serde::{
    Deserialize, Deserializer,
    de::{self, MapAccess, SeqAccess, Visitor},
};
use serde_saphyr::Spanned;

// Keys the reference calls required are `Option` here too: `validate` reports a missing key at
// the mapping that lacks it, together with every other problem, where serde would stop at the
// first one and point past the end of the mapping.

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub daemon: Option<Spanned<RawDaemon>>,
    pub pools: Option<Vec<Spanned<RawPool>>>,
    pub placement: Option<Spanned<RawPlacement>>,
    pub api: Option<Spanned<RawApi>>,
    pub cluster: Option<Spanned<RawCluster>>,
}

/// `cluster:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub node: Option<Spanned<String>>,
    pub etcd: Option<Spanned<RawEtcd>>,
    pub prefix: Option<Spanned<String>>,
    pub lease_ttl: Option<Spanned<String>>,
    pub flow_sync: Option<Spanned<RawFlowSync>>,
    pub route_table: Option<Spanned<i64>>,
}

/// `cluster.etcd:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEtcd {
    pub endpoints: Option<Spanned<Vec<Spanned<String>>>>,
    pub ca: Option<Spanned<String>>,
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
}

/// `cluster.flow_sync:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFlowSync {
    pub listen: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
}

/// `api:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApi {
    pub listen: Option<Spanned<String>>,
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    pub client_ca: Option<Spanned<String>>,
    pub crls: Option<Spanned<Vec<Spanned<String>>>>,
    pub clients: Option<Spanned<Vec<Spanned<RawApiClient>>>>,
    pub heartbeat_listen: Option<Spanned<String>>,
    pub heartbeat_clock_skew: Option<Spanned<String>>,
    pub issuers: Option<Spanned<Vec<Spanned<RawApiIssuer>>>>,
}

/// One entry of `api.issuers:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApiIssuer {
    pub role: Option<Spanned<crate::model::spec::ApiRole>>,
    pub issuer: Option<Spanned<String>>,
}

/// One entry of `api.clients:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApiClient {
    pub subject: Option<Spanned<String>>,
    pub role: Option<Spanned<crate::model::spec::ApiRole>>,
    pub pools: Option<Spanned<Vec<Spanned<String>>>>,
    pub names: Option<Spanned<String>>,
    pub prefixes: Option<Spanned<Vec<Spanned<String>>>>,
    pub max_elements: Option<Spanned<i64>>,
}

/// `placement:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlacement {
    pub weights: Option<Spanned<WeightMap>>,
    pub topology: Option<Spanned<RawTopology>>,
}

/// `placement.topology:`, written in place or as the path of a file that holds it.
#[derive(Debug)]
pub(crate) enum RawTopology {
    Inline(Entries<Spanned<CostRow>>),
    /// The path as written; its position is the `Spanned` around the `RawTopology`.
    File(String),
    Wrong(Wrong),
}

/// `daemon:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDaemon {
    pub interfaces: Option<Spanned<Vec<Spanned<String>>>>,
    pub xdp_mode: Option<RawXdpMode>,
    pub pin_dir: Option<Spanned<String>>,
    pub state_dir: Option<Spanned<String>>,
    pub socket: Option<Spanned<String>>,
    pub metrics: Option<Spanned<String>>,
    pub flow_table_size: Option<Spanned<i64>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawXdpMode {
    Native,
    Generic,
    Auto,
}

/// One entry of `pools:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPool {
    pub name: Option<Spanned<String>>,
    pub vip: Option<Spanned<String>>,
    pub ports: Option<Spanned<Vec<Spanned<i64>>>>,
    pub protocol: Option<Spanned<RawProtocol>>,
    pub redundancy: Option<Spanned<RawRedundancy>>,
    pub health: Option<Spanned<RawHealth>>,
    pub elements: Option<Spanned<Vec<Spanned<RawElement>>>>,
    pub ring_size: Option<Spanned<i64>>,
    pub budget: Option<Spanned<RawBudget>>,
    pub heartbeat: Option<Spanned<RawHeartbeat>>,
    pub registration: Option<Spanned<RawRegistration>>,
}

/// `registration:` of a pool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegistration {
    pub max_priority: Option<Spanned<i64>>,
    pub max_weight: Option<Spanned<i64>>,
}

/// `heartbeat:` of a pool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeartbeat {
    pub interval: Option<Spanned<String>>,
    pub misses: Option<Spanned<i64>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawProtocol {
    Tcp,
    Udp,
}

/// `redundancy:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedundancy {
    pub model: Option<Spanned<RawModel>>,
    pub active: Option<Spanned<i64>>,
    pub preempt: Option<Spanned<bool>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum RawModel {
    #[serde(rename = "active-standby")]
    ActiveStandby,
    #[serde(rename = "n+m")]
    NPlusM,
    #[serde(rename = "active-active")]
    ActiveActive,
}

/// `health:`. One flat struct for every kind of check (rather than an enum tagged by `check`),
/// so that each key keeps its position and a key that does not fit the check is reported as
/// such instead of as "unknown".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    pub check: Option<Spanned<RawCheck>>,
    pub port: Option<Spanned<i64>>,
    pub path: Option<Spanned<String>>,
    pub expect_status: Option<Spanned<i64>>,
    pub payload: Option<Spanned<String>>,
    pub expect: Option<Spanned<String>>,
    pub command: Option<Spanned<Vec<Spanned<String>>>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub rise: Option<Spanned<i64>>,
    pub fall: Option<Spanned<i64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawCheck {
    Tcp,
    Http,
    Udp,
    Exec,
}

/// `budget:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBudget {
    pub detect: Option<Spanned<String>>,
    pub switch: Option<Spanned<String>>,
}

/// One entry of `elements:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawElement {
    pub name: Option<Spanned<String>>,
    pub address: Option<Spanned<String>>,
    pub priority: Option<Spanned<i64>>,
    pub weight: Option<Spanned<i64>>,
    pub failure_domains: Option<Spanned<DomainMap>>,
    pub srlg: Option<Spanned<Vec<Spanned<Text>>>>,
    pub site: Option<Spanned<String>>,
    pub mac: Option<Spanned<String>>,
    pub interface: Option<Spanned<String>>,
}

// Values that may have the wrong shape (a list where a mapping belongs, a number where text
// does) are read whatever their shape and checked by `validate`, which reports the problem at
// the value, with every other one; serde would stop at the first and point at the key.

/// `failure_domains:`: kind → value.
pub(crate) type DomainMap = Mapping<Spanned<Text>>;

/// `placement.weights:`: kind → weight.
pub(crate) type WeightMap = Mapping<Spanned<i64>>;

/// A topology: site → its costs to other sites.
pub(crate) type CostMap = Mapping<Spanned<CostRow>>;

/// The costs from one site: site → cost.
pub(crate) type CostRow = Mapping<Spanned<i64>>;

/// A mapping's entries in file order, keys with their positions (a `BTreeMap` would lose
/// both). Repeated keys never get here: the YAML parser rejects them.
pub(crate) type Entries<V> = Vec<(Spanned<String>, V)>;

/// A mapping, or what was there instead.
#[derive(Debug)]
pub(crate) struct Mapping<V>(pub Result<Entries<V>, Wrong>);

/// A scalar YAML reads as a string (`h1`, `"3"`), or what was there instead: a number,
/// boolean or null (`3`, `no`, `~`) does not quietly become the text it was written as.
#[derive(Debug)]
pub(crate) struct Text(pub Result<String, Wrong>);

/// What a value of the wrong shape is, for the error message: `a list`, `an integer`, ….
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wrong(pub &'static str);

impl fmt::Display for Wrong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Mapping<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self(
            match deserializer.deserialize_any(NodeVisitor(PhantomData))? {
                Node::Entries(entries) => Ok(entries),
                Node::Text(_) => Err(Wrong("a string")),
                Node::Wrong(wrong) => Err(wrong),
            },
        ))
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let node: Node<de::IgnoredAny> = deserializer.deserialize_any(NodeVisitor(PhantomData))?;
        Ok(Self(match node {
            Node::Text(text) => Ok(text),
            Node::Entries(_) => Err(Wrong("a mapping")),
            Node::Wrong(wrong) => Err(wrong),
        }))
    }
}

impl<'de> Deserialize<'de> for RawTopology {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match deserializer.deserialize_any(NodeVisitor(PhantomData))? {
            Node::Entries(entries) => Self::Inline(entries),
            Node::Text(path) => Self::File(path),
            Node::Wrong(wrong) => Self::Wrong(wrong),
        })
    }
}

/// Any YAML value, as far as the types above care.
enum Node<V> {
    Text(String),
    Entries(Entries<V>),
    Wrong(Wrong),
}

struct NodeVisitor<V>(PhantomData<V>);

impl<'de, V: Deserialize<'de>> Visitor<'de> for NodeVisitor<V> {
    type Value = Node<V>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Node<V>, E> {
        Ok(Node::Text(text.to_owned()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<V>, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Entries(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<V>, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(Node::Wrong(Wrong("a list")))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node<V>, E> {
        Ok(Node::Wrong(Wrong("a boolean")))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node<V>, E> {
        Ok(Node::Wrong(Wrong("an integer")))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node<V>, E> {
        Ok(Node::Wrong(Wrong("an integer")))
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Node<V>, E> {
        Ok(Node::Wrong(Wrong("an integer")))
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Node<V>, E> {
        Ok(Node::Wrong(Wrong("an integer")))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node<V>, E> {
        Ok(Node::Wrong(Wrong("a number")))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node<V>, E> {
        Ok(Node::Wrong(Wrong("null")))
    }

    fn visit_none<E: de::Error>(self) -> Result<Node<V>, E> {
        Ok(Node::Wrong(Wrong("null")))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node<V>, E> {
        Ok(Node::Wrong(Wrong("binary data")))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Deserializer, de};

    use super::*;

    /// A deserializer that only records the keys a struct accepts (what serde's derive hands
    /// to `deserialize_struct`) and then fails.
    #[derive(Default)]
    struct Keys(Option<&'static [&'static str]>);

    impl<'de> Deserializer<'de> for &mut Keys {
        type Error = de::value::Error;

        fn deserialize_any<V: de::Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: de::Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(fields);
            Err(de::Error::custom("recorded"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    /// The keys `T` accepts.
    fn keys<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
        let mut keys = Keys::default();
        let _ = T::deserialize(&mut keys);
        keys.0.expect("a struct")
    }

    /// Every key of the configuration file and of `agent.yaml` is in README's reference: a
    /// `key:` line of one of its YAML blocks.
    #[test]
    fn readme_documents_every_key_the_parser_accepts() {
        let readme = include_str!("../../../README.md");
        let mut yaml = String::new();
        let mut inside = false;
        for line in readme.lines() {
            if line.starts_with("```") {
                inside = line == "```yaml";
                continue;
            }
            if inside {
                yaml.push_str(line);
                yaml.push('\n');
            }
        }
        let documented = |key: &str| {
            yaml.lines().any(|l| {
                let l = l.trim_start().trim_start_matches("- ").trim_start_matches("# ");
                l.starts_with(&format!("{key}:"))
                    || l.contains(&format!("{{ {key}:"))
                    || l.contains(&format!(", {key}:"))
            })
        };
        let tables: [(&str, &[&str]); 17] = [
            ("the file", keys::<RawConfig>()),
            ("daemon", keys::<RawDaemon>()),
            ("pools[]", keys::<RawPool>()),
            ("redundancy", keys::<RawRedundancy>()),
            ("health", keys::<RawHealth>()),
            ("budget", keys::<RawBudget>()),
            ("heartbeat", keys::<RawHeartbeat>()),
            ("registration", keys::<RawRegistration>()),
            ("elements[]", keys::<RawElement>()),
            ("placement", keys::<RawPlacement>()),
            ("api", keys::<RawApi>()),
            ("api.clients[]", keys::<RawApiClient>()),
            ("api.issuers[]", keys::<RawApiIssuer>()),
            ("cluster", keys::<RawCluster>()),
            ("cluster.etcd", keys::<RawEtcd>()),
            ("cluster.flow_sync", keys::<RawFlowSync>()),
            ("agent.yaml", keys::<crate::agent::AgentConfig>()),
        ];
        let missing: Vec<String> = tables
            .iter()
            .flat_map(|(table, keys)| {
                keys.iter()
                    .filter(|k| !documented(k))
                    .map(move |k| format!("{table}: {k}"))
            })
            .collect();
        assert!(missing.is_empty(), "keys README's reference lacks: {missing:?}");
    }
}
