//! What a tar header block and a PAX extension say, read as leniently as Go's archive/tar
//! (which wrote, and reads, most layers) and no further.

use tar::Header;

/// A modification time: seconds since the epoch (maybe negative) and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mtime {
    pub secs: i64,
    pub nanos: u32,
}

/// A numeric header field as Go's archive/tar reads it: big-endian binary when the first
/// byte's high bit is set (GNU's base-256, for values octal cannot hold), otherwise octal
/// digits between spaces and NULs, an empty field meaning 0. The tar crate refuses empty
/// fields, which `tar::Builder` itself writes for unset owners.
pub(super) fn numeric(field: &[u8]) -> Option<u64> {
    match field.first() {
        // Negative base-256 (0xff) means nothing in a size, id, mode or mtime here.
        Some(&0x80) => field[1..]
            .iter()
            .try_fold(0u64, |n, &b| (n >> 56 == 0).then(|| n << 8 | u64::from(b))),
        Some(&b) if b & 0x80 != 0 => None,
        _ => {
            let start = field.iter().position(|&b| b != b' ' && b != 0);
            let end = field.iter().rposition(|&b| b != b' ' && b != 0);
            let digits = match (start, end) {
                (Some(start), Some(end)) => &field[start..=end],
                _ => return Some(0),
            };
            if !digits.iter().all(|b| (b'0'..=b'7').contains(b)) {
                return None;
            }
            digits.iter().try_fold(0u64, |n, &d| {
                n.checked_mul(8)?.checked_add(u64::from(d - b'0'))
            })
        }
    }
}

/// The checksum counts the header's bytes with its own field as spaces; like Go, accept
/// the sum of the bytes read as unsigned or as signed (some old tars did that).
pub(super) fn check_checksum(header: &Header) -> Result<(), &'static str> {
    let want = numeric(&header.as_old().cksum).ok_or("header checksum is malformed")?;
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &b) in header.as_bytes().iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    if i64::try_from(want).is_ok_and(|want| want == unsigned || want == signed) {
        Ok(())
    } else {
        Err("header checksum does not match")
    }
}

pub(super) fn device(header: &Header) -> Result<(u32, u32), &'static str> {
    let (major, minor) = if let Some(h) = header.as_ustar() {
        (&h.dev_major, &h.dev_minor)
    } else if let Some(h) = header.as_gnu() {
        (&h.dev_major, &h.dev_minor)
    } else {
        return Err("device numbers are missing from a pre-posix header");
    };
    let number = |field| numeric(field).and_then(|n| u32::try_from(n).ok());
    number(major)
        .zip(number(minor))
        .ok_or("device numbers are malformed")
}

/// The PAX records Gantry applies; others (atime, uname, comment, …) are read and dropped.
#[derive(Debug, Default)]
pub(super) struct Pax {
    pub path: Option<Vec<u8>>,
    pub linkpath: Option<Vec<u8>>,
    pub size: Option<u64>,
    pub uid: Option<u64>,
    pub gid: Option<u64>,
    pub mtime: Option<Mtime>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub sparse: bool,
}

impl Pax {
    /// Records are `<length> <key>=<value>\n`, the length counting the whole record, so
    /// values may hold newlines and any byte (binary xattrs do). An empty value unsets
    /// a key, as POSIX says.
    pub(super) fn parse(mut data: &[u8]) -> Result<Pax, &'static str> {
        let mut pax = Pax::default();
        while !data.is_empty() {
            let (key, value, rest) = record(data).ok_or("pax record is malformed")?;
            data = rest;
            let set = (!value.is_empty()).then_some(value);
            let number = |v: Option<&[u8]>| -> Result<Option<u64>, &'static str> {
                v.map(|v| {
                    std::str::from_utf8(v)
                        .ok()
                        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|s| s.parse().ok())
                        .ok_or("pax number is malformed")
                })
                .transpose()
            };
            match key {
                b"path" => pax.path = set.map(<[u8]>::to_vec),
                b"linkpath" => pax.linkpath = set.map(<[u8]>::to_vec),
                b"size" => pax.size = number(set)?,
                b"uid" => pax.uid = number(set)?,
                b"gid" => pax.gid = number(set)?,
                b"mtime" => {
                    pax.mtime = set
                        .map(|v| pax_time(v).ok_or("pax mtime is malformed"))
                        .transpose()?
                }
                _ => {
                    if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                        pax.xattrs.push((name.to_vec(), value.to_vec()));
                    } else if key.starts_with(b"GNU.sparse.") {
                        pax.sparse = true;
                    }
                }
            }
        }
        Ok(pax)
    }
}

