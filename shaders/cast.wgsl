// Dtype casts: TI and TO are set per variant (f32 or f16); f32 in between.
@group(0) @binding(1) var<storage, read_write> a: array<TI>;
@group(0) @binding(3) var<storage, read_write> out: array<TO>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    out[i] = TO(f32(a[i]));
}
