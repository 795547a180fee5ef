//! Writing a bundle: the payloads aligned after the header, the manifest, the signatures;
//! through a temporary file, fsynced, then renamed.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use ring::digest::{Context, SHA256};

use super::{
    parse_cmdline, BundleError, Manifest, Payload, PayloadInfo, Payloads, ALIGN, FORMAT,
    HEADER_LEN, MAGIC,
};
use crate::keys::{Domain, SignatureBlock, SigningKey};
use crate::verity::Verity;

/// What a bundle says about itself, besides its payloads.
#[derive(Debug, Clone)]
pub struct BundleMeta {
    pub os_version: String,
    pub rollback_index: u64,
    pub arch: String,
    pub board: String,
    pub verity: Verity,
}

/// Writes a bundle of `kernel`, `cmdline` and `root` (files) to `out`, signed by `keys`:
/// to a temporary name first, fsynced, then renamed. Returns the manifest.
pub fn write(
    out: &Path,
    meta: &BundleMeta,
    kernel: &Path,
    cmdline: &[String],
    root: &Path,
    keys: &[&SigningKey],
) -> Result<Manifest, BundleError> {
    let cmdline_bytes = format!("{}\n", cmdline.join(" ")).into_bytes();
    let manifest_err = |reason: String| BundleError::Manifest {
        path: out.to_owned(),
        reason,
    };
    parse_cmdline(&cmdline_bytes).map_err(|r| manifest_err(format!("cmdline {r}")))?;
    let io_at = |path: &Path| {
        let path = path.to_owned();
        move |source| BundleError::Io { path, source }
    };
    let mut sources: Vec<(Box<dyn Read>, u64, String)> = Vec::new();
    for path in [kernel, root] {
        let (size, digest) = hash_file(path).map_err(io_at(path))?;
        let file = File::open(path).map_err(io_at(path))?;
        sources.push((Box::new(file), size, digest));
    }
    let cmd_digest = crate::hex::encode(ring::digest::digest(&SHA256, &cmdline_bytes).as_ref());
    let cmd_len = cmdline_bytes.len() as u64;
    sources.insert(
        1,
        (
            Box::new(io::Cursor::new(cmdline_bytes)),
            cmd_len,
            cmd_digest,
        ),
    );
    let mut offset = 0;
    let mut infos = Vec::new();
    for (_, size, digest) in &sources {
        infos.push(PayloadInfo {
            offset,
            size: *size,
            sha256: digest.clone(),
        });
        offset = (offset + size).next_multiple_of(ALIGN);
    }
    let mut infos = infos.into_iter();
    let (Some(k), Some(c), Some(r)) = (infos.next(), infos.next(), infos.next()) else {
        unreachable!("three payloads");
    };
    let manifest = Manifest {
        format: FORMAT,
        os_version: meta.os_version.clone(),
        rollback_index: meta.rollback_index,
        arch: meta.arch.clone(),
        board: meta.board.clone(),
        payloads: Payloads {
            kernel: k,
            cmdline: c,
            root: r,
        },
        verity: meta.verity.clone(),
    };
    manifest.check().map_err(manifest_err)?;
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| manifest_err(e.to_string()))?;
    let block = SignatureBlock::sign(Domain::BundleManifest, &manifest_bytes, keys);
    let sig_bytes = serde_json::to_vec(&block).map_err(|e| manifest_err(e.to_string()))?;

    let tmp = out.with_extension("bundle.tmp");
    let mut w = io::BufWriter::new(File::create(&tmp).map_err(io_at(&tmp))?);
    let mut header = Vec::with_capacity(HEADER_LEN as usize);
    header.extend_from_slice(MAGIC);
    for v in [
        FORMAT,
        manifest_bytes.len() as u32,
        sig_bytes.len() as u32,
        0,
    ] {
        header.extend_from_slice(&v.to_le_bytes());
    }
    let mut written = 0u64;
    for part in [&header[..], &manifest_bytes, &sig_bytes] {
        w.write_all(part).map_err(io_at(&tmp))?;
        written += part.len() as u64;
    }
    let base = written.next_multiple_of(ALIGN);
    let mut pos = 0u64;
    for (i, (mut src, size, _)) in sources.into_iter().enumerate() {
        let at = manifest.payload(Payload::ALL[i]).offset;
        io::copy(&mut io::repeat(0).take(base - written + at - pos), &mut w)
            .map_err(io_at(&tmp))?;
        written = base;
        let copied = io::copy(&mut src, &mut w).map_err(io_at(&tmp))?;
        if copied != size {
            return Err(manifest_err(format!(
                "payload {} changed while the bundle was written",
                Payload::ALL[i]
            )));
        }
        pos = at + size;
    }
    let file = w.into_inner().map_err(|e| io_at(&tmp)(e.into_error()))?;
    file.sync_all().map_err(io_at(&tmp))?;
    std::fs::rename(&tmp, out).map_err(io_at(out))?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_at(dir))?;
    }
    Ok(manifest)
}

/// The size and SHA-256 (hex) of a whole file.
pub fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    let mut f = File::open(path)?;
    let mut ctx = Context::new(&SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, crate::hex::encode(ctx.finish().as_ref())))
}
