//! The flow-affinity table (`VNF_FLOWS`) and the flow hash.

use crate::{abi_type, addr::Addr};

/// Key of `VNF_FLOWS`: a client flow to one pool. 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Client (source) address.
    pub src: Addr,
    /// Client (source) port, network byte order.
    pub sport_be: u16,
    /// VIP (destination) port, network byte order.
    pub dport_be: u16,
    /// Pool index.
    pub pool: u16,
    /// L4 protocol.
    pub proto: u8,
    /// Always 0.
    pub _pad: u8,
}
abi_type!(FlowKey, 24);

/// Value of `VNF_FLOWS`: the element the flow is pinned to. 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowValue {
    /// Element index within the pool.
    pub element: u32,
}
abi_type!(FlowValue, 4);

const K1: u64 = 0x9e37_79b9_7f4a_7c15;
const K2: u64 = 0xc2b2_ae3d_27d4_eb4f;
const K3: u64 = 0x1656_67b1_9e37_79f9;

/// Hash of a flow, for its Maglev position. Every vnfpool node computes the same value for the
/// same flow (no per-node seed), which is what lets nodes behind ECMP agree without sharing
/// flow tables. The destination address is left out: the pool already identifies it.
#[inline(always)]
#[must_use]
pub const fn hash(key: &FlowKey) -> u32 {
    let a = (key.src[0] as u64) | ((key.src[1] as u64) << 32);
    let b = (key.src[2] as u64) | ((key.src[3] as u64) << 32);
    let c = (key.sport_be as u64)
        | ((key.dport_be as u64) << 16)
        | ((key.pool as u64) << 32)
        | ((key.proto as u64) << 48);
    let mut h = a.wrapping_mul(K1) ^ b.wrapping_mul(K2).rotate_left(29) ^ c.wrapping_mul(K3);
    // A 64-bit finaliser (xor-shift-multiply) so that every input bit reaches the top 32 bits,
    // which are the ones `ring::position` uses.
    h ^= h >> 32;
    h = h.wrapping_mul(K1);
    h ^= h >> 29;
    (h >> 32) as u32
}
