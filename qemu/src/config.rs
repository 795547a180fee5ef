//! What a VM is made of, and the QEMU command line for it.

use std::path::{Path, PathBuf};

/// How QEMU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// Software emulation; works everywhere (the only choice on these build machines).
    #[default]
    Tcg,
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
}

impl Accel {
    /// `GANTRY_QEMU_ACCEL=kvm` opts in to KVM; anything else is TCG.
    pub fn from_env() -> Self {
        match std::env::var("GANTRY_QEMU_ACCEL").as_deref() {
            Ok("kvm") => Accel::Kvm,
            _ => Accel::Tcg,
        }
    }
}

/// The bus the boot disk hangs off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskBus {
    #[default]
    Virtio,
    Nvme,
}

/// A host port forwarded to the guest (`hostfwd`): the host side is always 127.0.0.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostForward {
    pub udp: bool,
    pub host_port: u16,
    pub guest_port: u16,
}

/// What QEMU runs for each guest connection to a `guestfwd` address: busybox's `nc`,
/// relaying it to the service on loopback. (A `tcp:` target would be one connection
/// opened when QEMU starts and shared by every guest connection; a registry client opens
/// several at once.)
pub const RELAY: &str = "/bin/busybox nc";

/// A guest address forwarded to a service on the host's loopback (`guestfwd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestForward {
    /// An address inside QEMU's user network (10.0.2.0/24), e.g. `10.0.2.100`.
    pub guest_addr: std::net::Ipv4Addr,
    pub guest_port: u16,
    /// Port on 127.0.0.1.
    pub host_port: u16,
}

/// The netdev id of a [`SegmentNic`].
pub const SEGMENT_NETDEV: &str = "cnet";

/// A NIC on a VDE switch (`vde_switch`, user space, a unix socket directory): frames go
/// only to the other ports of that switch, never to a host interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentNic {
    /// The switch's socket directory.
    pub switch: PathBuf,
    pub mac: String,
}

/// UEFI firmware: read-only code, and a template for each VM's own variable store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    pub code: PathBuf,
    pub vars_template: PathBuf,
}

impl Default for Firmware {
    /// Debian's `ovmf` package.
    fn default() -> Self {
        Self {
            code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
            vars_template: "/usr/share/OVMF/OVMF_VARS_4M.fd".into(),
        }
    }
}

/// Everything about one VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub image: PathBuf,
    pub memory_mib: u32,
    pub cpus: u32,
    pub accel: Accel,
    pub firmware: Firmware,
    pub disk_bus: DiskBus,
    pub hostfwd: Vec<HostForward>,
    pub guestfwd: Vec<GuestForward>,
    /// `fw_cfg` files: name (e.g. `opt/org.gantry/config`) and host file.
    pub fw_cfg: Vec<(String, PathBuf)>,
    /// More disks after the boot disk: raw image files, read-only, on virtio-blk (the
    /// guest sees `/dev/vdb`, `/dev/vdc`, … when the boot disk is virtio). A config drive
    /// is one.
    pub extra_disks: Vec<PathBuf>,
    /// Serial console on this process's terminal as well as in the log.
    pub console: bool,
    /// Exit instead of rebooting (a guest reboot ends QEMU).
    pub no_reboot: bool,
    /// An i6300esb watchdog that resets the machine when it fires.
    pub watchdog: bool,
    /// More NICs after the user-network one, each alone on its own QEMU hub: a link with
    /// carrier where nothing answers (no DHCP server, no traffic leaves).
    pub silent_nics: u32,
    /// The user-network NIC's hardware address; QEMU's default when `None`.
    pub mac: Option<String>,
    /// A second NIC on a user-space switch shared with other VMs (a local cluster's
    /// segment); its netdev is `cnet`, so QMP `set_link` can cut it.
    pub segment: Option<SegmentNic>,
    /// The SMBIOS system UUID (`-uuid`), which the guest reads from
    /// `/sys/class/dmi/id/product_uuid` (PID 1 takes its machine id from it on first boot).
    pub uuid: Option<String>,
    /// Boot this kernel and command line directly (`-kernel`, `-append`) instead of OVMF
    /// and GRUB; see [`crate::direct_boot`].
    pub direct_kernel: Option<crate::direct_boot::DirectKernel>,
    /// Run on a qcow2 overlay over `image` (the default), so the image is never written.
    /// False: the VM writes `image` itself — the caller's own copy, for booting the same
    /// disk again in a later VM (after a power cut, say).
    pub overlay: bool,
}

