// Drives kernels/softmax.cu on the CPU (see emu.h) for tests/cuda_emulated_ops.rs.
// usage: softmax DTYPE softmax R V DIR
//   reads  DIR/x.f32 and DIR/dy.f32 [R, V];
//   writes DIR/y.f32 (Op::Softmax of x) and DIR/dx.f32 (Op::SoftmaxBackward on
//   that y and dy).
// usage: softmax DTYPE cross_entropy R V DIR
//   reads  DIR/x.f32 [R, V] (logits), DIR/targets.i32 [R], DIR/dloss.f32 [1];
//   writes DIR/row_loss.f32 [R] and DIR/loss.f32 [1] (Op::CrossEntropy: per-row
//   losses into the f32 workspace, then their mean) and DIR/dlogits.f32 [R, V]
//   (Op::CrossEntropyBackward on x, targets, dloss).
// Launched as CudaBackend::run does.
#include "emu.h"

#include "common.cuh"
#include "softmax.cu"

#include "driver.h"

template <typename T>
struct Kernels;
#define KERNELS(S, T)                                                    \
    template <>                                                          \
    struct Kernels<T> {                                                  \
        static constexpr auto forward = &softmax_forward_##S;            \
        static constexpr auto backward = &softmax_backward_##S;          \
        static constexpr auto ce_rows = &cross_entropy_rows_##S;         \
        static constexpr auto ce_mean = &cross_entropy_mean_##S;         \
        static constexpr auto ce_backward = &cross_entropy_backward_##S; \
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

template <typename T>
static void cross_entropy(u64 r, u64 v, const std::string& dir) {
    using K = Kernels<T>;
    const auto x = narrow<T>(read_f32(dir + "/x.f32", r * v));
    const auto targets = read_i32(dir + "/targets.i32", r);
    // The loss and its gradient are f32 whatever the logits' type.
    const auto dloss = read_f32(dir + "/dloss.f32", 1);
    // Op::CrossEntropy: ins logits, targets; outs loss (row losses in the workspace).
    auto row_loss = poisoned<float>(r);
    auto loss = poisoned<float>(1);
    launch(rows(r), K::ce_rows, x.data(), targets.data(), row_loss.data(), v);
    launch(rows(1), K::ce_mean, (const float*)row_loss.data(), loss.data(), r);
    // Op::CrossEntropyBackward: ins logits, targets, dloss; outs dlogits.
    auto dlogits = poisoned<T>(r * v);
    launch(rows(r), K::ce_backward, x.data(), targets.data(), dloss.data(), dlogits.data(), r, v);
    write_out(dir, "row_loss", row_loss);
    write_out(dir, "loss", loss);
    write_out(dir, "dlogits", dlogits);
}

int main(int argc, char** argv) {
    std::string kind = argc > 2 ? argv[2] : "";
    if (argc != 6 || (kind != "softmax" && kind != "cross_entropy")) {
        std::fprintf(stderr, "usage: softmax DTYPE softmax|cross_entropy R V DIR\n");
        return 2;
    }
    u64 r = arg_u64(argv[3]), v = arg_u64(argv[4]);
    std::string dir = argv[5];
    bool ok = with_dtype(argv[1], [&](auto tag) {
        if (kind == "softmax") softmax<decltype(tag)>(r, v, dir);
        else cross_entropy<decltype(tag)>(r, v, dir);
    });
    return ok ? 0 : 2;
}
