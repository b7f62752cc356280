// The op table: the single source of truth for what every op computes.
//
// Each op is one struct holding its forward rule and its vector-Jacobian product (what each input's
// grad gains from the output's grad g) side by side. Adding an op means: write its struct here, add
// one line to ARENAGRAD_ELEMENTARY_OPS, and write the same formulas, in the same operation order, in
// the pure-Python reference engine (python/arenagrad/reference.py); tests/test_determinism.py fails
// until the two agree bit for bit. The arena, the backward sweep, replay and the Python binding
// are all generated from this list.
//
// Every derivative comes from the vjp, written once over the scalar type S: with double it is
// the backward sweep (and, by linearity, forward mode and dual numbers); with a type whose
// arithmetic records arena nodes (cpp/node.hpp) it builds the backward pass itself as a graph,
// which can be differentiated again. So a vjp may use only +, -, *, / (IEEE division), the
// table's functions, and the helpers below; a comparison belongs in a helper that has a double
// form and a form built from table ops with zero derivative (step, sign, nonzero), so that
// derivative graphs are made of table ops only and differentiating them closes.
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
#include <type_traits>
#include <utility>

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
// A vjp is linear in g, so the same rule also gives forward mode: an input's tangent t
// contributes vjp(t, ...) to the output's tangent.
template <class S>
struct Pair {
    S a;
    S b;
};
using Grads = Pair<double>;

// X(EnumName, RuleStruct, python_method_name). Unary ops get a Value method of that name;
// binary ops are reached through Python's operators, so their method name is unused. The last
// group appears only in derivative graphs (see "ops that derivative graphs are made of").
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
    X(Abs, rules::Abs, abs)         \
    X(Step, rules::Step, step)      \
    X(Sign, rules::Sign, sign)      \
    X(NonZero, rules::NonZero, nonzero) \
    X(Finite, rules::Finite, isfinite) \
    X(Scale, rules::Scale, scale)   \
    X(Select, rules::Select, select) \
    X(Quot, rules::Quot, quot)      \
    X(PowIeee, rules::PowIeee, pow_ieee) \
    X(MulLog, rules::MulLog, mul_log)

enum class Op : std::uint8_t {
    Leaf,
#define ARENAGRAD_ENUM(name, rule, method) name,
    ARENAGRAD_ELEMENTARY_OPS(ARENAGRAD_ENUM)
#undef ARENAGRAD_ENUM
    // n-ary ops, last (is_nary tests Op >= Sum): their children live in the arena's child pool,
    // not in the two child fields.
    Sum,  // sum_i a_i
    Dot,  // sum_i w_i * x_i, children stored as [w_0..w_{n-1}, x_0..x_{n-1}]
    LogSumExp,  // log(sum_i exp(a_i))
    Custom,     // an op defined outside the table (custom.hpp): children [x_0..x_{n-1}, partials]
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
    // Where p == 0, g * p is NaN exactly when g is not finite. Tested on the product, which is
    // computed anyway, so that the batched replay's loops over samples vectorize: GCC will not
    // if-convert a second floating-point operation (g - g) that could trap.
    static double scale(double g, double p) {
        const double r = g * p;
        return r != r && p == 0.0 ? 0.0 : r;
    }
};
struct FiniteGrad {
    static double scale(double g, double p) { return g * p; }
};
// Calls f(FiniteGrad{}) when the grads (or tangents) a loop scales are known to be finite, else
// f(AnyGrad{}): the two give the same numbers, the first with plain products.
template <class F>
void with_scale(bool finite, F&& f) {
    if (finite) {
        f(FiniteGrad{});
    } else {
        f(AnyGrad{});
    }
}

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

// The logistic function, in two branches so exp never overflows: large |a| saturates to 0 or 1.
inline double sigmoid(double a) {
    if (a >= 0.0) return 1.0 / (1.0 + std::exp(-a));
    const double e = std::exp(a);
    return e / (1.0 + e);
}

// --- the helpers a vjp may use, for any scalar type ---------------------------------------------
// Each has a double form and a generic form for a recording scalar type S, which provides
// S::apply(Op, a, b) and S::apply(Op, a) (see cpp/node.hpp). The two forms give equal values
// (up to the sign of a zero), so a recorded derivative evaluates to the number the sweep computes.

