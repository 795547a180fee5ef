//! Layer extraction: one OCI/Docker layer, a tar stream that may be gzip- or
//! zstd-compressed, unpacked into a directory that overlayfs can stack as a lower dir.
//!
//! # Overlay form
//!
//! Layers delete files of the layers below with AUFS-style whiteout entries; overlayfs
//! reads deletions differently, so they are converted as they are unpacked:
//!
//! - `D/.wh.<name>` becomes a character device 0:0 `D/<name>`, which hides `<name>`;
//! - `D/.wh..wh..opq` sets `trusted.overlay.opaque=y` on `D` (made if missing), which
//!   hides everything below `D` in lower layers while `D`'s own entries in this layer
//!   stay;
//! - other `.wh..wh.` names (AUFS's `.wh..wh.plnk` hard-link directory, `.wh..wh.aufs`)
//!   are skipped with everything under them, so a hard link into them fails as a missing
//!   target: only very old Docker-on-AUFS exports have them;
//! - a whiteout of nothing (`.wh.`), of `.` or of `..` is refused.
//!
//! Opaque marks need `CAP_SYS_ADMIN`, and whiteouts `CAP_MKNOD` on kernels before 5.8
//! (later ones let anyone make a 0:0 character device); without them
//! [`LayerError::NeedsRoot`] says so. Xattrs named `trusted.overlay.*` in the archive are
//! refused: they would steer overlayfs (redirects, metacopy) and no layer writer makes
//! them; whiteouts are how a layer speaks to overlayfs.
//!
//! # Path safety
//!
//! Nothing is unpacked by the tar crate: the stream is walked here (`tar::Header` only
//! holds the blocks and splits the name fields) and every object is made with a `*at`
//! call on a directory descriptor. The crate's own entry iterator does not fit: it reads
//! PAX and GNU long-name payloads into memory whatever their size, its PAX parser splits
//! records on newlines (which breaks binary xattrs such as `security.capability`), and in
//! raw mode it ignores the PAX `size` record.
//!
//! - Names are read as Docker does: a leading `/` or `./` is dropped (`/etc/x` is
//!   `etc/x`, inside the layer), and so are empty and `.` components. A `..` component
//!   anywhere, an empty name, a NUL byte, a name over 4096 bytes or a component over 255
//!   is refused. Only a directory may name the root (`./`, common in hand-made layers):
//!   it sets the root's own owner, mode and mtime.
//! - Parent directories are opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//!   RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`, so writing through a symlink, even one
//!   the layer made a moment ago (`evil -> /etc`, then `evil/passwd`), is refused.
//!   Missing parents are made, 0755.
//! - A later entry for a path replaces the earlier one: what was there is unlinked (a
//!   directory with everything in it) and the new object made with `O_CREAT | O_EXCL |
//!   O_NOFOLLOW` or its own `*at` call, so a last component is never followed either. A
//!   directory over a directory keeps it and updates its metadata.
//! - A hard link's target is read like a name (so `/etc/passwd` means the layer's own
//!   `etc/passwd`), its parent opened the same safe way, and linked with `linkat(…, 0)`,
//!   which links a symlink itself rather than what it points to. A target missing from
//!   the layer is an error.
//! - Symlink targets are data: they may point anywhere (`/bin/sh -> busybox`,
//!   `lib -> usr/lib`) and are resolved later inside the container's root.
//!
//! # The stream
//!
//! - PAX (`x`) and GNU long-name (`L`, `K`) payloads over 1 MiB are refused before they
//!   are read, as are two of a kind for one entry; global PAX headers (`g`) are skipped,
//!   as Docker does. Applied PAX records: `path`, `linkpath`, `size`, `uid`, `gid`,
//!   `mtime` and `SCHILY.xattr.*`; a GNU long name wins over PAX `path`, as in Go.
//! - Numeric fields are read as Go's archive/tar reads them: octal or base-256, and an
//!   empty field is 0 (the tar crate refuses those, yet `tar::Builder` writes them).
//! - Supported types: regular files (`0`, `7`, and NUL, which means a directory when the
//!   name ends in `/`), hard links, symlinks, character and block devices, directories and
//!   FIFOs. As in Go's archive/tar, only regular files carry data whatever the others'
//!   size fields say. Everything else (GNU sparse files, `S` or PAX `GNU.sparse.*`, GNU
//!   dumpdirs, multi-volume and volume headers, unknown types) is refused: skipping them
//!   would silently leave a file out of the image.
//! - A stream that stops inside a header, file data or padding is
//!   [`LayerError::Truncated`], as is a cut-off gzip or zstd stream. A missing
//!   end-of-archive marker is accepted, as Docker and containerd do, but only when the
//!   stream ends exactly between entries. A zero block followed by anything but a second
//!   zero block or the end is refused (as Go's archive/tar does).
//! - Whatever follows the end marker is read and hashed, so the diff ID is the sha256 of
//!   the whole uncompressed stream, what `sha256sum` gives for the `.tar`.
//!
//! # Metadata
//!
//! Modes keep setuid, setgid and sticky (set after the owner, as chown clears them).
//! Numeric owners are set only when running as root. Xattrs come from the PAX records;
//! those of symlinks and device nodes are set through `/proc/self/fd/<parent>/<name>`,
//! which needs `/proc`. Mtimes keep nanoseconds; atime is set to mtime. Directories are
//! made 0700 and get their mode and mtime after all entries, deepest first: writing into
//! a directory changes its mtime, and a read-only mode would stop the writing when not
//! root. Hard links take nothing from their header: they share the target's
//! inode. Device nodes and FIFOs are made as the layer says.
//!
//! On error `dest` holds a partial tree; the caller removes it.

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use nix::sys::stat::SFlag;

