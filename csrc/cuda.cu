// CUDA translation unit of the native post-processing library (libmuse_native_cuda.so, and inside the TensorRT
// plugin): the shared logic of muse_post.h in four small kernels. Nothing here synchronizes the host.
//
// Peaks: one block per map finds its min and max (a constant map has no peak), then walks the map in raster order,
// writing the candidates densely through a ballot prefix sum, so they land in raster order (deterministic). A second
// kernel ranks each candidate by counting the candidates that come before it (score descending, ties in raster
// order) and writes it to that row if the row is under the cap: O(n^2) per map, which is small for tile-sized maps.
#include <cuda_runtime.h>

#include <climits>

#include "muse_native.h"
#include "muse_post.h"

namespace {

constexpr int kInvalidArgument = 1;
constexpr int kCudaErrorBase = 1000;  // error code = kCudaErrorBase + cudaError_t
constexpr int kScanThreads = 512;     // threads per map in the compaction kernel (a multiple of 32)
constexpr int kThreads = 256;

int launched() {
    const cudaError_t err = cudaGetLastError();
    return err == cudaSuccess ? 0 : kCudaErrorBase + static_cast<int>(err);
}

// Workspace of the peaks kernels: candidate raster indices and scores (one slot per pixel) and counts per map.
struct PeakWorkspace {
    int32_t* index;
    float* score;
    int32_t* total;
};

size_t align(size_t n) { return (n + 255) / 256 * 256; }

PeakWorkspace peak_workspace(void* base, int64_t b, int64_t h, int64_t w) {
    char* p = static_cast<char*>(base);
    const size_t slots = static_cast<size_t>(b * h * w);
    PeakWorkspace ws;
    ws.index = reinterpret_cast<int32_t*>(p);
    ws.score = reinterpret_cast<float*>(p + align(slots * sizeof(int32_t)));
    ws.total = reinterpret_cast<int32_t*>(p + 2 * align(slots * sizeof(int32_t)));
    return ws;
}

__global__ void compact_kernel(const float* heat, int64_t h, int64_t w, muse::PeakParams p, int32_t cap,
                               PeakWorkspace ws, int32_t* counts, int32_t* overflow) {
    __shared__ float lo_s[kScanThreads / 32], hi_s[kScanThreads / 32];
    __shared__ int32_t warp_offset[kScanThreads / 32];
    __shared__ int32_t chunk_total;
    const int64_t hw = h * w;
    const float* img = heat + blockIdx.x * hw;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
    float lo = hw ? img[0] : 0.0f, hi = lo;
    for (int64_t i = tid; i < hw; i += blockDim.x) {
        lo = fminf(lo, img[i]);
        hi = fmaxf(hi, img[i]);
    }
    for (int s = 16; s > 0; s >>= 1) {
        lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, s));
        hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, s));
    }
    if (lane == 0) lo_s[warp] = lo, hi_s[warp] = hi;
    __syncthreads();
    for (int i = 0; i < warps; ++i) lo = fminf(lo, lo_s[i]), hi = fmaxf(hi, hi_s[i]);
    const bool flat = !(hi > lo);
    int32_t* index = ws.index + blockIdx.x * hw;
    float* score = ws.score + blockIdx.x * hw;
    int32_t base = 0;
    for (int64_t start = 0; start < hw; start += blockDim.x) {
        const int64_t i = start + tid;
        const bool keep = !flat && i < hw && muse::is_peak(img, h, w, i / w, i % w, p);
        const unsigned ballot = __ballot_sync(0xffffffffu, keep);
        if (lane == 0) warp_offset[warp] = __popc(ballot);
        __syncthreads();
        if (tid == 0) {
            int32_t sum = 0;
            for (int k = 0; k < warps; ++k) {
                const int32_t n = warp_offset[k];
                warp_offset[k] = sum;
                sum += n;
            }
            chunk_total = sum;
        }
        __syncthreads();
        if (keep) {
            const int32_t slot = base + warp_offset[warp] + __popc(ballot & ((1u << lane) - 1u));
            index[slot] = static_cast<int32_t>(i);
            score[slot] = img[i];
        }
        base += chunk_total;
        __syncthreads();  // warp_offset and chunk_total are rewritten by the next chunk
    }
    if (tid == 0) {
        ws.total[blockIdx.x] = base;
        counts[blockIdx.x] = base < cap ? base : cap;
        overflow[blockIdx.x] = base < cap ? 0 : base - cap;
    }
}

