//! Builds a Gantry disk image, rootless and reproducibly, from an image definition
//! (`images/gantry.toml`):
//!
//! 1. the kernel from Debian's `linux-source-6.1`, configured from `kernel-config/`, cached
//!    by the digest of its inputs ([`kernel`]);
//! 2. the workspace binaries, static ([`binaries`]);
//! 3. the root file system as erofs ([`rootfs`]) with a dm-verity hash tree ([`verity`]);
//! 4. the ESP with GRUB, the A/B boot script and `grubenv` ([`esp`], [`grub`]);
//! 5. the GPT disk (ESP, ROOT-A, ROOT-B, DATA) as raw and qcow2 ([`disk`]);
//! 6. the signed update bundle of the same contents ([`gantry_updater::bundle`]), and the
//!    update keys the image trusts ([`update_keys`]).
//!
//! Every UUID, the verity salt and every timestamp derive from the inputs ([`ids`]), so
//! the same inputs give a byte-identical raw image. External tools run through
//! [`tool`], which checks for all of them up front and names the exact command on failure.

pub mod binaries;
pub mod definition;
pub mod disk;
pub mod esp;
mod fsio;
pub mod grub;
pub mod ids;
pub mod kernel;
pub mod rootfs;
pub mod tool;
pub mod update_keys;
pub mod verity;

use std::path::{Path, PathBuf};

use gantry_boot::Slot;
use serde::Serialize;

