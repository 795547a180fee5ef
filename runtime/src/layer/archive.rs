//! The tar stream of a layer, walked block by block: [`tar::Header`] holds each header
//! block and splits its name fields and `header.rs` reads the rest, but the stream itself
//! (extension headers, sizes, padding, the end marker) is walked here, so that extension
//! payloads are capped before they are read, a stream that stops early is always an
//! error, and every byte is hashed into the diff ID.

use std::io::{self, Read, Write};

use tar::Header;

use super::header::{check_checksum, device, numeric, Mtime, Pax};
use super::{LayerError, Location};
use crate::reference::{Digest, Sha256};

const BLOCK: u64 = 512;
/// The largest PAX (`x`) or GNU long-name (`L`, `K`) payload read into memory.
pub(super) const MAX_EXTENSION: u64 = 1 << 20;

/// An archive member with its extension headers applied, as [`unpack`](super::unpack)
/// and [`walk`](super::walk) see it. Inside the crate, its file data, if any, is read
/// with `Archive::copy_data` or skipped by the next `Archive::next_member`.
#[derive(Debug)]
pub struct Member {
    /// The name as the archive gives it, after GNU long-name and PAX `path` records.
    pub name: Vec<u8>,
    pub kind: Kind,
    /// Permission bits with setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Mtime,
    /// From PAX `SCHILY.xattr.<name>` records, in archive order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Member {
    /// The name for messages.
    pub fn entry(&self) -> String {
        lossy(&self.name)
    }
}

/// What a member is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    /// A hard link to the named member, as the archive writes the name.
    HardLink(Vec<u8>),
    /// A symlink with this target, which is only data.
    Symlink(Vec<u8>),
    Dir,
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// The uncompressed stream, hashed and counted as it is read.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

pub(crate) struct Archive<R> {
    stream: Hashing<R>,
    /// File data of the current member not read yet, then the padding after it.
    data_left: u64,
    padding_left: u64,
    /// The current member's name, for errors while its data is read.
    current: String,
    buf: Vec<u8>,
}

/// PAX extension headers and GNU long names waiting for the member they describe.
#[derive(Default)]
struct Extensions {
    pax: Option<Pax>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

impl Extensions {
    fn is_empty(&self) -> bool {
        self.pax.is_none() && self.long_name.is_none() && self.long_link.is_none()
    }
}

impl<R: Read> Archive<R> {
    pub(crate) fn new(stream: R) -> Self {
        Archive {
            stream: Hashing {
                inner: stream,
                hash: Sha256::new(),
                bytes: 0,
            },
            data_left: 0,
            padding_left: 0,
            current: String::new(),
            buf: vec![0; 64 * 1024],
        }
    }

    /// The next member, after skipping what is left of the current one's data; `None` at
    /// the end-of-archive marker, or when the stream ends cleanly between members.
    pub(crate) fn next_member(&mut self) -> Result<Option<Member>, LayerError> {
        self.skip_data()?;
        let mut ext = Extensions::default();
        loop {
            let offset = self.stream.bytes;
            let at_header = Location::Header { offset };
            let dangling = || LayerError::Header {
                at: Location::Header { offset },
                reason: "extension headers are not followed by an entry",
            };
            let mut header = Header::new_old();
            if !self.read_block(header.as_mut_bytes(), &at_header)? {
                return if ext.is_empty() {
                    Ok(None)
                } else {
                    Err(dangling())
                };
            }
            if header.as_bytes().iter().all(|&b| b == 0) {
                if !ext.is_empty() {
                    return Err(dangling());
                }
                self.end_marker()?;
                return Ok(None);
            }
            check_checksum(&header).map_err(|reason| LayerError::Header {
                at: at_header,
                reason,
            })?;
            let name = lossy(&header.path_bytes());
            let at = Location::Entry(name.clone());
            let duplicate = |at| LayerError::Header {
                at,
                reason: "two extension headers of one kind describe the same entry",
            };
            match header.as_old().linkflag[0] {
                b'x' => {
                    if ext.pax.is_some() {
                        return Err(duplicate(at));
                    }
                    let data = self.extension(&header, &name)?;
                    let pax =
                        Pax::parse(&data).map_err(|reason| LayerError::Header { at, reason })?;
                    ext.pax = Some(pax);
                }
                b'L' => {
                    if ext.long_name.is_some() {
                        return Err(duplicate(at));
                    }
                    ext.long_name = Some(self.extension_name(&header, &name)?);
                }
                b'K' => {
                    if ext.long_link.is_some() {
                        return Err(duplicate(at));
                    }
                    ext.long_link = Some(self.extension_name(&header, &name)?);
                }
                // Global PAX headers describe the archive, not an entry; Docker ignores them.
                b'g' => {
                    if !ext.is_empty() {
                        return Err(dangling());
                    }
                    let size = entry_size(&header, &at)?;
                    self.start_data(size, &name);
                    self.skip_data()?;
                }
                typeflag => return self.member(&header, typeflag, ext).map(Some),
            }
        }
    }

