//! Shader variants and the pipeline cache: each shader is compiled once per
//! storage type it is asked for, each entry point once per compiled module.

use super::bf16::pack_bf16;
use super::ops::{Aliases, Kernel, Shader, FAMILIES};
use super::WgpuBackend;
use crate::error::{Error, Result};
use crate::tensor::DType;

/// Prepended to every shader: the parameter block and the flat thread index.
const COMMON: &str = include_str!("../../../shaders/common.wgsl");

/// Which storage types a shader is compiled for: `T` for tensors, or the
/// input and output types of a cast.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Variant {
    T(DType),
    Cast(DType, DType),
}

fn wgsl_type(d: DType) -> &'static str {
    if d == DType::F16 {
        "f16"
    } else {
        // bf16 bindings are rewritten to packed words; their alias is unused.
        "f32"
    }
}

impl Variant {
    /// The declarations prepended to a shader for this variant.
    fn header(self) -> String {
        let (decls, f16) = match self {
            Variant::T(d) => (format!("alias T = {};\n", wgsl_type(d)), d == DType::F16),
            Variant::Cast(a, b) => (
                format!(
                    "alias TI = {};\nalias TO = {};\n",
                    wgsl_type(a),
                    wgsl_type(b)
                ),
                a == DType::F16 || b == DType::F16,
            ),
        };
        if f16 {
            format!("enable f16;\n{decls}")
        } else {
            decls
        }
    }

    /// The aliases whose bindings hold packed bf16.
    fn packed(self) -> Vec<&'static str> {
        match self {
            Variant::T(DType::BF16) => vec!["T"],
            Variant::Cast(a, b) => [(a, "TI"), (b, "TO")]
                .into_iter()
                .filter(|x| x.0 == DType::BF16)
                .map(|x| x.1)
                .collect(),
            _ => vec![],
        }
    }

    /// The variants a shader with `aliases` is built for ahead of a run: f32
    /// and bf16 always, f16 where the adapter has it.
    pub(super) fn all(aliases: Aliases, f16: bool) -> Vec<Variant> {
        let lows: &[DType] = if f16 {
            &[DType::BF16, DType::F16]
        } else {
            &[DType::BF16]
        };
        let mut v = Vec::new();
        for &low in lows {
            match aliases {
                Aliases::T => v.push(Variant::T(low)),
                Aliases::Cast => v.extend([
                    Variant::Cast(DType::F32, low),
                    Variant::Cast(low, DType::F32),
                ]),
                Aliases::Pair => v.extend([
                    Variant::Cast(low, low),
                    Variant::Cast(DType::F32, low),
                    Variant::Cast(low, DType::F32),
                ]),
            }
        }
        match aliases {
            Aliases::T => v.insert(0, Variant::T(DType::F32)),
            Aliases::Pair => v.insert(0, Variant::Cast(DType::F32, DType::F32)),
            Aliases::Cast => {}
        }
        v
    }
}

/// The WGSL compiled for `shader` in variant `v`: header, common prelude,
/// the file, with bf16 bindings packed.
pub(super) fn wgsl(shader: &Shader, v: Variant) -> String {
    let body = format!("{COMMON}\n{}", shader.source);
    let packed = v.packed();
    let body = if packed.is_empty() {
        body
    } else {
        pack_bf16(&body, &packed)
    };
    format!("{}{body}", v.header())
}

impl WgpuBackend {
    /// The pipeline of `k` in the current variant, compiled on first use.
    pub(super) fn pipeline(&mut self, k: Kernel) -> Result<wgpu::ComputePipeline> {
        let (file, entry, v) = (k.shader.file, k.entry, self.variant);
        if let Some(p) = self.pipelines.get(&(file, entry, v)) {
            return Ok(p.clone());
        }
        if !self.modules.contains_key(&(file, v)) {
            let m = self
                .device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(file),
                    source: wgpu::ShaderSource::Wgsl(wgsl(k.shader, v).into()),
                });
            self.modules.insert((file, v), m);
        }
        let p = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &self.modules[&(file, v)],
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
        self.pipelines.insert((file, entry, v), p.clone());
        Ok(p)
    }

    /// Compiles every kernel (a missing or broken one fails here, not mid-run).
    pub fn compile_all(&mut self) -> Result<()> {
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        for family in FAMILIES {
            for shader in family.shaders {
                for v in Variant::all(shader.aliases, self.f16) {
                    self.variant = v;
                    for &entry in shader.entries {
                        self.pipeline(Kernel { shader, entry })?;
                    }
                }
            }
        }
        self.variant = Variant::T(DType::F32);
        match pollster::block_on(scope.pop()) {
            None => Ok(()),
            Some(err) => Err(Error::Internal(format!(
                "WGSL kernels failed to compile: {err}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgpu::naga;

    /// Without an adapter: every variant of every shader parses and validates,
    /// and its compute entry points are exactly the declared ones.
    #[test]
    fn every_variant_declares_its_entries() {
        for family in FAMILIES {
            for shader in family.shaders {
                for v in Variant::all(shader.aliases, true) {
                    let what = format!("{} {v:?}", shader.file);
                    let code = wgsl(shader, v);
                    let module = naga::front::wgsl::parse_str(&code)
                        .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&code)));
                    naga::valid::Validator::new(
                        naga::valid::ValidationFlags::all(),
                        naga::valid::Capabilities::SHADER_FLOAT16,
                    )
                    .validate(&module)
                    .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&code)));
                    let mut found: Vec<&str> = module
                        .entry_points
                        .iter()
                        .filter(|e| e.stage == naga::ShaderStage::Compute)
                        .map(|e| e.name.as_str())
                        .collect();
                    let mut declared = shader.entries.to_vec();
                    found.sort_unstable();
                    declared.sort_unstable();
                    assert_eq!(found, declared, "{what}");
                }
            }
        }
    }
}
