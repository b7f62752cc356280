// The op table: the single source of truth for what every op computes.
//
// Each op is one struct holding its forward rule and its vector-Jacobian product (what each input's
// grad gains from the output's grad g) side by side. Adding an op means: write its struct here, add
// one line to ARENAGRAD_ELEMENTARY_OPS, and write the same formulas, in the same operation order, in
// the pure-Python reference engine (python/arenagrad/reference.py); tests/test_determinism.py fails
// until the two agree bit for bit. The arena, the backward sweep, replay and the Python binding
// are all generated from this list.
//
// Forward rules follow Python's float and math-module semantics, because that is what the
// users' micrograd code did before: errors are reported as a Status (never thrown, never a
// silent inf/nan where Python would raise), and NaN inputs propagate without error.
// Derivatives never fail: where one is infinite or undefined it is inf/nan under IEEE rules,
// except that an exactly zero local derivative contributes nothing (see rules::scale).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace arenagrad {

enum class Status : std::uint8_t {
    Ok,
    ZeroDivision,  // Python's ZeroDivisionError
    Domain,        // ValueError: input outside the function's domain
    Overflow,      // OverflowError: a finite input gave an infinite result
};

struct Eval {
    double value;
    Status status;
};

// What one op adds to its inputs' grads, given the grad g of its output (a vector-Jacobian
// product). Rules return contributions rather than bare partials so that each can use the
// numerically right form: g / b where multiplying by 1/b would overflow for subnormal b.
struct Grads {
    double a;
    double b;
};

