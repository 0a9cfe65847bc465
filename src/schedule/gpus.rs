//! TEMPORARY STUB until the catalog lands.
#![allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct GpuSpec {
    pub name: &'static str,
    pub display: &'static str,
    pub memory_bytes: u64,
    pub bandwidth_bytes_per_s: f64,
    pub bf16_flops: f64,
    pub fp16_flops: f64,
    pub fp32_flops: f64,
    pub host_link_bytes_per_s: f64,
    pub source: &'static str,
}
pub const CATALOG: &[GpuSpec] = &[GpuSpec {
    name: "rtx4090",
    display: "NVIDIA GeForce RTX 4090",
    memory_bytes: 24 << 30,
    bandwidth_bytes_per_s: 1.008e12,
    bf16_flops: 165.2e12,
    fp16_flops: 165.2e12,
    fp32_flops: 82.6e12,
    host_link_bytes_per_s: 32e9,
    source: "stub",
}];
pub fn by_name(name: &str) -> Option<&'static GpuSpec> {
    CATALOG.iter().find(|g| g.name.eq_ignore_ascii_case(name))
}
pub fn names() -> Vec<&'static str> {
    CATALOG.iter().map(|g| g.name).collect()
}
