//! Writes the seed corpus, `fuzz/corpus/<target>/<name>`: small, real inputs for every
//! target, including those that need signing with the fuzz key (a bundle, channel
//! documents) or encoding (DHCP, netlink, tar). Run from `fuzz/` with
//! `cargo +nightly run --example make_corpus` after changing a seed; the output is
//! checked in, and the same seeds come out every time (no clock, no randomness).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use base64::Engine as _;
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
use dhcproto::Encodable;
use gantry_fuzz::SEPARATOR;
use gantry_updater::bundle::{self, BundleMeta};
use gantry_updater::channel::{BundleRef, Channel};
use gantry_updater::verity::Verity;

fn main() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let w = Writer(root);
    dhcp(&w)?;
    configs(&w)?;
    imds(&w)?;
    api(&w)?;
    layers(&w)?;
    oci(&w)?;
    challenges(&w)?;
    bundles(&w)?;
    channels(&w)?;
    netlink(&w)?;
    grubenv(&w)?;
    Ok(())
}

struct Writer(PathBuf);

impl Writer {
    fn put(&self, target: &str, name: &str, bytes: impl AsRef<[u8]>) -> Result<()> {
        let dir = self.0.join(target);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        std::fs::write(dir.join(name), bytes).with_context(|| format!("write {target}/{name}"))
    }
}

fn joined(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(SEPARATOR)
}

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// A reply as dnsmasq sends one on QEMU's user network.
fn dhcp_reply(kind: MessageType) -> Result<Vec<u8>> {
    let mut m = Message::new_with_id(
        0x1234_5678,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::new(10, 0, 2, 15),
        Ipv4Addr::new(10, 0, 2, 2),
        Ipv4Addr::UNSPECIFIED,
        &MAC,
    );
    m.set_opcode(Opcode::BootReply);
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)));
    if kind == MessageType::Nak {
        o.insert(DhcpOption::Message("address not available".into()));
    } else {
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 2)]));
        o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            10, 0, 2, 3,
        )]));
        o.insert(DhcpOption::AddressLeaseTime(86400));
        o.insert(DhcpOption::Renewal(43200));
        o.insert(DhcpOption::Rebinding(75600));
        o.insert(DhcpOption::InterfaceMtu(1500));
        o.insert(DhcpOption::DomainName("example.net".into()));
        o.insert(DhcpOption::Hostname("edge-7".into()));
        o.insert(DhcpOption::ClasslessStaticRoute(vec![
            ("0.0.0.0/0".parse()?, Ipv4Addr::new(10, 0, 2, 2)),
            ("192.0.2.0/24".parse()?, Ipv4Addr::new(10, 0, 2, 254)),
        ]));
    }
    Ok(m.to_vec()?)
}

fn dhcp(w: &Writer) -> Result<()> {
    // The first byte is the state the machine is in: 0 SELECTING, 1 REBOOTING,
    // 2 REQUESTING, 3 RENEWING.
    for (state, kind, name) in [
        (0u8, MessageType::Offer, "offer-selecting"),
        (1, MessageType::Ack, "ack-rebooting"),
        (2, MessageType::Ack, "ack-requesting"),
        (3, MessageType::Ack, "ack-renewing"),
        (2, MessageType::Nak, "nak-requesting"),
    ] {
        let mut input = vec![state];
        input.extend(dhcp_reply(kind)?);
        w.put("dhcp_reply", name, input)?;
    }
    Ok(())
}

const CONFIG: &str = r#"#gantry-config
version = 1
hostname = "edge-7"

[network]
carrier_timeout_secs = 10

[[network.interfaces]]
name = "eth0"
dhcp = true
mtu = 1500

[[network.interfaces]]
mac = "52:54:00:aa:bb:cc"
addresses = ["192.0.2.10/24", "2001:db8::10/64"]
gateway4 = "192.0.2.1"
gateway6 = "2001:db8::1"
routes = [{ to = "198.51.100.0/24", via = "192.0.2.254" }]
ipv6_ra = true

[network.dns]
servers = ["192.0.2.53"]
search = ["example.net"]

[registries]
insecure = ["10.0.2.100:5000"]
[registries.auth."registry.example.net"]
username = "fleet"
password = "s3cret"