template <class S>
using if_recording = std::enable_if_t<std::is_class_v<S>, int>;

template <class G>
inline double scale(double g, double p) { return G::scale(g, p); }
// A scalar type that evaluates at once (kEvaluates: a dual number, cpp/tangent.hpp) may take
// FiniteGrad's promise (g finite) as the double form does: g * p is then the Scale op's value, and
// its tangent too (Scale's vjp, with g finite, adds Mul's two terms in Mul's order). A recording
// keeps the Scale op: its graph is evaluated again later, at values that promise nothing.
template <class G, class S, if_recording<S> = 0>
S scale(const S& g, const S& p) {
    if constexpr (std::is_same_v<G, FiniteGrad> && S::kEvaluates) {
        return g * p;
    } else {
        return S::apply(Op::Scale, g, p);
    }
}

// 1 where a > 0, else 0 (NaN included): relu's local derivative.
inline double step(double a) { return a > 0.0 ? 1.0 : 0.0; }
template <class S, if_recording<S> = 0>
S step(const S& a) { return S::apply(Op::Step, a); }

// PyTorch's sign: 0 at 0, NaN at NaN: abs's local derivative.
inline double sign(double a) { return a > 0.0 ? 1.0 : (a < 0.0 ? -1.0 : (a == 0.0 ? 0.0 : kNaN)); }
template <class S, if_recording<S> = 0>
S sign(const S& a) { return S::apply(Op::Sign, a); }

// 0 at 0, else 1 (NaN included): a mask that drops a term where a guard would.
inline double nonzero(double a) { return a != 0.0 ? 1.0 : 0.0; }
template <class S, if_recording<S> = 0>
S nonzero(const S& a) { return S::apply(Op::NonZero, a); }

// 1 where x is finite, else 0.
inline double finite(double x) { return std::isfinite(x) ? 1.0 : 0.0; }
template <class S, if_recording<S> = 0>
S finite(const S& x) { return S::apply(Op::Finite, x); }

// x where c != 0, else 0 (NaN counts as nonzero): PyTorch's masked_fill. x passes through
// unchanged, and where the mask is closed nothing flows back into x, so a guarded expression's
// derivatives are guarded too (a product by a 0/1 mask would turn an infinite x into NaN).
inline double select(double x, double c) { return c != 0.0 ? x : 0.0; }
template <class S, if_recording<S> = 0>
S select(const S& x, const S& c) { return S::apply(Op::Select, x, c); }

// g where a > 0, else 0: relu's vjp.
inline double where_positive(double a, double g) { return a > 0.0 ? g : 0.0; }
template <class S, if_recording<S> = 0>
S where_positive(const S& a, const S& g) { return select(g, step(a)); }

// a ** b under IEEE rules (pow(0, -1) = inf), never an error: derivatives are taken where the
// function is defined, but their own values may be infinite.
inline double pow_ieee(double a, double b) { return std::pow(a, b); }
template <class S, if_recording<S> = 0>
S pow_ieee(const S& a, const S& b) { return S::apply(Op::PowIeee, a, b); }

// x * log(y), 0 where y == 0 (PyTorch's convention for the exponent grad of 0 ** b).
inline double mul_log(double x, double y) { return y == 0.0 ? 0.0 : x * std::log(y); }
template <class S, if_recording<S> = 0>
S mul_log(const S& x, const S& y) { return S::apply(Op::MulLog, x, y); }

// d/da of a ** b. PyTorch's convention: exactly 0 when the exponent is 0 (avoids 0 * inf).
inline double pow_base_partial(double a, double b) { return b == 0.0 ? 0.0 : b * std::pow(a, b - 1.0); }
template <class S, if_recording<S> = 0>
S pow_base_partial(const S& a, const S& b) { return select(b * pow_ieee(a, b - 1.0), b); }

// d/db of a ** b = out * log(a). PyTorch's convention at a == 0 (reachable only with b >= 0): 0.
// A negative base gives NaN (log of a negative number), as in PyTorch.
template <class S>
S pow_exponent_partial(const S& a, const S& out) { return mul_log(out, a); }

