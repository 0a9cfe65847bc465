// Attention backward from qkv, out and the log-sum-exp (probabilities are
// recomputed, never stored). p0 B, p1 T, p2 C, p3 heads, p4 head dim, p5 scale.
@group(0) @binding(1) var<storage, read_write> qkv: array<T>;
@group(0) @binding(2) var<storage, read_write> o: array<T>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;
@group(0) @binding(4) var<storage, read_write> dout: array<T>;
@group(0) @binding(5) var<storage, read_write> dqkv: array<T>;

fn dot_q_k(qrow: u32, krow: u32, c: u32, hoff: u32, hd: u32) -> f32 {
    var s = 0.0;
    for (var d = 0u; d < hd; d = d + 1u) { s = s + f32(qkv[qrow + hoff + d]) * f32(qkv[krow + c + hoff + d]); }
    return s;
}

// dO_i · O_i, the softmax backward's row term.
fn d_term(orow: u32, hd: u32) -> f32 {
    var s = 0.0;
    for (var d = 0u; d < hd; d = d + 1u) { s = s + f32(dout[orow + d]) * f32(o[orow + d]); }
    return s;
}

fn dout_dot_v(orow: u32, vrow: u32, hd: u32) -> f32 {
    var s = 0.0;
    for (var d = 0u; d < hd; d = d + 1u) { s = s + f32(dout[orow + d]) * f32(qkv[vrow + d]); }
    return s;
}

// dq: one thread per (batch, head, query i), over keys j ≤ i.
@compute @workgroup_size(64)
fn dq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let k = flat(wid, nwg, lid);
    let b = pu(0u); let t = pu(1u); let c = pu(2u); let nh = pu(3u); let hd = pu(4u);
    if (k >= b * nh * t) { return; }
    let i = k % t;
    let h = (k / t) % nh;
    let bi = k / (t * nh);
    let scale = pf(5u);
    let hoff = h * hd;
    let qrow = (bi * t + i) * 3u * c;
    let orow = (bi * t + i) * c + hoff;
    let l = lse[(bi * nh + h) * t + i];
    let di = d_term(orow, hd);
    var acc: array<f32, 64>;
    for (var d = 0u; d < 64u; d = d + 1u) { acc[d] = 0.0; }
    for (var j = 0u; j <= i; j = j + 1u) {
        let krow = (bi * t + j) * 3u * c;
        let p = exp(dot_q_k(qrow, krow, c, hoff, hd) * scale - l);
        let ds = p * (dout_dot_v(orow, krow + 2u * c + hoff, hd) - di) * scale;
        for (var d = 0u; d < hd; d = d + 1u) { acc[d] = acc[d] + ds * f32(qkv[krow + c + hoff + d]); }
    }
    for (var d = 0u; d < hd; d = d + 1u) { dqkv[qrow + hoff + d] = T(acc[d]); }
}

// dk and dv: one thread per (batch, head, key j), over queries i ≥ j.
@compute @workgroup_size(64)
fn dkdv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let k = flat(wid, nwg, lid);
    let b = pu(0u); let t = pu(1u); let c = pu(2u); let nh = pu(3u); let hd = pu(4u);
    if (k >= b * nh * t) { return; }
    let j = k % t;
    let h = (k / t) % nh;
    let bi = k / (t * nh);
    let scale = pf(5u);
    let hoff = h * hd;
    let krow = (bi * t + j) * 3u * c;
    var gk: array<f32, 64>;
    var gv: array<f32, 64>;
    for (var d = 0u; d < 64u; d = d + 1u) { gk[d] = 0.0; gv[d] = 0.0; }
    for (var i = j; i < t; i = i + 1u) {
        let qrow = (bi * t + i) * 3u * c;
        let orow = (bi * t + i) * c + hoff;
        let p = exp(dot_q_k(qrow, krow, c, hoff, hd) * scale - lse[(bi * nh + h) * t + i]);
        let ds = p * (dout_dot_v(orow, krow + 2u * c + hoff, hd) - d_term(orow, hd)) * scale;
        for (var d = 0u; d < hd; d = d + 1u) {
            gv[d] = gv[d] + p * f32(dout[orow + d]);
            gk[d] = gk[d] + ds * f32(qkv[qrow + hoff + d]);
        }
    }
    for (var d = 0u; d < hd; d = d + 1u) {
        dqkv[krow + c + hoff + d] = T(gk[d]);
        dqkv[krow + 2u * c + hoff + d] = T(gv[d]);
    }
}
