// Embedding lookup. p0 tokens N, p1 C, p2 vocab V.
@group(0) @binding(1) var<storage, read_write> ids: array<i32>;
@group(0) @binding(2) var<storage, read_write> src: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;

// out[i, c] = table[ids[i], c]; an id outside the vocabulary gives NaN.
@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let k = flat(wid, nwg, lid);
    let c = pu(1u);
    if (k >= pu(0u) * c) { return; }
    let i = k / c;
    let id = ids[i];
    if (id < 0 || u32(id) >= pu(2u)) { out[k] = T(bitcast<f32>(0x7fc00000u)); return; }
    out[k] = T(f32(src[u32(id) * c + k % c]));
}

// dtable: one thread per column, tokens added in order (deterministic).
@compute @workgroup_size(64)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = flat(wid, nwg, lid);
    let c = pu(1u);
    if (j >= c) { return; }
    for (var v = 0u; v < pu(2u); v = v + 1u) { out[v * c + j] = T(0.0); }
    for (var i = 0u; i < pu(0u); i = i + 1u) {
        let id = ids[i];
        if (id >= 0 && u32(id) < pu(2u)) {
            out[u32(id) * c + j] = T(f32(out[u32(id) * c + j]) + f32(src[i * c + j]));
        }
    }
}
