//! Importing an OCI layout (directory and tar) and a `docker save` archive made by skopeo
//! (`docker-archive:` is the `docker save` format). Needs root for whiteouts and skopeo.

mod common;

use std::process::Command;

use common::*;
use gantry_runtime::store::Store;

fn tar_dir(dir: &std::path::Path, out: &std::path::Path) {
    let status = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(out)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success());
}

#[test]
fn imports_oci_layouts_and_docker_save_archives_as_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root; CI runs as root"
    );
    let work = tempfile::tempdir().expect("work");
    let layout = work.path().join("layout");
    std::fs::create_dir(&layout).expect("layout");
    let layers = busybox_layers();
    let d = amd64_image(&layout, &layers, Comp::Gzip);
    finish_layout(&layout, vec![("example.com/app:1.0", d.clone())]);
    let oci_tar = work.path().join("oci.tar");
    tar_dir(&layout, &oci_tar);
    let save = work.path().join("save.tar");
    let out = Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:example.com/app:1.0", layout.display()))
        .arg(format!(
            "docker-archive:{}:example.com/saved:2.0",
            save.display()
        ))
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let root = tempfile::tempdir().expect("store");
    let root_s = root.path().to_str().expect("utf-8");
    let (ok, out, err) = gantry(
        &[
            "--root",
            root_s,
            "image",
            "import",
            layout.to_str().expect("utf-8"),
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("example.com/app:1.0 "), "{out}");
    let (ok, out, err) = gantry(
        &[
            "--root",
            root_s,
            "image",
            "import",
            oci_tar.to_str().expect("utf-8"),
            "--name",
            "local/oci-tar:x",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("docker.io/local/oci-tar:x "), "{out}");
    let (ok, out, err) = gantry(
        &[
            "--root",
            root_s,
            "image",
            "import",
            save.to_str().expect("utf-8"),
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("example.com/saved:2.0 "), "{out}");

    let store = Store::open(root.path()).expect("store");
    let images = store.images().expect("images");
    assert_eq!(images.len(), 3);
    // The same three layers (by chain ID) back all three images: docker save carries
    // them uncompressed, the layout gzip-compressed.
    let chains = |r: &gantry_runtime::store::ImageRecord| {
        r.layers
            .iter()
            .map(|l| (l.chain_id.clone(), l.diff_id.clone()))
            .collect::<Vec<_>>()
    };
    for r in &images {
        assert_eq!(r.layers.len(), 3, "{}", r.name);
        assert_eq!(chains(r), chains(&images[0]), "{}", r.name);
    }
    assert_eq!(
        std::fs::read_dir(root.path().join("layers"))
            .expect("layers")
            .count(),
        3
    );
    assert!(store.check().expect("check").is_empty());
    let top = images[0].layers[2].chain_id.parse().expect("chain");
    let whiteout =
        std::fs::symlink_metadata(store.layer_dir(&top).join("etc/removed")).expect("whiteout");
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);

    // A layout whose blob was altered is refused, naming the digest.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            layout
                .join("blobs/sha256")
                .join(&d["digest"].as_str().expect("d")[7..]),
        )
        .expect("m"),
    )
    .expect("json");
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .expect("d")
        .to_owned();
    let path = layout.join("blobs/sha256").join(&layer[7..]);
    let mut bytes = std::fs::read(&path).expect("blob");
    bytes[100] ^= 1;
    std::fs::write(&path, bytes).expect("write");
    let fresh = tempfile::tempdir().expect("store");
    let (ok, _, err) = gantry(
        &[
            "--root",
            fresh.path().to_str().expect("utf-8"),
            "image",
            "import",
            layout.to_str().expect("utf-8"),
        ],
        None,
    );
    assert!(!ok);
    assert!(err.contains(&layer), "{err}");

    // No name anywhere: refused with what to do.
    let nameless = work.path().join("nameless");
    std::fs::create_dir(&nameless).expect("dir");
    let d2 = amd64_image(&nameless, &layers[..1], Comp::Zstd);
    finish_layout(&nameless, vec![("latest", d2)]);
    let (ok, _, err) = gantry(
        &[
            "--root",
            root_s,
            "image",
            "import",
            nameless.to_str().expect("utf-8"),
        ],
        None,
    );
    assert!(!ok);
    assert!(err.contains("--name"), "{err}");
}

