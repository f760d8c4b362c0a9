//! vnfpool element-side decapsulation (`vnfpool decap`): strips the encapsulation a vnfpool
//! load balancer puts around VIP packets it sends to an element on another subnet, so that the
//! element's kernel, which may have no ipip/fou modules, sees the client's packet as sent.
//!
//! Per frame: Ethernet (untagged) → outer IPv4 protocol 4, outer IPv6 next header 41, or outer
//! UDP to a configured GUE port (variant 1: the UDP payload is the inner packet) → inner header
//! of the same family, lengths consistent → inner destination in `VNFD_VIPS` → the outer headers
//! are cut off with `bpf_xdp_adjust_head`, the Ethernet header written again in front of the
//! inner packet (same MACs, same ethertype, as outer and inner family are the same), `XDP_PASS`.
//!
//! Everything else passes untouched: it is not ours to judge. Encapsulated frames whose inner
//! destination is no VIP are counted as such, inconsistent ones as malformed (the kernel then
//! drops them, having no tunnel for them).
//!
//! VLAN-tagged frames pass untouched, uncounted: the program looks only at untagged frames.
//! With receive VLAN offload (the default of most NICs) the tag is not in the frame and the
//! program strips tagged traffic too; without it, attach to the VLAN device (generic mode).
//! Keeping a tag would mean moving 18 or 22 bytes instead of 14 for a case the load balancer's
//! own element links do not have.
#![no_std]
#![no_main]

#[expect(
    dead_code,
    reason = "the load balancer's parser; this program uses only its bounds-checked reads"
)]
mod parse;