// g / (2 * out), sqrt's vjp; 0 at out = inf (where g / inf would be NaN for an infinite g).
inline double half_quotient(double g, double out) { return out == kInf ? 0.0 : g / (2.0 * out); }
template <class S, if_recording<S> = 0>
S half_quotient(const S& g, const S& out) {
    // Named so the nodes are created in one order whatever the compiler (the reference engine
    // creates them in the same order, which fixes the summation order of later derivatives).
    const S mask = 1.0 / out;
    const S quotient = g / (2.0 * out);
    return select(quotient, mask);
}

// A constant of the scalar type: the arithmetic of S turns doubles into constant leaves.
template <class S>
S constant_like(const S& x, double c) {
    if constexpr (std::is_class_v<S>) {
        return x.constant(c);
    } else {
        return c;
    }
}

// --- the ops ------------------------------------------------------------------------------------
// vjp<G>(g, a, b, out): G picks how the sweep scales a double g (AnyGrad or FiniteGrad); a
// recording S ignores it. An unused second contribution is S{}.

struct Add {
    static constexpr const char* name = "+";
    static constexpr int arity = 2;
    static Eval forward(double a, double b) { return ok(a + b); }
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S& g, const S&, const S&, const S&) { return {g, g}; }
};

struct Sub {
    static constexpr const char* name = "-";
    static constexpr int arity = 2;
    static Eval forward(double a, double b) { return ok(a - b); }
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S& g, const S&, const S&, const S&) { return {g, -g}; }
};

struct Mul {
    static constexpr const char* name = "*";
    static constexpr int arity = 2;
    static Eval forward(double a, double b) { return ok(a * b); }
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S& g, const S& a, const S& b, const S&) { return {scale<G>(g, b), scale<G>(g, a)}; }
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
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S& g, const S&, const S& b, const S& out) { return {g / b, scale<G>(g, -(out / b))}; }
};

// a ** b with a Value exponent: gradients flow to both.
struct Pow {
    static constexpr const char* name = "**";
    static constexpr int arity = 2;
    static Eval forward(double a, double b) { return python_pow(a, b); }
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S& g, const S& a, const S& b, const S& out) {
        return {scale<G>(g, pow_base_partial(a, b)), scale<G>(g, pow_exponent_partial(a, out))};
    }
};

// a ** k with a constant exponent. The exponent is stored as the node's second child, a constant
// leaf, so no node needs a separate constant field; no gradient flows into it.
struct PowConst {
    static constexpr const char* name = "**";  // the binding appends the exponent: "**2"
    static constexpr int arity = 2;
    static Eval forward(double a, double k) { return python_pow(a, k); }
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S& g, const S& a, const S& k, const S&) { return {scale<G>(g, pow_base_partial(a, k)), S{}}; }
};

struct Neg {
    static constexpr const char* name = "neg";
    static constexpr int arity = 1;
    static Eval forward(double a, double) { return ok(-a); }
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S& g, const S&, const S&, const S&) { return {-g, S{}}; }
};

struct Exp {
    static constexpr const char* name = "exp";
    static constexpr int arity = 1;
    static Eval forward(double a, double) {
        const double r = std::exp(a);
        if (std::isinf(r) && std::isfinite(a)) return {r, Status::Overflow};
        return ok(r);
    }
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S& g, const S&, const S&, const S& out) { return {scale<G>(g, out), S{}}; }
};

struct Log {
    static constexpr const char* name = "log";
    static constexpr int arity = 1;
    static Eval forward(double a, double) {
        if (a <= 0.0) return {0.0, Status::Domain};  // false for nan: nan propagates
        return ok(std::log(a));
    }
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S& g, const S& a, const S&, const S&) { return {g / a, S{}}; }  // g / a: see Div
};

struct Sqrt {
    static constexpr const char* name = "sqrt";
    static constexpr int arity = 1;
    static Eval forward(double a, double) {
        if (a < 0.0) return {0.0, Status::Domain};
        return ok(std::sqrt(a));
    }
    // PyTorch's g / (2 * out); the local derivative is exactly zero only at out = inf.
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S& g, const S&, const S&, const S& out) { return {half_quotient(g, out), S{}}; }
};

