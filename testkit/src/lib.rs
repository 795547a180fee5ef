//! Test fixtures shared by the runtime's tests and the end-to-end tests: a real registry
//! (Debian's `docker-registry`, Distribution 2.8) on a random loopback port with its own
//! config and storage, test images written as OCI layouts by our own code, and `skopeo` to
//! push them. Panics on failure: this is test code.
#![allow(clippy::unwrap_used, missing_debug_implementations)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use gantry_runtime::Digest;
use serde_json::{json, Value};

pub const USER: &str = "gantry";
pub const PASSWORD: &str = "s3cret-pass";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

pub struct TestRegistry {
    pub dir: tempfile::TempDir,
    pub host: String,
    child: Child,
    pub basic_auth: bool,
    pub tls: bool,
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct RegistrySetup {
    pub basic_auth: bool,
    pub tls: bool,
}

impl TestRegistry {
    pub fn start(setup: RegistrySetup) -> Self {
        Self::start_inner(setup, "")
    }

    /// Plain HTTP, no auth.
    pub fn plain() -> Self {
        Self::start(RegistrySetup {
            basic_auth: false,
            tls: false,
        })
    }

    /// A plain-HTTP registry with this YAML `auth:` section.
    pub fn start_with_auth(auth_yaml: &str) -> Self {
        Self::start_inner(
            RegistrySetup {
                basic_auth: false,
                tls: false,
            },
            auth_yaml,
        )
    }

    fn start_inner(setup: RegistrySetup, auth_yaml: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n  secret: gantry-test-secret\n",
            dir.path().join("data").display()
        );
        if setup.tls {
            make_cert(dir.path());
            config += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("server.pem").display(),
                dir.path().join("server.key").display()
            );
        }
        if setup.basic_auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", USER, PASSWORD])
                .output()
                .expect("htpasswd (apache2-utils) must be installed");
            assert!(out.status.success(), "htpasswd failed");
            std::fs::write(dir.path().join("htpasswd"), out.stdout).expect("write htpasswd");
            config += &format!(
                "auth:\n  htpasswd:\n    realm: gantry-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            );
        }
        config += auth_yaml;
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("docker-registry must be installed (apt install docker-registry)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&host).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not listen on {host}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        TestRegistry {
            dir,
            host,
            child,
            basic_auth: setup.basic_auth,
            tls: setup.tls,
        }
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Pushes `oci:<layout>:<tag>` to `<host>/<repo>:<tag>` with skopeo.
    pub fn push(&self, layout: &Path, tag: &str, repo: &str, extra: &[&str]) {
        let mut cmd = Command::new("skopeo");
        cmd.arg("copy")
            .arg("--quiet")
            .arg("--dest-tls-verify=false");
        if self.basic_auth {
            cmd.arg(format!("--dest-creds={USER}:{PASSWORD}"));
        }
        cmd.args(extra)
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo}:{tag}", self.host));
        let out = cmd.output().expect("skopeo must be installed");
        assert!(
            out.status.success(),
            "skopeo push failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The file the registry keeps a blob in (filesystem driver layout).
    pub fn blob_data(&self, digest: &Digest) -> PathBuf {
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&digest.hex()[..2])
            .join(digest.hex())
            .join("data")
    }
}

/// Runs `openssl` in `dir`; the test fails with its message if it does.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with openssl.
fn make_cert(dir: &Path) {
    let run = |args: &[&str]| openssl(dir, args);
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=gantry test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

/// One entry of a test layer.
pub enum Entry<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    /// A character device node: path, major, minor.
    CharDevice(&'a str, u32, u32),
    /// A named pipe.
    Fifo(&'a str),
}

/// An uncompressed tar layer.
pub fn layer_tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            Entry::File(path, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, *data).expect("tar file");
            }
            Entry::Dir(path) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, path, std::io::empty())
                    .expect("tar dir");
            }
            Entry::Symlink(path, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, target).expect("tar symlink");
            }
            Entry::CharDevice(path, major, minor) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_mode(0o666);
                h.set_size(0);
                h.set_device_major(*major).expect("tar major");
                h.set_device_minor(*minor).expect("tar minor");
                b.append_data(&mut h, path, std::io::empty())
                    .expect("tar device");
            }
            Entry::Fifo(path) => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_data(&mut h, path, std::io::empty())
                    .expect("tar fifo");
            }
        }
    }
    b.into_inner().expect("tar")
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Comp {
    Gzip,
    Zstd,
}

