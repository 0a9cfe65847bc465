// Shared by every driver in tests/cuda_emu/: f32/i32 files, storage
// rounding, and the launch shapes of src/backend/cuda/launch.rs. Include it after
// emu.h, common.cuh and the kernel file.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

template <typename V>
inline std::vector<V> read_raw(const std::string& path, size_t n) {
    std::vector<V> v(n);
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f || std::fread(v.data(), sizeof(V), n, f) != n) {
        std::fprintf(stderr, "cannot read %zu values from %s\n", n, path.c_str());
        std::exit(2);
    }
    std::fclose(f);
    return v;
}

// Little-endian f32 and i32 files, as the test writes them.
inline std::vector<float> read_f32(const std::string& path, size_t n) {
    return read_raw<float>(path, n);
}
inline std::vector<int> read_i32(const std::string& path, size_t n) {
    return read_raw<int>(path, n);
}

inline void write_f32(const std::string& path, const std::vector<float>& v) {
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f || std::fwrite(v.data(), 4, v.size(), f) != v.size()) {
        std::fprintf(stderr, "cannot write %s\n", path.c_str());
        std::exit(2);
    }
    std::fclose(f);
}

// Rounded to the storage type on the way in, as a device upload would be.
template <typename T>
std::vector<T> narrow(const std::vector<float>& v) {
    std::vector<T> r(v.size());
    for (size_t i = 0; i < v.size(); i++) st(r.data(), i, v[i]);
    return r;
}

template <typename T>
std::vector<float> widen(const std::vector<T>& v) {
    std::vector<float> r(v.size());
    for (size_t i = 0; i < v.size(); i++) r[i] = ld(v.data(), i);
    return r;
}

// An output buffer: NaN until a kernel writes it, so a missed element shows.
template <typename T>
std::vector<T> poisoned(size_t n) {
    std::vector<T> r(n);
    for (size_t i = 0; i < n; i++) st(r.data(), i, NAN);
    return r;
}

template <typename T>
void write_out(const std::string& dir, const char* name, const std::vector<T>& v) {
    write_f32(dir + "/" + name + ".f32", widen(v));
}

// The LaunchConfig helpers of src/backend/cuda/launch.rs.
struct Launch {
    dim3 grid;
    unsigned block;
};
// grid(n, block): ceil(n / block) blocks (at least one) of `block` threads.
inline Launch grid(u64 n, unsigned block) {
    u64 blocks = (n + block - 1) / block;
    return Launch{dim3{(unsigned)(blocks > 1 ? blocks : 1), 1, 1}, block};
}
// rows(n): one block of 256 threads per row (at least one block).
inline Launch rows(u64 n) { return Launch{dim3{(unsigned)(n > 1 ? n : 1), 1, 1}, 256}; }

template <class K, class... A>
void launch(Launch cfg, K kernel, A... args) {
    emu::launch(cfg.grid, cfg.block, kernel, args...);
}

inline u64 arg_u64(const char* s) { return std::strtoull(s, 0, 10); }
inline float arg_f32(const char* s) { return std::strtof(s, 0); }

// Calls f(T{}) with T the storage type named `dt` (f32, f16, bf16); false
// for any other name.
template <class F>
bool with_dtype(const std::string& dt, F f) {
    if (dt == "f32") f(float{});
    else if (dt == "f16") f(__half{});
    else if (dt == "bf16") f(__nv_bfloat16{});
    else return false;
    return true;
}
