// Drives kernels/attention.cu on the CPU (see emu.h) for tests/cuda_emulated.rs.
// usage: attention DTYPE B T C NH DIR
//   reads  DIR/qkv.f32 [B,T,3C] and DIR/dout.f32 [B,T,C] (little-endian f32),
//   writes DIR/out.f32 [B,T,C], DIR/lse.f32 [B,H,T], DIR/dqkv.f32 [B,T,3C].
// Values are rounded to DTYPE (f32, f16, bf16) on the way in, as a device
// upload would, and widened to f32 on the way out.
#include "emu.h"

#include "common.cuh"
#include "attention.cu"

#include "driver.h"

template <typename T>
static void run(u64 b, u64 t, u64 c, u64 nh, const std::string& dir) {
    float scale = 1.0f / std::sqrt((float)(c / nh));
    auto qkv = narrow<T>(read_f32(dir + "/qkv.f32", b * t * 3 * c));
    auto dout = narrow<T>(read_f32(dir + "/dout.f32", b * t * c));
    std::vector<T> out(b * t * c), dqkv(b * t * 3 * c);
    std::vector<float> lse(b * nh * t), delta(b * nh * t);
    dim3 tiles{(unsigned)((t + 63) / 64), (unsigned)nh, (unsigned)b};
    emu::launch(tiles, 256, attention_forward<T>, qkv.data(), out.data(), lse.data(), t, c, nh,
                scale);
    dim3 rows{(unsigned)((b * nh * t + 255) / 256), 1, 1};
    emu::launch(rows, 256, attention_backward_delta<T>, (const T*)out.data(),
                (const T*)dout.data(), delta.data(), b, t, c, nh);
    emu::launch(tiles, 256, attention_backward_dq<T>, (const T*)qkv.data(),
                (const float*)lse.data(), (const float*)delta.data(), (const T*)dout.data(),
                dqkv.data(), t, c, nh, scale);
    emu::launch(tiles, 256, attention_backward_dkdv<T>, (const T*)qkv.data(),
                (const float*)lse.data(), (const float*)delta.data(), (const T*)dout.data(),
                dqkv.data(), t, c, nh, scale);
    write_f32(dir + "/out.f32", widen(out));
    write_f32(dir + "/lse.f32", lse);
    write_f32(dir + "/dqkv.f32", widen(dqkv));
}

int main(int argc, char** argv) {
    if (argc != 7) {
        std::fprintf(stderr, "usage: attention DTYPE B T C NH DIR\n");
        return 2;
    }
    std::string dt = argv[1];
    u64 b = std::strtoull(argv[2], 0, 10), t = std::strtoull(argv[3], 0, 10);
    u64 c = std::strtoull(argv[4], 0, 10), nh = std::strtoull(argv[5], 0, 10);
    if (dt == "f32") run<float>(b, t, c, nh, argv[6]);
    else if (dt == "f16") run<__half>(b, t, c, nh, argv[6]);
    else if (dt == "bf16") run<__nv_bfloat16>(b, t, c, nh, argv[6]);
    else return 2;
    return 0;
}
