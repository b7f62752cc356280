#include "arena.hpp"

#include <algorithm>
#include <new>
#include <stdexcept>
#include <utility>

#if defined(__GLIBC__)
#include <malloc.h>  // malloc_trim: hand freed heap pages back to the system
#endif

namespace arenagrad {

namespace {

// NodeId is 32 bits; the top value is reserved (kUnordered).
constexpr std::size_t kMaxNodes = 0xFFFFFFFEu;
// Compaction walks every slot, so it only pays off once the dead part of the pool is large.
constexpr std::size_t kMinPoolGarbage = 4096;
// Memory is given back only for arenas this large (about 40 MB), when at most 1/8 of the slots
// are live: smaller arenas are cheap to keep.
constexpr std::size_t kShrinkMinSlots = std::size_t{1} << 20;

template <class T>
void shrink_to(std::vector<T>& v, std::size_t n) {
    if (v.size() > n) v.resize(n);
    v.shrink_to_fit();  // libstdc++ reallocates, and keeps the old buffer if that fails
}

template <class T>
std::size_t heap_bytes(const std::vector<T>& v) {
    return v.capacity() * sizeof(T);
}

}  // namespace

// --- slots -----------------------------------------------------------------------------------

// Makes room for one more node so that allocate() cannot throw: every op calls this before it
// touches any reference count, so running out of memory leaves the arena exactly as it was.
void Arena::reserve_node() {
    if (run_counter_ == 0xFFFFFFFFu) renumber_runs();  // before anything changes: it may throw
    // reserved_ moves only once every array has grown, so a failed reserve leaves no array short.
    if ((free_count_ != 0 && alloc_floor_ == 0) || value_.size() < reserved_) return;
    if (alloc_floor_ != 0 && free_count_ != 0 && free_slot_above_floor()) return;
    if (value_.size() >= kMaxNodes) throw std::length_error("arenagrad: the node arena is full (2^32 - 2 nodes)");
    const std::size_t want = std::min(kMaxNodes, std::max<std::size_t>(64, 2 * value_.size()));
    value_.reserve(want);
    grad_.reserve(want);
    op_.reserve(want);
    a_.reserve(want);
    b_.reserve(want);
    low_.reserve(want);
    refs_.reserve(want);
    run_.reserve(want);
    free_bits_.resize((want + 63) / 64, 0);  // so freeing any slot never allocates
    reserved_ = want;
}

// Whether a free slot lies at or above the floor (set while a derivative is recorded, see
// FloorScope; it rises past every node allocated meanwhile). floor_cursor_ is the first word that
// may hold one, and only moves up during a recording (slots freed behind it wait for the next one).
__attribute__((noinline, cold)) bool Arena::free_slot_above_floor() {
    const std::size_t first = alloc_floor_ / 64;
    std::size_t w = std::max(floor_cursor_, first);
    for (; w < free_bits_.size(); ++w) {
        std::uint64_t word = free_bits_[w];
        if (w == first) word &= ~std::uint64_t{0} << (alloc_floor_ % 64);
        if (word != 0) break;
    }
    floor_cursor_ = w;
    return w < free_bits_.size();
}

__attribute__((noinline, cold)) NodeId Arena::take_free_slot_above_floor() {
    std::uint64_t mask = ~std::uint64_t{0};
    if (floor_cursor_ == alloc_floor_ / 64) mask <<= alloc_floor_ % 64;
    std::uint64_t& word = free_bits_[floor_cursor_];
    const auto bit = static_cast<NodeId>(__builtin_ctzll(word & mask));
    word &= ~(std::uint64_t{1} << bit);
    --free_count_;
    return static_cast<NodeId>(floor_cursor_ * 64) + bit;
}

// The lowest free slot: free_count_ > 0 and no floor is set.
NodeId Arena::take_free_slot() {
    while (free_bits_[free_cursor_] == 0) ++free_cursor_;  // free_count_ > 0: a set bit lies ahead
    std::uint64_t& word = free_bits_[free_cursor_];
    const auto bit = static_cast<NodeId>(__builtin_ctzll(word));
    word &= word - 1;
    --free_count_;
    return static_cast<NodeId>(free_cursor_ * 64) + bit;
}

NodeId Arena::allocate(Op op, double value, NodeId a, NodeId b) {
    NodeId id;
    if (free_count_ != 0 && (alloc_floor_ == 0 || free_slot_above_floor())) {
        id = alloc_floor_ == 0 ? take_free_slot() : take_free_slot_above_floor();
        value_[id] = value;
        grad_[id] = 0.0;
        op_[id] = op;
        a_[id] = a;
        b_[id] = b;
        low_[id] = id;
        refs_[id] = 1;
    } else {
        id = static_cast<NodeId>(value_.size());  // reserve_node() made room: no push_back throws
        value_.push_back(value);
        grad_.push_back(0.0);
        op_.push_back(op);
        a_.push_back(a);
        b_.push_back(b);
        low_.push_back(id);
        refs_.push_back(1);
        run_.push_back(0);
    }
    if (op != Op::Leaf) start_run_if_needed(id);
    // While recording, ids only grow: a recorded graph lies in one run, even when its temporaries
    // are freed along the way.
    if (__builtin_expect(alloc_floor_ != 0, 0)) alloc_floor_ = id + 1;
    return id;
}

// A non-leaf node below the previous one starts a new run; within a run ids grow with creation.
// (An equal id is the previous node's slot, freed and reused: no live node of the run lies above.)
void Arena::start_run_if_needed(NodeId id) {
    if (any_nonleaf_ && id < last_nonleaf_) ++run_counter_;  // reserve_node() kept it below the top
    any_nonleaf_ = true;
    last_nonleaf_ = id;
    run_[id] = run_counter_;
}

// Run numbers only need to order the live nodes' runs, so before the counter would wrap they are
// replaced by their ranks (once per 2^32 runs, in practice never). Only the scratch allocation
// can throw, and it comes before any change.
void Arena::renumber_runs() {
    std::vector<std::uint32_t> runs;
    for (NodeId id = 0; id < value_.size(); ++id) {
        if (op_[id] != Op::Leaf) runs.push_back(run_[id]);
    }
    runs.push_back(run_counter_);
    std::sort(runs.begin(), runs.end());
    runs.erase(std::unique(runs.begin(), runs.end()), runs.end());
    const auto rank = [&](std::uint32_t run) {
        return static_cast<std::uint32_t>(std::lower_bound(runs.begin(), runs.end(), run) - runs.begin());
    };
    for (NodeId id = 0; id < value_.size(); ++id) {
        if (op_[id] != Op::Leaf) run_[id] = rank(run_[id]);
    }
    run_counter_ = rank(run_counter_);  // the largest rank: later runs still number above every live one
}

// A non-leaf child in the same run was created earlier, so it has a smaller id.
NodeId Arena::order_bound(NodeId id, NodeId bound, NodeId c) const {
    if (op_[c] == Op::Leaf) return bound;  // leaves are never swept, so their ids do not matter
    if (bound == kUnordered || low_[c] == kUnordered || run_[c] != run_[id]) return kUnordered;
    return std::min(bound, low_[c]);
}

// Never throws: it runs from destructors (Python handles, tapes). If the pending stack cannot
// grow, the nodes it could not take are leaked (their counts stay above zero), never corrupted.
void Arena::release(NodeId id) noexcept {
    if (--refs_[id] != 0) return;
    try {
        free_slot(id, release_stack_);
        while (!release_stack_.empty()) {
            const NodeId n = release_stack_.back();
            release_stack_.pop_back();
            if (--refs_[n] == 0) free_slot(n, release_stack_);
        }
    } catch (const std::bad_alloc&) {
        release_stack_.clear();
    }
    if (!dead_custom_.empty()) {
        std::vector<std::shared_ptr<CustomFunction>> dead;
        dead.swap(dead_custom_);  // destroying them may release nodes: this release is done
    }
    if (value_.size() >= kShrinkMinSlots && free_count_ > value_.size() / 8 * 7) maybe_shrink();
}

// Cuts every array down to the highest live slot. Nothing may hold a pointer into the arrays
// across a release(); none does (the sweeps and replay never release).
//
// The cost: a loop that builds and drops a graph of over 2^20 nodes per step, with nothing of it
// alive while the next one is built, gives the memory back and regrows it every step (about 30%
// more time per step, measured at 1.2e6 nodes). Keeping the previous step's loss alive until the
// next one exists, as arenagrad.train does, avoids it. docs/guarantees.md states this.
void Arena::maybe_shrink() noexcept {
    if (alloc_floor_ != 0) return;  // a derivative is being recorded: keep the slots above the floor
    const std::size_t size = value_.size();
    // The live slot that stopped the last scan, if it still lives in the upper half, stops this one
    // too: checking it first keeps every release O(1) while one node pins the arena.
    if (shrink_blocker_ < size && shrink_blocker_ >= size / 2 &&
        (free_bits_[shrink_blocker_ / 64] >> (shrink_blocker_ % 64) & 1) == 0) {
        return;
    }
    std::size_t n = size;
    while (n > 0) {
        if (n % 64 == 0 && free_bits_[n / 64 - 1] == ~std::uint64_t{0}) {
            n -= 64;
        } else if ((free_bits_[(n - 1) / 64] >> ((n - 1) % 64) & 1) != 0) {
            --n;
        } else {
            break;
        }
    }
    if (n > size / 2) {  // a live node sits in the upper half: nothing worth giving back
        shrink_blocker_ = n - 1;
        return;
    }
    free_count_ -= size - n;
    shrink_to(value_, n);
    shrink_to(grad_, n);
    shrink_to(op_, n);
    shrink_to(a_, n);
    shrink_to(b_, n);
    shrink_to(low_, n);
    shrink_to(refs_, n);
    shrink_to(run_, n);
    const std::size_t words = (n + 63) / 64;
    shrink_to(free_bits_, words);
    if (n % 64 != 0) free_bits_[words - 1] &= (std::uint64_t{1} << (n % 64)) - 1;
    free_cursor_ = std::min(free_cursor_, words);
    reserved_ = n;
    shrink_to(visit_mark_, std::min(visit_mark_.size(), n));
    // Swapping with an empty vector frees the buffer; assigning {} would keep its capacity.
    std::vector<DfsFrame>().swap(dfs_stack_);
    std::vector<NodeId>().swap(order_);
    std::vector<NodeId>().swap(release_stack_);
    try {
        compact_pool(true);
    } catch (const std::bad_alloc&) {
        // the pool keeps its old buffer
    }
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
}

// Frees the slot first, then queues its children: if queueing them throws, the slot is
// consistently free and the children merely keep a reference too many.
void Arena::free_slot(NodeId id, std::vector<NodeId>& pending) {
    const Op op = op_[id];
    const NodeId a = a_[id];
    const NodeId b = b_[id];
    if (!labels_.empty()) labels_.erase(id);
    if (op == Op::Custom) retire_custom(id);
    op_[id] = Op::Leaf;
    free_bits_[id >> 6] |= std::uint64_t{1} << (id & 63);
    free_cursor_ = std::min<std::size_t>(free_cursor_, id >> 6);
    ++free_count_;
    if (is_nary(op)) {
        pool_garbage_ += b;  // the pool is only rewritten by compaction, never during a release
        pending.insert(pending.end(), pool_.begin() + a, pool_.begin() + a + b);
    } else if (op != Op::Leaf) {
        pending.push_back(a);
        // Every binary op, PowConst included, owns its second child (the exponent constant).
        if (arity(op) == 2) pending.push_back(b);
    }
}

// --- creation --------------------------------------------------------------------------------

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
        const NodeId id = allocate(op, e.value, a, Rule::arity == 2 ? b : 0);
        NodeId bound = order_bound(id, id, a);
        if constexpr (Rule::arity == 2) bound = order_bound(id, bound, b);
        low_[id] = bound;
        *out = id;
        return Status::Ok;
    });
}