use crate::definition::ImageDefinition;
use crate::fsio::AtPath;
use crate::ids::{Seed, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Tools(#[from] tool::ToolError),
    #[error(transparent)]
    Definition(#[from] definition::DefinitionError),
    #[error("cannot build the kernel: {0}")]
    Kernel(#[from] kernel::KernelError),
    #[error("cannot build the binaries: {0}")]
    Binaries(#[from] binaries::BinaryError),
    #[error("cannot build the root file system: {0}")]
    Rootfs(#[from] rootfs::RootfsError),
    #[error("cannot build the dm-verity tree: {0}")]
    Verity(#[from] verity::VerityError),
    #[error("cannot build the ESP: {0}")]
    Esp(#[from] esp::EspError),
    #[error("cannot build the disk: {0}")]
    Disk(#[from] disk::DiskError),
    #[error(transparent)]
    Io(#[from] fsio::PathError),
    #[error("update keys: {0}")]
    Keys(#[from] gantry_updater::keys::KeyError),
    #[error("cannot write the update bundle: {0}")]
    Bundle(#[from] gantry_updater::bundle::BundleError),
    #[error("cannot write the build manifest: {0}")]
    Manifest(#[from] serde_json::Error),
}

/// What to build and where.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub definition: PathBuf,
    pub out_dir: PathBuf,
    pub cache_dir: PathBuf,
    /// The private key that signs the bundle; `None`: the development key in
    /// `<cache_dir>/keys/dev.key`, made on first use.
    pub signing_key: Option<PathBuf>,
}

impl BuildOptions {
    /// The shipped definition, built into `target/<name>` of this workspace.
    pub fn default_for_workspace() -> Self {
        let root = binaries::workspace_root();
        Self {
            definition: root.join("images/gantry.toml"),
            out_dir: root.join("target/gantry"),
            cache_dir: kernel::default_cache_dir(),
            signing_key: None,
        }
    }
}

/// What a build produced; also written as `<name>.json` next to the image.
#[derive(Debug, Clone, Serialize)]
pub struct BuildManifest {
    pub name: String,
    pub version: String,
    pub raw_image: PathBuf,
    pub qcow2_image: PathBuf,
    /// The signed update bundle of the same version (slot A's kernel, command line, root).
    pub bundle: PathBuf,
    /// Id of the key that signed it.
    pub signing_key_id: String,
    /// The kernel's `.config`, for `gantry-kernel-check`.
    pub kernel_config: PathBuf,
    pub kernel_cache_key: String,
    pub kernel_cached: bool,
    pub kernel_build_seconds: f64,
    pub raw_sha256: String,
    pub partitions: Vec<disk::Partition>,
    pub verity: verity::Verity,
    /// Slot A's kernel command line.
    pub cmdline: Vec<String>,
    pub sizes: Sizes,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sizes {
    pub kernel: u64,
    /// The compressed erofs root, without the hash tree.
    pub root_erofs: u64,
    /// The raw disk image (apparent size; it is sparse).
    pub raw: u64,
    /// Blocks the raw image actually uses.
    pub raw_allocated: u64,
    pub qcow2: u64,
}

impl BuildManifest {
    /// The partition called `name`.
    pub fn partition(&self, name: &str) -> Option<&disk::Partition> {
        self.partitions.iter().find(|p| p.name == name)
    }
}

/// Builds the image; `progress` receives one line per step.
pub fn build(opts: &BuildOptions, progress: &dyn Fn(&str)) -> Result<BuildManifest, BuildError> {
    tool::require(tool::ALL)?;
    let (def, def_text) = ImageDefinition::load_with_text(&opts.definition)?;
    let def_dir = opts
        .definition
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let work = opts.out_dir.join("work");
    std::fs::create_dir_all(&work).at(&work)?;

    let kernel = kernel::build(&def.kernel.source, &opts.cache_dir, progress)?;
    let built = binaries::build(&def.binaries, progress)?;

    let mut entries: Vec<rootfs::Entry> = def
        .binaries
        .iter()
        .zip(&built)
        .map(|(b, path)| rootfs::Entry {
            source: path.clone(),
            path: b.path.clone(),
            mode: 0o755,
        })
        .collect();
    entries.extend(def.files.iter().map(|f| rootfs::Entry {
        source: def_dir.join(&f.source),
        path: f.path.clone(),
        mode: f.mode,
    }));

    // The update keys the image trusts: the signing key's public half, plus the listed ones.
    let signing_key = update_keys::signing_key(opts)?;
    entries.extend(update_keys::trusted_entries(
        &signing_key,
        &def.update.trusted_keys,
        &def_dir,
        &work.join("update-keys"),
    )?);

    // Every identifier derives from everything that goes into the image.
    let mut inputs: Vec<Vec<u8>> = vec![def_text.into_bytes()];
    let kernel_digest = Sha256::of_file(&kernel.bzimage).at(&kernel.bzimage)?;
    inputs.push(kernel_digest.0.to_vec());
    for e in &entries {
        inputs.push(e.path.clone().into_bytes());
        inputs.push(Sha256::of_file(&e.source).at(&e.source)?.0.to_vec());
    }
    let seed = Seed::new(&inputs.iter().map(Vec::as_slice).collect::<Vec<_>>());

    progress("root: staging and mkfs.erofs");
    let staging = work.join("rootfs");
    rootfs::stage(&def, &entries, &staging)?;
    let erofs = work.join("root.erofs");
    rootfs::mkfs(
        &staging,
        &erofs,
        &seed.uuid("root-fs"),
        def.source_date_epoch,
    )?;
    let root_erofs = std::fs::metadata(&erofs).at(&erofs)?.len();

    progress("root: dm-verity hash tree");
    let root_a = work.join("root-a.img");
    let verity = verity::format(
        &erofs,
        &root_a,
        &seed.hex32("verity-salt"),
        &seed.uuid("verity"),
    )?;

    let esp_uuid = seed.uuid("part-esp");
    let root_a_uuid = seed.uuid("part-root-a");
    let (parts, disk_size) = disk::layout(&[
        ("ESP", disk::TYPE_ESP, esp_uuid, def.disk.esp_mib),
        (
            Slot::A.partition_name(),
            disk::TYPE_ROOT_X86_64,
            root_a_uuid.clone(),
            def.disk.root_mib,
        ),
        (
            Slot::B.partition_name(),
            disk::TYPE_ROOT_X86_64,
            seed.uuid("part-root-b"),
            def.disk.root_mib,
        ),
        (
            "DATA",
            disk::TYPE_VAR,
            seed.uuid("part-data"),
            def.disk.data_mib,
        ),
    ]);

    let base_args: Vec<String> = def
        .kernel
        .cmdline
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let cmdline = verity.slot_args(&base_args, Slot::A, &root_a_uuid);

    progress("esp: GRUB, boot script, grubenv, slot A kernel");
    let esp_img = work.join("esp.img");
    esp::build(
        &esp::EspContents {
            kernel: &kernel.bzimage,
            slot_a_args: &cmdline,
            version: &def.version,
            volume_id: &seed.volume_id("esp"),
            size_mib: def.disk.esp_mib,
            epoch: def.source_date_epoch,
        },
        &work.join("esp"),
        &esp_img,
    )?;

    progress("data: ext4");
    let data_img = work.join("data.img");
    disk::mkfs_data(
        &data_img,
        &seed.uuid("fs-data"),
        def.disk.data_mib,
        def.source_date_epoch,
    )?;

    progress("disk: GPT and partitions");
    let raw = opts.out_dir.join(format!("{}.img", def.name));
    let raw_tmp = fsio::tmp_name(&raw);
    disk::assemble(
        &raw_tmp,
        &seed.uuid("disk"),
        &parts,
        disk_size,
        &[Some(&esp_img), Some(&root_a), None, Some(&data_img)],
    )?;
    fsio::rename_synced(&raw_tmp, &raw).at(&raw)?;

    progress("disk: qcow2");
    let qcow2 = opts.out_dir.join(format!("{}.qcow2", def.name));
    let qcow2_tmp = fsio::tmp_name(&qcow2);
    disk::to_qcow2(&raw, &qcow2_tmp)?;
    fsio::rename_synced(&qcow2_tmp, &qcow2).at(&qcow2)?;

    progress("bundle: signed update bundle of slot A's contents");
    let bundle = opts
        .out_dir
        .join(format!("{}-{}.bundle", def.name, def.version));
    gantry_updater::bundle::write(
        &bundle,
        &gantry_updater::bundle::BundleMeta {
            os_version: def.version.clone(),
            rollback_index: def.rollback_index,
            arch: gantry_updater::bundle::ARCH.to_owned(),
            board: def.board.clone(),
            verity: verity.clone(),
        },
        &kernel.bzimage,
        &base_args,
        &root_a,
        &[&signing_key],
    )?;

    let kernel_config = opts.out_dir.join("kernel.config");
    std::fs::copy(&kernel.config, &kernel_config).at(&kernel.config)?;

    let raw_meta = std::fs::metadata(&raw).at(&raw)?;
    let manifest = BuildManifest {
        name: def.name.clone(),
        version: def.version.clone(),
        raw_sha256: Sha256::of_file(&raw).at(&raw)?.hex(),
        raw_image: raw,
        qcow2_image: qcow2.clone(),
        bundle,
        signing_key_id: signing_key.id().to_string(),
        kernel_config,
        kernel_cache_key: kernel.key.clone(),
        kernel_cached: kernel.cached,
        kernel_build_seconds: kernel.build_seconds,
        partitions: parts,
        verity,
        cmdline,
        sizes: Sizes {
            kernel: std::fs::metadata(&kernel.bzimage)
                .at(&kernel.bzimage)?
                .len(),
            root_erofs,
            raw: raw_meta.len(),
            raw_allocated: std::os::unix::fs::MetadataExt::blocks(&raw_meta) * 512,
            qcow2: std::fs::metadata(&qcow2).at(&qcow2)?.len(),
        },
    };
    let json_path = opts.out_dir.join(format!("{}.json", def.name));
    let json = serde_json::to_vec_pretty(&manifest)?;
    fsio::write_atomic(&json_path, &json).at(&json_path)?;
    progress(&format!(
        "done: {} ({} MiB raw, {} KiB allocated, {} KiB qcow2, sha256 {})",
        manifest.raw_image.display(),
        manifest.sizes.raw >> 20,
        manifest.sizes.raw_allocated >> 10,
        manifest.sizes.qcow2 >> 10,
        manifest.raw_sha256
    ));
    Ok(manifest)
}
