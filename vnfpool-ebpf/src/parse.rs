//! Packet parsing. The only module that compares offsets with `data_end`: every read of
//! packet memory goes through [`Packet::load`].
//!
//! The module also builds for the host, where `fuzz/fuzz_targets/packet_parse.rs` includes it
//! and runs it over byte slices ([`Packet::with_frame`]) under AddressSanitizer; what differs
//! between the two builds is gated on `target_arch = "bpf"` and changes no BPF instruction.

#[cfg(target_arch = "bpf")]
use aya_ebpf::programs::XdpContext;
use vnfpool_common::addr::{self, Addr};

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
/// VLAN tags looked through (QinQ).
const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers skipped before giving up on a packet (it is then passed).
const MAX_IPV6_EXT_HEADERS: usize = 4;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
const ICMP_HLEN: usize = 8;
const FRAGMENT_HLEN: usize = 8;
/// IPv4 "more fragments" flag and fragment offset.
const IP_MF_OFFSET: u16 = 0x3FFF;

/// Why parsing stopped without a verdict-relevant result.
#[derive(Clone, Copy)]
pub enum Stop {
    /// Not IP, not TCP/UDP/ICMP, not an ICMP error: nothing for us, pass it.
    NotOurs,
    /// A header is cut short or inconsistent: pass it (the kernel drops or answers it) and count it.
    Malformed,
}

/// Bounds-checked view of the frame.
pub struct Packet {
    start: usize,
    end: usize,
}

impl Packet {
    #[cfg(target_arch = "bpf")]
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        Self {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }

    /// Runs `f` on a view of `frame` (host builds only: the fuzz target). The view lives only
    /// inside `f`, so the addresses it holds never outlive the slice.
    #[cfg(not(target_arch = "bpf"))]
    pub fn with_frame<R>(frame: &[u8], f: impl FnOnce(&Self) -> R) -> R {
        let start = frame.as_ptr() as usize;
        f(&Self {
            start,
            end: start + frame.len(),
        })
    }

    /// Frame length in bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Pointer to a `T` at `off`, if the whole `T` lies inside the frame.
    #[inline(always)]
    pub fn ptr<T>(&self, off: usize) -> Result<*mut T, Stop> {
        // verifier: this comparison against data_end is what makes the access provably safe.
        if self.start + off + size_of::<T>() > self.end {
            return Err(Stop::Malformed);
        }
        Ok((self.start + off) as *mut T)
    }

    /// Reads a `T` at `off`. `T` is at least 2 bytes: LLVM turns the bounds check of a 1-byte
    /// read at a variable offset into `ptr >= data_end`, a form from which the verifier learns
    /// no readable range.
    ///
    /// The read is a plain typed load although `off` may not be a multiple of `T`'s alignment:
    /// LLVM's BPF backend splits any load it believes unaligned into byte loads (a 4-byte field
    /// becomes seven instructions), while the JIT and the verifier accept unaligned packet loads
    /// on the architectures vnfpool runs on (x86-64, arm64: `CONFIG_HAVE_EFFICIENT_UNALIGNED_ACCESS`).
    /// In Rust on the host, though, a misaligned `read` is undefined behaviour (and a panic
    /// with debug assertions): the host build reads unaligned.
    #[inline(always)]
    pub fn load<T: Copy>(&self, off: usize) -> Result<T, Stop> {
        const { assert!(size_of::<T>() >= 2) };
        let p = self.ptr::<T>(off)?;
        // SAFETY: `ptr` proved that `size_of::<T>()` bytes at `p` are inside the frame; see
        // above for alignment.
        #[cfg(target_arch = "bpf")]
        let value = unsafe { p.read() };
        // SAFETY: as above; `read_unaligned` has no alignment requirement.
        #[cfg(not(target_arch = "bpf"))]
        let value = unsafe { p.read_unaligned() };
        Ok(value)
    }

    /// Whether `len` bytes from `off` are inside the frame.
    #[inline(always)]
    fn has(&self, off: usize, len: usize) -> bool {
        self.start + off + len <= self.end
    }
}

