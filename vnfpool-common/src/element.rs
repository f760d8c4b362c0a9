//! The element table (`VNF_ELEMS`).

use crate::abi_type;

/// No element at this index (never written, or removed).
pub const STATE_ABSENT: u32 = 0;
/// Takes new flows (it is in the Maglev table) and keeps its existing ones.
pub const STATE_UP: u32 = 1;
/// Draining: keeps its existing flows, gets no new ones (it is not in the Maglev table).
pub const STATE_DRAINING: u32 = 2;
/// Down: its flows are re-picked from the Maglev table on their next packet.
pub const STATE_DOWN: u32 = 3;

/// Value of `VNF_ELEMS`, indexed by [`elem_index`]: where and how to send a packet. 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Element {
    /// Egress interface; `XDP_TX` when it is the ingress interface, else `XDP_REDIRECT`
    /// through `VNF_TX_PORTS`.
    pub ifindex: u32,
    /// One of the `STATE_*` values.
    pub state: u32,
    /// Destination MAC written into the frame: the element's.
    pub dst_mac: [u8; 6],
    /// Source MAC written into the frame: the egress interface's.
    pub src_mac: [u8; 6],
    /// How the frame reaches the element: [`crate::tunnel::ENCAP_NONE`] (L2 direct server
    /// return: `dst_mac` is the element's) or a tunnel ([`crate::tunnel::ENCAP_IPIP`],
    /// [`crate::tunnel::ENCAP_GUE`]: `dst_mac` is the next hop's, the outer headers come from
    /// the element's entry in `VNF_TUNNELS`). A byte that was padding before tunnels existed,
    /// so an element table pinned by an older build reads as L2 DSR.
    pub encap: u8,
    /// Always 0.
    pub _pad: [u8; 3],
}
abi_type!(Element, 24);

impl Element {
    /// Destination then source MAC, the first 12 bytes of a frame sent to this element, as
    /// three native words (one load and one store each on the fast path).
    #[inline(always)]
    #[must_use]
    pub const fn macs(&self) -> [u32; 3] {
        let (d, s) = (self.dst_mac, self.src_mac);
        [
            u32::from_ne_bytes([d[0], d[1], d[2], d[3]]),
            u32::from_ne_bytes([d[4], d[5], s[0], s[1]]),
            u32::from_ne_bytes([s[2], s[3], s[4], s[5]]),
        ]
    }

    /// Whether existing flows may stay on this element.
    #[inline(always)]
    #[must_use]
    pub const fn keeps_flows(&self) -> bool {
        self.state == STATE_UP || self.state == STATE_DRAINING
    }
}

/// Index of an element of a pool's slot in `VNF_ELEMS`.
#[inline(always)]
#[must_use]
pub const fn elem_index(pool: u32, slot: u32, element: u32) -> u32 {
    crate::pool::slot_index(pool, slot) * crate::maps::MAX_ELEMENTS + element
}
