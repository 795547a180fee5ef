//! Pulls from a real registry (Debian's docker-registry) started by each test, with images
//! the tests build and push with skopeo. Needs root (whiteouts are device nodes, overlayfs
//! is mounted to check the merged view), `docker-registry`, `skopeo`, `htpasswd` and
//! `openssl`: `.ci/deps` installs them and CI runs as root.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use gantry_runtime::pull::{pull, PullOptions, Quiet};
use gantry_runtime::store::Store;
use gantry_runtime::{Digest, ImageRef};

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (whiteouts, overlayfs); CI runs as root"
    );
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn pull_into(
    store: &Arc<Store>,
    reference: &str,
) -> Result<gantry_runtime::store::ImageRecord, String> {
    let image: ImageRef = reference.parse().map_err(|e| format!("{e}"))?;
    block_on(pull(
        store.clone(),
        &image,
        &PullOptions::default(),
        Arc::new(Quiet),
    ))
    .map_err(|e| e.to_string())
}

fn standard_layout(dir: &Path, comp: Comp) -> Value {
    let layers = busybox_layers();
    add_image(
        dir,
        &ImageSpec {
            arch: "amd64",
            layers: &layers,
            comp,
            bad_diff_id: false,
            cmd: &["/bin/sh"],
        },
    )
}
use serde_json::Value;

/// Pushes the standard three-layer image (gzip) as `<repo>:<tag>`; returns its layout and
/// manifest descriptor.
fn push_standard(reg: &TestRegistry, tag: &str, repo: &str) -> (tempfile::TempDir, Value) {
    let layout = tempfile::tempdir().expect("layout");
    let d = standard_layout(layout.path(), Comp::Gzip);
    finish_layout(layout.path(), vec![(tag, d.clone())]);
    reg.push(layout.path(), tag, repo, &[]);
    (layout, d)
}