[containers.web]
image = "10.0.2.100:5000/demo/web:1"
pull = "always"
entrypoint = ["httpd"]
command = ["-f", "-p", "80", "-h", "/www"]
env = { GREETING = "hello" }
working_dir = "/www"
user = "1000:1000"
network = "bridge"
ports = ["8080:80", "5353:53/udp"]
volumes = ["web-data:/data", "cache:/cache:ro"]
restart = "on-failure:5"
depends_on = ["db"]
stop_grace_secs = 10
required = true
resources = { memory_mib = 256, cpu_millis = 500, pids = 200 }
health = { http = "http://127.0.0.1:80/", interval_secs = 10, timeout_secs = 3, retries = 3, start_period_secs = 5 }

[containers.db]
image = "10.0.2.100:5000/demo/db:1"
health = { tcp = 5432 }

[update]
server = "https://updates.example.net/gantry/stable.json"
channel = "stable"
check_interval_secs = 3600
reboot = "window"
tries = 3
health_timeout_secs = 300
window = { days = ["sat", "sun"], start = "02:30", duration_mins = 120 }
"#;

fn api_config() -> String {
    let cert = include_str!("../../init/src/api/testdata/cert.pem");
    let key = include_str!("../../init/src/api/testdata/key.pem");
    format!(
        "version = 1\n[api]\nlisten = \"0.0.0.0:7443\"\ntls_cert = \"\"\"\n{cert}\"\"\"\n\
         tls_key = \"\"\"\n{key}\"\"\"\ntokens = [{{ name = \"ops\", sha256 = \
         \"2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\" }}]\n"
    )
}

const META_DATA: &str = "instance-id: iid-edge-7\nlocal-hostname: edge-7 # from the seed\n";

/// A FAT16 boot sector labelled CIDATA, as `mkfs.fat -n CIDATA` writes the fields probed.
fn fat_sector() -> Vec<u8> {
    let mut s = vec![0u8; 512];
    s[0..3].copy_from_slice(&[0xeb, 0x3c, 0x90]);
    s[3..11].copy_from_slice(b"mkfs.fat");
    s[11..13].copy_from_slice(&512u16.to_le_bytes());
    s[13] = 4;
    s[14..16].copy_from_slice(&4u16.to_le_bytes());
    s[16] = 2;
    s[22..24].copy_from_slice(&32u16.to_le_bytes());
    s[38] = 0x29;
    s[43..54].copy_from_slice(b"CIDATA     ");
    s[54..62].copy_from_slice(b"FAT16   ");
    s[510..512].copy_from_slice(&[0x55, 0xaa]);
    s
}

/// An ISO 9660 image's first 17 sectors with a primary volume descriptor labelled cidata.
fn iso_head() -> Vec<u8> {
    let mut img = vec![0u8; 17 * 2048];
    let pvd = &mut img[16 * 2048..];
    pvd[0] = 1;
    pvd[1..6].copy_from_slice(b"CD001");
    pvd[6] = 1;
    pvd[40..72].copy_from_slice(b"cidata                          ");
    img
}

fn configs(w: &Writer) -> Result<()> {
    w.put("machine_config", "full", CONFIG)?;
    w.put("machine_config", "minimal", "version = 1\n")?;
    w.put("machine_config", "api", api_config())?;
    w.put(
        "machine_config",
        "refused",
        "version = 1\n[[network.interfaces]]\nname = \"eth0\"\nmtu = 20\n",
    )?;

    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
    w.put(
        "cmdline_config",
        "full",
        format!(
            "BOOT_IMAGE=/vmlinuz console=ttyS0 panic=10 gantry.slot=A gantry.config={} \
             gantry.imds=off",
            b64(CONFIG)
        ),
    )?;
    w.put(
        "cmdline_config",
        "minimal-unpadded",
        "console=ttyS0 gantry.config=dmVyc2lvbiA9IDEK",
    )?;
    w.put(
        "cmdline_config",
        "quoted",
        format!(
            "gantry.hostname=vm1 \"gantry.config={}\"",
            b64("version = 1\n")
        ),
    )?;

    w.put(
        "config_drive",
        "user-and-meta-data",
        joined(&[CONFIG.as_bytes(), META_DATA.as_bytes()]),
    )?;
    w.put(
        "config_drive",
        "meta-data-hostname",
        joined(&[b"version = 1\n", META_DATA.as_bytes()]),
    )?;
    w.put(
        "config_drive",
        "cloud-config",
        "#cloud-config\npackages: [nginx]\n",
    )?;
    w.put("config_drive", "fat-label", fat_sector())?;
    w.put("config_drive", "iso9660-label", iso_head())?;
    Ok(())
}

