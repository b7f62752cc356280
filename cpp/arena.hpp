// The node arena: every node of every graph, stored as a struct of arrays.
//
// A node is an index into parallel arrays (value, grad, op, two child fields, reference count,
// order bound), about 33 bytes, with no per-node heap allocation. Ops append nodes or reuse
// freed slots.
//
// Lifetime is reference counting: a node holds one reference for each owner, where an owner is a
// parent node or an external handle (a Python Value, a recorded tape). When the count reaches
// zero the slot is freed and its children lose a reference, iteratively, so freeing a chain of
// millions of nodes needs no recursion. Because an owner always holds a reference, a live handle
// never sees its slot reused, and the graph below a live node never changes.
//
// Topological order for free: children are always created before their parents, and freed slots
// are handed out lowest id first, so in the usual case every node's non-leaf children have
// smaller ids. low_[n] records that (the smallest id in n's non-leaf subgraph, or kUnordered
// when a reused slot broke the property), and backward is then one descending sweep over
// [low_[root], root] with no graph search. Otherwise it falls back to an iterative DFS.
//
// Nothing here knows about Python: errors are Status codes, and handles are plain NodeIds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "ops.hpp"

namespace arenagrad {

using NodeId = std::uint32_t;

struct ArenaStats {
    std::size_t live;           // nodes with at least one owner
    std::size_t capacity;       // slots ever allocated (live + free)
    std::size_t free;           // slots waiting for reuse
    std::size_t pool_used;      // child-pool entries of live n-ary nodes
    std::size_t pool_capacity;  // child-pool entries allocated
    std::size_t bytes;          // heap bytes held by the arena's arrays
    std::size_t sweeps_ordered;  // backward passes that took the one-pass id-ordered sweep
    std::size_t sweeps_dfs;      // backward passes that needed a depth-first search first
};

class Arena {
  public:
    // --- creation: each returns a node holding one reference, owned by the caller ---
    NodeId leaf(double value);
    // An elementary op (see ops.hpp). b is ignored for unary ops. On error nothing is created.
    Status apply(Op op, NodeId a, NodeId b, NodeId* out);
    NodeId sum(const NodeId* ids, std::size_t n);
    // ws and xs have n entries each.
    NodeId dot(const NodeId* ws, const NodeId* xs, std::size_t n);

    // --- ownership ---
    void retain(NodeId id) { ++refs_[id]; }
    void release(NodeId id) noexcept;

    // --- access ---
    double value(NodeId id) const { return value_[id]; }
    double grad(NodeId id) const { return grad_[id]; }
    void set_value(NodeId id, double v) { value_[id] = v; }
    void set_grad(NodeId id, double g) { grad_[id] = g; }
    Op op(NodeId id) const { return op_[id]; }
    bool is_leaf(NodeId id) const { return op_[id] == Op::Leaf; }
    // The constant exponent of a PowConst node.
    double exponent(NodeId id) const { return value_[b_[id]]; }
    std::uint32_t refcount(NodeId id) const { return refs_[id]; }
    // True when ids below root are already a topological order of its graph (see above).
    bool id_ordered(NodeId root) const { return low_[root] != kUnordered; }

    // The differentiable children, in order; for dot: w_0..w_{n-1}, x_0..x_{n-1}.
    std::uint32_t num_children(NodeId id) const {
        const Op op = op_[id];
        if (op == Op::Leaf) return 0;
        if (is_nary(op)) return b_[id];
        return visit_elementary(op, [](auto rule) { return differentiable_inputs<decltype(rule)>(); });
    }
    NodeId child(NodeId id, std::uint32_t i) const {
        if (is_nary(op_[id])) return pool_[a_[id] + i];
        return i == 0 ? a_[id] : b_[id];
    }

    const std::string& label(NodeId id) const;
    void set_label(NodeId id, std::string label);

    // --- differentiation ---
    // Grad of root := 1 (a leaf root gets += 1); fresh grads for every non-leaf node reachable
    // from root; leaves accumulate, as PyTorch's backward does.
    void backward(NodeId root);
    // One step of the chain rule at one node: adds grad(id) * partial into each child's grad.
    void backward_step(NodeId id);
    // The non-leaf nodes reachable from root, each before its children (root first), in exactly
    // the order backward() visits them, so a kept order replays bit for bit.
    void topological_order(NodeId root, std::vector<NodeId>& order);

    // --- replay (see tape.hpp): the same rules, along an order computed once ---
    // Re-evaluates one non-leaf node from its children's current values.
    Status recompute(NodeId id);
    // backward(order.front()) for an order from topological_order(): same result, bit for bit.
    void backward_along(const std::vector<NodeId>& order);

    ArenaStats stats() const;

  private:
    static constexpr NodeId kUnordered = 0xFFFFFFFFu;

    void reserve_node();
    NodeId allocate(Op op, double value, NodeId a, NodeId b);
    NodeId take_free_slot();
    void free_slot(NodeId id, std::vector<NodeId>& pending);
    std::uint32_t allocate_pool(std::size_t n);
    void compact_pool();
    // Folds child c into a new node's order bound (see low_).
    NodeId order_bound(NodeId id, NodeId bound, NodeId c) const;
    std::uint32_t next_epoch();
    void sweep_ordered(NodeId root, std::vector<NodeId>* visited);
    void sweep_dfs(NodeId root);
    template <class AddGrad>
    void propagate(NodeId id, AddGrad&& add_grad);

    // Struct of arrays, one entry per slot.
    std::vector<double> value_;
    std::vector<double> grad_;
    std::vector<Op> op_;
    std::vector<NodeId> a_;    // first child; for n-ary ops the offset into pool_
    std::vector<NodeId> b_;    // second child; for n-ary ops the number of pool entries
    std::vector<NodeId> low_;  // smallest id of the node's non-leaf subgraph, or kUnordered
    std::vector<std::uint32_t> refs_;
    std::size_t reserved_ = 0;  // slots every array (and the bitmap) has room for

    // Free slots as a bitmap, so the lowest free id is always handed out first (that keeps new
    // graphs id-ordered). No set bit lies below word free_cursor_.
    std::vector<std::uint64_t> free_bits_;
    std::size_t free_cursor_ = 0;
    std::size_t free_count_ = 0;

    std::vector<NodeId> pool_;      // children of n-ary nodes
    std::size_t pool_garbage_ = 0;  // pool entries of freed n-ary nodes, reclaimed by compaction
    std::unordered_map<NodeId, std::string> labels_;  // sparse: few nodes carry labels

    // Scratch space reused across calls so backward allocates nothing in steady state.
    std::vector<std::uint32_t> visit_mark_;
    std::uint32_t visit_epoch_ = 0;
    struct DfsFrame {
        NodeId node;
        std::uint32_t next;   // index of the next child to visit
        std::uint32_t count;  // number of children
    };
    std::vector<DfsFrame> dfs_stack_;
    std::vector<NodeId> order_;
    std::vector<NodeId> release_stack_;
    std::size_t sweeps_ordered_ = 0;
    std::size_t sweeps_dfs_ = 0;
};

}  // namespace arenagrad
