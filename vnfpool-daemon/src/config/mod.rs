//! The YAML configuration: read once, validated once into [`crate::model::spec::Spec`].
//!
//! [`raw`] holds the file's shape and the configuration reference; `validate` checks every
//! value and reports all problems of a file together, each with its position. A topology kept
//! in a file of its own (`placement.topology: path`) is read by [`load`] (through
//! [`parse_with`]) and its errors point into that file. The kernel-side checks (an element with
//! no route, an interface that does not exist) are the daemon's, after loading.

mod raw;
mod validate;

use std::{
    borrow::Cow,
    fmt, io,
    path::{Path, PathBuf},
};

use serde_saphyr::{MessageFormatter as _, UserMessageFormatter};

use crate::model::spec::{ElementSpec, Origin, PoolSpec, Spec};

/// Reads and validates the configuration file at `path`, and the topology file it names, if
/// any (so a reload reads that one again too).
///
/// # Errors
///
/// Every problem found, in file order; an unreadable file is one [`ConfigError::Read`].
pub fn load(path: &Path) -> Result<Spec, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        ConfigErrors(vec![ConfigError::Read {
            path: path.to_owned(),
            source,
        }])
    })?;
    parse_with(&text, path, &|file| std::fs::read_to_string(file))
}

/// Validates the configuration `text`; `origin` is the file name the errors carry. Reads no
/// file: a topology given as a file path is a [`ConfigError::ReadTopology`] (use [`load`] or
/// [`parse_with`]).
///
/// # Errors
///
/// As [`parse_with`].
pub fn parse(text: &str, origin: &Path) -> Result<Spec, ConfigErrors> {
    parse_with(text, origin, &|_| {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "files are read by `config::load` only",
        ))
    })
}

/// Validates the configuration `text`; `origin` is the file name the errors carry, and
/// `read_file` gives the contents of the topology file the configuration names, at its path
/// resolved against `origin`'s directory.
///
/// # Errors
///
/// A YAML syntax or shape error (one error, parsing stops there), else every semantic error,
/// in file order, followed by those of the topology file (which name that file).
pub fn parse_with(
    text: &str,
    origin: &Path,
    read_file: &dyn Fn(&Path) -> io::Result<String>,
) -> Result<Spec, ConfigErrors> {
    let raw: serde_saphyr::Spanned<raw::RawConfig> = serde_saphyr::from_str(text)
        .map_err(|err| ConfigErrors(vec![from_yaml(&err, origin, CONFIG_DOCUMENT)]))?;
    validate::validate(&raw, origin, read_file).map_err(ConfigErrors)
}

/// Reads one element from `text` (JSON or YAML: the body of an API request), by the rules of
/// the configuration file's elements and against `pool`. The element is called `name`; `text`
/// may leave the name out. Errors name `origin` (like `request body`) with line and column.
///
/// # Errors
///
/// Every problem found, as for a configuration file.
pub fn element_from_text(
    text: &str,
    name: &str,
    pool: &PoolSpec,
    element_origin: Origin,
    origin: &Path,
) -> Result<ElementSpec, ConfigErrors> {
    let raw: serde_saphyr::Spanned<raw::RawElement> = serde_saphyr::from_str(text)
        .map_err(|err| ConfigErrors(vec![from_yaml(&err, origin, ELEMENT_DOCUMENT)]))?;
    validate::element(raw, name, pool, element_origin, origin).map_err(ConfigErrors)
}

/// What an element's text holds, for a parser error that ends too early.
const ELEMENT_DOCUMENT: &str = "an element, like {\"address\": \"10.0.0.5\", \"weight\": 2}";

/// What a configuration file holds, for a parser error that ends too early.
const CONFIG_DOCUMENT: &str = "a complete document with `daemon` and `pools`";

/// Where element `element` of pool `pool` gives its address in the configuration `text`: for
/// errors that only the kernel can find (no route to the element), so that they too point
/// into the file.
#[must_use]
pub fn element_address_position(text: &str, pool: &str, element: &str) -> Option<Position> {
    let raw: serde_saphyr::Spanned<raw::RawConfig> = serde_saphyr::from_str(text).ok()?;
    let pools = raw.value.pools.as_ref()?;
    let p = pools
        .iter()
        .find(|p| p.value.name.as_ref().is_some_and(|n| n.value == pool))?;
    let elements = p.value.elements.as_ref()?;
    let e = elements
        .value
        .iter()
        .find(|e| e.value.name.as_ref().is_some_and(|n| n.value == element))?;
    let at = e.value.address.as_ref().map_or(e.referenced, |a| a.referenced);
    Position::of(at)
}

/// Where the top-level section `section` (`daemon`, `api`, `pools` or `placement`) starts in
/// the configuration `text`.
#[must_use]
pub fn section_position(text: &str, section: &str) -> Option<Position> {
    let raw: serde_saphyr::Spanned<raw::RawConfig> = serde_saphyr::from_str(text).ok()?;
    let c = &raw.value;
    let at = match section {
        "daemon" => c.daemon.as_ref()?.referenced,
        "api" => c.api.as_ref()?.referenced,
        "placement" => c.placement.as_ref()?.referenced,
        _ => return None,
    };
    Position::of(at)
}

/// A position in the file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl Position {
    fn of(location: serde_saphyr::Location) -> Option<Self> {
        (location.line() > 0).then(|| Self {
            line: location.line(),
            column: location.column(),
        })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Everything wrong with a configuration file; never empty.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// One problem in a configuration file. Displayed as `{file}:{line}:{column}: {what}; expected
/// {expected}`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read (or is not UTF-8).
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The YAML parser stopped: a syntax error, a value of the wrong type, a missing key.
    #[error("{}: {what}; expected {expected}", place(path, *position))]
    Syntax {
        path: PathBuf,
        /// Known for all but a few parser-internal errors.
        position: Option<Position>,
        what: String,
        expected: String,
    },
    /// A key the configuration does not have at this place.
    #[error("{}:{position}: unknown key `{key}`; expected one of {}", path.display(), allowed.join(", "))]
    UnknownKey {
        path: PathBuf,
        position: Position,
        key: String,
        allowed: Vec<&'static str>,
    },
    /// A number or duration outside its range.
    #[error("{}:{position}: {what} {value} is out of range; expected {expected}", path.display())]
    OutOfRange {
        path: PathBuf,
        position: Position,
        /// The key, e.g. `weight`.
        what: &'static str,
        value: String,
        expected: String,
    },
    /// A name, address or VIP:port/protocol that must be unique is used again; `position` is
    /// the second use.
    #[error(
        "{}:{position}: {what} is already used at line {}, column {}; expected {expected}",
        path.display(),
        first.line,
        first.column
    )]
    Duplicate {
        path: PathBuf,
        position: Position,
        what: String,
        first: Position,
        expected: &'static str,
    },
    /// The health settings cannot detect a failure within the pool's `budget.detect`.
    #[error(
        "{}:{position}: pool `{pool}`: worst-case detection {} exceeds the budget of {} by {}; \
         expected interval x fall + timeout within the budget (lower interval, fall or timeout, \
         or raise budget.detect)",
        path.display(),
        humantime::format_duration(*worst),
        humantime::format_duration(*budget),
        humantime::format_duration(worst.saturating_sub(*budget))
    )]
    Budget {
        path: PathBuf,
        position: Position,
        pool: String,
        worst: std::time::Duration,
        budget: std::time::Duration,
    },
    /// The topology file named at `position` (`placement.topology`) cannot be read (or is not
    /// UTF-8). Errors inside it are the other variants, with its path.
    #[error(
        "{}:{position}: cannot read the topology file {}: {source}; expected a readable file (a \
         relative path is from the configuration's directory)",
        path.display(),
        file.display()
    )]
    ReadTopology {
        path: PathBuf,
        position: Position,
        /// The topology file, resolved against the configuration's directory.
        file: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Any other invalid value.
    #[error("{}:{position}: {what}; expected {expected}", path.display())]
    Invalid {
        path: PathBuf,
        position: Position,
        what: String,
        expected: String,
    },
}

impl ConfigError {
    /// The file the error is about.
    #[must_use]
    pub fn path(&self) -> &Path {
        match self {
            Self::Read { path, .. }
            | Self::Syntax { path, .. }
            | Self::UnknownKey { path, .. }
            | Self::OutOfRange { path, .. }
            | Self::Duplicate { path, .. }
            | Self::Budget { path, .. }
            | Self::ReadTopology { path, .. }
            | Self::Invalid { path, .. } => path,
        }
    }

    /// Where in the file, when known.
    #[must_use]
    pub fn position(&self) -> Option<Position> {
        match self {
            Self::Read { .. } => None,
            Self::Syntax { position, .. } => *position,
            Self::UnknownKey { position, .. }
            | Self::OutOfRange { position, .. }
            | Self::Duplicate { position, .. }
            | Self::Budget { position, .. }
            | Self::ReadTopology { position, .. }
            | Self::Invalid { position, .. } => Some(*position),
        }
    }
}

fn place(path: &Path, position: Option<Position>) -> String {
    match position {
        Some(position) => format!("{}:{position}", path.display()),
        None => path.display().to_string(),
    }
}