fn compress(data: &[u8], comp: Comp) -> Vec<u8> {
    match comp {
        Comp::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).expect("gzip");
            e.finish().expect("gzip")
        }
        Comp::Zstd => zstd::encode_all(data, 3).expect("zstd"),
    }
}

fn put_blob(layout: &Path, data: &[u8]) -> Digest {
    let d = Digest::sha256_of(data);
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).expect("blobs dir");
    std::fs::write(dir.join(d.hex()), data).expect("blob");
    d
}

/// What to write for one platform image.
pub struct ImageSpec<'a> {
    pub arch: &'a str,
    pub layers: &'a [Vec<u8>],
    pub comp: Comp,
    /// Replace the config's diff_ids with this (to make a lying config).
    pub bad_diff_id: bool,
    pub cmd: &'a [&'a str],
}

/// Writes one image's blobs into an OCI layout and returns its manifest descriptor.
pub fn add_image(layout: &Path, spec: &ImageSpec) -> Value {
    let mut diff_ids = Vec::new();
    let mut layers = Vec::new();
    for l in spec.layers {
        diff_ids.push(Digest::sha256_of(l).to_string());
        let blob = compress(l, spec.comp);
        let d = put_blob(layout, &blob);
        layers.push(json!({
            "mediaType": match spec.comp {
                Comp::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
                Comp::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            },
            "digest": d.to_string(),
            "size": blob.len(),
        }));
    }
    if spec.bad_diff_id {
        diff_ids[0] = Digest::sha256_of(b"not the layer").to_string();
    }
    let config = serde_json::to_vec(&json!({
        "architecture": spec.arch,
        "os": "linux",
        "config": { "Cmd": spec.cmd, "Env": ["PATH=/bin"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .expect("config");
    let config_digest = put_blob(layout, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.to_string(),
            "size": config.len(),
        },
        "layers": layers,
    }))
    .expect("manifest");
    let d = put_blob(layout, &manifest);
    json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": d.to_string(),
        "size": manifest.len(),
        "platform": { "architecture": spec.arch, "os": "linux" },
    })
}

/// Writes an index of `manifests` as a blob and returns its descriptor.
pub fn add_index(layout: &Path, manifests: Vec<Value>) -> Value {
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .expect("index");
    let d = put_blob(layout, &index);
    json!({
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": d.to_string(),
        "size": index.len(),
    })
}

/// Writes `oci-layout` and `index.json` naming each descriptor by its tag.
pub fn finish_layout(layout: &Path, tagged: Vec<(&str, Value)>) {
    let manifests: Vec<Value> = tagged
        .into_iter()
        .map(|(tag, mut d)| {
            d["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
            d
        })
        .collect();
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&json!({ "schemaVersion": 2, "manifests": manifests })).expect("index"),
    )
    .expect("index.json");
}

/// An amd64 image of `layers` whose command is `/bin/sh`; returns its descriptor.
pub fn amd64_image(layout: &Path, layers: &[Vec<u8>], comp: Comp) -> Value {
    add_image(
        layout,
        &ImageSpec {
            arch: "amd64",
            layers,
            comp,
            bad_diff_id: false,
            cmd: &["/bin/sh"],
        },
    )
}

/// `n` pseudo-random (xorshift) bytes: incompressible layer content.
pub fn noise(seed: &mut u64, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed as u8
        })
        .collect()
}

/// The three layers of the standard test image: busybox, then files, then a whiteout and
/// an opaque directory over them.
pub fn busybox_layers() -> Vec<Vec<u8>> {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static must be installed");
    vec![
        layer_tar(&[
            Entry::Dir("bin"),
            Entry::File("bin/busybox", &busybox, 0o755),
            Entry::Symlink("bin/sh", "busybox"),
        ]),
        layer_tar(&[
            Entry::Dir("etc"),
            Entry::File("etc/removed", b"gone later\n", 0o644),
            Entry::File("etc/kept", b"kept\n", 0o644),
            Entry::Dir("data"),
            Entry::File("data/old-1", b"old\n", 0o644),
            Entry::File("data/old-2", b"old\n", 0o644),
        ]),
        layer_tar(&[
            Entry::File("etc/.wh.removed", b"", 0o644),
            Entry::Dir("data"),
            Entry::File("data/.wh..wh..opq", b"", 0o644),
            Entry::File("data/new", b"new\n", 0o644),
        ]),
    ]
}
