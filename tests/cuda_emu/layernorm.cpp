// Drives kernels/layernorm.cu on the CPU (see emu.h) for tests/cuda_emulated_ops.rs.
// usage: layernorm DTYPE R C EPS DIR
//   reads  DIR/x.f32 and DIR/dy.f32 [R, C], DIR/w.f32 and DIR/b.f32 [C];
//   writes DIR/y.f32 [R, C], DIR/mean.f32 and DIR/rstd.f32 [R] (Op::LayerNorm),
//   then DIR/dx.f32 [R, C], DIR/dw.f32 and DIR/db.f32 [C] (Op::LayerNormBackward
//   on dy, x, w and the forward's mean and rstd), launched as CudaBackend::run does.
#include "emu.h"

#include "common.cuh"
#include "layernorm.cu"

#include "driver.h"

template <typename T>
struct Kernels;
#define KERNELS(S, T)                                                   \
    template <>                                                         \
    struct Kernels<T> {                                                 \
        static constexpr auto forward = &layernorm_forward_##S;         \
        static constexpr auto backward_dx = &layernorm_backward_dx_##S; \
        static constexpr auto backward_dwdb = &layernorm_backward_dwdb_##S; \
        static constexpr auto dwdb_finish = &layernorm_backward_dwdb_finish_##S; \
    };
FOR_EACH_DTYPE(KERNELS)

template <typename T>
static void run(u64 r, u64 c, float eps, u64 chunks, const std::string& dir) {
    using K = Kernels<T>;
    const auto x = narrow<T>(read_f32(dir + "/x.f32", r * c));
    const auto w = narrow<T>(read_f32(dir + "/w.f32", c));
    const auto b = narrow<T>(read_f32(dir + "/b.f32", c));
    const auto dy = narrow<T>(read_f32(dir + "/dy.f32", r * c));

    // Op::LayerNorm: ins x, w, b; outs y, mean, rstd.
    auto y = poisoned<T>(r * c);
    auto mean = poisoned<float>(r), rstd = poisoned<float>(r);
    launch(rows(r), K::forward, x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), c,
           eps);

    // Op::LayerNormBackward: ins dy, x, w, mean, rstd; outs dx, dw, db.
    auto dx = poisoned<T>(r * c), dw = poisoned<T>(c), db = poisoned<T>(c);
    launch(rows(r), K::backward_dx, dy.data(), x.data(), w.data(), mean.data(),
           rstd.data(), dx.data(), c);
    // dw, db: partials per chunk of rows (CHUNKS from column_chunks), then added.
    auto partial = poisoned<float>(2 * c * chunks);
    launch(grid(c * chunks, 256), K::backward_dwdb, dy.data(), x.data(), mean.data(),
           rstd.data(), partial.data(), r, c, chunks);
    launch(grid(c, 256), K::dwdb_finish, (const float*)partial.data(), dw.data(), db.data(), c,
           chunks);

    write_out(dir, "y", y);
    write_out(dir, "mean", mean);
    write_out(dir, "rstd", rstd);
    write_out(dir, "dx", dx);
    write_out(dir, "dw", dw);
    write_out(dir, "db", db);
}

int main(int argc, char** argv) {
    if (argc != 7) {
        std::fprintf(stderr, "usage: layernorm DTYPE R C EPS CHUNKS DIR\n");
        return 2;
    }
    u64 r = arg_u64(argv[2]), c = arg_u64(argv[3]);
    float eps = arg_f32(argv[4]);
    u64 chunks = arg_u64(argv[5]);
    std::string dir = argv[6];
    bool ok = with_dtype(argv[1], [&](auto tag) { run<decltype(tag)>(r, c, eps, chunks, dir); });
    return ok ? 0 : 2;
}
