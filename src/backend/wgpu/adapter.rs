//! Adapter discovery: what `headroom devices` lists, which adapter a backend
//! opens, and how much memory the budget may assume it has.

use crate::error::{Error, Result};

/// One adapter as `headroom devices` lists it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AdapterSummary {
    /// The graphics API wgpu drives it through, as wgpu names it ("Vulkan",
    /// "Metal", "Dx12", "Gl", ...).
    pub backend: String,
    /// The adapter's name as its driver reports it.
    pub name: String,
    /// "DiscreteGpu", "IntegratedGpu", "VirtualGpu", "Cpu" or "Other".
    pub device_type: String,
    /// Driver name and version information.
    pub driver: String,
    /// Whether shaders can use f16 (`SHADER_F16`); without it f16 tensors are refused.
    pub shader_f16: bool,
    /// Largest buffer the adapter creates, in bytes: the cap on one segment.
    pub max_buffer_bytes: u64,
    /// Largest range one storage binding may span, in bytes: the cap on one
    /// tensor a kernel reads or writes.
    pub max_storage_binding_bytes: u64,
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle())
}

pub(super) fn summary(a: &wgpu::Adapter) -> AdapterSummary {
    let i = a.get_info();
    let l = a.limits();
    AdapterSummary {
        backend: format!("{:?}", i.backend),
        name: i.name,
        device_type: format!("{:?}", i.device_type),
        driver: format!("{} {}", i.driver, i.driver_info).trim().to_string(),
        shader_f16: a.features().contains(wgpu::Features::SHADER_F16),
        max_buffer_bytes: l.max_buffer_size,
        max_storage_binding_bytes: l.max_storage_buffer_binding_size,
    }
}

/// Every adapter wgpu finds on this machine.
pub fn adapters() -> Vec<AdapterSummary> {
    pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .map(summary)
        .collect()
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// The best adapter; a CPU-type one (lavapipe) only when `allow_cpu`.
pub(super) fn pick_adapter(allow_cpu: bool) -> Option<wgpu::Adapter> {
    let mut all = pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()));
    all.retain(|a| allow_cpu || a.get_info().device_type != wgpu::DeviceType::Cpu);
    all.sort_by_key(|a| rank(a.get_info().device_type));
    all.into_iter().next()
}

/// The adapter's memory as the budget sees it. wgpu reports no device memory
/// size: `HEADROOM_WGPU_MEMORY` (e.g. `8GiB`) says it; a CPU adapter shares the
/// host's; for a GPU without the variable the host's is assumed, with a warning,
/// since a percentage budget of it may exceed the card.
pub(super) fn memory_total(adapter: &wgpu::Adapter) -> Result<u64> {
    if let Ok(v) = std::env::var("HEADROOM_WGPU_MEMORY") {
        return match crate::memory::Budget::parse(&v) {
            Ok(crate::memory::Budget::Bytes(b)) => Ok(b),
            _ => Err(Error::invalid(
                "HEADROOM_WGPU_MEMORY",
                format!("{v:?} is not a size; give the card's memory, e.g. 8GiB"),
            )),
        };
    }
    let host = crate::memory::RawMemory::total_bytes(&crate::backend::cpu::CpuMemory::default());
    let info = adapter.get_info();
    if info.device_type != wgpu::DeviceType::Cpu {
        log::warn!(
            "wgpu reports no memory size for {}: assuming the host's {}; set \
             HEADROOM_WGPU_MEMORY to the card's memory (e.g. 8GiB) or give the budget in bytes (Device::set_budget)",
            info.name,
            crate::memory::format_bytes(host)
        );
    }
    Ok(host)
}