std::uint32_t Arena::allocate_pool(std::size_t n) {
    if (pool_garbage_ >= kMinPoolGarbage && 2 * pool_garbage_ > pool_.size()) compact_pool(false);
    if (pool_.size() + n >= kMaxNodes) throw std::length_error("arenagrad: the n-ary child pool is full");
    const auto offset = static_cast<std::uint32_t>(pool_.size());
    pool_.resize(pool_.size() + n);
    return offset;
}

// Moves the children of live n-ary nodes to the front of a fresh pool of the same capacity (or,
// when shrinking, of just the size in use), so building and dropping n-ary nodes forever keeps
// the pool bounded.
// Two passes: the copy (which may throw) changes nothing of the arena's; the offsets are rewritten
// only once it has succeeded.
void Arena::compact_pool(bool shrink) {
    std::vector<NodeId> fresh;
    fresh.reserve(shrink ? pool_.size() - pool_garbage_ : pool_.capacity());
    for (NodeId id = 0; id < value_.size(); ++id) {
        if (!is_nary(op_[id])) continue;  // freed slots are reset to Leaf
        fresh.insert(fresh.end(), pool_.begin() + a_[id], pool_.begin() + a_[id] + b_[id]);
    }
    NodeId offset = 0;
    for (NodeId id = 0; id < value_.size(); ++id) {
        if (!is_nary(op_[id])) continue;
        a_[id] = offset;
        offset += b_[id];
    }
    pool_.swap(fresh);
    pool_garbage_ = 0;
}

