// Runs CUDA kernels from kernels/ on the CPU, for tests on machines without a
// GPU. Each thread of a block is a fiber (ucontext); blocks run one after the
// other, so `__shared__` can be a function-local static. Barriers count
// arrivals: `__syncthreads()` waits for the block, warp shuffles and the
// warp-wide instructions for the 32 threads of the warp, switching fibers
// while they wait.
// Warp-wide instructions (mma.sync, ldmatrix) gather what each lane holds
// through a per-warp exchange and hand each lane only its own registers, with
// the layouts the PTX ISA documents.
#pragma once
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
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
// An arrival-counting barrier: the last thread to arrive opens it.
struct Barrier {
    unsigned arrived = 0, generation = 0;
};

struct Fiber {
    ucontext_t ctx;
    std::vector<char> stack;
    unsigned tid = 0;
    bool done = false;
    // Which of the two exchange slots this lane's next warp-wide instruction
    // uses; every lane of a warp runs the same instructions, so they agree.
    unsigned slot = 0;
    // The barrier it waits on, until that barrier's generation moves past `gen`.
    const Barrier* waiting = nullptr;
    unsigned gen = 0;
};
inline dim3 block_idx, block_dim, grid_dim;
inline Fiber* current = nullptr;
inline ucontext_t scheduler;
inline std::function<void()> body;
inline float exchange[1024];

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
    current->waiting = &b;
    current->gen = g;
    yield();
    current->waiting = nullptr;
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
                    f.slot = 0;
                    if (f.stack.empty()) f.stack.resize(1 << 16);
                    getcontext(&f.ctx);
                    f.ctx.uc_stack.ss_sp = f.stack.data();
                    f.ctx.uc_stack.ss_size = f.stack.size();
                    f.ctx.uc_link = &scheduler;
                    makecontext(&f.ctx, entry, 0);
                }
                // Always the lowest-numbered thread that can run: a warp runs as
                // far ahead of the next as the barriers let it, so a missing
                // __syncthreads lets it overwrite shared memory that a later
                // warp still reads, or read what one has not written yet, and
                // the results show it.
                for (;;) {
                    Fiber* next = nullptr;
                    bool live = false;
                    for (Fiber& f : fibers) {
                        if (f.done) continue;
                        live = true;
                        if (!f.waiting || f.waiting->generation != f.gen) {
                            next = &f;
                            break;
                        }
                    }
                    if (!live) break;
                    if (!next) {
                        std::fprintf(stderr, "emu: every live thread waits on a barrier\n");
                        std::abort();
                    }
                    current = next;
                    swapcontext(&scheduler, &next->ctx);
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

inline unsigned short __half_as_ushort(__half h) {
    unsigned short u;
    std::memcpy(&u, &h, 2);
    return u;
}
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.bits; }

namespace emu {
// What a lane contributes to a warp-wide instruction. Two slots: a lane
// writes slot k, meets the warp at the barrier, reads the others' slot k; the
// next instruction uses slot k ^ 1, and slot k is written again only after
// the barrier of that one, which every lane reaches after its reads.
struct Lane {
    unsigned r[6];
    const void* p;
};
inline Lane lanes[2][1024];
inline Lane& my_lane() { return lanes[current->slot][current->tid]; }
// The warp's 32 contributions, once every lane has written its own.
inline const Lane* warp_lanes() {
    sync_warp();
    const Lane* w = &lanes[current->slot][current->tid & ~31u];
    current->slot ^= 1;
    return w;
}
inline float b16_float(unsigned r, unsigned hi, __half) {
    __half h;
    unsigned short u = (unsigned short)(hi ? r >> 16 : r & 0xffff);
    std::memcpy(&h, &u, 2);
    return __half2float(h);
}
inline float b16_float(unsigned r, unsigned hi, __nv_bfloat16) {
    return __bfloat162float(__nv_bfloat16{(uint16_t)(hi ? r >> 16 : r & 0xffff)});
}
inline unsigned short b16_at(const void* row, unsigned col) {
    unsigned short u;
    std::memcpy(&u, (const char*)row + 2 * col, 2);
    return u;
}
} // namespace emu

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}: d (16×8) += a (16×16) ·
// b (16×8), f32 accumulation, fragments as in the PTX ISA: lane l, g = l / 4,
// q = l % 4 holds A rows g, g+8 × cols 2q, 2q+1 (regs 0, 1) and 2q+8, 2q+9
// (regs 2, 3); B rows 2q, 2q+1 (reg 0), 2q+8, 2q+9 (reg 1) of col g; C/D row g
// (d0, d1), g+8 (d2, d3) × cols 2q, 2q+1. Each product is exact in f32; the
// sum runs over k in order.
template <class T>
inline void mma_16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    emu::Lane& me = emu::my_lane();
    for (int k = 0; k < 4; k++) me.r[k] = a[k];
    me.r[4] = b0;
    me.r[5] = b1;
    const emu::Lane* w = emu::warp_lanes();
    unsigned l = emu::current->tid % 32, g = l / 4, q = l % 4;
    for (int e = 0; e < 4; e++) {
        unsigned row = g + 8 * (e / 2), col = 2 * q + e % 2;
        float s = d[e];
        for (unsigned k = 0; k < 16; k++) {
            const emu::Lane& la = w[(row % 8) * 4 + (k % 8) / 2];
            float x = emu::b16_float(la.r[(row >= 8) + 2 * (k >= 8)], k % 2, T{});
            const emu::Lane& lb = w[col * 4 + (k % 8) / 2];
            s += x * emu::b16_float(lb.r[4 + (k >= 8)], k % 2, T{});
        }
        d[e] = s;
    }
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lane l gives the address
// of row l % 8 of matrix l / 8 (8 contiguous b16); reg j of lane l gets matrix
// j's row l / 4, cols 2(l % 4), 2(l % 4) + 1, or with .trans its rows
// 2(l % 4), 2(l % 4) + 1 of col l / 4; the first element in the lower half.
inline void ldmatrix_x4(unsigned (&r)[4], const void* p, bool trans) {
    emu::my_lane().p = p;
    const emu::Lane* w = emu::warp_lanes();
    unsigned l = emu::current->tid % 32;
    for (int j = 0; j < 4; j++) {
        unsigned lo, hi;
        if (trans) {
            lo = emu::b16_at(w[8 * j + 2 * (l % 4)].p, l / 4);
            hi = emu::b16_at(w[8 * j + 2 * (l % 4) + 1].p, l / 4);
        } else {
            lo = emu::b16_at(w[8 * j + l / 4].p, 2 * (l % 4));
            hi = emu::b16_at(w[8 * j + l / 4].p, 2 * (l % 4) + 1);
        }
        r[j] = lo | hi << 16;
    }
    // The next warp-wide instruction's barrier keeps the rows until all read.
}
inline void ldsm_x4(unsigned (&r)[4], const void* p) { ldmatrix_x4(r, p, false); }
inline void ldsm_x4_t(unsigned (&r)[4], const void* p) { ldmatrix_x4(r, p, true); }

// cp.async of 16 bytes: done at once, so commit and wait have nothing to do.
inline void cp_async16(void* dst, const void* src) { std::memcpy(dst, src, 16); }
inline void cp_async_commit() {}
template <int N>
inline void cp_async_wait() {}

// A 32-bit store of two packed b16 elements.
template <class T>
inline void st_pair(T* p, unsigned v) {
    std::memcpy(p, &v, 4);
}
