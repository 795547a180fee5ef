//! A directory of image archives, such as a config drive's `images/`: which archive
//! provides an image, told from each archive's `index.json` (OCI layout) or
//! `manifest.json` (`docker save`) without importing anything.
//!
//! Archives are the directory's `*.tar` files (plain or gzip-compressed; any case, as FAT
//! and ISO 9660 drives show names), tried in name order; the first that names the image
//! wins. An archive that cannot be read is reported and passed over, so that one bad
//! archive costs only the images it was meant to provide.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::import::{
    format_err, io, oci_name, open_archive, walk_err, ImportError, SaveEntry, MAX_JSON,
};
use crate::manifest::{self, Manifest};
use crate::reference::ImageRef;

/// Logged by `gantry image ensure` for an archive it cannot read, with `error=` naming it.
pub const ARCHIVE_SKIPPED: &str = "skipping an image archive";
/// Logged by `gantry image ensure` when an image came from an archive (`image=`, `archive=`).
pub const IMAGE_IMPORTED: &str = "image imported from an archive";

/// What a search of an archive directory found.
#[derive(Debug, Default)]
pub struct Search {
    /// The archive that names the image, if one does.
    pub found: Option<PathBuf>,
    /// Archives passed over because they could not be read, each error naming its archive.
    pub skipped: Vec<ImportError>,
}

/// Finds the archive in `dir` that provides `image`. A missing directory has none.
pub fn find(dir: &Path, image: &ImageRef) -> Result<Search, ImportError> {
    let mut search = Search::default();
    for archive in list(dir)? {
        match names(&archive) {
            Ok(names) if names.contains(image) => {
                search.found = Some(archive);
                break;
            }
            Ok(_) => {}
            Err(e) => search.skipped.push(e),
        }
    }
    Ok(search)
}

/// The archives in `dir`, in name order.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, ImportError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut archives = Vec::new();
    for entry in entries {
        let path = entry.map_err(io(dir))?.path();
        let is_tar = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("tar"));
        if is_tar && path.is_file() {
            archives.push(path);
        }
    }
    archives.sort();
    Ok(archives)
}

/// The images an archive names, as `gantry image import` without `--name` would name them.
pub fn names(archive: &Path) -> Result<Vec<ImageRef>, ImportError> {
    let members = top_level_json(archive)?;
    if members.oci_layout {
        let Some(bytes) = members.index else {
            return Err(format_err(
                archive,
                "an OCI image layout without index.json",
            ));
        };
        let shown = format!("{}: index.json", archive.display());
        let Manifest::Index(index) = Manifest::parse(&bytes, Some(manifest::OCI_INDEX), &shown)?
        else {
            return Err(format_err(archive, "index.json is not an image index"));
        };
        return Ok(index.manifests.iter().filter_map(oci_name).collect());
    }
    let Some(bytes) = members.docker_manifest else {
        return Err(format_err(
            archive,
            "neither an OCI image layout (no oci-layout) nor a docker save archive (no manifest.json)",
        ));
    };
    let entries: Vec<SaveEntry> = serde_json::from_slice(&bytes)
        .map_err(|e| format_err(archive, format!("manifest.json: {e}")))?;
    let mut out = Vec::new();
    for tag in entries.iter().flat_map(|e| e.repo_tags.iter().flatten()) {
        let name = tag
            .parse::<ImageRef>()
            .map_err(|e| format_err(archive, format!("manifest.json: {e}")))?;
        out.push(name);
    }
    Ok(out)
}

/// The top-level members that name an archive's images.
#[derive(Default)]
struct Members {
    oci_layout: bool,
    index: Option<Vec<u8>>,
    docker_manifest: Option<Vec<u8>>,
}