NodeId Arena::nary(Op op, const NodeId* ids, std::size_t n) {
    if (op != Op::Sum && op != Op::LogSumExp) throw std::invalid_argument("Arena::nary takes Sum or LogSumExp");
    reserve_node();
    const std::uint32_t offset = allocate_pool(n);
    for (std::size_t i = 0; i < n; ++i) {
        pool_[offset + i] = ids[i];
        retain(ids[i]);
    }
    const auto count = static_cast<std::uint32_t>(n);
    const auto x = [&](std::uint32_t i) { return value_[ids[i]]; };
    const double v = op == Op::Sum ? rules::Sum::forward(count, x) : rules::LogSumExp::forward(count, x);
    const NodeId id = allocate(op, v, offset, static_cast<NodeId>(n));
    NodeId bound = id;
    for (std::size_t i = 0; i < n; ++i) bound = order_bound(id, bound, ids[i]);
    low_[id] = bound;
    return id;
}

NodeId Arena::dot(const NodeId* ws, const NodeId* xs, std::size_t n) {
    reserve_node();
    const std::uint32_t offset = allocate_pool(2 * n);
    for (std::size_t i = 0; i < n; ++i) {
        pool_[offset + i] = ws[i];
        pool_[offset + n + i] = xs[i];
        retain(ws[i]);
        retain(xs[i]);
    }
    const double total = rules::Dot::forward(
        static_cast<std::uint32_t>(n), [&](std::uint32_t i) { return value_[ws[i]]; },
        [&](std::uint32_t i) { return value_[xs[i]]; });
    const NodeId id = allocate(Op::Dot, total, offset, static_cast<NodeId>(2 * n));
    NodeId bound = id;
    for (std::size_t i = 0; i < n; ++i) bound = order_bound(id, order_bound(id, bound, ws[i]), xs[i]);
    low_[id] = bound;
    return id;
}

