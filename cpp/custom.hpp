// Ops defined outside the op table, by the embedding program (the binding: ops written in
// Python). The arena stores, per custom node, its inputs and one constant leaf per input holding
// the local partial derivative, so backward is a plain dot with the partials; the function itself
// is needed again only to replay the node or to record its derivative (create_graph).
#pragma once

#include <cstddef>
#include <exception>
#include <string>

#include "ops.hpp"

namespace arenagrad {

using NodeId = std::uint32_t;
class Arena;

class CustomFunction {
  public:
    virtual ~CustomFunction() = default;
    // The op's name, shown as the node's _op.
    virtual const std::string& name() const = 0;
    // Re-evaluates at x (n values): the value and the n partials. May throw (ForeignError).
    virtual double evaluate(const double* x, std::size_t n, double* partials) = 0;
    // Whether the partials can be recorded as nodes, so the op can be differentiated twice.
    virtual bool has_graph_partials() const = 0;
    // Records the partials at the nodes x as n new nodes the caller owns (into out).
    virtual void graph_partials(Arena& arena, const NodeId* x, std::size_t n, NodeId* out) = 0;
};

// An error raised by the embedding program inside a CustomFunction and still pending there (a
// Python exception): the core only unwinds, and the caller re-raises it.
class ForeignError : public std::exception {
  public:
    const char* what() const noexcept override { return "error in a custom op"; }
};

// Differentiating a custom op twice needs partials it can record; this one gave numbers only.
class NotTwiceDifferentiable : public std::exception {
  public:
    explicit NotTwiceDifferentiable(std::string name)
        : message_("custom op '" + std::move(name) +
                   "' gives its partials as numbers, so it cannot be differentiated twice (create_graph); "
                   "give it graph_partials, a function of Values returning Values") {}
    const char* what() const noexcept override { return message_.c_str(); }

  private:
    std::string message_;
};

}  // namespace arenagrad
