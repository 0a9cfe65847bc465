//! Spec-sheet figures of a few NVIDIA GPUs, for the planner's time model: how
//! long a step would take on a card the user does not have in front of them.
//!
//! These are peak figures as the vendor quotes them, never measurements; a
//! time model built on them predicts a lower bound. Every entry's `source`
//! says where its figures come from and which of them could not be checked
//! against a stored copy of a vendor document.
//!
//! Conventions that hold for every entry (so entries compare like with like):
//! - `memory_bytes` is the capacity as sold read as GiB (2^30 bytes). The
//!   driver reports a little less (ECC and firmware reservations): CUDA's
//!   `totalGlobalMem` on an A100 40 GB SXM4 is 42,405,855,232 bytes
//!   (39.5 GiB), as a stored deviceQuery listing shows. A budget taken from
//!   here is therefore an upper bound; keep the planner's own reserve.
//! - Tensor-core figures are dense (no 2:4 sparsity) with FP32 accumulation,
//!   the mode mixed-precision training uses. Data-centre datasheets quote the
//!   sparse figure; it is halved here. GeForce Ada/Ampere cards run FP32
//!   accumulation at half the FP16-accumulation rate; the half is used.
//! - `host_link_bytes_per_s` is one direction of the PCIe link after 128b/130b
//!   line coding, computed from the PCIe generation and lane count
//!   ([`pcie_bytes_per_s`]); NVIDIA's "64 GB/s" (Gen4) and "128 GB/s" (Gen5)
//!   are both directions together.

/// Spec-sheet figures of one GPU model. All rates are peaks per second; see
/// the module documentation for the conventions every entry follows.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct GpuSpec {
    /// The name the CLI takes (lower case, `-` separated).
    pub name: &'static str,
    /// The full product name, for humans.
    pub display: &'static str,
    /// Device memory as sold, read as GiB (see the module documentation).
    pub memory_bytes: u64,
    /// Peak DRAM bandwidth.
    pub bandwidth_bytes_per_s: f64,
    /// Dense tensor-core BF16 with FP32 accumulation.
    pub bf16_flops: f64,
    /// Dense tensor-core FP16 with FP32 accumulation.
    pub fp16_flops: f64,
    /// Non-tensor FP32 (CUDA cores), counting an FMA as two operations.
    pub fp32_flops: f64,
    /// Host link, one direction.
    pub host_link_bytes_per_s: f64,
    /// Where the figures come from, and which could not be confirmed.
    pub source: &'static str,
}

const GIB: u64 = 1 << 30;
const GB: f64 = 1e9;
const TB: f64 = 1e12;
const TFLOPS: f64 = 1e12;

/// One direction of a PCIe link: GT/s per lane × lanes × 128/130 (the line
/// code of Gen3 and later) / 8 bits. Gen4 x16 is 31.5 GB/s, Gen5 x16 63.0 GB/s.
pub const fn pcie_bytes_per_s(gen: u32, lanes: u32) -> f64 {
    // Gen3 runs 8 GT/s; each later generation doubles it.
    let gt_per_s = 8e9 * (1u64 << (gen - 3)) as f64;
    gt_per_s * lanes as f64 * 128.0 / 130.0 / 8.0
}

/// Hopper SXM5 compute, shared by the H100 and the H200 (the same GH100 die
/// with 132 SMs; the H200 changes only the memory). The datasheet's sparse
/// 1,979 TFLOPS BF16/FP16 halved; 67 TFLOPS FP32.
const HOPPER_SXM_TENSOR: f64 = 989.5 * TFLOPS;
const HOPPER_SXM_FP32: f64 = 67.0 * TFLOPS;

/// GA100 SXM4 compute, shared by both A100 SXM memory sizes.
const A100_TENSOR: f64 = 312.0 * TFLOPS;
const A100_FP32: f64 = 19.5 * TFLOPS;

