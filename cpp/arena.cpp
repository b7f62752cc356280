#include "arena.hpp"

#include <algorithm>
#include <stdexcept>

namespace arenagrad {

namespace {

// NodeId is 32 bits; the top value is kept free so a corrupt id is easy to spot in a debugger.
constexpr std::size_t kMaxNodes = 0xFFFFFFFEu;
// Compaction walks every slot, so it only pays off once the dead part of the pool is large.
constexpr std::size_t kMinPoolGarbage = 4096;

template <class T>
std::size_t heap_bytes(const std::vector<T>& v) {
    return v.capacity() * sizeof(T);
}

}  // namespace

// Makes room for one more node so that allocate() cannot throw: every op checks this before it
// touches any reference count, so running out of memory leaves the arena exactly as it was.
void Arena::reserve_node() {
    if (!free_slots_.empty() || value_.size() < value_.capacity()) return;
    if (value_.size() >= kMaxNodes) throw std::length_error("arenagrad: the node arena is full (2^32 - 2 nodes)");
    const std::size_t want = std::max<std::size_t>(64, 2 * value_.size());
    value_.reserve(want);
    grad_.reserve(want);
    op_.reserve(want);
    a_.reserve(want);
    b_.reserve(want);
    refs_.reserve(want);
}

NodeId Arena::allocate(Op op, double value, NodeId a, NodeId b) {
    if (!free_slots_.empty()) {
        const NodeId id = free_slots_.back();
        free_slots_.pop_back();
        value_[id] = value;
        grad_[id] = 0.0;
        op_[id] = op;
        a_[id] = a;
        b_[id] = b;
        refs_[id] = 1;
        return id;
    }
    const auto id = static_cast<NodeId>(value_.size());  // reserve_node() made room
    value_.push_back(value);
    grad_.push_back(0.0);
    op_.push_back(op);
    a_.push_back(a);
    b_.push_back(b);
    refs_.push_back(1);
    return id;
}

NodeId Arena::leaf(double value) {
    reserve_node();
    return allocate(Op::Leaf, value, 0, 0);
}

Status Arena::apply(Op op, NodeId a, NodeId b, NodeId* out) {
    return visit_elementary(op, [&](auto rule) {
        using Rule = decltype(rule);
        const double vb = Rule::arity == 2 ? value_[b] : 0.0;
        const Eval e = Rule::forward(value_[a], vb);
        if (e.status != Status::Ok) return e.status;
        reserve_node();
        retain(a);
        if constexpr (Rule::arity == 2) retain(b);
        *out = allocate(op, e.value, a, Rule::arity == 2 ? b : 0);
        return Status::Ok;
    });
}

std::uint32_t Arena::allocate_pool(std::size_t n) {
    if (pool_garbage_ >= kMinPoolGarbage && 2 * pool_garbage_ > pool_.size()) compact_pool();
    if (pool_.size() + n >= kMaxNodes) throw std::length_error("arenagrad: the n-ary child pool is full");
    const auto offset = static_cast<std::uint32_t>(pool_.size());
    pool_.resize(pool_.size() + n);
    return offset;
}

// Moves the children of live n-ary nodes to the front of a fresh pool of the same capacity, so
// building and dropping n-ary nodes forever keeps the pool bounded.
void Arena::compact_pool() {
    std::vector<NodeId> fresh;
    fresh.reserve(pool_.capacity());
    for (NodeId id = 0; id < value_.size(); ++id) {
        if (!is_nary(op_[id])) continue;  // freed slots are reset to Leaf
        const auto offset = static_cast<NodeId>(fresh.size());
        fresh.insert(fresh.end(), pool_.begin() + a_[id], pool_.begin() + a_[id] + b_[id]);
        a_[id] = offset;
    }
    pool_.swap(fresh);
    pool_garbage_ = 0;
}

NodeId Arena::sum(const NodeId* ids, std::size_t n) {
    reserve_node();
    const std::uint32_t offset = allocate_pool(n);
    double total = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
        pool_[offset + i] = ids[i];
        retain(ids[i]);
        total += value_[ids[i]];
    }
    return allocate(Op::Sum, total, offset, static_cast<NodeId>(n));
}

NodeId Arena::dot(const NodeId* ws, const NodeId* xs, std::size_t n) {
    reserve_node();
    const std::uint32_t offset = allocate_pool(2 * n);
    double total = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
        pool_[offset + i] = ws[i];
        pool_[offset + n + i] = xs[i];
        retain(ws[i]);
        retain(xs[i]);
        total += value_[ws[i]] * value_[xs[i]];
    }
    return allocate(Op::Dot, total, offset, static_cast<NodeId>(2 * n));
}

void Arena::release(NodeId id) {
    release_stack_.push_back(id);
    while (!release_stack_.empty()) {
        const NodeId n = release_stack_.back();
        release_stack_.pop_back();
        if (--refs_[n] == 0) free_slot(n, release_stack_);
    }
}

