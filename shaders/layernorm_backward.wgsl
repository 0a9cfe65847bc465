// LayerNorm backward: dy in TI; x, w and dx, dw, db in TO (under autocast dy
// is the f16/bf16 gradient of a low-precision y and the rest f32; otherwise
// all are the op's type). p0 rows, p1 C.
@group(0) @binding(1) var<storage, read_write> dy: array<TI>;
@group(0) @binding(2) var<storage, read_write> x: array<TO>;
@group(0) @binding(3) var<storage, read_write> w: array<TO>;
@group(0) @binding(4) var<storage, read_write> mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<TO>;
@group(0) @binding(7) var<storage, read_write> out2: array<TO>;

// dx, one thread per row: out = dx.
@compute @workgroup_size(64)
fn dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = flat(wid, nwg, lid);
    if (r >= pu(0u)) { return; }
    let c = pu(1u);
    let base = r * c;
    let mu = mean[r];
    let rs = rstd[r];
    var dm = 0.0;
    var dnm = 0.0;
    for (var j = 0u; j < c; j = j + 1u) {
        let nrm = (f32(x[base + j]) - mu) * rs;
        let dn = f32(w[j]) * f32(dy[base + j]);
        dm = dm + dn;
        dnm = dnm + dn * nrm;
    }
    dm = dm / f32(c);
    dnm = dnm / f32(c);
    for (var j = 0u; j < c; j = j + 1u) {
        let nrm = (f32(x[base + j]) - mu) * rs;
        let dn = f32(w[j]) * f32(dy[base + j]);
        out[base + j] = TO((dn - dm - nrm * dnm) * rs);
    }
}

// dw and db, one thread per column, rows summed in order: out = dw, out2 = db.
@compute @workgroup_size(64)
fn dwdb(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = flat(wid, nwg, lid);
    let c = pu(1u);
    if (j >= c) { return; }
    var gw = 0.0;
    var gb = 0.0;
    for (var r = 0u; r < pu(0u); r = r + 1u) {
        let g = f32(dy[r * c + j]);
        gw = gw + (f32(x[r * c + j]) - mean[r]) * rstd[r] * g;
        gb = gb + g;
    }
    out[j] = TO(gw);
    out2[j] = TO(gb);
}
