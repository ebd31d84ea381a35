// CPU translation unit of the native post-processing library (libmuse_native_cpu.so): serial loops over the shared
// logic in muse_post.h. It exists to run that logic where the tests run (the numba kernels stay the CPU default).
#include <algorithm>
#include <cstring>
#include <vector>

#include "muse_native.h"
#include "muse_post.h"

namespace {

constexpr int kInvalidArgument = MUSE_INVALID_ARGUMENT;

struct Candidate {
    float score;
    int64_t index;  // raster index in the map
};

// Peaks of one map into its rows of the outputs; returns the number of candidates (kept + dropped by the cap).
int64_t peaks_of_image(const float* img, int64_t h, int64_t w, muse::PeakParams p, int32_t max_points, int32_t* yx,
                       float* scores, std::vector<Candidate>& cand) {
    cand.clear();
    const auto [lo, hi] = std::minmax_element(img, img + h * w);
    if (!(*hi > *lo)) return 0;  // a constant map has no peak
    for (int64_t y = 0; y < h; ++y) {
        for (int64_t x = 0; x < w; ++x) {
            if (muse::is_peak(img, h, w, y, x, p)) cand.push_back({img[y * w + x], y * w + x});
        }
    }
    std::stable_sort(cand.begin(), cand.end(), [](const Candidate& a, const Candidate& b) {
        return muse::ranks_before(a.score, a.index, b.score, b.index);
    });
    const int64_t kept = std::min<int64_t>(static_cast<int64_t>(cand.size()), std::max(max_points, 0));
    for (int64_t k = 0; k < kept; ++k) {
        yx[2 * k] = static_cast<int32_t>(cand[k].index / w);
        yx[2 * k + 1] = static_cast<int32_t>(cand[k].index % w);
        scores[k] = cand[k].score;
    }
    return static_cast<int64_t>(cand.size());
}

int64_t valid_rows(const int32_t* counts, int64_t i, int64_t k) {
    return counts ? std::min<int64_t>(std::max<int64_t>(counts[i], 0), k) : k;
}

// Bilinear corners of the first ``n`` points of one image; returns n.
int64_t corners_of_image(const float* xy, int64_t n, int64_t h, int64_t w, float in_h, float in_w,
                         std::vector<muse::Bilinear>& s) {
    for (int64_t p = 0; p < n; ++p) s[p] = muse::bilinear(xy[2 * p], xy[2 * p + 1], h, w, in_h, in_w);
    return n;
}

template <typename T>
int gather(const T* fmap, const int64_t* strides, int64_t b, int64_t c, int64_t h, int64_t w, const float* xy, int64_t k,
           const int32_t* counts, float in_h, float in_w, float* out) {
    if (b < 0 || c < 0 || h < 0 || w < 0 || k < 0 || !strides) return kInvalidArgument;
    const muse::Strides4 st{strides[0], strides[1], strides[2], strides[3]};
    if (b * k * c > 0) std::memset(out, 0, sizeof(float) * static_cast<size_t>(b * k * c));
    std::vector<muse::Bilinear> s(static_cast<size_t>(k));
    std::vector<int64_t> off(static_cast<size_t>(4 * k));
    for (int64_t i = 0; i < b; ++i) {
        const int64_t n = corners_of_image(xy + i * k * 2, valid_rows(counts, i, k), h, w, in_h, in_w, s);
        for (int64_t p = 0; p < n; ++p) muse::corner_offsets(s[p], w, st, &off[4 * p]);
        const T* image = fmap + i * st.b;
        float* rows = out + i * k * c;
        if (st.c <= st.x) {  // channels-last: the channels of a corner are adjacent
            for (int64_t p = 0; p < n; ++p) {
                for (int64_t ch = 0; ch < c; ++ch) {
                    rows[p * c + ch] = muse::gather_one(image + ch * st.c, s[p], &off[4 * p]);
                }
            }
        } else {  // planar: one channel plane at a time stays in cache
            for (int64_t ch = 0; ch < c; ++ch) {
                for (int64_t p = 0; p < n; ++p) {
                    rows[p * c + ch] = muse::gather_one(image + ch * st.c, s[p], &off[4 * p]);
                }
            }
        }
    }
    return 0;
}

}  // namespace