// --- labels ----------------------------------------------------------------------------------

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

// --- differentiation -------------------------------------------------------------------------

std::uint32_t Arena::next_epoch() {
    if (visit_mark_.size() < value_.size()) visit_mark_.resize(value_.capacity(), 0);
    if (++visit_epoch_ == 0) {  // the epoch wrapped: old marks could alias the new epoch
        std::fill(visit_mark_.begin(), visit_mark_.end(), 0);
        visit_epoch_ = 1;
    }
    return visit_epoch_;
}

namespace {

// The rules' general form, for an infinite or NaN grad, kept out of line: inlined, the compiler
// computes both forms and selects, which costs the sweep more than the rare call does.
template <class Rule>
__attribute__((noinline)) Grads vjp_out_of_line(double g, double a, double b, double out) {
    return Rule::template vjp<rules::AnyGrad>(g, a, b, out);
}

__attribute__((noinline)) double scale_out_of_line(double g, double p) { return rules::AnyGrad::scale(g, p); }

__attribute__((noinline)) Grads dot_vjp_out_of_line(double g, double w, double x) {
    return rules::Dot::vjp<rules::AnyGrad>(g, w, x);
}

__attribute__((noinline)) double logsumexp_vjp_out_of_line(double g, double x, double out) {
    return rules::LogSumExp::vjp<rules::AnyGrad>(g, x, out);
}

}  // namespace

