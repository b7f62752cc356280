// Runtime flags turned into compile-time ones, for the row loops of batched replay: each loop is
// instantiated per pattern, so the compiler folds every test of a flag out of the loop body.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace arenagrad {

// Calls f with two compile-time flags saying which operands are shared scalars.
template <class F>
void with_kinds(bool a_shared, bool b_shared, F&& f) {
    if (a_shared) {
        if (b_shared) {
            f(std::true_type{}, std::true_type{});
        } else {
            f(std::true_type{}, std::false_type{});
        }
    } else if (b_shared) {
        f(std::false_type{}, std::true_type{});
    } else {
        f(std::false_type{}, std::false_type{});
    }
}

// Calls f with compile-time flags for three runtime ones.
template <class F>
void with_flags(bool x, bool y, bool z, F&& f) {
    const auto b = [](bool v, auto g) {
        if (v) {
            g(std::true_type{});
        } else {
            g(std::false_type{});
        }
    };
    b(x, [&](auto X) { b(y, [&](auto Y) { b(z, [&](auto Z) { f(X, Y, Z); }); }); });
}

// True when every grad of the row is finite: the row loops then use the rules' FiniteGrad form,
// plain products, as the arena's sweep does; the general form costs the vectorized loops 3x.
inline bool all_finite(const double* g, std::size_t n) {
    // Integer bit tests, which vectorize (a floating-point test would not): a double is inf or NaN
    // when its exponent bits are all ones, and adding one at the exponent's lowest bit then carries
    // into the sign bit.
    constexpr std::uint64_t kExponent = 0x7FF0000000000000u;
    std::uint64_t carry = 0;
    for (std::size_t s = 0; s < n; ++s) {
        std::uint64_t bits;
        std::memcpy(&bits, g + s, sizeof bits);
        carry |= (bits & kExponent) + (std::uint64_t{1} << 52);
    }
    return (carry >> 63) == 0;
}

}  // namespace arenagrad
