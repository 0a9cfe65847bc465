// Sum/mean over a set of axes and its adjoint, expand. Shapes up to rank 6.
// p0 n (outputs of this kernel), p1 rank, p2..p7 dims of the full shape,
// p8 bitmask of reduced axes, p9 scale (mean: 1/count).
@group(0) @binding(1) var<storage, read_write> a: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;

fn dim(i: u32) -> u32 { return pu(2u + i); }
fn reduced(i: u32) -> bool { return ((pu(8u) >> i) & 1u) == 1u; }

// Full-shape linear index from a kept index `o` and a reduced index `r`
// (each row-major over its own axes).
fn full_index(o: u32, r: u32) -> u32 {
    let rank = pu(1u);
    var oo = o;
    var rr = r;
    var idx = 0u;
    var stride = 1u;
    for (var k = 0u; k < rank; k = k + 1u) {
        let ax = rank - 1u - k;
        let d = dim(ax);
        var c = 0u;
        if (reduced(ax)) { c = rr % d; rr = rr / d; } else { c = oo % d; oo = oo / d; }
        idx = idx + c * stride;
        stride = stride * d;
    }
    return idx;
}

fn reduced_count() -> u32 {
    var n = 1u;
    for (var k = 0u; k < pu(1u); k = k + 1u) { if (reduced(k)) { n = n * dim(k); } }
    return n;
}

// One thread per output; reduced elements added in row-major order.
@compute @workgroup_size(64)
fn sum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let o = flat(wid, nwg, lid);
    if (o >= pu(0u)) { return; }
    var s = 0.0;
    let n = reduced_count();
    for (var r = 0u; r < n; r = r + 1u) { s = s + f32(a[full_index(o, r)]); }
    out[o] = T(s * pf(9u));
}

// One thread per output element of the full shape.
@compute @workgroup_size(64)
fn expand(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let k = flat(wid, nwg, lid);
    if (k >= pu(0u)) { return; }
    // Drop the reduced axes of k's multi-index.
    let rank = pu(1u);
    var rem = k;
    var idx = 0u;
    var stride = 1u;
    for (var j = 0u; j < rank; j = j + 1u) {
        let ax = rank - 1u - j;
        let d = dim(ax);
        let c = rem % d;
        rem = rem / d;
        if (!reduced(ax)) { idx = idx + c * stride; stride = stride * d; }
    }
    out[k] = T(f32(a[idx]));
}