__global__ void rank_kernel(int64_t w, int32_t cap, PeakWorkspace ws, int64_t slots, int32_t* yx, float* scores) {
    __shared__ float s_score[kThreads];
    const int64_t b = blockIdx.y;
    const int32_t n = ws.total[b];
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (static_cast<int64_t>(blockIdx.x) * blockDim.x >= n) return;  // the whole block is past the candidates
    const int32_t* index = ws.index + b * slots;
    const float* score = ws.score + b * slots;
    const float mine = i < n ? score[i] : 0.0f;
    int64_t rank = 0;
    for (int64_t start = 0; start < n; start += blockDim.x) {
        if (start + threadIdx.x < n) s_score[threadIdx.x] = score[start + threadIdx.x];
        __syncthreads();
        const int64_t m = n - start < blockDim.x ? n - start : blockDim.x;
        for (int64_t j = 0; j < m; ++j) rank += muse::ranks_before(s_score[j], start + j, mine, i);
        __syncthreads();
    }
    if (i < n && rank < cap) {
        yx[(b * cap + rank) * 2] = static_cast<int32_t>(index[i] / w);
        yx[(b * cap + rank) * 2 + 1] = static_cast<int32_t>(index[i] % w);
        scores[b * cap + rank] = mine;
    }
}

__global__ void gather_kernel(const float* fmap, muse::Strides4 st, int64_t b, int64_t c, int64_t h, int64_t w,
                              const float* xy, int64_t k, const int32_t* counts, float in_h, float in_w, float* out) {
    const int64_t total = b * k * c;
    for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
         e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t ch = e % c, p = (e / c) % k, i = e / (c * k);
        const int64_t n = counts ? counts[i] : k;
        float v = 0.0f;
        if (p < n) {
            const muse::Bilinear s = muse::bilinear(xy[(i * k + p) * 2], xy[(i * k + p) * 2 + 1], h, w, in_h, in_w);
            int64_t off[4];
            muse::corner_offsets(s, w, st, off);
            v = muse::gather_one(fmap + i * st.b + ch * st.c, s, off);
        }
        out[e] = v;
    }
}

__global__ void gather_backward_kernel(const float* grad_out, int64_t b, int64_t c, int64_t h, int64_t w,
                                       const float* xy, int64_t k, const int32_t* counts, float in_h, float in_w,
                                       float* grad_fmap) {
    const int64_t total = b * k * c;
    for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
         e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t ch = e % c, p = (e / c) % k, i = e / (c * k);
        if (p >= (counts ? counts[i] : k)) continue;
        const muse::Bilinear s = muse::bilinear(xy[(i * k + p) * 2], xy[(i * k + p) * 2 + 1], h, w, in_h, in_w);
        float* plane = grad_fmap + (i * c + ch) * h * w;
        for (int j = 0; j < 4; ++j) {
            if (s.idx[j] >= 0) atomicAdd(plane + s.idx[j], grad_out[e] * s.wt[j]);
        }
    }
}

// Positions of the kept peaks; padding rows of xy and scores become zeros.
__global__ void decode_xy_kernel(const float* offsets, int64_t b, int64_t h, int64_t w, int32_t cap, float stride,
                                 const int32_t* yx, const int32_t* counts, float* xy, float* scores) {
    const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
    if (e >= b * cap) return;
    const int64_t i = e / cap, k = e % cap;
    if (k < counts[i]) {
        const int64_t row = yx[e * 2], col = yx[e * 2 + 1];
        const float* off = offsets + i * 2 * h * w + row * w + col;
        muse::decode_xy(row, col, off[0], off[h * w], stride, xy + e * 2);
    } else {
        xy[e * 2] = xy[e * 2 + 1] = 0.0f;
        scores[e] = 0.0f;
    }
}

unsigned grid_for(int64_t n) {  // kernels over more elements than this stride through them
    const int64_t blocks = (n + kThreads - 1) / kThreads;
    return static_cast<unsigned>(blocks < INT32_MAX ? (blocks > 0 ? blocks : 1) : INT32_MAX);
}

}  // namespace

