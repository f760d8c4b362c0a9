//! The element-side decapsulation program (`vnfpool decap`): loading it, writing its VIPs and
//! GUE ports, attaching it with pinned maps and link, and detaching it. The ABI is
//! `vnfpool_common::decap`; the command around this is `crate::decap`.
//!
//! Pins live in one directory per interface, `{root}/{interface}/` (the maps by name, the XDP
//! link as `link`), so that the program stays attached when the command exits, a second
//! `vnfpool decap` on the interface rewrites the running program's maps instead of attaching
//! another, and `--detach` finds what to remove.

use std::{
    borrow::{Borrow, BorrowMut},
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray},
    programs::{
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
    },
};
use vnfpool_common::{
    addr::Addr,
    decap::{self, Counter, GuePorts, VipEntry, VipKey},
    stats::Counters,
};

/// The decapsulation object built by `build.rs` from `vnfpool-ebpf` (`src/decap.rs`).
pub static DECAP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vnfpool-decap"));

/// Errors of the decapsulation program's loader.
#[derive(Debug, thiserror::Error)]
pub enum DecapError {
    /// The interface does not exist in this network namespace.
    #[error("no interface named {interface:?} in this network namespace (expected one that `ip link` lists)")]
    UnknownInterface { interface: String },
    /// `--detach` where nothing is attached.
    #[error(
        "nothing to detach on {interface}: no vnfpool decap link is pinned at {} (expected one made by `vnfpool decap --interface {interface} --vip …`)",
        path.display()
    )]
    NotAttached { interface: String, path: PathBuf },
    /// More GUE ports than the program's table holds.
    #[error("{count} GUE ports given, at most {max} are supported", max = decap::MAX_GUE_PORTS)]
    TooManyPorts { count: usize },
    /// More VIPs than the program's table holds.
    #[error("{count} VIPs given, at most {max} are supported", max = decap::MAX_VIPS)]
    TooManyVips { count: usize },
    /// The object could not be loaded (verifier, missing privilege).
    #[error("loading the decapsulation program")]
    Load {
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// A map is missing, of another kind, or refused an operation.
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    /// A pin or the pin directory could not be made, read or removed.
    #[error("pin {}", path.display())]
    Pin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A pinned map does not have the layout this build expects.
    #[error(
        "pinned map {} has key/value/entries {found:?}, this build expects {expected:?}: run `vnfpool decap --interface … --detach` with the build that attached it, then attach again",
        path.display()
    )]
    PinMismatch {
        path: PathBuf,
        found: (u32, u32, u32),
        expected: (u32, u32, u32),
    },
    /// The program could not be attached in either mode.
    #[error("attaching to {interface} (native mode: {native}; generic mode)")]
    Attach {
        interface: String,
        native: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// The program is missing from the object or cannot be loaded.
    #[error("program {}", decap::PROGRAM)]
    Program {
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// The XDP link could not be pinned, read or removed.
    #[error("XDP link of {interface}: {what}")]
    Link { interface: String, what: String },
}

/// Result of this module.
pub type Result<T, E = DecapError> = std::result::Result<T, E>;

/// What [`attach`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    /// Attached the program, in this mode (`"native"` or `"generic"`).
    New { mode: &'static str },
    /// The program was attached already: its maps were rewritten.
    Updated,
}

/// What the program strips.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecapConfig {
    /// Inner destinations to strip for (map form, IPv4-mapped for IPv4).
    pub vips: BTreeSet<Addr>,
    /// GUE destination ports (none: GUE is not stripped).
    pub gue_ports: BTreeSet<u16>,
}

impl DecapConfig {
    /// The value of `VNFD_GUE_PORTS`.
    pub fn gue_value(&self) -> Result<GuePorts> {
        if self.gue_ports.len() > decap::MAX_GUE_PORTS {
            return Err(DecapError::TooManyPorts {
                count: self.gue_ports.len(),
            });
        }
        let mut value = GuePorts::default();
        for (slot, port) in value.ports.iter_mut().zip(&self.gue_ports) {
            *slot = *port;
        }
        Ok(value)
    }
}

