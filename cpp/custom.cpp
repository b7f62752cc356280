// The arena's side of custom ops (custom.hpp): creating their nodes and retiring their functions.
// Kept apart from arena.cpp so that the per-op allocation path there stays as the compiler inlined it.
#include <memory>
#include <new>
#include <vector>

#include "arena.hpp"

namespace arenagrad {

// Called by free_slot; out of line (in this file) so that free_slot stays small.
void Arena::retire_custom(NodeId id) noexcept {
    const auto it = custom_.find(id);
    if (it == custom_.end()) return;  // Arena::custom failed before registering the function
    try {
        dead_custom_.push_back(std::move(it->second));
    } catch (const std::bad_alloc&) {
        // Destroying it here could run foreign code mid-release (see dead_custom_); out of memory,
        // leaking one function object is the lesser harm.
        new (std::nothrow) std::shared_ptr<CustomFunction>(std::move(it->second));
    }
    custom_.erase(it);
}

NodeId Arena::custom(std::shared_ptr<CustomFunction> f, const NodeId* xs, const double* partials, std::size_t n,
                     double value) {
    custom_.reserve(custom_.size() + 1);
    std::vector<NodeId> p;  // the partials' leaves, owned here until the node takes them
    p.reserve(n);
    try {
        for (std::size_t i = 0; i < n; ++i) p.push_back(leaf(partials[i]));
        reserve_node();
        const std::uint32_t offset = allocate_pool(2 * n);
        for (std::size_t i = 0; i < n; ++i) {
            pool_[offset + i] = xs[i];
            pool_[offset + n + i] = p[i];
            retain(xs[i]);
        }
        p.clear();  // the pool owns them now
        const NodeId id = allocate(Op::Custom, value, offset, static_cast<NodeId>(2 * n));
        NodeId bound = id;
        for (std::size_t i = 0; i < n; ++i) bound = order_bound(id, bound, xs[i]);
        low_[id] = bound;
        try {
            custom_.emplace(id, std::move(f));
        } catch (...) {
            release(id);
            throw;
        }
        return id;
    } catch (...) {
        for (const NodeId leaf_id : p) release(leaf_id);
        throw;
    }
}

CustomFunction* Arena::custom_function(NodeId id) const {
    if (op_[id] != Op::Custom) return nullptr;
    return custom_.at(id).get();
}

}  // namespace arenagrad
