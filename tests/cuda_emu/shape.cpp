// Drives kernels/shape.cu on the CPU (see emu.h) for tests/cuda_emulated_ops.rs.
// usage: shape DTYPE transpose N DA MID DB INNER DIR
//   Op::Transpose: N elements, (DA, MID, DB, INNER) = transpose_view(shape, a, b);
//   reads DIR/x.f32 [N], writes DIR/out.f32 [N].
// usage: shape DTYPE split N DIR TOTAL WIDTH ROW OFFSET [TOTAL WIDTH ROW OFFSET ...]
//   Op::Split: one split_part launch per slice of slices(x's shape, parts, axis);
//   reads DIR/x.f32 [N], writes DIR/part<k>.f32 [TOTAL_k].
// usage: shape DTYPE concat N DIR TOTAL WIDTH ROW OFFSET [TOTAL WIDTH ROW OFFSET ...]
//   Op::Concat: one concat_part launch per slice of slices(out's shape, parts, axis);
//   reads DIR/part<k>.f32 [TOTAL_k], writes DIR/out.f32 [N].
#include "emu.h"

#include "common.cuh"
#include "shape.cu"

#include "driver.h"

template <typename T>
struct Kernels;
#define KERNELS(S, T)                                        \
    template <>                                              \
    struct Kernels<T> {                                      \
        static constexpr auto transpose = &transpose_##S;    \
        static constexpr auto split_part = &split_part_##S;  \
        static constexpr auto concat_part = &concat_part_##S; \
    };
FOR_EACH_DTYPE(KERNELS)

struct Slice {
    u64 total, width, row, offset;
};

template <typename T>
static void transpose(u64 n, u64 da, u64 mid, u64 db, u64 inner, const std::string& dir) {
    const auto x = narrow<T>(read_f32(dir + "/x.f32", n));
    auto out = poisoned<T>(n);
    launch(grid(n, 256), Kernels<T>::transpose, x.data(), out.data(), n, da, mid, db, inner);
    write_out(dir, "out", out);
}

template <typename T>
static void split(u64 n, const std::vector<Slice>& slices, const std::string& dir) {
    const auto x = narrow<T>(read_f32(dir + "/x.f32", n));
    for (size_t k = 0; k < slices.size(); k++) {
        const Slice& sl = slices[k];
        auto part = poisoned<T>(sl.total);
        launch(grid(sl.total, 256), Kernels<T>::split_part, x.data(), part.data(), sl.total, sl.width,
               sl.row, sl.offset);
        write_out(dir, ("part" + std::to_string(k)).c_str(), part);
    }
}

template <typename T>
static void concat(u64 n, const std::vector<Slice>& slices, const std::string& dir) {
    auto out = poisoned<T>(n);
    for (size_t k = 0; k < slices.size(); k++) {
        const Slice& sl = slices[k];
        const auto part =
            narrow<T>(read_f32(dir + "/part" + std::to_string(k) + ".f32", sl.total));
        launch(grid(sl.total, 256), Kernels<T>::concat_part, part.data(), out.data(), sl.total,
               sl.width, sl.row, sl.offset);
    }
    write_out(dir, "out", out);
}

int main(int argc, char** argv) {
    std::string kind = argc > 2 ? argv[2] : "";
    bool ok = false;
    if (kind == "transpose" && argc == 9) {
        u64 n = arg_u64(argv[3]), da = arg_u64(argv[4]), mid = arg_u64(argv[5]);
        u64 db = arg_u64(argv[6]), inner = arg_u64(argv[7]);
        std::string dir = argv[8];
        ok = with_dtype(argv[1], [&](auto tag) {
            transpose<decltype(tag)>(n, da, mid, db, inner, dir);
        });
    } else if ((kind == "split" || kind == "concat") && argc >= 9 && (argc - 5) % 4 == 0) {
        u64 n = arg_u64(argv[3]);
        std::string dir = argv[4];
        std::vector<Slice> slices;
        for (int i = 5; i < argc; i += 4)
            slices.push_back(Slice{arg_u64(argv[i]), arg_u64(argv[i + 1]), arg_u64(argv[i + 2]),
                                   arg_u64(argv[i + 3])});
        ok = with_dtype(argv[1], [&](auto tag) {
            if (kind == "split") split<decltype(tag)>(n, slices, dir);
            else concat<decltype(tag)>(n, slices, dir);
        });
    } else {
        std::fprintf(stderr, "usage: shape DTYPE transpose N DA MID DB INNER DIR\n"
                             "       shape DTYPE split|concat N DIR (TOTAL WIDTH ROW OFFSET)...\n");
        return 2;
    }
    return ok ? 0 : 2;
}
