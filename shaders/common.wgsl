// Prepended to every shader: the parameter block and the flat thread index.
// Every storage binding is read_write, inputs too: tensors are ranges of shared
// segment buffers, and WebGPU forbids binding one buffer both read-only and
// writable in a dispatch.
// Parameters are 16 u32 words; floats travel as their bits (bitcast<f32>).
struct Params { w: array<vec4<u32>, 4> }
@group(0) @binding(0) var<uniform> params: Params;

fn pu(i: u32) -> u32 { return params.w[i / 4u][i % 4u]; }
fn pf(i: u32) -> f32 { return bitcast<f32>(pu(i)); }

// 1-D kernels run 64 threads a workgroup, dispatched as a 2-D grid of
// workgroups when one dimension would pass 65535.
fn flat(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * 64u + lid;
}
