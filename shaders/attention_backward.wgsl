// Causal (grouped-query) attention backward from qkv, out and the
// log-sum-exp (probabilities are recomputed, never stored). Layout as in
// attention.wgsl. p0 B, p1 T, p2 C = H·D, p3 H, p4 D (≤ 64), p5 scale, p6 K.
@group(0) @binding(1) var<storage, read_write> qkv: array<T>;   // [B, T, (H + 2K)·D]
@group(0) @binding(2) var<storage, read_write> o: array<T>;     // [B, T, H·D]
@group(0) @binding(3) var<storage, read_write> lse: array<f32>; // [B, H, T]
@group(0) @binding(4) var<storage, read_write> dout: array<T>;  // [B, T, H·D]
@group(0) @binding(5) var<storage, read_write> dqkv: array<T>;  // [B, T, (H + 2K)·D]

// q at element q0 against k at element k0, over D columns.
fn dot_q_k(q0: u32, k0: u32, hd: u32) -> f32 {
    var s = 0.0;
    for (var d = 0u; d < hd; d = d + 1u) { s = s + f32(qkv[q0 + d]) * f32(qkv[k0 + d]); }
    return s;
}

// dO_i · O_i, the softmax backward's row term.
fn d_term(o0: u32, hd: u32) -> f32 {
    var s = 0.0;
    for (var d = 0u; d < hd; d = d + 1u) { s = s + f32(dout[o0 + d]) * f32(o[o0 + d]); }
    return s;
}

fn dout_dot_v(o0: u32, v0: u32, hd: u32) -> f32 {
    var s = 0.0;
    for (var d = 0u; d < hd; d = d + 1u) { s = s + f32(dout[o0 + d]) * f32(qkv[v0 + d]); }
    return s;
}

// dq: one thread per (batch, query head, query i), over keys j ≤ i of the
// head's key/value head.
@compute @workgroup_size(64)
fn dq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let k = flat(wid, nwg, lid);
    let b = pu(0u); let t = pu(1u); let c = pu(2u); let nh = pu(3u); let hd = pu(4u); let nk = pu(6u);
    if (k >= b * nh * t) { return; }
    let i = k % t;
    let h = (k / t) % nh;
    let bi = k / (t * nh);
    let scale = pf(5u);
    let w = c + 2u * nk * hd;
    let kv = h / (nh / nk);
    let koff = c + kv * hd;
    let voff = c + (nk + kv) * hd;
    let q0 = (bi * t + i) * w + h * hd;
    let o0 = (bi * t + i) * c + h * hd;
    let l = lse[(bi * nh + h) * t + i];
    let di = d_term(o0, hd);
    var acc: array<f32, 64>;
    for (var d = 0u; d < 64u; d = d + 1u) { acc[d] = 0.0; }
    for (var j = 0u; j <= i; j = j + 1u) {
        let row = (bi * t + j) * w;
        let p = exp(dot_q_k(q0, row + koff, hd) * scale - l);
        let ds = p * (dout_dot_v(o0, row + voff, hd) - di) * scale;
        for (var d = 0u; d < hd; d = d + 1u) { acc[d] = acc[d] + ds * f32(qkv[row + koff + d]); }
    }
    for (var d = 0u; d < hd; d = d + 1u) { dqkv[q0 + d] = T(acc[d]); }
}

// dk and dv: one thread per (batch, key/value head, key j). The thread owns
// that key's dk and dv, which sum over every query head of its group, so it
// loops over them itself (heads in order, then queries i ≥ j): no two threads
// write one gradient, and the sum's order is fixed.
@compute @workgroup_size(64)
fn dkdv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let k = flat(wid, nwg, lid);
    let b = pu(0u); let t = pu(1u); let c = pu(2u); let nh = pu(3u); let hd = pu(4u); let nk = pu(6u);
    if (k >= b * nk * t) { return; }
    let j = k % t;
    let kv = (k / t) % nk;
    let bi = k / (t * nk);
    let scale = pf(5u);
    let w = c + 2u * nk * hd;
    let group = nh / nk;
    let k0 = (bi * t + j) * w + c + kv * hd;
    let v0 = k0 + nk * hd;
    var gk: array<f32, 64>;
    var gv: array<f32, 64>;
    for (var d = 0u; d < 64u; d = d + 1u) { gk[d] = 0.0; gv[d] = 0.0; }
    for (var h = kv * group; h < (kv + 1u) * group; h = h + 1u) {
        for (var i = j; i < t; i = i + 1u) {
            let q0 = (bi * t + i) * w + h * hd;
            let o0 = (bi * t + i) * c + h * hd;
            let p = exp(dot_q_k(q0, k0, hd) * scale - lse[(bi * nh + h) * t + i]);
            let ds = p * (dout_dot_v(o0, v0, hd) - d_term(o0, hd)) * scale;
            for (var d = 0u; d < hd; d = d + 1u) {
                gv[d] = gv[d] + p * f32(dout[o0 + d]);
                gk[d] = gk[d] + ds * f32(qkv[q0 + d]);
            }
        }
    }
    for (var d = 0u; d < hd; d = d + 1u) {
        dqkv[k0 + d] = T(gk[d]);
        dqkv[v0 + d] = T(gv[d]);
    }
}
