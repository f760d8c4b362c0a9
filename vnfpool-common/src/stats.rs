//! Per-CPU counters (`VNF_VIP_STATS`, `VNF_ELEM_STATS`, `VNF_REASONS`).

use crate::abi_type;

/// Packets and bytes. 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counters {
    /// Packets seen.
    pub packets: u64,
    /// Bytes seen (whole frames).
    pub bytes: u64,
}
abi_type!(Counters, 16);

/// Why the program did not forward a packet it looked at, or passed it on for the kernel:
/// the index into `VNF_REASONS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A VIP packet with no usable element (empty Maglev table): dropped.
    NoElement = 0,
    /// An IP fragment addressed to a VIP: dropped (fragments carry no usable port, and
    /// reassembly is the element's job behind a stateful front end, not ours).
    Fragment = 1,
    /// An ICMP error about a VIP flow that the flow table does not know: dropped.
    IcmpNoFlow = 2,
    /// A VIP packet whose element's egress interface is missing from `VNF_TX_PORTS`: dropped.
    NoTxPort = 3,
    /// A truncated or malformed header: passed to the kernel, which drops or answers it.
    Malformed = 4,
    /// An ICMP error about a VIP flow, forwarded to that flow's element.
    IcmpForwarded = 5,
}

/// Entries of `VNF_REASONS`.
pub const REASONS: u32 = 6;

impl Reason {
    /// Every reason, by index.
    pub const ALL: [Reason; REASONS as usize] = [
        Reason::NoElement,
        Reason::Fragment,
        Reason::IcmpNoFlow,
        Reason::NoTxPort,
        Reason::Malformed,
        Reason::IcmpForwarded,
    ];

    /// Stable name for metrics and `vnfpool status`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Reason::NoElement => "no_element",
            Reason::Fragment => "fragment",
            Reason::IcmpNoFlow => "icmp_no_flow",
            Reason::NoTxPort => "no_tx_port",
            Reason::Malformed => "malformed",
            Reason::IcmpForwarded => "icmp_forwarded",
        }
    }
}
