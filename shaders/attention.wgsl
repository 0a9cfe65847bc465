// Causal attention without a T×T matrix: each thread streams over keys.
// p0 B, p1 T, p2 C, p3 heads, p4 head dim (≤ 64), p5 scale.
@group(0) @binding(1) var<storage, read_write> qkv: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;

fn qk(qrow: u32, krow: u32, c: u32, hoff: u32, hd: u32) -> f32 {
    var s = 0.0;
    for (var d = 0u; d < hd; d = d + 1u) { s = s + f32(qkv[qrow + hoff + d]) * f32(qkv[krow + c + hoff + d]); }
    return s;
}

// One thread per (batch, head, query): two passes over the keys (max and sum,
// then the weighted values), as a flash kernel does per tile.
@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let k = flat(wid, nwg, lid);
    let b = pu(0u); let t = pu(1u); let c = pu(2u); let nh = pu(3u); let hd = pu(4u);
    if (k >= b * nh * t) { return; }
    let i = k % t;
    let h = (k / t) % nh;
    let bi = k / (t * nh);
    let scale = pf(5u);
    let hoff = h * hd;
    let qrow = (bi * t + i) * 3u * c;
    var m = -3.4e38;
    for (var j = 0u; j <= i; j = j + 1u) { m = max(m, qk(qrow, (bi * t + j) * 3u * c, c, hoff, hd) * scale); }
    var l = 0.0;
    var acc: array<f32, 64>;
    for (var d = 0u; d < 64u; d = d + 1u) { acc[d] = 0.0; }
    for (var j = 0u; j <= i; j = j + 1u) {
        let krow = (bi * t + j) * 3u * c;
        let p = exp(qk(qrow, krow, c, hoff, hd) * scale - m);
        l = l + p;
        for (var d = 0u; d < hd; d = d + 1u) { acc[d] = acc[d] + p * f32(qkv[krow + 2u * c + hoff + d]); }
    }
    let orow = (bi * t + i) * c + hoff;
    for (var d = 0u; d < hd; d = d + 1u) { out[orow + d] = T(acc[d] / l); }
    lse[(bi * nh + h) * t + i] = m + log(l);
}
