//! Byte-level checks of the encoder against layouts written out by hand from the uapi
//! headers (`linux/netlink.h`, `linux/netfilter/nfnetlink.h`, `nf_tables.h`, `nf_nat.h`).
//! Netlink headers are host-endian (this is x86_64: little-endian); nf_tables attribute
//! values are big-endian.

use super::*;

/// `meta l4proto tcp th dport 8080 dnat ip to 10.88.0.2:80 comment "container web"`.
fn publish_rule() -> Rule {
    Rule {
        chain: "publish".into(),
        exprs: vec![
            Expr::Meta {
                key: MetaKey::L4Proto,
                dreg: Reg::R1,
            },
            Expr::Cmp {
                op: CmpOp::Eq,
                sreg: Reg::R1,
                data: vec![6],
            },
            Expr::Payload {
                base: PayloadBase::Transport,
                offset: 2,
                len: 2,
                dreg: Reg::R1,
            },
            Expr::Cmp {
                op: CmpOp::Eq,
                sreg: Reg::R1,
                data: 8080u16.to_be_bytes().to_vec(),
            },
            Expr::Immediate {
                dreg: Reg::R1,
                data: vec![10, 88, 0, 2],
            },
            Expr::Immediate {
                dreg: Reg::R2,
                data: 80u16.to_be_bytes().to_vec(),
            },
            Expr::Dnat {
                addr: Reg::R1,
                port: Reg::R2,
            },
        ],
        comment: Some("container web".into()),
    }
}

#[rustfmt::skip]
const PUBLISH_RULE_ATTRS: &[u8] = &[
    // NFTA_RULE_TABLE (1) "gantry\0": 4 + 7 = 11, padded to 12
    11, 0, 1, 0, b'g', b'a', b'n', b't', b'r', b'y', 0, 0,
    // NFTA_RULE_CHAIN (2) "publish\0": 4 + 8
    12, 0, 2, 0, b'p', b'u', b'b', b'l', b'i', b's', b'h', 0,
    // NFTA_RULE_EXPRESSIONS (4 | NLA_F_NESTED): 4 + 36 + 44 + 52 + 44 + 44 + 44 + 56 = 324
    0x44, 0x01, 0x04, 0x80,
      // NFTA_LIST_ELEM (1 | NESTED): meta, 4 + 12 + 20
      36, 0, 1, 0x80,
        9, 0, 1, 0, b'm', b'e', b't', b'a', 0, 0, 0, 0,     // NFTA_EXPR_NAME "meta"
        20, 0, 2, 0x80,                                     // NFTA_EXPR_DATA
          8, 0, 1, 0, 0, 0, 0, 1,                           // NFTA_META_DREG = NFT_REG_1
          8, 0, 2, 0, 0, 0, 0, 16,                          // NFTA_META_KEY = NFT_META_L4PROTO
      // cmp eq reg 1 0x06: 4 + 8 + 32
      44, 0, 1, 0x80,
        8, 0, 1, 0, b'c', b'm', b'p', 0,
        32, 0, 2, 0x80,
          8, 0, 1, 0, 0, 0, 0, 1,                           // NFTA_CMP_SREG
          8, 0, 2, 0, 0, 0, 0, 0,                           // NFTA_CMP_OP = NFT_CMP_EQ
          12, 0, 3, 0x80, 5, 0, 1, 0, 6, 0, 0, 0,           // NFTA_CMP_DATA { NFTA_DATA_VALUE 06 }
      // payload load 2b @ transport header + 2 => reg 1: 4 + 12 + 36
      52, 0, 1, 0x80,
        12, 0, 1, 0, b'p', b'a', b'y', b'l', b'o', b'a', b'd', 0,
        36, 0, 2, 0x80,
          8, 0, 1, 0, 0, 0, 0, 1,                           // NFTA_PAYLOAD_DREG
          8, 0, 2, 0, 0, 0, 0, 2,                           // NFTA_PAYLOAD_BASE = TRANSPORT
          8, 0, 3, 0, 0, 0, 0, 2,                           // NFTA_PAYLOAD_OFFSET
          8, 0, 4, 0, 0, 0, 0, 2,                           // NFTA_PAYLOAD_LEN
      // cmp eq reg 1 8080 (0x1f90, network order)
      44, 0, 1, 0x80,
        8, 0, 1, 0, b'c', b'm', b'p', 0,
        32, 0, 2, 0x80,
          8, 0, 1, 0, 0, 0, 0, 1,
          8, 0, 2, 0, 0, 0, 0, 0,
          12, 0, 3, 0x80, 6, 0, 1, 0, 0x1f, 0x90, 0, 0,
      // immediate reg 1 10.88.0.2: 4 + 16 + 24
      44, 0, 1, 0x80,
        14, 0, 1, 0, b'i', b'm', b'm', b'e', b'd', b'i', b'a', b't', b'e', 0, 0, 0,
        24, 0, 2, 0x80,
          8, 0, 1, 0, 0, 0, 0, 1,                           // NFTA_IMMEDIATE_DREG
          12, 0, 2, 0x80, 8, 0, 1, 0, 10, 88, 0, 2,         // NFTA_IMMEDIATE_DATA { VALUE }
      // immediate reg 2 80
      44, 0, 1, 0x80,
        14, 0, 1, 0, b'i', b'm', b'm', b'e', b'd', b'i', b'a', b't', b'e', 0, 0, 0,
        24, 0, 2, 0x80,
          8, 0, 1, 0, 0, 0, 0, 2,
          12, 0, 2, 0x80, 6, 0, 1, 0, 0, 80, 0, 0,
      // nat dnat ip addr_min reg 1 proto_min reg 2 flags 0x3: 4 + 8 + 44
      56, 0, 1, 0x80,
        8, 0, 1, 0, b'n', b'a', b't', 0,
        44, 0, 2, 0x80,
          8, 0, 1, 0, 0, 0, 0, 1,                           // NFTA_NAT_TYPE = NFT_NAT_DNAT
          8, 0, 2, 0, 0, 0, 0, 2,                           // NFTA_NAT_FAMILY = NFPROTO_IPV4
          8, 0, 3, 0, 0, 0, 0, 1,                           // NFTA_NAT_REG_ADDR_MIN
          8, 0, 5, 0, 0, 0, 0, 2,                           // NFTA_NAT_REG_PROTO_MIN
          8, 0, 7, 0, 0, 0, 0, 3,                           // NFTA_NAT_FLAGS = MAP_IPS | PROTO_SPECIFIED
    // NFTA_RULE_USERDATA (7): libnftnl comment TLV { 0, 14, "container web\0" }
    20, 0, 7, 0, 0, 14,
      b'c', b'o', b'n', b't', b'a', b'i', b'n', b'e', b'r', b' ', b'w', b'e', b'b', 0,
];

