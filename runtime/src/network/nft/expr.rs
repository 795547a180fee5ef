//! nf_tables expressions and their attributes (`enum nft_<name>_attributes` in
//! `linux/netfilter/nf_tables.h`): the ones Gantry's ruleset uses.

use super::{Attrs, NFPROTO_IPV4};

const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
/// `NFT_JUMP`.
const NFT_JUMP: i32 = -3;
/// `NF_DROP` and `NF_ACCEPT` (`linux/netfilter.h`), as verdict codes.
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;

/// Netfilter hooks of the inet families (`enum nf_inet_hooks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting = 0,
    Input = 1,
    Forward = 2,
    Output = 3,
    Postrouting = 4,
}

/// nf_tables registers: the verdict register and the first two 16-byte data registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reg {
    Verdict = 0,
    R1 = 1,
    R2 = 2,
}

/// `enum nft_meta_keys`, the ones we load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    IifName = 6,
    OifName = 7,
    L4Proto = 16,
}

/// `enum nft_payload_bases`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadBase {
    Network = 1,
    Transport = 2,
}

/// `enum nft_cmp_ops`, the ones we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq = 0,
    Neq = 1,
}

/// `enum nft_ct_keys`, the ones we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtKey {
    /// `ct state`: a bit per `enum ip_conntrack_info` (see [`CT_STATE_ESTABLISHED`]).
    State = 0,
    Status = 2,
}

/// `enum nft_fib_result`, the one we use: the route type (`RTN_*`) of an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FibResult {
    AddrType = 3,
}

/// `NFTA_FIB_F_DADDR`: look up the destination address.
pub const FIB_F_DADDR: u32 = 1 << 1;
/// `RTN_LOCAL`: an address of this host.
pub const RTN_LOCAL: u32 = 2;
/// `IPS_DST_NAT` in `enum ip_conntrack_status`: the connection was destination-NATed.
pub const IPS_DST_NAT: u32 = 1 << 5;
/// `NF_CT_STATE_BIT(IP_CT_ESTABLISHED)`, `ct state established` (host-endian u32).
pub const CT_STATE_ESTABLISHED: u32 = 1 << 1;
/// `NF_CT_STATE_BIT(IP_CT_RELATED)`, `ct state related`.
pub const CT_STATE_RELATED: u32 = 1 << 2;
/// `NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED`.
pub const NAT_RANGE_MAP_IPS_AND_PROTO: u32 = 0x1 | 0x2;

/// One nf_tables expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Meta {
        key: MetaKey,
        dreg: Reg,
    },
    Payload {
        base: PayloadBase,
        offset: u32,
        len: u32,
        dreg: Reg,
    },
    /// `dreg = (sreg & mask) ^ xor`; mask and xor are as long as the operand.
    Bitwise {
        sreg: Reg,
        dreg: Reg,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    Cmp {
        op: CmpOp,
        sreg: Reg,
        data: Vec<u8>,
    },
    Ct {
        key: CtKey,
        dreg: Reg,
    },
    Fib {
        result: FibResult,
        flags: u32,
        dreg: Reg,
    },
    /// Loads a value into a data register.
    Immediate {
        dreg: Reg,
        data: Vec<u8>,
    },
    /// Jumps to a chain of the same table.
    Jump(String),
    /// The verdict `accept`.
    Accept,
    /// The verdict `drop`.
    Drop,
    Counter,
    /// Destination NAT to the address in `addr` and the port in `port`.
    Dnat {
        addr: Reg,
        port: Reg,
    },
    Masquerade,
}

