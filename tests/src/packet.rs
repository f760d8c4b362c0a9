//! Frames built in code, byte by byte, for packet tests.

use std::net::IpAddr;

/// Client MAC used by the fixtures.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
/// MAC of the vnfpool host's ingress interface in the fixtures.
pub const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// An L4 header to put in a frame.
#[derive(Clone, Debug)]
pub enum L4 {
    /// TCP with these ports (SYN set).
    Tcp { sport: u16, dport: u16 },
    /// UDP with these ports.
    Udp { sport: u16, dport: u16 },
    /// An ICMP (or `ICMPv6`) error of this type quoting `inner` (a whole IP packet).
    IcmpError { ty: u8, inner: Vec<u8> },
}

/// A frame to build.
#[derive(Clone, Debug)]
pub struct Frame {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// VLAN ids, outermost first (0x8100 for the first, 0x88a8 outer for `QinQ`).
    pub vlans: Vec<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
    pub payload: Vec<u8>,
    /// IPv4: set the "more fragments" flag; IPv6: insert a Fragment header.
    pub fragment: bool,
    /// IPv6 extension headers before the L4 header, 8 bytes each: hop-by-hop options, then
    /// destination options.
    pub ipv6_ext: usize,
    /// IPv4 options, in 4-byte words (NOPs).
    pub ipv4_options: usize,
}

impl Frame {
    /// A frame from the client to `dst` with the default MACs.
    #[must_use]
    pub fn new(src: IpAddr, dst: IpAddr, l4: L4) -> Self {
        Self {
            dst_mac: HOST_MAC,
            src_mac: CLIENT_MAC,
            vlans: Vec::new(),
            src,
            dst,
            l4,
            payload: b"vnfpool".to_vec(),
            fragment: false,
            ipv6_ext: 0,
            ipv4_options: 0,
        }
    }

    /// The frame's bytes.
    #[must_use]
    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        let ethertype: u16 = if self.src.is_ipv4() { 0x0800 } else { 0x86DD };
        for (i, vid) in self.vlans.iter().enumerate() {
            let tpid: u16 = if i == 0 && self.vlans.len() > 1 {
                0x88A8
            } else {
                0x8100
            };
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(&ip_packet(self));
        f
    }
}

fn l4_bytes(l4: &L4, payload: &[u8], v6: bool) -> (u8, Vec<u8>) {
    match l4 {
        L4::Tcp { sport, dport } => {
            let mut h = Vec::new();
            h.extend_from_slice(&sport.to_be_bytes());
            h.extend_from_slice(&dport.to_be_bytes());
            h.extend_from_slice(&1u32.to_be_bytes()); // seq
            h.extend_from_slice(&0u32.to_be_bytes()); // ack
            h.extend_from_slice(&[0x50, 0x02]); // data offset 5, SYN
            h.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]); // window, checksum, urgent
            h.extend_from_slice(payload);
            (6, h)
        }
        L4::Udp { sport, dport } => {
            let mut h = Vec::new();
            h.extend_from_slice(&sport.to_be_bytes());
            h.extend_from_slice(&dport.to_be_bytes());
            h.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
            h.extend_from_slice(&[0, 0]);
            h.extend_from_slice(payload);
            (17, h)
        }
        L4::IcmpError { ty, inner } => {
            let mut h = vec![*ty, 0, 0, 0, 0, 0, 0, 0];
            h.extend_from_slice(inner);
            (if v6 { 58 } else { 1 }, h)
        }
    }
}

/// The IP packet (no Ethernet header) of a frame.
#[must_use]
pub fn ip_packet(fr: &Frame) -> Vec<u8> {
    let v6 = fr.src.is_ipv6();
    let (proto, l4) = l4_bytes(&fr.l4, &fr.payload, v6);
    match (fr.src, fr.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let ihl = 5 + fr.ipv4_options;
            let total = ihl * 4 + l4.len();
            let mut h = vec![0x40 | ihl as u8, 0];
            h.extend_from_slice(&(total as u16).to_be_bytes());
            h.extend_from_slice(&[0x12, 0x34]); // id
            h.extend_from_slice(&(if fr.fragment { 0x2000u16 } else { 0x4000 }).to_be_bytes());
            h.extend_from_slice(&[64, proto, 0, 0]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            h.resize(ihl * 4, 1); // options: NOP
            let sum = checksum(&h);
            h[10..12].copy_from_slice(&sum.to_be_bytes());
            h.extend_from_slice(&l4);
            h
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut ext = Vec::new();
            let mut next = proto;
            if fr.fragment {
                ext.splice(0..0, [next, 0, 0x00, 0x01, 0, 0, 0x12, 0x34]);
                next = 44;
            }
            // Innermost first: destination options, then hop-by-hop options, which come first.
            for i in (0..fr.ipv6_ext).rev() {
                ext.splice(0..0, [next, 0, 1, 4, 0, 0, 0, 0]); // PadN option
                next = if i == 0 { 0 } else { 60 };
            }
            let mut h = vec![0x60, 0, 0, 0];
            h.extend_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
            h.extend_from_slice(&[next, 64]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            h.extend_from_slice(&ext);
            h.extend_from_slice(&l4);
            h
        }
        _ => panic!("mixed address families in a test frame"),
    }
}

/// The Internet checksum (RFC 1071) of `b`, as a header field holds it.
#[must_use]
pub fn checksum(b: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in b.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// `frame` with its Ethernet MACs replaced, as the data plane rewrites it.
#[must_use]
pub fn with_macs(frame: &[u8], dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f
}

/// Hex dump for assertion messages.
#[must_use]
pub fn hex(b: &[u8]) -> String {
    b.chunks(16)
        .map(|c| c.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}
