// RMSNorm over rows of C: x, w in TI, y in TO (under autocast TI is f32 and TO
// f16/bf16, so the matmul after it reads y with no cast between; otherwise
// both are the op's type). p0 rows, p1 C, p2 eps.
@group(0) @binding(1) var<storage, read_write> x: array<TI>;    // [N, C]
@group(0) @binding(2) var<storage, read_write> w: array<TI>;    // [C]
@group(0) @binding(3) var<storage, read_write> y: array<TO>;    // [N, C]
@group(0) @binding(4) var<storage, read_write> rstd: array<f32>; // [N]

// One thread per row, the squares summed in column order as the cpu kernel
// sums them.
@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = flat(wid, nwg, lid);
    if (r >= pu(0u)) { return; }
    let c = pu(1u);
    let base = r * c;
    var s = 0.0;
    for (var j = 0u; j < c; j = j + 1u) { let v = f32(x[base + j]); s = s + v * v; }
    let rs = 1.0 / sqrt(s / f32(c) + pf(2u));
    for (var j = 0u; j < c; j = j + 1u) { y[base + j] = TO(f32(x[base + j]) * rs * f32(w[j])); }
    rstd[r] = rs;
}
