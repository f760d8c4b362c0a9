//! The tunnel table (`VNF_TUNNELS`): how a packet reaches an element on another subnet.
//!
//! A pool's `forwarding` mode decides how the program sends a VIP packet to an element:
//! - [`ENCAP_NONE`], L2 direct server return: only the MACs change (the element shares an L2
//!   segment with the host);
//! - [`ENCAP_IPIP`]: IPv4-in-IPv4 (protocol 4) for an IPv4 VIP, IPv6-in-IPv6 (next header 41)
//!   for an IPv6 VIP;
//! - [`ENCAP_GUE`]: the same inner packet in UDP to a configured port, GUE variant 1 (no GUE
//!   header: the payload's first nibble, 4 or 6, is the inner IP version);
//! - [`ENCAP_VXLAN`]: UDP to port 4789, a VXLAN header with the pool's VNI, then the inner
//!   packet behind an Ethernet header to the element's VXLAN device (RFC 7348), so that the
//!   element's kernel takes it with its own `vxlan` device.
//!
//! The outer destination is the element's address; the outer source is this node's address
//! toward the element (the route's preferred source), so that ICMP errors from the path —
//! "fragmentation needed" among them — come back to this node. Flow entropy for the paths
//! and the element's receive queues is in the UDP source port (GUE) and in the IPv6 flow label,
//! both taken from the flow hash.
//!
//! The entry of an element sits at the element's own index ([`crate::element::elem_index`]),
//! so it is part of the slot's mapping and switches with it.

use crate::{abi_type, addr::Addr};

/// L2 direct server return: no encapsulation.
pub const ENCAP_NONE: u8 = 0;
/// IPv4-in-IPv4 or IPv6-in-IPv6, by the VIP's family.
pub const ENCAP_IPIP: u8 = 1;
/// GUE variant 1: the inner IP packet directly in UDP.
pub const ENCAP_GUE: u8 = 2;
/// VXLAN: UDP, a VXLAN header, an inner Ethernet header, the inner IP packet.
pub const ENCAP_VXLAN: u8 = 3;

/// The IANA VXLAN port.
pub const VXLAN_PORT: u16 = 4789;
/// VXLAN header length.
pub const VXLAN_HLEN: usize = 8;
/// The VXLAN header's first word: the "VNI present" flag (RFC 7348), host order.
pub const VXLAN_FLAGS: u32 = 0x0800_0000;
/// Ethernet header length (the inner one of VXLAN).
pub const ETH_HLEN: usize = 14;

/// IP protocol number of IPv4-in-IP (RFC 2003).
pub const IPPROTO_IPIP: u8 = 4;
/// IP protocol number of IPv6-in-IP (RFC 2473).
pub const IPPROTO_IPV6: u8 = 41;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// TTL or hop limit of the outer header.
pub const OUTER_TTL: u8 = 64;
/// IPv4 header length without options.
pub const IPV4_HLEN: usize = 20;
/// IPv6 header length.
pub const IPV6_HLEN: usize = 40;
/// UDP header length.
pub const UDP_HLEN: usize = 8;
/// The outer IPv4 header's "don't fragment" flag: the outer packet is never fragmented on the
/// way; what would need it is answered with ICMP at the load balancer instead.
pub const IPV4_DF: u16 = 0x4000;

/// Bytes a mode adds in front of the inner IP packet (outer IP; UDP for GUE; UDP, VXLAN and
/// the inner Ethernet header for VXLAN).
#[inline(always)]
#[must_use]
pub const fn overhead(encap: u8, v4: bool) -> usize {
    let ip = if v4 { IPV4_HLEN } else { IPV6_HLEN };
    match encap {
        ENCAP_GUE => ip + UDP_HLEN,
        ENCAP_VXLAN => ip + UDP_HLEN + VXLAN_HLEN + ETH_HLEN,
        _ => ip,
    }
}

/// Whether a mode's outer header is UDP.
#[inline(always)]
#[must_use]
pub const fn over_udp(encap: u8) -> bool {
    encap == ENCAP_GUE || encap == ENCAP_VXLAN
}

