//! vnfpool XDP data plane: steers packets for a pool's virtual address (VIP:port/protocol)
//! to the pool's elements, keeping flow affinity, by L2 direct server return.
//!
//! Per packet: parse (Ethernet, VLAN, IPv4/IPv6, TCP/UDP/ICMP errors) → VIP pre-filter →
//! pool entry (or the VIP table on a pre-filter collision) → flow table (hit on a usable
//! element: done) → the pool's live Maglev table → record the flow (TCP on SYN only, within
//! the flood guard) → rewrite MACs → `XDP_TX` or `XDP_REDIRECT`.
//! Everything that is not for a VIP leaves with `XDP_PASS`, unmodified, except a datagram to
//! the guarded heartbeat listener from a source that is no self-registered element's address,
//! which is dropped (`vnfpool_common::vip::FLAG_HEARTBEAT`).
#![no_std]
#![no_main]

mod parse;

use aya_ebpf::{
    bindings::{BPF_RB_NO_WAKEUP, xdp_action},
    btf_maps::{Array, DevMapHash, HashMap, PerCpuArray, RingBuf},
    helpers::{
        bpf_jiffies64,
        generated::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    },
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use aya_log_ebpf::info;
use parse::{ETH_HLEN, IPPROTO_TCP, Packet, Parsed, Stop, TCP_ACK, TCP_SYN, Tuple};
use vnfpool_common::{
    addr::{self, Addr},
    element::{self, Element, STATE_UP},
    flow::{self, FlowBucket, FlowCtl, FlowEvent, FlowGuard, FlowKey, Way},
    maps,
    pool::Pool,
    ring::{self, RingChunk},
    stats::{Counters, PoolCounters, REASON_ENTRIES, Reason},
    tunnel::{self, ENCAP_NONE, ENCAP_VXLAN, Tunnel},
    vip::{self, VipKey, VipMeta},
};

// Map sizes are the compile-time defaults of `vnfpool_common::maps`; the loader may change
// VNF_FLOWS and VNF_RING before load. Owner = the side that writes the map.

/// Owner: daemon. VIP:port/proto → pool. Pinned.
#[btf_map]
static VNF_VIPS: HashMap<VipKey, VipMeta, { maps::MAX_VIP_ENTRIES as usize }> = HashMap::new();
/// Owner: daemon. 16-bit fold of VIP:port/proto → 0 (no VIP), port/proto/pool of its one VIP, or collision. Pinned.
#[btf_map]
static VNF_VIP_FILTER: Array<u32, { maps::VIP_FILTER_SIZE as usize }> = Array::new();
/// Owner: daemon. Source address → self-registered elements there: who may reach the guarded
/// heartbeat listener. Allocated on use, pinned.
#[btf_map]
static VNF_HB_PEERS: HashMap<Addr, u32, { maps::MAX_HB_PEERS as usize }, { maps::BPF_F_NO_PREALLOC }> =
    HashMap::new();
/// Owner: daemon (one atomic store per switch). pool → live slot. mmap-able, pinned.
#[btf_map]
static VNF_POOLS: Array<Pool, { maps::MAX_POOLS as usize }, { maps::BPF_F_MMAPABLE }> = Array::new();
/// Owner: daemon (spare slot only). (pool*2+slot)*MAX_ELEMENTS+element → where to send. mmap-able, pinned.
#[btf_map]
static VNF_ELEMS: Array<Element, { maps::ELEM_ENTRIES as usize }, { maps::BPF_F_MMAPABLE }> = Array::new();
/// Owner: daemon (spare slot only). At an element's index in VNF_ELEMS: the outer headers of an
/// element reached through a tunnel. mmap-able, pinned.
#[btf_map]
static VNF_TUNNELS: Array<Tunnel, { maps::ELEM_ENTRIES as usize }, { maps::BPF_F_MMAPABLE }> = Array::new();
/// Owner: daemon (spare slot only). Arena of all Maglev tables, 4 positions per entry. mmap-able, pinned.
#[btf_map]
static VNF_RING: Array<RingChunk, { maps::DEFAULT_RING_CHUNKS as usize }, { maps::BPF_F_MMAPABLE }> =
    Array::new();
/// Owner: program. Flow affinity: 8-way buckets of packed entries (see vnfpool_common::flow).
/// mmap-able only for its page-aligned values: each bucket is then exactly one cache line. Pinned.
#[btf_map]
static VNF_FLOWS: Array<
    FlowBucket,
    { flow::buckets(maps::DEFAULT_FLOW_TABLE_SIZE) as usize },
    { maps::BPF_F_MMAPABLE },
> = Array::new();

/// Owner: loader (bucket mask, once, before attach) and program (stamp). Pinned.
#[btf_map]
static VNF_FLOW_CTL: Array<FlowCtl, 1> = Array::new();

/// Owner: program. Per CPU, the flood guard's count of flows recorded in the current stamp unit. Pinned.
#[btf_map]
static VNF_FLOW_GUARD: PerCpuArray<FlowGuard, 1> = PerCpuArray::new();

/// Owner: program (producer) and daemon (consumer, flow sync). One `FlowEvent` per flow recorded
/// while `FlowCtl::events` is on, 1 MiB. Pinned.
#[btf_map]
static VNF_FLOW_EVENTS: RingBuf<FlowEvent, { maps::FLOW_EVENTS_SIZE as usize }> = RingBuf::new();

/// Owner: daemon. ifindex → egress device for XDP_REDIRECT (the kernel keeps no BTF for device maps). Pinned.
#[btf_map]
static VNF_TX_PORTS: DevMapHash<{ maps::MAX_TX_PORTS as usize }> = DevMapHash::new();
/// Owner: program. pool → packets/bytes forwarded by the pool and by each of its elements, per CPU. Pinned.
#[btf_map]
static VNF_POOL_STATS: PerCpuArray<PoolCounters, { maps::MAX_POOLS as usize }> = PerCpuArray::new();
/// Owner: program. `Reason` → packets/bytes, per CPU. Pinned.
#[btf_map]
static VNF_REASONS: PerCpuArray<Counters, { REASON_ENTRIES as usize }> = PerCpuArray::new();

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
            count(Reason::Malformed, pkt.len());
            xdp_action::XDP_PASS
        }
    }
}