#[test]
fn a_dnat_rule_encodes_as_the_uapi_lays_it_out() {
    assert_eq!(rule_attrs("gantry", &publish_rule()), PUBLISH_RULE_ATTRS);
}

#[test]
fn a_batch_is_framed_by_begin_and_end_with_an_ack_asked_per_message() {
    let mut b = Batch::new("gantry");
    b.add_rule(&publish_rule());
    let bytes = b.encode(100);
    #[rustfmt::skip]
    let begin: &[u8] = &[
        20, 0, 0, 0,          // nlmsg_len: header + nfgenmsg
        0x10, 0,              // NFNL_MSG_BATCH_BEGIN
        1, 0,                 // NLM_F_REQUEST
        100, 0, 0, 0,         // seq
        0, 0, 0, 0,           // port id
        0, 0, 0, 10,          // AF_UNSPEC, NFNETLINK_V0, res_id = NFNL_SUBSYS_NFTABLES (be16)
    ];
    assert_eq!(&bytes[..20], begin);
    let rule_len = 20 + PUBLISH_RULE_ATTRS.len();
    #[rustfmt::skip]
    let rule_header: &[u8] = &[
        (rule_len & 0xff) as u8, (rule_len >> 8) as u8, 0, 0,
        6, 10,                // NFT_MSG_NEWRULE | NFNL_SUBSYS_NFTABLES << 8
        0x05, 0x0c,           // REQUEST | ACK | CREATE (0x400) | APPEND (0x800)
        101, 0, 0, 0,
        0, 0, 0, 0,
        2, 0, 0, 0,           // NFPROTO_IPV4, version 0, res_id 0
    ];
    assert_eq!(&bytes[20..40], rule_header);
    assert_eq!(
        &bytes[40..40 + PUBLISH_RULE_ATTRS.len()],
        PUBLISH_RULE_ATTRS
    );
    #[rustfmt::skip]
    let end: &[u8] = &[20, 0, 0, 0, 0x11, 0, 1, 0, 102, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10];
    assert_eq!(&bytes[40 + PUBLISH_RULE_ATTRS.len()..], end);
}

