// Optimizer-side kernels.
@group(0) @binding(1) var<storage, read_write> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> param: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;

// AdamW with decoupled weight decay. p0 n, p1 lr, p2 beta1, p3 beta2, p4 eps,
// p5 decay factor (1 − lr·wd), p6 bias correction 1, p7 bias correction 2,
// p8 gradient scale.
@compute @workgroup_size(64)
fn adamw(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let gr = g[i] * pf(8u);
    let b1 = pf(2u);
    let b2 = pf(3u);
    m[i] = b1 * m[i] + (1.0 - b1) * gr;
    v[i] = b2 * v[i] + (1.0 - b2) * gr * gr;
    let mhat = m[i] / pf(6u);
    let vhat = v[i] / pf(7u);
    param[i] = param[i] * pf(5u) - pf(1u) * mhat / (sqrt(vhat) + pf(4u));
}
