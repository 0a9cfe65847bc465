// Rotary position embedding of the q and k heads of a qkv row, v copied.
// p0 n (elements), p1 T, p2 row width (H + 2K)·D, p3 rotated width (H + K)·D
// (where v starts), p4 head dim D, p5 sign (1, or −1 for the inverse turn).
@group(0) @binding(1) var<storage, read_write> qkv: array<T>;    // [B, T, (H + 2K)·D]
@group(0) @binding(2) var<storage, read_write> freqs: array<f32>; // [D/2], theta^(−2i/D)
@group(0) @binding(3) var<storage, read_write> out: array<T>;    // [B, T, (H + 2K)·D]

// 2π as a short head (its product with a turn count stays exact) and the rest.
const TWO_PI_HI: f32 = 6.28125;
const TWO_PI_LO: f32 = 0.0019353071795864769;
const INV_TWO_PI: f32 = 0.15915494309189535;

// Vulkan and Metal bound sin/cos's error only on [−π, π], and angles grow with
// the position, so whole turns come off first.
fn reduce_turns(a: f32) -> f32 {
    let n = round(a * INV_TWO_PI);
    return (a - n * TWO_PI_HI) - n * TWO_PI_LO;
}

// One thread per output element; column i of a head pairs with i + D/2.
@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let k = flat(wid, nwg, lid);
    if (k >= pu(0u)) { return; }
    let w = pu(2u);
    let col = k % w;
    if (col >= pu(3u)) {
        out[k] = T(f32(qkv[k]));
        return;
    }
    let hd = pu(4u);
    let half = hd / 2u;
    let j = col % hd;
    let i = j % half;
    let pair = k - j + i; // the pair's first column
    let pos = f32((k / w) % pu(1u));
    let a = reduce_turns(pos * freqs[i]);
    let cs = cos(a);
    let sn = pf(5u) * sin(a);
    let x1 = f32(qkv[pair]);
    let x2 = f32(qkv[pair + half]);
    if (j < half) {
        out[k] = T(x1 * cs - x2 * sn);
    } else {
        out[k] = T(x2 * cs + x1 * sn);
    }
}
