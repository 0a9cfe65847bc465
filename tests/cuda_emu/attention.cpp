// Drives kernels/attention.cu and attention_tc.cu on the CPU (see emu.h) for
// tests/cuda_emulated.rs.
// usage: attention cores|tensor-cores DTYPE B T C NH DIR
//   reads  DIR/qkv.f32 [B,T,3C] and DIR/dout.f32 [B,T,C] (little-endian f32),
//   writes DIR/out.f32 [B,T,C], DIR/lse.f32 [B,H,T], DIR/dqkv.f32 [B,T,3C].
// Values are rounded to DTYPE (f32, f16, bf16) on the way in, as a device
// upload would, and widened to f32 on the way out.
#include "emu.h"

#include "common.cuh"
#include "attention.cu"
#include "attention_tc.cu"

#include "driver.h"

// The two kernel sets, as CudaBackend::run picks them: attention.cu (CUDA
// cores, 256 threads per 64 rows) or attention_tc.cu (tensor cores, 128 per 32).
template <typename T, bool TC>
struct Kernels {
    static constexpr auto forward = &attention_forward<T>;
    static constexpr auto dq = &attention_backward_dq<T>;
    static constexpr auto dkdv = &attention_backward_dkdv<T>;
    static constexpr u64 rows = 64, threads = 256;
};
template <typename T>
struct Kernels<T, true> {
    static constexpr auto forward = &attention_tc_forward<T>;
    static constexpr auto dq = &attention_tc_backward_dq<T>;
    static constexpr auto dkdv = &attention_tc_backward_dkdv<T>;
    static constexpr u64 rows = 32, threads = 128;
};

template <typename T, bool TC>
static void run(u64 b, u64 t, u64 c, u64 nh, const std::string& dir) {
    using K = Kernels<T, TC>;
    float scale = 1.0f / std::sqrt((float)(c / nh));
    auto qkv = narrow<T>(read_f32(dir + "/qkv.f32", b * t * 3 * c));
    auto dout = narrow<T>(read_f32(dir + "/dout.f32", b * t * c));
    auto out = poisoned<T>(b * t * c), dqkv = poisoned<T>(b * t * 3 * c);
    std::vector<float> lse(b * nh * t), delta(b * nh * t);
    dim3 tiles{(unsigned)((t + K::rows - 1) / K::rows), (unsigned)nh, (unsigned)b};
    emu::launch(tiles, K::threads, K::forward, (const T*)qkv.data(), out.data(), lse.data(), t, c,
                nh, scale);
    dim3 rows{(unsigned)((b * nh * t + 255) / 256), 1, 1};
    emu::launch(rows, 256, attention_backward_delta<T>, (const T*)out.data(),
                (const T*)dout.data(), delta.data(), b, t, c, nh);
    emu::launch(tiles, K::threads, K::dq, (const T*)qkv.data(), (const float*)lse.data(),
                (const float*)delta.data(), (const T*)dout.data(), dqkv.data(), t, c, nh, scale);
    emu::launch(tiles, K::threads, K::dkdv, (const T*)qkv.data(), (const float*)lse.data(),
                (const float*)delta.data(), (const T*)dout.data(), dqkv.data(), t, c, nh, scale);
    write_f32(dir + "/out.f32", widen(out));
    write_f32(dir + "/lse.f32", lse);
    write_f32(dir + "/dqkv.f32", widen(dqkv));
}

int main(int argc, char** argv) {
    if (argc != 8) {
        std::fprintf(stderr, "usage: attention cores|tensor-cores DTYPE B T C NH DIR\n");
        return 2;
    }
    bool tc = std::string(argv[1]) == "tensor-cores";
    std::string dt = argv[2];
    u64 b = std::strtoull(argv[3], 0, 10), t = std::strtoull(argv[4], 0, 10);
    u64 c = std::strtoull(argv[5], 0, 10), nh = std::strtoull(argv[6], 0, 10);
    std::string dir = argv[7];
    if (dt == "f32" && !tc) run<float, false>(b, t, c, nh, dir);
    else if (dt == "f16") tc ? run<__half, true>(b, t, c, nh, dir) : run<__half, false>(b, t, c, nh, dir);
    else if (dt == "bf16")
        tc ? run<__nv_bfloat16, true>(b, t, c, nh, dir) : run<__nv_bfloat16, false>(b, t, c, nh, dir);
    else return 2;
    return 0;
}