/// The decapsulation object, loaded (the program not yet attached).
pub struct DecapProgram {
    ebpf: Ebpf,
}

impl DecapProgram {
    /// Loads the object; with `pin_dir`, its maps are pinned there (an existing pin of the same
    /// name is reused: check it with [`check_pins`] first). The program is loaded into the
    /// kernel (verified) too.
    pub fn load(pin_dir: Option<&Path>) -> Result<Self> {
        let mut loader = EbpfLoader::new();
        let paths: Vec<(&'static str, PathBuf)> = pin_dir
            .map(|dir| decap::ALL.iter().map(|n| (*n, dir.join(n))).collect())
            .unwrap_or_default();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(DECAP_OBJECT).map_err(|source| DecapError::Load {
            source: Box::new(source),
        })?;
        program(&mut ebpf)?.load().map_err(|source| DecapError::Program {
            source: Box::new(source),
        })?;
        Ok(Self { ebpf })
    }

    /// The loaded object (to test-run the program).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Makes `config` what the program strips.
    pub fn configure(&mut self, config: &DecapConfig) -> Result<()> {
        let ports = config.gue_value()?;
        let mut vips: HashMap<&mut MapData, VipKey, VipEntry> =
            typed(self.ebpf.map_mut(decap::VIPS), decap::VIPS)?;
        write_vips(&mut vips, &config.vips)?;
        let mut gue: Array<&mut MapData, GuePorts> =
            typed(self.ebpf.map_mut(decap::GUE_PORTS), decap::GUE_PORTS)?;
        gue.set(0, ports, 0).map_err(map_err(decap::GUE_PORTS))
    }

    /// The counters, summed over CPUs, by [`Counter`].
    pub fn counters(&self) -> Result<[Counters; decap::COUNTERS as usize]> {
        let stats: PerCpuArray<&MapData, Counters> = typed(self.ebpf.map(decap::STATS), decap::STATS)?;
        read_counters(&stats)
    }
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    ebpf.program_mut(decap::PROGRAM)
        .ok_or(aya::programs::ProgramError::NotLoaded)
        .and_then(TryInto::try_into)
        .map_err(|source| DecapError::Program {
            source: Box::new(source),
        })
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> DecapError {
    move |source| DecapError::Map { name, source }
}

fn typed<M, T>(map: Option<M>, name: &'static str) -> Result<T>
where
    T: TryFrom<M, Error = MapError>,
{
    let map = map.ok_or_else(|| DecapError::Map {
        name,
        source: MapError::InvalidName {
            name: name.to_owned(),
        },
    })?;
    T::try_from(map).map_err(map_err(name))
}

/// Makes the VIP map hold exactly `want`: new VIPs first, then the old ones that go, so that a
/// VIP in both sets is never missing, not even between two writes.
fn write_vips<T: BorrowMut<MapData>>(
    map: &mut HashMap<T, VipKey, VipEntry>,
    want: &BTreeSet<Addr>,
) -> Result<()> {
    if want.len() > decap::MAX_VIPS as usize {
        return Err(DecapError::TooManyVips { count: want.len() });
    }
    let entry = VipEntry {
        flags: decap::FLAG_IP_IN_IP | decap::FLAG_GUE,
    };
    let keys: BTreeSet<[u8; 16]> = want.iter().map(|a| VipKey::of(a).addr).collect();
    for addr in &keys {
        map.insert(VipKey { addr: *addr }, entry, 0)
            .map_err(map_err(decap::VIPS))?;
    }
    let stale: Vec<VipKey> = map
        .keys()
        .filter_map(std::result::Result::ok)
        .filter(|k| !keys.contains(&k.addr))
        .collect();
    for k in stale {
        match map.remove(&k) {
            // Gone already (another writer): what we wanted.
            Err(MapError::KeyNotFound) | Ok(()) => {}
            Err(source) => {
                return Err(DecapError::Map {
                    name: decap::VIPS,
                    source,
                });
            }
        }
    }
    Ok(())
}

fn read_counters<T: Borrow<MapData>>(
    stats: &PerCpuArray<T, Counters>,
) -> Result<[Counters; decap::COUNTERS as usize]> {
    let mut out = [Counters::default(); decap::COUNTERS as usize];
    for (c, slot) in Counter::ALL.iter().zip(&mut out) {
        let values = stats.get(&(*c as u32), 0).map_err(map_err(decap::STATS))?;
        *slot = values.iter().fold(Counters::default(), |a, b| a.plus(*b));
    }
    Ok(out)
}

/// Key size, value size and entries of every map, as this build creates them.
#[must_use]
pub fn layout() -> [(&'static str, (u32, u32, u32)); 3] {
    let size = |n: usize| u32::try_from(n).expect("small type");
    [
        (
            decap::VIPS,
            (
                size(size_of::<VipKey>()),
                size(size_of::<VipEntry>()),
                decap::MAX_VIPS,
            ),
        ),
        (decap::GUE_PORTS, (4, size(size_of::<GuePorts>()), 1)),
        (
            decap::STATS,
            (4, size(size_of::<Counters>()), decap::COUNTER_ENTRIES),
        ),
    ]
}

/// Checks the maps pinned in `dir` against [`layout`] (aya would reuse a pin of another layout
/// without a word).
pub fn check_pins(dir: &Path) -> Result<()> {
    for (name, expected) in layout() {
        let path = dir.join(name);
        let found = match super::bpf::pinned_layout(&path) {
            Ok(Some(found)) => found,
            Ok(None) => continue,
            Err(source) => return Err(DecapError::Pin { path, source }),
        };
        if found != expected {
            return Err(DecapError::PinMismatch {
                path,
                found,
                expected,
            });
        }
    }
    Ok(())
}

/// The pin directory of `interface` under `root`.
#[must_use]
pub fn pin_dir(root: &Path, interface: &str) -> PathBuf {
    root.join(interface)
}

/// Attaches the program to `interface` (in the calling thread's network namespace) with
/// `config`, natively when the driver can, generically otherwise, its maps and link pinned
/// under `{root}/{interface}/`. When it is attached there already, rewrites its maps instead
/// (no moment without the program; a VIP in both the old and the new set is never missing).
pub fn attach(root: &Path, interface: &str, config: &DecapConfig) -> Result<Attached> {
    let ifindex = nix::net::if_::if_nametoindex(interface).map_err(|_| DecapError::UnknownInterface {
        interface: interface.to_owned(),
    })?;
    config.gue_value()?;
    let dir = pin_dir(root, interface);
    let link_pin = dir.join(decap::LINK_PIN);
    if link_pin.exists() {
        check_pins(&dir)?;
        update(&dir, config)?;
        return Ok(Attached::Updated);
    }
    std::fs::create_dir_all(&dir).map_err(|source| DecapError::Pin {
        path: dir.clone(),
        source,
    })?;
    // Maps pinned without a link are a failed attach's leftovers: start afresh.
    let guard = PinGuard { dir: dir.clone() };
    guard.remove_maps()?;
    let mut prog = DecapProgram::load(Some(&dir))?;
    // The maps are written before the program is attached: its first packet sees them.
    prog.configure(config)?;
    let xdp = program(&mut prog.ebpf)?;
    let (link, mode) = match xdp.attach_to_if_index(ifindex, XdpMode::Driver) {
        Ok(id) => (id, "native"),
        Err(native) => match xdp.attach_to_if_index(ifindex, XdpMode::Skb) {
            Ok(id) => (id, "generic"),
            Err(source) => {
                return Err(DecapError::Attach {
                    interface: interface.to_owned(),
                    native: native.to_string(),
                    source: Box::new(source),
                });
            }
        },
    };
    let link_err = |what: String| DecapError::Link {
        interface: interface.to_owned(),
        what,
    };
    let link = xdp.take_link(link).map_err(|e| link_err(e.to_string()))?;
    let link = FdLink::try_from(link).map_err(|e| link_err(e.to_string()))?;
    link.pin(&link_pin).map_err(|e| link_err(e.to_string()))?;
    guard.keep();
    Ok(Attached::New { mode })
}

/// Rewrites the pinned maps in `dir` with `config`.
fn update(dir: &Path, config: &DecapConfig) -> Result<()> {
    let ports = config.gue_value()?;
    let mut vips: HashMap<MapData, VipKey, VipEntry> = pinned(dir, decap::VIPS)?;
    write_vips(&mut vips, &config.vips)?;
    let mut gue: Array<MapData, GuePorts> = pinned(dir, decap::GUE_PORTS)?;
    gue.set(0, ports, 0).map_err(map_err(decap::GUE_PORTS))
}

fn pinned<T>(dir: &Path, name: &'static str) -> Result<T>
where
    T: TryFrom<Map, Error = MapError>,
{
    let data = MapData::from_pin(dir.join(name)).map_err(map_err(name))?;
    let map = Map::from_map_data(data).map_err(map_err(name))?;
    T::try_from(map).map_err(map_err(name))
}

/// The counters of the program pinned for `interface` under `root`, summed over CPUs.
pub fn pinned_counters(root: &Path, interface: &str) -> Result<[Counters; decap::COUNTERS as usize]> {
    let stats: PerCpuArray<MapData, Counters> = pinned(&pin_dir(root, interface), decap::STATS)?;
    read_counters(&stats)
}

/// Detaches the program from `interface` and removes its pins (also when the interface is
/// gone: its link is then defunct, and only the pins are left).
pub fn detach(root: &Path, interface: &str) -> Result<()> {
    let dir = pin_dir(root, interface);
    let link_pin = dir.join(decap::LINK_PIN);
    if !link_pin.exists() {
        return Err(DecapError::NotAttached {
            interface: interface.to_owned(),
            path: link_pin,
        });
    }
    let link_err = |what: String| DecapError::Link {
        interface: interface.to_owned(),
        what,
    };
    let link = PinnedLink::from_pin(&link_pin).map_err(|e| link_err(e.to_string()))?;
    // Unpinned and then closed here, the link has no holder left: the kernel detaches it.
    drop(link.unpin().map_err(|e| link_err(e.to_string()))?);
    let guard = PinGuard { dir };
    guard.remove_maps()?;
    guard.remove_dir()
}

/// An interface's pin directory, emptied and removed on drop (a failed attach leaves nothing).
struct PinGuard {
    dir: PathBuf,
}

impl PinGuard {
    fn remove_maps(&self) -> Result<()> {
        for name in decap::ALL {
            let path = self.dir.join(name);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(DecapError::Pin { path, source }),
                Ok(()) => {}
            }
        }
        Ok(())
    }

    /// Keeps the directory and its pins: the attach succeeded.
    fn keep(mut self) {
        self.dir = PathBuf::new();
    }

    /// Removes the (emptied) directory. The root above it stays, empty or not: it may be
    /// shared, or made by someone else (`--pin-dir`).
    fn remove_dir(mut self) -> Result<()> {
        let dir = std::mem::take(&mut self.dir);
        std::fs::remove_dir(&dir).map_err(|source| DecapError::Pin { path: dir, source })
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        if self.dir.as_os_str().is_empty() {
            return;
        }
        // Best effort on a path that already failed; the link pin is made last, so there is none.
        let _ = self.remove_maps();
        let _ = std::fs::remove_dir(&self.dir);
    }
}