/// One record: key, value, and the data after it.
fn record(data: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let space = data.iter().position(|&b| b == b' ')?;
    let len = std::str::from_utf8(&data[..space]).ok()?;
    if !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let len: usize = len.parse().ok()?;
    let record = data.get(space + 1..len)?.strip_suffix(b"\n")?;
    let eq = record.iter().position(|&b| b == b'=')?;
    Some((&record[..eq], &record[eq + 1..], &data[len..]))
}

/// `[-]seconds[.fraction]`, the fraction cut to nanoseconds.
fn pax_time(value: &[u8]) -> Option<Mtime> {
    let s = std::str::from_utf8(value).ok()?;
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() || !(whole.bytes().chain(fraction.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = whole.parse().ok()?;
    let nanos: u32 = format!("{:0<9}", &fraction[..fraction.len().min(9)])
        .parse()
        .ok()?;
    Some(match (negative, nanos) {
        (false, _) => Mtime { secs, nanos },
        (true, 0) => Mtime { secs: -secs, nanos },
        (true, _) => Mtime {
            secs: -secs - 1,
            nanos: 1_000_000_000 - nanos,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, value: &[u8]) -> Vec<u8> {
        let body_len = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = body_len + 1;
        while len.to_string().len() + body_len != len {
            len += 1;
        }
        let mut r = format!("{len} {key}=").into_bytes();
        r.extend_from_slice(value);
        r.push(b'\n');
        r
    }

    #[test]
    fn parses_pax_records_with_binary_values() {
        let cap = b"\x01\x00\x00\x02\n\x20\x00\x00";
        let mut data = rec("path", b"a/b");
        data.extend(rec("SCHILY.xattr.security.capability", cap));
        data.extend(rec("mtime", b"1700000000.5"));
        data.extend(rec("uid", b"1000"));
        data.extend(rec("atime", b"1"));
        let pax = Pax::parse(&data).unwrap();
        assert_eq!(pax.path.as_deref(), Some(&b"a/b"[..]));
        assert_eq!(
            pax.xattrs,
            vec![(b"security.capability".to_vec(), cap.to_vec())]
        );
        assert_eq!(
            pax.mtime,
            Some(Mtime {
                secs: 1_700_000_000,
                nanos: 500_000_000
            })
        );
        assert_eq!(pax.uid, Some(1000));
    }

    #[test]
    fn refuses_malformed_pax_records() {
        for data in [
            &b"5 a=b"[..],
            b"99 path=x\n",
            b"x path=x\n",
            b"8 pathx\n",
            b"11 uid=-1\n",
        ] {
            assert!(
                Pax::parse(data).is_err(),
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn reads_numeric_fields_like_go() {
        assert_eq!(numeric(b"0000644\0"), Some(0o644));
        assert_eq!(numeric(b" 644 \0"), Some(0o644));
        assert_eq!(numeric(b"\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(
            numeric(&[0x80, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]),
            Some(2 << 32)
        );
        assert_eq!(numeric(&[0xff; 8]), None);
        assert_eq!(numeric(b"0000648\0"), None);
        assert_eq!(numeric(b"77777777777777777777777"), None);
    }

    #[test]
    fn parses_pax_times() {
        let t = |s: &str| pax_time(s.as_bytes());
        assert_eq!(t("12"), Some(Mtime { secs: 12, nanos: 0 }));
        assert_eq!(t("1.000000001999"), Some(Mtime { secs: 1, nanos: 1 }));
        assert_eq!(
            t("-1.25"),
            Some(Mtime {
                secs: -2,
                nanos: 750_000_000
            })
        );
        assert_eq!(t(".5"), None);
        assert_eq!(t("1e3"), None);
    }
}