namespace rules {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

inline Eval ok(double v) { return {v, Status::Ok}; }

// How a rule multiplies the output's grad g by a local derivative p. A term whose local
// derivative is exactly zero contributes nothing (zero), even when g is infinite or NaN, where
// 0 * inf would otherwise poison the sum with NaN (torch and the reference engine agree).
// AnyGrad is that rule; FiniteGrad is the same rule for a g known to be finite, where it is a
// plain product, and lets the backward sweep skip the test for every term of a finite grad.
struct AnyGrad {
    // Written as a select of two comparisons (g - g is 0 exactly when g is finite) so that the
    // batched replay's loops over samples stay vectorized.
    static double scale(double g, double p) {
        const double r = g * p;
        return (p == 0.0) & (g - g != 0.0) ? 0.0 : r;
    }
};
struct FiniteGrad {
    static double scale(double g, double p) { return g * p; }
};

inline bool is_integral(double x) { return std::isfinite(x) && std::floor(x) == x; }

// float.__pow__'s rules (CPython's float_pow), except that a negative base with a fractional
// exponent, which Python answers with a complex number, is a ValueError here.
inline Eval python_pow(double a, double b) {
    if (b == 0.0) return ok(1.0);  // even nan ** 0 == 1.0
    if (a == 1.0) return ok(1.0);  // even 1 ** nan == 1.0
    if (std::isnan(a) || std::isnan(b)) return ok(kNaN);
    if (std::isinf(b)) return ok(std::pow(a, b));  // C99 and Python agree here: 0 ** -inf == inf
    if (a == 0.0 && b < 0.0) return {0.0, Status::ZeroDivision};
    if (a < 0.0 && std::isfinite(a) && std::isfinite(b) && !is_integral(b)) return {0.0, Status::Domain};
    const double r = std::pow(a, b);
    if (std::isinf(r) && std::isfinite(a) && std::isfinite(b)) return {r, Status::Overflow};
    return ok(r);
}

// d/da of a ** b. PyTorch's convention: exactly 0 when the exponent is 0 (avoids 0 * inf).
inline double pow_base_partial(double a, double b) { return b == 0.0 ? 0.0 : b * std::pow(a, b - 1.0); }

// d/db of a ** b = out * log(a). PyTorch's convention at a == 0 (reachable only with b >= 0): 0.
// A negative base gives NaN (log of a negative number), as in PyTorch.
inline double pow_exponent_partial(double a, double out) { return a == 0.0 ? 0.0 : out * std::log(a); }

// The logistic function, in two branches so exp never overflows: large |a| saturates to 0 or 1.
inline double sigmoid(double a) {
    if (a >= 0.0) return 1.0 / (1.0 + std::exp(-a));
    const double e = std::exp(a);
    return e / (1.0 + e);
}

struct Add {
    static constexpr const char* name = "+";
    static constexpr int arity = 2;
    static Eval forward(double a, double b) { return ok(a + b); }
    template <class G = AnyGrad>
    static Grads vjp(double g, double, double, double) { return {g, g}; }
};

struct Sub {
    static constexpr const char* name = "-";
    static constexpr int arity = 2;
    static Eval forward(double a, double b) { return ok(a - b); }
    template <class G = AnyGrad>
    static Grads vjp(double g, double, double, double) { return {g, -g}; }
};

struct Mul {
    static constexpr const char* name = "*";
    static constexpr int arity = 2;
    static Eval forward(double a, double b) { return ok(a * b); }
    template <class G = AnyGrad>
    static Grads vjp(double g, double a, double b, double) { return {G::scale(g, b), G::scale(g, a)}; }
};

struct Div {
    static constexpr const char* name = "/";
    static constexpr int arity = 2;
    static Eval forward(double a, double b) {
        if (b == 0.0) return {0.0, Status::ZeroDivision};
        return ok(a / b);
    }
    // g / b, not g * (1/b), which overflows for subnormal b; -a/b^2 as -(a/b)/b, as PyTorch does
    // (b*b underflows to zero for |b| < 1e-162).
    template <class G = AnyGrad>
    static Grads vjp(double g, double, double b, double out) { return {g / b, G::scale(g, -(out / b))}; }
};

// a ** b with a Value exponent: gradients flow to both.
struct Pow {
    static constexpr const char* name = "**";
    static constexpr int arity = 2;
    static Eval forward(double a, double b) { return python_pow(a, b); }
    template <class G = AnyGrad>
    static Grads vjp(double g, double a, double b, double out) {
        return {G::scale(g, pow_base_partial(a, b)), G::scale(g, pow_exponent_partial(a, out))};
    }
};

// a ** k with a constant exponent. The exponent is stored as the node's second child, a constant
// leaf, so no node needs a separate constant field; no gradient flows into it.
struct PowConst {
    static constexpr const char* name = "**";  // the binding appends the exponent: "**2"
    static constexpr int arity = 2;
    static Eval forward(double a, double k) { return python_pow(a, k); }
    template <class G = AnyGrad>
    static Grads vjp(double g, double a, double k, double) { return {G::scale(g, pow_base_partial(a, k)), 0.0}; }
};

struct Neg {
    static constexpr const char* name = "neg";
    static constexpr int arity = 1;
    static Eval forward(double a, double) { return ok(-a); }
    template <class G = AnyGrad>
    static Grads vjp(double g, double, double, double) { return {-g, 0.0}; }
};

struct Exp {
    static constexpr const char* name = "exp";
    static constexpr int arity = 1;
    static Eval forward(double a, double) {
        const double r = std::exp(a);
        if (std::isinf(r) && std::isfinite(a)) return {r, Status::Overflow};
        return ok(r);
    }
    template <class G = AnyGrad>
    static Grads vjp(double g, double, double, double out) { return {G::scale(g, out), 0.0}; }
};

struct Log {
    static constexpr const char* name = "log";
    static constexpr int arity = 1;
    static Eval forward(double a, double) {
        if (a <= 0.0) return {0.0, Status::Domain};  // false for nan: nan propagates
        return ok(std::log(a));
    }
    template <class G = AnyGrad>
    static Grads vjp(double g, double a, double, double) { return {g / a, 0.0}; }  // g / a: see Div
};

struct Sqrt {
    static constexpr const char* name = "sqrt";
    static constexpr int arity = 1;
    static Eval forward(double a, double) {
        if (a < 0.0) return {0.0, Status::Domain};
        return ok(std::sqrt(a));
    }
    // PyTorch's g / (2 * out); the local derivative is exactly zero only at out = inf.
    template <class G = AnyGrad>
    static Grads vjp(double g, double, double, double out) { return {out == kInf ? 0.0 : g / (2.0 * out), 0.0}; }
};

struct Tanh {
    static constexpr const char* name = "tanh";
    static constexpr int arity = 1;
    static Eval forward(double a, double) { return ok(std::tanh(a)); }
    template <class G = AnyGrad>
    static Grads vjp(double g, double, double, double out) { return {G::scale(g, 1.0 - out * out), 0.0}; }
};

struct Sigmoid {
    static constexpr const char* name = "sigmoid";
    static constexpr int arity = 1;
    static Eval forward(double a, double) { return ok(sigmoid(a)); }
    template <class G = AnyGrad>
    static Grads vjp(double g, double, double, double out) { return {G::scale(g, out * (1.0 - out)), 0.0}; }
};

// log(1 + exp(a)), never overflowing: for a > 0 it is a + log1p(exp(-a)). The branch is inside
// the op, so a recorded Tape re-decides it for every replayed input.
struct Softplus {
    static constexpr const char* name = "softplus";
    static constexpr int arity = 1;
    static Eval forward(double a, double) {
        if (a > 0.0) return ok(a + std::log1p(std::exp(-a)));
        return ok(std::log1p(std::exp(a)));  // nan falls through here and propagates
    }
    template <class G = AnyGrad>
    static Grads vjp(double g, double a, double, double) { return {G::scale(g, sigmoid(a)), 0.0}; }
};

struct Relu {
    static constexpr const char* name = "ReLU";  // micrograd's spelling, shown in graph pictures
    static constexpr int arity = 1;
    // PyTorch's relu: relu(-0.0) is -0.0 and NaN propagates.
    static Eval forward(double a, double) { return ok(a < 0.0 ? 0.0 : a); }
    template <class G = AnyGrad>
    static Grads vjp(double g, double a, double, double) { return {a > 0.0 ? g : 0.0, 0.0}; }
};

struct Sin {
    static constexpr const char* name = "sin";
    static constexpr int arity = 1;
    static Eval forward(double a, double) {
        if (std::isinf(a)) return {0.0, Status::Domain};
        return ok(std::sin(a));
    }
    template <class G = AnyGrad>
    static Grads vjp(double g, double a, double, double) { return {G::scale(g, std::cos(a)), 0.0}; }
};

struct Cos {
    static constexpr const char* name = "cos";
    static constexpr int arity = 1;
    static Eval forward(double a, double) {
        if (std::isinf(a)) return {0.0, Status::Domain};
        return ok(std::cos(a));
    }
    template <class G = AnyGrad>
    static Grads vjp(double g, double a, double, double) { return {G::scale(g, -std::sin(a)), 0.0}; }
};

struct Abs {
    static constexpr const char* name = "abs";
    static constexpr int arity = 1;
    static Eval forward(double a, double) { return ok(std::fabs(a)); }
    // PyTorch's sign(a): 0 at a == 0, NaN at NaN.
    template <class G = AnyGrad>
    static Grads vjp(double g, double a, double, double) {
        return {G::scale(g, a > 0.0 ? 1.0 : (a < 0.0 ? -1.0 : (a == 0.0 ? 0.0 : kNaN))), 0.0};
    }
};

// --- n-ary rules: x(i) reads input i, so the arena (through its child pool) and batched replay
// (through rows) share one definition. Summation is always in input order, from 0.0. ---

struct Sum {
    template <class X>
    static double forward(std::uint32_t n, X x) {
        double total = 0.0;
        for (std::uint32_t i = 0; i < n; ++i) total += x(i);
        return total;
    }
};

// sum_i w_i * x_i; inputs are w_0..w_{n-1}, x_0..x_{n-1}. Grads go to w_0, x_0, w_1, x_1, ...
struct Dot {
    template <class W, class X>
    static double forward(std::uint32_t n, W w, X x) {
        double total = 0.0;
        for (std::uint32_t i = 0; i < n; ++i) total += w(i) * x(i);
        return total;
    }
};

// log(sum_i exp(x_i)), shifted by the largest input so no exp overflows; its local derivatives
// are the softmax exp(x_i - out). Like Softplus, the shift is decided inside the op at every
// evaluation. Any NaN input gives NaN; all inputs -inf (or none) give -inf; any +inf gives +inf.
struct LogSumExp {
    template <class X>
    static double forward(std::uint32_t n, X x) {
        double m = -kInf;
        bool nan = false;
        for (std::uint32_t i = 0; i < n; ++i) {
            const double v = x(i);
            nan |= std::isnan(v);
            if (v > m) m = v;
        }
        if (nan) return kNaN;
        if (std::isinf(m)) return m;
        double s = 0.0;
        for (std::uint32_t i = 0; i < n; ++i) s += std::exp(x(i) - m);
        return m + std::log(s);
    }
    template <class G = AnyGrad>
    static double vjp(double g, double xi, double out) {
        return G::scale(g, std::exp(xi - out));
    }
};

}  // namespace rules

