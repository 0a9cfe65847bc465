// Mean cross-entropy over rows of V logits. p0 rows, p1 V, p2 classes: only a
// row's first `classes` logits are classes (the rest pad the vocabulary for the
// GEMM): they are left out of the softmax and their gradient is 0. The loss and
// its gradient are f32 whatever the logits' storage type.
@group(0) @binding(1) var<storage, read_write> logits: array<T>;
@group(0) @binding(2) var<storage, read_write> targets: array<i32>;
@group(0) @binding(3) var<storage, read_write> dloss: array<f32>;
// dlogits; in a training step the same memory as the logits (each element is
// read by the thread that then overwrites it).
@group(0) @binding(4) var<storage, read_write> out: array<T>;
@group(0) @binding(5) var<storage, read_write> loss: array<f32>;

var<workgroup> partial: array<f32, 256>;

// A row's max (x) and Σ exp(logit − max) (y) over its classes.
fn row_stats(base: u32, classes: u32) -> vec2<f32> {
    var m = -3.4e38;
    for (var j = 0u; j < classes; j = j + 1u) { m = max(m, f32(logits[base + j])); }
    var s = 0.0;
    for (var j = 0u; j < classes; j = j + 1u) { s = s + exp(f32(logits[base + j]) - m); }
    return vec2<f32>(m, s);
}

fn row_loss(r: u32, v: u32, classes: u32, ms: vec2<f32>) -> f32 {
    let t = targets[r];
    if (t < 0 || u32(t) >= classes) {
        // An out-of-range target poisons the loss; the trainer reports a
        // non-finite loss and skips the step.
        return bitcast<f32>(0x7fc00000u);
    }
    return ms.x + log(ms.y) - f32(logits[r * v + u32(t)]);
}

// dlogits of row r: (softmax − onehot) · scale over the classes, 0 past them.
fn row_gradient(r: u32, v: u32, classes: u32, ms: vec2<f32>, scale: f32) {
    let base = r * v;
    let t = u32(targets[r]);
    for (var j = 0u; j < classes; j = j + 1u) {
        var p = exp(f32(logits[base + j]) - ms.x) / ms.y;
        if (j == t) { p = p - 1.0; }
        out[base + j] = T(p * scale);
    }
    for (var j = classes; j < v; j = j + 1u) { out[base + j] = T(0.0); }
}

// Thread lid's rows lid, lid+256, …, each a partial; the partials are then added
// in thread order by thread 0, so the result does not vary between runs.
fn mean_of_partials(lid: u32, n: u32) {
    workgroupBarrier();
    if (lid == 0u) {
        var total = 0.0;
        for (var i = 0u; i < 256u; i = i + 1u) { total = total + partial[i]; }
        loss[0] = total / f32(n);
    }
}

// The loss alone, one workgroup.
@compute @workgroup_size(256)
fn forward(@builtin(local_invocation_index) lid: u32) {
    let n = pu(0u);
    let v = pu(1u);
    let classes = pu(2u);
    var s = 0.0;
    for (var r = lid; r < n; r = r + 256u) { s = s + row_loss(r, v, classes, row_stats(r * v, classes)); }
    partial[lid] = s;
    mean_of_partials(lid, n);
}

// dlogits = (softmax − onehot) · dloss / rows, one thread per row.
@compute @workgroup_size(64)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = flat(wid, nwg, lid);
    let n = pu(0u);
    if (r >= n) { return; }
    let v = pu(1u);
    let classes = pu(2u);
    row_gradient(r, v, classes, row_stats(r * v, classes), dloss[0] / f32(n));
}

// The loss and dlogits of a training step in one dispatch of one workgroup
// (so the loss adds up as `forward`'s does): each row's statistics and its
// target's logit are read before the row is overwritten.
@compute @workgroup_size(256)
fn fused(@builtin(local_invocation_index) lid: u32) {
    let n = pu(0u);
    let v = pu(1u);
    let classes = pu(2u);
    let scale = dloss[0] / f32(n);
    var s = 0.0;
    for (var r = lid; r < n; r = r + 256u) {
        let ms = row_stats(r * v, classes);
        s = s + row_loss(r, v, classes, ms);
        row_gradient(r, v, classes, ms, scale);
    }
    partial[lid] = s;
    mean_of_partials(lid, n);
}