void Arena::free_slot(NodeId id, std::vector<NodeId>& pending) {
    const Op op = op_[id];
    if (is_nary(op)) {
        pending.insert(pending.end(), pool_.begin() + a_[id], pool_.begin() + a_[id] + b_[id]);
        pool_garbage_ += b_[id];
    } else if (op != Op::Leaf) {
        pending.push_back(a_[id]);
        // Every binary op, PowConst included, owns its second child (the exponent constant).
        if (arity(op) == 2) pending.push_back(b_[id]);
    }
    if (!labels_.empty()) labels_.erase(id);
    op_[id] = Op::Leaf;
    free_slots_.push_back(id);
}

std::uint32_t Arena::num_children(NodeId id) const {
    const Op op = op_[id];
    if (op == Op::Leaf) return 0;
    if (is_nary(op)) return b_[id];
    return visit_elementary(op, [](auto rule) { return differentiable_inputs<decltype(rule)>(); });
}

NodeId Arena::child(NodeId id, std::uint32_t i) const {
    if (is_nary(op_[id])) return pool_[a_[id] + i];
    return i == 0 ? a_[id] : b_[id];
}

static const std::string kNoLabel;

const std::string& Arena::label(NodeId id) const {
    const auto it = labels_.find(id);
    return it == labels_.end() ? kNoLabel : it->second;
}

void Arena::set_label(NodeId id, std::string label) {
    if (label.empty()) {
        labels_.erase(id);
    } else {
        labels_[id] = std::move(label);
    }
}

void Arena::topological_order(NodeId root, std::vector<NodeId>& order) {
    order.clear();
    if (is_leaf(root)) return;
    if (visit_mark_.size() < value_.size()) visit_mark_.resize(value_.size(), 0);
    if (++visit_epoch_ == 0) {  // the epoch wrapped: old marks could alias the new epoch
        std::fill(visit_mark_.begin(), visit_mark_.end(), 0);
        visit_epoch_ = 1;
    }
    const std::uint32_t epoch = visit_epoch_;

    // Depth-first post-order: a node is emitted once all its children are. Leaves are skipped:
    // they have nothing to propagate and their grads accumulate rather than reset.
    dfs_stack_.clear();
    dfs_stack_.emplace_back(root, 0);
    visit_mark_[root] = epoch;
    while (!dfs_stack_.empty()) {
        auto& [node, next] = dfs_stack_.back();
        if (next < num_children(node)) {
            const NodeId c = child(node, next++);
            if (op_[c] != Op::Leaf && visit_mark_[c] != epoch) {
                visit_mark_[c] = epoch;
                dfs_stack_.emplace_back(c, 0);  // invalidates node/next, which are not used again
            }
        } else {
            order.push_back(node);
            dfs_stack_.pop_back();
        }
    }
    std::reverse(order.begin(), order.end());
}

inline void Arena::propagate(NodeId id) {
    const double g = grad_[id];
    const Op op = op_[id];
    switch (op) {
        case Op::Leaf:
            return;
        case Op::Sum: {
            const NodeId* c = pool_.data() + a_[id];
            for (std::uint32_t i = 0; i < b_[id]; ++i) grad_[c[i]] += g;
            return;
        }
        case Op::Dot: {
            const NodeId* w = pool_.data() + a_[id];
            const std::uint32_t n = b_[id] / 2;
            const NodeId* x = w + n;
            for (std::uint32_t i = 0; i < n; ++i) {
                grad_[w[i]] += g * value_[x[i]];
                grad_[x[i]] += g * value_[w[i]];
            }
            return;
        }
        default:
            visit_elementary(op, [&](auto rule) {
                using Rule = decltype(rule);
                const NodeId a = a_[id];
                const NodeId b = b_[id];
                const Partials p = Rule::partials(value_[a], Rule::arity == 2 ? value_[b] : 0.0, value_[id]);
                grad_[a] += g * p.da;
                if constexpr (differentiable_inputs<Rule>() == 2) grad_[b] += g * p.db;
            });
    }
}

void Arena::backward(NodeId root) {
    if (is_leaf(root)) {
        grad_[root] += 1.0;
        return;
    }
    topological_order(root, order_);
    for (const NodeId n : order_) grad_[n] = 0.0;
    grad_[root] = 1.0;
    for (const NodeId n : order_) propagate(n);
}

void Arena::backward_step(NodeId id) { propagate(id); }

ArenaStats Arena::stats() const {
    ArenaStats s{};
    s.capacity = value_.size();
    s.free = free_slots_.size();
    s.live = s.capacity - s.free;
    s.pool_capacity = pool_.capacity();
    s.pool_used = pool_.size() - pool_garbage_;
    s.bytes = heap_bytes(value_) + heap_bytes(grad_) + heap_bytes(op_) + heap_bytes(a_) + heap_bytes(b_) +
              heap_bytes(refs_) + heap_bytes(free_slots_) + heap_bytes(pool_) + heap_bytes(visit_mark_) +
              heap_bytes(dfs_stack_) + heap_bytes(order_) + heap_bytes(release_stack_);
    return s;
}

}  // namespace arenagrad
