// A scalar whose arithmetic records arena nodes: the op table's vjp rules, instantiated with
// Node instead of double, build the backward (or forward-mode) pass as a graph of its own, which
// can then be differentiated, replayed or drawn like any other (create_graph).
//
// A Node owns one reference to its node, like a Python Value, so temporaries built inside a rule
// are freed as soon as nothing uses them. The default Node is empty: a rule's unused second
// contribution.
#pragma once

#include <stdexcept>
#include <utility>

#include "arena.hpp"

namespace arenagrad {

// A derivative graph could not be built: an op of it failed (it names the op and operands).
class RecordError : public std::runtime_error {
  public:
    RecordError(Status status, Op op, double a, double b);
    Status status;
    Op op;
    double a;
    double b;
};

class Node {
  public:
    Node() = default;
    static constexpr bool kEvaluates = false;  // a recording (see rules::scale)
    // Takes over a reference the caller owns.
    static Node adopt(Arena& arena, NodeId id) { return Node(&arena, id); }
    // Adds a reference of its own.
    static Node ref(Arena& arena, NodeId id) {
        arena.retain(id);
        return Node(&arena, id);
    }
    Node(const Node& other) : arena_(other.arena_), id_(other.id_) {
        if (arena_ != nullptr) arena_->retain(id_);
    }
    Node(Node&& other) noexcept : arena_(std::exchange(other.arena_, nullptr)), id_(other.id_) {}
    Node& operator=(Node other) noexcept {
        std::swap(arena_, other.arena_);
        std::swap(id_, other.id_);
        return *this;
    }
    ~Node() {
        if (arena_ != nullptr) arena_->release(id_);
    }

    explicit operator bool() const { return arena_ != nullptr; }
    NodeId id() const { return id_; }
    double value() const { return arena_->value(id_); }
    // Hands the reference to the caller.
    NodeId release() {
        arena_ = nullptr;
        return id_;
    }

    Node constant(double c) const { return adopt(*arena_, arena_->leaf(c)); }
    static Node apply(Op op, const Node& a, const Node& b);
    static Node apply(Op op, const Node& a) { return apply(op, a, a); }

    friend Node operator+(const Node& a, const Node& b) { return apply(Op::Add, a, b); }
    friend Node operator-(const Node& a, const Node& b) { return apply(Op::Sub, a, b); }
    friend Node operator*(const Node& a, const Node& b) { return apply(Op::Mul, a, b); }
    // Division inside derivatives follows IEEE rules (x / 0 = inf), like the sweep's.
    friend Node operator/(const Node& a, const Node& b) { return apply(Op::Quot, a, b); }
    friend Node operator-(const Node& a) { return apply(Op::Neg, a); }
    friend Node operator+(const Node& a, double c) { return a + a.constant(c); }
    friend Node operator-(const Node& a, double c) { return a - a.constant(c); }
    friend Node operator-(double c, const Node& a) { return a.constant(c) - a; }
    friend Node operator*(double c, const Node& a) { return a.constant(c) * a; }
    friend Node operator/(double c, const Node& a) { return a.constant(c) / a; }
    friend Node exp(const Node& a) { return apply(Op::Exp, a); }
    friend Node sin(const Node& a) { return apply(Op::Sin, a); }
    friend Node cos(const Node& a) { return apply(Op::Cos, a); }
    friend Node sigmoid(const Node& a) { return apply(Op::Sigmoid, a); }

  private:
    Node(Arena* arena, NodeId id) : arena_(arena), id_(id) {}
    Arena* arena_ = nullptr;
    NodeId id_ = 0;
};

}  // namespace arenagrad
