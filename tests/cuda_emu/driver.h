// Shared by every driver in tests/cuda_emu/: f32/i32 files and storage
// rounding; the launches themselves come from the host's plans (replay.h).
// Include it after emu.h, common.cuh and the kernel file.
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
