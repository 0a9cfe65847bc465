// Drives kernels/softmax.cu on the CPU (see emu.h) for tests/cuda_emulated_ops.rs.
// usage: softmax DTYPE R V DIR
//   reads  DIR/x.f32 and DIR/dy.f32 [R, V];
//   writes DIR/y.f32 (Op::Softmax of x) and DIR/dx.f32 (Op::SoftmaxBackward on
//   that y and dy).
// Launched as src/backend/cuda/ops/softmax.rs does.
#include "emu.h"

#include "common.cuh"
#include "softmax.cu"

#include "driver.h"

template <typename T>
struct Kernels;
#define KERNELS(S, T)                                           \
    template <>                                                 \
    struct Kernels<T> {                                         \
        static constexpr auto forward = &softmax_forward_##S;   \
        static constexpr auto backward = &softmax_backward_##S; \
    };
FOR_EACH_DTYPE(KERNELS)

template <typename T>
static void softmax(u64 r, u64 v, const std::string& dir) {
    using K = Kernels<T>;
    const auto x = narrow<T>(read_f32(dir + "/x.f32", r * v));
    const auto dy = narrow<T>(read_f32(dir + "/dy.f32", r * v));
    // Op::Softmax: ins x; outs y.
    auto y = poisoned<T>(r * v);
    launch(rows(r), K::forward, x.data(), y.data(), v);
    // Op::SoftmaxBackward: ins y, dy; outs dx.
    auto dx = poisoned<T>(r * v);
    launch(rows(r), K::backward, (const T*)y.data(), dy.data(), dx.data(), v);
    write_out(dir, "y", y);
    write_out(dir, "dx", dx);
}

int main(int argc, char** argv) {
    if (argc != 5) {
        std::fprintf(stderr, "usage: softmax DTYPE R V DIR\n");
        return 2;
    }
    u64 r = arg_u64(argv[2]), v = arg_u64(argv[3]);
    std::string dir = argv[4];
    bool ok = with_dtype(argv[1], [&](auto tag) { softmax<decltype(tag)>(r, v, dir); });
    return ok ? 0 : 2;
}
