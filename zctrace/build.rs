//! Compiles the eBPF programs (zctrace-ebpf) for the BPF target on the
//! pinned nightly and leaves the object in OUT_DIR, where main.rs embeds it.

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "zctrace-ebpf")
        .ok_or_else(|| anyhow!("zctrace-ebpf package not found"))?;
    let root = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    let toolchain_file = root.join("rust-toolchain.toml");
    println!("cargo:rerun-if-changed={toolchain_file}");
    let pinned = std::fs::read_to_string(&toolchain_file)
        .with_context(|| format!("reading {toolchain_file}"))?;
    let channel = pinned
        .lines()
        .find_map(|l| l.trim().strip_prefix("channel"))
        .and_then(|rest| rest.split('"').nth(1))
        .ok_or_else(|| anyhow!("no channel = \"...\" in {toolchain_file}"))?
        .to_owned();
    let package = aya_build::Package {
        name: "zctrace-ebpf",
        root_dir: root.as_str(),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&channel))
}
