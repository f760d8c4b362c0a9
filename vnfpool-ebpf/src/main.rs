//! vnfpool XDP data plane: steers packets for a pool's virtual address (VIP:port/protocol)
//! to the pool's elements, keeping flow affinity, by L2 direct server return.
//!
//! Per packet: parse (Ethernet, VLAN, IPv4/IPv6, TCP/UDP/ICMP errors) → VIP pre-filter →
//! VIP table → flow table (hit on a usable element: done) → the pool's live Maglev table →
//! record the flow → rewrite MACs → `XDP_TX` or `XDP_REDIRECT`.
//! Everything that is not for a VIP leaves with `XDP_PASS`, unmodified.
#![no_std]
#![no_main]

mod parse;

use aya_ebpf::{
    bindings::{BPF_F_NO_COMMON_LRU, xdp_action},
    btf_maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray},
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use parse::{Packet, Parsed, Stop, Tuple};
use vnfpool_common::{
    addr::Addr,
    element::{self, Element, STATE_UP},
    flow::{self, FlowKey, FlowValue},
    maps,
    pool::{self, PoolSel, SlotMeta},
    ring::{self, RingChunk},
    stats::{Counters, REASONS, Reason},
    vip::{self, VipDirect, VipKey, VipMeta},
};

// Map sizes are the compile-time defaults of `vnfpool_common::maps`; the loader may change
// VNF_FLOWS and VNF_RING before load. Owner = the side that writes the map.

/// Owner: daemon. VIP:port/proto → pool. Pinned.
#[btf_map]
static VNF_VIPS: HashMap<VipKey, VipMeta, { maps::MAX_VIP_ENTRIES as usize }> = HashMap::new();
/// Owner: daemon. 16-bit fold of VIP:port/proto → 0 (no VIP), 1 + index into VNF_VIP_DIRECT, or collision. Pinned.
#[btf_map]
static VNF_VIP_FILTER: Array<u32, { maps::VIP_FILTER_SIZE as usize }> = Array::new();
/// Owner: daemon. The single VIP of a pre-filter entry, compared in place of a hash lookup. Pinned.
#[btf_map]
static VNF_VIP_DIRECT: Array<VipDirect, { maps::MAX_VIP_ENTRIES as usize }> = Array::new();
/// Owner: daemon (one atomic store per switch). pool → live slot. mmap-able, pinned.
#[btf_map]
static VNF_POOLS: Array<PoolSel, { maps::MAX_POOLS as usize }, { maps::BPF_F_MMAPABLE }> = Array::new();
/// Owner: daemon (spare slot only). pool*2+slot → Maglev table shape. mmap-able, pinned.
#[btf_map]
static VNF_SLOTS: Array<SlotMeta, { maps::SLOT_ENTRIES as usize }, { maps::BPF_F_MMAPABLE }> = Array::new();
/// Owner: daemon (spare slot only). (pool*2+slot)*MAX_ELEMENTS+element → where to send. mmap-able, pinned.
#[btf_map]
static VNF_ELEMS: Array<Element, { maps::ELEM_ENTRIES as usize }, { maps::BPF_F_MMAPABLE }> = Array::new();
/// Owner: daemon (spare slot only). Arena of all Maglev tables, 4 positions per entry. mmap-able, pinned.
#[btf_map]
static VNF_RING: Array<RingChunk, { maps::DEFAULT_RING_CHUNKS as usize }, { maps::BPF_F_MMAPABLE }> =
    Array::new();
/// Owner: program. Client flow → element, LRU with per-CPU free lists (a flow stays on one
/// CPU under RSS, so per-CPU eviction costs no affinity). Pinned.
#[btf_map]
static VNF_FLOWS: LruHashMap<
    FlowKey,
    FlowValue,
    { maps::DEFAULT_FLOW_TABLE_SIZE as usize },
    { BPF_F_NO_COMMON_LRU as usize },
