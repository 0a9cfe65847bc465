// Drives kernels/embedding.cu on the CPU (see emu.h) for tests/cuda_emulated_ops.rs.
// usage: embedding DTYPE N C VOCAB RANGES DIR
//   reads  DIR/ids.i32 [N], DIR/table.f32 [VOCAB, C], DIR/dy.f32 [N, C];
//   writes DIR/out.f32 [N, C] (Op::Embedding) and DIR/dtable.f32 [VOCAB, C]
//   (Op::EmbeddingBackward on ids and dy), launched as CudaBackend::run does.
#include "emu.h"

#include "common.cuh"
#include "embedding.cu"

#include "driver.h"

template <typename T>
struct Kernels;
#define KERNELS(S, T)                                             \
    template <>                                                   \
    struct Kernels<T> {                                           \
        static constexpr auto forward = &embedding_forward_##S;   \
        static constexpr auto backward = &embedding_backward_##S; \
    };
FOR_EACH_DTYPE(KERNELS)

template <typename T>
static void run(u64 n, u64 c, u64 vocab, u64 ranges, const std::string& dir) {
    using K = Kernels<T>;
    const auto ids = read_i32(dir + "/ids.i32", n);
    const auto table = narrow<T>(read_f32(dir + "/table.f32", vocab * c));
    const auto dy = narrow<T>(read_f32(dir + "/dy.f32", n * c));

    // Op::Embedding: ins ids, table; outs out.
    auto out = poisoned<T>(n * c);
    launch(grid(n * c, 256), K::forward, ids.data(), table.data(), out.data(), n, c, vocab);
    // Op::EmbeddingBackward { vocab }: ins ids, dy; outs dtable.
    auto dtable = poisoned<T>(vocab * c);
    // RANGES: embedding_ranges(vocab), one thread per (column, range).
    launch(grid(c * ranges, 256), K::backward, ids.data(), dy.data(), dtable.data(), n, c, vocab,
           ranges);

    write_out(dir, "out", out);
    write_out(dir, "dtable", dtable);
}

int main(int argc, char** argv) {
    if (argc != 7) {
        std::fprintf(stderr, "usage: embedding DTYPE N C VOCAB RANGES DIR\n");
        return 2;
    }
    u64 n = arg_u64(argv[2]), c = arg_u64(argv[3]), vocab = arg_u64(argv[4]);
    u64 ranges = arg_u64(argv[5]);
    std::string dir = argv[6];
    bool ok = with_dtype(argv[1], [&](auto tag) { run<decltype(tag)>(n, c, vocab, ranges, dir); });
    return ok ? 0 : 2;
}
