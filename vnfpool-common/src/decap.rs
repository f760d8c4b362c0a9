//! The element-side decapsulation program (`vnfpool-decap`, XDP program
//! [`PROGRAM`]): its maps, their keys and values, its counters and where `vnfpool decap` pins
//! them.
//!
//! A load balancer that reaches an element on another subnet sends it each VIP packet
//! encapsulated (issue #16): IPv4 in IPv4 (outer protocol 4), IPv6 in IPv6 (outer next header
//! 41) or GUE variant 1 (outer UDP to a configured port, whose payload is the inner IP packet
//! itself). The element's kernel may have no tunnel modules, so this program strips the outer
//! headers in XDP when the inner destination is one of the element's VIPs ([`VIPS`]), and
//! passes everything else untouched.
//!
//! The maps are separate from the load balancer's (`crate::maps`), with names of their own
//! (`VNFD_…`): the two programs never run on the same interface, and `maps::ALL` lists only the
//! load balancer's.

use crate::abi_type;

/// VIPs whose encapsulated packets are stripped, `HASH` [`VipKey`] → [`VipEntry`]. Written by
/// `vnfpool decap`.
pub const VIPS: &str = "VNFD_VIPS";
/// The GUE destination ports, `ARRAY` of one [`GuePorts`]. Written by `vnfpool decap`.
pub const GUE_PORTS: &str = "VNFD_GUE_PORTS";
/// What the program did, `PERCPU_ARRAY` of [`crate::stats::Counters`] indexed by [`Counter`].
/// Written by the program.
pub const STATS: &str = "VNFD_STATS";

/// Every map of the program.
pub const ALL: &[&str] = &[VIPS, GUE_PORTS, STATS];

const _: () = {
    let mut i = 0;
    while i < ALL.len() {
        assert!(
            ALL[i].len() <= crate::maps::MAX_NAME_LEN,
            "map name longer than the kernel keeps"
        );
        i += 1;
    }
};

/// Name of the XDP program (the `#[xdp]` function) in the `vnfpool-decap` object.
pub const PROGRAM: &str = "vnfpool_decap";

/// Default root of the pins: `vnfpool decap` pins under `{PIN_ROOT}/{interface}/` the maps (by
/// their names, [`ALL`]) and the XDP link ([`LINK_PIN`]). The link pin keeps the program
/// attached after the command exits; removing it (`vnfpool decap --detach`) detaches it.
pub const PIN_ROOT: &str = "/sys/fs/bpf/vnfpool-decap";

/// File name of the XDP link's pin in an interface's pin directory.
pub const LINK_PIN: &str = "link";

/// Capacity of [`VIPS`].
pub const MAX_VIPS: u32 = 1024;

/// Most GUE destination ports (the entries of [`GuePorts::ports`]).
pub const MAX_GUE_PORTS: usize = 8;

/// Key of [`VIPS`]: 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VipKey {
    /// The VIP's bytes in network order, IPv4 as `::ffff:a.b.c.d` (see [`crate::addr`]).
    /// Bytes rather than [`crate::addr::Addr`]'s words, so that `bpftool map dump` prints the
    /// address readably (`… 255, 255, 10, 200, 1, 100`).
    pub addr: [u8; 16],
}
abi_type!(VipKey, 16);

impl VipKey {
    /// The key of a map address.
    #[inline(always)]
    #[must_use]
    pub const fn of(addr: &crate::addr::Addr) -> Self {
        Self {
            addr: crate::addr::octets(addr),
        }
    }
}

/// [`VipEntry::flags`]: strip IPv4-in-IPv4 and IPv6-in-IPv6 packets to this VIP.
pub const FLAG_IP_IN_IP: u32 = 1;
/// [`VipEntry::flags`]: strip GUE packets (to a port of [`GUE_PORTS`]) to this VIP.
pub const FLAG_GUE: u32 = 2;

/// Value of [`VIPS`]: 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipEntry {
    /// `FLAG_*` bits: the encapsulations stripped for this VIP (`vnfpool decap` sets both). A
    /// packet of an encapsulation whose flag is clear is passed untouched, as one to another
    /// address.
    pub flags: u32,
}
abi_type!(VipEntry, 4);

/// The one value of [`GUE_PORTS`]: 16 bytes.
///
/// One array value rather than a hash, so that a UDP packet costs one inlined array access and
/// a few comparisons, and so that `vnfpool decap` replaces the whole set with one write (a
/// packet racing that write may see some old and some new ports, never a port in neither set).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GuePorts {
    /// UDP destination ports in *host* byte order (so that bpftool prints them as written on
    /// the command line); 0 marks an unused entry (no datagram is sent to port 0).
    pub ports: [u16; MAX_GUE_PORTS],
}
abi_type!(GuePorts, 16);

/// What the program counts, the index into [`STATS`]. Frames that are not encapsulated (not
/// IPv4 protocol 4, IPv6 next header 41, or UDP to a configured GUE port) are not counted.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Encapsulated frames stripped and passed on as their inner packet.
    Decapsulated = 0,
    /// Well-formed encapsulated frames whose inner destination is not a configured VIP (or is
    /// one that does not take this encapsulation): passed untouched.
    NotForUs = 1,
    /// Encapsulated frames with an inconsistent outer or inner header (lengths that disagree,
    /// a header cut short, an outer IPv4 fragment, an inner version of the other family…):
    /// passed untouched, for the kernel to drop.
    Malformed = 2,
}

/// Counters there are.
pub const COUNTERS: u32 = 3;
/// Entries of [`STATS`]: room for counters to come without changing the map's layout.
pub const COUNTER_ENTRIES: u32 = 8;
const _: () = assert!(COUNTERS <= COUNTER_ENTRIES);

impl Counter {
    /// Every counter, by index.
    pub const ALL: [Counter; COUNTERS as usize] =
        [Counter::Decapsulated, Counter::NotForUs, Counter::Malformed];

    /// Stable name for output and documentation.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Decapsulated => "decapsulated",
            Counter::NotForUs => "not_for_us",
            Counter::Malformed => "malformed",
        }
    }
}