/// What a destination is.
enum Dest {
    /// Not a VIP: the kernel's.
    Other,
    /// A VIP of this pool, with its entry.
    Pool(u32, &'static Pool),
    /// The guarded heartbeat listener.
    Heartbeat,
}

/// What the destination `addr`, `port_be`, `proto` is.
#[inline(always)]
fn destination(addr: &Addr, port_be: u16, proto: u8) -> Dest {
    // verifier: the index is masked to the filter's size inside filter_index.
    let Some(&v) = VNF_VIP_FILTER.get(vip::filter_index(addr, port_be, proto)) else {
        return Dest::Other;
    };
    if v == 0 {
        return Dest::Other;
    }
    if v != vip::FILTER_COLLISION {
        // One VIP folds here: its port and protocol are in the value, its address in the
        // pool's entry, which the packet needs anyway (the pool index depends on the value
        // read, so the entry is read after it on every CPU).
        if v & vip::FILTER_PORT_PROTO != vip::filter_port_proto(port_be, proto) {
            return Dest::Other;
        }
        let pool = vip::filter_pool(v);
        return match VNF_POOLS.get(pool) {
            Some(p) if same_addr(&p.vip, addr) => Dest::Pool(pool, p),
            _ => Dest::Other,
        };
    }
    let key = VipKey {
        addr: *addr,
        port_be,
        proto,
        _pad: 0,
    };
    // SAFETY: the value is copied out at once; no reference outlives the lookup.
    let Some(meta) = (unsafe { VNF_VIPS.get(key) }).copied() else {
        return Dest::Other;
    };
    if meta.flags != 0 {
        // An address entry routes nothing by itself.
        return if meta.flags & vip::FLAG_HEARTBEAT != 0 {
            Dest::Heartbeat
        } else {
            Dest::Other
        };
    }
    match VNF_POOLS.get(meta.pool) {
        Some(p) => Dest::Pool(meta.pool, p),
        None => Dest::Other,
    }
}

/// A datagram to the guarded heartbeat listener: passed when its source is a self-registered
/// element's address, dropped otherwise (a flood from elsewhere never reaches the socket).
#[inline(always)]
fn heartbeat(pkt: &Packet, t: &Tuple) -> u32 {
    if VNF_HB_PEERS.get_ptr(t.src).is_some() {
        return xdp_action::XDP_PASS;
    }
    drop(pkt, Reason::HeartbeatRefused)
}

/// Word-by-word equality (a derived `==` on arrays may become a `memcmp` call, which BPF lacks).
#[inline(always)]
fn same_addr(a: &Addr, b: &Addr) -> bool {
    a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3]
}