use crate::reference::Digest;

pub(crate) mod archive;
mod header;
mod path;
/// Writes a file's data and starts writing it to disk every [`Writeback::STEP`] bytes and
/// at the end, without waiting, so that the sync before the layer is put in place finds
/// little left to do and the disk works while the rest is decompressed. The hint is only a
/// hint: its errors change nothing.
struct Writeback<'a> {
    file: &'a std::fs::File,
    written: u64,
    submitted: u64,
}

impl<'a> Writeback<'a> {
    const STEP: u64 = 1 << 20;

    fn new(file: &'a std::fs::File) -> Self {
        Self {
            file,
            written: 0,
            submitted: 0,
        }
    }

    fn submit(&mut self) {
        use std::os::fd::AsRawFd;
        let len = self.written - self.submitted;
        if len == 0 {
            return;
        }
        // SAFETY: the descriptor is open for the duration of the call, and sync_file_range
        // reads no memory of ours. Offsets past i64 cannot occur for a file we wrote.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                self.submitted as i64,
                len as i64,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.submitted = self.written;
    }
}

impl std::io::Write for Writeback<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = (&mut &*self.file).write(buf)?;
        self.written += n as u64;
        if self.written - self.submitted >= Self::STEP {
            self.submit();
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.submit();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
mod tree;

use archive::{Archive, MAX_EXTENSION};
pub use archive::{Kind, Member};
pub use header::Mtime;
use path::LayerPath;
use tree::Tree;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// What [`unpack`] unpacked, or [`walk`] walked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// `sha256:` of the whole uncompressed stream, to compare with the image config's.
    pub diff_id: Digest,
    /// Archive members, not counting extension headers.
    pub entries: u64,
    pub uncompressed_bytes: u64,
}