// X(EnumName, RuleStruct, python_method_name). Unary ops get a Value method of that name;
// binary ops are reached through Python's operators, so their method name is unused.
#define ARENAGRAD_ELEMENTARY_OPS(X) \
    X(Add, rules::Add, add)         \
    X(Sub, rules::Sub, sub)         \
    X(Mul, rules::Mul, mul)         \
    X(Div, rules::Div, div)         \
    X(Pow, rules::Pow, pow)         \
    X(PowConst, rules::PowConst, pow_const) \
    X(Neg, rules::Neg, neg)         \
    X(Exp, rules::Exp, exp)         \
    X(Log, rules::Log, log)         \
    X(Sqrt, rules::Sqrt, sqrt)      \
    X(Tanh, rules::Tanh, tanh)      \
    X(Sigmoid, rules::Sigmoid, sigmoid) \
    X(Softplus, rules::Softplus, softplus) \
    X(Relu, rules::Relu, relu)      \
    X(Sin, rules::Sin, sin)         \
    X(Cos, rules::Cos, cos)         \
    X(Abs, rules::Abs, abs)

enum class Op : std::uint8_t {
    Leaf,
#define ARENAGRAD_ENUM(name, rule, method) name,
    ARENAGRAD_ELEMENTARY_OPS(ARENAGRAD_ENUM)
#undef ARENAGRAD_ENUM
    // n-ary ops: their children live in the arena's child pool, not in the two child fields.
    Sum,  // sum_i a_i
    Dot,  // sum_i w_i * x_i, children stored as [w_0..w_{n-1}, x_0..x_{n-1}]
    LogSumExp,  // log(sum_i exp(a_i))
};