extern "C" {

int muse_native_abi_version(void) { return MUSE_NATIVE_ABI_VERSION; }

const char* muse_native_error(int code) {
    switch (code) {
        case MUSE_INVALID_ARGUMENT:
            return "invalid argument (negative size or null pointer)";
        case MUSE_BUFFER_TOO_SMALL:
            return "the output buffer is too small";
        case MUSE_CLASS_OUT_OF_RANGE:
            return "a class id outside the class list";
        default:
            return "unknown error";
    }
}

int muse_peaks_cpu(const float* heat, int64_t b, int64_t h, int64_t w, float threshold, int32_t radius,
                   int32_t border, int32_t max_points, int32_t* yx, float* scores, int32_t* counts,
                   int32_t* overflow) {
    if (b < 0 || h < 0 || w < 0 || radius < 0 || (b > 0 && (!counts || !overflow || (max_points > 0 && !yx)))) {
        return kInvalidArgument;
    }
    const muse::PeakParams p{threshold, radius, std::max(border, 0)};
    const int64_t cap = std::max(max_points, 0);
    std::vector<Candidate> cand;
    for (int64_t i = 0; i < b; ++i) {
        const int64_t total =
            h * w > 0 ? peaks_of_image(heat + i * h * w, h, w, p, max_points, yx + i * cap * 2, scores + i * cap, cand)
                  : 0;
        counts[i] = static_cast<int32_t>(std::min(total, cap));
        overflow[i] = static_cast<int32_t>(total - counts[i]);
    }
    return 0;
}

int muse_gather_cpu(const float* fmap, const int64_t* strides, int64_t b, int64_t c, int64_t h, int64_t w,
                    const float* xy, int64_t k, const int32_t* counts, float in_h, float in_w, float* out) {
    return gather(fmap, strides, b, c, h, w, xy, k, counts, in_h, in_w, out);
}

int muse_gather_bf16_cpu(const uint16_t* fmap, const int64_t* strides, int64_t b, int64_t c, int64_t h, int64_t w,
                         const float* xy, int64_t k, const int32_t* counts, float in_h, float in_w, float* out) {
    return gather(fmap, strides, b, c, h, w, xy, k, counts, in_h, in_w, out);
}

int muse_gather_backward_cpu(const float* grad_out, int64_t b, int64_t c, int64_t h, int64_t w, const float* xy,
                             int64_t k, const int32_t* counts, float in_h, float in_w, float* grad_fmap) {
    if (b < 0 || c < 0 || h < 0 || w < 0 || k < 0) return kInvalidArgument;
    if (b * c * h * w > 0) std::memset(grad_fmap, 0, sizeof(float) * static_cast<size_t>(b * c * h * w));
    std::vector<muse::Bilinear> s(static_cast<size_t>(k));
    for (int64_t i = 0; i < b; ++i) {
        const int64_t n = corners_of_image(xy + i * k * 2, valid_rows(counts, i, k), h, w, in_h, in_w, s);
        for (int64_t ch = 0; ch < c; ++ch) {  // one plane at a time
            float* plane = grad_fmap + (i * c + ch) * h * w;
            for (int64_t p = 0; p < n; ++p) {
                const float g = grad_out[(i * k + p) * c + ch];
                for (int j = 0; j < 4; ++j) {
                    if (s[p].idx[j] >= 0) plane[s[p].idx[j]] += g * s[p].wt[j];
                }
            }
        }
    }
    return 0;
}

int muse_decode_cpu(const float* heat, const float* offsets, const float* fmap, int64_t b, int64_t d, int64_t h,
                    int64_t w, float threshold, int32_t radius, int32_t border, int32_t max_points, float stride,
                    float in_h, float in_w, float* xy, float* scores, int32_t* counts, int32_t* overflow,
                    float* feats) {
    const int64_t cap = std::max(max_points, 0);
    std::vector<int32_t> yx(static_cast<size_t>(std::max<int64_t>(b * cap * 2, 1)));
    std::fill(xy, xy + b * cap * 2, 0.0f);
    std::fill(scores, scores + b * cap, 0.0f);
    const int rc = muse_peaks_cpu(heat, b, h, w, threshold, radius, border, max_points, yx.data(), scores, counts,
                                  overflow);
    if (rc) return rc;
    for (int64_t i = 0; i < b; ++i) {
        for (int64_t k = 0; k < counts[i]; ++k) {
            const int64_t row = yx[(i * cap + k) * 2], col = yx[(i * cap + k) * 2 + 1];
            const float* off = offsets + i * 2 * h * w + row * w + col;
            muse::decode_xy(row, col, off[0], off[h * w], stride, xy + (i * cap + k) * 2);
        }
    }
    const int64_t strides[4] = {d * h * w, h * w, w, 1};
    return muse_gather_cpu(fmap, strides, b, d, h, w, xy, cap, counts, in_h, in_w, feats);
}

}  // extern "C"