/// Where in a layer stream something went wrong. Offsets count bytes of the uncompressed
/// stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A member, named as in the archive.
    Entry(String),
    /// A header not read far enough to have a name.
    Header { offset: u64 },
    /// What follows the end-of-archive marker.
    Trailer { offset: u64 },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Entry(name) => write!(f, "layer entry {name:?}"),
            Location::Header { offset } => write!(f, "layer header at byte {offset}"),
            Location::Trailer { offset } => write!(f, "layer trailer at byte {offset}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer destination {}: {source}", path.display())]
    Destination { path: PathBuf, source: io::Error },
    /// The stream could not be read or decompressed.
    #[error("{at}: cannot read the layer stream: {source}")]
    Read { at: Location, source: io::Error },
    #[error("{at}: the layer stream ends early")]
    Truncated { at: Location },
    /// A header that cannot be parsed or is not allowed.
    #[error("{at}: {reason}")]
    Header { at: Location, reason: &'static str },
    #[error("{at}: extension header of {size} bytes is over the {MAX_EXTENSION}-byte limit")]
    ExtensionTooLarge { at: Location, size: u64 },
    #[error("{at}: unsupported entry type {typeflag:?}")]
    UnsupportedType { at: Location, typeflag: char },
    /// A name or link that could write outside the layer or is not allowed.
    #[error("layer entry {entry:?}: {reason}")]
    Refused { entry: String, reason: &'static str },
    #[error("layer entry {entry:?}: parent {parent:?} {reason}")]
    Parent {
        entry: String,
        parent: String,
        reason: &'static str,
    },
    #[error("layer entry {entry:?}: hard link target {target:?}: {reason}")]
    LinkTarget {
        entry: String,
        target: String,
        reason: &'static str,
    },
    #[error("layer entry {entry:?}: cannot {step}: {source}")]
    Io {
        entry: String,
        step: &'static str,
        source: io::Error,
    },
    #[error("layer entry {entry:?}: cannot set xattr {name:?}: {source}")]
    Xattr {
        entry: String,
        name: String,
        source: io::Error,
    },
    #[error("layer entry {entry:?}: {what} needs root ({capability})")]
    NeedsRoot {
        entry: String,
        what: &'static str,
        capability: &'static str,
    },
}

/// Unpacks one layer (a tar stream, possibly compressed) into `dest`, which must be an
/// empty directory the caller created.
pub fn unpack(
    compressed: impl Read,
    compression: Compression,
    dest: &Path,
) -> Result<Unpacked, LayerError> {
    let mut tree = Tree::open(dest)?;
    let start = || Location::Header { offset: 0 };
    let stream: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(compressed),
        // Like Go's gzip reader, read every member of a multi-member stream.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(compressed)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(compressed).map_err(
            |source| LayerError::Read {
                at: start(),
                source,
            },
        )?),
    };
    let mut archive = Archive::new(stream);
    let mut entries = 0;
    while let Some(member) = archive.next_member()? {
        entries += 1;
        apply(&mut tree, &mut archive, &member)?;
    }
    let (diff_id, uncompressed_bytes) = archive.finish()?;
    tree.finish()?;
    Ok(Unpacked {
        diff_id,
        entries,
        uncompressed_bytes,
    })
}

/// Walks an uncompressed layer stream without writing anything, and calls `visit` with
/// each member. The stream is read exactly as [`unpack`] reads it (extension payloads over
/// 1 MiB refused before they are read, a cut-off stream an error, the end marker checked,
/// everything after it hashed into the diff ID), and each member's name, link target and
/// xattrs are checked as [`unpack`] checks them before `visit` sees it. For listing a
/// layer without unpacking it, and for fuzzing the walker.
pub fn walk(stream: impl Read, mut visit: impl FnMut(&Member)) -> Result<Unpacked, LayerError> {
    let mut archive = Archive::new(stream);
    let mut entries = 0;
    while let Some(member) = archive.next_member()? {
        entries += 1;
        step(&member)?;
        visit(&member);
    }
    let (diff_id, uncompressed_bytes) = archive.finish()?;
    Ok(Unpacked {
        diff_id,
        entries,
        uncompressed_bytes,
    })
}

/// What a member's name asks for.
enum Target {
    Path(LayerPath),
    Whiteout(LayerPath),
    Opaque(LayerPath),
    Skip,
}