/// A TCP or UDP packet.
#[inline(always)]
fn steer(ctx: &XdpContext, pkt: &Packet, t: &Tuple) -> u32 {
    let (pool, p) = match destination(&t.dst, t.dport_be, t.proto) {
        Dest::Pool(pool, p) => (pool, p),
        Dest::Other => return xdp_action::XDP_PASS,
        Dest::Heartbeat => return heartbeat(pkt, t),
    };
    let key = FlowKey {
        src: t.src,
        sport_be: t.sport_be,
        dport_be: t.dport_be,
        pool: pool as u16,
        proto: t.proto,
        _pad: 0,
    };
    // The one read of the selector: from here on only this slot is used (atomic switch).
    let slot = p.sel.slot & 1;
    let Some(ctl) = VNF_FLOW_CTL.get_ptr_mut(0) else {
        return drop(pkt, Reason::NoElement);
    };
    // SAFETY: a valid array value; aligned loads.
    let (mask, cached, secret) = unsafe { ((*ctl).bucket_mask, u64::from((*ctl).stamp), (*ctl).hash_key) };
    let h = flow::hash64(&key, &secret);
    let Some(bucket) = VNF_FLOWS.get_ptr_mut(flow::bucket(h, mask)) else {
        return drop(pkt, Reason::NoElement);
    };
    let fp = flow::fingerprint(h);
    // A new flow's element (its Maglev position, then its entry) is read before the bucket is
    // searched, although a flow the table holds does not use it: a new flow's bucket, a line
    // not in the caches, then loads during those two reads instead of before them
    // (docs/decisions/2026-12-07-flow-hash-input-and-early-element-read.md).
    let picked = pick(p, pool, slot, (h >> 32) as u32);

    // SAFETY: `bucket` points at a value of the array, valid for the whole run.
    let found = unsafe { (*bucket).find(fp) };
    let mut held = None;
    if let Way::Hit(way, entry) = found {
        let idx = flow::entry_element(entry);
        if let Some(e) = element_at(pool, slot, idx)
            && e.keeps_flows()
        {
            // A stamp at most as old as the last insert anywhere: recency only matters when an
            // insert picks a victim, and every insert refreshes the clock first.
            if flow::entry_stamp(entry) != cached {
                store(bucket, way, flow::restamp(entry, cached));
            }
            held = Some((idx, e));
        }
    }
    // verifier: one `forward` for held and new flows alike. Each inlined copy of it (its
    // tunnels, its ICMP answers) is verified once per path that reaches it; two copies took
    // the program with its drop log on past the verifier's million instructions.
    let (idx, e) = match (held, picked) {
        (Some(held), _) => held,
        (None, Some(picked)) => picked,
        (None, None) => return drop(pkt, Reason::NoElement),
    };
    // The frame's length before `forward` (a tunnel makes the frame's pointers stale).
    let len = pkt.len();
    let action = forward(ctx, pkt, t, pool, slot, idx, e, h as u32);
    if held.is_some() {
        return action;
    }
    let now = flow::stamp(jiffies());
    if now != cached {
        // SAFETY: as above; an aligned 4-byte store (a race between CPUs leaves one of
        // two current stamps).
        unsafe { core::ptr::write_volatile(&raw mut (*ctl).stamp, now as u32) };
    }
    let entry = flow::entry(fp, now, idx);
    match found {
        // A flow re-picked keeps its way (and way 0 its hand): no other flow loses its
        // entry, and a stale entry must not send the flow back when its element returns.
        Way::Hit(way, old) => store(bucket, way, flow::with_hand(entry, flow::hand(old))),
        // A new entry only for a flow's first packet, and within the flood guard.
        Way::Empty(_) | Way::Full if !may_record(t, now, ctl) => {
            count(Reason::FlowNotRecorded, len);
            return action;
        }
        Way::Empty(way) => store(bucket, way, entry),
        Way::Full => {
            // SAFETY: as above.
            let way = unsafe { (*bucket).victim(now) };
            store(bucket, way, entry);
            // The hand moves past the way just written; way 0 is read again as it may
            // be that way. Its own 8-byte store: a race with another CPU's store to
            // way 0 keeps one of the two, as for any way.
            // SAFETY: as above.
            let way0 = unsafe { core::ptr::read_volatile(&raw const (*bucket).ways[0]) };
            store(bucket, 0, flow::with_hand(way0, way + 1));
        }
    }
    // SAFETY: as above; an aligned 4-byte load of a line already read.
    if unsafe { (*ctl).events } != 0 {
        emit(len, h, pool, idx);
    }
    action
}