// Calls add_grad(child, contribution) for each differentiable child, in child order. A finite g
// (almost always) takes the rules' FiniteGrad form, which skips their zero-derivative test; the
// contributions are computed first so that add_grad, the sweep's bookkeeping, is inlined once.
template <class AddGrad>
__attribute__((always_inline)) inline void Arena::propagate(NodeId id, double g, AddGrad&& add_grad) {
    const bool finite = __builtin_expect(std::isfinite(g), 1);
    const Op op = op_[id];
    // Elementary ops first, by one range test, so the only indirect jump per node is the rule
    // table's (a switch over the n-ary ops too made GCC emit two jump tables in a row: +17%).
    if (__builtin_expect(!is_nary(op), 1)) {
        if (op == Op::Leaf) return;
        visit_elementary(op, [&](auto rule) __attribute__((always_inline)) {
            using Rule = decltype(rule);
            const NodeId a = a_[id];
            const NodeId b = b_[id];
            const double va = value_[a];
            const double vb = Rule::arity == 2 ? value_[b] : 0.0;
            const double out = value_[id];
            const Grads d = finite ? Rule::template vjp<rules::FiniteGrad>(g, va, vb, out)
                                   : vjp_out_of_line<Rule>(g, va, vb, out);
            add_grad(a, d.a);
            if constexpr (differentiable_inputs<Rule>() == 2) add_grad(b, d.b);
        });
        return;
    }
    const NodeId* c = pool_.data() + a_[id];
    if (op == Op::Sum) {
        for (std::uint32_t i = 0; i < b_[id]; ++i) add_grad(c[i], rules::Sum::vjp(g));
    } else if (op == Op::Dot) {
        const std::uint32_t n = b_[id] / 2;
        const NodeId* x = c + n;
        for (std::uint32_t i = 0; i < n; ++i) {
            const Grads d = finite ? rules::Dot::vjp<rules::FiniteGrad>(g, value_[c[i]], value_[x[i]])
                                   : dot_vjp_out_of_line(g, value_[c[i]], value_[x[i]]);
            add_grad(c[i], d.a);
            add_grad(x[i], d.b);
        }
    } else if (op == Op::LogSumExp) {
        const double out = value_[id];
        for (std::uint32_t i = 0; i < b_[id]; ++i) {
            const double v = value_[c[i]];
            add_grad(c[i], finite ? rules::LogSumExp::vjp<rules::FiniteGrad>(g, v, out)
                                  : logsumexp_vjp_out_of_line(g, v, out));
        }
    } else {  // Custom: a dot of the hidden partials with the inputs' grads
        const std::uint32_t n = b_[id] / 2;
        for (std::uint32_t i = 0; i < n; ++i) {
            const double p = value_[c[n + i]];
            add_grad(c[i], finite ? rules::FiniteGrad::scale(g, p) : scale_out_of_line(g, p));
        }
    }
}

// One pass over the id range, highest first: every parent of a node has a higher id, so a
// node's grad is complete when the sweep reaches it. A non-leaf's grad is reset by the first
// contribution it receives (0.0 + v, exactly what zero-then-add gives), a leaf's accumulates.
void Arena::sweep_ordered(NodeId root, std::vector<NodeId>* visited) {
    const std::uint32_t epoch = next_epoch();
    visit_mark_[root] = epoch;
    const NodeId low = low_[root];
    for (NodeId id = root;; --id) {
        if (visit_mark_[id] == epoch) {
            if (visited != nullptr) {
                visited->push_back(id);
                const std::uint32_t n = num_children(id);
                for (std::uint32_t i = 0; i < n; ++i) {
                    const NodeId c = child(id, i);
                    if (op_[c] != Op::Leaf) visit_mark_[c] = epoch;
                }
            } else {
                propagate(id, grad_[id], [&](NodeId c, double v) {
                    if (op_[c] == Op::Leaf) {
                        grad_[c] += v;
                    } else if (visit_mark_[c] != epoch) {
                        visit_mark_[c] = epoch;
                        grad_[c] = 0.0 + v;
                    } else {
                        grad_[c] += v;
                    }
                });
            }
        }
        if (id == low) break;
    }
}

void Arena::topological_order(NodeId root, std::vector<NodeId>& order) {
    order.clear();
    if (is_leaf(root)) return;
    if (id_ordered(root)) {
        sweep_ordered(root, &order);
    } else {
        sorted_order(root, order);
    }
}