> = LruHashMap::new();
/// Owner: daemon. ifindex → egress device for XDP_REDIRECT (the kernel keeps no BTF for device maps). Pinned.
#[btf_map]
static VNF_TX_PORTS: DevMapHash<{ maps::MAX_TX_PORTS as usize }> = DevMapHash::new();
/// Owner: program. pool → packets/bytes steered, per CPU. Pinned.
#[btf_map]
static VNF_VIP_STATS: PerCpuArray<Counters, { maps::MAX_POOLS as usize }> = PerCpuArray::new();
/// Owner: program. pool*MAX_ELEMENTS+element → packets/bytes sent to it, per CPU. Pinned.
#[btf_map]
static VNF_ELEM_STATS: PerCpuArray<Counters, { maps::ELEM_STATS_ENTRIES as usize }> = PerCpuArray::new();
/// Owner: program. `Reason` → packets/bytes, per CPU. Pinned.
#[btf_map]
static VNF_REASONS: PerCpuArray<Counters, { REASONS as usize }> = PerCpuArray::new();

#[xdp]
pub fn vnfpool(ctx: XdpContext) -> u32 {
    let pkt = Packet::new(&ctx);
    match parse::parse(&pkt) {
        Ok(Parsed::L4(t)) => steer(&ctx, &pkt, &t),
        Ok(Parsed::Fragment(t)) => fragment(&pkt, &t),
        Ok(Parsed::IcmpError(t)) => icmp_error(&ctx, &pkt, &t),
        // Fail open: what we cannot parse is not provably for a VIP, so the kernel decides.
        Err(Stop::NotOurs) => xdp_action::XDP_PASS,
        Err(Stop::Malformed) => {
            count(&VNF_REASONS, Reason::Malformed as u32, &pkt);
            xdp_action::XDP_PASS
        }
    }
}

/// The pool of a VIP destination, or `None` when it is not one.
#[inline(always)]
fn vip_pool(addr: &Addr, port_be: u16, proto: u8) -> Option<u32> {
    // verifier: the index is masked to the filter's size inside filter_index.
    let slot = *VNF_VIP_FILTER.get(vip::filter_index(addr, port_be, proto))?;
    if slot == 0 {
        return None;
    }
    let key = VipKey { addr: *addr, port_be, proto, _pad: 0 };
    if slot != vip::FILTER_COLLISION {
        // verifier: a bounded array lookup; a stale index just fails the comparison.
        let d = VNF_VIP_DIRECT.get(slot - 1)?;
        return same_vip(&d.key, &key).then_some(d.pool);
    }
    // SAFETY: the value is copied out at once; no reference outlives the lookup.
    let meta = unsafe { *VNF_VIPS.get(key)? };
    (meta.flags & vip::FLAG_ADDRESS == 0).then_some(meta.pool)
}

/// Field-by-field equality (a derived `==` on arrays may become a `memcmp` call, which BPF lacks).
#[inline(always)]
fn same_vip(a: &VipKey, b: &VipKey) -> bool {
    a.addr[0] == b.addr[0]
        && a.addr[1] == b.addr[1]
        && a.addr[2] == b.addr[2]
        && a.addr[3] == b.addr[3]
        && a.port_be == b.port_be
        && a.proto == b.proto
}

/// A TCP or UDP packet.
#[inline(always)]
fn steer(ctx: &XdpContext, pkt: &Packet, t: &Tuple) -> u32 {
    let Some(pool) = vip_pool(&t.dst, t.dport_be, t.proto) else {
        return xdp_action::XDP_PASS;
    };
    let key = FlowKey {
        src: t.src,
        sport_be: t.sport_be,
        dport_be: t.dport_be,
        pool: pool as u16,
        proto: t.proto,
        _pad: 0,
    };
    let Some(sel) = VNF_POOLS.get(pool) else {
        return drop(pkt, Reason::NoElement);
    };
    // The one read of the selector: from here on only this slot is used (atomic switch).
    let slot = sel.slot & 1;

    if let Some(v) = VNF_FLOWS.get_ptr(key) {
        // SAFETY: a plain 4-byte read right after the lookup.
        let idx = unsafe { (*v).element };
        if let Some(e) = element_at(pool, slot, idx)
            && e.keeps_flows()
        {
            return forward(ctx, pkt, pool, idx, e);
        }
    }

    let Some(idx) = pick(pool, slot, &key) else {
        return drop(pkt, Reason::NoElement);
    };
    match element_at(pool, slot, idx) {
        // The table holds only up elements of its own slot; the check guards a broken writer.
        Some(e) if e.state == STATE_UP => {
            // Best effort: if the insert fails (it cannot for an LRU map short of ENOMEM), the
            // next packet of the flow picks the same element from the same table.
            let _ = VNF_FLOWS.insert(key, FlowValue { element: idx }, 0);
            forward(ctx, pkt, pool, idx, e)
        }
        _ => drop(pkt, Reason::NoElement),
    }
}