fn http(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn imds(w: &Writer) -> Result<()> {
    // Token, user-data, instance-id, local-hostname, in the client's order.
    let v2 = [
        http("200 OK", "AQAEAFfuzz-token=="),
        http("200 OK", CONFIG),
        http("200 OK", "i-0abc123"),
        http("200 OK", "ip-10-0-0-5.ec2.internal\n"),
    ];
    w.put(
        "imds_reply",
        "imdsv2",
        joined(&v2.iter().map(Vec::as_slice).collect::<Vec<_>>()),
    )?;
    let v1 = [
        http("405 Method Not Allowed", ""),
        http("200 OK", "version = 1\n"),
        http("404 Not Found", ""),
        http("200 OK", "edge-7"),
    ];
    w.put(
        "imds_reply",
        "no-token",
        joined(&v1.iter().map(Vec::as_slice).collect::<Vec<_>>()),
    )?;
    let chunked =
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nc\r\nversion = 1\n\r\n0\r\n\r\n";
    let three = [
        http("404 Not Found", ""),
        chunked.to_vec(),
        http("503 Service Unavailable", ""),
    ];
    w.put(
        "imds_reply",
        "chunked-then-503",
        joined(&three.iter().map(Vec::as_slice).collect::<Vec<_>>()),
    )?;
    Ok(())
}

fn api(w: &Writer) -> Result<()> {
    let auth = "authorization: Bearer fuzz-token\r\n";
    w.put(
        "api_request",
        "status",
        format!("GET /v1/status HTTP/1.1\r\nhost: edge-7:7443\r\n{auth}\r\n"),
    )?;
    w.put(
        "api_request",
        "logs-pipelined",
        format!(
            "GET /v1/containers/web/logs?tail=50 HTTP/1.1\r\nhost: edge-7\r\n{auth}\r\n\
             GET /v1/containers/nope/logs HTTP/1.1\r\nhost: edge-7\r\n{auth}\r\n\
             POST /v1/status HTTP/1.1\r\nhost: edge-7\r\n{auth}content-length: 2\r\n\r\nhi\
             GET /v1/status HTTP/1.1\r\nhost: edge-7\r\nconnection: close\r\n\r\n"
        ),
    )?;
    w.put(
        "api_request",
        "no-token",
        "GET /v1/status HTTP/1.1\r\nhost: edge-7\r\nauthorization: Basic b3BzOnMzY3JldA==\r\n\r\n",
    )?;
    Ok(())
}

fn tar_header(kind: tar::EntryType, name: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_path(name).expect("a short name");
    h.set_size(size);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    h
}

fn layers(w: &Writer) -> Result<()> {
    use tar::EntryType;
    let mut b = tar::Builder::new(Vec::new());
    b.append(&tar_header(EntryType::Directory, "etc/", 0), &[][..])?;
    let passwd = b"root:x:0:0:root:/root:/bin/sh\n";
    b.append(
        &tar_header(EntryType::Regular, "etc/passwd", passwd.len() as u64),
        &passwd[..],
    )?;
    let mut link = tar_header(EntryType::Symlink, "bin/sh", 0);
    link.set_link_name("busybox")?;
    link.set_cksum();
    b.append(&link, &[][..])?;
    let mut hard = tar_header(EntryType::Link, "etc/passwd-", 0);
    hard.set_link_name("etc/passwd")?;
    hard.set_cksum();
    b.append(&hard, &[][..])?;
    b.append(&tar_header(EntryType::Regular, "var/.wh.cache", 0), &[][..])?;
    b.append(
        &tar_header(EntryType::Regular, "opt/.wh..wh..opq", 0),
        &[][..],
    )?;
    // A long name: the builder writes a GNU `L` header for it.
    let long = format!("usr/share/{}/file", "d".repeat(120));
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_size(3);
    h.set_mode(0o644);
    h.set_mtime(1_600_000_000);
    b.append_data(&mut h, &long, &b"abc"[..])?;
    w.put("layer_tar", "ordinary", b.into_inner()?)?;

    // A PAX header with a path, a binary xattr and a fractional mtime.
    let mut records = Vec::new();
    for (key, value) in [
        ("path", &b"usr/bin/ping"[..]),
        ("mtime", b"1600000000.5"),
        (
            "SCHILY.xattr.security.capability",
            b"\x01\x00\x00\x02\x00\x20\x00\x00\n\x00",
        ),
    ] {
        let body = key.len() + value.len() + 3;
        let mut len = body + 1;
        while len.to_string().len() + body != len {
            len += 1;
        }
        records.extend_from_slice(format!("{len} {key}=").as_bytes());
        records.extend_from_slice(value);
        records.push(b'\n');
    }
    let mut b = tar::Builder::new(Vec::new());
    b.append(
        &tar_header(EntryType::XHeader, "PaxHeaders/ping", records.len() as u64),
        &records[..],
    )?;
    b.append(&tar_header(EntryType::Regular, "ping", 4), &b"\x7fELF"[..])?;
    let mut dev = tar::Header::new_ustar();
    dev.set_entry_type(EntryType::Char);
    dev.set_path("dev/null")?;
    dev.set_device_major(1)?;
    dev.set_device_minor(3)?;
    dev.set_mode(0o666);
    dev.set_cksum();
    b.append(&dev, &[][..])?;
    w.put("layer_tar", "pax-xattr-device", b.into_inner()?)?;
    Ok(())
}

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

fn oci(w: &Writer) -> Result<()> {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest('a'), "size": 1470 },
        "layers": [
            { "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest('b'), "size": 3623807 },
            { "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": digest('c'), "size": 1024,
              "annotations": { "org.opencontainers.image.title": "app" } }
        ],
        "annotations": { "org.opencontainers.image.created": "2024-01-01T00:00:00Z" }
    });
    let mut seed = vec![0u8];
    seed.extend(serde_json::to_vec_pretty(&manifest)?);
    w.put("oci_manifest", "oci-manifest", seed)?;

    let docker = serde_json::json!({
        "schemaVersion": 2,
        "config": { "mediaType": "application/vnd.docker.container.image.v1+json", "digest": digest('d'), "size": 7023 },
        "layers": [
            { "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": digest('e'), "size": 32654 }
        ]
    });
    // Picked content type 4: Docker's manifest, which the document does not name itself.
    let mut seed = vec![4u8];
    seed.extend(serde_json::to_vec(&docker)?);
    w.put("oci_manifest", "docker-manifest-by-content-type", seed)?;

    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest('1'), "size": 1000,
              "platform": { "architecture": "arm64", "os": "linux", "variant": "v8" } },
            { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest('2'), "size": 1000,
              "platform": { "architecture": "amd64", "os": "linux" } },
            { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest('3'), "size": 500,
              "platform": { "architecture": "unknown", "os": "unknown" },
              "annotations": { "vnd.docker.reference.type": "attestation-manifest" } }
        ]
    });
    let mut seed = vec![1u8];
    seed.extend(serde_json::to_vec_pretty(&index)?);
    w.put("oci_manifest", "oci-index", seed)?;

    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {
            "User": "1000:1000",
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": ["/docker-entrypoint.sh"],
            "Cmd": ["nginx", "-g", "daemon off;"],
            "WorkingDir": "/",
            "StopSignal": "SIGQUIT",
            "ExposedPorts": { "80/tcp": {} },
            "Labels": { "maintainer": "NGINX Docker Maintainers" }
        },
        "rootfs": { "type": "layers", "diff_ids": [digest('7'), digest('8')] },
        "history": [{ "created_by": "ADD file:... in /" }]
    });
    let mut seed = vec![2u8];
    seed.extend(serde_json::to_vec_pretty(&config)?);
    w.put("oci_config", "two-layers", seed)?;
    Ok(())
}

