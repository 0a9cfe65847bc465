// Σx² of one tensor into slot p1 of the result buffer, by one workgroup whose
// partial sums are added in thread order (deterministic). p0 n, p1 slot.
@group(0) @binding(1) var<storage, read_write> x: array<T>;
@group(0) @binding(2) var<storage, read_write> result: array<f32>;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
    let n = pu(0u);
    var s = 0.0;
    for (var i = lid; i < n; i = i + 256u) { let v = f32(x[i]);
        s = s + v * v; }
    partial[lid] = s;
    workgroupBarrier();
    if (lid == 0u) {
        var total = 0.0;
        for (var k = 0u; k < 256u; k = k + 1u) { total = total + partial[k]; }
        result[pu(1u)] = total;
    }
}
