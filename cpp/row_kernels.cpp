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

void layer_tail(const double* const* go, const double* coef, const double* const* rows, double* const* row_grads,
                double* const* coef_lanes, std::size_t dots, std::size_t k, std::size_t s, std::size_t n,
                std::size_t s0, std::size_t full) {
    for (; s < n; ++s) {
        const std::size_t lane = lane_of(s0 + s, full);
        for (std::size_t r = 0; r < k; ++r) {
            for (std::size_t j = dots; j-- > 0;) {
                coef_lanes[j * k + r][lane] += go[j][s] * rows[r][s];
                row_grads[r][s] += go[j][s] * coef[j * k + r];
            }
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

template <std::size_t L>
[[gnu::always_inline]] inline void layer_blocks(const double* const* go, const double* coef, const double* const* rows,
                                                double* const* row_grads, double* const* coef_lanes, std::size_t dots,
                                                std::size_t k, std::size_t n, std::size_t s0, std::size_t full) {
    constexpr std::size_t kVectors = kBlock / L;
    constexpr std::size_t kLaneVectors = 4 / L;
    std::size_t s = 0;
    for (; s + kBlock <= n; s += kBlock) {
        for (std::size_t r = 0; r < k; ++r) {
            Vec<L> x[kVectors];
            Vec<L> gx[kVectors];
            for (std::size_t v = 0; v < kVectors; ++v) {
                load<L>(x[v], rows[r] + s + v * L);
                load<L>(gx[v], row_grads[r] + s + v * L);
            }
            for (std::size_t j = dots; j-- > 0;) {
                const double c = coef[j * k + r];
                const double* g = go[j] + s;
                double* lanes = coef_lanes[j * k + r];
                Vec<L> lane[kLaneVectors];
                for (std::size_t i = 0; i < kLaneVectors; ++i) load<L>(lane[i], lanes + i * L);
                for (std::size_t v = 0; v < kVectors; ++v) {
                    Vec<L> gv;
                    load<L>(gv, g + v * L);
                    lane[v % kLaneVectors] += gv * x[v];
                    gx[v] += gv * c;
                }
                for (std::size_t i = 0; i < kLaneVectors; ++i) store<L>(lanes + i * L, lane[i]);
            }
            for (std::size_t v = 0; v < kVectors; ++v) store<L>(row_grads[r] + s + v * L, gx[v]);
        }
    }
    layer_tail(go, coef, rows, row_grads, coef_lanes, dots, k, s, n, s0, full);
}

void sum_baseline(double* out, const double* coef, const double* const* rows, std::size_t k, std::size_t n) {
    sum_blocks<2>(out, coef, rows, k, n);
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
void layer_baseline(const double* const* go, const double* coef, const double* const* rows, double* const* row_grads,
                    double* const* coef_lanes, std::size_t dots, std::size_t k, std::size_t n, std::size_t s0,
                    std::size_t full) {
    layer_tail(go, coef, rows, row_grads, coef_lanes, dots, k, 0, n, s0, full);
}
void sum_baseline(double* out, const double* coef, const double* const* rows, std::size_t k, std::size_t n) {
    sum_tail(out, coef, rows, k, 0, n);
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

void layer_backward(const double* const* go, const double* coef, const double* const* rows, double* const* row_grads,
                    double* const* coef_lanes, std::size_t dots, std::size_t k, std::size_t n, std::size_t s0,
                    std::size_t full) {
#ifdef ARENAGRAD_HAVE_AVX2
    if (use_avx2()) return layer_avx2(go, coef, rows, row_grads, coef_lanes, dots, k, n, s0, full);
#endif
    layer_baseline(go, coef, rows, row_grads, coef_lanes, dots, k, n, s0, full);
}

}  // namespace arenagrad::kernels
