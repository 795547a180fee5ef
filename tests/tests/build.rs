//! The image build: reproducible, and its kernel has every option Gantry requires.

use gantry_image_build::BuildOptions;
use gantry_kernel_config::{check, requirements, KernelConfig};
use gantry_tests::{build_into, image};

#[test]
fn the_built_kernel_config_has_every_required_option() {
    let image = image();
    let text = std::fs::read_to_string(&image.kernel_config).unwrap();
    let findings = check(&KernelConfig::parse(&text), &requirements().unwrap());
    let report: Vec<String> = findings.iter().map(ToString::to_string).collect();
    assert!(
        report.is_empty(),
        "kernel config lacks:\n{}",
        report.join("\n")
    );
    // And it is a kernel without modules or initramfs, as the boot chain assumes.
    let config = KernelConfig::parse(&text);
    assert_eq!(config.get("CONFIG_MODULES"), None);
    assert_eq!(config.get("CONFIG_BLK_DEV_INITRD"), None);
}

#[test]
fn two_builds_of_the_same_inputs_are_byte_identical() {
    let first = image();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = BuildOptions::default_for_workspace();
    opts.out_dir = dir.path().to_owned();
    let second = build_into(&opts);
    assert_eq!(first.raw_sha256, second.raw_sha256);
    // Compare the files themselves, not only what the builds said.
    let a = std::fs::read(&first.raw_image).unwrap();
    let b = std::fs::read(&second.raw_image).unwrap();
    assert!(a == b, "raw images differ");
    assert_eq!(first.verity.root_hash, second.verity.root_hash);
}
