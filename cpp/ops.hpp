// The op table: the single source of truth for what every op computes.
//
// Each op is one struct holding its forward rule and its local derivatives side by side, so a
// tangent (forward-mode) rule, which is just sum_i partial_i * tangent_i, can be derived from the
// same place later. Adding an op means: write its struct here, add one line to
// ARENAGRAD_ELEMENTARY_OPS, and (for the pure-Python side) the reference engine. The arena, the
// backward sweep and the Python binding are all generated from this list.
//
// Forward rules follow Python's float and math-module semantics, because that is what the
// users' micrograd code did before: errors are reported as a Status (never thrown, never a
// silent inf/nan where Python would raise), and NaN inputs propagate without error.
// Derivatives never fail: where one is infinite or undefined it is inf/nan under IEEE rules.
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

// Local derivatives of an op's output with respect to its (at most two) inputs.
struct Partials {
    double da;
    double db;
};

namespace rules {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

inline Eval ok(double v) { return {v, Status::Ok}; }

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

struct Add {
    static constexpr const char* name = "+";
    static constexpr int arity = 2;
    static Eval forward(double a, double b) { return ok(a + b); }
    static Partials partials(double, double, double) { return {1.0, 1.0}; }
};

struct Sub {
    static constexpr const char* name = "-";
    static constexpr int arity = 2;
    static Eval forward(double a, double b) { return ok(a - b); }
    static Partials partials(double, double, double) { return {1.0, -1.0}; }
};

struct Mul {
    static constexpr const char* name = "*";
    static constexpr int arity = 2;
    static Eval forward(double a, double b) { return ok(a * b); }
    static Partials partials(double a, double b, double) { return {b, a}; }
};

struct Div {
    static constexpr const char* name = "/";
    static constexpr int arity = 2;
    static Eval forward(double a, double b) {
        if (b == 0.0) return {0.0, Status::ZeroDivision};
        return ok(a / b);
    }
    // -a/b^2 as -(a/b)/b, as PyTorch does: b*b underflows to zero for |b| < 1e-162.
    static Partials partials(double, double b, double out) { return {1.0 / b, -(out / b)}; }
};

// a ** b with a Value exponent: gradients flow to both.
struct Pow {
    static constexpr const char* name = "**";
    static constexpr int arity = 2;
    static Eval forward(double a, double b) { return python_pow(a, b); }
    static Partials partials(double a, double b, double out) {
        const double db = a > 0.0 ? out * std::log(a) : (a == 0.0 ? 0.0 : kNaN);
        return {pow_base_partial(a, b), db};
    }
};

// a ** k with a constant exponent. The exponent is stored as the node's second child, a constant
// leaf, so no node needs a separate constant field; no gradient flows into it.
struct PowConst {
    static constexpr const char* name = "**";  // the binding appends the exponent: "**2"
    static constexpr int arity = 2;
    static Eval forward(double a, double k) { return python_pow(a, k); }
    static Partials partials(double a, double k, double) { return {pow_base_partial(a, k), 0.0}; }
};

struct Neg {
    static constexpr const char* name = "neg";
    static constexpr int arity = 1;
    static Eval forward(double a, double) { return ok(-a); }
    static Partials partials(double, double, double) { return {-1.0, 0.0}; }
};

struct Exp {
    static constexpr const char* name = "exp";
    static constexpr int arity = 1;
    static Eval forward(double a, double) {
        const double r = std::exp(a);
        if (std::isinf(r) && std::isfinite(a)) return {r, Status::Overflow};
        return ok(r);
    }
    static Partials partials(double, double, double out) { return {out, 0.0}; }
};

struct Log {
    static constexpr const char* name = "log";
    static constexpr int arity = 1;
    static Eval forward(double a, double) {
        if (a <= 0.0) return {0.0, Status::Domain};  // false for nan: nan propagates
        return ok(std::log(a));
    }
    static Partials partials(double a, double, double) { return {1.0 / a, 0.0}; }
};

struct Sqrt {
    static constexpr const char* name = "sqrt";
    static constexpr int arity = 1;
    static Eval forward(double a, double) {
        if (a < 0.0) return {0.0, Status::Domain};
        return ok(std::sqrt(a));
    }
    static Partials partials(double, double, double out) { return {0.5 / out, 0.0}; }
};

struct Tanh {
    static constexpr const char* name = "tanh";
    static constexpr int arity = 1;
    static Eval forward(double a, double) { return ok(std::tanh(a)); }
    static Partials partials(double, double, double out) { return {1.0 - out * out, 0.0}; }
};

struct Sigmoid {
    static constexpr const char* name = "sigmoid";
    static constexpr int arity = 1;
    // Two branches so exp never overflows: large |a| saturates to 0 or 1 instead of inf/inf.
    static Eval forward(double a, double) {
        if (a >= 0.0) return ok(1.0 / (1.0 + std::exp(-a)));
        const double e = std::exp(a);
        return ok(e / (1.0 + e));
    }
    static Partials partials(double, double, double out) { return {out * (1.0 - out), 0.0}; }
};

struct Relu {
    static constexpr const char* name = "ReLU";  // micrograd's spelling, shown in graph pictures
    static constexpr int arity = 1;
    static Eval forward(double a, double) { return ok(a < 0.0 ? 0.0 : a); }
    static Partials partials(double a, double, double) { return {a > 0.0 ? 1.0 : 0.0, 0.0}; }
};

struct Sin {
    static constexpr const char* name = "sin";
    static constexpr int arity = 1;
    static Eval forward(double a, double) {
        if (std::isinf(a)) return {0.0, Status::Domain};
        return ok(std::sin(a));
    }
    static Partials partials(double a, double, double) { return {std::cos(a), 0.0}; }
};

struct Cos {
    static constexpr const char* name = "cos";
    static constexpr int arity = 1;
    static Eval forward(double a, double) {
        if (std::isinf(a)) return {0.0, Status::Domain};
        return ok(std::cos(a));
    }
    static Partials partials(double a, double, double) { return {-std::sin(a), 0.0}; }
};

struct Abs {
    static constexpr const char* name = "abs";
    static constexpr int arity = 1;
    static Eval forward(double a, double) { return ok(std::fabs(a)); }
    static Partials partials(double a, double, double) {
        return {a > 0.0 ? 1.0 : (a < 0.0 ? -1.0 : (a == 0.0 ? 0.0 : kNaN)), 0.0};
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
};

inline bool is_nary(Op op) { return op == Op::Sum || op == Op::Dot; }

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
        default:
            return visit_elementary(op, [](auto rule) { return decltype(rule)::name; });
    }
}

}  // namespace arenagrad
