// Rows of the GeoJSON and CSV outputs as text (muse_fast/output/native_text.py), byte for byte what the Python
// writers of muse_fast/output/writers.py write. A number rounded to d decimals is the binary value correctly rounded,
// halves to even, as Python's round() and format() and std::to_chars give it, whatever the process's locale; Python's
// repr of round(v, d) is that text with its trailing zeros dropped down to one decimal while adjacent doubles are
// closer than 10^-d (|v| < 2^39 for d = 4: callers check). The digits come from v * 10^d rounded to an integer where
// that product is clearly away from a halfway point, and from std::to_chars (exact, slower) where it is not.
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "muse_native.h"

namespace {

constexpr int kInvalidArgument = MUSE_INVALID_ARGUMENT;
constexpr int kBufferTooSmall = MUSE_BUFFER_TOO_SMALL;
constexpr int kClassOutOfRange = MUSE_CLASS_OUT_OF_RANGE;

// "%.{decimals}f" of v into buf (64 bytes, decimals 1-8); returns its length, or -1.
int digits(double v, int decimals, char* buf) {
    static const double kScale[] = {1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8};
    if (decimals < 1 || decimals > 8) return -1;
    const double scaled = v * kScale[decimals];  // off the exact product by at most half an ulp of it
    const double margin = std::fabs(scaled) * 0x1p-50 + 0x1p-40;
    const double frac = std::fabs(scaled - std::trunc(scaled));
    if (!(std::fabs(scaled) < 0x1p52) || std::fabs(frac - 0.5) <= margin) {
        // near a halfway point: to_chars decides exactly (printf would, but with the locale's decimal point)
        const auto done = std::to_chars(buf, buf + 64, v, std::chars_format::fixed, decimals);
        return done.ec == std::errc() ? static_cast<int>(done.ptr - buf) : -1;
    }
    auto whole = static_cast<unsigned long long>(std::fabs(std::nearbyint(scaled)));
    char rev[32];
    int k = 0;
    for (int d = 0; d < decimals; ++d, whole /= 10) rev[k++] = static_cast<char>('0' + whole % 10);
    rev[k++] = '.';
    do {
        rev[k++] = static_cast<char>('0' + whole % 10);
        whole /= 10;
    } while (whole);
    int n = 0;
    if (std::signbit(v)) buf[n++] = '-';  // printf keeps the sign of a negative value that rounds to zero
    while (k) buf[n++] = rev[--k];
    return n;
}

class Out {
   public:
    Out(char* buf, int64_t cap) : p_(buf), end_(buf + cap) {}
    bool ok() const { return ok_; }
    char* pos() const { return p_; }

    void text(const char* s, size_t n) {
        if (!ok_ || static_cast<int64_t>(n) > end_ - p_) {
            ok_ = false;
            return;
        }
        std::memcpy(p_, s, n);
        p_ += n;
    }
    void text(const char* s) { text(s, std::strlen(s)); }

    // printf's "%.{decimals}f" (Python's f"{v:.{decimals}f}" for finite v)
    void fixed(double v, int decimals) {
        char buf[64];
        const int n = digits(v, decimals, buf);
        if (n < 0) {
            ok_ = false;
            return;
        }
        text(buf, static_cast<size_t>(n));
    }

    // Python's repr(round(v, decimals)) for finite |v| < 1e16
    void rounded(double v, int decimals) {
        char buf[64];
        int n = digits(v, decimals, buf);
        if (n < 0) {
            ok_ = false;
            return;
        }
        while (n > 2 && buf[n - 1] == '0' && buf[n - 2] != '.') --n;  // 12.50 -> 12.5, 12.00 -> 12.0
        text(buf, static_cast<size_t>(n));
    }

    void integer(int64_t v) {
        char buf[32];
        const int n = std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(v));
        text(buf, static_cast<size_t>(n));
    }

   private:
    char* p_;
    char* end_;
    bool ok_ = true;
};

bool valid(const double* xy, const int64_t* class_id, const double* score, const double* prob, int64_t n,
           const char* const* classes, int64_t n_classes, const char* out, const int64_t* written) {
    return n >= 0 && n_classes >= 0 && written && out && (n == 0 || (xy && class_id && score && prob && classes));
}

// Row i (class c) of n by ``row``, into ``out``; the error code, or 0 with the text's length in ``written``.
template <typename Row>
int format_rows(const int64_t* class_id, int64_t n, int64_t n_classes, char* out, int64_t cap, int64_t* written,
                Row row) {
    Out o(out, cap);
    for (int64_t i = 0; i < n; ++i) {
        const int64_t c = class_id[i];
        if (c < 0 || c >= n_classes) return kClassOutOfRange;
        row(o, i, c);
    }
    if (!o.ok()) return kBufferTooSmall;
    *written = o.pos() - out;
    return 0;
}

}  // namespace

extern "C" {

int muse_format_geojson(const double* xy, const int64_t* class_id, const double* score, const double* prob, int64_t n,
                        const char* const* classes, int64_t n_classes, char* out, int64_t cap, int64_t* written) {
    if (!valid(xy, class_id, score, prob, n, classes, n_classes, out, written) || cap < 0) return kInvalidArgument;
    return format_rows(class_id, n, n_classes, out, cap, written, [&](Out& o, int64_t i, int64_t c) {
        if (i) o.text(",\n");
        o.text("{\"type\": \"Feature\", \"geometry\": {\"type\": \"Point\", \"coordinates\": [");
        o.rounded(xy[2 * i], 2);
        o.text(", ");
        o.rounded(xy[2 * i + 1], 2);
        o.text("]}, \"properties\": {\"objectType\": \"detection\", \"classification\": ");
        o.text(classes[c]);
        o.text(", \"score\": ");
        o.rounded(score[i], 4);
        o.text(", \"measurements\": {\"score\": ");
        o.rounded(score[i], 4);
        o.text(", \"class_probability\": ");
        o.rounded(prob[i], 4);
        o.text("}}}");
    });
}

int muse_format_csv(const double* xy, const int64_t* class_id, const double* score, const double* prob, int64_t n,
                    const char* const* classes, int64_t n_classes, char* out, int64_t cap, int64_t* written) {
    if (!valid(xy, class_id, score, prob, n, classes, n_classes, out, written) || cap < 0) return kInvalidArgument;
    return format_rows(class_id, n, n_classes, out, cap, written, [&](Out& o, int64_t i, int64_t c) {
        o.fixed(xy[2 * i], 2);
        o.text(",");
        o.fixed(xy[2 * i + 1], 2);
        o.text(",");
        o.integer(c);
        o.text(",");
        o.text(classes[c]);
        o.text(",");
        o.fixed(score[i], 4);
        o.text(",");
        o.fixed(prob[i], 4);
        o.text("\r\n");
    });
}

}  // extern "C"
