//! The VIP table (`VNF_VIPS`) and its pre-filter (`VNF_VIP_FILTER`).
//!
//! A packet is a VIP packet when its destination address, destination port and L4 protocol
//! match a [`VipKey`]. The program first reads the pre-filter (`VNF_VIP_FILTER`), a plain
//! array indexed by [`filter_index`], which costs one inlined array access:
//! - 0: no VIP folds here, the packet is not for a VIP (the common case for other traffic,
//!   which so stays within a few nanoseconds of a bare `XDP_PASS`);
//! - `1..=MAX_VIP_ENTRIES`: exactly one VIP folds here, held at index `value - 1` of
//!   `VNF_VIP_DIRECT`; the program compares it with the packet (no hash lookup);
//! - [`FILTER_COLLISION`]: several VIPs fold here, the program looks the packet up in `VNF_VIPS`.
//!
//! Besides one entry per (VIP, port), `VNF_VIPS` holds one *address entry* per (VIP, protocol)
//! with port 0 and [`FLAG_ADDRESS`]: it lets the program recognise IP fragments and ICMP errors
//! that concern a VIP even though they carry no (outer) port. Address entries are not in the
//! pre-filter.

use crate::{abi_type, addr::Addr};

/// `IPPROTO_TCP`.
pub const PROTO_TCP: u8 = 6;
/// `IPPROTO_UDP`.
pub const PROTO_UDP: u8 = 17;

/// Key of `VNF_VIPS`: 20 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VipKey {
    /// Destination address (IPv4-mapped for IPv4), see [`crate::addr`].
    pub addr: Addr,
    /// Destination port in network byte order, as read from the L4 header; 0 for an address entry.
    pub port_be: u16,
    /// L4 protocol ([`PROTO_TCP`] or [`PROTO_UDP`]).
    pub proto: u8,
    /// Always 0.
    pub _pad: u8,
}
abi_type!(VipKey, 20);

/// This entry is an address entry (port 0): it marks the address as a VIP for fragments and
/// ICMP errors, and routes no traffic by itself.
pub const FLAG_ADDRESS: u32 = 1;

/// Value of `VNF_VIPS`: 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipMeta {
    /// Pool index, below [`crate::maps::MAX_POOLS`].
    pub pool: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
}
abi_type!(VipMeta, 8);

/// Pre-filter value: several VIPs fold into this entry; look the packet up in `VNF_VIPS`.
pub const FILTER_COLLISION: u32 = u32::MAX;

/// Value of `VNF_VIP_DIRECT`: the one VIP of a pre-filter entry, with its pool. 24 bytes.
/// Written before the pre-filter entry points at it, and not rewritten until a grace period
/// after nothing points at it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipDirect {
    /// The VIP.
    pub key: VipKey,
    /// Its pool.
    pub pool: u32,
}
abi_type!(VipDirect, 24);

/// Index into `VNF_VIP_FILTER` for a destination: a 16-bit fold of address, port and protocol.
#[inline(always)]
#[must_use]
pub const fn filter_index(addr: &Addr, port_be: u16, proto: u8) -> u32 {
    let x = addr[0] ^ addr[1] ^ addr[2] ^ addr[3];
    let x = x ^ (x >> 16) ^ (port_be as u32) ^ ((proto as u32) << 8);
    x & (crate::maps::VIP_FILTER_SIZE - 1)
}