fn top_level_json(archive: &Path) -> Result<Members, ImportError> {
    // Walked by the layer walker (plain tars too, reading over the layers rather than
    // seeking), so that extension headers are capped before they are read.
    let mut tar = open_archive(archive)?;
    let mut members = Members::default();
    while let Some(member) = tar.next_member().map_err(walk_err(archive))? {
        let path = Path::new(OsStr::from_bytes(&member.name));
        let mut parts = path.components().filter(|c| *c != Component::CurDir);
        let (Some(Component::Normal(name)), None) = (parts.next(), parts.next()) else {
            continue;
        };
        let (name, slot) = match name.to_str() {
            Some("oci-layout") => {
                members.oci_layout = true;
                continue;
            }
            Some(n @ "index.json") => (n, &mut members.index),
            Some(n @ "manifest.json") => (n, &mut members.docker_manifest),
            _ => continue,
        };
        let Some(bytes) = tar.read_data(MAX_JSON).map_err(walk_err(archive))? else {
            return Err(format_err(
                archive,
                format!("{name} is larger than {MAX_JSON} bytes"),
            ));
        };
        *slot = Some(bytes);
    }
    Ok(members)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A gzip tar whose first header is a GNU long name claiming 8 GiB, followed by only a
    /// little of that payload: a reader that trusts the size allocates for all of it.
    pub(crate) fn huge_long_name(path: &Path) {
        use std::io::Write;
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(8 << 30);
        h.set_mode(0o644);
        h.set_cksum();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(h.as_bytes()).unwrap();
        e.write_all(&vec![b'a'; 2 << 20]).unwrap();
        std::fs::write(path, e.finish().unwrap()).unwrap();
    }

    #[test]
    fn a_huge_gnu_long_name_is_refused_at_the_extension_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.tar");
        huge_long_name(&path);
        let err = names(&path).unwrap_err().to_string();
        assert!(err.contains("huge.tar"), "{err}");
        assert!(err.contains("8589934592 bytes is over the"), "{err}");
    }

    /// A tar of `members` (name, content), optionally gzip-compressed.
    fn archive(path: &Path, members: &[(&str, &[u8])], gzip: bool) {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        let bytes = b.into_inner().unwrap();
        let bytes = if gzip {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&bytes).unwrap();
            e.finish().unwrap()
        } else {
            bytes
        };
        std::fs::write(path, bytes).unwrap();
    }

    const LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
    const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    fn index(ref_name: &str) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{DIGEST}","size":1,"annotations":{{"org.opencontainers.image.ref.name":"{ref_name}"}}}}]}}"#
        )
        .into_bytes()
    }

    fn r(s: &str) -> ImageRef {
        s.parse().unwrap()
    }

    #[test]
    fn names_come_from_an_oci_index_or_docker_save_repo_tags() {
        let dir = tempfile::tempdir().unwrap();
        let oci = dir.path().join("oci.tar");
        let blob = vec![7u8; 100_000];
        archive(
            &oci,
            &[
                ("./oci-layout", LAYOUT),
                ("blobs/sha256/aa", &blob),
                ("./index.json", &index("example.com/demo/web:1")),
            ],
            false,
        );
        assert_eq!(names(&oci).unwrap(), vec![r("example.com/demo/web:1")]);
        let bare_tag = dir.path().join("tag.tar");
        archive(
            &bare_tag,
            &[("oci-layout", LAYOUT), ("index.json", &index("1"))],
            true,
        );
        assert_eq!(names(&bare_tag).unwrap(), vec![]);
        let save = dir.path().join("save.tar");
        let manifest =
            br#"[{"Config":"c.json","RepoTags":["busybox:1","example.com/a:2"],"Layers":[]}]"#;
        archive(&save, &[("manifest.json", manifest)], true);
        assert_eq!(
            names(&save).unwrap(),
            vec![r("docker.io/library/busybox:1"), r("example.com/a:2")]
        );
    }

    #[test]
    fn finds_the_first_archive_naming_the_image_and_reports_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a-broken.tar"), b"not a tar at all").unwrap();
        archive(
            &dir.path().join("b-other.tar"),
            &[
                ("oci-layout", LAYOUT),
                ("index.json", &index("example.com/x:1")),
            ],
            false,
        );
        archive(
            &dir.path().join("c-web.TAR"),
            &[
                ("oci-layout", LAYOUT),
                ("index.json", &index("example.com/web:1")),
            ],
            false,
        );
        archive(
            &dir.path().join("d-web-again.tar"),
            &[
                ("oci-layout", LAYOUT),
                ("index.json", &index("example.com/web:1")),
            ],
            false,
        );
        std::fs::write(dir.path().join("notes.txt"), b"not an archive").unwrap();
        let s = find(dir.path(), &r("example.com/web:1")).unwrap();
        assert_eq!(s.found, Some(dir.path().join("c-web.TAR")));
        assert_eq!(s.skipped.len(), 1, "{:?}", s.skipped);
        let why = s.skipped[0].to_string();
        assert!(why.contains("a-broken.tar"), "{why}");
        let none = find(dir.path(), &r("example.com/missing:1")).unwrap();
        assert_eq!(none.found, None);
    }

    #[test]
    fn a_missing_directory_has_no_archives() {
        let dir = tempfile::tempdir().unwrap();
        let s = find(&dir.path().join("nope"), &r("busybox")).unwrap();
        assert!(s.found.is_none() && s.skipped.is_empty());
    }
}