inline bool is_nary(Op op) { return op == Op::Sum || op == Op::Dot || op == Op::LogSumExp; }

// How many of a rule's inputs are children that receive gradient: all of them, except
// PowConst's constant exponent, which is an implementation detail hidden from _prev.
template <class Rule>
constexpr int differentiable_inputs() {
    return Rule::arity;
}
template <>
constexpr int differentiable_inputs<rules::PowConst>() {
    return 1;
}

// Rules whose vjp never calls G::scale: their FiniteGrad and AnyGrad forms are the same code, so
// batched replay skips its test of the grad row for them. (Leaving a rule out only costs time.)
template <class Rule>
constexpr bool scales_grad = true;
template <>
constexpr bool scales_grad<rules::Add> = false;
template <>
constexpr bool scales_grad<rules::Sub> = false;
template <>
constexpr bool scales_grad<rules::Neg> = false;
template <>
constexpr bool scales_grad<rules::Log> = false;
template <>
constexpr bool scales_grad<rules::Sqrt> = false;
template <>
constexpr bool scales_grad<rules::Relu> = false;

// Calls f(Rule{}) for an elementary op; the switch lets the compiler inline each rule into
// the caller's loop (no indirect call per node in the backward sweep).
template <class F>
inline auto visit_elementary(Op op, F&& f) {
    switch (op) {
#define ARENAGRAD_CASE(name, rule, method) \
    case Op::name:                         \
        return f(rule{});
        ARENAGRAD_ELEMENTARY_OPS(ARENAGRAD_CASE)
#undef ARENAGRAD_CASE
        default:
            return f(rules::Add{});  // unreachable: callers pass elementary ops only
    }
}

inline int arity(Op op) {
    if (op == Op::Leaf || is_nary(op)) return 0;
    return visit_elementary(op, [](auto rule) { return decltype(rule)::arity; });
}

inline const char* op_name(Op op) {
    switch (op) {
        case Op::Leaf:
            return "";
        case Op::Sum:
            return "sum";
        case Op::Dot:
            return "dot";
        case Op::LogSumExp:
            return "logsumexp";
        default:
            return visit_elementary(op, [](auto rule) { return decltype(rule)::name; });
    }
}

}  // namespace arenagrad
