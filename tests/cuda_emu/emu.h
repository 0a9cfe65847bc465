// Runs CUDA kernels from kernels/ on the CPU, for tests on machines without a
// GPU. Each thread of a block is a fiber (ucontext); blocks run one after the
// other, so `__shared__` can be a function-local static. Barriers count
// arrivals: `__syncthreads()` waits for the block, warp shuffles and WMMA
// stores for the 32 threads of the warp, switching fibers while they wait.
// WMMA fragments hold the whole 16×16 tile in every thread (the hardware
// spreads it over the warp; its layout is opaque to kernels anyway), so each
// thread computes the warp's product and stores the same values.
#pragma once
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>
#include <vector>

#define HEADROOM_CUDA_EMULATION 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

namespace emu {
struct Fiber {
    ucontext_t ctx;
    std::vector<char> stack;
    unsigned tid = 0;
    bool done = false;
};
inline dim3 block_idx, block_dim, grid_dim;
inline Fiber* current = nullptr;
inline ucontext_t scheduler;
inline std::function<void()> body;
inline float exchange[1024];

// An arrival-counting barrier: the last thread to arrive opens it.
struct Barrier {
    unsigned arrived = 0, generation = 0;
};
inline Barrier block_barrier;
inline Barrier warp_barriers[32];

inline dim3 thread_idx() {
    dim3 d;
    d.x = current->tid;
    return d;
}
inline void yield() { swapcontext(&current->ctx, &scheduler); }

inline void wait(Barrier& b, unsigned count) {
    unsigned g = b.generation;
    if (++b.arrived == count) {
        b.arrived = 0;
        b.generation++;
        return;
    }
    while (b.generation == g) yield();
}
inline void sync_block() { wait(block_barrier, block_dim.x); }
inline void sync_warp() {
    unsigned w = current->tid / 32, first = w * 32;
    unsigned n = block_dim.x - first < 32 ? block_dim.x - first : 32;
    wait(warp_barriers[w], n);
}
inline void entry() {
    body();
    current->done = true;
}

// Launches `kernel(args...)` over a 1-D block of threads and a 3-D grid.
template <class K, class... A>
void launch(dim3 grid, unsigned threads, K kernel, A... args) {
    grid_dim = grid;
    block_dim = dim3{threads, 1, 1};
    body = [&] { kernel(args...); };
    std::vector<Fiber> fibers(threads);
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                block_idx = dim3{x, y, z};
                for (unsigned t = 0; t < threads; t++) {
                    Fiber& f = fibers[t];
                    f.tid = t;
                    f.done = false;
                    if (f.stack.empty()) f.stack.resize(1 << 16);
                    getcontext(&f.ctx);
                    f.ctx.uc_stack.ss_sp = f.stack.data();
                    f.ctx.uc_stack.ss_size = f.stack.size();
                    f.ctx.uc_link = &scheduler;
                    makecontext(&f.ctx, entry, 0);
                }
                for (bool live = true; live;) {
                    live = false;
                    for (Fiber& f : fibers)
                        if (!f.done) {
                            current = &f;
                            swapcontext(&scheduler, &f.ctx);
                            live = live || !f.done;
                        }
                }
            }
}
} // namespace emu

#define threadIdx (emu::thread_idx())
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)

inline void __syncthreads() { emu::sync_block(); }
inline void __syncwarp() { emu::sync_warp(); }

inline float __shfl_xor_sync(unsigned, float v, int mask) {
    unsigned t = emu::current->tid;
    emu::exchange[t] = v;
    emu::sync_warp();
    float r = emu::exchange[t ^ (unsigned)mask];
    emu::sync_warp();
    return r;
}

inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}

// Storage types with CUDA's round-to-nearest-even conversions.
struct __half {
    _Float16 v;
};
inline float __half2float(__half h) { return (float)h.v; }
inline __half __float2half_rn(float f) { return __half{(_Float16)f}; }

struct __nv_bfloat16 {
    uint16_t bits;
};
inline float __bfloat162float(__nv_bfloat16 b) {
    uint32_t u = (uint32_t)b.bits << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if (std::isnan(f)) return __nv_bfloat16{(uint16_t)((u >> 16) | 0x40)};
    u += 0x7fff + ((u >> 16) & 1);
    return __nv_bfloat16{(uint16_t)(u >> 16)};
}

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

// nvcuda::wmma for 16×16×16 tiles: f16/bf16 operands, f32 accumulators.
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
    float v[16][16]; // [row][col] of the tile, whatever the memory layout
};

template <class Use, class T, class L>
inline void fill_fragment(fragment<Use, 16, 16, 16, T, L>& f, float x) {
    for (auto& r : f.v)
        for (float& e : r) e = x;
}

// Operands: row_major reads p[r * ldm + c], col_major p[c * ldm + r].
template <class Use, class T, class L>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, L>& f, const T* p, unsigned ldm) {
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) {
            unsigned long long i = std::is_same<L, row_major>::value ? (unsigned long long)r * ldm + c
                                                                     : (unsigned long long)c * ldm + r;
            f.v[r][c] = ld(p, i);
        }
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p,
                             unsigned ldm, layout_t l) {
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++)
            f.v[r][c] = p[l == mem_row_major ? (unsigned long long)r * ldm + c : (unsigned long long)c * ldm + r];
}

template <class T, class LA, class LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d,
                     const fragment<matrix_a, 16, 16, 16, T, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, T, LB>& b,
                     const fragment<accumulator, 16, 16, 16, float>& c) {
    fragment<accumulator, 16, 16, 16, float> r;
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            float s = c.v[i][j];
            for (int k = 0; k < 16; k++) s += a.v[i][k] * b.v[k][j];
            r.v[i][j] = s;
        }
    d = r;
}

// Every lane of the warp loads (and multiplies) before any lane stores, as on
// the hardware, where the whole warp takes part in each call.
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f,
                              unsigned ldm, layout_t l) {
    emu::sync_warp();
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++)
            p[l == mem_row_major ? (unsigned long long)r * ldm + c : (unsigned long long)c * ldm + r] = f.v[r][c];
}
} // namespace wmma
} // namespace nvcuda