fn target(path: &LayerPath) -> Result<Target, &'static str> {
    let Some((parent, name)) = path.split_last() else {
        return Ok(Target::Path(LayerPath::root()));
    };
    if parent.components().any(|c| c.starts_with(b".wh..wh.")) {
        return Ok(Target::Skip);
    }
    if name == b".wh..wh..opq" {
        return Ok(Target::Opaque(parent));
    }
    if name.starts_with(b".wh..wh.") {
        return Ok(Target::Skip);
    }
    Ok(match name.strip_prefix(b".wh.") {
        Some(b"" | b"." | b"..") => return Err("whiteout names no file"),
        Some(hidden) => Target::Whiteout(parent.join(hidden)),
        None => Target::Path(path.clone()),
    })
}

/// What one member asks of the tree, once its name, link and xattrs have been checked.
enum Step {
    /// AUFS metadata: nothing to do.
    Skip,
    Opaque(LayerPath),
    Whiteout(LayerPath),
    /// A hard link at the first path to the second.
    Link(LayerPath, LayerPath),
    /// Make the member (anything but a hard link) at this path.
    Make(LayerPath),
}

/// Checks a member's name, link target and xattrs as [`unpack`] and [`walk`] both do, and
/// says what it asks for. Touches nothing.
fn step(member: &Member) -> Result<Step, LayerError> {
    let entry = member.entry();
    let refuse = |reason| LayerError::Refused {
        entry: entry.clone(),
        reason,
    };
    let path = LayerPath::parse(&member.name).map_err(refuse)?;
    if member
        .xattrs
        .iter()
        .any(|(name, _)| name.starts_with(b"trusted.overlay."))
    {
        return Err(refuse(
            "trusted.overlay.* xattrs are made from whiteouts, not taken from archives",
        ));
    }
    let path = match target(&path).map_err(refuse)? {
        Target::Skip => return Ok(Step::Skip),
        Target::Opaque(dir) => return Ok(Step::Opaque(dir)),
        Target::Whiteout(hidden) => return Ok(Step::Whiteout(hidden)),
        Target::Path(path) => path,
    };
    match &member.kind {
        Kind::Symlink(target) if target.is_empty() => Err(refuse("symlink target is empty")),
        Kind::Symlink(target) if target.contains(&0) => {
            Err(refuse("symlink target has a NUL byte"))
        }
        Kind::HardLink(target) => {
            let target = LayerPath::parse(target).map_err(|reason| LayerError::LinkTarget {
                entry: entry.clone(),
                target: String::from_utf8_lossy(target).into_owned(),
                reason,
            })?;
            Ok(Step::Link(path, target))
        }
        _ => Ok(Step::Make(path)),
    }
}

fn apply<R: Read>(
    tree: &mut Tree,
    archive: &mut Archive<R>,
    member: &Member,
) -> Result<(), LayerError> {
    let entry = member.entry();
    let path = match step(member)? {
        Step::Skip => {
            tracing::debug!(entry, "skipping aufs metadata");
            return Ok(());
        }
        Step::Opaque(dir) => return tree.opaque(&entry, &dir),
        Step::Whiteout(hidden) => return tree.whiteout(&entry, &hidden),
        Step::Link(path, target) => return tree.hard_link(&entry, &path, &target),
        Step::Make(path) => path,
    };
    match &member.kind {
        // `step` makes every hard link a `Step::Link`; refused rather than trusted.
        Kind::HardLink(_) => Err(LayerError::Refused {
            entry,
            reason: "hard link without a checked target",
        }),
        Kind::Dir => tree.dir(&entry, &path, member),
        Kind::File => {
            let file = tree.create_file(&entry, &path)?;
            let mut out = Writeback::new(&file);
            archive.copy_data(&mut out)?;
            out.submit();
            tree.finish_file(&entry, &file, member)
        }
        Kind::Symlink(target) => tree.symlink(&entry, &path, target, member),
        Kind::CharDevice { major, minor } => {
            tree.node(&entry, &path, SFlag::S_IFCHR, *major, *minor, member)
        }
        Kind::BlockDevice { major, minor } => {
            tree.node(&entry, &path, SFlag::S_IFBLK, *major, *minor, member)
        }
        Kind::Fifo => tree.node(&entry, &path, SFlag::S_IFIFO, 0, 0, member),
    }
}
