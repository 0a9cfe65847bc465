// Mean cross-entropy over rows of V logits. p0 rows, p1 V. The loss and its
// gradient are f32 whatever the logits' storage type.
@group(0) @binding(1) var<storage, read_write> logits: array<T>;
@group(0) @binding(2) var<storage, read_write> targets: array<i32>;
@group(0) @binding(3) var<storage, read_write> dloss: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<T>;
@group(0) @binding(5) var<storage, read_write> loss: array<f32>;

var<workgroup> partial: array<f32, 256>;

// A row's max (x) and Σ exp(logit − max) (y).
fn row_stats(base: u32, v: u32) -> vec2<f32> {
    var m = -3.4e38;
    for (var j = 0u; j < v; j = j + 1u) { m = max(m, f32(logits[base + j])); }
    var s = 0.0;
    for (var j = 0u; j < v; j = j + 1u) { s = s + exp(f32(logits[base + j]) - m); }
    return vec2<f32>(m, s);
}

fn row_loss(r: u32, v: u32) -> f32 {
    let base = r * v;
    let ms = row_stats(base, v);
    let t = targets[r];
    if (t < 0 || u32(t) >= v) {
        // An out-of-range target poisons the loss; the trainer reports a
        // non-finite loss and skips the step.
        return bitcast<f32>(0x7fc00000u);
    }
    return ms.x + log(ms.y) - f32(logits[base + u32(t)]);
}

// One workgroup: thread t takes rows t, t+256, …; the partial sums are then
// added in thread order, so the result does not vary between runs.
@compute @workgroup_size(256)
fn forward(@builtin(local_invocation_index) lid: u32) {
    let n = pu(0u);
    let v = pu(1u);
    var s = 0.0;
    for (var r = lid; r < n; r = r + 256u) { s = s + row_loss(r, v); }
    partial[lid] = s;
    workgroupBarrier();
    if (lid == 0u) {
        var total = 0.0;
        for (var i = 0u; i < 256u; i = i + 1u) { total = total + partial[i]; }
        loss[0] = total / f32(n);
    }
}

// dlogits = (softmax − onehot) · dloss / rows, one thread per row.
@compute @workgroup_size(64)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = flat(wid, nwg, lid);
    let n = pu(0u);
    if (r >= n) { return; }
    let v = pu(1u);
    let base = r * v;
    let ms = row_stats(base, v);
    let m = ms.x;
    let s = ms.y;
    let scale = dloss[0] / f32(n);
    let t = u32(targets[r]);
    for (var j = 0u; j < v; j = j + 1u) {
        var p = exp(f32(logits[base + j]) - m) / s;
        if (j == t) { p = p - 1.0; }
        out[base + j] = T(p * scale);
    }
}
