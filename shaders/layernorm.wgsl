// LayerNorm over rows of C: x, w, bias in TI, y in TO (under autocast TI is
// f32 and TO f16/bf16, so the matmul after it reads y with no cast between;
// otherwise both are the op's type). p0 rows, p1 C, p2 eps.
@group(0) @binding(1) var<storage, read_write> x: array<TI>;
@group(0) @binding(2) var<storage, read_write> w: array<TI>;
@group(0) @binding(3) var<storage, read_write> bias: array<TI>;
@group(0) @binding(4) var<storage, read_write> y: array<TO>;
@group(0) @binding(5) var<storage, read_write> mean: array<f32>;
@group(0) @binding(6) var<storage, read_write> rstd: array<f32>;

@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = flat(wid, nwg, lid);
    if (r >= pu(0u)) { return; }
    let c = pu(1u);
    let base = r * c;
    var s = 0.0;
    for (var j = 0u; j < c; j = j + 1u) { s = s + f32(x[base + j]); }
    let mu = s / f32(c);
    var v = 0.0;
    for (var j = 0u; j < c; j = j + 1u) { let d = f32(x[base + j]) - mu; v = v + d * d; }
    let rs = 1.0 / sqrt(v / f32(c) + pf(2u));
    for (var j = 0u; j < c; j = j + 1u) { y[base + j] = TO((f32(x[base + j]) - mu) * rs * f32(w[j]) + f32(bias[j])); }
    mean[r] = mu;
    rstd[r] = rs;
}