/// Turns the YAML parser's error into ours, keeping its structure where it has one; `document`
/// is what the file should hold, for an error that ends too early.
fn from_yaml(err: &serde_saphyr::Error, path: &Path, document: &str) -> ConfigError {
    use serde_saphyr::Error as E;

    // The position is where the value is used (an alias, not its anchor); the message is the
    // original error's.
    let position = err.location().and_then(Position::of);
    let mut inner = err;
    while let E::AliasError { error, .. } | E::WithSnippet { error, .. } = inner {
        inner = error;
    }
    let (what, expected): (String, Cow<'_, str>) = match inner {
        E::SerdeUnknownField { field, expected, .. } => {
            if let Some(position) = position {
                return ConfigError::UnknownKey {
                    path: path.to_owned(),
                    position,
                    key: sanitize(field),
                    allowed: expected.clone(),
                };
            }
            (
                format!("unknown key `{}`", sanitize(field)),
                format!("one of {}", expected.join(", ")).into(),
            )
        }
        E::SerdeMissingField { field, .. } => (
            format!("missing key `{field}`"),
            format!("`{field}` in this mapping").into(),
        ),
        E::SerdeUnknownVariant {
            variant, expected, ..
        } => (
            format!("unknown value `{}`", sanitize(variant)),
            format!("one of {}", expected.join(", ")).into(),
        ),
        E::SerdeInvalidType {
            unexpected, expected, ..
        } => (
            format!("invalid type: {}", sanitize(unexpected)),
            sanitize(expected).into(),
        ),
        E::SerdeInvalidValue {
            unexpected, expected, ..
        } => (
            format!("invalid value: {}", sanitize(unexpected)),
            sanitize(expected).into(),
        ),
        E::InvalidScalar { ty, .. } => scalar_mismatch(ty),
        E::InvalidBooleanStrict { .. } => ("not a boolean".to_owned(), "true or false".into()),
        E::Unexpected { expected, .. } => (
            "a value of the wrong shape".to_owned(),
            match *expected {
                "sequence start" => "a list, like [a, b] or `- ` items",
                "mapping start" | "empty mapping start" => "a mapping of keys to values",
                "string scalar" | "scalar" => "a single value, not a list or mapping",
                other => other,
            }
            .into(),
        ),
        E::DuplicateMappingKey { key, .. } => (
            match key {
                Some(key) => format!("key `{}` repeated", sanitize(key)),
                None => "key repeated".to_owned(),
            },
            "each key at most once per mapping".into(),
        ),
        E::Eof { .. } => ("unexpected end of input".to_owned(), document.to_owned().into()),
        E::MultipleDocuments { .. } => (
            "more than one YAML document".to_owned(),
            "a single document".into(),
        ),
        other => (
            sanitize(&UserMessageFormatter.format_message(other)),
            "well-formed YAML".into(),
        ),
    };
    ConfigError::Syntax {
        path: path.to_owned(),
        position,
        what,
        expected: expected.into_owned(),
    }
}

/// What was wrong and what was expected, for a scalar that did not parse as `ty`.
fn scalar_mismatch(ty: &str) -> (String, Cow<'static, str>) {
    match ty {
        "bool" | "boolean" => ("not a boolean".to_owned(), "true or false".into()),
        "i8" | "i16" | "i32" | "i64" | "i128" | "u8" | "u16" | "u32" | "u64" | "u128" | "isize" | "usize" => {
            ("not an integer".to_owned(), "an integer".into())
        }
        "f32" | "f64" | "floating point" => ("not a number".to_owned(), "a number".into()),
        other => (format!("not a valid {other}"), format!("a {other}").into()),
    }
}

/// Keeps each error on one line: the text may quote the file.
fn sanitize(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_debug().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, fmt::Write as _, net::IpAddr, sync::Arc, time::Duration};

    use proptest::prelude::*;

    use super::*;
    use crate::model::spec::{
        Budget, CheckSpec, DaemonSpec, ElementSpec, HealthSpec, PlacementSpec, PoolSpec, Protocol,
        RedundancySpec, XdpMode,
    };

    const ISSUE_EXAMPLE: &str = "\
daemon:
  interfaces: [eth0]              # where the XDP program attaches (ingress)
  xdp_mode: auto                  # native | generic | auto (native, else generic with a warning)
  pin_dir: /sys/fs/bpf/vnfpool    # default
  state_dir: /var/lib/vnfpool     # default
  flow_table_size: 1048576
pools:
  - name: web
    vip: 10.10.0.100              # IPv4 or IPv6
    ports: [8080]
    protocol: tcp                 # tcp | udp
    redundancy:
      model: active-standby       # active-standby | n+m | active-active
      active: 1                   # N, for n+m
      preempt: true               # a returning higher-priority element takes over again
    health:
      check: tcp                  # tcp | http | udp | exec
      port: 8080
      interval: 10ms
      timeout: 50ms
      rise: 2
      fall: 3
    elements:
      - { name: e1, address: 10.10.1.11, priority: 200, weight: 1, failure_domains: { host: h1, rack: r1, zone: z1 } }
      - { name: e2, address: 10.10.1.12, priority: 100, weight: 1, failure_domains: { host: h2, rack: r2, zone: z1 } }
";

    /// A small valid file the error cases edit; one key per line so that positions are easy
    /// to read off.
    const BASE: &str = "\
daemon: { interfaces: [eth0] }
pools:
  - name: web
    vip: 10.0.0.1
    ports: [80]
    protocol: tcp
    redundancy: { model: active-standby }
    health: { check: tcp, port: 80, interval: 10ms, timeout: 50ms, rise: 2, fall: 3 }
    elements:
      - { name: e1, address: 10.0.1.1 }
      - { name: e2, address: 10.0.1.2 }
";

    /// A second pool, appended to [`BASE`] (its lines are 12 to 20).
    const SECOND: &str = "  - name: api
    vip: 10.0.0.2
    ports: [81]
    protocol: tcp
    redundancy: { model: active-active }
    health: { check: tcp, port: 81, interval: 10ms, timeout: 50ms, rise: 2, fall: 3 }
    elements:
      - { name: e1, address: 10.0.2.1 }
      - { name: e2, address: 10.0.2.2 }
";

    /// A `placement:` section, appended to [`BASE`] (its lines are 12 to 17).
    const PLACEMENT: &str = "\
placement:
  weights: { host: 100, rack: 10, srlg: 50 }
  topology:
    site-a: { site-a: 0, site-b: 2 }
    site-b: { site-a: 2, site-c: 5 }
    site-c: {}
