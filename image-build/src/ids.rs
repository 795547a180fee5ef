//! Identifiers derived from the build's inputs: the same inputs always give the same disk
//! GUID, partition GUIDs, file system UUIDs and verity salt, so two builds are identical.

use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

use ring::digest::{Context, SHA256};

/// A SHA-256 digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    pub fn of(data: &[u8]) -> Self {
        let mut ctx = Context::new(&SHA256);
        ctx.update(data);
        Self::finish(ctx)
    }

    /// Hashes a file by streaming it.
    pub fn of_file(path: &Path) -> std::io::Result<Self> {
        let mut file = std::fs::File::open(path)?;
        let mut ctx = Context::new(&SHA256);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(Self::finish(ctx));
            }
            ctx.update(&buf[..n]);
        }
    }

    fn finish(ctx: Context) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        Self(out)
    }

    pub fn hex(&self) -> String {
        hex(&self.0)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The root of all identifiers of one build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed(Sha256);

impl Seed {
    /// Combines the inputs; each is length-prefixed so that no two lists collide.
    pub fn new(inputs: &[&[u8]]) -> Self {
        let mut ctx = Context::new(&SHA256);
        for input in inputs {
            ctx.update(&(input.len() as u64).to_le_bytes());
            ctx.update(input);
        }
        Seed(Sha256::finish(ctx))
    }

    fn derive(&self, purpose: &str) -> Sha256 {
        Seed::new(&[&self.0 .0, purpose.as_bytes()]).0
    }

    /// An RFC 9562 version-8 (custom) UUID for `purpose`.
    pub fn uuid(&self, purpose: &str) -> String {
        let mut b = [0u8; 16];
        b.copy_from_slice(&self.derive(purpose).0[..16]);
        b[6] = (b[6] & 0x0f) | 0x80;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex(&b);
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    /// 32 bytes of hex for `purpose` (the dm-verity salt).
    pub fn hex32(&self, purpose: &str) -> String {
        self.derive(purpose).hex()
    }

    /// A FAT volume id (8 hex digits).
    pub fn volume_id(&self, purpose: &str) -> String {
        hex(&self.derive(purpose).0[..4])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_the_standard_vector() {
        assert_eq!(
            Sha256::of(b"abc").hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn identifiers_are_stable_distinct_and_well_formed() {
        let seed = Seed::new(&[b"gantry", b"0.1.0"]);
        let a = seed.uuid("ROOT-A");
        assert_eq!(a, Seed::new(&[b"gantry", b"0.1.0"]).uuid("ROOT-A"));
        assert_ne!(a, seed.uuid("ROOT-B"));
        assert_ne!(a, Seed::new(&[b"gantry", b"0.1.1"]).uuid("ROOT-A"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8", "version nibble in {a}");
        assert!(
            matches!(&a[19..20], "8" | "9" | "a" | "b"),
            "variant in {a}"
        );
        assert_eq!(seed.volume_id("esp").len(), 8);
    }

    #[test]
    fn inputs_are_length_prefixed() {
        assert_ne!(Seed::new(&[b"ab", b"c"]), Seed::new(&[b"a", b"bc"]));
    }
}