    fn member(
        &mut self,
        header: &Header,
        typeflag: u8,
        ext: Extensions,
    ) -> Result<Member, LayerError> {
        let pax = ext.pax.unwrap_or_default();
        // Precedence as in Go's archive/tar and the tar crate: GNU long name, PAX, header.
        let name = ext
            .long_name
            .or(pax.path)
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let entry = lossy(&name);
        let at = Location::Entry(entry.clone());
        let bad = |reason| LayerError::Header {
            at: at.clone(),
            reason,
        };
        if pax.sparse {
            return Err(bad("gnu sparse files are not supported"));
        }
        let link = ext
            .long_link
            .or(pax.linkpath)
            .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
        let kind = match typeflag {
            b'0' | b'7' => Kind::File,
            // Pre-POSIX archives mark directories with a trailing slash only.
            0 if name.ends_with(b"/") => Kind::Dir,
            0 => Kind::File,
            b'1' => Kind::HardLink(link.ok_or_else(|| bad("hard link has no target"))?),
            b'2' => Kind::Symlink(link.ok_or_else(|| bad("symlink has no target"))?),
            b'3' => {
                let (major, minor) = device(header).map_err(bad)?;
                Kind::CharDevice { major, minor }
            }
            b'4' => {
                let (major, minor) = device(header).map_err(bad)?;
                Kind::BlockDevice { major, minor }
            }
            b'5' => Kind::Dir,
            b'6' => Kind::Fifo,
            other => {
                return Err(LayerError::UnsupportedType {
                    at,
                    typeflag: char::from(other),
                })
            }
        };
        let old = header.as_old();
        let id = |pax: Option<u64>, field: &[u8], what| {
            pax.or_else(|| numeric(field))
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| bad(what))
        };
        let uid = id(pax.uid, &old.uid, "uid is malformed or out of range")?;
        let gid = id(pax.gid, &old.gid, "gid is malformed or out of range")?;
        let mtime = match pax.mtime {
            Some(mtime) => mtime,
            None => Mtime {
                secs: numeric(&old.mtime)
                    .and_then(|s| i64::try_from(s).ok())
                    .ok_or_else(|| bad("mtime is malformed or out of range"))?,
                nanos: 0,
            },
        };
        let mode = numeric(&old.mode)
            .and_then(|m| u32::try_from(m & 0o7777).ok())
            .ok_or_else(|| bad("mode is malformed"))?;
        // Like Go's archive/tar (and so Docker), only regular files carry data: the size
        // field of links, directories, devices and FIFOs is ignored.
        let size = match (&kind, pax.size) {
            (Kind::File, Some(size)) => size,
            (Kind::File, None) => entry_size(header, &at)?,
            _ => 0,
        };
        self.start_data(size, &entry);
        Ok(Member {
            name,
            kind,
            mode,
            uid,
            gid,
            mtime,
            xattrs: pax.xattrs,
        })
    }

    /// Copies the current member's data to `out`, then skips its padding.
    pub(crate) fn copy_data(&mut self, out: &mut impl Write) -> Result<(), LayerError> {
        while self.data_left > 0 {
            let want = self
                .buf
                .len()
                .min(usize::try_from(self.data_left).unwrap_or(usize::MAX));
            let n = read_some(&mut self.stream, &mut self.buf[..want])
                .map_err(|e| stream_error(Location::Entry(self.current.clone()), e))?;
            if n == 0 {
                return Err(LayerError::Truncated {
                    at: Location::Entry(self.current.clone()),
                });
            }
            out.write_all(&self.buf[..n])
                .map_err(|source| LayerError::Io {
                    entry: self.current.clone(),
                    step: "write file data",
                    source,
                })?;
            self.data_left -= n as u64;
        }
        self.skip_data()
    }