/// The catalog, data-centre parts first, then GeForce cards by generation.
pub const CATALOG: &[GpuSpec] = &[
    GpuSpec {
        name: "h100-sxm",
        display: "NVIDIA H100 SXM5 80GB",
        memory_bytes: 80 * GIB,
        bandwidth_bytes_per_s: 3.35 * TB,
        bf16_flops: HOPPER_SXM_TENSOR,
        fp16_flops: HOPPER_SXM_TENSOR,
        fp32_flops: HOPPER_SXM_FP32,
        host_link_bytes_per_s: pcie_bytes_per_s(5, 16),
        source: "NVIDIA H100 Tensor Core GPU datasheet (SXM column: 80 GB, 3,350 GB/s, \
                 FP32 67 TFLOPS, BF16/FP16 1,979 TFLOPS with sparsity, PCIe Gen5 128 GB/s), \
                 read from the stored copy of its table at \
                 https://archive-lib.hpctech.co.jp/gpuproduct/nvidia-h100.html; dense \
                 989.4 TFLOPS per the Hopper whitepaper as tabulated at \
                 https://glennklockwood.com/garden/processors/h100. NVIDIA's own PDF was \
                 not seen in a stored copy.",
    },
    GpuSpec {
        name: "h200",
        display: "NVIDIA H200 SXM 141GB",
        memory_bytes: 141 * GIB,
        bandwidth_bytes_per_s: 4.8 * TB,
        bf16_flops: HOPPER_SXM_TENSOR,
        fp16_flops: HOPPER_SXM_TENSOR,
        fp32_flops: HOPPER_SXM_FP32,
        host_link_bytes_per_s: pcie_bytes_per_s(5, 16),
        source: "UNCONFIRMED against an NVIDIA document: no stored copy of the H200 \
                 datasheet was found. 141 GB HBM3e and 4.8 TB/s from \
                 https://aiwiki.ai/wiki/nvidia_h200 and \
                 https://www.aiminingco.com/gpu/h200/specs; compute taken equal to the \
                 H100 SXM (same GH100 die, 132 SMs, PCIe Gen5, per \
                 https://www.saulelectric.com/nvidia-h200.html). The sold 141 GB is \
                 read as GiB; the driver reports less.",
    },
    GpuSpec {
        name: "a100-40gb",
        display: "NVIDIA A100 SXM4 40GB",
        memory_bytes: 40 * GIB,
        bandwidth_bytes_per_s: 1555.0 * GB,
        bf16_flops: A100_TENSOR,
        fp16_flops: A100_TENSOR,
        fp32_flops: A100_FP32,
        host_link_bytes_per_s: pcie_bytes_per_s(4, 16),
        source: "NVIDIA A100 Tensor Core GPU datasheet \
                 (https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf) \
                 and Ampere architecture whitepaper \
                 (https://images.nvidia.com/aem-dam/en-zz/Solutions/data-center/nvidia-ampere-architecture-whitepaper.pdf), \
                 as cited and tabulated at https://glennklockwood.com/garden/processors/A100 \
                 (1.555 TB/s, FP32 19.5, BF16/FP16 312 dense, PCIe Gen4); the PDFs \
                 themselves were not seen in a stored copy.",
    },
    GpuSpec {
        name: "a100-80gb",
        display: "NVIDIA A100 SXM4 80GB",
        memory_bytes: 80 * GIB,
        bandwidth_bytes_per_s: 2039.0 * GB,
        bf16_flops: A100_TENSOR,
        fp16_flops: A100_TENSOR,
        fp32_flops: A100_FP32,
        host_link_bytes_per_s: pcie_bytes_per_s(4, 16),
        source: "NVIDIA A100 Tensor Core GPU datasheet \
                 (https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf), \
                 as tabulated at https://glennklockwood.com/garden/processors/A100 \
                 (80 GB HBM2e, 2,039 GB/s, same compute as the 40 GB part) and \
                 https://www.thundercompute.com/blog/nvidia-a100-specs-full-guide; the \
                 PDF itself was not seen in a stored copy.",
    },
    GpuSpec {
        name: "l4",
        display: "NVIDIA L4 24GB",
        memory_bytes: 24 * GIB,
        bandwidth_bytes_per_s: 300.0 * GB,
        bf16_flops: 121.0 * TFLOPS,
        fp16_flops: 121.0 * TFLOPS,
        fp32_flops: 30.3 * TFLOPS,
        host_link_bytes_per_s: pcie_bytes_per_s(4, 16),
        source: "NVIDIA L4 Tensor Core GPU datasheet figures (24 GB GDDR6, 300 GB/s, FP32 \
                 30.3 TFLOPS, BF16/FP16 242 TFLOPS with sparsity, halved here, PCIe Gen4 \
                 x16) as reproduced at https://store.sourcecode.com/en-us/bg-bucket-compare/125/9820 \
                 and https://grokipedia.com/page/NVIDIA_L4_vs_L40S; FP32 accumulation at \
                 the full FP16 rate on this data-centre part per \
                 https://hmc-tech.com/gpu/nvidia-l4-vs-nvidia-grid-m40. The datasheet \
                 PDF itself was not seen in a stored copy.",
    },
    GpuSpec {
        name: "rtx4090",
        display: "NVIDIA GeForce RTX 4090",
        memory_bytes: 24 * GIB,
        bandwidth_bytes_per_s: 1008.0 * GB,
        bf16_flops: 165.2 * TFLOPS,
        fp16_flops: 165.2 * TFLOPS,
        fp32_flops: 82.6 * TFLOPS,
        host_link_bytes_per_s: pcie_bytes_per_s(4, 16),
        source: "NVIDIA Ada GPU Architecture whitepaper v2.01 (a stored copy exists at \
                 https://www.scribd.com/document/656196379/004 but its spec tables were not \
                 readable there); figures checked at \
                 https://waredb.com/processor/nvidia-geforce-rtx-4090 (1,008 GB/s, FP32 \
                 82.6, FP16/BF16 tensor 165.2 dense = FP32 accumulation, half the 330.3 of \
                 FP16 accumulation) and https://incpak.com/?p=136649 (82.6 TFLOPS, NVIDIA \
                 launch). The whitepaper table itself is unconfirmed.",
    },
    GpuSpec {
        name: "rtx4080",
        display: "NVIDIA GeForce RTX 4080 16GB",
        memory_bytes: 16 * GIB,
        bandwidth_bytes_per_s: 716.8 * GB,
        bf16_flops: 97.5 * TFLOPS,
        fp16_flops: 97.5 * TFLOPS,
        fp32_flops: 48.7 * TFLOPS,
        host_link_bytes_per_s: pcie_bytes_per_s(4, 16),
        source: "UNCONFIRMED against the Ada whitepaper (its tables were not readable in a \
                 stored copy). 16 GB GDDR6X at 22.4 Gbps on 256 bits (716.8 GB/s), 76 SMs \
                 at 2,505 MHz boost, FP32 48.7 TFLOPS and 390 FP16-accumulate tensor \
                 TFLOPS with sparsity from \
                 https://www.holynerdvana.com/2022/10/nvidia-geforce-rtx-4080-specifications.html \
                 and https://db.thegpu.guru/card/RTX%204080; dense FP32-accumulate = \
                 390 / 2 (sparsity) / 2 (GeForce half rate) = 97.5.",
    },
    GpuSpec {
        name: "rtx3090",
        display: "NVIDIA GeForce RTX 3090",
        memory_bytes: 24 * GIB,
        bandwidth_bytes_per_s: 936.0 * GB,
        bf16_flops: 71.0 * TFLOPS,
        fp16_flops: 71.0 * TFLOPS,
        fp32_flops: 35.6 * TFLOPS,
        host_link_bytes_per_s: pcie_bytes_per_s(4, 16),
        source: "NVIDIA Ampere GA102 GPU Architecture whitepaper v2 \
                 (https://www.nvidia.com/content/PDF/nvidia-ampere-ga-102-gpu-architecture-whitepaper-v2.pdf, \
                 as cited at https://forums.developer.nvidia.com/t/dense-vs-sparse-tensor-core-performance-fp16/314261; \
                 its table was not seen in a stored copy). 936 GB/s, FP32 35.6 TFLOPS, \
                 FP16-accumulate tensor 142 dense from \
                 https://holynerdvana.blogspot.com/2022/10/nvidia-geforce-rtx-3090-specifications.html; \
                 FP32 accumulation is half of that on GeForce Ampere: 71.",
    },
    GpuSpec {
        name: "rtx3060",
        display: "NVIDIA GeForce RTX 3060 12GB",
        memory_bytes: 12 * GIB,
        bandwidth_bytes_per_s: 360.0 * GB,
        bf16_flops: 25.5 * TFLOPS,
        fp16_flops: 25.5 * TFLOPS,
        fp32_flops: 12.7 * TFLOPS,
        host_link_bytes_per_s: pcie_bytes_per_s(4, 16),
        source: "UNCONFIRMED against an NVIDIA document (the GA102 whitepaper does not \
                 cover this GA106 card). Derived: 28 SMs, 3,584 CUDA cores at 1,777 MHz \
                 boost, 12 GB GDDR6 on 192 bits at 360 GB/s \
                 (https://pcpartdb.com/gpus/view/nvidia-geforce-rtx-3060-12-gb-ga104); \
                 FP32 = 3,584 x 2 x 1.777 GHz = 12.7 TFLOPS (NVIDIA quoted 13 shader and \
                 101 sparse tensor TFLOPS at launch, per \
                 https://techtaks.com/geforce-rtx-3060-nvidia-finally-details-the-specifications/); \
                 tensor = 28 SMs x 512 FP16 FMA/clk x 2 x 1.777 GHz = 51 dense \
                 FP16-accumulate, halved for FP32 accumulation on GeForce: 25.5.",
    },
];

