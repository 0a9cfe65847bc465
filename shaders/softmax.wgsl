// Softmax over rows of V. p0 rows, p1 V.
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = flat(wid, nwg, lid);
    if (r >= pu(0u)) { return; }
    let v = pu(1u);
    let base = r * v;
    var m = -3.4e38;
    for (var j = 0u; j < v; j = j + 1u) { m = max(m, a[base + j]); }
    var s = 0.0;
    for (var j = 0u; j < v; j = j + 1u) { let e = exp(a[base + j] - m); out[base + j] = e; s = s + e; }
    let inv = 1.0 / s;
    for (var j = 0u; j < v; j = j + 1u) { out[base + j] = out[base + j] * inv; }
}

// a = y, b = dy: dx = y (dy - Σ y dy)
@compute @workgroup_size(64)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = flat(wid, nwg, lid);
    if (r >= pu(0u)) { return; }
    let v = pu(1u);
    let base = r * v;
    var s = 0.0;
    for (var j = 0u; j < v; j = j + 1u) { s = s + a[base + j] * b[base + j]; }
    for (var j = 0u; j < v; j = j + 1u) { out[base + j] = a[base + j] * (b[base + j] - s); }
}