/// Whether a flow the table does not hold gets an entry at stamp `now`.
///
/// TCP only on a SYN without ACK: a mid-stream packet of a flow whose start this node did not
/// see (its entry was replaced, or ECMP moved it here and flow sync did not) goes where the
/// Maglev table says, as every node would send it, without taking a way from a recorded flow;
/// a flood of spoofed non-SYN segments thus records nothing. Then the flood guard: at most
/// `FlowCtl::new_flows_per_unit` entries per CPU per stamp unit (`flow::FlowGuard`).
#[inline(always)]
fn may_record(t: &Tuple, now: u64, ctl: *const FlowCtl) -> bool {
    if t.proto == IPPROTO_TCP && t.tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return false;
    }
    // SAFETY: a valid array value; an aligned 4-byte load of a line already read.
    let budget = unsafe { (*ctl).new_flows_per_unit };
    match VNF_FLOW_GUARD.get_ptr_mut(0) {
        // SAFETY: per-CPU value, and XDP does not preempt itself on a CPU.
        Some(g) => flow::guard_admits(unsafe { &mut *g }, now, budget),
        None => true,
    }
}

/// Hands the flow just recorded to the daemon, for peer nodes. A full ring loses the event,
/// counted; the packet goes on all the same.
#[inline(always)]
fn emit(len: usize, hash: u64, pool: u32, idx: u32) {
    let event = FlowEvent {
        hash,
        pool: pool as u16,
        element: idx as u16,
        exact_bits: 64,
        age: 0,
        _pad: [0; 2],
    };
    // Reserve, write in place, submit without waking the reader (it polls the ring): 18-30 ns
    // per new flow here, against 39 for `output` without wake-up (a copy from the stack) and 65
    // for `output` with the kernel's adaptive wake-up
    // (docs/decisions/2026-12-06-flow-events-ring.md).
    match VNF_FLOW_EVENTS.reserve(0) {
        Some(mut slot) => {
            slot.write(event);
            slot.submit(BPF_RB_NO_WAKEUP as u64);
        }
        None => count(Reason::FlowEventLost, len),
    }
}

/// A flow's hash and bucket, for paths that do not otherwise need `VNF_FLOW_CTL`.
#[inline(always)]
fn flow_bucket(key: &FlowKey) -> Option<(u64, *mut FlowBucket)> {
    let ctl = VNF_FLOW_CTL.get(0)?;
    let h = flow::hash64(key, &ctl.hash_key);
    Some((h, VNF_FLOWS.get_ptr_mut(flow::bucket(h, ctl.bucket_mask))?))
}

#[inline(always)]
fn store(bucket: *mut FlowBucket, way: usize, entry: u64) {
    // verifier: masked to the bucket's eight ways, so no bounds check (and no panic path)
    // is generated.
    let way = way & (flow::WAYS - 1);
    // SAFETY: `bucket` is a valid array value; one aligned 8-byte store.
    unsafe { core::ptr::write_volatile(&raw mut (*bucket).ways[way], entry) };
}

/// The kernel's tick count: the verifier inlines the helper as one load of `jiffies`.
#[inline(always)]
fn jiffies() -> u64 {
    // SAFETY: a helper without arguments or side effects.
    unsafe { bpf_jiffies64() }
}

/// The element a new flow with Maglev hash `hash` gets from the live table of pool `p`, with
/// its index, when it is up (the table holds only up elements of its own slot: the check
/// guards a broken writer).
#[inline(always)]
fn pick(p: &Pool, pool: u32, slot: u32, hash: u32) -> Option<(u32, &'static Element)> {
    // verifier: `slot` is 0 or 1, the array's length.
    let meta = &p.slots[(slot & 1) as usize];
    if meta.ring_size == 0 {
        return None;
    }
    let pos = ring::position(hash, meta.ring_size);
    let chunk = VNF_RING.get_ptr(meta.ring_offset + pos / ring::LANES)?;
    // verifier: the lane is masked to 0..4, the array's length.
    let lane = (pos & (ring::LANES - 1)) as usize;
    // SAFETY: a valid array value. Volatile, as the state below, so that the compiler keeps
    // the loads where they are written (`steer` issues them early on purpose) instead of
    // sinking them to their use.
    let idx = u32::from(unsafe { core::ptr::read_volatile(&raw const (*chunk).elements[lane]) });
    let e = element_at(pool, slot, idx)?;
    // SAFETY: a valid array value.
    (unsafe { core::ptr::read_volatile(&raw const e.state) } == STATE_UP).then_some((idx, e))
}