impl VmConfig {
    pub fn new(image: impl Into<PathBuf>) -> Self {
        Self {
            image: image.into(),
            memory_mib: 512,
            cpus: 2,
            accel: Accel::from_env(),
            firmware: Firmware::default(),
            disk_bus: DiskBus::default(),
            hostfwd: Vec::new(),
            guestfwd: Vec::new(),
            fw_cfg: Vec::new(),
            extra_disks: Vec::new(),
            console: false,
            no_reboot: false,
            watchdog: false,
            silent_nics: 0,
            mac: None,
            segment: None,
            uuid: None,
            direct_kernel: None,
            overlay: true,
        }
    }

    /// The file the VM's disk is, and its format.
    pub fn disk<'a>(&'a self, files: &'a VmFiles) -> (&'a Path, &'static str) {
        if self.overlay {
            (&files.overlay, "qcow2")
        } else {
            (&self.image, image_format(&self.image))
        }
    }

    /// The `qemu-system-x86_64` arguments, given the VM's own files.
    pub fn args(&self, files: &VmFiles) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| (*s).to_owned()));
        let accel = match self.accel {
            Accel::Tcg => "tcg,thread=multi",
            Accel::Kvm => "kvm",
        };
        push(&["-nodefaults", "-no-user-config", "-display", "none"]);
        push(&["-machine", "q35", "-accel", accel]);
        if self.accel == Accel::Kvm {
            push(&["-cpu", "host"]);
        }
        let mem = self.memory_mib.to_string();
        let cpus = self.cpus.to_string();
        push(&["-m", &mem, "-smp", &cpus]);
        if let Some(uuid) = &self.uuid {
            push(&["-uuid", uuid]);
        }
        match &self.direct_kernel {
            // QEMU's own BIOS and its Linux loader: no UEFI, no GRUB.
            Some(k) => {
                let kernel = k.kernel.display().to_string();
                push(&["-kernel", &kernel, "-append", &k.append]);
            }
            None => {
                let code = format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={}",
                    opt_path(&self.firmware.code)
                );
                let vars = format!("if=pflash,format=raw,unit=1,file={}", opt_path(&files.vars));
                push(&["-drive", &code, "-drive", &vars]);
            }
        }
        let (disk_file, disk_format) = self.disk(files);
        let disk = format!(
            "if=none,id=disk0,format={disk_format},file={}",
            opt_path(disk_file)
        );
        push(&["-drive", &disk]);
        match self.disk_bus {
            DiskBus::Virtio => push(&["-device", "virtio-blk-pci,drive=disk0,bootindex=1"]),
            DiskBus::Nvme => push(&["-device", "nvme,drive=disk0,serial=gantry0,bootindex=1"]),
        }
        for (i, path) in self.extra_disks.iter().enumerate() {
            let n = i + 1;
            let drive = format!(
                "if=none,id=disk{n},format=raw,readonly=on,file={}",
                opt_path(path)
            );
            let device = format!("virtio-blk-pci,drive=disk{n}");
            push(&["-drive", &drive, "-device", &device]);
        }
        // restrict=on: the guest reaches nothing but what is forwarded below.
        let mut net = "user,id=net0,restrict=on".to_owned();
        for f in &self.hostfwd {
            let proto = if f.udp { "udp" } else { "tcp" };
            net.push_str(&format!(
                ",hostfwd={proto}:127.0.0.1:{}-:{}",
                f.host_port, f.guest_port
            ));
        }
        for f in &self.guestfwd {
            net.push_str(&format!(
                ",guestfwd=tcp:{}:{}-cmd:{RELAY} 127.0.0.1 {}",
                f.guest_addr, f.guest_port, f.host_port
            ));
        }
        let mut nic = "virtio-net-pci,netdev=net0".to_owned();
        if let Some(mac) = &self.mac {
            nic.push_str(&format!(",mac={mac}"));
        }
        push(&["-netdev", &net, "-device", &nic]);
        if let Some(seg) = &self.segment {
            let netdev = format!("vde,id={SEGMENT_NETDEV},sock={}", opt_path(&seg.switch));
            let device = format!("virtio-net-pci,netdev={SEGMENT_NETDEV},mac={}", seg.mac);
            push(&["-netdev", &netdev, "-device", &device]);
        }
        for n in 1..=self.silent_nics {
            let netdev = format!("hubport,id=silent{n},hubid={n}");
            let device = format!("virtio-net-pci,netdev=silent{n}");
            push(&["-netdev", &netdev, "-device", &device]);
        }
        push(&["-device", "virtio-rng-pci"]);
        let serial = if self.console {
            format!(
                "stdio,id=serial0,signal=on,logfile={}",
                opt_path(&files.serial_log)
            )
        } else {
            format!("file,id=serial0,path={}", opt_path(&files.serial_log))
        };
        push(&["-chardev", &serial, "-serial", "chardev:serial0"]);
        let qmp = format!("unix:{},server=on,wait=off", opt_path(&files.qmp));
        push(&["-qmp", &qmp]);
        for (name, file) in &self.fw_cfg {
            let spec = format!("name={name},file={}", opt_path(file));
            push(&["-fw_cfg", &spec]);
        }
        if self.watchdog {
            push(&["-device", "i6300esb", "-action", "watchdog=reset"]);
        }
        if self.no_reboot {
            push(&["-no-reboot"]);
        }
        a
    }
}

