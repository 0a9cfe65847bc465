// Drives kernels/cast.cu on the CPU (see emu.h) for tests/cuda_emulated_ops.rs.
// usage: cast FROM TO N DIR
//   reads DIR/x.f32 [N] as FROM, writes DIR/out.f32 (Op::Cast { to: TO }).
// Launched as src/backend/cuda/ops/cast.rs does.
#include "emu.h"

#include "common.cuh"
#include "cast.cu"

#include "driver.h"

template <typename From, typename To>
struct Cast;
#define CAST_KERNEL(S_FROM, T_FROM, S_TO, T_TO)                    \
    template <>                                                    \
    struct Cast<T_FROM, T_TO> {                                    \
        static constexpr auto kernel = &cast_##S_FROM##_##S_TO;    \
    };
#define CAST_KERNELS(S, T) \
    CAST_KERNEL(S, T, f32, float) CAST_KERNEL(S, T, f16, __half) CAST_KERNEL(S, T, bf16, __nv_bfloat16)
FOR_EACH_DTYPE(CAST_KERNELS)

// Op::Cast { to }: cast_<from>_<to> over the input's elements.
template <typename From, typename To>
static void cast(u64 n, const std::string& dir) {
    const auto x = narrow<From>(read_f32(dir + "/x.f32", n));
    auto out = poisoned<To>(n);
    launch(grid(n, 256), Cast<From, To>::kernel, x.data(), out.data(), n);
    write_out(dir, "out", out);
}

int main(int argc, char** argv) {
    if (argc != 5) {
        std::fprintf(stderr, "usage: cast FROM TO N DIR\n");
        return 2;
    }
    u64 n = arg_u64(argv[3]);
    std::string dir = argv[4];
    bool to_ok = false;
    bool from_ok = with_dtype(argv[1], [&](auto from) {
        to_ok = with_dtype(argv[2], [&](auto to) { cast<decltype(from), decltype(to)>(n, dir); });
    });
    return from_ok && to_ok ? 0 : 2;
}