#[inline(always)]
fn element_at(pool: u32, slot: u32, idx: u32) -> Option<&'static Element> {
    if idx >= maps::MAX_ELEMENTS {
        return None;
    }
    VNF_ELEMS.get(element::elem_index(pool, slot, idx))
}

/// Sends the frame to `e`: rewrites its MACs, or encapsulates it for a tunnelled element.
/// `t` is the packet's tuple (its IP header's place and length), `hash` the flow's hash (the
/// outer headers' entropy).
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "inlined; each argument is a register the caller already holds"
)]
fn forward(
    ctx: &XdpContext,
    pkt: &Packet,
    t: &Tuple,
    pool: u32,
    slot: u32,
    idx: u32,
    e: &Element,
    hash: u32,
) -> u32 {
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
    let bytes = pkt.len() as u64;
    if e.encap == ENCAP_NONE {
        // SAFETY: `ptr` proved the 12 MAC bytes are inside the frame; the frame starts 4-aligned
        // (after XDP_PACKET_HEADROOM), and the MACs sit 4-aligned in `Element` (offset 8).
        unsafe { eth.write(e.macs()) };
    } else {
        let done = encapsulate(ctx, t, element::elem_index(pool, slot, idx), e, hash);
        if done != ENCAPSULATED {
            // Counted, not logged: see `tally`.
            if done & TOO_BIG == 0 {
                tally(Reason::EncapFailed, bytes);
                return xdp_action::XDP_DROP;
            }
            tally(Reason::TooBig, bytes);
            return too_big(ctx, pkt, t, done as u16);
        }
    }
    if let Some(c) = VNF_POOL_STATS.get_ptr_mut(pool) {
        // verifier: masked to the element table's size, the array's length.
        let idx = (idx & (maps::MAX_ELEMENTS - 1)) as usize;
        // SAFETY: per-CPU value, and XDP does not preempt itself on a CPU.
        unsafe {
            (*c).vip.packets += 1;
            (*c).vip.bytes += bytes;
            (*c).elements[idx].packets += 1;
            (*c).elements[idx].bytes += bytes;
        }
    }
    action
}

/// What `encapsulate` answers: the frame is ready to go.
const ENCAPSULATED: u32 = 0;
/// What `encapsulate` answers: the encapsulated form would exceed the path's MTU; the low 16
/// bits are the largest inner packet that fits.
const TOO_BIG: u32 = 1 << 16;
/// What `encapsulate` answers: no headroom, or no tunnel entry.
const ENCAP_FAILED: u32 = 2 << 16;