#[test]
fn ensure_imports_from_the_archive_that_names_the_image_and_passes_over_broken_ones_as_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root; CI runs as root"
    );
    let work = tempfile::tempdir().expect("work");
    let layout = work.path().join("layout");
    std::fs::create_dir(&layout).expect("layout");
    let d = amd64_image(&layout, &busybox_layers(), Comp::Gzip);
    finish_layout(&layout, vec![("example.com/app:1.0", d)]);
    let archives = work.path().join("images");
    std::fs::create_dir(&archives).expect("archives");
    std::fs::write(archives.join("a-broken.tar"), "not a tar\n").expect("broken");
    tar_dir(&layout, &archives.join("app.tar"));
    let root = tempfile::tempdir().expect("store");
    let root_s = root.path().to_str().expect("utf-8");
    let from = archives.to_str().expect("utf-8");
    let ensure = |image: &str| {
        gantry(
            &["--root", root_s, "image", "ensure", "--from", from, image],
            None,
        )
    };
    let (ok, out, err) = ensure("example.com/app:1.0");
    assert!(ok, "{err}");
    assert!(out.starts_with("example.com/app:1.0 "), "{out}");
    assert!(
        err.contains("a-broken.tar"),
        "the broken archive is named: {err}"
    );
    assert!(err.contains("image imported from an archive"), "{err}");
    let store = Store::open(root.path()).expect("store");
    store.image("example.com/app:1.0").expect("imported");
    // Not in any archive: a pull, which fails here (nothing listens on that port).
    let (ok, _, err) = ensure("127.0.0.1:9/nowhere:1");
    assert!(!ok);
    assert!(err.contains("cannot pull 127.0.0.1:9/nowhere:1"), "{err}");
}

#[test]
fn refuses_a_layout_whose_layer_blob_was_altered_naming_the_digest_as_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root; CI runs as root"
    );
    let work = tempfile::tempdir().expect("work");
    let layout = work.path().join("layout");
    std::fs::create_dir(&layout).expect("layout");
    let layers = busybox_layers();
    let d = amd64_image(&layout, &layers, Comp::Gzip);
    finish_layout(&layout, vec![("example.com/app:1.0", d)]);
    // Flip one byte in the middle of the biggest layer blob (busybox), keeping its size.
    // The unpacker may trip over it too; the error is the digest, whatever it made of it.
    let blobs = layout.join("blobs/sha256");
    let biggest = std::fs::read_dir(&blobs)
        .expect("blobs")
        .map(|e| e.expect("entry").path())
        .max_by_key(|p| std::fs::metadata(p).expect("meta").len())
        .expect("a blob");
    let mut bytes = std::fs::read(&biggest).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&biggest, &bytes).expect("write");
    let hex = biggest
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();

    let root = tempfile::tempdir().expect("store");
    let (ok, _, err) = gantry(
        &[
            "--root",
            root.path().to_str().expect("utf-8"),
            "image",
            "import",
            layout.to_str().expect("utf-8"),
        ],
        None,
    );
    assert!(!ok, "an altered layer was imported");
    assert!(
        err.contains(&format!("blob sha256:{hex}: content hashes to")),
        "{err}"
    );
    let store = Store::open(root.path()).expect("store");
    assert!(store.images().expect("images").is_empty());
    let layers_dir = root.path().join("layers");
    assert_eq!(
        std::fs::read_dir(&layers_dir).expect("layers").count(),
        0,
        "nothing from the layers of a refused image is kept"
    );
}
