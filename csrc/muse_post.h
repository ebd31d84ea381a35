// Post-processing logic written once for the CPU (cpu.cpp) and the GPU (cuda.cu): the peak test, the ranking order,
// the bilinear point gather and the sub-cell decode of a peak. Semantics are those of the PyTorch references,
// kernels/peaks/reference.py and kernels/point_gather/reference.py (the oracles the tests compare with).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define MUSE_HD __host__ __device__ __forceinline__
#else
#define MUSE_HD inline
#endif

namespace muse {

struct PeakParams {
    float threshold;  // strict: a peak is > threshold
    int32_t radius;   // the window is (2r+1) x (2r+1), clipped at the map's edges
    int32_t border;   // peaks closer than this to an edge are dropped (0 keeps border peaks)
};

// A local maximum of ``img [h, w]`` at (y, x): above the threshold, no larger value in its window and no equal
// value earlier in raster order (the tie rule: the first pixel of a plateau wins). The caller rules out constant
// maps, which have no peak.
MUSE_HD bool is_peak(const float* img, int64_t h, int64_t w, int64_t y, int64_t x, PeakParams p) {
    if (y < p.border || y >= h - p.border || x < p.border || x >= w - p.border) return false;
    const float v = img[y * w + x];
    if (!(v > p.threshold)) return false;
    for (int32_t dy = -p.radius; dy <= p.radius; ++dy) {
        const int64_t ny = y + dy;
        if (ny < 0 || ny >= h) continue;
        for (int32_t dx = -p.radius; dx <= p.radius; ++dx) {
            const int64_t nx = x + dx;
            if (nx < 0 || nx >= w || (dy == 0 && dx == 0)) continue;
            const float nv = img[ny * w + nx];
            if (nv > v || (nv == v && (dy < 0 || (dy == 0 && dx < 0)))) return false;
        }
    }
    return true;
}

// Output order of two peaks: higher score first, equal scores in raster order.
MUSE_HD bool ranks_before(float score_a, int64_t index_a, float score_b, int64_t index_b) {
    return score_a > score_b || (score_a == score_b && index_a < index_b);
}

// Four corners of a bilinear sample: flat offsets into an h x w plane (-1 outside the map) and their weights.
struct Bilinear {
    int64_t idx[4];
    float wt[4];
};

// The official convention (grid_sample, align_corners=True): input pixel x lands on feature column
// x * (w - 1) / in_w. Corners outside the map count as zeros.
MUSE_HD Bilinear bilinear(float x, float y, int64_t h, int64_t w, float in_h, float in_w) {
    Bilinear b;
    const float fx = x * static_cast<float>(w - 1) / in_w;
    const float fy = y * static_cast<float>(h - 1) / in_h;
    const float x0f = floorf(fx), y0f = floorf(fy);
    // also catches NaN; a point this far out has no corner inside, and the casts below stay in range
    const bool near = x0f >= -1.0f && x0f <= static_cast<float>(w - 1) && y0f >= -1.0f &&
                      y0f <= static_cast<float>(h - 1);
    const int64_t x0 = near ? static_cast<int64_t>(x0f) : -2, y0 = near ? static_cast<int64_t>(y0f) : -2;
    const float ax = fx - x0f, ay = fy - y0f;
    for (int j = 0; j < 4; ++j) {
        const int64_t yy = y0 + j / 2, xx = x0 + j % 2;
        const bool inside = near && yy >= 0 && yy < h && xx >= 0 && xx < w;
        b.idx[j] = inside ? yy * w + xx : -1;
        b.wt[j] = (j / 2 ? ay : 1.0f - ay) * (j % 2 ? ax : 1.0f - ax);
    }
    return b;
}

// Strides (in elements) of a [B, C, H, W] feature map: any layout, e.g. contiguous or channels-last.
struct Strides4 {
    int64_t b, c, y, x;
};

// Element offsets of the four corners in a map with strides ``st`` (-1 for corners outside the map).
MUSE_HD void corner_offsets(const Bilinear& s, int64_t w, Strides4 st, int64_t* off) {
    for (int j = 0; j < 4; ++j) off[j] = s.idx[j] >= 0 ? (s.idx[j] / w) * st.y + (s.idx[j] % w) * st.x : -1;
}

// A map element as float: fp32 as it is, bf16 (its bits in a uint16_t) exactly.
MUSE_HD float to_float(float v) { return v; }
MUSE_HD float to_float(uint16_t bf16) {
    const uint32_t bits = static_cast<uint32_t>(bf16) << 16;
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

// The bilinear sum of one channel in fp32; ``plane`` points at (image, channel) of the map (float or bf16 bits),
// ``off`` from corner_offsets.
template <typename T>
MUSE_HD float gather_one(const T* plane, const Bilinear& s, const int64_t* off) {
    float acc = 0.0f;
    for (int j = 0; j < 4; ++j) {
        if (off[j] >= 0) acc += s.wt[j] * to_float(plane[off[j]]);
    }
    return acc;
}

// Input-pixel position of the peak at cell (row, col): stride * (cell + offset clamped to [0, 1]), as
// muse_fast/post/decode.py computes it.
MUSE_HD void decode_xy(int64_t row, int64_t col, float dx, float dy, float stride, float* xy) {
    xy[0] = stride * (static_cast<float>(col) + fminf(fmaxf(dx, 0.0f), 1.0f));
    xy[1] = stride * (static_cast<float>(row) + fminf(fmaxf(dy, 0.0f), 1.0f));
}

}  // namespace muse