extern "C" {

int muse_native_abi_version(void) { return MUSE_NATIVE_ABI_VERSION; }

const char* muse_native_error(int code) {
    if (code >= kCudaErrorBase) return cudaGetErrorString(static_cast<cudaError_t>(code - kCudaErrorBase));
    return code == kInvalidArgument ? "invalid argument (negative size, null pointer or map too large)"
                                    : "unknown error";
}

size_t muse_peaks_cuda_workspace(int64_t b, int64_t h, int64_t w) {
    const size_t slots = static_cast<size_t>(b * h * w);
    return 2 * align(slots * sizeof(int32_t)) + align(static_cast<size_t>(b) * sizeof(int32_t));
}

int muse_peaks_cuda(const float* heat, int64_t b, int64_t h, int64_t w, float threshold, int32_t radius,
                    int32_t border, int32_t max_points, int32_t* yx, float* scores, int32_t* counts, int32_t* overflow,
                    void* workspace, void* stream) {
    if (b < 0 || h < 0 || w < 0 || radius < 0 || h * w > INT32_MAX || b > 65535 || !workspace) {
        return kInvalidArgument;
    }
    if (b == 0) return 0;
    auto st = static_cast<cudaStream_t>(stream);
    const int32_t cap = max_points > 0 ? max_points : 0;
    const PeakWorkspace ws = peak_workspace(workspace, b, h, w);
    const muse::PeakParams p{threshold, radius, border > 0 ? border : 0};
    compact_kernel<<<static_cast<unsigned>(b), kScanThreads, 0, st>>>(heat, h, w, p, cap, ws, counts, overflow);
    if (const int rc = launched()) return rc;
    if (h * w == 0 || cap == 0) return 0;
    const dim3 grid(static_cast<unsigned>((h * w + kThreads - 1) / kThreads), static_cast<unsigned>(b));
    rank_kernel<<<grid, kThreads, 0, st>>>(w, cap, ws, h * w, yx, scores);
    return launched();
}

int muse_gather_cuda(const float* fmap, const int64_t* strides, int64_t b, int64_t c, int64_t h, int64_t w,
                     const float* xy, int64_t k, const int32_t* counts, float in_h, float in_w, float* out,
                     void* stream) {
    if (b < 0 || c < 0 || h < 0 || w < 0 || k < 0 || !strides) return kInvalidArgument;
    if (b * k * c == 0) return 0;
    const muse::Strides4 st{strides[0], strides[1], strides[2], strides[3]};
    gather_kernel<<<grid_for(b * k * c), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        fmap, st, b, c, h, w, xy, k, counts, in_h, in_w, out);
    return launched();
}

int muse_gather_backward_cuda(const float* grad_out, int64_t b, int64_t c, int64_t h, int64_t w, const float* xy,
                              int64_t k, const int32_t* counts, float in_h, float in_w, float* grad_fmap,
                              void* stream) {
    if (b < 0 || c < 0 || h < 0 || w < 0 || k < 0) return kInvalidArgument;
    if (b * k * c == 0) return 0;
    gather_backward_kernel<<<grid_for(b * k * c), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        grad_out, b, c, h, w, xy, k, counts, in_h, in_w, grad_fmap);
    return launched();
}

size_t muse_decode_cuda_workspace(int64_t b, int64_t h, int64_t w, int32_t max_points) {
    const int64_t cap = max_points > 0 ? max_points : 0;
    return muse_peaks_cuda_workspace(b, h, w) + align(static_cast<size_t>(b * cap * 2) * sizeof(int32_t));
}

int muse_decode_cuda(const float* heat, const float* offsets, const float* fmap, int64_t b, int64_t d, int64_t h,
                     int64_t w, float threshold, int32_t radius, int32_t border, int32_t max_points, float stride,
                     float in_h, float in_w, float* xy, float* scores, int32_t* counts, int32_t* overflow,
                     float* feats, void* workspace, void* stream) {
    if (b == 0) return 0;
    const int32_t cap = max_points > 0 ? max_points : 0;
    auto* yx = reinterpret_cast<int32_t*>(static_cast<char*>(workspace) + muse_peaks_cuda_workspace(b, h, w));
    int rc = muse_peaks_cuda(heat, b, h, w, threshold, radius, border, cap, yx, scores, counts, overflow, workspace,
                             stream);
    if (rc || cap == 0) return rc;
    decode_xy_kernel<<<grid_for(b * cap), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        offsets, b, h, w, cap, stride, yx, counts, xy, scores);
    if ((rc = launched())) return rc;
    const int64_t strides[4] = {d * h * w, h * w, w, 1};
    return muse_gather_cuda(fmap, strides, b, d, h, w, xy, cap, counts, in_h, in_w, feats, stream);
}

}  // extern "C"
