// Causal (grouped-query) attention without a T×T matrix: each thread streams
// over keys. A qkv row holds H query heads, then K key heads, then K value
// heads of D columns; query head h reads key/value head h / (H / K) in place.
// p0 B, p1 T, p2 C = H·D, p3 H, p4 D (≤ 64), p5 scale, p6 K.
@group(0) @binding(1) var<storage, read_write> qkv: array<T>;   // [B, T, (H + 2K)·D]
@group(0) @binding(2) var<storage, read_write> out: array<T>;   // [B, T, H·D]
@group(0) @binding(3) var<storage, read_write> lse: array<f32>; // [B, H, T]

// q at element q0 against k at element k0, over D columns.
fn qk(q0: u32, k0: u32, hd: u32) -> f32 {
    var s = 0.0;
    for (var d = 0u; d < hd; d = d + 1u) { s = s + f32(qkv[q0 + d]) * f32(qkv[k0 + d]); }
    return s;
}

// One thread per (batch, query head, query): two passes over the keys (max
// and sum, then the weighted values), as a flash kernel does per tile.
@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
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
    var m = -3.4e38;
    for (var j = 0u; j <= i; j = j + 1u) { m = max(m, qk(q0, (bi * t + j) * w + koff, hd) * scale); }
    var l = 0.0;
    var acc: array<f32, 64>;
    for (var d = 0u; d < 64u; d = d + 1u) { acc[d] = 0.0; }
    for (var j = 0u; j <= i; j = j + 1u) {
        let row = (bi * t + j) * w;
        let p = exp(qk(q0, row + koff, hd) * scale - m);
        l = l + p;
        for (var d = 0u; d < hd; d = d + 1u) { acc[d] = acc[d] + p * f32(qkv[row + voff + d]); }
    }
    let o0 = (bi * t + i) * c + h * hd;
    for (var d = 0u; d < hd; d = d + 1u) { out[o0 + d] = T(acc[d] / l); }
    lse[(bi * nh + h) * t + i] = m + log(l);
}
