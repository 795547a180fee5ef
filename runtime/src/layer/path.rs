//! Entry names turned, once, into paths that are safe to create beneath the layer root.

/// Longest entry name accepted, as Linux's `PATH_MAX`.
pub(super) const MAX_PATH: usize = 4096;
/// Longest path component accepted, as Linux's `NAME_MAX`.
pub(super) const MAX_COMPONENT: usize = 255;

/// A path beneath the layer root: components joined by `/`, none of them empty, `.` or
/// `..`, none longer than [`MAX_COMPONENT`], no NUL byte. No components is the root itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LayerPath(Vec<u8>);

impl LayerPath {
    /// Reads a name the way Docker does (`/etc/x`, `./etc/x` and `etc//x/` all mean
    /// `etc/x`), refusing what could leave the root or that the kernel would cut short.
    pub(super) fn parse(name: &[u8]) -> Result<Self, &'static str> {
        if name.is_empty() {
            return Err("name is empty");
        }
        if name.contains(&0) {
            return Err("name has a NUL byte");
        }
        if name.len() > MAX_PATH {
            return Err("name is longer than 4096 bytes");
        }
        let mut path = Vec::with_capacity(name.len());
        for component in name.split(|&b| b == b'/') {
            match component {
                b"" | b"." => continue,
                b".." => return Err("name has a '..' component"),
                c if c.len() > MAX_COMPONENT => {
                    return Err("name has a component longer than 255 bytes")
                }
                c => {
                    if !path.is_empty() {
                        path.push(b'/');
                    }
                    path.extend_from_slice(c);
                }
            }
        }
        Ok(LayerPath(path))
    }

    /// The root itself.
    pub(super) fn root() -> Self {
        LayerPath(Vec::new())
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The parent and the last component, or `None` for the root.
    pub(super) fn split_last(&self) -> Option<(LayerPath, &[u8])> {
        if self.0.is_empty() {
            return None;
        }
        Some(match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => (LayerPath(self.0[..i].to_vec()), &self.0[i + 1..]),
            None => (LayerPath::root(), &self.0[..]),
        })
    }

    /// `self` with `name` (one component, checked by the caller) appended.
    pub(super) fn join(&self, name: &[u8]) -> Self {
        let mut path = self.0.clone();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name);
        LayerPath(path)
    }

    pub(super) fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|&b| b == b'/').filter(|c| !c.is_empty())
    }

    pub(super) fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

/// Whether `path` is `ancestor` or lies beneath it (both as [`LayerPath::as_bytes`] gives them).
pub(super) fn is_within(path: &[u8], ancestor: &[u8]) -> bool {
    ancestor.is_empty()
        || path == ancestor
        || (path.starts_with(ancestor) && path.get(ancestor.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_leading_slashes_and_dots_like_docker() {
        for name in ["etc/x", "/etc/x", "./etc/x", "//etc//x/", "./etc/./x"] {
            assert_eq!(
                LayerPath::parse(name.as_bytes()).unwrap().as_bytes(),
                b"etc/x"
            );
        }
        for name in ["./", "/", "."] {
            assert_eq!(
                LayerPath::parse(name.as_bytes()).unwrap(),
                LayerPath::root()
            );
        }
    }

    #[test]
    fn refuses_dotdot_nul_empty_and_overlong_names() {
        let long_component = "a".repeat(256);
        let long_path = "a/".repeat(2049);
        for name in [
            "..",
            "../x",
            "a/../../x",
            "a/..",
            "",
            "a\0b",
            &long_component,
            &long_path,
        ] {
            assert!(LayerPath::parse(name.as_bytes()).is_err(), "{name:?}");
        }
        assert!(LayerPath::parse("a".repeat(255).as_bytes()).is_ok());
        assert!(
            LayerPath::parse(b"...").is_ok(),
            "'...' is an ordinary name"
        );
    }

    #[test]
    fn splits_and_nests() {
        let p = LayerPath::parse(b"a/b/c").unwrap();
        let (parent, name) = p.split_last().unwrap();
        assert_eq!((parent.as_bytes(), name), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(parent.join(b"d").as_bytes(), b"a/b/d");
        assert!(is_within(b"a/b/c", b"a/b") && is_within(b"a/b", b"a/b"));
        assert!(!is_within(b"a/bc", b"a/b") && is_within(b"x", b""));
        assert_eq!(
            LayerPath::parse(b"x").unwrap().split_last().unwrap().0,
            LayerPath::root()
        );
    }
}
