// Softmax over rows of V. p0 rows, p1 V.
@group(0) @binding(1) var<storage, read_write> a: array<T>;
@group(0) @binding(2) var<storage, read_write> b: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;

@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = flat(wid, nwg, lid);
    if (r >= pu(0u)) { return; }
    let v = pu(1u);
    let base = r * v;
    var m = -3.4e38;
    for (var j = 0u; j < v; j = j + 1u) { m = max(m, f32(a[base + j])); }
    var s = 0.0;
    for (var j = 0u; j < v; j = j + 1u) { s = s + exp(f32(a[base + j]) - m); }
    let inv = 1.0 / s;
    for (var j = 0u; j < v; j = j + 1u) { out[base + j] = T(exp(f32(a[base + j]) - m) * inv); }
}

// a = y, b = dy: dx = y (dy - Σ y dy)
@compute @workgroup_size(64)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = flat(wid, nwg, lid);
    if (r >= pu(0u)) { return; }
    let v = pu(1u);
    let base = r * v;
    var s = 0.0;
    for (var j = 0u; j < v; j = j + 1u) { s = s + f32(a[base + j]) * f32(b[base + j]); }
    for (var j = 0u; j < v; j = j + 1u) { out[base + j] = T(f32(a[base + j]) * (f32(b[base + j]) - s)); }
}
