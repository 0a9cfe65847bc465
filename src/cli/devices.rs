//! `headroom devices`: what headroom can train on, and what `auto` picks.

use serde_json::json;

use headroom::memory::format_bytes;
use headroom::{Device, Result};

#[derive(clap::Args)]
pub struct DevicesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn devices(a: DevicesArgs) -> Result<()> {
    let cpu = Device::cpu();
    let adapters = headroom::backend::wgpu::adapters();
    let best = Device::best()?.name();
    // GPU 0 if a driver answers; otherwise why not, in the user's terms.
    let cuda = Device::cuda().map(|d| (d.name().to_string(), d.total_memory()));
    if a.json {
        let cuda = match &cuda {
            Ok((name, bytes)) => json!({"name": name, "memory_bytes": bytes}),
            Err(e) => json!({"unavailable": e.to_string()}),
        };
        println!(
            "{}",
            json!({
                "best": best,
                "cpu": {"memory_bytes": cpu.total_memory(), "dtypes": ["f32", "f16", "bf16", "f64"]},
                "cuda": cuda,
                "wgpu": adapters,
            })
        );
        return Ok(());
    }
    println!(
        "cpu   host memory {}, f32 compute (f16/bf16 as storage)",
        format_bytes(cpu.total_memory())
    );
    match &cuda {
        Ok((name, bytes)) => println!("cuda  {name}, memory {}", format_bytes(*bytes)),
        Err(e) => println!("cuda  unavailable: {e}"),
    }
    for ad in &adapters {
        println!(
            "wgpu  {} ({}, {}), driver {}, shader f16 {}, max buffer {}, max binding {}",
            ad.name,
            ad.device_type,
            ad.backend,
            if ad.driver.is_empty() {
                "?"
            } else {
                &ad.driver
            },
            if ad.shader_f16 { "yes" } else { "no" },
            format_bytes(ad.max_buffer_bytes),
            format_bytes(ad.max_storage_binding_bytes)
        );
    }
    if adapters.is_empty() {
        println!("wgpu  no adapter (install a Vulkan driver; for CPUs: apt-get install mesa-vulkan-drivers)");
    }
    println!("--backend auto picks: {best}");
    Ok(())
}