/// Value of `VNF_TUNNELS`, at the element's index in `VNF_ELEMS`: the outer headers of a
/// tunnelled element. 64 bytes, one cache line (the mmap-able array starts on a page), of
/// which a packet reads the first 40.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Tunnel {
    /// Outer destination: the element's address.
    pub dst: Addr,
    /// Outer source: this node's address toward the element.
    pub src: Addr,
    /// IPv4: the ones'-complement sum, not folded, of the outer header's 16-bit words that do
    /// not change from packet to packet ([`ipv4_base_sum`]); the program adds the total length
    /// and folds. IPv6: 0.
    pub csum_base: u32,
    /// The largest outer IP packet the path to the element carries (the route's MTU). A packet
    /// whose encapsulated form would be larger is answered with ICMP instead
    /// ([`crate::stats::Reason::TooBig`]).
    pub mtu: u16,
    /// GUE, VXLAN: the outer UDP destination port, network order. Otherwise 0.
    pub port_be: u16,
    /// VXLAN: the header's second word, the VNI shifted left by 8, network order. Otherwise 0.
    pub vni_be: u32,
    /// VXLAN: the inner destination MAC, the element's VXLAN device's. Otherwise 0.
    pub inner_mac: [u8; 6],
    /// Always 0.
    pub _pad: [u8; 14],
}
abi_type!(Tunnel, 64);

/// The sum of the outer IPv4 header's constant 16-bit words: version and header length, DF,
/// TTL and protocol, source and destination (identification 0, no TOS, checksum field 0).
#[must_use]
pub const fn ipv4_base_sum(src: [u8; 4], dst: [u8; 4], proto: u8) -> u32 {
    const fn word(a: u8, b: u8) -> u32 {
        ((a as u32) << 8) | b as u32
    }
    0x4500
        + IPV4_DF as u32
        + word(OUTER_TTL, proto)
        + word(src[0], src[1])
        + word(src[2], src[3])
        + word(dst[0], dst[1])
        + word(dst[2], dst[3])
}

/// The outer IPv4 header checksum (host order) for a packet of `total_len` bytes.
#[inline(always)]
#[must_use]
pub const fn ipv4_checksum(base: u32, total_len: u16) -> u16 {
    let mut sum = base + total_len as u32;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The outer UDP source port of a GUE packet: from the flow hash, in 49152..=65535 (the
/// dynamic range, RFC 6335), so that each flow keeps one port and flows spread over the
/// paths' ECMP and the element's receive queues.
#[inline(always)]
#[must_use]
pub const fn entropy_port(hash: u32) -> u16 {
    0xc000 | (hash as u16 & 0x3fff)
}

/// The outer IPv6 header's first word (version, no traffic class, flow label from the flow
/// hash), host order.
#[inline(always)]
#[must_use]
pub const fn ipv6_first_word(hash: u32) -> u32 {
    (6 << 28) | (hash & 0x000f_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC 1071 checksum of a whole header, summed word by word.
    fn reference(header: &[u8]) -> u16 {
        let mut sum: u32 = header
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn the_checksum_from_the_base_sum_is_the_headers_checksum() {
        for (src, dst, proto, len) in [
            ([192, 0, 2, 1], [198, 51, 100, 7], IPPROTO_IPIP, 84u16),
            ([255, 255, 255, 255], [255, 255, 255, 254], IPPROTO_UDP, 1500),
            ([10, 0, 0, 1], [10, 0, 0, 2], IPPROTO_UDP, 28),
            ([0, 0, 0, 0], [0, 0, 0, 0], IPPROTO_IPIP, 65535),
        ] {
            let l = len.to_be_bytes();
            let mut header = [
                0x45, 0, l[0], l[1], 0, 0, 0x40, 0, OUTER_TTL, proto, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ];
            header[12..16].copy_from_slice(&src);
            header[16..20].copy_from_slice(&dst);
            let want = reference(&header);
            assert_eq!(ipv4_checksum(ipv4_base_sum(src, dst, proto), len), want);
            // A header carrying its checksum sums to 0xffff: the receiver's check.
            header[10..12].copy_from_slice(&want.to_be_bytes());
            assert_eq!(reference(&header), 0, "{src:?} → {dst:?} proto {proto} len {len}");
        }
    }

    #[test]
    fn entropy_stays_in_the_dynamic_range_and_the_flow_label_in_its_bits() {
        for hash in [0, 1, 0x3fff, 0x4000, 0xffff_ffff, 0x1234_5678] {
            assert!(entropy_port(hash) >= 49152);
            assert_eq!(ipv6_first_word(hash) >> 20, 6 << 8, "version 6, traffic class 0");
        }
        assert_ne!(entropy_port(1), entropy_port(2));
        assert_eq!(ipv6_first_word(0xfff0_0001) & 0xf_ffff, 1);
    }

    #[test]
    fn overheads() {
        assert_eq!(overhead(ENCAP_IPIP, true), 20);
        assert_eq!(overhead(ENCAP_IPIP, false), 40);
        assert_eq!(overhead(ENCAP_GUE, true), 28);
        assert_eq!(overhead(ENCAP_GUE, false), 48);
        assert_eq!(overhead(ENCAP_VXLAN, true), 50);
        assert_eq!(overhead(ENCAP_VXLAN, false), 70);
    }
}
