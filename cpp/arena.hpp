// The node arena: every node of every graph, stored as a struct of arrays.
//
// A node is an index into parallel arrays (value, grad, op, two child fields, reference count,
// order bound, allocation run), about 37 bytes, with no per-node heap allocation. Ops append nodes or reuse
// freed slots.
//
// Lifetime is reference counting: a node holds one reference for each owner, where an owner is a
// parent node or an external handle (a Python Value, a recorded tape). When the count reaches
// zero the slot is freed and its children lose a reference, iteratively, so freeing a chain of
// millions of nodes needs no recursion. Because an owner always holds a reference, a live handle
// never sees its slot reused, and the graph below a live node never changes.
//
// One summation order, whatever the arena's history: backward visits the non-leaf nodes in
// reverse creation order, and each node adds into its children in child order, so every grad is
// a sum in an order fixed by the program that built the graph (the reference engine sums in the
// same order, so the two agree bit for bit). Ids are not creation order once freed slots are
// reused, so the arena tracks allocation runs: a run is a stretch of non-leaf allocations with
// increasing ids, and (run, id) orders live nodes by creation. When every non-leaf node below a
// root lies in one run (the usual case: a graph is built in one go), descending ids are reverse
// creation order and backward is one descending sweep over [low_[root], root] with no graph
// search; low_[n] is the smallest id of n's non-leaf subgraph, or kUnordered when the subgraph
// spans runs. Otherwise backward collects the subgraph and sorts it by (run, id).
//
// Memory is given back: when the live nodes fall far below the slots held (after a large graph
// is freed), the arrays are cut down to the highest live slot.
//
// Nothing here knows about Python: errors are Status codes, and handles are plain NodeIds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "custom.hpp"
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
    // An n-ary op over ids (Op::Sum or Op::LogSumExp).
    NodeId nary(Op op, const NodeId* ids, std::size_t n);
    NodeId sum(const NodeId* ids, std::size_t n) { return nary(Op::Sum, ids, n); }
    // ws and xs have n entries each.
    NodeId dot(const NodeId* ws, const NodeId* xs, std::size_t n);
    // A custom op's node: value f(xs) and its partials df/dx_i, computed by the caller.
    NodeId custom(std::shared_ptr<CustomFunction> f, const NodeId* xs, const double* partials, std::size_t n,
                  double value);
    // The function of a custom node (null for any other node).
    CustomFunction* custom_function(NodeId id) const;

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
    // True when ids below root are reverse creation order of its graph (see above).
    bool id_ordered(NodeId root) const { return low_[root] != kUnordered; }
    // Slots held (live and free): handle tables indexed by NodeId need no more entries.
    std::size_t slots() const { return value_.size(); }

    // The differentiable children, in order; for dot: w_0..w_{n-1}, x_0..x_{n-1}; for a custom
    // op its inputs (its partials follow them in the pool, as hidden constants).
    std::uint32_t num_children(NodeId id) const {
        const Op op = op_[id];
        if (op == Op::Leaf) return 0;
        if (op == Op::Custom) return b_[id] / 2;
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
    // The non-leaf nodes reachable from root in reverse creation order (root first), which is
    // exactly the order backward() visits them, so a kept order replays bit for bit.
    void topological_order(NodeId root, std::vector<NodeId>& order);
    // The same for several roots: every non-leaf node reachable from any of them, once.
    void topological_order(const std::vector<NodeId>& roots, std::vector<NodeId>& order) {
        collect_order(roots, order, false);
    }

    // --- derivatives that leave .grad alone (cpp/derivatives.cpp) ---
    // Reverse mode: out[i] = d(sum_k seeds[k] * roots[k]) / d(inputs[i]), summed in the order
    // backward() sums (so with one root and seed 1 it equals what backward() adds to a zeroed
    // grad, bit for bit); 0 for an input the roots do not depend on. seeds empty means all 1.
    // Inputs may be any nodes, leaf or not, and may repeat.
    void gradient(const std::vector<NodeId>& roots, const std::vector<double>& seeds,
                  const std::vector<NodeId>& inputs, std::vector<double>& out);
    // The same pass recorded as nodes (the op table's rules over Node, see node.hpp): out[i] is a
    // node the caller owns, whose value is the gradient and whose graph can be differentiated again.
    // seeds empty means constant 1s. New nodes go above every id passed in, so a graph built in one
    // go and its recorded derivatives still take the ordered sweep.
    void gradient_graph(const std::vector<NodeId>& roots, const std::vector<NodeId>& seeds,
                        const std::vector<NodeId>& inputs, std::vector<NodeId>& out);
    // Forward mode: out[k] = the derivative of outputs[k] along tangents[i] for inputs[i]. Only
    // nodes that depend on an input with a nonzero tangent are active (JAX's symbolic zeros): an
    // infinite or NaN local derivative elsewhere never reaches the result. Each active node's
    // tangent is the sum, in child order, of its rule's vjp applied to each active child's tangent
    // (the rule is linear in g). Inputs may not repeat (std::invalid_argument).
    void tangent(const std::vector<NodeId>& inputs, const std::vector<double>& tangents,
                 const std::vector<NodeId>& outputs, std::vector<double>& out);
    // The same pass recorded as nodes; every given tangent is active.
    void tangent_graph(const std::vector<NodeId>& inputs, const std::vector<NodeId>& tangents,
                       const std::vector<NodeId>& outputs, std::vector<NodeId>& out);

    // --- replay (see tape.hpp): the same rules, along an order computed once ---
    // Re-evaluates one non-leaf node from its children's current values.
    Status recompute(NodeId id);
    // backward(order.front()) for an order from topological_order(): same result, bit for bit.
    void backward_along(const std::vector<NodeId>& order);
    // Backward of sum_k seeds[k] * roots[k] along their order: grads of the order's nodes start
    // at 0, each root's grad gains its seed (a leaf root's accumulates), then the sweep.
    void backward_along(const std::vector<NodeId>& order, const std::vector<NodeId>& roots, const double* seeds);

    ArenaStats stats() const;

    // Test hook: the next allocation run gets this number, so tests can reach the renumbering
    // that keeps run numbers from wrapping around. Call it only on an arena with no live non-leaf
    // node: a number below a live node's run would misorder them.
    void set_next_run_for_testing(std::uint32_t run) { run_counter_ = run; }

  private:
    static constexpr NodeId kUnordered = 0xFFFFFFFFu;

    void reserve_node();
    NodeId allocate(Op op, double value, NodeId a, NodeId b);
    bool free_slot_above_floor();
    NodeId take_free_slot();
    NodeId take_free_slot_above_floor();
    void free_slot(NodeId id, std::vector<NodeId>& pending);
    void retire_custom(NodeId id) noexcept;
    std::uint32_t allocate_pool(std::size_t n);
    void compact_pool(bool shrink);
    void start_run_if_needed(NodeId id);
    void renumber_runs();
    void maybe_shrink() noexcept;
    // Folds child c into a new node's order bound (see low_).
    NodeId order_bound(NodeId id, NodeId bound, NodeId c) const;
    std::uint32_t next_epoch();
    void sweep_ordered(NodeId root, std::vector<NodeId>* visited);
    void sorted_order(NodeId root, std::vector<NodeId>& order);
    template <class AddGrad>
    void propagate(NodeId id, double g, AddGrad&& add_grad);

    // The derivative passes (derivatives.cpp), written once for double and for Node.
    friend class FloorScope;
    void collect_order(const std::vector<NodeId>& roots, std::vector<NodeId>& order, bool count = true);
    template <class S>
    void reverse_pass(const std::vector<NodeId>& roots, std::vector<S> seeds, const std::vector<NodeId>& inputs,
                      std::vector<S>& out);
    template <class S>
    void forward_pass(const std::vector<NodeId>& inputs, std::vector<S> tangents, const std::vector<NodeId>& outputs,
                      std::vector<S>& out);
    template <class S, class AddGrad>
    void propagate_any(NodeId id, const S& g, AddGrad&& add_grad);
    template <class S>
    bool tangent_term(NodeId id, std::uint32_t i, const S& t, S& out);
    template <class S>
    std::vector<S> custom_partials(NodeId id);


    // Struct of arrays, one entry per slot.
    std::vector<double> value_;
    std::vector<double> grad_;
    std::vector<Op> op_;
    std::vector<NodeId> a_;    // first child; for n-ary ops the offset into pool_
    std::vector<NodeId> b_;    // second child; for n-ary ops the number of pool entries
    std::vector<NodeId> low_;  // smallest id of the node's non-leaf subgraph, or kUnordered
    std::vector<std::uint32_t> refs_;
    std::vector<std::uint32_t> run_;  // allocation run of a non-leaf node (see above)
    std::size_t reserved_ = 0;  // slots every array (and the bitmap) has room for

    // Free slots as a bitmap, so the lowest free id is always handed out first (that keeps new
    // graphs id-ordered). No set bit lies below word free_cursor_.
    std::vector<std::uint64_t> free_bits_;
    std::size_t free_cursor_ = 0;
    std::size_t free_count_ = 0;

    std::size_t shrink_blocker_ = 0;  // the live slot that stopped the last shrink

    // While a derivative is recorded, new nodes take slots at or above this id (0: anywhere).
    NodeId alloc_floor_ = 0;
    std::size_t floor_cursor_ = 0;  // a word of free_bits_ at or below the first free slot above it

    std::uint32_t run_counter_ = 0;  // the current allocation run
    NodeId last_nonleaf_ = 0;        // id of the latest non-leaf allocation
    bool any_nonleaf_ = false;

    std::vector<NodeId> pool_;      // children of n-ary nodes
    std::size_t pool_garbage_ = 0;  // pool entries of freed n-ary nodes, reclaimed by compaction
    std::unordered_map<NodeId, std::string> labels_;  // sparse: few nodes carry labels
    std::unordered_map<NodeId, std::shared_ptr<CustomFunction>> custom_;  // custom nodes' functions
    // Functions of custom nodes freed by the running release(), destroyed once it has finished:
    // destroying one may run foreign code (Python) that releases nodes itself.
    std::vector<std::shared_ptr<CustomFunction>> dead_custom_;

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
    std::vector<std::uint32_t> position_;  // derivative passes: node id -> index in their node list
    bool pass_running_ = false;            // a derivative pass is running (position_ is in use)
    std::size_t sweeps_ordered_ = 0;
    std::size_t sweeps_dfs_ = 0;
};

}  // namespace arenagrad
