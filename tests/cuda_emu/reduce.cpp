// Drives kernels/reduce.cu on the CPU (see emu.h) for tests/cuda_emulated_ops.rs.
// usage: reduce DTYPE sum    N0 RANK D0 D1 D2 D3 D4 D5 MASK COUNT SCALE CHUNKS DIR
//        reduce DTYPE expand N0 RANK D0 D1 D2 D3 D4 D5 MASK DIR
//   The arguments are CudaBackend::run's for Op::Sum / Op::Mean (sum_partial_ and
//   sum_finish_<dtype>, CHUNKS from column_chunks)
//   and Op::Expand (expand_<dtype>): N0 the output's size, then the fields of
//   reduce_plan(full shape, axes, mean), dims padded with 1 to rank 6.
//   reads DIR/x.f32 (the full shape for sum, the reduced one for expand),
//   writes DIR/out.f32 [N0].
#include "emu.h"

#include "common.cuh"
#include "reduce.cu"

#include "driver.h"

template <typename T>
struct Kernels;
#define KERNELS(S, T)                          \
    template <>                                \
    struct Kernels<T> {                        \
        static constexpr auto sum_partial = &sum_partial_##S; \
        static constexpr auto sum_finish = &sum_finish_##S;   \
        static constexpr auto expand = &expand_##S; \
    };
FOR_EACH_DTYPE(KERNELS)

template <typename T>
static void run(bool expand, u64 n0, u64 rank, Dims6 dims, unsigned mask, u64 count, float scale,
                u64 chunks, const std::string& dir) {
    using K = Kernels<T>;
    // The input's size: every dim for a sum, the dims off the mask for an expand.
    u64 n_in = 1;
    for (int k = 0; k < 6; k++)
        if (!expand || !((mask >> k) & 1)) n_in *= dims.d[k];
    const auto x = narrow<T>(read_f32(dir + "/x.f32", n_in));
    auto out = poisoned<T>(n0);
    if (expand)
        launch(grid(n0, 256), K::expand, x.data(), out.data(), n0, rank, dims, mask);
    else {
        auto partial = poisoned<float>(n0 * chunks);
        launch(grid(n0 * chunks, 256), K::sum_partial, x.data(), partial.data(), n0, rank, dims,
               mask, count, chunks);
        launch(grid(n0, 256), K::sum_finish, (const float*)partial.data(), out.data(), n0, chunks,
               scale);
    }
    write_out(dir, "out", out);
}

int main(int argc, char** argv) {
    std::string kind = argc > 2 ? argv[2] : "";
    bool expand = kind == "expand";
    if (!(kind == "sum" && argc == 16) && !(expand && argc == 13)) {
        std::fprintf(stderr, "usage: reduce DTYPE sum N0 RANK D0..D5 MASK COUNT SCALE CHUNKS DIR\n"
                             "       reduce DTYPE expand N0 RANK D0..D5 MASK DIR\n");
        return 2;
    }
    u64 n0 = arg_u64(argv[3]), rank = arg_u64(argv[4]);
    Dims6 dims;
    for (int k = 0; k < 6; k++) dims.d[k] = arg_u64(argv[5 + k]);
    unsigned mask = (unsigned)arg_u64(argv[11]);
    u64 count = expand ? 0 : arg_u64(argv[12]);
    float scale = expand ? 0.0f : arg_f32(argv[13]);
    u64 chunks = expand ? 0 : arg_u64(argv[14]);
    std::string dir = argv[argc - 1];
    bool ok = with_dtype(argv[1], [&](auto tag) {
        run<decltype(tag)>(expand, n0, rank, dims, mask, count, scale, chunks, dir);
    });
    return ok ? 0 : 2;
}