/// Mounts the image's layers with overlayfs and returns what the merged view holds.
fn merged_view(
    store: &Store,
    record: &gantry_runtime::store::ImageRecord,
) -> (Vec<String>, Vec<String>, bool) {
    let lowers: Vec<String> = record
        .layers
        .iter()
        .rev()
        .map(|l| {
            let chain: Digest = l.chain_id.parse().expect("chain id");
            store.layer_dir(&chain).display().to_string()
        })
        .collect();
    let mnt = tempfile::tempdir().expect("mnt");
    nix::mount::mount(
        Some("overlay"),
        mnt.path(),
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(format!("lowerdir={}", lowers.join(":")).as_str()),
    )
    .expect("mount overlay");
    let list = |p: &str| {
        let mut v: Vec<String> = std::fs::read_dir(mnt.path().join(p))
            .expect("read merged dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let etc = list("etc");
    let data = list("data");
    let busybox_runs = std::process::Command::new(mnt.path().join("bin/busybox"))
        .arg("true")
        .status()
        .is_ok_and(|s| s.success());
    nix::mount::umount(mnt.path()).expect("umount overlay");
    (etc, data, busybox_runs)
}

#[test]
fn pulls_a_layered_image_with_whiteouts_and_the_merged_view_is_right_as_root() {
    require_root();
    let reg = TestRegistry::plain();
    let _layout = push_standard(&reg, "v1", "test/busybox");

    let root = tempfile::tempdir().expect("store");
    let store = Arc::new(Store::open(root.path()).expect("store"));
    let reference = format!("{}/test/busybox:v1", reg.host);
    let record = pull_into(&store, &reference).expect("pull");
    assert_eq!(record.name, reference);
    assert_eq!(record.layers.len(), 3);
    let (etc, data, busybox_runs) = merged_view(&store, &record);
    assert_eq!(etc, vec!["kept"], "the whiteout hides etc/removed");
    assert_eq!(data, vec!["new"], "the opaque dir hides the lower data/");
    assert!(busybox_runs, "busybox from the first layer runs");
    assert_eq!(store.check().expect("check"), Vec::<String>::new());

    // A second pull finds everything in place and changes nothing.
    let again = pull_into(&store, &reference).expect("pull again");
    assert_eq!(again.manifest, record.manifest);
    assert_eq!(again.layers, record.layers);
}

#[test]
fn pulls_zstd_layers_and_shares_layers_between_images_as_root() {
    require_root();
    let reg = TestRegistry::plain();
    let layout = tempfile::tempdir().expect("layout");
    let zstd = standard_layout(layout.path(), Comp::Zstd);
    let gzip = standard_layout(layout.path(), Comp::Gzip);
    finish_layout(layout.path(), vec![("zstd", zstd), ("gzip", gzip)]);
    reg.push(layout.path(), "zstd", "test/img", &[]);
    reg.push(layout.path(), "gzip", "test/img", &[]);

    let root = tempfile::tempdir().expect("store");
    let store = Arc::new(Store::open(root.path()).expect("store"));
    let z = pull_into(&store, &format!("{}/test/img:zstd", reg.host)).expect("pull zstd");
    let g = pull_into(&store, &format!("{}/test/img:gzip", reg.host)).expect("pull gzip");
    // Same uncompressed layers, different blobs: one set of unpacked layers.
    let chains = |r: &gantry_runtime::store::ImageRecord| {
        r.layers
            .iter()
            .map(|l| l.chain_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(chains(&z), chains(&g));
    assert_ne!(z.layers[0].blob, g.layers[0].blob);
    assert_eq!(
        std::fs::read_dir(root.path().join("layers"))
            .expect("layers")
            .count(),
        3
    );

    // Removing one image keeps the shared layers; removing the other frees them.
    let freed = store.remove_image(&z.name).expect("rm zstd");
    assert_eq!(freed.layers, 0);
    assert_eq!(
        freed.blobs, 1,
        "only its manifest goes; the config is shared: {freed:?}"
    );
    let (etc, _, _) = merged_view(&store, &g);
    assert_eq!(etc, vec!["kept"]);
    let freed = store.remove_image(&g.name).expect("rm gzip");
    assert_eq!(freed.layers, 3);
    assert!(store.blobs().list().expect("list").is_empty());
    assert_eq!(store.check().expect("check"), Vec::<String>::new());
}

#[test]
fn pulls_over_tls_with_basic_auth_and_says_why_when_credentials_are_wrong_as_root() {
    require_root();
    let reg = TestRegistry::start(RegistrySetup {
        basic_auth: true,
        tls: true,
    });
    let _layout = push_standard(&reg, "v1", "private/app");
    let root = tempfile::tempdir().expect("store");
    let root_s = root.path().to_str().expect("utf-8");
    let reference = format!("{}/private/app:v1", reg.host);
    let ca = reg.ca_pem();
    let ca_s = ca.to_str().expect("utf-8");

    let (ok, _, err) = gantry(
        &[
            "--root",
            root_s,
            "image",
            "pull",
            &reference,
            "--ca-cert",
            ca_s,
        ],
        None,
    );
    assert!(!ok);
    assert!(
        err.contains("requires credentials and none are configured"),
        "{err}"
    );

    let (ok, _, err) = gantry(
        &[
            "--root",
            root_s,
            "image",
            "pull",
            &reference,
            "--ca-cert",
            ca_s,
            "--username",
            USER,
        ],
        Some("wrong\n"),
    );
    assert!(!ok);
    assert!(
        err.contains(&format!("credentials for user \"{USER}\" were refused")),
        "{err}"
    );

    // Without the CA the certificate is not trusted, and plain HTTP is not tried on a
    // TLS port that answers.
    let (ok, _, err) = gantry(
        &[
            "--root",
            root_s,
            "image",
            "pull",
            &reference,
            "--username",
            USER,
        ],
        Some(PASSWORD),
    );
    assert!(!ok, "an untrusted certificate must be refused");
    assert!(err.contains(&reg.host), "{err}");

    let (ok, out, err) = gantry(
        &[
            "--root",
            root_s,
            "image",
            "pull",
            &reference,
            "--ca-cert",
            ca_s,
            "--username",
            USER,
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(ok, "{err}");
    assert!(out.starts_with(&reference), "{out}");
    let (ok, out, _) = gantry(&["--root", root_s, "image", "ls"], None);
    assert!(ok && out.contains(&reference), "{out}");
    let (ok, out, err) = gantry(&["--root", root_s, "image", "check"], None);
    assert!(ok, "{out}{err}");
}

#[test]
fn chooses_linux_amd64_from_an_index_and_refuses_an_index_without_it_as_root() {
    require_root();
    let reg = TestRegistry::plain();
    let layout = tempfile::tempdir().expect("layout");
    let layers = busybox_layers();
    let arm_layers = vec![layer_tar(&[Entry::File("arch", b"arm64\n", 0o644)])];
    let amd = standard_layout(layout.path(), Comp::Gzip);
    let arm = add_image(
        layout.path(),
        &ImageSpec {
            arch: "arm64",
            layers: &arm_layers,
            comp: Comp::Gzip,
            bad_diff_id: false,
            cmd: &["/bin/sh"],
        },
    );
    let _ = layers;
    let both = add_index(layout.path(), vec![arm.clone(), amd.clone()]);
    let arm_only = add_index(layout.path(), vec![arm]);
    finish_layout(
        layout.path(),
        vec![("multi", both.clone()), ("armonly", arm_only.clone())],
    );
    reg.push(layout.path(), "multi", "test/multi", &["--all"]);
    reg.push(layout.path(), "armonly", "test/multi", &["--all"]);

    let root = tempfile::tempdir().expect("store");
    let store = Arc::new(Store::open(root.path()).expect("store"));
    let record = pull_into(&store, &format!("{}/test/multi:multi", reg.host)).expect("pull multi");
    assert_eq!(record.index.as_deref(), both["digest"].as_str());
    assert_eq!(Some(record.manifest.as_str()), amd["digest"].as_str());

    let err = pull_into(&store, &format!("{}/test/multi:armonly", reg.host)).unwrap_err();
    let index_digest = arm_only["digest"].as_str().expect("digest");
    assert!(err.contains(index_digest), "{err}");
    assert!(err.contains("linux/arm64"), "{err}");

    // By digest, too: the pinned index resolves to the same amd64 manifest.
    let by_digest = format!(
        "{}/test/multi@{}",
        reg.host,
        both["digest"].as_str().expect("digest")
    );
    let pinned = pull_into(&store, &by_digest).expect("pull by digest");
    assert_eq!(pinned.manifest, record.manifest);
}

#[test]
fn pulls_an_image_pushed_as_docker_schema2_as_root() {
    require_root();
    let reg = TestRegistry::plain();
    let layout = tempfile::tempdir().expect("layout");
    let d = standard_layout(layout.path(), Comp::Gzip);
    finish_layout(layout.path(), vec![("v2s2", d)]);
    reg.push(layout.path(), "v2s2", "test/docker", &["--format", "v2s2"]);
    let root = tempfile::tempdir().expect("store");
    let store = Arc::new(Store::open(root.path()).expect("store"));
    let record = pull_into(&store, &format!("{}/test/docker:v2s2", reg.host)).expect("pull");
    let manifest: Digest = record.manifest.parse().expect("digest");
    let doc: Value =
        serde_json::from_slice(&std::fs::read(store.blobs().path(&manifest)).expect("manifest"))
            .expect("json");
    assert_eq!(
        doc["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let (etc, data, _) = merged_view(&store, &record);
    assert_eq!(
        (etc, data),
        (vec!["kept".to_owned()], vec!["new".to_owned()])
    );
}

#[test]
fn refuses_a_corrupted_blob_and_a_lying_diff_id_naming_the_digest_as_root() {
    require_root();
    let reg = TestRegistry::plain();
    let layout = tempfile::tempdir().expect("layout");
    let good = standard_layout(layout.path(), Comp::Gzip);
    let layers = busybox_layers();
    let lying = add_image(
        layout.path(),
        &ImageSpec {
            arch: "amd64",
            layers: &layers[..1],
            comp: Comp::Zstd,
            bad_diff_id: true,
            cmd: &["/bin/sh"],
        },
    );
    finish_layout(
        layout.path(),
        vec![("good", good.clone()), ("lying", lying)],
    );
    reg.push(layout.path(), "good", "test/bad", &[]);
    reg.push(layout.path(), "lying", "test/bad", &[]);

    let root = tempfile::tempdir().expect("store");
    let store = Arc::new(Store::open(root.path()).expect("store"));
    let err = pull_into(&store, &format!("{}/test/bad:lying", reg.host)).unwrap_err();
    assert!(err.contains("diff_id"), "{err}");
    assert!(
        err.contains(&Digest::sha256_of(b"not the layer").to_string()),
        "{err}"
    );
    assert!(store.images().expect("images").is_empty());

    // Flip a byte of the good image's second layer inside the registry's storage.
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            layout
                .path()
                .join("blobs/sha256")
                .join(&good["digest"].as_str().expect("d")[7..]),
        )
        .expect("m"),
    )
    .expect("json");
    let layer: Digest = manifest["layers"][1]["digest"]
        .as_str()
        .expect("d")
        .parse()
        .expect("digest");
    let data = reg.blob_data(&layer);
    let mut bytes = std::fs::read(&data).expect("registry blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, bytes).expect("corrupt");
    let err = pull_into(&store, &format!("{}/test/bad:good", reg.host)).unwrap_err();
    assert!(err.contains(&layer.to_string()), "{err}");
    assert!(!store.blobs().contains(&layer));
    assert!(store.images().expect("images").is_empty());
    assert_eq!(store.check().expect("check"), Vec::<String>::new());
}

#[test]
fn resumes_a_partial_download_with_a_range_request_and_refetches_a_bad_one_as_root() {
    require_root();
    let reg = TestRegistry::plain();
    let (layout, d) = push_standard(&reg, "v1", "test/resume");
    let blob_file = |digest: &str| layout.path().join("blobs/sha256").join(&digest[7..]);
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(blob_file(d["digest"].as_str().expect("d"))).expect("manifest"),
    )
    .expect("json");
    let first: Digest = manifest["layers"][0]["digest"]
        .as_str()
        .expect("d")
        .parse()
        .expect("digest");
    let second: Digest = manifest["layers"][1]["digest"]
        .as_str()
        .expect("d")
        .parse()
        .expect("digest");
    let first_bytes = std::fs::read(blob_file(&first.to_string())).expect("layer");
    let second_bytes = std::fs::read(blob_file(&second.to_string())).expect("layer");

    // What a killed pull leaves: half of the first layer, and a "half" of the second that
    // is not its prefix at all.
    let root = tempfile::tempdir().expect("store");
    let store = Store::open(root.path()).expect("store");
    let half = first_bytes.len() / 2;
    std::fs::write(store.blobs().partial_path(&first), &first_bytes[..half]).expect("partial");
    let mut wrong = second_bytes[..second_bytes.len() / 2].to_vec();
    wrong[0] ^= 0xff;
    std::fs::write(store.blobs().partial_path(&second), &wrong).expect("partial");

    let reference = format!("{}/test/resume:v1", reg.host);
    let (ok, _, err) = gantry(
        &[
            "--root",
            root.path().to_str().expect("utf-8"),
            "image",
            "pull",
            &reference,
        ],
        None,
    );
    assert!(ok, "{err}");
    let short = |d: &Digest| d.hex()[..12].to_owned();
    assert!(
        err.contains(&format!(
            "{}: resuming at {half} of {} bytes",
            short(&first),
            first_bytes.len()
        )),
        "{err}"
    );
    // Only the missing half crossed the wire: the registry honoured the range.
    assert!(
        err.contains(&format!(
            "{}: unpacked ({} bytes fetched)",
            short(&first),
            first_bytes.len() - half
        )),
        "{err}"
    );
    // The bad partial was detected by its digest and fetched again whole.
    assert!(
        err.contains(&format!("{}: unpacked", short(&second))),
        "{err}"
    );
    assert!(store.check().expect("check").is_empty());
    assert!(!store.blobs().partial_path(&first).exists());
    assert!(!store.blobs().partial_path(&second).exists());
}

#[derive(Default)]
struct Count {
    unpacked: std::sync::atomic::AtomicUsize,
    already: std::sync::atomic::AtomicUsize,
}

impl gantry_runtime::pull::Progress for Count {
    fn layer_done(&self, _blob: &Digest, what: gantry_runtime::pull::LayerDone) {
        use std::sync::atomic::Ordering::SeqCst;
        match what {
            gantry_runtime::pull::LayerDone::Unpacked => self.unpacked.fetch_add(1, SeqCst),
            gantry_runtime::pull::LayerDone::AlreadyThere => self.already.fetch_add(1, SeqCst),
        };
    }
}

#[test]
fn two_pulls_of_the_same_image_at_once_unpack_each_layer_once_as_root() {
    require_root();
    let reg = TestRegistry::plain();
    let _layout = push_standard(&reg, "v1", "test/twice");
    let root = tempfile::tempdir().expect("store");
    let image: ImageRef = format!("{}/test/twice:v1", reg.host).parse().expect("ref");
    let counts: Vec<Arc<Count>> = (0..2).map(|_| Arc::default()).collect();
    std::thread::scope(|s| {
        for c in &counts {
            // Each pull opens the store itself, as two processes would.
            let (image, root, c) = (&image, root.path(), c.clone());
            s.spawn(move || {
                let store = Arc::new(Store::open(root).expect("store"));
                block_on(pull(store, image, &PullOptions::default(), c)).expect("pull");
            });
        }
    });
    use std::sync::atomic::Ordering::SeqCst;
    let unpacked: usize = counts.iter().map(|c| c.unpacked.load(SeqCst)).sum();
    let already: usize = counts.iter().map(|c| c.already.load(SeqCst)).sum();
    assert_eq!(
        (unpacked, already),
        (3, 3),
        "each of the 3 layers is unpacked by one pull only"
    );
    let store = Store::open(root.path()).expect("store");
    assert!(store.check().expect("check").is_empty());
}
