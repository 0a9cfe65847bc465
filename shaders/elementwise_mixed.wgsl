// The residual add under autocast: a and out in TO (f32), b in TI (f16/bf16,
// a low-precision projection, widened as it is read; period p1). Compiled per
// (TI, TO) pair; the host runs it as (low, f32). p0 = n.
@group(0) @binding(1) var<storage, read_write> a: array<TO>;
@group(0) @binding(2) var<storage, read_write> b: array<TI>;
@group(0) @binding(3) var<storage, read_write> out: array<TO>;

@compute @workgroup_size(64)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    out[i] = TO(f32(a[i]) + f32(b[i % pu(1u)]));
}
