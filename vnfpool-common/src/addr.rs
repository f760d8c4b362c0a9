//! Addresses as the maps store them: 16 bytes, IPv4 mapped into IPv6.

/// An IPv4 or IPv6 address as four 32-bit words holding the address bytes in network order
/// (word 0 holds bytes 0..4). IPv4 `a.b.c.d` is stored as `::ffff:a.b.c.d`.
pub type Addr = [u32; 4];

/// Word 2 of an IPv4-mapped address (`0000:ffff` in network order), as read natively.
#[inline(always)]
#[must_use]
pub const fn v4_mapped_marker() -> u32 {
    u32::from_ne_bytes([0, 0, 0xff, 0xff])
}

/// The map form of an IPv4 address whose four bytes were read from a packet as one word.
#[inline(always)]
#[must_use]
pub const fn from_v4_word(word: u32) -> Addr {
    [0, 0, v4_mapped_marker(), word]
}

/// The map form of IPv4 address bytes.
#[inline(always)]
#[must_use]
pub const fn from_v4(octets: [u8; 4]) -> Addr {
    from_v4_word(u32::from_ne_bytes(octets))
}

/// The map form of IPv6 address bytes.
#[inline(always)]
#[must_use]
pub const fn from_v6(octets: [u8; 16]) -> Addr {
    let o = octets;
    [
        u32::from_ne_bytes([o[0], o[1], o[2], o[3]]),
        u32::from_ne_bytes([o[4], o[5], o[6], o[7]]),
        u32::from_ne_bytes([o[8], o[9], o[10], o[11]]),
        u32::from_ne_bytes([o[12], o[13], o[14], o[15]]),
    ]
}

/// The 16 bytes of a map address, in network order.
#[must_use]
pub const fn octets(addr: &Addr) -> [u8; 16] {
    let [a, b, c, d] = [
        addr[0].to_ne_bytes(),
        addr[1].to_ne_bytes(),
        addr[2].to_ne_bytes(),
        addr[3].to_ne_bytes(),
    ];
    [
        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2], d[3],
    ]
}

/// Whether a map address is IPv4-mapped.
#[inline(always)]
#[must_use]
pub const fn is_v4(addr: &Addr) -> bool {
    addr[0] == 0 && addr[1] == 0 && addr[2] == v4_mapped_marker()
}

/// Conversions from the standard library's address types.
#[cfg(feature = "user")]
mod user {
    extern crate std;
    use std::net::IpAddr;

    /// The map form of a standard address.
    #[must_use]
    pub fn from_ip(ip: IpAddr) -> super::Addr {
        match ip {
            IpAddr::V4(v4) => super::from_v4(v4.octets()),
            IpAddr::V6(v6) => super::from_v6(v6.octets()),
        }
    }

    /// The standard address of a map address.
    #[must_use]
    pub fn to_ip(addr: &super::Addr) -> IpAddr {
        let o = super::octets(addr);
        if super::is_v4(addr) {
            IpAddr::from([o[12], o[13], o[14], o[15]])
        } else {
            IpAddr::from(o)
        }
    }
}
#[cfg(feature = "user")]
pub use user::{from_ip, to_ip};
