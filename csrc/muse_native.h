// C ABI of the native post-processing libraries, loaded from Python with ctypes (kernels/native.py).
//
// libmuse_native_cpu.so: the *_cpu functions. libmuse_native_cuda.so: the *_cuda functions (device pointers, work
// queued on ``stream``, nothing synchronized). Every pointer is to float32 / int32 data (``*_bf16_*``: a bf16 map as
// uint16_t bits); maps are contiguous [B, H, W] unless strides are passed. Functions return 0, or an error code (muse_native_error names it).
//
// Peaks: ``yx [B, K, 2]`` (row, col), ``scores [B, K]``, ``counts [B]`` (rows kept) and ``overflow [B]`` (peaks
// dropped by the cap K); rows >= counts[b] are left as they are. Gather: ``xy [B, K, 2]`` (x, y in input pixels),
// ``counts`` may be NULL (all K rows valid); ``out [B, K, C]`` is fully written, padding rows as zeros.
// Decode (the TensorRT plugin's op): peaks of ``heat``, their positions from ``offsets [B, 2, H, W]`` (dx, dy in
// cells) and their features from ``fmap``; every row of every output is written (padding rows are zeros).
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MUSE_NATIVE_ABI_VERSION 4

// error codes (muse_native_error names them)
#define MUSE_INVALID_ARGUMENT 1
#define MUSE_BUFFER_TOO_SMALL 2
#define MUSE_CLASS_OUT_OF_RANGE 3

int muse_native_abi_version(void);
const char* muse_native_error(int code);

int muse_peaks_cpu(const float* heat, int64_t b, int64_t h, int64_t w, float threshold, int32_t radius,
                   int32_t border, int32_t max_points, int32_t* yx, float* scores, int32_t* counts, int32_t* overflow);
int muse_gather_cpu(const float* fmap, const int64_t* strides, int64_t b, int64_t c, int64_t h, int64_t w,
                    const float* xy, int64_t k, const int32_t* counts, float in_h, float in_w, float* out);
int muse_gather_bf16_cpu(const uint16_t* fmap, const int64_t* strides, int64_t b, int64_t c, int64_t h, int64_t w,
                         const float* xy, int64_t k, const int32_t* counts, float in_h, float in_w, float* out);
int muse_gather_backward_cpu(const float* grad_out, int64_t b, int64_t c, int64_t h, int64_t w, const float* xy,
                             int64_t k, const int32_t* counts, float in_h, float in_w, float* grad_fmap);
int muse_decode_cpu(const float* heat, const float* offsets, const float* fmap, int64_t b, int64_t d, int64_t h,
                    int64_t w, float threshold, int32_t radius, int32_t border, int32_t max_points, float stride,
                    float in_h, float in_w, float* xy, float* scores, int32_t* counts, int32_t* overflow,
                    float* feats);

// Text of output rows (csrc/format.cpp): ``xy [N, 2]`` (x, y), ``class_id [N]``, ``score [N]``, ``prob [N]``;
// ``classes`` holds each class's text as the format writes it (GeoJSON: its classification object; CSV: its cell).
// The rows go to ``out`` (``cap`` bytes, not NUL-terminated); ``written`` receives their length.
int muse_format_geojson(const double* xy, const int64_t* class_id, const double* score, const double* prob, int64_t n,
                        const char* const* classes, int64_t n_classes, char* out, int64_t cap, int64_t* written);
int muse_format_csv(const double* xy, const int64_t* class_id, const double* score, const double* prob, int64_t n,
                    const char* const* classes, int64_t n_classes, char* out, int64_t cap, int64_t* written);

// Overlay markers (csrc/overlay.cpp): for each of ``n`` markers in order, class ``labels[i]``'s stamp pixels
// ``offsets[starts[c]:starts[c + 1]]`` (dy, dx) get their ``colours`` (RGB) in ``pixels [h, w, 3]`` around
// ``centres [n, 2]`` (x, y), clipped to the image; a later marker covers an earlier one.
int muse_paste_stamps(uint8_t* pixels, int64_t h, int64_t w, const int64_t* centres, const int64_t* labels,
                      int64_t n, const int64_t* offsets, const uint8_t* colours, const int64_t* starts,
                      int64_t n_classes);

size_t muse_peaks_cuda_workspace(int64_t b, int64_t h, int64_t w);
int muse_peaks_cuda(const float* heat, int64_t b, int64_t h, int64_t w, float threshold, int32_t radius,
                    int32_t border, int32_t max_points, int32_t* yx, float* scores, int32_t* counts, int32_t* overflow,
                    void* workspace, void* stream);
int muse_gather_cuda(const float* fmap, const int64_t* strides, int64_t b, int64_t c, int64_t h, int64_t w,
                     const float* xy, int64_t k, const int32_t* counts, float in_h, float in_w, float* out,
                     void* stream);
int muse_gather_backward_cuda(const float* grad_out, int64_t b, int64_t c, int64_t h, int64_t w, const float* xy,
                              int64_t k, const int32_t* counts, float in_h, float in_w, float* grad_fmap,
                              void* stream);
size_t muse_decode_cuda_workspace(int64_t b, int64_t h, int64_t w, int32_t max_points);
int muse_decode_cuda(const float* heat, const float* offsets, const float* fmap, int64_t b, int64_t d, int64_t h,
                     int64_t w, float threshold, int32_t radius, int32_t border, int32_t max_points, float stride,
                     float in_h, float in_w, float* xy, float* scores, int32_t* counts, int32_t* overflow,
                     float* feats, void* workspace, void* stream);

#ifdef __cplusplus
}
#endif