impl Expr {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Expr::Meta { .. } => "meta",
            Expr::Payload { .. } => "payload",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Cmp { .. } => "cmp",
            Expr::Ct { .. } => "ct",
            Expr::Fib { .. } => "fib",
            Expr::Immediate { .. } | Expr::Jump(_) | Expr::Accept | Expr::Drop => "immediate",
            Expr::Counter => "counter",
            Expr::Dnat { .. } => "nat",
            Expr::Masquerade => "masq",
        }
    }

    /// The expression's own attributes (inside `NFTA_EXPR_DATA`), numbered as in the
    /// kernel's `enum nft_<name>_attributes`.
    pub(super) fn encode_data(&self, b: &mut Attrs) {
        let reg = |r: Reg| r as u32;
        match self {
            Expr::Meta { key, dreg } => {
                b.u32(1, reg(*dreg)); // NFTA_META_DREG
                b.u32(2, *key as u32); // NFTA_META_KEY
            }
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                b.u32(1, reg(*dreg)); // NFTA_PAYLOAD_DREG
                b.u32(2, *base as u32); // NFTA_PAYLOAD_BASE
                b.u32(3, *offset); // NFTA_PAYLOAD_OFFSET
                b.u32(4, *len); // NFTA_PAYLOAD_LEN
            }
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => {
                b.u32(1, reg(*sreg)); // NFTA_BITWISE_SREG
                b.u32(2, reg(*dreg)); // NFTA_BITWISE_DREG
                b.u32(3, mask.len() as u32); // NFTA_BITWISE_LEN
                b.nested(4, |d| d.bytes(NFTA_DATA_VALUE, mask)); // NFTA_BITWISE_MASK
                b.nested(5, |d| d.bytes(NFTA_DATA_VALUE, xor)); // NFTA_BITWISE_XOR
            }
            Expr::Cmp { op, sreg, data } => {
                b.u32(1, reg(*sreg)); // NFTA_CMP_SREG
                b.u32(2, *op as u32); // NFTA_CMP_OP
                b.nested(3, |d| d.bytes(NFTA_DATA_VALUE, data)); // NFTA_CMP_DATA
            }
            Expr::Ct { key, dreg } => {
                b.u32(1, reg(*dreg)); // NFTA_CT_DREG
                b.u32(2, *key as u32); // NFTA_CT_KEY
            }
            Expr::Fib {
                result,
                flags,
                dreg,
            } => {
                b.u32(1, reg(*dreg)); // NFTA_FIB_DREG
                b.u32(2, *result as u32); // NFTA_FIB_RESULT
                b.u32(3, *flags); // NFTA_FIB_FLAGS
            }
            Expr::Immediate { dreg, data } => {
                b.u32(1, reg(*dreg)); // NFTA_IMMEDIATE_DREG
                b.nested(2, |d| d.bytes(NFTA_DATA_VALUE, data)); // NFTA_IMMEDIATE_DATA
            }
            Expr::Jump(chain) => {
                b.u32(1, Reg::Verdict as u32);
                b.nested(2, |d| {
                    d.nested(NFTA_DATA_VERDICT, |v| {
                        v.u32(NFTA_VERDICT_CODE, NFT_JUMP as u32);
                        v.str(NFTA_VERDICT_CHAIN, chain);
                    })
                });
            }
            Expr::Accept | Expr::Drop => {
                let code = if *self == Expr::Accept {
                    NF_ACCEPT
                } else {
                    NF_DROP
                };
                b.u32(1, Reg::Verdict as u32);
                b.nested(2, |d| {
                    d.nested(NFTA_DATA_VERDICT, |v| v.u32(NFTA_VERDICT_CODE, code))
                });
            }
            Expr::Counter | Expr::Masquerade => {}
            Expr::Dnat { addr, port } => {
                b.u32(1, 1); // NFTA_NAT_TYPE = NFT_NAT_DNAT
                b.u32(2, u32::from(NFPROTO_IPV4)); // NFTA_NAT_FAMILY
                b.u32(3, reg(*addr)); // NFTA_NAT_REG_ADDR_MIN
                b.u32(5, reg(*port)); // NFTA_NAT_REG_PROTO_MIN
                b.u32(7, NAT_RANGE_MAP_IPS_AND_PROTO); // NFTA_NAT_FLAGS
            }
        }
    }
}
