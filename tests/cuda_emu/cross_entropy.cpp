// Drives kernels/cross_entropy.cu on the CPU (see emu.h) for tests/cuda_emulated_ops.rs.
// usage: cross_entropy DTYPE R V DIR
//   reads  DIR/x.f32 [R, V] (logits), DIR/targets.i32 [R], DIR/dloss.f32 [1];
//   writes DIR/row_loss.f32 [R] and DIR/loss.f32 [1] (Op::CrossEntropy: per-row
//   losses into the f32 workspace, then their mean) and DIR/dlogits.f32 [R, V]
//   (Op::CrossEntropyBackward on x, targets, dloss).
// Launched as src/backend/cuda/ops/cross_entropy.rs does.
#include "emu.h"

#include "common.cuh"
#include "cross_entropy.cu"

#include "driver.h"

template <typename T>
struct Kernels;
#define KERNELS(S, T)                                                 \
    template <>                                                       \
    struct Kernels<T> {                                               \
        static constexpr auto row_losses = &cross_entropy_rows_##S;   \
        static constexpr auto mean = &cross_entropy_mean_##S;         \
        static constexpr auto backward = &cross_entropy_backward_##S; \
    };
FOR_EACH_DTYPE(KERNELS)

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
    launch(rows(r), K::row_losses, x.data(), targets.data(), row_loss.data(), v);
    launch(rows(1), K::mean, (const float*)row_loss.data(), loss.data(), r);
    // Op::CrossEntropyBackward: ins logits, targets, dloss; outs dlogits.
    auto dlogits = poisoned<T>(r * v);
    launch(rows(r), K::backward, x.data(), targets.data(), dloss.data(), dlogits.data(), r, v);
    write_out(dir, "row_loss", row_loss);
    write_out(dir, "loss", loss);
    write_out(dir, "dlogits", dlogits);
}

int main(int argc, char** argv) {
    if (argc != 5) {
        std::fprintf(stderr, "usage: cross_entropy DTYPE R V DIR\n");
        return 2;
    }
    u64 r = arg_u64(argv[2]), v = arg_u64(argv[3]);
    std::string dir = argv[4];
    bool ok = with_dtype(argv[1], [&](auto tag) { cross_entropy<decltype(tag)>(r, v, dir); });
    return ok ? 0 : 2;
}