/// The L3/L4 facts the data plane acts on.
#[derive(Clone, Copy)]
pub struct Tuple {
    pub src: Addr,
    pub dst: Addr,
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    /// TCP flags (byte 13 of the header); 0 for anything else.
    pub tcp_flags: u8,
    /// Offset of the (outer, for an ICMP error) IP header in the frame.
    pub l3: u16,
    /// Length of that IP packet, header included (the frame may be longer: Ethernet padding).
    pub ip_len: u16,
}

/// TCP SYN and ACK flags.
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

/// What a parsed packet is.
pub enum Parsed {
    /// A TCP or UDP packet, not fragmented.
    L4(Tuple),
    /// An IP fragment (any fragment, first or not): only its addresses and protocol are known.
    Fragment(Tuple),
    /// An ICMP or ICMPv6 error; the tuple is that of the *quoted* packet, as sent (so its
    /// source is the VIP when the error concerns a VIP flow answered by an element).
    IcmpError(Tuple),
}

/// Parses Ethernet (with up to two VLAN tags), then IPv4 or IPv6.
#[inline(always)]
pub fn parse(pkt: &Packet) -> Result<Parsed, Stop> {
    let mut ethertype = u16::from_be(pkt.load::<u16>(12)?);
    let mut l3 = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        ethertype = u16::from_be(pkt.load::<u16>(l3 + 2)?);
        l3 += 4;
    }
    match ethertype {
        ETH_P_IP => ipv4(pkt, l3),
        ETH_P_IPV6 => ipv6(pkt, l3),
        _ => Err(Stop::NotOurs),
    }
}

#[inline(always)]
fn ipv4(pkt: &Packet, l3: usize) -> Result<Parsed, Stop> {
    let [w0, w1, w2, w3, w4] = pkt.load::<[u32; 5]>(l3)?;
    let b0 = w0.to_ne_bytes();
    // Version and header length (ihl counts 32-bit words; at least 5).
    let ihl = (b0[0] & 0x0F) as usize * 4;
    if b0[0] >> 4 != 4 || ihl < 20 {
        return Err(Stop::Malformed);
    }
    let tot_len = u16::from_be_bytes([b0[2], b0[3]]) as usize;
    if tot_len < ihl || !pkt.has(l3, tot_len) {
        return Err(Stop::Malformed);
    }
    // The L4 header must lie inside the IP packet, not just inside the frame (which may carry
    // padding or a forged tail past the IP length).
    let ip_end = l3 + tot_len;
    let proto = w2.to_ne_bytes()[1];
    let b1 = w1.to_ne_bytes();
    let frag = u16::from_be_bytes([b1[2], b1[3]]);
    let src = addr::from_v4_word(w3);
    let dst = addr::from_v4_word(w4);
    let l4 = l3 + ihl;
    if frag & IP_MF_OFFSET != 0 {
        return if proto == IPPROTO_TCP || proto == IPPROTO_UDP {
            Ok(Parsed::Fragment(Tuple {
                src,
                dst,
                sport_be: 0,
                dport_be: 0,
                proto,
                tcp_flags: 0,
                l3: l3 as u16,
                ip_len: (ip_end - l3) as u16,
            }))
        } else {
            Err(Stop::NotOurs)
        };
    }
    match proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            let (sport_be, dport_be, tcp_flags) = ports(pkt, l4, ip_end, proto)?;
            Ok(Parsed::L4(Tuple {
                src,
                dst,
                sport_be,
                dport_be,
                proto,
                tcp_flags,
                l3: l3 as u16,
                ip_len: (ip_end - l3) as u16,
            }))
        }
        IPPROTO_ICMP => icmp4_error(pkt, l3, l4, ip_end),
        _ => Err(Stop::NotOurs),
    }
}

