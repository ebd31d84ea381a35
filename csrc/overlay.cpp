// Overlay markers pasted as stamps (muse_fast/output/overlay.py, Overlay.add_points): one class's marker is a list of
// pixel offsets and their colours; markers are pasted in order, so a later marker covers an earlier one.
#include <cstring>

#include "muse_native.h"

extern "C" {

int muse_paste_stamps(uint8_t* pixels, int64_t h, int64_t w, const int64_t* centres, const int64_t* labels,
                      int64_t n, const int64_t* offsets, const uint8_t* colours, const int64_t* starts,
                      int64_t n_classes) {
    if (h < 0 || w < 0 || n < 0 || n_classes < 0 || (n > 0 && (!pixels || !centres || !labels || !starts))) {
        return MUSE_INVALID_ARGUMENT;
    }
    for (int64_t i = 0; i < n; ++i) {  // every label is checked before a pixel changes
        if (labels[i] < 0 || labels[i] >= n_classes) return MUSE_CLASS_OUT_OF_RANGE;
    }
    for (int64_t i = 0; i < n; ++i) {
        const int64_t x = centres[2 * i], y = centres[2 * i + 1], c = labels[i];
        for (int64_t k = starts[c]; k < starts[c + 1]; ++k) {
            const int64_t row = y + offsets[2 * k], col = x + offsets[2 * k + 1];
            if (row < 0 || row >= h || col < 0 || col >= w) continue;
            std::memcpy(pixels + 3 * (row * w + col), colours + 3 * k, 3);
        }
    }
    return 0;
}

}  // extern "C"
