// AdamW over 8-bit state (src/optim/quant.rs is the reference this matches):
// one workgroup per block of 2048 elements, 256 invocations of 8 elements
// each. WGSL has no bytes, so the codes are u32 words of 4 (little-endian);
// each invocation owns two whole words, so no two write one word.
@group(0) @binding(1) var<storage, read_write> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> param: array<f32>;
@group(0) @binding(3) var<storage, read_write> mq: array<u32>;
@group(0) @binding(4) var<storage, read_write> vq: array<u32>;
@group(0) @binding(5) var<storage, read_write> scales: array<f32>;
@group(0) @binding(6) var<storage, read_write> book: array<f32>;

var<workgroup> red_m: array<f32, 256>;
var<workgroup> red_v: array<f32, 256>;

// The index of the code nearest a (>= 0) in book[base, base + len), which
// ascends from 0; ties go to the lower code. Comparisons only.
fn nearest(base: u32, len: u32, a: f32) -> u32 {
    var lo = 0u;
    var hi = len;
    loop {
        if (hi - lo <= 1u) { break; }
        let mid = (lo + hi) / 2u;
        if (book[base + mid] <= a) { lo = mid; } else { hi = mid; }
    }
    if (lo + 1u < len && book[base + lo + 1u] - a < a - book[base + lo]) { lo = lo + 1u; }
    return lo;
}

fn code(words: u32, k: u32) -> u32 { return (words >> (8u * k)) & 255u; }

// p0 n, p1 lr, p2 beta1, p3 beta2, p4 eps, p5 decay factor, p6 bias
// correction 1, p7 bias correction 2, p8 gradient scale, p9 blocks.
@compute @workgroup_size(256)
fn adamw_q8(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let blk = wid.x + wid.y * nwg.x;
    let nb = pu(9u);
    if (blk >= nb) { return; }
    let n = pu(0u);
    let b1 = pf(2u);
    let b2 = pf(3u);
    let sm_old = scales[blk];
    let sv_old = scales[nb + blk];
    let base = blk * 2048u + lid * 8u;
    var m: array<f32, 8>;
    var v: array<f32, 8>;
    var am = 0.0;
    var av = 0.0;
    for (var j = 0u; j < 2u; j = j + 1u) {
        let w = base / 4u + j;
        if (base + 4u * j >= n) { break; }
        let wm = mq[w];
        let wv = vq[w];
        for (var k = 0u; k < 4u; k = k + 1u) {
            let i = base + 4u * j + k;
            if (i >= n) { break; }
            let qm = code(wm, k);
            var mo = book[qm & 127u] * sm_old;
            if ((qm & 128u) != 0u) { mo = -mo; }
            let vo = book[128u + code(wv, k)] * sv_old;
            let gr = g[i] * pf(8u);
            let e = 4u * j + k;
            m[e] = b1 * mo + (1.0 - b1) * gr;
            v[e] = b2 * vo + (1.0 - b2) * gr * gr;
            param[i] = param[i] * pf(5u) - pf(1u) * (m[e] / pf(6u)) / (sqrt(v[e] / pf(7u)) + pf(4u));
            am = max(am, abs(m[e]));
            av = max(av, v[e]);
        }
    }
    red_m[lid] = am;
    red_v[lid] = av;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red_m[lid] = max(red_m[lid], red_m[lid + s]);
            red_v[lid] = max(red_v[lid], red_v[lid + s]);
        }
        workgroupBarrier();
    }
    let sm = red_m[0];
    let sv = red_v[0];
    for (var j = 0u; j < 2u; j = j + 1u) {
        if (base + 4u * j >= n) { break; }
        var wm = 0u;
        var wv = 0u;
        for (var k = 0u; k < 4u; k = k + 1u) {
            let e = 4u * j + k;
            if (base + e >= n) { break; }
            var qm = 0u;
            var qv = 0u;
            if (sm > 0.0) {
                qm = nearest(0u, 128u, abs(m[e] / sm));
                if (qm != 0u && m[e] < 0.0) { qm = qm | 128u; }
            }
            if (sv > 0.0) { qv = nearest(128u, 256u, v[e] / sv); }
            wm = wm | (qm << (8u * k));
            wv = wv | (qv << (8u * k));
        }
        mq[base / 4u + j] = wm;
        vq[base / 4u + j] = wv;
    }
    if (lid == 0u) {
        scales[blk] = sm;
        scales[nb + blk] = sv;
    }
}