";

    /// The costs of [`PLACEMENT`]'s topology, as a topology file.
    const SITES: &str = "\
site-a: { site-a: 0, site-b: 2 }
site-b: { site-a: 2, site-c: 5 }
site-c: {}
";

    fn origin() -> &'static Path {
        Path::new("pools.yaml")
    }

    /// `text` with its only occurrence of `from` replaced by `to`.
    #[track_caller]
    fn edit(text: &str, from: &str, to: &str) -> String {
        assert_eq!(
            text.matches(from).count(),
            1,
            "`{from}` must occur once in\n{text}"
        );
        text.replacen(from, to, 1)
    }

    fn base(from: &str, to: &str) -> String {
        edit(BASE, from, to)
    }

    fn two_pools(from: &str, to: &str) -> String {
        edit(&format!("{BASE}{SECOND}"), from, to)
    }

    fn placed(from: &str, to: &str) -> String {
        edit(&format!("{BASE}{PLACEMENT}"), from, to)
    }

    /// [`BASE`] with e1 at `site-b` and a `placement:` whose topology is the file `file`
    /// (written at line 13, column 13).
    fn with_topology_file(file: &str) -> String {
        format!(
            "{}placement:\n  topology: {file}\n",
            base("name: e1,", "name: e1, site: site-b,")
        )
    }

    /// [`PLACEMENT`]'s topology.
    fn sites() -> BTreeMap<String, BTreeMap<String, u32>> {
        [
            ("site-a", &[("site-a", 0), ("site-b", 2)][..]),
            ("site-b", &[("site-a", 2), ("site-c", 5)]),
            ("site-c", &[]),
        ]
        .iter()
        .map(|&(from, row)| {
            let row = row.iter().map(|&(to, cost)| (to.to_owned(), cost)).collect();
            (from.to_owned(), row)
        })
        .collect()
    }

    /// A test's files, in a fresh temporary directory that is removed when dropped.
    struct Files(tempfile::TempDir);

    impl Files {
        fn new(tag: &str) -> Self {
            let dir = tempfile::Builder::new()
                .prefix(&format!("vnfp-config-{tag}-"))
                .tempdir()
                .expect("creating a temporary directory");
            Self(dir)
        }

        /// Writes `text` to the file `name` in the directory; its path.
        #[track_caller]
        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.path().join(name);
            std::fs::write(&path, text).expect("writing a temporary file");
            path
        }
    }

    fn shown(errors: &[ConfigError]) -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    }

    #[track_caller]
    fn errors_of(text: &str) -> Vec<ConfigError> {
        match parse(text, origin()) {
            Ok(spec) => panic!("expected errors for\n{text}\ngot {spec:#?}"),
            Err(ConfigErrors(errors)) => {
                assert!(!errors.is_empty(), "ConfigErrors must not be empty");
                errors
            }
        }
    }

    /// Name, address, priority and failure domains of an element with the default weight.
    type ElementRow<'a> = (&'a str, &'a str, u32, &'a [(&'a str, &'a str)]);

    fn elements(rows: &[ElementRow<'_>]) -> Vec<ElementSpec> {
        rows.iter()
            .map(|&(name, address, priority, domains)| ElementSpec {
                name: name.to_owned(),
                address: address.parse().expect("test address"),
                priority,
                weight: 1,
                failure_domains: domains
                    .iter()
                    .map(|&(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                srlg: Vec::new(),
                site: None,
                mac: None,
                interface: None,
                heartbeat_paths: Vec::new(),
                vxlan_mac: None,
                origin: crate::model::spec::Origin::File,
            })
            .collect()
    }

    #[test]
    fn issue_example() {
        let spec = parse(ISSUE_EXAMPLE, origin()).expect("the issue's example is valid");
        let expected = Spec {
            daemon: DaemonSpec {
                interfaces: vec!["eth0".to_owned()],
                xdp_mode: XdpMode::Auto,
                pin_dir: PathBuf::from("/sys/fs/bpf/vnfpool"),
                state_dir: PathBuf::from("/var/lib/vnfpool"),
                flow_table_size: 1_048_576,
                socket: PathBuf::from("/run/vnfpool/vnfpool.sock"),
                metrics: "127.0.0.1:9470".parse().expect("address"),
            },
            pools: vec![PoolSpec {
                name: "web".to_owned(),
                vip: IpAddr::from([10, 10, 0, 100]),
                ports: vec![8080],
                protocol: Protocol::Tcp,
                redundancy: RedundancySpec::ActiveStandby { preempt: true },
                health: HealthSpec {
                    check: CheckSpec::Tcp { port: 8080 },
                    interval: Duration::from_millis(10),
                    timeout: Duration::from_millis(50),
                    rise: 2,
                    fall: 3,
                },
                elements: elements(&[
                    (
                        "e1",
                        "10.10.1.11",
                        200,
                        &[("host", "h1"), ("rack", "r1"), ("zone", "z1")],
                    ),
                    (
                        "e2",
                        "10.10.1.12",
                        100,
                        &[("host", "h2"), ("rack", "r2"), ("zone", "z1")],
                    ),
                ]),
                ring_size: 65_537,
                budget: None,
                placement: std::sync::Arc::default(),
                heartbeat: crate::model::spec::HeartbeatSpec::DEFAULT,
                registration: crate::model::spec::RegistrationSpec::DEFAULT,
                forwarding: crate::model::spec::Forwarding::L2Dsr,
            }],
            placement: std::sync::Arc::default(),
            api: None,
            cluster: None,
        };
        assert_eq!(spec, expected);
    }

    #[test]
    fn defaults() {
        let spec = parse(BASE, origin()).expect("BASE is valid");
        assert_eq!(
            spec.daemon,
            DaemonSpec {
                interfaces: vec!["eth0".to_owned()],
                xdp_mode: XdpMode::Auto,
                pin_dir: PathBuf::from(vnfpool_common::maps::PIN_DIR),
                state_dir: PathBuf::from("/var/lib/vnfpool"),
                flow_table_size: vnfpool_common::maps::DEFAULT_FLOW_TABLE_SIZE,
                socket: PathBuf::from("/run/vnfpool/vnfpool.sock"),
                metrics: "127.0.0.1:9470".parse().expect("address"),
            }
        );
        let pool = &spec.pools[0];
        assert_eq!(pool.redundancy, RedundancySpec::ActiveStandby { preempt: true });
        assert_eq!(pool.ring_size, crate::model::maglev::DEFAULT_RING_SIZE);
        assert_eq!(pool.budget, None);
        assert_eq!(
            pool.elements,
            elements(&[("e1", "10.0.1.1", 100, &[]), ("e2", "10.0.1.2", 100, &[])])
        );

        let http = base("{ check: tcp, port: 80,", "{ check: http, port: 80,");
        let spec = parse(&http, origin()).expect("an http check with defaults is valid");
        assert_eq!(
            spec.pools[0].health.check,
            CheckSpec::Http {
                port: 80,
                path: "/".to_owned(),
                expect_status: 200
            }
        );
    }

    #[test]
    fn example_file() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pools.yaml");
        let spec = load(&path).unwrap_or_else(|errors| panic!("examples/pools.yaml is invalid:\n{errors}"));
        let names: Vec<_> = spec.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["web", "web-api", "dns", "fw"]);
        let [web, api, dns, fw] = &spec.pools[..] else {
            unreachable!("four pools")
        };
        assert_eq!(
            web.budget,
            Some(Budget {
                detect: Duration::from_millis(100),
                switch: Duration::from_millis(1)
            })
        );
        assert_eq!(web.health.worst_detection(), Duration::from_millis(80));
        assert_eq!(api.vip, web.vip);
        assert_eq!(api.ring_size, 4099);
        assert_eq!(api.redundancy, RedundancySpec::ActiveActive);
        assert_eq!(api.elements[0].mac, Some([0x02, 0x00, 0x0a, 0x0a, 0x01, 0x15]));
        assert_eq!(api.elements[0].interface.as_deref(), Some("eth1"));
        assert_eq!(api.elements[0].weight, 2);
        assert_eq!(
            dns.health.check,
            CheckSpec::Udp {
                port: 5353,
                payload: b"ping\n".to_vec(),
                expect: Some(b"pong\n".to_vec())
            }
        );
        assert_eq!(
            dns.redundancy,
            RedundancySpec::NPlusM {
                active: 2,
                preempt: false
            }
        );
        assert!(dns.vip.is_ipv6() && dns.elements.iter().all(|e| e.address.is_ipv6()));
        assert_eq!(
            fw.health.check,
            CheckSpec::Exec {
                command: vec!["/usr/local/bin/check-ike".to_owned(), "--quick".to_owned()]
            }
        );
    }

    #[test]
    fn accepted_edges() {
        for (what, text) in [
            ("priority 0", base("name: e1,", "name: e1, priority: 0,")),
            (
                "priority u32::MAX",
                base("name: e1,", "name: e1, priority: 4294967295,"),
            ),
            ("weight 1000", base("name: e1,", "name: e1, weight: 1000,")),
            (
                "unquoted MAC",
                base("name: e1,", "name: e1, mac: 02:00:00:00:00:01,"),
            ),
            (
                "n+m with N = all",
                base("{ model: active-standby }", "{ model: n+m, active: 2 }"),
            ),
            (
                "budget met exactly",
                base(
                    "elements:",
                    "budget: { detect: 80ms, switch: 1ms }\n    elements:",
                ),
            ),
            (
                "shared VIP, other port",
                two_pools("vip: 10.0.0.2", "vip: 10.0.0.1"),
            ),
            (
                "shared VIP and port, other protocol",
                two_pools(
                    "vip: 10.0.0.2\n    ports: [81]\n    protocol: tcp",
                    "vip: 10.0.0.1\n    ports: [80]\n    protocol: udp",
                ),
            ),
            (
                "empty pool list",
                "daemon: { interfaces: [eth0] }\npools: []\n".to_owned(),
            ),
            (
                "same element names in two pools",
                two_pools("name: api", "name: api"),
            ),
            ("empty placement", format!("{BASE}placement: {{}}\n")),
            (
                "empty topology, no site",
                format!("{BASE}placement: {{ topology: {{}} }}\n"),
            ),
            (
                "weights and costs at their bounds",
                placed("host: 100, rack: 10", "host: 0, rack: 1000000").replace("5 }", "1000000 }"),
            ),
            ("no SRLG", base("name: e1,", "name: e1, srlg: [],")),
            (
                "quoted number as failure-domain value",
                base("name: e1,", "name: e1, failure_domains: { rack: \"3\" },"),
            ),
            (
                "site of an empty row",
                placed("name: e1,", "name: e1, site: site-c,"),
            ),
        ] {
            if let Err(errors) = parse(&text, origin()) {
                panic!("{what}: expected valid, got\n{errors}\nfor\n{text}");
            }
        }
    }

    /// One bad file → exactly one error at `line:column` whose message contains `fragment`.
    #[test]
    #[expect(clippy::too_many_lines, reason = "one table of cases")]
    fn bad_snippets() {
        let cases: Vec<(&str, String, &str, &str)> = vec![
            // The parser's errors (shape, type, unknown keys).
            (
                "unknown key at top level",
                format!("{BASE}extra: 1\n"),
                "12:1",
                "unknown key `extra`; expected one of daemon, pools, placement",
            ),
            (
                "unknown key in daemon",
                edit(BASE, "[eth0] }", "[eth0], mode: native }"),
                "1:31",
                "unknown key `mode`; expected one of interfaces, xdp_mode, pin_dir",
            ),
            (
                "metrics not an address",
                edit(BASE, "[eth0] }", "[eth0], metrics: localhost }"),
                "1:40",
                "`localhost` is not an address and port; expected an IP address and port like 127.0.0.1:9470",
            ),
            (
                "heartbeat misses out of range",
                base(
                    "    protocol: tcp\n",
                    "    protocol: tcp\n    heartbeat: { interval: 3ms, misses: 0 }\n",
                ),
                "7:41",
                "heartbeat misses 0 is out of range; expected 1..=100",
            ),
            (
                "heartbeat interval not a duration",
                base(
                    "    protocol: tcp\n",
                    "    protocol: tcp\n    heartbeat: { interval: often }\n",
                ),
                "7:28",
                "heartbeat interval `often` is not a duration",
            ),
            (
                "unknown key in a pool",
                base("    protocol: tcp\n", "    protocol: tcp\n    colour: blue\n"),
                "7:5",
                "unknown key `colour`; expected one of name, vip, ports, protocol",
            ),
            (
                "unknown key in an element",
                base("address: 10.0.1.2 }", "address: 10.0.1.2, wieght: 2 }"),
                "11:40",
                "unknown key `wieght`; expected one of name, address, priority, weight",
            ),
            (
                "unknown key in health",
                base("rise: 2,", "rise: 2, retries: 1,"),
                "8:77",
                "unknown key `retries`",
            ),
            (
                "unknown protocol",
                base("protocol: tcp", "protocol: sctp"),
                "6:15",
                "unknown value `sctp`; expected one of tcp, udp",
            ),
            (
                "unknown model",
                base("model: active-standby", "model: n-plus-m"),
                "7:26",
                "unknown value `n-plus-m`; expected one of active-standby, n+m, active-active",
            ),
            (
                "missing key",
                base("    vip: 10.0.0.1\n", ""),
                "3:5",
                "missing key `vip` in this pool; expected the key `vip` in this mapping",
            ),
            (
                "port not a number",
                base("ports: [80]", "ports: [http]"),
                "5:13",
                "not an integer; expected an integer",
            ),
            (
                "repeated key",
                base("    protocol: tcp\n", "    protocol: tcp\n    protocol: udp\n"),
                "7:5",
                "key `protocol` repeated",
            ),
            (
                "YAML syntax",
                base("ports: [80]", "ports: [80"),
                "6:13",
                "; expected well-formed YAML",
            ),
            (
                "empty file",
                String::new(),
                "1:1",
                "no configuration; expected a mapping with `daemon` and `pools`",
            ),
            (
                "ports not a list",
                base("ports: [80]", "ports: 80"),
                "5:12",
                "a value of the wrong shape; expected a list",
            ),
            (
                "preempt not a boolean",
                base(
                    "{ model: active-standby }",
                    "{ model: n+m, active: 2, preempt: maybe }",
                ),
                "7:51",
                "not a boolean; expected true or false",
            ),
            (
                "only comments",
                "# nothing yet\n".to_owned(),
                "1:1",
                "no configuration",
            ),
            (
                "no pools",
                "daemon: { interfaces: [eth0] }\n".to_owned(),
                "1:1",
                "missing key `pools` in the file",
            ),
            (
                "no interfaces",
                edit(BASE, "{ interfaces: [eth0] }", "{ xdp_mode: native }"),
                "1:9",
                "missing key `interfaces` in daemon",
            ),
            (
                "element without address",
                base("{ name: e2, address: 10.0.1.2 }", "{ name: e2 }"),
                "11:9",
                "missing key `address` in this element",
            ),
            (
                "health without fall",
                base(", fall: 3 }", " }"),
                "8:13",
                "missing key `fall` in health",
            ),
            (
                "xdp_mode unknown",
                edit(BASE, "[eth0] }", "[eth0], xdp_mode: offload }"),
                "1:41",
                "unknown value `offload`; expected one of native, generic, auto",
            ),
            // Semantic errors.
            (
                "duplicate pool name",
                two_pools("name: api", "name: web"),
                "12:11",
                "pool name `web` is already used at line 3, column 11; expected a unique pool name",
            ),
            (
                "duplicate element name",
                base("name: e2", "name: e1"),
                "11:17",
                "element name `e1` is already used at line 10, column 17",
            ),
            (
                "duplicate element address",
                base("10.0.1.2", "10.0.1.1"),
                "11:30",
                "address 10.0.1.1 is already used at line 10, column 30",
            ),
            (
                "VIP:port/protocol twice",
                two_pools(
                    "vip: 10.0.0.2\n    ports: [81]",
                    "vip: 10.0.0.1\n    ports: [443, 80]",
                ),
                "14:18",
                "10.0.0.1:80/tcp (pool `web`) is already used at line 5, column 13; expected each VIP, port and protocol in one pool only",
            ),
            (
                "element of another family",
                base("10.0.1.2", "2001:db8::2"),
                "11:30",
                "element address 2001:db8::2 is IPv6 but the VIP 10.0.0.1 is IPv4; expected an IPv4 address",
            ),
            (
                "element address is the VIP",
                base("10.0.1.2", "10.0.0.1"),
                "11:30",
                "element address 10.0.0.1 is the VIP",
            ),
            (
                "multicast VIP",
                base("vip: 10.0.0.1", "vip: 224.0.0.1"),
                "4:10",
                "VIP 224.0.0.1 is a multicast address; expected a unicast address",
            ),
            (
                "IPv4-mapped IPv6 VIP",
                base("vip: 10.0.0.1", "vip: \"::ffff:10.0.0.9\""),
                "4:10",
                "VIP ::ffff:10.0.0.9 is an IPv4-mapped IPv6 address; expected the IPv4 address itself (10.0.0.9) or a native IPv6 address",
            ),
            (
                "VIP not an address",
                base("vip: 10.0.0.1", "vip: 10.0.0.300"),
                "4:10",
                "VIP `10.0.0.300` is not an IP address",
            ),
            (
                "weight 0",
                base("name: e1,", "name: e1, weight: 0,"),
                "10:29",
                "weight 0 is out of range; expected 1..=1000",
            ),
            (
                "weight 1001",
                base("name: e1,", "name: e1, weight: 1001,"),
                "10:29",
                "weight 1001 is out of range; expected 1..=1000",
            ),
            (
                "negative priority",
                base("name: e1,", "name: e1, priority: -1,"),
                "10:31",
                "priority -1 is out of range; expected 0..=4294967295",
            ),
            (
                "rise 0",
                base("rise: 2", "rise: 0"),
                "8:74",
                "rise 0 is out of range; expected 1..=100",
            ),
            (
                "fall 101",
                base("fall: 3", "fall: 101"),
                "8:83",
                "fall 101 is out of range; expected 1..=100",
            ),
            (
                "interval 0ms",
                base("interval: 10ms", "interval: 0ms"),
                "8:47",
                "interval 0ms is out of range; expected 1ms..=1h",
            ),
            (
                "bad duration",
                base("timeout: 50ms", "timeout: 10 parsecs"),
                "8:62",
                "timeout `10 parsecs` is not a duration (unknown time unit \"parsecs\"",
            ),
            (
                "duration without unit",
                base("interval: 10ms", "interval: 10"),
                "8:47",
                "is not a duration (time unit needed",
            ),
            (
                "bad MAC",
                base("name: e1,", "name: e1, mac: \"aa:bb:cc:dd:ee\","),
                "10:26",
                "mac `aa:bb:cc:dd:ee` is not a MAC; expected a unicast MAC like aa:bb:cc:dd:ee:ff",
            ),
            (
                "multicast MAC",
                base("name: e1,", "name: e1, mac: \"01:00:5e:00:00:01\","),
                "10:26",
                "is a multicast MAC",
            ),
            (
                "ring_size not prime",
                base("    protocol: tcp\n", "    protocol: tcp\n    ring_size: 65536\n"),
                "7:16",
                "ring size 65536 is not prime; expected a prime between 251 and 1048573",
            ),
            (
                "ring_size too small",
                base("    protocol: tcp\n", "    protocol: tcp\n    ring_size: 7\n"),
                "7:16",
                "ring size 7 is below the minimum of 251",
            ),
            (
                "gue without its port",
                base("    protocol: tcp\n", "    protocol: tcp\n    forwarding: gue\n"),
                "7:17",
                "forwarding: gue without `gue_port`; expected `gue_port: N`",
            ),
            (
                "gue_port in another mode",
                base(
                    "    protocol: tcp\n",
                    "    protocol: tcp\n    forwarding: ipip\n    gue_port: 6080\n",
                ),
                "8:15",
                "gue_port without `forwarding: gue`",
            ),
            (
                "gue_port 0",
                base(
                    "    protocol: tcp\n",
                    "    protocol: tcp\n    forwarding: gue\n    gue_port: 0\n",
                ),
                "8:15",
                "gue_port 0 is out of range; expected 1..=65535",
            ),
            (
                "vxlan without its VNI",
                base(
                    "    protocol: tcp\n",
                    "    protocol: tcp\n    forwarding: vxlan\n",
                ),
                "7:17",
                "forwarding: vxlan without `vxlan_vni`",
            ),
            (
                "vxlan VNI out of range",
                base(
                    "    protocol: tcp\n",
                    "    protocol: tcp\n    forwarding: vxlan\n    vxlan_vni: 16777216\n",
                ),
                "8:16",
                "vxlan_vni 16777216 is out of range; expected 1..=16777215",
            ),
            (
                "vxlan_vni in another mode",
                base("    protocol: tcp\n", "    protocol: tcp\n    vxlan_vni: 7\n"),
                "7:16",
                "vxlan_vni without `forwarding: vxlan`",
            ),
            (
                "vxlan element without its device's MAC",
                edit(
                    &base(
                        "    protocol: tcp\n",
                        "    protocol: tcp\n    forwarding: vxlan\n    vxlan_vni: 7\n",
                    ),
                    "name: e2,",
                    "name: e2, vxlan_mac: \"02:00:00:00:7e:02\",",
                ),
                "12:9",
                "element e1 has no vxlan_mac, which forwarding: vxlan needs",
            ),
            (
                "unknown forwarding mode",
                base(
                    "    protocol: tcp\n",
                    "    protocol: tcp\n    forwarding: geneve\n",
                ),
                "7:17",
                "unknown value `geneve`; expected one of l2-dsr, ipip, gue, vxlan",
            ),
            (
                "n+m active > elements",
                base("{ model: active-standby }", "{ model: n+m, active: 3 }"),
                "7:39",
                "active 3 is out of range; expected 1..=2 (the pool has 2 elements)",
            ),
            (
                "n+m without active",
                base("{ model: active-standby }", "{ model: n+m }"),
                "7:26",
                "model n+m without `active`",
            ),
            (
                "active-standby with 2 active",
                base(
                    "{ model: active-standby }",
                    "{ model: active-standby, active: 2 }",
                ),
                "7:50",
                "active-standby has one active element, not 2",
            ),
            (
                "active-active with preempt",
                base(
                    "{ model: active-standby }",
                    "{ model: active-active, preempt: true }",
                ),
                "7:50",
                "`preempt` does not apply to active-active",
            ),
            (
                "port 0",
                base("ports: [80]", "ports: [0]"),
                "5:13",
                "port 0 is out of range; expected 1..=65535",
            ),
            (
                "port repeated",
                base("ports: [80]", "ports: [80, 80]"),
                "5:17",
                "port 80 is already used at line 5, column 13",
            ),
            (
                "no port",
                base("ports: [80]", "ports: []"),
                "5:12",
                "no port; expected at least one port",
            ),
            (
                "health port 65536",
                base("port: 80,", "port: 65536,"),
                "8:33",
                "port 65536 is out of range; expected 1..=65535",
            ),
            (
                "missing port for a tcp check",
                base("port: 80, ", ""),
                "8:22",
                "a tcp check without `port`; expected `port: 1..=65535` in health",
            ),
            (
                "exec with port",
                base(
                    "check: tcp, port: 80,",
                    "check: exec, command: [/bin/true], port: 80,",
                ),
                "8:56",
                "`port` does not apply to an exec check; expected only `command` with check: exec",
            ),
            (
                "exec without command",
                base("check: tcp, port: 80,", "check: exec,"),
                "8:22",
                "an exec check without `command`",
            ),
            (
                "tcp with path",
                base("port: 80,", "port: 80, path: /x,"),
                "8:43",
                "`path` does not apply to a tcp check; expected only `port` with check: tcp",
            ),
            (
                "udp without payload",
                base("check: tcp", "check: udp"),
                "8:22",
                "a udp check without `payload`",
            ),
            (
                "http status 600",
                base(
                    "check: tcp, port: 80,",
                    "check: http, port: 80, expect_status: 600,",
                ),
                "8:53",
                "expect_status 600 is out of range; expected 100..=599",
            ),
            (
                "http path relative",
                base("check: tcp, port: 80,", "check: http, port: 80, path: healthz,"),
                "8:44",
                "path `healthz` is not an HTTP request path",
            ),
            (
                "budget cannot be met",
                base(
                    "elements:",
                    "budget: { detect: 50ms, switch: 1ms }\n    elements:",
                ),
                "9:23",
                "pool `web`: worst-case detection 80ms exceeds the budget of 50ms by 30ms",
            ),
            (
                "budget switch 0",
                base("elements:", "budget: { detect: 1s, switch: 0s }\n    elements:"),
                "9:35",
                "budget.switch 0s is out of range; expected more than 0",
            ),
            (
                "no element",
                base(
                    "    elements:\n      - { name: e1, address: 10.0.1.1 }\n      - { name: e2, address: 10.0.1.2 }\n",
                    "    elements: []\n",
                ),
                "9:15",
                "no element; expected at least one element",
            ),
            (
                "pool name with capitals",
                base("name: web", "name: Web"),
                "3:11",
                "pool name `Web` is not a valid name; expected [a-z0-9][a-z0-9_-]*, at most 32 bytes",
            ),
            (
                "element name too long",
                base("name: e2", &format!("name: {}", "e".repeat(33))),
                "11:17",
                "is not a valid name",
            ),
            (
                "failure-domain kind",
                base("name: e1,", "name: e1, failure_domains: { Host: h1 },"),
                "10:40",
                "failure-domain kind `Host` is not a valid name",
            ),
            (
                "failure-domain value",
                base("name: e1,", "name: e1, failure_domains: { host: \"\" },"),
                "10:46",
                "failure domain `host` has the value ``",
            ),
            // Placement, SRLGs and sites.
            (
                "element site not in the topology",
                placed("name: e1,", "name: e1, site: site-d,"),
                "10:27",
                "unknown site `site-d`; expected a site of placement.topology: `site-a`, `site-b`, `site-c`",
            ),
            (
                "element site without a topology",
                base("name: e1,", "name: e1, site: site-a,"),
                "10:27",
                "unknown site `site-a`: there is no placement.topology; expected a site of placement.topology, \
                 or no `site`",
            ),
            (
                "negative cost",
                placed("site-b: 2 }", "site-b: -2 }"),
                "15:34",
                "negative cost -2 from `site-a` to `site-b`; expected a cost 0..=1000000",
            ),
            (
                "cost too high",
                placed("site-c: 5 }", "site-c: 1000001 }"),
                "16:34",
                "cost 1000001 is out of range; expected 0..=1000000",
            ),
            (
                "fractional cost",
                placed("site-c: 5 }", "site-c: 2.5 }"),
                "16:34",
                "not an integer; expected an integer",
            ),
            (
                "text cost",
                placed("site-c: 5 }", "site-c: \"x\" }"),
                "16:34",
                "not an integer; expected an integer",
            ),
            (
                "cost to an unknown site",
                placed("site-c: 5 }", "site-d: 5 }"),
                "16:26",
                "cost from `site-b` to unknown site `site-d`; expected a site that is a key of the topology: \
                 `site-a`, `site-b`, `site-c`",
            ),
            (
                "site name with capitals",
                placed("    site-c: {}\n", "    site-c: {}\n    Site-D: {}\n"),
                "18:5",
                "site name `Site-D` is not a valid name",
            ),
            (
                "costs of a site not a mapping",
                placed("site-c: {}", "site-c: 3"),
                "17:13",
                "site `site-c` is an integer, not a mapping; expected its costs: a mapping of site to cost",
            ),
            (
                "topology neither a mapping nor a path",
                placed(
                    "  topology:\n    site-a: { site-a: 0, site-b: 2 }\n    site-b: { site-a: 2, site-c: 5 }\n    site-c: {}\n",
                    "  topology: [site-a, site-b]\n",
                ),
                "14:13",
                "placement.topology is a list, not a mapping or a file path",
            ),
            (
                "weight kind with capitals",
                placed("host: 100", "Host: 100"),
                "13:14",
                "weight kind `Host` is not a valid name; expected a failure-domain kind ([a-z0-9][a-z0-9_-]*, \
                 at most 32 bytes) or `srlg`",
            ),
            (
                "weight too high",
                placed("rack: 10,", "rack: 1000001,"),
                "13:31",
                "placement weight 1000001 is out of range; expected 0..=1000000",
            ),
            (
                "negative weight",
                placed("rack: 10,", "rack: -1,"),
                "13:31",
                "placement weight -1 is out of range; expected 0..=1000000",
            ),
            (
                "weights not a mapping",
                placed("{ host: 100, rack: 10, srlg: 50 }", "[host, rack]"),
                "13:12",
                "placement.weights is a list, not a mapping; expected a mapping of failure-domain kind or \
                 `srlg` to weight 0..=1000000",
            ),
            (
                "unknown key in placement",
                placed("  weights:", "  costs: {}\n  weights:"),
                "13:3",
                "unknown key `costs`; expected one of weights, topology",
            ),
            (
                "srlg not a list",
                base("name: e1,", "name: e1, srlg: fiber-7,"),
                "10:27",
                "a value of the wrong shape; expected a list, like [a, b] or `- ` items",
            ),
            (
                "srlg entry a number",
                base("name: e1,", "name: e1, srlg: [fiber-7, 7],"),
                "10:37",
                "srlg entry is an integer, not a string; expected a string (quote a value YAML reads as a \
                 number, boolean or null, like \"3\" or \"no\")",
            ),
            (
                "srlg entry empty",
                base("name: e1,", "name: e1, srlg: [\"\"],"),
                "10:28",
                "srlg entry has the value ``; expected 1 to 64 bytes of printable text",
            ),
            (
                "failure_domains a list",
                base("name: e1,", "name: e1, failure_domains: [host, h1],"),
                "10:38",
                "failure_domains is a list, not a mapping; expected a mapping of failure-domain kind to string \
                 value, like { host: h1, rack: r1 }",
            ),
            (
                "failure_domains a string",
                base("name: e1,", "name: e1, failure_domains: h1,"),
                "10:38",
                "failure_domains is a string, not a mapping",
            ),
            (
                "failure-domain value a number",
                base("name: e1,", "name: e1, failure_domains: { host: h1, rack: 3 },"),
                "10:56",
                "failure domain `rack` is an integer, not a string; expected a string (quote a value YAML reads \
                 as a number, boolean or null, like \"3\" or \"no\")",
            ),
            (
                "failure-domain value a boolean",
                base("name: e1,", "name: e1, failure_domains: { zone: no },"),
                "10:46",
                "failure domain `zone` is a boolean, not a string",
            ),
            (
                "failure-domain value null",
                base("name: e1,", "name: e1, failure_domains: { zone: ~ },"),
                "10:46",
                "failure domain `zone` is null, not a string",
            ),
            (
                "failure-domain value a mapping",
                base("name: e1,", "name: e1, failure_domains: { rack: { row: r1 } },"),
                "10:46",
                "failure domain `rack` is a mapping, not a string",
            ),
            (
                "no interface",
                edit(BASE, "[eth0]", "[]"),
                "1:23",
                "no interface to attach to",
            ),
            (
                "bad interface",
                edit(BASE, "[eth0]", "[eth0, \"a/b\"]"),
                "1:30",
                "`a/b` is not a valid interface name",
            ),
            (
                "interface twice",
                edit(BASE, "[eth0]", "[eth0, eth0]"),
                "1:30",
                "interface `eth0` is already used at line 1, column 24",
            ),
            (
                "flow table too small",
                edit(BASE, "[eth0] }", "[eth0], flow_table_size: 4 }"),
                "1:48",
                "flow_table_size 4 is out of range; expected 8..=67108864",
            ),
            (
                "relative state_dir",
                edit(BASE, "[eth0] }", "[eth0], state_dir: var/lib }"),
                "1:42",
                "state_dir `var/lib` is not an absolute path",
            ),
            (
                "element interface",
                base("name: e1,", "name: e1, interface: a-very-long-interface,"),
                "10:32",
                "is not a valid interface name",
            ),
            (
                "heartbeat paths of a probed element",
                base("name: e1,", "name: e1, heartbeat_paths: [10.9.0.1],"),
                "10:38",
                "heartbeat_paths of an element that does not register itself",
            ),
        ];
        let mut failures = Vec::new();
        for (what, text, at, fragment) in &cases {
            let errors = match parse(text, origin()) {
                Ok(_) => {
                    failures.push(format!("{what}: parsed without error"));
                    continue;
                }
                Err(ConfigErrors(errors)) => errors,
            };
            let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
            let wanted = format!("pools.yaml:{at}: ");
            if shown.len() != 1 || !shown[0].starts_with(&wanted) || !shown[0].contains(fragment) {
                failures.push(format!(
                    "{what}: want one error at {at} containing {fragment:?}, got:\n    {}",
                    shown.join("\n    ")
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn several_errors_in_file_order() {
        // Errors found by different checks (cross-pool names first, elements before health in
        // the code) still come out in file order.
        let text = two_pools("name: api", "name: web");
        let text = edit(&text, "ports: [80]", "ports: [0]");
        let text = edit(
            &text,
            "    health: { check: tcp, port: 81,",
            "    health: { check: tcp, port: 81, path: /,",
        );
        let text = edit(
            &text,
            "{ name: e2, address: 10.0.2.2 }",
            "{ name: e2, address: 10.0.2.2, weight: 0 }",
        );
        let text = edit(
            &text,
            "rise: 2, fall: 3 }\n    elements:\n      - { name: e1, address: 10.0.1.1 }",
            "rise: 0, fall: 3 }\n    elements:\n      - { name: e1, address: 10.0.1.1 }",
        );
        let shown: Vec<String> = errors_of(&text).iter().map(ToString::to_string).collect();
        let expected = [
            "pools.yaml:5:13: port 0 is out of range; expected 1..=65535",
            "pools.yaml:8:74: rise 0 is out of range; expected 1..=100",
            "pools.yaml:12:11: pool name `web` is already used at line 3, column 11; expected a unique pool name",
            "pools.yaml:17:43: `path` does not apply to a tcp check; expected only `port` with check: tcp",
            "pools.yaml:20:48: weight 0 is out of range; expected 1..=1000",
        ];
        assert_eq!(shown, expected);
        let errors = ConfigErrors(errors_of(&text));
        assert_eq!(errors.to_string(), expected.join("\n"));
    }

    #[test]
    fn too_many_pools() {
        let mut text = String::from("daemon: { interfaces: [eth0] }\npools:\n");
        for i in 0..=vnfpool_common::maps::MAX_POOLS {
            writeln!(
                text,
                "  - {{ name: p{i}, vip: 10.1.{}.{}, ports: [80], protocol: tcp, redundancy: {{ model: active-active }}, \
                 health: {{ check: tcp, port: 80, interval: 1s, timeout: 1s, rise: 1, fall: 1 }}, ring_size: 251, \
                 elements: [{{ name: e, address: 10.2.0.1 }}] }}",
                i / 250,
                i % 250 + 1
            )
            .expect("writing to a String");
        }
        let shown: Vec<String> = errors_of(&text).iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["pools.yaml:131:5: pool number 129, one too many; expected at most 128 pools"]
        );
    }

    #[test]
    fn the_maglev_tables_of_all_pools_must_fit_the_ring_arena() {
        // 15 pools of the default table size fit the arena; the 16th is the error, at its
        // ring_size when it gives one, else at the pool.
        let mut text = String::from("daemon: { interfaces: [eth0] }\npools:\n");
        for i in 0..18 {
            let ring = if i == 15 { "ring_size: 65537, " } else { "" };
            writeln!(
                text,
                "  - {{ name: p{i}, vip: 10.1.0.{}, ports: [80], protocol: tcp, redundancy: {{ model: active-active }}, {ring}\
                 health: {{ check: tcp, port: 80, interval: 1s, timeout: 1s, rise: 1, fall: 1 }}, \
                 elements: [{{ name: e, address: 10.2.0.1 }}] }}",
                i + 1
            )
            .expect("writing to a String");
        }
        let shown: Vec<String> = errors_of(&text).iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 1, "{shown:#?}");
        assert!(
            shown[0].starts_with("pools.yaml:18:")
                && shown[0].contains("pool p15: the Maglev tables up to this pool need 524320 chunks of the ring arena, which holds 524288 (15 pools of 65537)"),
            "{shown:#?}"
        );
    }

    #[test]
    fn too_many_elements() {
        let mut text = base(
            "    elements:\n      - { name: e1, address: 10.0.1.1 }\n      - { name: e2, address: 10.0.1.2 }\n",
            "    elements:\n",
        );
        for i in 0..=vnfpool_common::maps::MAX_ELEMENTS {
            writeln!(
                text,
                "      - {{ name: e{i}, address: 10.3.{}.{} }}",
                i / 250,
                i % 250 + 1
            )
            .expect("writing to a String");
        }
        let shown: Vec<String> = errors_of(&text).iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "pools.yaml:1034:9: element number 1025 of the pool, one too many; expected at most 1024 elements per pool"
            ]
        );
    }

    #[test]
    fn error_display_and_accessors() {
        let errors = errors_of(&base("name: e2", "name: e1"));
        assert_eq!(
            errors[0].to_string(),
            "pools.yaml:11:17: element name `e1` is already used at line 10, column 17; expected a unique \
             element name within the pool"
        );
        assert_eq!(errors[0].path(), origin());
        assert_eq!(errors[0].position(), Some(Position { line: 11, column: 17 }));
        assert!(matches!(
            &errors[0],
            ConfigError::Duplicate {
                first: Position { line: 10, column: 17 },
                ..
            }
        ));

        let errors = errors_of(&format!("{BASE}extra: 1\n"));
        assert!(
            matches!(&errors[0], ConfigError::UnknownKey { key, allowed, .. } if key == "extra" && allowed == &["daemon", "pools", "placement", "api", "cluster"]),
            "{errors:?}"
        );

        // User text never breaks the one-error-per-line output.
        let errors = errors_of(&base("name: web", "name: \"a\\nb\""));
        assert_eq!(errors[0].to_string().lines().count(), 1, "{}", errors[0]);
    }

    #[test]
    fn unreadable_file() {
        let path = Path::new("/nonexistent/vnfpool/pools.yaml");
        let ConfigErrors(errors) = load(path).expect_err("a missing file is an error");
        let [error] = &errors[..] else {
            panic!("one error expected, got {errors:?}")
        };
        assert!(
            matches!(error, ConfigError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{error:?}"
        );
        assert_eq!(error.position(), None);
        assert!(
            error
                .to_string()
                .starts_with("/nonexistent/vnfpool/pools.yaml: cannot read: "),
            "{error}"
        );
    }

    #[test]
    fn budget_error_is_typed() {
        let errors = errors_of(&base(
            "elements:",
            "budget: { detect: 50ms, switch: 1ms }\n    elements:",
        ));
        assert!(
            matches!(
                &errors[0],
                ConfigError::Budget { pool, worst, budget, .. }
                    if pool == "web" && *worst == Duration::from_millis(80) && *budget == Duration::from_millis(50)
            ),
            "{errors:?}"
        );
    }

    #[test]
    fn api_section() {
        let api = "api:\n  listen: 0.0.0.0:9443\n  cert: /etc/vnfpool/api.crt\n  key: /etc/vnfpool/api.key\n  client_ca: /etc/vnfpool/ca.crt\n  clients:\n    - { subject: \"CN=orchestrator\", role: sce }\n    - { subject: \"CN=ops\", role: operator }\n";
        let spec = parse(&format!("{BASE}{api}"), origin()).expect("valid");
        let api_spec = spec.api.expect("api");
        assert_eq!(api_spec.listen, "0.0.0.0:9443".parse().expect("addr"));
        assert_eq!(api_spec.clients.len(), 2);
        assert_eq!(api_spec.clients[0].role, crate::model::spec::ApiRole::Sce);
        assert_eq!(
            parse(BASE, origin()).expect("valid").api,
            None,
            "off unless configured"
        );
        let messages =
            |text: &str| -> Vec<String> { errors_of(text).iter().map(ToString::to_string).collect() };
        let relative = messages(&format!(
            "{BASE}{}",
            api.replace("/etc/vnfpool/api.key", "api.key")
        ));
        assert!(
            relative[0].starts_with("pools.yaml:15:8: key `api.key` is not an absolute path"),
            "{relative:?}"
        );
        let twice = messages(&format!("{BASE}{}", api.replace("CN=ops", "CN=orchestrator")));
        assert!(twice[0].contains("client subject `CN=orchestrator`"), "{twice:?}");
        let role = messages(&format!("{BASE}{}", api.replace("role: operator", "role: admin")));
        assert!(
            role[0].starts_with("pools.yaml:19:34: unknown value `admin`"),
            "{role:?}"
        );
        let missing = messages(&format!("{BASE}{}", api.replace("  listen: 0.0.0.0:9443\n", "")));
        assert!(missing[0].contains("missing key `listen` in api"), "{missing:?}");
        assert!(api_spec.crls.is_empty(), "no CRL unless given");
        let crls = parse(
            &format!("{BASE}{api}  crls: [/etc/vnfpool/a.crl, /etc/vnfpool/b.crl]\n"),
            origin(),
        )
        .expect("valid")
        .api
        .expect("api")
        .crls;
        assert_eq!(crls.len(), 2);
        let relative = messages(&format!("{BASE}{api}  crls: [a.crl]\n"));
        assert!(
            relative[0].contains("crls entry `a.crl` is not an absolute path"),
            "{relative:?}"
        );

        // Issuer pins, and the clock skew of heartbeats.
        let pins = "  issuers:\n    - { role: sce, issuer: \"CN=sce-ca\" }\n  heartbeat_clock_skew: 250ms\n";
        let pinned = parse(&format!("{BASE}{api}{pins}"), origin())
            .expect("valid")
            .api
            .expect("api");
        assert_eq!(
            pinned.issuers,
            [(crate::model::spec::ApiRole::Sce, "CN=sce-ca".to_owned())]
        );
        assert_eq!(pinned.heartbeat_clock_skew, Duration::from_millis(250));
        assert_eq!(
            api_spec.heartbeat_clock_skew,
            crate::heartbeat::DEFAULT_SKEW,
            "default skew"
        );
        let twice = messages(&format!(
            "{BASE}{api}{}",
            pins.replace(
                "role: sce, issuer: \"CN=sce-ca\" }",
                "role: sce, issuer: \"CN=a\" }\n    - { role: sce, issuer: \"CN=b\" }"
            )
        ));
        assert!(twice[0].contains("role sce"), "{twice:?}");
        let empty = messages(&format!("{BASE}{api}{}", pins.replace("CN=sce-ca", " ")));
        assert!(empty[0].contains("an empty issuer"), "{empty:?}");
        let skew = messages(&format!("{BASE}{api}{}", pins.replace("250ms", "11s")));
        assert!(
            skew[0].contains("heartbeat_clock_skew 11s is out of range"),
            "{skew:?}"
        );
    }

    #[test]
    fn subjects_and_issuers_are_read_as_distinguished_names() {
        let api = "api:\n  listen: 0.0.0.0:9443\n  cert: /c\n  key: /k\n  client_ca: /ca\n  clients:\n    - { subject: \"cn=ops,o=acme\", role: operator }\n    - { subject: 'CN=a\\, b', role: sce }\n  issuers:\n    - { role: sce, issuer: \"cn = sce-ca\" }\n";
        let spec = parse(&format!("{BASE}{api}"), origin())
            .expect("valid")
            .api
            .expect("api");
        let subjects: Vec<&str> = spec.clients.iter().map(|c| c.subject.as_str()).collect();
        assert_eq!(subjects, ["CN=ops, O=acme", "CN=a\\, b"]);
        assert_eq!(spec.issuers[0].1, "CN=sce-ca");
        let messages =
            |text: &str| -> Vec<String> { errors_of(text).iter().map(ToString::to_string).collect() };
        let bad = messages(&format!("{BASE}{}", api.replace("cn=ops,o=acme", "ops")));
        assert!(
            bad[0].contains("subject `ops` is not a distinguished name: `ops` has no `=`"),
            "{bad:?}"
        );
        let twice = messages(&format!(
            "{BASE}{}",
            api.replace("'CN=a\\, b', role: sce", "\"CN=ops, O=acme\", role: sce")
        ));
        assert!(twice[0].contains("client subject `CN=ops, O=acme`"), "{twice:?}");
    }

    #[test]
    fn element_grants_and_registration_caps() {
        let api = "api:\n  listen: 0.0.0.0:9443\n  cert: /c\n  key: /k\n  client_ca: /ca\n  clients:\n    - { subject: \"CN=ops\", role: operator }\n    - { subject: \"CN=fw\", role: element, pools: [web], names: \"fw-*\", prefixes: [10.0.1.0/24, \"2001:db8::1/64\"], max_elements: 3 }\n    - { subject: \"CN=any\", role: element }\n";
        let spec = parse(&format!("{BASE}{api}"), origin()).expect("valid");
        let clients = spec.api.expect("api").clients;
        let grant = &clients[1].grant;
        assert_eq!(grant.pools.as_deref(), Some(&["web".to_owned()][..]));
        assert_eq!(grant.names.as_deref(), Some("fw-*"));
        let prefixes: Vec<String> = grant.prefixes.iter().flatten().map(ToString::to_string).collect();
        assert_eq!(prefixes, ["10.0.1.0/24", "2001:db8::/64"], "host bits cleared");
        assert_eq!(grant.max_elements, 3);
        assert_eq!(clients[2].grant, crate::model::spec::Grant::default());
        assert_eq!(clients[2].grant.max_elements, 8, "a quota by default");
        assert_eq!(
            spec.pools[0].registration,
            crate::model::spec::RegistrationSpec::DEFAULT
        );

        let messages =
            |text: &str| -> Vec<String> { errors_of(text).iter().map(ToString::to_string).collect() };
        let line = BASE.lines().count() + 8;
        for (from, to, expected) in [
            ("\"fw-*\"", "\"fw-[\"", "is not an element-name pattern"),
            (
                "10.0.1.0/24",
                "10.0.1.0/33",
                "`10.0.1.0/33` is not an address prefix",
            ),
            (
                "pools: [web]",
                "pools: [Web]",
                "pool name `Web` is not a valid name",
            ),
            (
                "max_elements: 3",
                "max_elements: 2000",
                "max_elements 2000 is out of range",
            ),
        ] {
            let errors = messages(&format!("{BASE}{}", api.replace(from, to)));
            assert!(
                errors[0].starts_with(&format!("pools.yaml:{line}:")) && errors[0].contains(expected),
                "{from} -> {to}: {errors:?}"
            );
        }
        let operator = messages(&format!(
            "{BASE}{}",
            api.replace("role: operator }", "role: operator, max_elements: 1 }")
        ));
        assert!(
            operator[0].contains("`max_elements` is for element clients"),
            "{operator:?}"
        );

        let caps = base(
            "elements:",
            "registration: { max_priority: 300, max_weight: 4 }\n    elements:",
        );
        let spec = parse(&caps, origin()).expect("valid");
        assert_eq!(
            spec.pools[0].registration,
            crate::model::spec::RegistrationSpec {
                max_priority: 300,
                max_weight: 4
            }
        );
        let errors = messages(&caps.replace("max_weight: 4", "max_weight: 0"));
        assert!(
            errors[0].contains("registration max_weight 0 is out of range"),
            "{errors:?}"
        );
    }

    #[test]
    fn cluster_section() {
        let cluster = "cluster:\n  node: lb-1\n  etcd:\n    endpoints: [http://127.0.0.1:2379, \"http://10.0.0.6:2379/\"]\n  lease_ttl: 5s\n  flow_sync:\n    listen: 10.0.0.1:9472\n    key_file: /etc/vnfpool/cluster.key\n";
        let spec = parse(&format!("{BASE}{cluster}"), origin()).expect("valid");
        let c = spec.cluster.expect("cluster");
        assert_eq!(c.node, "lb-1");
        assert_eq!(c.etcd.endpoints.len(), 2);
        assert_eq!(c.etcd.tls, None);
        assert_eq!(c.prefix, "/vnfpool/", "default prefix");
        assert_eq!(c.lease_ttl, Duration::from_secs(5));
        assert_eq!(c.route_table, 100, "default table");
        assert_eq!(c.flow_sync.listen, "10.0.0.1:9472".parse().expect("addr"));
        assert_eq!(
            parse(BASE, origin()).expect("valid").cluster,
            None,
            "off unless configured"
        );

        let messages =
            |text: &str| -> Vec<String> { errors_of(text).iter().map(ToString::to_string).collect() };
        let line = |n: usize| format!("pools.yaml:{}:", BASE.lines().count() + n);
        let cases = [
            (
                cluster.replace("lb-1", "LB 1"),
                2,
                "node `LB 1` is not a valid name",
            ),
            (
                cluster.replace("http://127.0.0.1:2379", "127.0.0.1:2379"),
                4,
                "endpoint `127.0.0.1:2379`",
            ),
            (
                cluster.replace("http://10.0.0.6", "https://10.0.0.6"),
                4,
                "endpoints mix http:// and https://",
            ),
            (cluster.replace("5s", "2s"), 5, "lease_ttl 2s is out of range"),
            (
                cluster.replace("5s", "3500ms"),
                5,
                "not a whole number of seconds",
            ),
            (
                cluster.replace("    listen: 10.0.0.1:9472\n", ""),
                7,
                "missing key `listen` in cluster.flow_sync",
            ),
            (
                cluster.replace("/etc/vnfpool/cluster.key", "cluster.key"),
                8,
                "key_file `cluster.key` is not an absolute path",
            ),
            (
                format!("{cluster}  route_table: 254\n"),
                9,
                "route_table 254 is the kernel's own",
            ),
            (format!("{cluster}  prefix: vnfpool\n"), 9, "prefix `vnfpool`"),
            (format!("{cluster}  members: 3\n"), 9, "unknown key `members`"),
            (
                cluster.replace("    endpoints", "    ca: /etc/ca.pem\n    endpoints"),
                4,
                "`ca` with http:// endpoints",
            ),
        ];
        for (text, at, what) in cases {
            let got = messages(&format!("{BASE}{text}"));
            assert!(
                got.len() == 1 && got[0].starts_with(&line(at)) && got[0].contains(what),
                "{what}: {got:?}"
            );
        }
        let https = cluster.replace("http://", "https://");
        let got = messages(&format!("{BASE}{https}"));
        assert!(
            got.len() == 1 && got[0].contains("missing key `ca` in cluster.etcd"),
            "{got:?}"
        );
        let with_ca = https.replace(
            "    endpoints",
            "    ca: /etc/ca.pem\n    cert: /etc/c.pem\n    endpoints",
        );
        let got = messages(&format!("{BASE}{with_ca}"));
        assert!(got.len() == 1 && got[0].contains("`cert` alone"), "{got:?}");
        let full = with_ca.replace("    endpoints", "    key: /etc/c.key\n    endpoints");
        let tls = parse(&format!("{BASE}{full}"), origin())
            .expect("valid")
            .cluster
            .expect("cluster")
            .etcd
            .tls;
        assert_eq!(
            tls,
            Some(crate::model::spec::EtcdTls {
                ca: "/etc/ca.pem".into(),
                identity: Some(("/etc/c.pem".into(), "/etc/c.key".into())),
            })
        );
    }

    #[test]
    fn placement_srlg_and_site() {
        let text = edit(
            &format!("{BASE}{SECOND}{PLACEMENT}"),
            "{ name: e1, address: 10.0.1.1 }",
            "{ name: e1, address: 10.0.1.1, failure_domains: { host: h1, rack: r1 }, srlg: [fiber-7, duct-2, fiber-7], site: site-a }",
        );
        let text = edit(
            &text,
            "{ name: e2, address: 10.0.2.2 }",
            "{ name: e2, address: 10.0.2.2, srlg: [\"3\"], site: site-c }",
        );
        let spec = parse(&text, origin()).unwrap_or_else(|errors| panic!("expected valid, got\n{errors}"));
        let expected = PlacementSpec {
            weights: [("host", 100), ("rack", 10), ("srlg", 50)]
                .iter()
                .map(|&(kind, weight)| (kind.to_owned(), weight))
                .collect(),
            costs: sites(),
        };
        assert_eq!(*spec.placement, expected);
        for pool in &spec.pools {
            assert!(
                Arc::ptr_eq(&pool.placement, &spec.placement),
                "pool {} holds the configuration's placement",
                pool.name
            );
        }
        assert_eq!(spec.placement.weight("host"), 100);
        assert_eq!(spec.placement.weight("zone"), 1);
        assert_eq!(spec.placement.cost("site-a", "site-b"), Some(2));
        assert_eq!(spec.placement.cost("site-c", "site-c"), Some(0));
        assert_eq!(spec.placement.cost("site-c", "site-a"), None);

        let [web, api] = &spec.pools[..] else {
            unreachable!("two pools")
        };
        let e1 = &web.elements[0];
        assert_eq!(e1.srlg, ["duct-2", "fiber-7"]);
        assert_eq!(e1.site.as_deref(), Some("site-a"));
        assert_eq!(
            e1.failure_domains,
            [("host", "h1"), ("rack", "r1")]
                .iter()
                .map(|&(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        );
        assert_eq!((web.elements[1].srlg.len(), &web.elements[1].site), (0, &None));
        assert_eq!(api.elements[1].srlg, ["3"]);
        assert_eq!(api.elements[1].site.as_deref(), Some("site-c"));

        // Without a `placement:` section, every pool shares the default one.
        let spec = parse(&format!("{BASE}{SECOND}"), origin()).expect("valid");
        assert_eq!(*spec.placement, PlacementSpec::default());
        assert!(Arc::ptr_eq(&spec.pools[0].placement, &spec.pools[1].placement));
    }

    #[test]
    fn topology_file_through_parse_with() {
        let text = with_topology_file("sites/topology.yaml");
        let read = |path: &Path| {
            if path == Path::new("/etc/vnfpool/sites/topology.yaml") {
                Ok(SITES.to_owned())
            } else {
                Err(io::Error::from(io::ErrorKind::NotFound))
            }
        };
        // Relative to the configuration's directory.
        let spec = parse_with(&text, Path::new("/etc/vnfpool/pools.yaml"), &read)
            .unwrap_or_else(|errors| panic!("expected valid, got\n{errors}"));
        assert_eq!(spec.placement.costs, sites());
        assert_eq!(spec.pools[0].elements[0].site.as_deref(), Some("site-b"));
        // An absolute path as it is.
        let text = with_topology_file("/etc/vnfpool/sites/topology.yaml");
        let spec = parse_with(&text, Path::new("/srv/pools.yaml"), &read)
            .unwrap_or_else(|errors| panic!("expected valid, got\n{errors}"));
        assert_eq!(spec.placement.costs, sites());

        // `parse` reads no file.
        let errors = errors_of(&with_topology_file("topology.yaml"));
        assert_eq!(
            shown(&errors),
            [
                "pools.yaml:13:13: cannot read the topology file topology.yaml: files are read by \
                 `config::load` only; expected a readable file (a relative path is from the configuration's \
                 directory)"
            ]
        );
    }

    /// Errors in the topology file point into it; the configuration's own come first.
    #[test]
    fn topology_file_errors() {
        let cases: Vec<(&str, String, &str, Vec<&str>)> = vec![
            (
                "costs",
                with_topology_file("sites.yaml"),
                "site-a: { site-a: 0, site-b: -2 }\nsite-b: { site-a: 2, site-c: 5 }\nSite-C: {}\n",
                vec![
                    "sites.yaml:1:30: negative cost -2 from `site-a` to `site-b`; expected a cost 0..=1000000",
                    "sites.yaml:2:22: cost from `site-b` to unknown site `site-c`; expected a site that is a key \
                     of the topology: `Site-C`, `site-a`, `site-b`",
                    "sites.yaml:3:1: site name `Site-C` is not a valid name; expected [a-z0-9][a-z0-9_-]*, at \
                     most 32 bytes",
                ],
            ),
            (
                "syntax",
                with_topology_file("sites.yaml"),
                "site-a: { site-b: 2\n",
                vec!["sites.yaml:1:9: unclosed bracket '{'; expected well-formed YAML"],
            ),
            (
                "not a mapping",
                with_topology_file("sites.yaml"),
                "- site-a\n- site-b\n",
                vec![
                    "sites.yaml:1:1: the topology file is a list, not a mapping; expected a mapping of site to \
                     its costs, like site-a: { site-b: 2 }",
                ],
            ),
            (
                "empty",
                with_topology_file("sites.yaml"),
                "# no sites yet\n",
                vec![
                    "sites.yaml:1:1: no topology; expected a mapping of site to its costs, like site-a: { \
                     site-b: 2 }",
                ],
            ),
            (
                "the element's site not in the file",
                with_topology_file("sites.yaml").replace("site: site-b", "site: site-d"),
                SITES,
                vec![
                    "pools.yaml:10:27: unknown site `site-d`; expected a site of placement.topology: `site-a`, \
                     `site-b`, `site-c`",
                ],
            ),
            (
                "errors in both files",
                edit(&with_topology_file("sites.yaml"), "rise: 2", "rise: 0"),
                "site-a: { site-b: 1000001 }\nsite-b: {}\n",
                vec![
                    "pools.yaml:8:74: rise 0 is out of range; expected 1..=100",
                    "sites.yaml:1:19: cost 1000001 is out of range; expected 0..=1000000",
                ],
            ),
        ];
        for (what, text, file, expected) in cases {
            let read = |path: &Path| {
                assert_eq!(path, Path::new("sites.yaml"), "{what}");
                Ok(file.to_owned())
            };
            match parse_with(&text, origin(), &read) {
                Ok(_) => panic!("{what}: parsed without error"),
                Err(ConfigErrors(errors)) => assert_eq!(shown(&errors), expected, "{what}"),
            }
        }
    }

    #[test]
    fn topology_file_on_disk() {
        let dir = Files::new("topology");
        let config = dir.write("pools.yaml", &with_topology_file("topology.yaml"));
        dir.write("topology.yaml", SITES);
        let spec = load(&config).unwrap_or_else(|errors| panic!("expected valid, got\n{errors}"));
        assert_eq!(spec.placement.costs, sites());

        // Read again on every load (as a reload does), and its errors name it.
        let topology = dir.write(
            "topology.yaml",
            "site-a: { site-a: 0, site-b: 2.5 }\nsite-b: {}\n",
        );
        let ConfigErrors(errors) = load(&config).expect_err("a fractional cost");
        assert_eq!(
            shown(&errors),
            [format!(
                "{}:1:30: not an integer; expected an integer",
                topology.display()
            )]
        );
        assert_eq!(errors[0].path(), topology);

        // A missing file: one error at the path in the configuration; the element's site is not
        // checked against a topology that could not be read.
        std::fs::remove_file(&topology).expect("removing the topology file");
        let ConfigErrors(errors) = load(&config).expect_err("a missing topology file");
        let [error] = &errors[..] else {
            panic!("one error expected, got {errors:?}")
        };
        assert!(
            matches!(error, ConfigError::ReadTopology { file, source, .. }
                if *file == topology && source.kind() == io::ErrorKind::NotFound),
            "{error:?}"
        );
        assert_eq!(error.path(), config);
        assert_eq!(error.position(), Some(Position { line: 13, column: 13 }));
        assert_eq!(
            error.to_string(),
            format!(
                "{}:13:13: cannot read the topology file {}: {}; expected a readable file (a relative path \
                 is from the configuration's directory)",
                config.display(),
                topology.display(),
                io::Error::from_raw_os_error(2)
            )
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in any::<String>()) {
            let _ = parse(&text, origin());
        }

        #[test]
        fn parse_never_panics_on_yaml_like_text(text in "[a-z0-9:{}\\[\\],.\"' \n#&*!|>-]{0,300}") {
            let _ = parse(&text, origin());
        }

        /// Damaged versions of a valid file reach the semantic checks, not only the parser.
        #[test]
        fn parse_never_panics_on_damaged_example(
            at in 0..ISSUE_EXAMPLE.len(),
            len in 0usize..20,
            insert in "[a-z0-9:{}\\[\\], .\n-]{0,12}",
        ) {
            let mut text = ISSUE_EXAMPLE.to_owned();
            let end = (at + len).min(text.len());
            text.replace_range(at..end, &insert);
            let _ = parse(&text, origin());
        }

        /// The same for the placement section, SRLGs and sites.
        #[test]
        fn parse_never_panics_on_damaged_placement(
            at in 0..BASE.len() + PLACEMENT.len(),
            len in 0usize..20,
            insert in "[a-z0-9:{}\\[\\], .\n~-]{0,12}",
        ) {
            let mut text = edit(
                &format!("{BASE}{PLACEMENT}"),
                "name: e1,",
                "name: e1, srlg: [a, b], site: site-a, failure_domains: { host: h1 },",
            );
            let at = at.min(text.len());
            let end = (at + len).min(text.len());
            text.replace_range(at..end, &insert);
            let _ = parse(&text, origin());
        }
    }
}
