// Layout copies.
@group(0) @binding(1) var<storage, read_write> a: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;

// Swap two axes, seen as [outer, A, mid, B, inner] → [outer, B, mid, A, inner].
// p0 n, p1 A, p2 mid, p3 B, p4 inner.
@compute @workgroup_size(64)
fn transpose(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let k = flat(wid, nwg, lid);
    if (k >= pu(0u)) { return; }
    let da = pu(1u); let mid = pu(2u); let db = pu(3u); let inner = pu(4u);
    // Output index → (p, j < B, m, i < A, r).
    let r = k % inner;
    var q = k / inner;
    let i = q % da; q = q / da;
    let m = q % mid; q = q / mid;
    let j = q % db;
    let p = q / db;
    out[k] = T(f32(a[((((p * da + i) * mid + m) * db + j) * inner) + r]));
}

// Copy one slice along an axis: out has rows of `n` elements taken at offset
// `off` from input rows of `row` elements. p0 total out, p1 n, p2 row, p3 off.
@compute @workgroup_size(64)
fn split_part(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let k = flat(wid, nwg, lid);
    if (k >= pu(0u)) { return; }
    let n = pu(1u);
    out[k] = T(f32(a[(k / n) * pu(2u) + pu(3u) + k % n]));
}

// The inverse: write input rows of `n` into out rows of `row` at `off`.
// p0 total in, p1 n, p2 row, p3 off.
@compute @workgroup_size(64)
fn concat_part(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let k = flat(wid, nwg, lid);
    if (k >= pu(0u)) { return; }
    let n = pu(1u);
    out[(k / n) * pu(2u) + pu(3u) + k % n] = T(f32(a[k]));
}
