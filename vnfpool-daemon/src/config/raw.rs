//! The configuration file as written: serde structs that mirror the YAML, keep the position of
//! every value a later check may point at, and reject unknown keys. `validate` turns them into
//! [`crate::model::spec`] values.
//!
//! The configuration reference is `docs/configuration.md`, the one copy: tests below fail when
//! a key these structs accept is missing from it, when it documents a key they do not accept,
//! and when a YAML example in README.md, `docs/` or `examples/pools.yaml` uses a key it does
//! not document.

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
    pub mptcp: Option<Spanned<bool>>,
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
    pub forwarding: Option<Spanned<RawForwarding>>,
    pub gue_port: Option<Spanned<i64>>,
    pub vxlan_vni: Option<Spanned<i64>>,
}

/// `forwarding:` of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawForwarding {
    #[serde(rename = "l2-dsr")]
    L2Dsr,
    Ipip,
    Gue,
    Vxlan,
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
    pub heartbeat_paths: Option<Spanned<Vec<Spanned<String>>>>,
    pub vxlan_mac: Option<Spanned<String>>,
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
    use std::collections::BTreeSet;

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

    /// Where each struct of the configuration file sits (`pools[].health`: the `health` of
    /// every entry of `pools`), with the keys it accepts. No other value holds keys of the
    /// reference: `failure_domains`, `placement.weights` and `placement.topology` map names the
    /// file chooses.
    fn file_tables() -> Vec<(&'static str, &'static [&'static str])> {
        vec![
            ("", keys::<RawConfig>()),
            ("daemon", keys::<RawDaemon>()),
            ("pools[]", keys::<RawPool>()),
            ("pools[].redundancy", keys::<RawRedundancy>()),
            ("pools[].health", keys::<RawHealth>()),
            ("pools[].budget", keys::<RawBudget>()),
            ("pools[].heartbeat", keys::<RawHeartbeat>()),
            ("pools[].registration", keys::<RawRegistration>()),
            ("pools[].elements[]", keys::<RawElement>()),
            ("placement", keys::<RawPlacement>()),
            ("api", keys::<RawApi>()),
            ("api.clients[]", keys::<RawApiClient>()),
            ("api.issuers[]", keys::<RawApiIssuer>()),
            ("cluster", keys::<RawCluster>()),
            ("cluster.etcd", keys::<RawEtcd>()),
            ("cluster.flow_sync", keys::<RawFlowSync>()),
        ]
    }

    /// The same for `agent.yaml`: its `element` takes the keys of a file element.
    fn agent_tables() -> Vec<(&'static str, &'static [&'static str])> {
        vec![
            ("", keys::<crate::agent::AgentConfig>()),
            ("element", keys::<RawElement>()),
            ("paths[]", keys::<crate::agent::PathConfig>()),
        ]
    }

    /// Keys as (where, key): `("pools[].health", "fall")`.
    type KeySet = BTreeSet<(String, String)>;

    /// What a YAML document of the documentation is.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Kind {
        File,
        Agent,
    }

    /// A configuration file (or part of one) when it has a top-level key only the file has, or
    /// an `api:` mapping; an `agent.yaml` when it has a key only the agent's file has, or an
    /// `api:` address; anything else is not vnfpool's (`None`).
    fn kind(doc: &serde_json::Value) -> Option<Kind> {
        let map = doc.as_object()?;
        let (file, agent) = (keys::<RawConfig>(), keys::<crate::agent::AgentConfig>());
        let only = |ours: &[&str], theirs: &[&str]| {
            map.keys()
                .any(|k| ours.contains(&k.as_str()) && !theirs.contains(&k.as_str()))
        };
        if only(file, agent) {
            Some(Kind::File)
        } else if only(agent, file) {
            Some(Kind::Agent)
        } else {
            match map.get("api")? {
                serde_json::Value::Object(_) => Some(Kind::File),
                _ => Some(Kind::Agent),
            }
        }
    }

    /// Every key `value` uses where `tables` names a struct, as (where, key), `value` being at
    /// `path`; and in `free`, where it holds mappings that `tables` does not name.
    fn used_keys(
        value: &serde_json::Value,
        path: &str,
        tables: &[(&str, &[&str])],
        out: &mut KeySet,
        free: &mut BTreeSet<String>,
    ) {
        let Some(map) = value.as_object() else {
            return;
        };
        for (key, child) in map {
            out.insert((path.to_owned(), key.clone()));
            let mut child_path = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            let items = match child {
                serde_json::Value::Array(items) => {
                    child_path.push_str("[]");
                    items.iter().collect()
                }
                other => vec![other],
            };
            if tables.iter().any(|(p, _)| *p == child_path) {
                for item in items {
                    used_keys(item, &child_path, tables, out, free);
                }
            } else if items.iter().any(|item| item.is_object()) {
                free.insert(child_path);
            }
        }
    }

    /// Every (where, key) `tables` accepts.
    fn accepted(tables: &[(&str, &[&str])]) -> KeySet {
        tables
            .iter()
            .flat_map(|(path, keys)| keys.iter().map(|k| ((*path).to_owned(), (*k).to_owned())))
            .collect()
    }

    /// The `yaml` code blocks of a Markdown text: the line each starts on, and its text.
    fn yaml_blocks(markdown: &str) -> Vec<(usize, String)> {
        let mut blocks = Vec::new();
        let mut inside: Option<(usize, String)> = None;
        for (n, line) in markdown.lines().enumerate() {
            if line.starts_with("```") {
                if let Some(block) = inside.take() {
                    blocks.push(block);
                } else if matches!(line.trim_start_matches('`').trim(), "yaml" | "yml") {
                    inside = Some((n + 2, String::new()));
                }
                continue;
            }
            if let Some((_, text)) = &mut inside {
                text.push_str(line);
                text.push('\n');
            }
        }
        blocks
    }

    /// The keys of the YAML documents of `markdown` (`name` in messages), by kind; documents
    /// that are not vnfpool's are left out.
    fn documented_keys(name: &str, markdown: &str) -> Vec<(String, Kind, KeySet)> {
        documents(name, markdown)
            .into_iter()
            .map(|(place, kind, keys, _)| (place, kind, keys))
            .collect()
    }

    /// As [`documented_keys`], with where each document holds mappings no table names.
    fn documents(name: &str, markdown: &str) -> Vec<(String, Kind, KeySet, BTreeSet<String>)> {
        yaml_blocks(markdown)
            .into_iter()
            .filter_map(|(line, text)| {
                let doc: serde_json::Value = serde_saphyr::from_str(&text)
                    .unwrap_or_else(|e| panic!("{name}:{line}: a YAML block that does not parse: {e}"));
                let kind = kind(&doc)?;
                let tables = match kind {
                    Kind::File => file_tables(),
                    Kind::Agent => agent_tables(),
                };
                let (mut keys, mut free) = (BTreeSet::new(), BTreeSet::new());
                used_keys(&doc, "", &tables, &mut keys, &mut free);
                Some((format!("{name}:{line}"), kind, keys, free))
            })
            .collect()
    }

    fn repository(path: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(path);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// What `docs/configuration.md` documents, for the file and for `agent.yaml`. Every YAML
    /// block of the reference is one of the two.
    fn reference() -> (KeySet, KeySet) {
        let text = repository("docs/configuration.md");
        assert_eq!(
            yaml_blocks(&text).len(),
            documented_keys("docs/configuration.md", &text).len(),
            "docs/configuration.md holds a YAML block that is neither a configuration file nor an agent.yaml"
        );
        let (mut file, mut agent) = (BTreeSet::new(), BTreeSet::new());
        for (_, kind, keys) in documented_keys("docs/configuration.md", &text) {
            match kind {
                Kind::File => file.extend(keys),
                Kind::Agent => agent.extend(keys),
            }
        }
        (file, agent)
    }

    fn listed(keys: &KeySet) -> Vec<String> {
        keys.iter()
            .map(|(path, key)| {
                if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                }
            })
            .collect()
    }

    /// Every key of the configuration file and of `agent.yaml` is in the reference,
    /// `docs/configuration.md`, at its place (a `key:` of one of its YAML blocks); an agent's
    /// `element` is documented by reference to the file's elements.
    #[test]
    fn the_reference_documents_every_key_the_parser_accepts() {
        let (file, agent) = reference();
        let mut missing = listed(&accepted(&file_tables()).difference(&file).cloned().collect());
        // An agent's element is documented with the file's elements.
        let agent_own: Vec<_> = agent_tables()
            .into_iter()
            .filter(|(at, _)| *at != "element")
            .collect();
        let agent_top: BTreeSet<_> = accepted(&agent_own);
        missing.extend(
            listed(&agent_top.difference(&agent).cloned().collect())
                .into_iter()
                .map(|k| format!("agent.yaml: {k}")),
        );
        assert!(
            missing.is_empty(),
            "keys docs/configuration.md lacks: {missing:?}"
        );
    }

    /// The tables above know every struct the reference shows: the only mappings they do not
    /// name are those whose keys the file chooses (a struct added to the file without its table
    /// would show here).
    #[test]
    fn the_tables_name_every_struct_the_reference_shows() {
        let text = repository("docs/configuration.md");
        let mut free = BTreeSet::new();
        for (_, kind, _, mappings) in documents("docs/configuration.md", &text) {
            free.extend(mappings.into_iter().map(|m| format!("{kind:?}: {m}")));
        }
        assert_eq!(
            free.iter().map(String::as_str).collect::<Vec<_>>(),
            [
                "File: placement.topology",
                "File: placement.weights",
                "File: pools[].elements[].failure_domains",
            ],
            "mappings of docs/configuration.md that no table of these tests names"
        );
    }

    /// The other way round: every key the reference documents is one the parser accepts at
    /// that place (an agent's `element` takes the keys of a file element).
    #[test]
    fn every_key_the_reference_documents_is_one_the_parser_accepts() {
        let (file, agent) = reference();
        let mut unknown = listed(&file.difference(&accepted(&file_tables())).cloned().collect());
        unknown.extend(
            listed(&agent.difference(&accepted(&agent_tables())).cloned().collect())
                .into_iter()
                .map(|k| format!("agent.yaml: {k}")),
        );
        assert!(
            unknown.is_empty(),
            "keys docs/configuration.md documents that the parser refuses: {unknown:?}"
        );
    }

    /// The reference exists once: `examples/pools.yaml` points at it, and holds no commented
    /// copy of it (one had drifted, giving 64 pools where the build has 128).
    #[test]
    fn the_example_file_points_at_the_reference_and_holds_no_copy_of_it() {
        let text = repository("examples/pools.yaml");
        let top = keys::<RawConfig>();
        let copied: Vec<&str> = text
            .lines()
            .filter(|line| {
                line.strip_prefix('#').is_some_and(|comment| {
                    let comment = comment.trim_start();
                    top.iter().any(|key| comment.starts_with(&format!("{key}:")))
                })
            })
            .collect();
        assert!(
            copied.is_empty(),
            "examples/pools.yaml repeats the reference in comments ({copied:?}); point at docs/configuration.md instead"
        );
        assert!(
            text.contains("docs/configuration.md"),
            "examples/pools.yaml names the reference"
        );
    }

    /// Every YAML example of a configuration file or an `agent.yaml` in README.md, in
    /// `docs/*.md` and in `examples/pools.yaml` uses only keys the reference documents, at
    /// their place (`config::tests::example_file` validates the example as `vnfpool validate`
    /// does).
    #[test]
    fn yaml_examples_use_only_documented_keys() {
        let (file, agent) = reference();
        // An agent's element is documented with the file's elements.
        let element_keys: KeySet = file
            .iter()
            .filter(|(path, _)| path == "pools[].elements[]")
            .map(|(_, key)| ("element".to_owned(), key.clone()))
            .collect();
        let mut pages = vec![("README.md".to_owned(), repository("README.md"))];
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
        for entry in std::fs::read_dir(&docs).expect("docs/") {
            let path = entry.expect("a docs/ entry").path();
            if path.extension().is_some_and(|e| e == "md") {
                let name = format!("docs/{}", path.file_name().expect("a name").to_string_lossy());
                pages.push((name.clone(), repository(&name)));
            }
        }
        assert!(
            pages.len() > 5,
            "README.md and the docs/ pages: {:?}",
            pages.iter().map(|p| &p.0).collect::<Vec<_>>()
        );
        let mut examples = Vec::new();
        for (name, text) in &pages {
            examples.extend(documented_keys(name, text));
        }
        let example: serde_json::Value =
            serde_saphyr::from_str(&repository("examples/pools.yaml")).expect("examples/pools.yaml parses");
        assert_eq!(
            kind(&example),
            Some(Kind::File),
            "examples/pools.yaml is a configuration file"
        );
        let mut keys = BTreeSet::new();
        used_keys(&example, "", &file_tables(), &mut keys, &mut BTreeSet::new());
        examples.push(("examples/pools.yaml".to_owned(), Kind::File, keys));
        let undocumented: Vec<String> = examples
            .iter()
            .flat_map(|(place, kind, keys)| {
                let known = |k: &(String, String)| match kind {
                    Kind::File => file.contains(k),
                    Kind::Agent => agent.contains(k) || element_keys.contains(k),
                };
                listed(&keys.iter().filter(|k| !known(k)).cloned().collect())
                    .into_iter()
                    .map(move |k| format!("{place}: {k}"))
            })
            .collect();
        assert!(
            undocumented.is_empty(),
            "YAML examples using keys docs/configuration.md does not document: {undocumented:?}"
        );
    }

    /// The checks above see what they should: keys at the wrong place, a typo, an agent's
    /// element key, and blocks that are not vnfpool's.
    #[test]
    fn the_key_checks_see_places_and_kinds() {
        let doc = "```yaml\npools:\n  - name: web\n    health: { check: tcp, fall: 3 }\n    elements:\n      - { name: e1, site: a }\n    fal: 3\n```\n\
                   ```yaml\napi: 10.0.0.1:9443\npool: web\nelement: { name: e4, mac: x }\n```\n\
                   ```yaml\nscrape_configs: []\n```\n";
        let found = documented_keys("doc", doc);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].1, Kind::File);
        assert_eq!(
            listed(&found[0].2),
            [
                "pools",
                "pools[].elements",
                "pools[].fal",
                "pools[].health",
                "pools[].name",
                "pools[].elements[].name",
                "pools[].elements[].site",
                "pools[].health.check",
                "pools[].health.fall",
            ]
        );
        let unknown: Vec<_> = found[0]
            .2
            .difference(&accepted(&file_tables()))
            .cloned()
            .collect();
        assert_eq!(unknown, [("pools[]".to_owned(), "fal".to_owned())]);
        assert_eq!(found[1].1, Kind::Agent);
        assert!(found[1].2.contains(&("element".to_owned(), "mac".to_owned())));
        assert_eq!(
            kind(&serde_json::json!({ "api": { "listen": "x" } })),
            Some(Kind::File)
        );
    }
}