#[inline(always)]
fn ipv6(pkt: &Packet, l3: usize) -> Result<Parsed, Stop> {
    let h = pkt.load::<[u32; 10]>(l3)?;
    let b0 = h[0].to_ne_bytes();
    if b0[0] >> 4 != 6 {
        return Err(Stop::Malformed);
    }
    let b1 = h[1].to_ne_bytes();
    let payload_len = u16::from_be_bytes([b1[0], b1[1]]) as usize;
    // A payload length of 0 announces a jumbogram (RFC 2675), which no Ethernet frame carries.
    if payload_len == 0 || !pkt.has(l3 + 40, payload_len) {
        return Err(Stop::Malformed);
    }
    let src = [h[2], h[3], h[4], h[5]];
    let dst = [h[6], h[7], h[8], h[9]];
    // IPv4-mapped addresses never appear on the wire (RFC 4291 2.5.5.2). Refusing them here is
    // what keeps the families apart in the maps, where IPv4 is stored IPv4-mapped: an IPv6
    // packet to `::ffff:a.b.c.d` must not reach the pool of the IPv4 VIP a.b.c.d.
    if addr::is_v4(&src) || addr::is_v4(&dst) {
        return Err(Stop::Malformed);
    }
    let ip_end = l3 + 40 + payload_len;
    let mut next = b1[2];
    let mut l4 = l3 + 40;
    for i in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH => {
                // Hop-by-hop options come first or not at all (RFC 8200 4.3).
                if next == IPPROTO_HOPOPTS && i != 0 {
                    return Err(Stop::Malformed);
                }
                let ext = pkt.load::<[u8; 2]>(l4)?;
                // AH counts 4-byte units minus 2; the others 8-byte units minus 1.
                l4 += if next == IPPROTO_AH {
                    (ext[1] as usize + 2) * 4
                } else {
                    (ext[1] as usize + 1) * 8
                };
                if l4 > ip_end {
                    return Err(Stop::Malformed);
                }
                next = ext[0];
            }
            IPPROTO_FRAGMENT => {
                let proto = pkt.load::<[u8; 2]>(l4)?[0];
                // The 8-byte fragment header lies inside the payload, like any other header.
                if l4 + FRAGMENT_HLEN > ip_end {
                    return Err(Stop::Malformed);
                }
                return if is_l4(proto) {
                    Ok(Parsed::Fragment(Tuple {
                        src,
                        dst,
                        sport_be: 0,
                        dport_be: 0,
                        proto,
                        tcp_flags: 0,
                        l3: l3 as u16,
                        ip_len: (ip_end - l3) as u16,
                    }))
                } else {
                    Err(Stop::NotOurs)
                };
            }
            _ => break,
        }
    }
    match next {
        IPPROTO_TCP | IPPROTO_UDP => {
            let (sport_be, dport_be, tcp_flags) = ports(pkt, l4, ip_end, next)?;
            Ok(Parsed::L4(Tuple {
                src,
                dst,
                sport_be,
                dport_be,
                proto: next,
                tcp_flags,
                l3: l3 as u16,
                ip_len: (ip_end - l3) as u16,
            }))
        }
        IPPROTO_ICMPV6 => icmp6_error(pkt, l3, l4, ip_end),
        _ => Err(Stop::NotOurs),
    }
}

#[inline(always)]
fn is_l4(proto: u8) -> bool {
    proto == IPPROTO_TCP || proto == IPPROTO_UDP
}