/// Puts the outer headers of element `e`'s tunnel in front of the packet's IP header `t`:
/// a new Ethernet header to the next hop, the outer IP header from this node to the element,
/// and for GUE and VXLAN a UDP header (VXLAN: then its header and the inner Ethernet header; see
/// `vnfpool_common::tunnel`). `index` is the element's in `VNF_ELEMS`. Answers
/// [`ENCAPSULATED`], [`TOO_BIG`] with what fits, or [`ENCAP_FAILED`] (the caller drops the
/// frame).
///
/// verifier: a function of its own, not inlined. Its paths (family, UDP, VXLAN) join again at
/// its return with a handful of answers, so the verifier checks what follows a forward once
/// per answer rather than once per path; inlined, they took the program with its drop log on
/// past the verifier's million instructions. Five arguments, the most a BPF call has.
#[inline(never)]
fn encapsulate(ctx: &XdpContext, t: &Tuple, index: u32, e: &Element, hash: u32) -> u32 {
    let Some(tun) = VNF_TUNNELS.get(index) else {
        return ENCAP_FAILED;
    };
    let v4 = addr::is_v4(&t.dst);
    let hdr = tunnel::overhead(e.encap, v4);
    let inner = t.ip_len as usize;
    if inner + hdr > tun.mtu as usize {
        return TOO_BIG | u32::from((tun.mtu as usize).saturating_sub(hdr) as u16);
    }
    // The inner IP packet stays where it is; the head moves back so that the Ethernet header
    // and the outer headers end right before it (a VLAN tag of the arriving frame is dropped
    // with its Ethernet header). The frame start stays 4-aligned: every header length here
    // is a multiple of 4, and so is the way from the old start to the IP header, less 14.
    let grow = (ETH_HLEN + hdr) as i32 - i32::from(t.l3);
    // SAFETY: the helper only moves `data` within the frame's headroom, or fails.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -grow) } != 0 {
        return ENCAP_FAILED;
    }
    let pkt = Packet::new(ctx);
    let udp = tunnel::over_udp(e.encap);
    // The outer header, from the Ethernet type on (offset 12), in 16-bit words: the frame start
    // is 4-aligned, so these stores are aligned and no word straddles a cache line.
    let be = u16::to_be;
    let words = |w: u32| {
        let b = w.to_ne_bytes();
        (u16::from_ne_bytes([b[0], b[1]]), u16::from_ne_bytes([b[2], b[3]]))
    };
    let udp_at;
    if v4 {
        let total = (inner + hdr) as u16;
        let proto = if udp {
            tunnel::IPPROTO_UDP
        } else {
            tunnel::IPPROTO_IPIP
        };
        let (s0, s1) = words(tun.src[3]);
        let (d0, d1) = words(tun.dst[3]);
        let header = [
            be(0x0800),
            be(0x4500),
            be(total),
            0,
            be(tunnel::IPV4_DF),
            be(u16::from(tunnel::OUTER_TTL) << 8 | u16::from(proto)),
            be(tunnel::ipv4_checksum(tun.csum_base, total)),
            s0,
            s1,
            d0,
            d1,
        ];
        let Ok(p) = pkt.ptr::<[u16; 11]>(12) else {
            return ENCAP_FAILED;
        };
        // SAFETY: `ptr` proved the 22 bytes are inside the frame; 2-aligned (see above).
        unsafe { p.write(header) };
        udp_at = ETH_HLEN + tunnel::IPV4_HLEN;
    } else {
        let payload = (inner + hdr - tunnel::IPV6_HLEN) as u16;
        let next = if udp {
            tunnel::IPPROTO_UDP
        } else {
            tunnel::IPPROTO_IPV6
        };
        let (f0, f1) = words(tunnel::ipv6_first_word(hash).to_be());
        let (s0, s1) = words(tun.src[0]);
        let (s2, s3) = words(tun.src[1]);
        let (s4, s5) = words(tun.src[2]);
        let (s6, s7) = words(tun.src[3]);
        let (d0, d1) = words(tun.dst[0]);
        let (d2, d3) = words(tun.dst[1]);
        let (d4, d5) = words(tun.dst[2]);
        let (d6, d7) = words(tun.dst[3]);
        let header = [
            be(0x86dd),
            f0,
            f1,
            be(payload),
            be(u16::from(next) << 8 | u16::from(tunnel::OUTER_TTL)),
            s0,
            s1,
            s2,
            s3,
            s4,
            s5,
            s6,
            s7,
            d0,
            d1,
            d2,
            d3,
            d4,
            d5,
            d6,
            d7,
        ];
        let Ok(p) = pkt.ptr::<[u16; 21]>(12) else {
            return ENCAP_FAILED;
        };
        // SAFETY: as above, 42 bytes.
        unsafe { p.write(header) };
        udp_at = ETH_HLEN + tunnel::IPV6_HLEN;
    }
    if udp {
        let header = [
            be(tunnel::entropy_port(hash)),
            tun.port_be,
            be((inner + hdr - (udp_at - ETH_HLEN)) as u16),
            // No checksum: allowed for IPv4, and for IPv6 in tunnels (RFC 6935); the inner
            // packet carries its own.
            0,
        ];
        let Ok(p) = pkt.ptr::<[u16; 4]>(udp_at) else {
            return ENCAP_FAILED;
        };
        // SAFETY: as above, 8 bytes.
        unsafe { p.write(header) };
    }
    if e.encap == ENCAP_VXLAN {
        // The VXLAN header, then the inner Ethernet header: to the element's VXLAN device, from
        // this host's egress interface, of the inner packet's family.
        let (v0, v1) = words(tunnel::VXLAN_FLAGS.to_be());
        let (n0, n1) = words(tun.vni_be);
        let m = tun.inner_mac;
        let s = e.src_mac;
        let header = [
            v0,
            v1,
            n0,
            n1,
            u16::from_ne_bytes([m[0], m[1]]),
            u16::from_ne_bytes([m[2], m[3]]),
            u16::from_ne_bytes([m[4], m[5]]),
            u16::from_ne_bytes([s[0], s[1]]),
            u16::from_ne_bytes([s[2], s[3]]),
            u16::from_ne_bytes([s[4], s[5]]),
            be(if v4 { 0x0800 } else { 0x86dd }),
        ];
        let Ok(p) = pkt.ptr::<[u16; 11]>(udp_at + tunnel::UDP_HLEN) else {
            return ENCAP_FAILED;
        };
        // SAFETY: as above, 22 bytes.
        unsafe { p.write(header) };
    }
    let Ok(eth) = pkt.ptr::<[u32; 3]>(0) else {
        return ENCAP_FAILED;
    };
    // SAFETY: as in `forward`.
    unsafe { eth.write(e.macs()) };
    ENCAPSULATED
}

