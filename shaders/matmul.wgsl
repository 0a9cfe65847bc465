// c[z] = op(a[z]) @ op(b[z]), 16×16 tiles through workgroup memory.
// p0 M, p1 N, p2 K, p3 rsa, p4 csa, p5 rsb, p6 csb, p7 a batch stride, p8 b batch stride.
@group(0) @binding(1) var<storage, read_write> a: array<T>;
@group(0) @binding(2) var<storage, read_write> bm: array<T>;
@group(0) @binding(3) var<storage, read_write> c: array<T>;

var<workgroup> ta: array<array<f32, 16>, 16>;
var<workgroup> tb: array<array<f32, 16>, 16>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m = pu(0u); let n = pu(1u); let k = pu(2u);
    let z = wid.z;
    let row = wid.y * 16u + lid.y;
    let col = wid.x * 16u + lid.x;
    let abase = z * pu(7u);
    let bbase = z * pu(8u);
    var acc = 0.0;
    for (var t = 0u; t < k; t = t + 16u) {
        let ak = t + lid.x;
        if (row < m && ak < k) { ta[lid.y][lid.x] = f32(a[abase + row * pu(3u) + ak * pu(4u)]); } else { ta[lid.y][lid.x] = 0.0; }
        let bk = t + lid.y;
        if (bk < k && col < n) { tb[lid.y][lid.x] = f32(bm[bbase + bk * pu(5u) + col * pu(6u)]); } else { tb[lid.y][lid.x] = 0.0; }
        workgroupBarrier();
        for (var j = 0u; j < 16u; j = j + 1u) {
            acc = acc + ta[lid.y][j] * tb[j][lid.x];
        }
        workgroupBarrier();
    }
    if (row < m && col < n) {
        c[z * m * n + row * n + col] = T(acc);
    }
}