struct Tanh {
    static constexpr const char* name = "tanh";
    static constexpr int arity = 1;
    static Eval forward(double a, double) { return ok(std::tanh(a)); }
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S& g, const S&, const S&, const S& out) { return {scale<G>(g, 1.0 - out * out), S{}}; }
};

struct Sigmoid {
    static constexpr const char* name = "sigmoid";
    static constexpr int arity = 1;
    static Eval forward(double a, double) { return ok(sigmoid(a)); }
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S& g, const S&, const S&, const S& out) { return {scale<G>(g, out * (1.0 - out)), S{}}; }
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
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S& g, const S& a, const S&, const S&) { return {scale<G>(g, sigmoid(a)), S{}}; }
};

struct Relu {
    static constexpr const char* name = "ReLU";  // micrograd's spelling, shown in graph pictures
    static constexpr int arity = 1;
    // PyTorch's relu: relu(-0.0) is -0.0 and NaN propagates.
    static Eval forward(double a, double) { return ok(a < 0.0 ? 0.0 : a); }
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S& g, const S& a, const S&, const S&) { return {where_positive(a, g), S{}}; }
};

struct Sin {
    static constexpr const char* name = "sin";
    static constexpr int arity = 1;
    static Eval forward(double a, double) {
        if (std::isinf(a)) return {0.0, Status::Domain};
        return ok(std::sin(a));
    }
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S& g, const S& a, const S&, const S&) {
        using std::cos;
        return {scale<G>(g, cos(a)), S{}};
    }
};

struct Cos {
    static constexpr const char* name = "cos";
    static constexpr int arity = 1;
    static Eval forward(double a, double) {
        if (std::isinf(a)) return {0.0, Status::Domain};
        return ok(std::cos(a));
    }
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S& g, const S& a, const S&, const S&) {
        using std::sin;
        return {scale<G>(g, -sin(a)), S{}};
    }
};

struct Abs {
    static constexpr const char* name = "abs";
    static constexpr int arity = 1;
    static Eval forward(double a, double) { return ok(std::fabs(a)); }
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S& g, const S& a, const S&, const S&) { return {scale<G>(g, sign(a)), S{}}; }
};

// --- ops that derivative graphs are made of ---
// Piecewise-constant masks: their derivative is zero everywhere it exists, so backward gives
// their input nothing (the sweep adds zeros, a recorded pass adds no node).

struct Step {
    static constexpr const char* name = "step";
    static constexpr int arity = 1;
    static constexpr bool zero_derivative = true;
    static Eval forward(double a, double) { return ok(step(a)); }
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S&, const S&, const S&, const S&) { return {S{}, S{}}; }
};

struct Sign {
    static constexpr const char* name = "sign";
    static constexpr int arity = 1;
    static constexpr bool zero_derivative = true;
    static Eval forward(double a, double) { return ok(sign(a)); }
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S&, const S&, const S&, const S&) { return {S{}, S{}}; }
};

struct Finite {
    static constexpr const char* name = "isfinite";
    static constexpr int arity = 1;
    static constexpr bool zero_derivative = true;
    static Eval forward(double a, double) { return ok(finite(a)); }
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S&, const S&, const S&, const S&) { return {S{}, S{}}; }
};

struct NonZero {
    static constexpr const char* name = "nonzero";
    static constexpr int arity = 1;
    static constexpr bool zero_derivative = true;
    static Eval forward(double a, double) { return ok(nonzero(a)); }
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S&, const S&, const S&, const S&) { return {S{}, S{}}; }
};

// g * p, except 0 where p == 0 and g is not finite: the sweep's scale (AnyGrad), as an op, so a
// recorded derivative keeps the zero-derivative convention and evaluates to the sweep's number.
struct Scale {
    static constexpr const char* name = "*";
    static constexpr int arity = 2;
    static Eval forward(double g, double p) { return ok(AnyGrad::scale(g, p)); }
    // Where the mask fired (p == 0, g not finite) the op is a constant 0: nothing flows back.
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S& h, const S& g, const S& p, const S&) {
        S to_g = scale<G>(h, p);
        const S g_finite = finite(g);  // named: one creation order whatever the compiler (see half_quotient)
        const S open = nonzero(p) + g_finite;
        const S product = scale<G>(h, g);
        return {std::move(to_g), select(product, open)};
    }
};

