// Rotary position embeddings on the q and k heads of qkv [B, T, (H + 2K)·D],
// the layout attention.cu reads, with the v heads copied: in each head column
// i < D/2 pairs with i + D/2 (Hugging Face Llama's rotate-half), and position
// t turns the pair by t·theta^(−2i/D); `sign` −1 turns it back (the gradient).
//
// One thread per item of a row: the (H + K)·D/2 rotated pairs first, then the
// K·D value columns, so a warp's loads and stores cover consecutive columns.
// The angle is position × inv_freq in f32, inv_freq by powf in f32, and its
// cos and sin in f32: what a Llama trained in f32 computes, rather than the cpu
// backend's f64 angles (they differ by about T·2⁻²⁴ radians at position T).

template <typename T>
__device__ void rope(const T* x, T* out, u64 n, u64 t, u64 d, u64 pairs, u64 vcols, float theta,
                     float sign) {
    u64 k = tid();
    if (k >= n) return;
    u64 per = pairs + vcols, r = k / per, e = k % per, width = 2 * pairs + vcols;
    const T* xr = x + r * width;
    T* o = out + r * width;
    if (e >= pairs) {
        u64 col = 2 * pairs + (e - pairs);
        o[col] = xr[col];  // a copy: exact in every storage type
        return;
    }
    u64 half = d / 2, i = e % half, col = e / half * d + i;
    float inv = powf(theta, -(float)(2 * i) / (float)d);
    float a = (float)(r % t) * inv;
    float c = cosf(a), s = sign * sinf(a);
    float x1 = ld(xr, col), x2 = ld(xr, col + half);
    st(o, col, x1 * c - x2 * s);
    st(o, col + half, x2 * c + x1 * s);
}

#define ROPE(S, T)                                                                                 \
extern "C" __global__ void rope_##S(const T* x, T* out, u64 n, u64 t, u64 d, u64 pairs,           \
                                    u64 vcols, float theta, float sign) {                         \
    rope(x, out, n, t, d, pairs, vcols, theta, sign);                                              \
}
FOR_EACH_DTYPE(ROPE)
