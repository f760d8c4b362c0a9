//! The VIP table (`VNF_VIPS`) and its pre-filter (`VNF_VIP_FILTER`).
//!
//! A packet is a VIP packet when its destination address, destination port and L4 protocol
//! match a [`VipKey`]. The program first reads the pre-filter (`VNF_VIP_FILTER`), a plain
//! array indexed by [`filter_index`], which costs one inlined array access:
//! - 0: no VIP folds here, the packet is not for a VIP (the common case for other traffic,
//!   which so stays within a few nanoseconds of a bare `XDP_PASS`);
//! - [`filter_entry`]: exactly one VIP folds here; the value holds its port, protocol and
//!   pool, and the pool's entry in `VNF_POOLS` (read next anyway) holds its address
//!   ([`crate::pool::Pool::vip`]): the program compares those with the packet, so a VIP packet
//!   costs no hash lookup and no cache line besides the filter's and the pool's. A pool
//!   therefore has one address (any number of ports);
//! - [`FILTER_COLLISION`]: several VIPs fold here, the program looks the packet up in `VNF_VIPS`.
//!
//! Besides one entry per (VIP, port), `VNF_VIPS` holds one *address entry* per (VIP, protocol)
//! with port 0 and [`FLAG_ADDRESS`]: it lets the program recognise IP fragments and ICMP errors
//! that concern a VIP even though they carry no (outer) port. Address entries are not in the
//! pre-filter.
//!
//! Guard entries ([`FLAG_HEARTBEAT`]) put the heartbeat listener's address and port in the same
//! table, so that the filter of heartbeat sources costs other traffic nothing.

use crate::{abi_type, addr::Addr};

/// `IPPROTO_TCP`.
pub const PROTO_TCP: u8 = 6;
/// `IPPROTO_UDP`.
pub const PROTO_UDP: u8 = 17;

/// Key of `VNF_VIPS`: 20 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VipKey {
    /// Destination address (IPv4-mapped for IPv4, see [`crate::addr`]). The form tells the
    /// family: the data plane refuses IPv6 packets that carry an IPv4-mapped address.
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

/// This entry guards the heartbeat listener (`api.heartbeat_listen`) at this address, port and
/// protocol (UDP): a datagram to it passes only when its source address is in `VNF_HB_PEERS`,
/// and is dropped otherwise, before the socket sees it. A guard's pre-filter entry is always
/// [`FILTER_COLLISION`], so that only packets folding there pay for the hash lookup; `pool` is 0.
pub const FLAG_HEARTBEAT: u32 = 2;

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

/// Pre-filter value naming the one VIP of its entry: port (bits 0-15, network order as read),
/// protocol (bits 16-23) and pool (bits 24-31). Never 0 (the protocol is not 0) and never
/// [`FILTER_COLLISION`] (pools are below 256). The pool's address must already be in its
/// `VNF_POOLS` entry when this value is stored, and stay there while any entry names the pool.
#[inline(always)]
#[must_use]
pub const fn filter_entry(pool: u32, port_be: u16, proto: u8) -> u32 {
    (port_be as u32) | ((proto as u32) << 16) | (pool << 24)
}

/// The bits of a [`filter_entry`] value that hold port and protocol.
pub const FILTER_PORT_PROTO: u32 = 0x00FF_FFFF;

/// Port and protocol as a [`filter_entry`] value holds them (under [`FILTER_PORT_PROTO`]), so
/// that a packet's are compared in one comparison.
#[inline(always)]
#[must_use]
pub const fn filter_port_proto(port_be: u16, proto: u8) -> u32 {
    (port_be as u32) | ((proto as u32) << 16)
}

/// The pool of a [`filter_entry`] value.
#[inline(always)]
#[must_use]
pub const fn filter_pool(value: u32) -> u32 {
    value >> 24
}

const _: () = assert!(crate::maps::MAX_POOLS <= 256);

/// Index into `VNF_VIP_FILTER` for a destination: a 16-bit fold of address, port and protocol.
#[inline(always)]
#[must_use]
pub const fn filter_index(addr: &Addr, port_be: u16, proto: u8) -> u32 {
    let x = addr[0] ^ addr[1] ^ addr[2] ^ addr[3];
    let x = x ^ (x >> 16) ^ (port_be as u32) ^ ((proto as u32) << 8);
    x & (crate::maps::VIP_FILTER_SIZE - 1)
}