#[test]
fn a_jump_is_an_immediate_verdict_naming_the_chain() {
    let mut a = Attrs::default();
    Expr::Jump("publish".into()).encode_data(&mut a);
    #[rustfmt::skip]
    let want: &[u8] = &[
        8, 0, 1, 0, 0, 0, 0, 0,                  // NFTA_IMMEDIATE_DREG = NFT_REG_VERDICT
        28, 0, 2, 0x80,                          // NFTA_IMMEDIATE_DATA: 4 + 24
          24, 0, 2, 0x80,                        // NFTA_DATA_VERDICT: 4 + 8 + 12
            8, 0, 1, 0, 0xff, 0xff, 0xff, 0xfd,  // NFTA_VERDICT_CODE = NFT_JUMP (-3)
            12, 0, 2, 0, b'p', b'u', b'b', b'l', b'i', b's', b'h', 0,
    ];
    assert_eq!(a.0, want);
}

#[test]
fn accept_and_drop_are_immediate_verdicts_without_a_chain() {
    for (e, code) in [(Expr::Accept, 1u8), (Expr::Drop, 0)] {
        let mut a = Attrs::default();
        e.encode_data(&mut a);
        #[rustfmt::skip]
        let want: &[u8] = &[
            8, 0, 1, 0, 0, 0, 0, 0,              // NFTA_IMMEDIATE_DREG = NFT_REG_VERDICT
            16, 0, 2, 0x80,                      // NFTA_IMMEDIATE_DATA: 4 + 12
              12, 0, 2, 0x80,                    // NFTA_DATA_VERDICT: 4 + 8
                8, 0, 1, 0, 0, 0, 0, code,       // NFTA_VERDICT_CODE = NF_ACCEPT / NF_DROP
        ];
        assert_eq!(a.0, want, "{e:?}");
        assert_eq!(e.name(), "immediate");
    }
}

#[test]
fn a_listed_rule_is_parsed_with_its_handle_and_comment() {
    let mut a = Attrs::default();
    a.str(NFTA_RULE_TABLE, "gantry");
    a.str(NFTA_RULE_CHAIN, "publish");
    a.u64(NFTA_RULE_HANDLE, 42);
    a.bytes(NFTA_RULE_USERDATA, &comment_udata("container web"));
    let mut payload = vec![2, 0, 0, 0];
    payload.extend(a.0);
    let r = parse_rule(&payload).unwrap();
    assert_eq!(
        r,
        ListedRule {
            chain: "publish".into(),
            handle: 42,
            comment: Some("container web".into())
        }
    );
    assert!(parse_rule(&[2, 0, 0, 0]).is_err());
}

#[test]
fn user_data_other_than_a_comment_is_skipped() {
    // A type-1 TLV first (as nft writes for other metadata), then the comment.
    let mut u = vec![1, 2, 0xaa, 0xbb];
    u.extend(comment_udata("x"));
    assert_eq!(comment_of_udata(&u).as_deref(), Some("x"));
    assert_eq!(comment_of_udata(&[0, 9, b'a']), None, "truncated");
}

#[test]
fn a_datagram_splits_into_its_messages_and_a_bad_length_is_malformed() {
    let mut dgram = message(NLMSG_ERROR, 0, 7, 0, 0, &[0, 0, 0, 0]);
    dgram.extend(message(NLMSG_DONE, NLM_F_MULTI, 8, 0, 0, &[]));
    let replies = split_datagram(&dgram).unwrap();
    assert_eq!(replies.len(), 2);
    assert_eq!((replies[0].kind, replies[0].seq), (NLMSG_ERROR, 7));
    assert_eq!(parse_error(&replies[0]).unwrap(), (0, None));
    assert_eq!(
        (replies[1].kind, replies[1].flags),
        (NLMSG_DONE, NLM_F_MULTI)
    );
    dgram[0] = 200;
    assert!(matches!(
        split_datagram(&dgram),
        Err(NftError::Malformed(_))
    ));
}

/// Found by the `netlink_nft` fuzz target: an `NLMSG_ERROR` whose code is `i32::MIN`
/// overflowed the negation (a panic with overflow checks on, a negative errno without).
#[test]
fn an_error_code_without_a_positive_errno_is_malformed() {
    let reply = Reply {
        kind: NLMSG_ERROR,
        flags: 0,
        seq: 1,
        payload: i32::MIN.to_ne_bytes().to_vec(),
    };
    assert!(matches!(parse_error(&reply), Err(NftError::Malformed(_))));
    let reply = Reply {
        payload: (-17i32).to_ne_bytes().to_vec(),
        ..reply
    };
    assert_eq!(parse_error(&reply).unwrap(), (17, None));
}