/// The element a new flow gets from the live Maglev table of `pool`.
#[inline(always)]
fn pick(pool: u32, slot: u32, key: &FlowKey) -> Option<u32> {
    let meta = VNF_SLOTS.get(pool::slot_index(pool, slot))?;
    if meta.ring_size == 0 {
        return None;
    }
    let pos = ring::position(flow::hash(key), meta.ring_size);
    let chunk = VNF_RING.get(meta.ring_offset + pos / ring::LANES)?;
    // verifier: the lane is masked to 0..4, the array's length.
    Some(chunk.elements[(pos & (ring::LANES - 1)) as usize] as u32)
}

#[inline(always)]
fn element_at(pool: u32, slot: u32, idx: u32) -> Option<&'static Element> {
    if idx >= maps::MAX_ELEMENTS {
        return None;
    }
    VNF_ELEMS.get(element::elem_index(pool, slot, idx))
}

/// Rewrites the MACs and sends the frame to `e`.
#[inline(always)]
fn forward(ctx: &XdpContext, pkt: &Packet, pool: u32, idx: u32, e: &Element) -> u32 {
    let Ok(eth) = pkt.ptr::<[u32; 3]>(0) else {
        return xdp_action::XDP_PASS;
    };
    // Choose the action first: a frame we end up dropping leaves unmodified.
    let action = if e.ifindex as usize == ctx.ingress_ifindex() {
        xdp_action::XDP_TX
    } else {
        match VNF_TX_PORTS.redirect(e.ifindex, xdp_action::XDP_DROP as u64) {
            Ok(action) => action,
            Err(_) => return drop(pkt, Reason::NoTxPort),
        }
    };
    // SAFETY: `ptr` proved the 12 MAC bytes are inside the frame; the frame starts 4-aligned
    // (after XDP_PACKET_HEADROOM), and the MACs sit 4-aligned in `Element` (offset 8).
    unsafe { eth.write(e.macs()) };
    count(&VNF_VIP_STATS, pool, pkt);
    count(&VNF_ELEM_STATS, element::stats_index(pool, idx), pkt);
    action
}

/// An IP fragment: dropped when its destination address is a VIP's, passed otherwise.
#[inline(always)]
fn fragment(pkt: &Packet, t: &Tuple) -> u32 {
    let key = VipKey { addr: t.dst, port_be: 0, proto: t.proto, _pad: 0 };
    if VNF_VIPS.get_ptr(key).is_some() {
        return drop(pkt, Reason::Fragment);
    }
    xdp_action::XDP_PASS
}

/// An ICMP error quoting a packet that an element sent from a VIP: forwarded to the element
/// that owns the flow, or dropped when no element does. Errors about other packets pass.
#[inline(always)]
fn icmp_error(ctx: &XdpContext, pkt: &Packet, quoted: &Tuple) -> u32 {
    // The quoted packet went VIP:vport → client:cport.
    let Some(pool) = vip_pool(&quoted.src, quoted.sport_be, quoted.proto) else {
        return xdp_action::XDP_PASS;
    };
    let key = FlowKey {
        src: quoted.dst,
        sport_be: quoted.dport_be,
        dport_be: quoted.sport_be,
        pool: pool as u16,
        proto: quoted.proto,
        _pad: 0,
    };
    let Some(sel) = VNF_POOLS.get(pool) else {
        return drop(pkt, Reason::IcmpNoFlow);
    };
    let slot = sel.slot & 1;
    if let Some(v) = VNF_FLOWS.get_ptr(key) {
        // SAFETY: a plain 4-byte read right after the lookup.
        let idx = unsafe { (*v).element };
        if let Some(e) = element_at(pool, slot, idx)
            && e.keeps_flows()
        {
            count(&VNF_REASONS, Reason::IcmpForwarded as u32, pkt);
            return forward(ctx, pkt, pool, idx, e);
        }
    }
    drop(pkt, Reason::IcmpNoFlow)
}

#[inline(always)]
fn drop(pkt: &Packet, reason: Reason) -> u32 {
    count(&VNF_REASONS, reason as u32, pkt);
    xdp_action::XDP_DROP
}

#[inline(always)]
fn count<const N: usize>(map: &PerCpuArray<Counters, N>, idx: u32, pkt: &Packet) {
    if let Some(c) = map.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, and XDP does not preempt itself on a CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += pkt.len() as u64;
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