fn challenges(w: &Writer) -> Result<()> {
    w.put(
        "registry_challenge",
        "docker-hub",
        "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\",\
         scope=\"repository:library/nginx:pull\"",
    )?;
    w.put(
        "registry_challenge",
        "basic",
        "Basic realm=\"Registry Realm\"",
    )?;
    w.put(
        "registry_challenge",
        "two-challenges",
        "bearer realm=https://ghcr.io/token, service = ghcr.io , Basic realm=\"a \\\"b\\\"\"",
    )?;
    Ok(())
}

fn bundles(w: &Writer) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let kernel = dir.path().join("vmlinuz");
    std::fs::write(
        &kernel,
        (0..5000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
    )?;
    let root = dir.path().join("root.img");
    std::fs::write(&root, vec![0x5au8; 3 * 4096 + 100])?;
    let meta = BundleMeta {
        os_version: "0.2.0".into(),
        rollback_index: 2,
        arch: bundle::ARCH.into(),
        board: "generic".into(),
        verity: Verity {
            root_hash: "12".repeat(32),
            salt: "34".repeat(32),
            data_blocks: 2,
            hash_offset_blocks: 2,
            total_bytes: 3 * 4096 + 100,
        },
    };
    let out = dir.path().join("seed.bundle");
    let manifest = bundle::write(
        &out,
        &meta,
        &kernel,
        &["console=ttyS0".into(), "panic=10".into()],
        &root,
        &[gantry_fuzz::signing_key()],
    )?;
    w.put("bundle_header", "signed", std::fs::read(&out)?)?;
    w.put(
        "bundle_manifest",
        "signed",
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    w.put(
        "bundle_cmdline",
        "console-panic",
        "console=ttyS0 panic=10\n",
    )?;
    w.put(
        "bundle_cmdline",
        "quiet",
        "console=tty0 console=ttyS0,115200 quiet loglevel=3 panic=-1 panic=30 init=/sbin/gantry-init\n",
    )?;
    w.put("bundle_cmdline", "slot-owned", "root=/dev/sda2 panic=10")?;
    Ok(())
}

fn channels(w: &Writer) -> Result<()> {
    let channel = Channel {
        format: gantry_updater::channel::FORMAT,
        channel: "stable".into(),
        serial: 7,
        expires: 4_000_000_000,
        os_version: "0.2.0".into(),
        rollback_index: 2,
        arch: "x86_64".into(),
        board: "generic".into(),
        bundle: BundleRef {
            url: "gantry-0.2.0.bundle".into(),
            size: 1000,
            sha256: "ab".repeat(32),
        },
        rollout: None,
        failure_budget: None,
    };
    let mut wire = vec![0u8];
    wire.extend(channel.sign(&[gantry_fuzz::signing_key()])?);
    w.put("channel", "signed-wire", wire)?;
    let mut doc = vec![1u8];
    doc.extend(serde_json::to_vec(&channel)?);
    w.put("channel", "document", doc)?;
    let wave = |after_secs, percent| gantry_updater::rollout::Wave {
        after_secs,
        percent,
    };
    let waved = Channel {
        rollout: Some(gantry_updater::rollout::Rollout {
            start: 1_765_000_000,
            waves: vec![wave(3_600, 1), wave(86_400, 10), wave(518_400, 100)],
        }),
        ..channel
    };
    let mut doc = vec![1u8];
    doc.extend(serde_json::to_vec(&waved)?);
    w.put("channel", "document-waves", doc)?;
    Ok(())
}

fn netlink(w: &Writer) -> Result<()> {
    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_MULTIPART};
    use netlink_packet_route::address::{AddressAttribute, AddressMessage};
    use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
    use netlink_packet_route::route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
        RouteType,
    };
    use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

    let emit = |inner: RouteNetlinkMessage, seq: u32| {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_MULTIPART;
        header.sequence_number = seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(inner));
        m.finalize();
        let mut buf = vec![0u8; m.buffer_len()];
        m.serialize(&mut buf);
        buf
    };
    let mut link = LinkMessage::default();
    link.header.index = 2;
    link.header.flags = LinkFlags::Up | LinkFlags::LowerUp | LinkFlags::Broadcast;
    link.attributes = vec![
        LinkAttribute::IfName("eth0".into()),
        LinkAttribute::Mtu(1500),
        LinkAttribute::Address(MAC.to_vec()),
        LinkAttribute::Broadcast(vec![0xff; 6]),
    ];
    let mut lo = LinkMessage::default();
    lo.header.index = 1;
    lo.header.flags = LinkFlags::Up | LinkFlags::Loopback;
    lo.attributes = vec![
        LinkAttribute::IfName("lo".into()),
        LinkAttribute::Mtu(65536),
    ];
    let mut dump = emit(RouteNetlinkMessage::NewLink(lo), 7);
    dump.extend(emit(RouteNetlinkMessage::NewLink(link), 7));
    w.put("netlink_route", "link-dump", dump)?;

    let mut addr = AddressMessage::default();
    addr.header.family = AddressFamily::Inet;
    addr.header.prefix_len = 24;
    addr.header.index = 2;
    addr.attributes = vec![
        AddressAttribute::Address(Ipv4Addr::new(10, 0, 2, 15).into()),
        AddressAttribute::Local(Ipv4Addr::new(10, 0, 2, 15).into()),
        AddressAttribute::Label("eth0".into()),
    ];
    w.put(
        "netlink_route",
        "address",
        emit(RouteNetlinkMessage::NewAddress(addr), 8),
    )?;

    let mut route = RouteMessage::default();
    route.header.address_family = AddressFamily::Inet;
    route.header.destination_prefix_length = 24;
    route.header.table = RouteHeader::RT_TABLE_MAIN;
    route.header.protocol = RouteProtocol::Dhcp;
    route.header.scope = RouteScope::Universe;
    route.header.kind = RouteType::Unicast;
    route.attributes = vec![
        RouteAttribute::Destination(RouteAddress::Inet(Ipv4Addr::new(192, 0, 2, 0))),
        RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(10, 0, 2, 254))),
        RouteAttribute::Oif(2),
        RouteAttribute::Priority(100),
    ];
    let mut default = RouteMessage::default();
    default.header.address_family = AddressFamily::Inet;
    default.header.table = RouteHeader::RT_TABLE_MAIN;
    default.attributes = vec![
        RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(10, 0, 2, 2))),
        RouteAttribute::Oif(2),
    ];
    let mut dump = emit(RouteNetlinkMessage::NewRoute(route), 9);
    dump.extend(emit(RouteNetlinkMessage::NewRoute(default), 9));
    w.put("netlink_route", "route-dump", dump)?;

    // nf_tables answers: an extended ACK with the kernel's text, and a rule of a dump.
    let nlmsg = |kind: u16, flags: u16, seq: u32, payload: &[u8]| {
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    };
    let attr = |kind: u16, value: &[u8]| {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    };
    // NLMSG_ERROR (2), NLM_F_CAPPED | NLM_F_ACK_TLVS: -EEXIST, the echoed header, the text.
    let mut err = (-17i32).to_ne_bytes().to_vec();
    err.extend_from_slice(&nlmsg(0x0a06, 0x5, 100, &[])[..16]);
    err.extend(attr(1, b"Could not process rule: File exists\0"));
    let mut dgram = nlmsg(2, 0x300, 101, &err);
    dgram.extend(nlmsg(2, 0, 102, &0i32.to_ne_bytes()));
    w.put("netlink_nft", "error-and-ack", dgram)?;
    // NFT_MSG_NEWRULE (10 << 8 | 6), NLM_F_MULTI: nfgenmsg, table, chain, handle, comment.
    let mut rule = vec![2, 0, 0, 0];
    rule.extend(attr(1, b"gantry\0"));
    rule.extend(attr(2, b"publish\0"));
    rule.extend(attr(3, &42u64.to_be_bytes()));
    let mut udata = vec![0u8, 14];
    udata.extend_from_slice(b"container web\0");
    rule.extend(attr(7, &udata));
    let mut dgram = nlmsg(0x0a06, 0x2, 103, &rule);
    dgram.extend(nlmsg(3, 0x2, 103, &0i32.to_ne_bytes()));
    w.put("netlink_nft", "rule-dump", dgram)?;
    Ok(())
}

/// Blocks as the image build writes them and as an update and a trial boot leave them.
fn grubenv(w: &Writer) -> Result<()> {
    use gantry_boot::grubenv::GrubEnv;
    use gantry_boot::{Slot, SlotState};
    let fresh = GrubEnv::initial(Slot::A);
    let mut trial = fresh.clone();
    trial.set_order(&[Slot::B, Slot::A]);
    trial.set_slot(Slot::B, SlotState { good: false, tries: 2 });
    for (name, env) in [("initial", fresh), ("trial", trial)] {
        w.put("grubenv", name, env.to_block().context("grubenv block")?)?;
    }
    Ok(())
}
