#include "row_kernels.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace arenagrad::kernels {

namespace {

// The samples after the last full block: plain scalar code, the same operations in the same order.
void sum_tail(double* out, const double* coef, const double* const* rows, std::size_t k, std::size_t s,
              std::size_t n) {
    for (; s < n; ++s) {
        double acc = 0.0;
        for (std::size_t t = 0; t < k; ++t) acc += coef[t] * rows[t][s];
        out[s] = acc;
    }
}

void backward_tail(const double* go, const double* coef, const double* const* rows, double* const* row_grads,
                   double* const* coef_lanes, std::size_t k, std::size_t s, std::size_t n, std::size_t s0,
                   std::size_t full) {
    for (; s < n; ++s) {
        const std::size_t lane = lane_of(s0 + s, full);
        for (std::size_t t = 0; t < k; ++t) {
            coef_lanes[t][lane] += go[s] * rows[t][s];
            row_grads[t][s] += go[s] * coef[t];
        }
    }
}

void layer_forward_tail(double* const* out, const double* coef, const double* const* rows, std::size_t dots,
                        std::size_t k, std::size_t s, std::size_t n, const double* bias, double* const* biased) {
    for (std::size_t j = 0; j < dots; ++j) {
        for (std::size_t u = s; u < n; ++u) {
            double acc = 0.0;
            for (std::size_t t = 0; t < k; ++t) acc += coef[j * k + t] * rows[t][u];
            if (out[j] != nullptr) out[j][u] = acc;
            if (biased[j] != nullptr) biased[j][u] = acc + bias[j];
        }
    }
}

constexpr std::size_t kBlock = 16;  // samples per block: 16 partial sums in registers

#if defined(__GNUC__)
// L doubles per vector. Written with vector types because the compiler, left to itself, vectorizes
// across the terms instead, with gathers and spills. Always inlined, so that each entry point below
// compiles it for its own target.
// (Spelled out per width: GCC ignores a vector_size that depends on a template parameter.)
template <std::size_t L>
struct VecOf;
template <>
struct VecOf<2> {
    typedef double type __attribute__((vector_size(16)));
};
template <>
struct VecOf<4> {
    typedef double type __attribute__((vector_size(32)));
};
template <std::size_t L>
using Vec = typename VecOf<L>::type;
static_assert(sizeof(Vec<2>) == 16 && sizeof(Vec<4>) == 32);

// Vectors go by reference, never by value: passing a 32-byte vector by value to a function compiled
// without AVX would change the calling convention.
template <std::size_t L>
[[gnu::always_inline]] inline void load(Vec<L>& v, const double* p) {
    std::memcpy(&v, p, sizeof v);
}

template <std::size_t L>
[[gnu::always_inline]] inline void store(double* p, const Vec<L>& v) {
    std::memcpy(p, &v, sizeof v);
}

template <std::size_t L>
[[gnu::always_inline]] inline void sum_blocks(double* out, const double* coef, const double* const* rows,
                                              std::size_t k, std::size_t n) {
    constexpr std::size_t kVectors = kBlock / L;
    std::size_t s = 0;
    for (; s + kBlock <= n; s += kBlock) {
        Vec<L> acc[kVectors] = {};
        for (std::size_t t = 0; t < k; ++t) {
            const double c = coef[t];
            const double* r = rows[t] + s;
            for (std::size_t j = 0; j < kVectors; ++j) {
                Vec<L> x;
                load<L>(x, r + j * L);
                acc[j] += c * x;
            }
        }
        for (std::size_t j = 0; j < kVectors; ++j) store<L>(out + s + j * L, acc[j]);
    }
    sum_tail(out, coef, rows, k, s, n);
}

template <std::size_t L>
[[gnu::always_inline]] inline void backward_blocks(const double* go, const double* coef, const double* const* rows,
                                                   double* const* row_grads, double* const* coef_lanes,
                                                   std::size_t k, std::size_t n, std::size_t s0,
                                                   std::size_t full) {
    constexpr std::size_t kVectors = kBlock / L;
    constexpr std::size_t kLaneVectors = 4 / L;  // vector j of a block holds lanes j % kLaneVectors
    std::size_t s = 0;
    for (; s + kBlock <= n; s += kBlock) {  // a whole block lies before the batch's tail
        Vec<L> g[kVectors];
        for (std::size_t j = 0; j < kVectors; ++j) load<L>(g[j], go + s + j * L);
        for (std::size_t t = 0; t < k; ++t) {
            const double* x = rows[t] + s;
            Vec<L> lane[kLaneVectors];
            for (std::size_t i = 0; i < kLaneVectors; ++i) load<L>(lane[i], coef_lanes[t] + i * L);
            for (std::size_t j = 0; j < kVectors; ++j) {
                Vec<L> xj;
                load<L>(xj, x + j * L);
                lane[j % kLaneVectors] += g[j] * xj;
            }
            for (std::size_t i = 0; i < kLaneVectors; ++i) store<L>(coef_lanes[t] + i * L, lane[i]);
            const double c = coef[t];
            double* gx = row_grads[t] + s;
            for (std::size_t j = 0; j < kVectors; ++j) {
                Vec<L> gxj;
                load<L>(gxj, gx + j * L);
                gxj += g[j] * c;
                store<L>(gx + j * L, gxj);
            }
        }
    }
    backward_tail(go, coef, rows, row_grads, coef_lanes, k, s, n, s0, full);
}

// A layer's forward, JB dots by SV vectors of samples at a time: each row's block is loaded once for
// JB dots, and each output starts at 0.0 and adds its terms in order, as scaled_row_sum does.
template <std::size_t L, std::size_t JB, std::size_t SV>
[[gnu::always_inline]] inline void layer_forward_block(double* const* out, const double* coef,
                                                       const double* const* rows, std::size_t k, std::size_t j0,
                                                       std::size_t s, const double* bias, double* const* biased) {
    Vec<L> acc[JB][SV];
    _Pragma("GCC unroll 16")
    for (std::size_t j = 0; j < JB; ++j) {
        _Pragma("GCC unroll 16")
        for (std::size_t v = 0; v < SV; ++v) acc[j][v] = Vec<L>{};
    }
    for (std::size_t t = 0; t < k; ++t) {
        Vec<L> x[SV];
        _Pragma("GCC unroll 16")
        for (std::size_t v = 0; v < SV; ++v) load<L>(x[v], rows[t] + s + v * L);
        _Pragma("GCC unroll 16")
        for (std::size_t j = 0; j < JB; ++j) {
            const double c = coef[(j0 + j) * k + t];
            _Pragma("GCC unroll 16")
            for (std::size_t v = 0; v < SV; ++v) acc[j][v] += c * x[v];
        }
    }
    _Pragma("GCC unroll 16")
    for (std::size_t j = 0; j < JB; ++j) {
        if (out[j0 + j] != nullptr) {
            _Pragma("GCC unroll 16")
            for (std::size_t v = 0; v < SV; ++v) store<L>(out[j0 + j] + s + v * L, acc[j][v]);
        }
        if (biased[j0 + j] == nullptr) continue;
        const double b = bias[j0 + j];
        _Pragma("GCC unroll 16")
        for (std::size_t v = 0; v < SV; ++v) store<L>(biased[j0 + j] + s + v * L, acc[j][v] + b);
    }
}

// Every dot of the layer for the SV vectors of samples from s, 4 dots at a time.
template <std::size_t L, std::size_t SV>
[[gnu::always_inline]] inline void layer_forward_samples(double* const* out, const double* coef,
                                                         const double* const* rows, std::size_t dots, std::size_t k,
                                                         std::size_t s, const double* bias, double* const* biased) {
    constexpr std::size_t kDots = 4;
    std::size_t j = 0;
    for (; j + kDots <= dots; j += kDots) layer_forward_block<L, kDots, SV>(out, coef, rows, k, j, s, bias, biased);
    switch (dots - j) {
        case 3: layer_forward_block<L, 3, SV>(out, coef, rows, k, j, s, bias, biased); break;
        case 2: layer_forward_block<L, 2, SV>(out, coef, rows, k, j, s, bias, biased); break;
        case 1: layer_forward_block<L, 1, SV>(out, coef, rows, k, j, s, bias, biased); break;
        default: break;
    }
}

// Blocks of 8 samples, then one of 4 if that many are left (a batch of 100 ends in one), then scalar code.
template <std::size_t L>
[[gnu::always_inline]] inline void layer_forward_blocks(double* const* out, const double* coef,
                                                        const double* const* rows, std::size_t dots, std::size_t k,
                                                        std::size_t n, const double* bias, double* const* biased) {
    std::size_t s = 0;
    for (; s + 8 <= n; s += 8) layer_forward_samples<L, 8 / L>(out, coef, rows, dots, k, s, bias, biased);
    if (s + 4 <= n) {
        layer_forward_samples<L, 4 / L>(out, coef, rows, dots, k, s, bias, biased);
        s += 4;
    }
    layer_forward_tail(out, coef, rows, dots, k, s, n, bias, biased);
}

// The rows' grads of a layer's backward, TB rows by SV vectors of samples at a time: each gains
// go[j] * coef[j][t] for j = dots-1 down to 0, one output grad block loaded once for TB rows.
template <std::size_t L, std::size_t TB, std::size_t SV>
[[gnu::always_inline]] inline void layer_row_grads_block(const double* const* go, const double* coef,
                                                         double* const* row_grads, std::size_t dots, std::size_t k,
                                                         std::size_t t0, std::size_t s) {
    Vec<L> acc[TB][SV];
    _Pragma("GCC unroll 16")
    for (std::size_t t = 0; t < TB; ++t) {
        _Pragma("GCC unroll 16")
        for (std::size_t v = 0; v < SV; ++v) load<L>(acc[t][v], row_grads[t0 + t] + s + v * L);
    }
    for (std::size_t j = dots; j-- > 0;) {
        Vec<L> g[SV];
        _Pragma("GCC unroll 16")
        for (std::size_t v = 0; v < SV; ++v) load<L>(g[v], go[j] + s + v * L);
        _Pragma("GCC unroll 16")
        for (std::size_t t = 0; t < TB; ++t) {
            const double c = coef[j * k + t0 + t];
            _Pragma("GCC unroll 16")
            for (std::size_t v = 0; v < SV; ++v) acc[t][v] += g[v] * c;
        }
    }
    _Pragma("GCC unroll 16")
    for (std::size_t t = 0; t < TB; ++t) {
        _Pragma("GCC unroll 16")
        for (std::size_t v = 0; v < SV; ++v) store<L>(row_grads[t0 + t] + s + v * L, acc[t][v]);
    }
}

// Every row's grads for the SV vectors of samples from s, 4 rows at a time.
template <std::size_t L, std::size_t SV>
[[gnu::always_inline]] inline void layer_row_grads_samples(const double* const* go, const double* coef,
                                                           double* const* row_grads, std::size_t dots, std::size_t k,
                                                           std::size_t s) {
    constexpr std::size_t kRows = 4;
    std::size_t t = 0;
    for (; t + kRows <= k; t += kRows) layer_row_grads_block<L, kRows, SV>(go, coef, row_grads, dots, k, t, s);
    switch (k - t) {
        case 3: layer_row_grads_block<L, 3, SV>(go, coef, row_grads, dots, k, t, s); break;
        case 2: layer_row_grads_block<L, 2, SV>(go, coef, row_grads, dots, k, t, s); break;
        case 1: layer_row_grads_block<L, 1, SV>(go, coef, row_grads, dots, k, t, s); break;
        default: break;
    }
}

// The weights' lanes of a layer's backward, JB dots by TB rows at a time, over the samples
// [0, end) (whole groups of four, all before the batch's tail): each weight's four lanes stay in
// registers for all the samples, and gain go[j][s] * rows[t][s] sample after sample, as in
// scaled_row_sum_backward.
template <std::size_t L, std::size_t JB, std::size_t TB>
[[gnu::always_inline]] inline void layer_lanes_block(const double* const* go, const double* const* rows,
                                                     double* const* coef_lanes, std::size_t k, std::size_t j0,
                                                     std::size_t t0, std::size_t end) {
    constexpr std::size_t kLaneVectors = 4 / L;
    Vec<L> acc[JB][TB][kLaneVectors];
    _Pragma("GCC unroll 16")
    for (std::size_t j = 0; j < JB; ++j) {
        _Pragma("GCC unroll 16")
        for (std::size_t t = 0; t < TB; ++t) {
            _Pragma("GCC unroll 16")
            for (std::size_t i = 0; i < kLaneVectors; ++i) load<L>(acc[j][t][i], coef_lanes[(j0 + j) * k + t0 + t] + i * L);
        }
    }
    for (std::size_t s = 0; s < end; s += 4) {
        _Pragma("GCC unroll 16")
        for (std::size_t i = 0; i < kLaneVectors; ++i) {
            Vec<L> g[JB];
            _Pragma("GCC unroll 16")
            for (std::size_t j = 0; j < JB; ++j) load<L>(g[j], go[j0 + j] + s + i * L);
            _Pragma("GCC unroll 16")
            for (std::size_t t = 0; t < TB; ++t) {
                Vec<L> x;
                load<L>(x, rows[t0 + t] + s + i * L);
                _Pragma("GCC unroll 16")
                for (std::size_t j = 0; j < JB; ++j) acc[j][t][i] += g[j] * x;
            }
        }
    }
    _Pragma("GCC unroll 16")
    for (std::size_t j = 0; j < JB; ++j) {
        _Pragma("GCC unroll 16")
        for (std::size_t t = 0; t < TB; ++t) {
            _Pragma("GCC unroll 16")
            for (std::size_t i = 0; i < kLaneVectors; ++i) store<L>(coef_lanes[(j0 + j) * k + t0 + t] + i * L, acc[j][t][i]);
        }
    }
}

// Dispatches a lanes block of jb <= JB dots by tb <= TB rows to its compiled size.
template <std::size_t L, std::size_t JB, std::size_t TB>
[[gnu::always_inline]] inline void layer_lanes_any(const double* const* go, const double* const* rows,
                                                   double* const* coef_lanes, std::size_t k, std::size_t j0,
                                                   std::size_t jb, std::size_t t0, std::size_t tb, std::size_t end) {
    if constexpr (TB > 1) {
        if (tb < TB) return layer_lanes_any<L, JB, TB - 1>(go, rows, coef_lanes, k, j0, jb, t0, tb, end);
    }
    if constexpr (JB > 1) {
        if (jb < JB) return layer_lanes_any<L, JB - 1, TB>(go, rows, coef_lanes, k, j0, jb, t0, tb, end);
    }
    layer_lanes_block<L, JB, TB>(go, rows, coef_lanes, k, j0, t0, end);
}

template <std::size_t L>
[[gnu::always_inline]] inline void layer_blocks(const double* const* go, const double* coef, const double* const* rows,
                                                double* const* row_grads, double* const* coef_lanes, std::size_t dots,
                                                std::size_t k, std::size_t n, std::size_t s0, std::size_t full) {
    std::size_t s = row_grads == nullptr ? n : 0;
    for (; s + 8 <= n; s += 8) layer_row_grads_samples<L, 8 / L>(go, coef, row_grads, dots, k, s);
    if (s + 4 <= n) {
        layer_row_grads_samples<L, 4 / L>(go, coef, row_grads, dots, k, s);
        s += 4;
    }
    for (; s < n; ++s) {
        for (std::size_t r = 0; r < k; ++r) {
            for (std::size_t j = dots; j-- > 0;) row_grads[r][s] += go[j][s] * coef[j * k + r];
        }
    }
    // Lane accumulators: 3 dots x 4 rows for AVX2 (12 registers, with the 3 output grads and a row's
    // block all 16: 7% faster than 3 x 3 on a 25 x 25 layer), 2 x 2 (of two vectors each) for SSE2.
    constexpr std::size_t kLaneDots = L == 4 ? 3 : 2;
    constexpr std::size_t kLaneRows = L == 4 ? 4 : 2;
    const std::size_t body = full > s0 ? std::min(n, full - s0) / 4 * 4 : 0;
    for (std::size_t j = 0; j < dots; j += kLaneDots) {
        for (std::size_t t = 0; t < k; t += kLaneRows) {
            layer_lanes_any<L, kLaneDots, kLaneRows>(go, rows, coef_lanes, k, j, std::min(kLaneDots, dots - j), t,
                                                     std::min(kLaneRows, k - t), body);
        }
    }
    for (std::size_t j = 0; j < dots; ++j) {
        for (std::size_t r = 0; r < k; ++r) {
            double* lanes = coef_lanes[j * k + r];
            for (std::size_t u = body; u < n; ++u) lanes[lane_of(s0 + u, full)] += go[j][u] * rows[r][u];
        }
    }
}

void sum_baseline(double* out, const double* coef, const double* const* rows, std::size_t k, std::size_t n) {
    sum_blocks<2>(out, coef, rows, k, n);
}
void layer_forward_baseline(double* const* out, const double* coef, const double* const* rows, std::size_t dots,
                            std::size_t k, std::size_t n, const double* bias, double* const* biased) {
    layer_forward_blocks<2>(out, coef, rows, dots, k, n, bias, biased);
}
void layer_baseline(const double* const* go, const double* coef, const double* const* rows, double* const* row_grads,
                    double* const* coef_lanes, std::size_t dots, std::size_t k, std::size_t n, std::size_t s0,
                    std::size_t full) {
    layer_blocks<2>(go, coef, rows, row_grads, coef_lanes, dots, k, n, s0, full);
}
void backward_baseline(const double* go, const double* coef, const double* const* rows, double* const* row_grads,
                       double* const* coef_lanes, std::size_t k, std::size_t n, std::size_t s0, std::size_t full) {
    backward_blocks<2>(go, coef, rows, row_grads, coef_lanes, k, n, s0, full);
}
#else
// Without GCC's vector types: the scalar loops, the same operations in the same order.
void layer_tail(const double* const* go, const double* coef, const double* const* rows, double* const* row_grads,
                double* const* coef_lanes, std::size_t dots, std::size_t k, std::size_t s, std::size_t n,
                std::size_t s0, std::size_t full) {
    for (; s < n; ++s) {
        const std::size_t lane = lane_of(s0 + s, full);
        for (std::size_t r = 0; r < k; ++r) {
            for (std::size_t j = dots; j-- > 0;) {
                coef_lanes[j * k + r][lane] += go[j][s] * rows[r][s];
                if (row_grads != nullptr) row_grads[r][s] += go[j][s] * coef[j * k + r];
            }
        }
    }
}

void layer_baseline(const double* const* go, const double* coef, const double* const* rows, double* const* row_grads,
                    double* const* coef_lanes, std::size_t dots, std::size_t k, std::size_t n, std::size_t s0,
                    std::size_t full) {
    layer_tail(go, coef, rows, row_grads, coef_lanes, dots, k, 0, n, s0, full);
}
void sum_baseline(double* out, const double* coef, const double* const* rows, std::size_t k, std::size_t n) {
    sum_tail(out, coef, rows, k, 0, n);
}
void layer_forward_baseline(double* const* out, const double* coef, const double* const* rows, std::size_t dots,
                            std::size_t k, std::size_t n, const double* bias, double* const* biased) {
    layer_forward_tail(out, coef, rows, dots, k, 0, n, bias, biased);
}
void backward_baseline(const double* go, const double* coef, const double* const* rows, double* const* row_grads,
                       double* const* coef_lanes, std::size_t k, std::size_t n, std::size_t s0, std::size_t full) {
    backward_tail(go, coef, rows, row_grads, coef_lanes, k, 0, n, s0, full);
}
#endif

#if defined(__GNUC__) && defined(__x86_64__)
#define ARENAGRAD_HAVE_AVX2 1
__attribute__((target("avx2"))) void sum_avx2(double* out, const double* coef, const double* const* rows,
                                                std::size_t k, std::size_t n) {
    sum_blocks<4>(out, coef, rows, k, n);
}
__attribute__((target("avx2"))) void backward_avx2(const double* go, const double* coef, const double* const* rows,
                                                     double* const* row_grads, double* const* coef_lanes,
                                                     std::size_t k, std::size_t n, std::size_t s0, std::size_t full) {
    backward_blocks<4>(go, coef, rows, row_grads, coef_lanes, k, n, s0, full);
}
#endif

#ifdef ARENAGRAD_HAVE_AVX2
__attribute__((target("avx2"))) void layer_forward_avx2(double* const* out, const double* coef,
                                                          const double* const* rows, std::size_t dots, std::size_t k,
                                                          std::size_t n, const double* bias, double* const* biased) {
    layer_forward_blocks<4>(out, coef, rows, dots, k, n, bias, biased);
}
__attribute__((target("avx2"))) void layer_avx2(const double* const* go, const double* coef,
                                                  const double* const* rows, double* const* row_grads,
                                                  double* const* coef_lanes, std::size_t dots, std::size_t k,
                                                  std::size_t n, std::size_t s0, std::size_t full) {
    layer_blocks<4>(go, coef, rows, row_grads, coef_lanes, dots, k, n, s0, full);
}
#endif

bool use_avx2() {
    static const bool yes = [] {
        const char* forced = std::getenv("ARENAGRAD_SIMD");
        if (forced != nullptr && std::string_view(forced) == "baseline") return false;
#ifdef ARENAGRAD_HAVE_AVX2
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") != 0;
#else
        return false;
#endif
    }();
    return yes;
}

}  // namespace