/// Answers a packet too big for its element's tunnel, as a router on the way would: ICMP
/// "fragmentation needed" (type 3, code 4) or ICMPv6 "packet too big" with `fits`, the largest
/// packet that fits, back to the client from the VIP, out of the interface it came in on (its
/// VLAN tags kept). The answer quotes the packet's IP header and the first 8 bytes after it,
/// which is what the client's stack needs to find the socket. An IPv4 packet with options is
/// dropped unanswered (a 20-byte header is all the fixed-size quote holds), and so is an ICMP
/// error too big for the tunnel: no ICMP error answers another (RFC 1122 3.2.2).
///
/// verifier: not inlined, as `encapsulate`.
#[inline(never)]
fn too_big(ctx: &XdpContext, pkt: &Packet, t: &Tuple, fits: u16) -> u32 {
    // verifier: bounded, as a value read back from the caller's stack is any u16 here, and a
    // packet offset that may reach 64 KiB earns no readable range. The parser puts the IP
    // header at 14, 18 or 22 (two VLAN tags at most), which the mask keeps as it is.
    let l3 = usize::from(t.l3) & 31;
    let Ok(macs) = pkt.load::<[u16; 6]>(0) else {
        return xdp_action::XDP_DROP;
    };
    let eth = [macs[3], macs[4], macs[5], macs[0], macs[1], macs[2]];
    let be = u16::to_be;
    let answer_len = if addr::is_v4(&t.dst) {
        let Ok(quote) = pkt.load::<[u16; 14]>(l3) else {
            return xdp_action::XDP_DROP;
        };
        // Version 4, a 20-byte header: the first byte of the quote; not ICMP: the tenth.
        if quote[0] & be(0xff00) != be(0x4500) || quote[4] & be(0x00ff) == be(1) {
            return xdp_action::XDP_DROP;
        }
        // From the VIP (the packet's destination) to the client.
        let (s, d) = ([quote[6], quote[7]], [quote[8], quote[9]]);
        let mut ip = [
            be(0x4500),
            be(20 + 8 + 28),
            0,
            0,
            be(u16::from(tunnel::OUTER_TTL) << 8 | 1),
            0,
            d[0],
            d[1],
            s[0],
            s[1],
        ];
        ip[5] = checksum(0, &ip);
        let mut icmp = [0u16; 18];
        icmp[0] = be(3 << 8 | 4);
        icmp[3] = be(fits);
        let mut i = 0;
        while i < 14 {
            icmp[4 + i] = quote[i];
            i += 1;
        }
        icmp[1] = checksum(0, &icmp);
        let Ok(p) = pkt.ptr::<([u16; 10], [u16; 18])>(l3) else {
            return xdp_action::XDP_DROP;
        };
        // SAFETY: `ptr` proved the 56 bytes are inside the frame (the packet was larger than
        // the tunnel's MTU); 2-aligned stores.
        unsafe { p.write((ip, icmp)) };
        l3 + 56
    } else {
        let Ok(quote) = pkt.load::<[u16; 24]>(l3) else {
            return xdp_action::XDP_DROP;
        };
        // Not ICMPv6 (next header 58, the seventh byte).
        if quote[3] & be(0xff00) == be(58 << 8) {
            return xdp_action::XDP_DROP;
        }
        let fits = u32::from(fits).max(1280);
        let mut ip = [0u16; 20];
        ip[0] = be(0x6000);
        ip[2] = be(8 + 48);
        ip[3] = be(58 << 8 | u16::from(tunnel::OUTER_TTL));
        let mut i = 0;
        while i < 8 {
            // From the VIP (the packet's destination) to the client.
            ip[4 + i] = quote[12 + i];
            ip[12 + i] = quote[4 + i];
            i += 1;
        }
        let mut icmp = [0u16; 28];
        icmp[0] = be(2 << 8);
        icmp[2] = be((fits >> 16) as u16);
        icmp[3] = be(fits as u16);
        let mut i = 0;
        while i < 24 {
            icmp[4 + i] = quote[i];
            i += 1;
        }
        // The pseudo-header: both addresses, the ICMPv6 length and next header 58.
        let pseudo = checksum_sum(checksum_sum(0, &ip[4..20]), &[be(8 + 48), be(58)]);
        icmp[1] = checksum(pseudo, &icmp);
        let Ok(p) = pkt.ptr::<([u16; 20], [u16; 28])>(l3) else {
            return xdp_action::XDP_DROP;
        };
        // SAFETY: `ptr` proved the 96 bytes are inside the frame (the packet was larger than
        // the tunnel's MTU, at least 1,280 bytes); 2-aligned stores.
        unsafe { p.write((ip, icmp)) };
        l3 + 96
    };
    let Ok(p) = pkt.ptr::<[u16; 6]>(0) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: as above; the Ethernet addresses, swapped.
    unsafe { p.write(eth) };
    // SAFETY: shrinks the frame to the answer; the helper checks the bounds.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, answer_len as i32 - pkt.len() as i32) } != 0 {
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_TX
}

