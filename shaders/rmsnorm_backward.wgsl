// RMSNorm backward: dy in TI; x, w and dx, dw in TO (under autocast dy is the
// f16/bf16 gradient of a low-precision y and the rest f32; otherwise all are
// the op's type). p0 rows, p1 C.
@group(0) @binding(1) var<storage, read_write> dy: array<TI>;   // [N, C]
@group(0) @binding(2) var<storage, read_write> x: array<TO>;    // [N, C]
@group(0) @binding(3) var<storage, read_write> w: array<TO>;    // [C]
@group(0) @binding(4) var<storage, read_write> rstd: array<f32>; // [N]
@group(0) @binding(5) var<storage, read_write> out_dx: array<TO>; // [N, C]
@group(0) @binding(6) var<storage, read_write> out_dw: array<TO>; // [C]

// dx, one thread per row: with n = x · rstd and g = w · dy,
// dx = rstd · (g − n · mean(g · n)); the mean needs the whole row first.
@compute @workgroup_size(64)
fn dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = flat(wid, nwg, lid);
    if (r >= pu(0u)) { return; }
    let c = pu(1u);
    let base = r * c;
    let rs = rstd[r];
    var gn = 0.0;
    for (var j = 0u; j < c; j = j + 1u) {
        gn = gn + f32(w[j]) * f32(dy[base + j]) * f32(x[base + j]) * rs;
    }
    gn = gn / f32(c);
    for (var j = 0u; j < c; j = j + 1u) {
        out_dx[base + j] = TO((f32(w[j]) * f32(dy[base + j]) - f32(x[base + j]) * rs * gn) * rs);
    }
}

// dw, one thread per column with the rows summed in order: deterministic, no
// atomics, the same order as the cpu kernel.
@compute @workgroup_size(64)
fn dw(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = flat(wid, nwg, lid);
    let c = pu(1u);
    if (j >= c) { return; }
    var g = 0.0;
    for (var r = 0u; r < pu(0u); r = r + 1u) {
        g = g + f32(x[r * c + j]) * rstd[r] * f32(dy[r * c + j]);
    }
    out_dw[j] = TO(g);
}