const char* simd_target() { return use_avx2() ? "avx2" : "baseline"; }

void scaled_row_sum(double* out, const double* coef, const double* const* rows, std::size_t k, std::size_t n) {
#ifdef ARENAGRAD_HAVE_AVX2
    if (use_avx2()) return sum_avx2(out, coef, rows, k, n);
#endif
    sum_baseline(out, coef, rows, k, n);
}

void scaled_row_sum_backward(const double* go, const double* coef, const double* const* rows,
                             double* const* row_grads, double* const* coef_lanes, std::size_t k, std::size_t n,
                             std::size_t s0, std::size_t full) {
#ifdef ARENAGRAD_HAVE_AVX2
    if (use_avx2()) return backward_avx2(go, coef, rows, row_grads, coef_lanes, k, n, s0, full);
#endif
    backward_baseline(go, coef, rows, row_grads, coef_lanes, k, n, s0, full);
}

void layer_forward(double* const* out, const double* coef, const double* const* rows, std::size_t dots, std::size_t k,
                   std::size_t n, const double* bias, double* const* biased) {
#ifdef ARENAGRAD_HAVE_AVX2
    if (use_avx2()) return layer_forward_avx2(out, coef, rows, dots, k, n, bias, biased);
#endif
    layer_forward_baseline(out, coef, rows, dots, k, n, bias, biased);
}

void layer_backward(const double* const* go, const double* coef, const double* const* rows, double* const* row_grads,
                    double* const* coef_lanes, std::size_t dots, std::size_t k, std::size_t n, std::size_t s0,
                    std::size_t full) {
#ifdef ARENAGRAD_HAVE_AVX2
    if (use_avx2()) return layer_avx2(go, coef, rows, row_grads, coef_lanes, dots, k, n, s0, full);
#endif
    layer_baseline(go, coef, rows, row_grads, coef_lanes, dots, k, n, s0, full);
}

}  // namespace arenagrad::kernels
