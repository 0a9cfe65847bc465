// Drives kernels/elementwise.cu on the CPU (see emu.h) for tests/cuda_emulated_ops.rs.
// usage: elementwise DTYPE N NB FACTOR VALUE DIR
//   reads  DIR/a.f32 [N], DIR/b.f32 [NB] (broadcast over a: a's trailing dims),
//          DIR/dy.f32 [N];
//   writes DIR/add.f32 (a + b), DIR/mul.f32 (a * b), DIR/scale.f32 (a * FACTOR),
//          DIR/fill.f32 (VALUE), DIR/accumulate.f32 (a += dy, Backend::accumulate),
//          DIR/gelu.f32 (gelu a), DIR/gelu_backward.f32 (Op::GeluBackward on a, dy),
//          DIR/bias_gelu.f32 (gelu(a + b)), DIR/bias_gelu_backward.f32
//          (Op::BiasGeluBackward on a, b, dy), all [N].
// Launched as src/backend/cuda/ops/elementwise.rs does.
#include "emu.h"

#include "common.cuh"
#include "elementwise.cu"

#include "driver.h"

template <typename T>
struct Kernels;
#define KERNELS(S, T)                                                       \
    template <>                                                             \
    struct Kernels<T> {                                                     \
        static constexpr auto add = &add_##S;                               \
        static constexpr auto mul = &mul_##S;                               \
        static constexpr auto scale = &scale_##S;                           \
        static constexpr auto fill = &fill_##S;                             \
        static constexpr auto accumulate = &accumulate_##S;                 \
        static constexpr auto gelu_forward = &gelu_forward_##S;             \
        static constexpr auto gelu_backward = &gelu_backward_##S;           \
        static constexpr auto bias_gelu_forward = &bias_gelu_forward_##S;   \
        static constexpr auto bias_gelu_backward = &bias_gelu_backward_##S; \
    };
FOR_EACH_DTYPE(KERNELS)

template <typename T>
static void run(u64 n, u64 nb, float factor, float value, const std::string& dir) {
    using K = Kernels<T>;
    const auto a = narrow<T>(read_f32(dir + "/a.f32", n));
    const auto b = narrow<T>(read_f32(dir + "/b.f32", nb));
    const auto dy = narrow<T>(read_f32(dir + "/dy.f32", n));
    const Launch per_element = grid(n, 256);

    // Op::Add, Op::Mul: ins a, b; n0 = a's size, nb = b's.
    auto add = poisoned<T>(n), mul = poisoned<T>(n);
    launch(per_element, K::add, a.data(), b.data(), add.data(), n, nb);
    launch(per_element, K::mul, a.data(), b.data(), mul.data(), n, nb);
    // Op::Scale { factor }, Op::Fill { value }.
    auto scale = poisoned<T>(n), fill = poisoned<T>(n);
    launch(per_element, K::scale, a.data(), scale.data(), n, factor);
    launch(per_element, K::fill, fill.data(), n, value);
    // Backend::accumulate(dst, src): dst += src in place.
    auto acc = a;
    launch(per_element, K::accumulate, acc.data(), dy.data(), n);
    // Op::Gelu: ins x; Op::GeluBackward: ins x, dy.
    auto gelu = poisoned<T>(n), gelu_bwd = poisoned<T>(n);
    launch(per_element, K::gelu_forward, a.data(), gelu.data(), n);
    launch(per_element, K::gelu_backward, a.data(), dy.data(), gelu_bwd.data(), n);
    // Op::BiasGelu: ins x, b; Op::BiasGeluBackward: ins x, b, dy.
    auto bias_gelu = poisoned<T>(n), bias_gelu_bwd = poisoned<T>(n);
    launch(per_element, K::bias_gelu_forward, a.data(), b.data(), bias_gelu.data(), n, nb);
    launch(per_element, K::bias_gelu_backward, a.data(), b.data(), dy.data(), bias_gelu_bwd.data(),
           n, nb);

    write_out(dir, "add", add);
    write_out(dir, "mul", mul);
    write_out(dir, "scale", scale);
    write_out(dir, "fill", fill);
    write_out(dir, "accumulate", acc);
    write_out(dir, "gelu", gelu);
    write_out(dir, "gelu_backward", gelu_bwd);
    write_out(dir, "bias_gelu", bias_gelu);
    write_out(dir, "bias_gelu_backward", bias_gelu_bwd);
}

int main(int argc, char** argv) {
    if (argc != 7) {
        std::fprintf(stderr, "usage: elementwise DTYPE N NB FACTOR VALUE DIR\n");
        return 2;
    }
    u64 n = arg_u64(argv[2]), nb = arg_u64(argv[3]);
    float factor = arg_f32(argv[4]), value = arg_f32(argv[5]);
    std::string dir = argv[6];
    bool ok = with_dtype(argv[1], [&](auto tag) { run<decltype(tag)>(n, nb, factor, value, dir); });
    return ok ? 0 : 2;
}
