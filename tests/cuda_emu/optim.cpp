// Drives kernels/optim.cu on the CPU (see emu.h) for tests/cuda_emulated.rs.
// usage: optim DIR N1 [N2 ...]   (one f32 tensor per size)
//   reads  DIR/{p,g,m,v}.f32, the tensors concatenated;
//   writes DIR/partial.f32 (sum_squares_multi over g: 64 partials per tensor)
//   and DIR/{p,m,v}_out.f32 after one adamw_multi_f32 step with the settings
//   below (weight decay on the first tensor only).
#include "emu.h"

#include "common.cuh"
#include "optim.cu"

#include "driver.h"

int main(int argc, char** argv) {
    if (argc < 3) return 2;
    std::string dir = argv[1];
    std::vector<u64> sizes;
    u64 total = 0;
    for (int i = 2; i < argc; i++) {
        sizes.push_back(std::strtoull(argv[i], 0, 10));
        total += sizes.back();
    }
    auto p = read_f32(dir + "/p.f32", total), g = read_f32(dir + "/g.f32", total);
    auto m = read_f32(dir + "/m.f32", total), v = read_f32(dir + "/v.f32", total);

    std::vector<SumSlot> sums;
    std::vector<AdamSlot> adam;
    const float lr = 1e-2f, wd = 0.1f;
    u64 at = 0;
    for (size_t k = 0; k < sizes.size(); k++) {
        sums.push_back(SumSlot{(u64)(g.data() + at), sizes[k]});
        AdamSlot a{(u64)(p.data() + at), (u64)(g.data() + at), (u64)(m.data() + at),
                   (u64)(v.data() + at), sizes[k], k == 0 ? 1.0f - lr * wd : 1.0f, 0.0f};
        adam.push_back(a);
        at += sizes[k];
    }
    const unsigned blocks = 64;
    std::vector<float> partial(blocks * sizes.size());
    emu::launch(dim3{blocks, (unsigned)sizes.size(), 1}, 256, sum_squares_multi_f32,
                (const SumSlot*)sums.data(), partial.data());
    write_f32(dir + "/partial.f32", partial);

    // Step t = 3: bias corrections 1 − β^3; gradients unscaled by 1/2.
    const float b1 = 0.9f, b2 = 0.95f, eps = 1e-8f;
    float bc1 = 1.0f - b1 * b1 * b1, bc2 = 1.0f - b2 * b2 * b2;
    emu::launch(dim3{4, (unsigned)sizes.size(), 1}, 256, adamw_multi_f32,
                (const AdamSlot*)adam.data(), lr, b1, b2, eps, bc1, bc2, 0.5f);
    write_f32(dir + "/p_out.f32", p);
    write_f32(dir + "/m_out.f32", m);
    write_f32(dir + "/v_out.f32", v);
    return 0;
}
