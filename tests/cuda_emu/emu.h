// Runs CUDA kernels from kernels/ on the CPU, for tests on machines without a
// GPU. Each thread of a block is a fiber (ucontext); blocks run one after the
// other, so `__shared__` can be a function-local static. `__syncthreads()`
// switches to the next fiber; a round over all fibers completes the barrier.
// Warp shuffles go through a block-wide exchange, which is correct for the
// kernels that call them with every thread of the block (ours do).
#pragma once
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#define HEADROOM_CUDA_EMULATION 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

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

inline dim3 thread_idx() {
    dim3 d;
    d.x = current->tid;
    return d;
}
inline void yield() { swapcontext(&current->ctx, &scheduler); }
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

inline void __syncthreads() { emu::yield(); }

inline float __shfl_xor_sync(unsigned, float v, int mask) {
    unsigned t = emu::current->tid;
    emu::exchange[t] = v;
    emu::yield();
    float r = emu::exchange[t ^ (unsigned)mask];
    emu::yield();
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