/// Other spellings `by_name` accepts, each mapped to a catalog name. A bare
/// "a100" means the 80 GB part, which replaced the 40 GB one in the market.
const ALIASES: &[(&str, &str)] = &[
    ("h100", "h100-sxm"),
    ("h100-sxm5", "h100-sxm"),
    ("h200-sxm", "h200"),
    ("a100", "a100-80gb"),
    ("a100-40g", "a100-40gb"),
    ("a100-80g", "a100-80gb"),
    ("4090", "rtx4090"),
    ("4080", "rtx4080"),
    ("3090", "rtx3090"),
    ("3060", "rtx3060"),
];

/// Lower case with `-`, `_` and spaces removed, so "RTX 4090", "rtx-4090" and
/// "rtx4090" are one name.
fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '-' | '_' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The catalog entry for a CLI name or alias, case-insensitively and ignoring
/// `-`, `_` and spaces.
pub fn by_name(name: &str) -> Option<&'static GpuSpec> {
    let key = normalize(name);
    let canonical = ALIASES
        .iter()
        .find(|(alias, _)| normalize(alias) == key)
        .map_or(key, |(_, target)| normalize(target));
    CATALOG
        .iter()
        .find(|spec| normalize(spec.name) == canonical)
}

/// The catalog's CLI names, in catalog order (aliases not included).
pub fn names() -> Vec<&'static str> {
    CATALOG.iter().map(|spec| spec.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_name_resolves_to_its_own_entry() {
        let names = names();
        assert_eq!(names.len(), CATALOG.len());
        for name in names {
            let spec = by_name(name).unwrap_or_else(|| panic!("{name} does not resolve"));
            assert_eq!(spec.name, name);
            assert_eq!(by_name(&name.to_uppercase()).map(|s| s.name), Some(name));
        }
    }

    #[test]
    fn the_required_models_are_present() {
        for name in [
            "h100-sxm",
            "h200",
            "a100-40gb",
            "a100-80gb",
            "l4",
            "rtx4090",
            "rtx4080",
            "rtx3090",
            "rtx3060",
        ] {
            assert!(by_name(name).is_some(), "{name} missing");
        }
    }

    #[test]
    fn names_are_unique_even_after_normalizing() {
        let mut seen = HashSet::new();
        for spec in CATALOG {
            assert!(seen.insert(normalize(spec.name)), "{} twice", spec.name);
            assert_eq!(
                spec.name,
                spec.name.to_lowercase(),
                "CLI names are lower case"
            );
            assert!(!spec.name.contains(' '), "{} has a space", spec.name);
        }
    }

    #[test]
    fn aliases_point_at_entries_and_shadow_no_name() {
        for (alias, target) in ALIASES {
            assert!(
                CATALOG.iter().any(|s| s.name == *target),
                "alias {alias} -> {target}, which is not in the catalog"
            );
            assert!(
                CATALOG
                    .iter()
                    .all(|s| normalize(s.name) != normalize(alias)),
                "alias {alias} is spelled like a catalog name"
            );
            assert_eq!(by_name(alias).map(|s| s.name), Some(*target));
        }
        let distinct: HashSet<_> = ALIASES.iter().map(|(a, _)| normalize(a)).collect();
        assert_eq!(distinct.len(), ALIASES.len(), "an alias appears twice");
    }

    #[test]
    fn lookup_ignores_case_and_separators() {
        assert_eq!(by_name("H100").map(|s| s.name), Some("h100-sxm"));
        assert_eq!(by_name("RTX 4090").map(|s| s.name), Some("rtx4090"));
        assert_eq!(by_name("rtx-3060").map(|s| s.name), Some("rtx3060"));
        assert_eq!(by_name("A100_40GB").map(|s| s.name), Some("a100-40gb"));
        assert_eq!(by_name("a100").map(|s| s.name), Some("a100-80gb"));
        assert!(by_name("rtx5090").is_none());
        assert!(by_name("").is_none());
    }

    #[test]
    fn figures_are_positive_and_plausible() {
        for s in CATALOG {
            let n = s.name;
            assert!(
                (4 * GIB..=256 * GIB).contains(&s.memory_bytes),
                "{n}: memory {}",
                s.memory_bytes
            );
            assert!(
                (100.0 * GB..=10.0 * TB).contains(&s.bandwidth_bytes_per_s),
                "{n}: bandwidth {}",
                s.bandwidth_bytes_per_s
            );
            for (what, v) in [("bf16", s.bf16_flops), ("fp16", s.fp16_flops)] {
                assert!(
                    (10.0 * TFLOPS..=5000.0 * TFLOPS).contains(&v),
                    "{n}: {what} {v}"
                );
            }
            assert!(
                (1.0 * TFLOPS..=200.0 * TFLOPS).contains(&s.fp32_flops),
                "{n}: fp32 {}",
                s.fp32_flops
            );
            assert!(
                (8.0 * GB..=200.0 * GB).contains(&s.host_link_bytes_per_s),
                "{n}: host link {}",
                s.host_link_bytes_per_s
            );
            // Tensor cores beat CUDA cores on every part here, but by less
            // than 32x; a ratio outside that means a sparse or mistyped figure.
            let tensor_over_fp32 = s.bf16_flops / s.fp32_flops;
            assert!(
                (1.5..=32.0).contains(&tensor_over_fp32),
                "{n}: {tensor_over_fp32}"
            );
            assert!(s.fp16_flops >= s.bf16_flops && s.fp16_flops <= 2.0 * s.bf16_flops);
            // FLOPs per DRAM byte: every modern GPU sits between these.
            let intensity = s.bf16_flops / s.bandwidth_bytes_per_s;
            assert!(
                (20.0..=1000.0).contains(&intensity),
                "{n}: {intensity} FLOP/B"
            );
            assert!(s.host_link_bytes_per_s < s.bandwidth_bytes_per_s);
            assert!(s.display.starts_with("NVIDIA "), "{n}: {}", s.display);
            assert!(
                s.source.contains("https://"),
                "{n}: source names no address"
            );
        }
    }

    #[test]
    fn related_parts_order_as_the_hardware_does() {
        let get = |n| by_name(n).unwrap();
        let (h200, h100) = (get("h200"), get("h100-sxm"));
        let (a80, a40) = (get("a100-80gb"), get("a100-40gb"));
        assert!(h200.bandwidth_bytes_per_s > h100.bandwidth_bytes_per_s);
        assert!(h200.memory_bytes > h100.memory_bytes);
        assert!(h100.bf16_flops > a80.bf16_flops);
        assert!(a80.bandwidth_bytes_per_s > a40.bandwidth_bytes_per_s);
        assert_eq!(a80.bf16_flops, a40.bf16_flops);
        assert!(get("rtx4090").bf16_flops > get("rtx4080").bf16_flops);
        assert!(get("rtx4080").bf16_flops > get("rtx3090").bf16_flops);
        assert!(get("rtx3090").bf16_flops > get("rtx3060").bf16_flops);
        assert!(h100.host_link_bytes_per_s > a80.host_link_bytes_per_s);
    }

    #[test]
    fn pcie_one_direction_matches_the_line_rate() {
        assert!((pcie_bytes_per_s(3, 16) / GB - 15.75).abs() < 0.01);
        assert!((pcie_bytes_per_s(4, 16) / GB - 31.51).abs() < 0.01);
        assert!((pcie_bytes_per_s(5, 16) / GB - 63.02).abs() < 0.01);
        assert_eq!(pcie_bytes_per_s(4, 8) * 2.0, pcie_bytes_per_s(4, 16));
    }

    #[test]
    fn serializes_with_every_field() {
        let json = serde_json::to_value(by_name("l4").unwrap()).unwrap();
        for key in [
            "name",
            "display",
            "memory_bytes",
            "bandwidth_bytes_per_s",
            "bf16_flops",
            "fp16_flops",
            "fp32_flops",
            "host_link_bytes_per_s",
            "source",
        ] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
        assert_eq!(json["name"], "l4");
        assert_eq!(json["memory_bytes"], 24 * GIB);
    }
}