/// `qcow2` for a `.qcow2` file, `raw` for anything else.
pub(crate) fn image_format(image: &Path) -> &'static str {
    if image.extension().is_some_and(|e| e == "qcow2") {
        "qcow2"
    } else {
        "raw"
    }
}

/// A path as a value inside a QEMU option list, where a comma must be doubled.
fn opt_path(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// The files one VM owns, in its own directory.
#[derive(Debug, Clone)]
pub struct VmFiles {
    pub overlay: PathBuf,
    pub vars: PathBuf,
    pub serial_log: PathBuf,
    pub qmp: PathBuf,
}

impl VmFiles {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            overlay: dir.join("overlay.qcow2"),
            vars: dir.join("OVMF_VARS.fd"),
            serial_log: dir.join("serial.log"),
            qmp: dir.join("qmp.sock"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_network_is_restricted_and_forwards_only_to_loopback() {
        let mut cfg = VmConfig::new("/img.qcow2");
        cfg.hostfwd.push(HostForward {
            udp: false,
            host_port: 8080,
            guest_port: 80,
        });
        cfg.guestfwd.push(GuestForward {
            guest_addr: "10.0.2.100".parse().unwrap(),
            guest_port: 80,
            host_port: 9000,
        });
        let args = cfg.args(&VmFiles::in_dir(Path::new("/vm")));
        let net = &args[args.iter().position(|a| a == "-netdev").unwrap() + 1];
        assert_eq!(
            net,
            "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:8080-:80,\
             guestfwd=tcp:10.0.2.100:80-cmd:/bin/busybox nc 127.0.0.1 9000"
        );
    }

    #[test]
    fn a_segment_nic_is_a_second_virtio_nic_on_the_vde_switch() {
        let mut cfg = VmConfig::new("/img.qcow2");
        cfg.mac = Some("52:54:00:12:00:01".into());
        cfg.segment = Some(SegmentNic {
            switch: "/c,1/switch".into(),
            mac: "52:54:00:88:00:01".into(),
        });
        let joined = cfg.args(&VmFiles::in_dir(Path::new("/vm"))).join(" ");
        assert!(
            joined.contains("-device virtio-net-pci,netdev=net0,mac=52:54:00:12:00:01 "),
            "{joined}"
        );
        assert!(
            joined.contains(
                "-netdev vde,id=cnet,sock=/c,,1/switch \
                 -device virtio-net-pci,netdev=cnet,mac=52:54:00:88:00:01"
            ),
            "{joined}"
        );
    }

    #[test]
    fn a_direct_kernel_replaces_the_firmware_and_the_uuid_is_passed_on() {
        let mut cfg = VmConfig::new("/img.qcow2");
        cfg.uuid = Some("6ba7b810-9dad-11d1-80b4-00c04fd430c8".into());
        cfg.direct_kernel = Some(crate::direct_boot::DirectKernel {
            kernel: "/n/boot/vmlinuz".into(),
            append: "console=ttyS0 \"a b\"".into(),
            slot: gantry_boot::Slot::A,
        });
        let args = cfg.args(&VmFiles::in_dir(Path::new("/vm")));
        let at = |flag: &str| &args[args.iter().position(|a| a == flag).unwrap() + 1];
        assert_eq!(at("-uuid"), "6ba7b810-9dad-11d1-80b4-00c04fd430c8");
        assert_eq!(at("-kernel"), "/n/boot/vmlinuz");
        assert_eq!(at("-append"), "console=ttyS0 \"a b\"");
        assert!(!args.join(" ").contains("pflash"), "{args:?}");
    }

    #[test]
    fn commas_in_paths_are_escaped() {
        let mut cfg = VmConfig::new("/img.qcow2");
        cfg.fw_cfg
            .push(("opt/org.gantry/config".into(), "/a,b/config".into()));
        let args = cfg.args(&VmFiles::in_dir(Path::new("/v,m")));
        let joined = args.join(" ");
        assert!(joined.contains("file=/v,,m/overlay.qcow2"), "{joined}");
        assert!(
            joined.contains("name=opt/org.gantry/config,file=/a,,b/config"),
            "{joined}"
        );
    }

    #[test]
    fn extra_disks_are_read_only_raw_virtio_disks_after_the_boot_disk() {
        let mut cfg = VmConfig::new("/img.qcow2");
        cfg.extra_disks.push("/seed,1.img".into());
        let args = cfg.args(&VmFiles::in_dir(Path::new("/vm")));
        let joined = args.join(" ");
        assert!(
            joined.contains(
                "-drive if=none,id=disk1,format=raw,readonly=on,file=/seed,,1.img \
                 -device virtio-blk-pci,drive=disk1"
            ),
            "{joined}"
        );
        assert!(
            joined.find("id=disk0") < joined.find("id=disk1"),
            "{joined}"
        );
    }

    #[test]
    fn without_an_overlay_the_disk_is_the_image_itself() {
        let mut cfg = VmConfig::new("/copy.img");
        cfg.overlay = false;
        let joined = cfg.args(&VmFiles::in_dir(Path::new("/vm"))).join(" ");
        assert!(joined.contains("format=raw,file=/copy.img"), "{joined}");
        assert!(!joined.contains("overlay.qcow2"), "{joined}");
    }

    #[test]
    fn the_disk_is_the_overlay_and_the_firmware_code_is_read_only() {
        let args = VmConfig::new("/img.qcow2").args(&VmFiles::in_dir(Path::new("/vm")));
        let joined = args.join(" ");
        assert!(joined.contains("file=/vm/overlay.qcow2"), "{joined}");
        assert!(!joined.contains("/img.qcow2"), "{joined}");
        assert!(joined.contains("readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"));
        assert!(joined.contains("file=/vm/OVMF_VARS.fd"));
    }
}
