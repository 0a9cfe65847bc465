// Elementwise ops. p0 = n (elements); p1 = nb (length of the broadcast operand).
@group(0) @binding(1) var<storage, read_write> a: array<T>;
@group(0) @binding(2) var<storage, read_write> b: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;
@group(0) @binding(4) var<storage, read_write> dy: array<T>;

@compute @workgroup_size(64)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    out[i] = T(f32(a[i]) + f32(b[i % pu(1u)]));
}

@compute @workgroup_size(64)
fn mul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    out[i] = T(f32(a[i]) * f32(b[i % pu(1u)]));
}

// p2 = factor
@compute @workgroup_size(64)
fn scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    out[i] = T(f32(a[i]) * pf(2u));
}

@compute @workgroup_size(64)
fn copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    out[i] = T(f32(a[i]));
}

// p2 = value
@compute @workgroup_size(64)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    out[i] = T(pf(2u));
}

// out += a (gradient accumulation).
@compute @workgroup_size(64)
fn accumulate(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    out[i] = T(f32(out[i]) + f32(a[i]));
}

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const GELU_K: f32 = 0.044715;

@compute @workgroup_size(64)
fn gelu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let x = f32(a[i]);
    out[i] = T(0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * (x + GELU_K * x * x * x))));
}

// a = x, b = dy
@compute @workgroup_size(64)
fn gelu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let x = f32(a[i]);
    let t = tanh(SQRT_2_OVER_PI * (x + GELU_K * x * x * x));
    let local = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_K * x * x);
    out[i] = T(local * f32(b[i]));
}

// x · σ(x); exp(−x) overflowing to inf for very negative x gives σ = 0, the
// right limit, so no clamp is needed.
@compute @workgroup_size(64)
fn silu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let x = f32(a[i]);
    out[i] = T(x / (1.0 + exp(-x)));
}

// a = x, b = dy: σ(x) (1 + x (1 − σ(x))) · dy.
@compute @workgroup_size(64)
fn silu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let x = f32(a[i]);
    let s = 1.0 / (1.0 + exp(-x));
    out[i] = T(s * (1.0 + x * (1.0 - s)) * f32(b[i]));
}

fn gelu_local(x: f32) -> f32 {
    let t = tanh(SQRT_2_OVER_PI * (x + GELU_K * x * x * x));
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_K * x * x);
}

// out = gelu(a + b), b repeating with period p1 (the MLP's bias and activation).
@compute @workgroup_size(64)
fn bias_gelu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let x = f32(a[i]) + f32(b[i % pu(1u)]);
    out[i] = T(0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * (x + GELU_K * x * x * x))));
}

// out = gelu'(a + b) · dy, the pre-activation recomputed rather than stored.
@compute @workgroup_size(64)
fn bias_gelu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let x = f32(a[i]) + f32(b[i % pu(1u)]);
    out[i] = T(gelu_local(x) * f32(dy[i]));
}
