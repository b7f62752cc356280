// A dual number for the op table's generic rules: a value and its tangent along one direction.
//
// An op's value is its forward rule, its tangent the sum, in operand order, of its vjp applied to
// each active operand's tangent (a vjp is linear in g, so that is the jvp): the table again, as
// Tape::jvp uses it. Instantiating a rule's vjp with Tangent instead of double runs the backward
// pass itself in dual numbers, which differentiates the gradient along the direction (forward over
// reverse: a Hessian-vector product) without recording the gradient as a graph.
//
// `active` false is a symbolic zero (JAX's): a tangent known to be zero, which contributes nothing
// even where a local derivative is infinite or NaN, as in Tape::jvp. Sums start from the first
// active term, as Tape::jvp's do.
#pragma once

#include "ops.hpp"

namespace arenagrad {

//
// TG is how a tangent is scaled by a local derivative (rules::scale): AnyGrad, or FiniteGrad where every
// tangent is known to be finite, which gives the same numbers with plain products.
template <class TG>
struct BasicTangent {
    using Tangent = BasicTangent;
    double v = 0.0;
    double t = 0.0;
    bool active = false;

    static constexpr bool kEvaluates = true;  // see rules::scale

    Tangent constant(double c) const { return {c, 0.0, false}; }
    // A Tangent whose numbers do not matter: running a rule on probes says which of its terms are
    // active, which does not depend on the numbers (a sweep decides it once, before any sample).
    static Tangent probe(bool is_active) { return {1.0, 1.0, is_active}; }

    template <class Rule>
    static Tangent apply_rule(const Tangent& a, const Tangent& b) {
        // Only IEEE ops appear inside derivatives (Quot, PowIeee, ...): no status to report.
        Tangent out{Rule::forward(a.v, b.v).value, 0.0, false};
        if constexpr (!has_zero_derivative<Rule>) {
            if (a.active) {
                out.t = Rule::template vjp<TG>(a.t, a.v, b.v, out.v).a;
                out.active = true;
            }
            if constexpr (differentiable_inputs<Rule>() == 2) {
                if (b.active) {
                    const double tb = Rule::template vjp<TG>(b.t, a.v, b.v, out.v).b;
                    out.t = out.active ? out.t + tb : tb;
                    out.active = true;
                }
            }
        }
        return out;
    }
    static Tangent apply(Op op, const Tangent& a, const Tangent& b) {
        return visit_elementary(op, [&](auto rule) { return apply_rule<decltype(rule)>(a, b); });
    }
    static Tangent apply(Op op, const Tangent& a) { return apply(op, a, a); }

    friend Tangent operator+(const Tangent& a, const Tangent& b) { return apply_rule<rules::Add>(a, b); }
    friend Tangent operator-(const Tangent& a, const Tangent& b) { return apply_rule<rules::Sub>(a, b); }
    friend Tangent operator*(const Tangent& a, const Tangent& b) { return apply_rule<rules::Mul>(a, b); }
    // Division inside derivatives follows IEEE rules (x / 0 = inf), as Node's does.
    friend Tangent operator/(const Tangent& a, const Tangent& b) { return apply_rule<rules::Quot>(a, b); }
    friend Tangent operator-(const Tangent& a) { return apply_rule<rules::Neg>(a, a); }
    friend Tangent operator+(const Tangent& a, double c) { return a + a.constant(c); }
    friend Tangent operator-(const Tangent& a, double c) { return a - a.constant(c); }
    friend Tangent operator-(double c, const Tangent& a) { return a.constant(c) - a; }
    friend Tangent operator*(double c, const Tangent& a) { return a.constant(c) * a; }
    friend Tangent operator/(double c, const Tangent& a) { return a.constant(c) / a; }
    friend Tangent exp(const Tangent& a) { return apply_rule<rules::Exp>(a, a); }
    friend Tangent sin(const Tangent& a) { return apply_rule<rules::Sin>(a, a); }
    friend Tangent cos(const Tangent& a) { return apply_rule<rules::Cos>(a, a); }
    friend Tangent sigmoid(const Tangent& a) { return apply_rule<rules::Sigmoid>(a, a); }
};

using Tangent = BasicTangent<rules::AnyGrad>;

}  // namespace arenagrad