/// `acc` plus the 16-bit words of `words`, as read from memory (the ones'-complement sum does
/// not depend on byte order, RFC 1071).
#[inline(always)]
fn checksum_sum(acc: u32, words: &[u16]) -> u32 {
    let mut sum = acc;
    let mut i = 0;
    while i < words.len() {
        sum += u32::from(words[i]);
        i += 1;
    }
    sum
}

/// The Internet checksum of `words` after `acc`, to be stored as it is (memory order).
#[inline(always)]
fn checksum(acc: u32, words: &[u16]) -> u16 {
    let mut sum = checksum_sum(acc, words);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// An IP fragment: dropped when its destination address is a VIP's, passed otherwise.
#[inline(always)]
fn fragment(pkt: &Packet, t: &Tuple) -> u32 {
    let key = VipKey {
        addr: t.dst,
        port_be: 0,
        proto: t.proto,
        _pad: 0,
    };
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
    let Dest::Pool(pool, p) = destination(&quoted.src, quoted.sport_be, quoted.proto) else {
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
    let slot = p.sel.slot & 1;
    if let Some((h, bucket)) = flow_bucket(&key)
        // SAFETY: `bucket` points at a value of the array, valid for the whole run.
        && let Way::Hit(_, entry) = unsafe { (*bucket).find(flow::fingerprint(h)) }
    {
        let idx = flow::entry_element(entry);
        if let Some(e) = element_at(pool, slot, idx)
            && e.keeps_flows()
        {
            count(Reason::IcmpForwarded, pkt.len());
            return forward(ctx, pkt, quoted, pool, slot, idx, e, h as u32);
        }
    }
    drop(pkt, Reason::IcmpNoFlow)
}

#[inline(always)]
fn drop(pkt: &Packet, reason: Reason) -> u32 {
    count(reason, pkt.len());
    xdp_action::XDP_DROP
}

/// Counts a packet under `reason` in `VNF_REASONS`. With the drop log on (the loader's
/// `--xdp-log`), the 1st, 2nd, 4th, 8th… packet of each reason on each CPU is also logged
/// (aya-log, read by the daemon into its log). Off, the log level in `.rodata` is 0: the
/// verifier knows the branch is never taken and removes the log code from the loaded program.
///
/// verifier: the frame's length `len`, not the frame: after a tunnel's headers went in front,
/// the frame's pointers on the stack are stale, and a count reading them would keep the
/// verifier from seeing that a tunnelled and an L2 packet leave `forward` in the same state.
#[inline(always)]
fn count(reason: Reason, len: usize) {
    let n = tally(reason, len as u64);
    if n != 0 && n & (n - 1) == 0 {
        log_reason(reason, n, len as u64);
    }
}

/// Counts a packet of `bytes` under `reason` in `VNF_REASONS`, without the drop log; the
/// reason's packets so far on this CPU (0 if the map could not be read).
///
/// verifier: the tunnels' reasons (`too_big`, `encap_failed`) are counted so. With the drop
/// log on, every place that may log is checked once per path that reaches it, and two more in
/// `forward`, which most paths reach, took the program past the verifier's million
/// instructions.
#[inline(always)]
fn tally(reason: Reason, bytes: u64) -> u64 {
    let Some(c) = VNF_REASONS.get_ptr_mut(reason as u32) else {
        return 0;
    };
    // SAFETY: per-CPU slot, and XDP does not preempt itself on a CPU.
    unsafe {
        (*c).packets += 1;
        (*c).bytes += bytes;
        (*c).packets
    }
}

/// The drop log's record of `count`: a function of its own, so that its code and registers
/// stay out of the packet paths it is called from.
#[inline(never)]
fn log_reason(reason: Reason, n: u64, len: u64) {
    info!(
        (),
        "{} (packet {} of this reason on this CPU, {} bytes)",
        reason.name(),
        n,
        len
    );
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