    /// The current member's data, or `None` (nothing read) when it is over `max` bytes.
    pub(crate) fn read_data(&mut self, max: u64) -> Result<Option<Vec<u8>>, LayerError> {
        if self.data_left > max {
            return Ok(None);
        }
        // At most `max`, which callers keep small.
        let mut data = Vec::with_capacity(usize::try_from(self.data_left).unwrap_or(0));
        self.copy_data(&mut data)?;
        Ok(Some(data))
    }

    /// Reads what follows the end-of-archive marker to the end of the stream, so that the
    /// digest covers all of it, and returns the diff ID and the uncompressed size.
    pub(super) fn finish(mut self) -> Result<(Digest, u64), LayerError> {
        self.skip_data()?;
        loop {
            let offset = self.stream.bytes;
            match read_some(&mut self.stream, &mut self.buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(stream_error(Location::Trailer { offset }, e)),
            }
        }
        Ok((self.stream.hash.finish(), self.stream.bytes))
    }

    /// After a zero block, Go's archive/tar wants a second zero block or the end of the
    /// stream; anything else is a damaged archive, not trailing padding.
    fn end_marker(&mut self) -> Result<(), LayerError> {
        let mut block = [0u8; BLOCK as usize];
        let at = Location::Trailer {
            offset: self.stream.bytes,
        };
        if self.read_block(&mut block, &at)? && block.iter().any(|&b| b != 0) {
            return Err(LayerError::Header {
                at,
                reason: "an entry follows an end-of-archive block",
            });
        }
        Ok(())
    }

    fn extension(&mut self, header: &Header, name: &str) -> Result<Vec<u8>, LayerError> {
        let at = Location::Entry(name.to_owned());
        let size = entry_size(header, &at)?;
        if size > MAX_EXTENSION {
            return Err(LayerError::ExtensionTooLarge { at, size });
        }
        self.start_data(size, name);
        // At most MAX_EXTENSION, so the cast cannot truncate.
        let mut data = Vec::with_capacity(size as usize);
        self.copy_data(&mut data)?;
        Ok(data)
    }

    /// A GNU long name or link: the payload up to its terminating NULs.
    fn extension_name(&mut self, header: &Header, name: &str) -> Result<Vec<u8>, LayerError> {
        let mut long = self.extension(header, name)?;
        while long.last() == Some(&0) {
            long.pop();
        }
        Ok(long)
    }

    fn start_data(&mut self, size: u64, entry: &str) {
        self.data_left = size;
        self.padding_left = padding(size);
        entry.clone_into(&mut self.current);
    }

    /// Skips the rest of the current member's data and its padding.
    fn skip_data(&mut self) -> Result<(), LayerError> {
        for left in [self.data_left, self.padding_left] {
            let mut left = left;
            while left > 0 {
                let want = self
                    .buf
                    .len()
                    .min(usize::try_from(left).unwrap_or(usize::MAX));
                let at = || Location::Entry(self.current.clone());
                let n = read_some(&mut self.stream, &mut self.buf[..want])
                    .map_err(|e| stream_error(at(), e))?;
                if n == 0 {
                    return Err(LayerError::Truncated { at: at() });
                }
                left -= n as u64;
            }
        }
        self.data_left = 0;
        self.padding_left = 0;
        Ok(())
    }

    /// Fills `block`; `false` if the stream ended cleanly before it.
    fn read_block(&mut self, block: &mut [u8], at: &Location) -> Result<bool, LayerError> {
        match fill(&mut self.stream, block).map_err(|e| stream_error(at.clone(), e))? {
            0 => Ok(false),
            n if n == block.len() => Ok(true),
            _ => Err(LayerError::Truncated { at: at.clone() }),
        }
    }
}

/// Reads until `buf` is full or the stream ends; returns how much was read.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match read_some(r, &mut buf[done..])? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

fn read_some(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Decompressors report a cut-off stream as `UnexpectedEof`.
fn stream_error(at: Location, source: io::Error) -> LayerError {
    if source.kind() == io::ErrorKind::UnexpectedEof {
        LayerError::Truncated { at }
    } else {
        LayerError::Read { at, source }
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

fn entry_size(header: &Header, at: &Location) -> Result<u64, LayerError> {
    numeric(&header.as_old().size).ok_or_else(|| LayerError::Header {
        at: at.clone(),
        reason: "size is malformed",
    })
}

fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}