/// Source and destination ports (and TCP flags) of a TCP or UDP header at `l4`, after checking that the header
/// is whole and consistent within the IP packet, which ends at `ip_end`: a TCP data offset of
/// at least 5 words and inside the packet, a UDP length of at least 8 and inside the packet.
/// The kernel drops such packets; steering them would hand an element what its stack drops.
///
/// verifier: the header is read (bounds-checked against the frame) before its end is compared
/// with `ip_end`. The other way round, LLVM proves the frame check redundant (the IP packet was
/// checked to lie inside the frame) and removes it, and the verifier, which does not follow
/// that reasoning, refuses the read.
#[inline(always)]
fn ports(pkt: &Packet, l4: usize, ip_end: usize, proto: u8) -> Result<(u16, u16, u8), Stop> {
    if proto == IPPROTO_TCP {
        // Ports, sequence and acknowledgement numbers, data offset: one bounds check.
        let [w0, _seq, _ack, w3] = pkt.load::<[u32; 4]>(l4)?;
        let [offset, flags, ..] = w3.to_ne_bytes();
        let doff = (offset >> 4) as usize * 4;
        if doff < TCP_HLEN || l4 + doff > ip_end {
            return Err(Stop::Malformed);
        }
        let p = w0.to_ne_bytes();
        Ok((
            u16::from_ne_bytes([p[0], p[1]]),
            u16::from_ne_bytes([p[2], p[3]]),
            flags,
        ))
    } else {
        let [sport_be, dport_be, len_be, _csum] = pkt.load::<[u16; 4]>(l4)?;
        let len = u16::from_be(len_be) as usize;
        if len < UDP_HLEN || l4 + len > ip_end {
            return Err(Stop::Malformed);
        }
        Ok((sport_be, dport_be, 0))
    }
}

/// ICMPv4 destination unreachable (3), time exceeded (11), parameter problem (12).
#[inline(always)]
fn icmp4_error(pkt: &Packet, l3: usize, l4: usize, ip_end: usize) -> Result<Parsed, Stop> {
    let ty = pkt.load::<[u8; 2]>(l4)?[0];
    if ty != 3 && ty != 11 && ty != 12 {
        return Err(Stop::NotOurs);
    }
    let inner = l4 + ICMP_HLEN;
    let [w0, _w1, w2, w3, w4] = pkt.load::<[u32; 5]>(inner)?;
    let b0 = w0.to_ne_bytes();
    let ihl = (b0[0] & 0x0F) as usize * 4;
    let proto = w2.to_ne_bytes()[1];
    if b0[0] >> 4 != 4 || ihl < 20 || !is_l4(proto) {
        return Err(Stop::NotOurs);
    }
    // An ICMP error quotes at least 8 bytes of the L4 header: the ports are there. Like every
    // header, the quote lies inside the IP packet (read first, then compared: see `ports`).
    let p = pkt.load::<[u16; 2]>(inner + ihl)?;
    if inner + ihl + 4 > ip_end {
        return Err(Stop::Malformed);
    }
    Ok(Parsed::IcmpError(Tuple {
        src: addr::from_v4_word(w3),
        dst: addr::from_v4_word(w4),
        sport_be: p[0],
        dport_be: p[1],
        proto,
        tcp_flags: 0,
        l3: l3 as u16,
        ip_len: (ip_end - l3) as u16,
    }))
}

/// ICMPv6 destination unreachable (1), packet too big (2), time exceeded (3), parameter problem (4).
#[inline(always)]
fn icmp6_error(pkt: &Packet, l3: usize, l4: usize, ip_end: usize) -> Result<Parsed, Stop> {
    let ty = pkt.load::<[u8; 2]>(l4)?[0];
    if !(1..=4).contains(&ty) {
        return Err(Stop::NotOurs);
    }
    let inner = l4 + ICMP_HLEN;
    let h = pkt.load::<[u32; 10]>(inner)?;
    let proto = h[1].to_ne_bytes()[2];
    let src = [h[2], h[3], h[4], h[5]];
    // An IPv4-mapped source would name an IPv4 VIP's flow (see `ipv6`).
    if h[0].to_ne_bytes()[0] >> 4 != 6 || !is_l4(proto) || addr::is_v4(&src) {
        return Err(Stop::NotOurs);
    }
    let p = pkt.load::<[u16; 2]>(inner + 40)?;
    if inner + 44 > ip_end {
        return Err(Stop::Malformed);
    }
    Ok(Parsed::IcmpError(Tuple {
        src,
        dst: [h[6], h[7], h[8], h[9]],
        sport_be: p[0],
        dport_be: p[1],
        proto,
        tcp_flags: 0,
        l3: l3 as u16,
        ip_len: (ip_end - l3) as u16,
    }))
}