use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::{Array, HashMap, PerCpuArray},
    helpers::generated::bpf_xdp_adjust_head,
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use parse::{ETH_HLEN, IPPROTO_UDP, Packet, Stop};
use vnfpool_common::{
    addr::{self, Addr},
    decap::{self, Counter, GuePorts, VipEntry, VipKey},
    stats::Counters,
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const UDP_HLEN: usize = 8;
/// IPv4 "more fragments" flag and fragment offset.
const IP_MF_OFFSET: u16 = 0x3FFF;
/// IPv4 fragment offset alone.
const IP_OFFSET: u16 = 0x1FFF;
/// Shortest Ethernet frame without its FCS: a shorter packet arrives padded to it, so a frame
/// this long may carry bytes past the outer packet's end.
const ETH_ZLEN: usize = 60;

/// Owner: `vnfpool decap`. Inner destination (IPv4-mapped for IPv4) → encapsulations stripped
/// for it. Pinned.
#[btf_map]
static VNFD_VIPS: HashMap<VipKey, VipEntry, { decap::MAX_VIPS as usize }> = HashMap::new();
/// Owner: `vnfpool decap`. The GUE destination ports (host order, 0 = unused), one value. Pinned.
#[btf_map]
static VNFD_GUE_PORTS: Array<GuePorts, 1> = Array::new();
/// Owner: program. `decap::Counter` → packets/bytes (frame length as received), per CPU. Pinned.
#[btf_map]
static VNFD_STATS: PerCpuArray<Counters, { decap::COUNTER_ENTRIES as usize }> = PerCpuArray::new();

/// An encapsulated frame, checked: what stripping it takes.
struct Encap {
    /// Bytes of outer headers between the Ethernet header and the inner packet.
    outer_len: usize,
    /// The inner packet's destination.
    inner_dst: Addr,
    /// The VIP flag this encapsulation needs (`decap::FLAG_*`).
    flag: u32,
}

#[xdp]
pub fn vnfpool_decap(ctx: XdpContext) -> u32 {
    let pkt = Packet::new(&ctx);
    let len = pkt.len() as u64;
    match encapsulated(&pkt) {
        Ok(e) => {
            if !for_us(&e) {
                count(Counter::NotForUs, len);
                return xdp_action::XDP_PASS;
            }
            if strip(&ctx, &pkt, e.outer_len) {
                count(Counter::Decapsulated, len);
            } else {
                // The frame was validated, so the helper cannot refuse it; if it ever does, the
                // frame is still whole (nothing is written before the helper succeeds).
                count(Counter::Malformed, len);
            }
            xdp_action::XDP_PASS
        }
        // Fail open: not encapsulation, or not ours to strip, so the kernel decides.
        Err(Stop::NotOurs) => xdp_action::XDP_PASS,
        Err(Stop::Malformed) => {
            count(Counter::Malformed, len);
            xdp_action::XDP_PASS
        }
    }
}

/// Whether the inner destination is a VIP that takes this encapsulation.
#[inline(always)]
fn for_us(e: &Encap) -> bool {
    // SAFETY: the value is copied out at once; no reference outlives the lookup.
    match unsafe { VNFD_VIPS.get(VipKey::of(&e.inner_dst)) } {
        Some(v) => v.flags & e.flag != 0,
        None => false,
    }
}

/// Classifies the frame: `NotOurs` for anything that is not an encapsulated packet (nothing is
/// counted), `Malformed` for an encapsulated packet that is inconsistent, the checked
/// encapsulation otherwise.
#[inline(always)]
fn encapsulated(pkt: &Packet) -> Result<Encap, Stop> {
    let ethertype = u16::from_be(pkt.load::<u16>(12).map_err(|_| Stop::NotOurs)?);
    match ethertype {
        ETH_P_IP => outer_v4(pkt),
        ETH_P_IPV6 => outer_v6(pkt),
        // VLAN-tagged frames included (see the module docs).
        _ => Err(Stop::NotOurs),
    }
}

#[inline(always)]
fn outer_v4(pkt: &Packet) -> Result<Encap, Stop> {
    let l3 = ETH_HLEN;
    // Until the frame is known to be encapsulated, a short or broken header is not ours.
    let [w0, w1, w2, _, _] = pkt.load::<[u32; 5]>(l3).map_err(|_| Stop::NotOurs)?;
    let b0 = w0.to_ne_bytes();
    let proto = w2.to_ne_bytes()[1];
    let version = b0[0] >> 4;
    let ihl = (b0[0] & 0x0F) as usize * 4;
    let b1 = w1.to_ne_bytes();
    let frag = u16::from_be_bytes([b1[2], b1[3]]);
    let gue = match proto {
        IPPROTO_IPIP => false,
        IPPROTO_UDP => {
            // Only a first (or whole) datagram with a sound header shows its port.
            if version != 4 || ihl < IPV4_HLEN || frag & IP_OFFSET != 0 {
                return Err(Stop::NotOurs);
            }
            let [_, dport_be, _, _] = pkt.load::<[u16; 4]>(l3 + ihl).map_err(|_| Stop::NotOurs)?;
            if !gue_port(dport_be) {
                return Err(Stop::NotOurs);
            }
            true
        }
        _ => return Err(Stop::NotOurs),
    };
    // Encapsulated from here on: every inconsistency is malformed.
    if version != 4 || ihl < IPV4_HLEN || frag & IP_MF_OFFSET != 0 {
        return Err(Stop::Malformed);
    }
    let tot_len = u16::from_be_bytes([b0[2], b0[3]]) as usize;
    if tot_len < ihl || !agrees(pkt, l3 + tot_len) {
        return Err(Stop::Malformed);
    }
    let payload = tot_len - ihl;
    if gue {
        let (inner, inner_len) = gue_payload(pkt, l3 + ihl, payload)?;
        let inner_dst = inner_v4(pkt, inner, inner_len)?;
        Ok(Encap {
            outer_len: ihl + UDP_HLEN,
            inner_dst,
            flag: decap::FLAG_GUE,
        })
    } else {
        let inner_dst = inner_v4(pkt, l3 + ihl, payload)?;
        Ok(Encap {
            outer_len: ihl,
            inner_dst,
            flag: decap::FLAG_IP_IN_IP,
        })
    }
}

#[inline(always)]
fn outer_v6(pkt: &Packet) -> Result<Encap, Stop> {
    let l3 = ETH_HLEN;
    let [w0, w1] = pkt.load::<[u32; 2]>(l3).map_err(|_| Stop::NotOurs)?;
    let b1 = w1.to_ne_bytes();
    let next = b1[2];
    let l4 = l3 + IPV6_HLEN;
    // Only a next header right after the fixed header: the load balancer sends no extension
    // headers, and anything else is left to the kernel.
    let gue = match next {
        IPPROTO_IPV6 => false,
        IPPROTO_UDP => {
            let [_, dport_be, _, _] = pkt.load::<[u16; 4]>(l4).map_err(|_| Stop::NotOurs)?;
            if !gue_port(dport_be) {
                return Err(Stop::NotOurs);
            }
            true
        }
        _ => return Err(Stop::NotOurs),
    };
    let payload = u16::from_be_bytes([b1[0], b1[1]]) as usize;
    // A payload length of 0 announces a jumbogram (RFC 2675), which no Ethernet frame carries.
    if w0.to_ne_bytes()[0] >> 4 != 6 || payload == 0 || !agrees(pkt, l4 + payload) {
        return Err(Stop::Malformed);
    }
    if gue {
        let (inner, inner_len) = gue_payload(pkt, l4, payload)?;
        let inner_dst = inner_v6(pkt, inner, inner_len)?;
        Ok(Encap {
            outer_len: IPV6_HLEN + UDP_HLEN,
            inner_dst,
            flag: decap::FLAG_GUE,
        })
    } else {
        let inner_dst = inner_v6(pkt, l4, payload)?;
        Ok(Encap {
            outer_len: IPV6_HLEN,
            inner_dst,
            flag: decap::FLAG_IP_IN_IP,
        })
    }
}

/// Whether an outer packet ending at `end` agrees with the frame: it ends where the frame
/// does, or inside a frame no longer than the Ethernet minimum (padding follows it).
#[inline(always)]
fn agrees(pkt: &Packet, end: usize) -> bool {
    let len = pkt.len();
    end == len || (end < len && len <= ETH_ZLEN)
}

/// The GUE payload of the UDP header at `l4`, in an outer packet with `payload` bytes after
/// its IP header: where the inner packet starts, and its length (the UDP length less the
/// header).
#[inline(always)]
fn gue_payload(pkt: &Packet, l4: usize, payload: usize) -> Result<(usize, usize), Stop> {
    // verifier: read (again) before its length is compared with `payload`, which was compared
    // with the frame (see `parse::ports`).
    let [_, _, len_be, _] = pkt.load::<[u16; 4]>(l4)?;
    let udp_len = u16::from_be(len_be) as usize;
    if udp_len < UDP_HLEN || udp_len > payload {
        return Err(Stop::Malformed);
    }
    Ok((l4 + UDP_HLEN, udp_len - UDP_HLEN))
}

/// The destination of the inner IPv4 packet at `off`, which must be exactly `len` bytes (the
/// outer payload) with a sound header.
#[inline(always)]
fn inner_v4(pkt: &Packet, off: usize, len: usize) -> Result<Addr, Stop> {
    // verifier: read before any comparison with `len` (see `parse::ports`).
    let [w0, _, _, _, w4] = pkt.load::<[u32; 5]>(off)?;
    let b0 = w0.to_ne_bytes();
    // The version is the GUE payload's first nibble, too: 6 (the other family) and anything
    // else are both refused here.
    let ihl = (b0[0] & 0x0F) as usize * 4;
    let tot_len = u16::from_be_bytes([b0[2], b0[3]]) as usize;
    if b0[0] >> 4 != 4 || ihl < IPV4_HLEN || tot_len < ihl || tot_len != len {
        return Err(Stop::Malformed);
    }
    Ok(addr::from_v4_word(w4))
}

/// The destination of the inner IPv6 packet at `off`, which must be exactly `len` bytes.
#[inline(always)]
fn inner_v6(pkt: &Packet, off: usize, len: usize) -> Result<Addr, Stop> {
    // verifier: read before any comparison with `len` (see `parse::ports`).
    let h = pkt.load::<[u32; 10]>(off)?;
    let b1 = h[1].to_ne_bytes();
    let payload = u16::from_be_bytes([b1[0], b1[1]]) as usize;
    let dst = [h[6], h[7], h[8], h[9]];
    // An IPv4-mapped destination would match an IPv4 VIP's key (IPv4 is stored mapped); it
    // never appears on the wire (RFC 4291 2.5.5.2).
    if h[0].to_ne_bytes()[0] >> 4 != 6 || payload + IPV6_HLEN != len || addr::is_v4(&dst) {
        return Err(Stop::Malformed);
    }
    Ok(dst)
}

/// Whether `dport_be` is a configured GUE port.
#[inline(always)]
fn gue_port(dport_be: u16) -> bool {
    let Some(p) = VNFD_GUE_PORTS.get(0) else {
        return false;
    };
    let port = u16::from_be(dport_be);
    // Port 0 marks an unused entry; no datagram is sent to port 0.
    if port == 0 {
        return false;
    }
    let mut i = 0;
    while i < decap::MAX_GUE_PORTS {
        if p.ports[i] == port {
            return true;
        }
        i += 1;
    }
    false
}

/// Cuts the `outer_len` bytes after the Ethernet header off the frame and writes the Ethernet
/// header again in front of what is left. Whether it did.
///
/// The head moves first and the header is written after: a helper that refused would leave the
/// frame whole, and the write lands at the new frame's start, a constant offset the verifier
/// checks without following `outer_len`.
#[inline(always)]
fn strip(ctx: &XdpContext, pkt: &Packet, outer_len: usize) -> bool {
    // MACs and ethertype: the ethertype stays, as the inner family is the outer one.
    let Ok(eth) = pkt.load::<[u16; 7]>(0) else {
        return false;
    };
    // SAFETY: a helper call on this program's own context; it checks the delta against the
    // frame and fails without changing it.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, outer_len as i32) } != 0 {
        return false;
    }
    // The old `pkt` bounds are stale after the helper: a new view of the frame.
    let moved = Packet::new(ctx);
    let Ok(p) = moved.ptr::<[u16; 7]>(0) else {
        return false;
    };
    // SAFETY: `ptr` proved the 14 bytes inside the (new) frame; the frame starts 2-aligned.
    unsafe { p.write(eth) };
    true
}

/// Counts a frame of `len` bytes under `counter`.
#[inline(always)]
fn count(counter: Counter, len: u64) {
    if let Some(c) = VNFD_STATS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, and XDP does not preempt itself on a CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