// The subgraph's non-leaf nodes, found by a depth-first search, then sorted into reverse
// creation order: by run, then by id within a run.
void Arena::sorted_order(NodeId root, std::vector<NodeId>& order) {
    const std::uint32_t epoch = next_epoch();
    order.clear();
    dfs_stack_.clear();
    dfs_stack_.push_back({root, 0, num_children(root)});
    visit_mark_[root] = epoch;
    while (!dfs_stack_.empty()) {
        DfsFrame& top = dfs_stack_.back();
        if (top.next < top.count) {
            const NodeId c = child(top.node, top.next++);
            if (op_[c] != Op::Leaf && visit_mark_[c] != epoch) {
                visit_mark_[c] = epoch;
                dfs_stack_.push_back({c, 0, num_children(c)});  // invalidates `top`, unused from here
            }
        } else {
            order.push_back(top.node);
            dfs_stack_.pop_back();
        }
    }
    std::sort(order.begin(), order.end(), [this](NodeId x, NodeId y) {
        return run_[x] != run_[y] ? run_[x] > run_[y] : x > y;
    });
}

void Arena::backward(NodeId root) {
    if (is_leaf(root)) {
        grad_[root] += 1.0;
        return;
    }
    if (id_ordered(root)) {
        ++sweeps_ordered_;
        grad_[root] = 1.0;
        sweep_ordered(root, nullptr);
    } else {
        ++sweeps_dfs_;
        sorted_order(root, order_);
        backward_along(order_);
    }
}

Status Arena::recompute(NodeId id) {
    const Op op = op_[id];
    if (op == Op::Leaf) return Status::Ok;
    if (op == Op::Custom) {  // foreign code: nothing of the arena is held across the call
        const std::uint32_t n = b_[id] / 2;
        std::vector<double> x(n);
        std::vector<double> partials(n);
        for (std::uint32_t i = 0; i < n; ++i) x[i] = value_[pool_[a_[id] + i]];
        const double v = custom_.at(id)->evaluate(x.data(), n, partials.data());
        value_[id] = v;
        for (std::uint32_t i = 0; i < n; ++i) value_[pool_[a_[id] + n + i]] = partials[i];
        return Status::Ok;
    }
    if (is_nary(op)) {
        const NodeId* c = pool_.data() + a_[id];
        const auto x = [&](std::uint32_t i) { return value_[c[i]]; };
        if (op == Op::Sum) {
            value_[id] = rules::Sum::forward(b_[id], x);
        } else if (op == Op::LogSumExp) {
            value_[id] = rules::LogSumExp::forward(b_[id], x);
        } else {
            const std::uint32_t n = b_[id] / 2;
            value_[id] = rules::Dot::forward(n, x, [&](std::uint32_t i) { return value_[c[n + i]]; });
        }
        return Status::Ok;
    }
    return visit_elementary(op, [&](auto rule) {
        using Rule = decltype(rule);
        const Eval e = Rule::forward(value_[a_[id]], Rule::arity == 2 ? value_[b_[id]] : 0.0);
        if (e.status == Status::Ok) value_[id] = e.value;
        return e.status;
    });
}

void Arena::backward_along(const std::vector<NodeId>& order) {
    if (order.empty()) return;
    for (const NodeId n : order) grad_[n] = 0.0;
    grad_[order.front()] = 1.0;
    for (const NodeId n : order) propagate(n, grad_[n], [this](NodeId c, double v) { grad_[c] += v; });
}

void Arena::backward_along(const std::vector<NodeId>& order, const std::vector<NodeId>& roots,
                           const double* seeds) {
    for (const NodeId n : order) grad_[n] = 0.0;
    for (std::size_t k = 0; k < roots.size(); ++k) grad_[roots[k]] += seeds[k];
    for (const NodeId n : order) propagate(n, grad_[n], [this](NodeId c, double v) { grad_[c] += v; });
}

void Arena::backward_step(NodeId id) {
    propagate(id, grad_[id], [this](NodeId c, double v) { grad_[c] += v; });
}

ArenaStats Arena::stats() const {
    ArenaStats s{};
    s.capacity = value_.size();
    s.free = free_count_;
    s.live = s.capacity - s.free;
    s.pool_capacity = pool_.capacity();
    s.pool_used = pool_.size() - pool_garbage_;
    s.sweeps_ordered = sweeps_ordered_;
    s.sweeps_dfs = sweeps_dfs_;
    s.bytes = heap_bytes(value_) + heap_bytes(grad_) + heap_bytes(op_) + heap_bytes(a_) + heap_bytes(b_) +
              heap_bytes(low_) + heap_bytes(refs_) + heap_bytes(run_) + heap_bytes(free_bits_) + heap_bytes(pool_) +
              heap_bytes(visit_mark_) + heap_bytes(dfs_stack_) + heap_bytes(order_) + heap_bytes(release_stack_);
    return s;
}

}  // namespace arenagrad