// x where c != 0, else 0 (select): the guard of a guarded expression. c is a mask: it gets no
// gradient (zero in the sweep, no node when recorded), like Step's input.
struct Select {
    static constexpr const char* name = "select";
    static constexpr int arity = 2;
    static Eval forward(double x, double c) { return ok(select(x, c)); }
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S& g, const S&, const S& c, const S&) { return {select(g, c), S{}}; }
};

// a / b under IEEE rules (x / 0 = inf): division inside derivatives, which never raises.
struct Quot {
    static constexpr const char* name = "/";
    static constexpr int arity = 2;
    static Eval forward(double a, double b) { return ok(a / b); }
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S& g, const S& a, const S& b, const S& out) { return Div::vjp<G>(g, a, b, out); }
};

// a ** b under IEEE rules (pow_ieee): the powers inside pow's own derivative.
struct PowIeee {
    static constexpr const char* name = "**";
    static constexpr int arity = 2;
    static Eval forward(double a, double b) { return ok(pow_ieee(a, b)); }
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S& g, const S& a, const S& b, const S& out) { return Pow::vjp<G>(g, a, b, out); }
};

// x * log(y), 0 at y == 0 (mul_log): pow's exponent partial.
struct MulLog {
    static constexpr const char* name = "xlogy";
    static constexpr int arity = 2;
    static Eval forward(double x, double y) { return ok(mul_log(x, y)); }
    // d/dx = log(y), d/dy = x / y, each 0 at y == 0 like the function.
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S& g, const S& x, const S& y, const S&) {
        return {scale<G>(g, mul_log(constant_like(y, 1.0), y)), scale<G>(g, select(x / y, y))};
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
    // Each input's contribution.
    template <class G = AnyGrad, class S>
    static S vjp(const S& g) { return g; }
};

// sum_i w_i * x_i; inputs are w_0..w_{n-1}, x_0..x_{n-1}. Grads go to w_0, x_0, w_1, x_1, ...
struct Dot {
    template <class W, class X>
    static double forward(std::uint32_t n, W w, X x) {
        double total = 0.0;
        for (std::uint32_t i = 0; i < n; ++i) total += w(i) * x(i);
        return total;
    }
    // The contributions to w_i and x_i.
    template <class G = AnyGrad, class S>
    static Pair<S> vjp(const S& g, const S& w, const S& x) { return {scale<G>(g, x), scale<G>(g, w)}; }
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
    template <class G = AnyGrad, class S>
    static S vjp(const S& g, const S& xi, const S& out) {
        using std::exp;
        return scale<G>(g, exp(xi - out));
    }
};

}  // namespace rules

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

// The n-ary ops come last in Op, so this is one comparison on the sweep's per-node path.
inline bool is_nary(Op op) { return op >= Op::Sum; }

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


// Masks (Step, Sign, NonZero, Finite) give their input no gradient; a recorded pass skips them.
template <class Rule, class = void>
constexpr bool has_zero_derivative = false;
template <class Rule>
constexpr bool has_zero_derivative<Rule, std::void_t<decltype(Rule::zero_derivative)>> = Rule::zero_derivative;

// Rules whose vjp never calls scale: their FiniteGrad and AnyGrad forms are the same code, so
// batched replay skips its test of the grad row for them. (Leaving a rule out only costs time.)
template <class Rule>
constexpr bool scales_grad = !has_zero_derivative<Rule>;
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
template <>
constexpr bool scales_grad<rules::Select> = false;

// Rules whose vjp reads none of its values (a, b, out), only g: batched replay keeps no row of values
// for the backward pass of these. (Leaving a rule out only costs memory; a rule wrongly listed
// here reads rows of NaN, which the batched-vs-eager tests would see.)
template <class Rule>
constexpr bool vjp_reads_values = !has_zero_derivative<Rule>;
template <>
constexpr bool vjp_reads_values<rules::Add> = false;
template <>
constexpr bool vjp_reads_values<rules::Sub> = false;
template <>
constexpr bool vjp_reads_values<rules::Neg> = false;

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
        case Op::Custom:
            return "custom";
        default:
            return visit_elementary(op, [](auto rule) { return decltype(rule)::name; });
    }
}

}  // namespace arenagrad
