#include "tape.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <unordered_set>

namespace arenagrad {

namespace {

// Every node a node reads: for elementary ops both operands, PowConst's constant exponent
// included (it has a value but gets no gradient); for n-ary ops all children.
std::uint32_t num_operands(const Arena& arena, NodeId id) {
    const Op op = arena.op(id);
    return is_nary(op) ? arena.num_children(id) : static_cast<std::uint32_t>(arity(op));
}

template <class Rule>
bool forward_rows(double* out, const double* a, const double* b, std::size_t n) {
    bool ok = true;
    for (std::size_t i = 0; i < n; ++i) {
        const Eval e = Rule::forward(a[i], b[i]);
        out[i] = e.value;
        ok &= e.status == Status::Ok;
    }
    return ok;
}

template <class Rule>
void backward_rows(const double* out, const double* gout, const double* a, const double* b, double* ga, double* gb,
                   std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
        const Partials p = Rule::partials(a[i], b[i], out[i]);
        ga[i] += gout[i] * p.da;
        if constexpr (differentiable_inputs<Rule>() == 2) gb[i] += gout[i] * p.db;
    }
}

// Sum over the batch in four interleaved lanes: one sequential chain of adds would make every
// parameter wait on the add latency of each sample in turn. The order is fixed, so results are
// deterministic; no promise ties it to the order of eager evaluation.
double batch_sum(const double* g, std::size_t n) {
    double lane[4] = {0.0, 0.0, 0.0, 0.0};
    std::size_t s = 0;
    for (; s + 4 <= n; s += 4) {
        for (std::size_t j = 0; j < 4; ++j) lane[j] += g[s + j];
    }
    for (; s < n; ++s) lane[0] += g[s];
    return (lane[0] + lane[1]) + (lane[2] + lane[3]);
}

}  // namespace

Tape::Tape(Arena& arena, NodeId root, std::vector<NodeId> inputs) : arena_(arena), inputs_(std::move(inputs)) {
    if (arena.is_leaf(root)) {
        throw std::invalid_argument("cannot record a leaf: the root must be the result of an op");
    }
    arena.topological_order(root, order_);

    std::vector<NodeId> graph_leaves;  // in order of discovery, so rows are deterministic
    std::unordered_set<NodeId> seen;
    for (const NodeId n : order_) {
        const std::uint32_t count = num_operands(arena, n);
        for (std::uint32_t i = 0; i < count; ++i) {
            const NodeId c = arena.child(n, i);
            if (arena.is_leaf(c) && seen.insert(c).second) graph_leaves.push_back(c);
        }
    }
    std::unordered_set<NodeId> input_set;
    for (std::size_t i = 0; i < inputs_.size(); ++i) {
        const NodeId id = inputs_[i];
        if (!arena.is_leaf(id)) {
            throw std::invalid_argument("input " + std::to_string(i) +
                                        " is the result of an op; only leaves (Values you created) can be inputs");
        }
        if (seen.count(id) == 0) {
            throw std::invalid_argument("input " + std::to_string(i) + " is not a leaf of the recorded graph");
        }
        if (!input_set.insert(id).second) {
            throw std::invalid_argument("input " + std::to_string(i) + " is given twice");
        }
    }
    for (const NodeId leaf : graph_leaves) {
        if (input_set.count(leaf) == 0) leaves_.push_back(leaf);
    }
    num_shared_ = leaves_.size();
    leaves_.insert(leaves_.end(), inputs_.begin(), inputs_.end());
    arena.retain(root);  // keeps the whole graph alive and unchanged
}

Tape::~Tape() { arena_.release(root()); }

bool Tape::forward(const double* input_values, ReplayError& error) {
    for (std::size_t i = 0; i < inputs_.size(); ++i) arena_.set_value(inputs_[i], input_values[i]);
    for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
        const Status s = arena_.recompute(*it);
        if (s != Status::Ok) {
            const Op op = arena_.op(*it);
            error = {s, op, arena_.value(arena_.child(*it, 0)),
                     arity(op) == 2 ? arena_.value(arena_.child(*it, 1)) : 0.0, 0};
            return false;
        }
    }
    return true;
}

// --- batched replay --------------------------------------------------------------------------

// Builds into locals and swaps them in at the end, so a failed compile leaves no half program.
void Tape::compile() {
    std::vector<NodeId> row_node = leaves_;
    for (auto it = order_.rbegin(); it != order_.rend(); ++it) row_node.push_back(*it);
    const auto zero_row = static_cast<std::uint32_t>(row_node.size());

    std::unordered_map<NodeId, std::uint32_t> rows;
    for (std::uint32_t r = 0; r < row_node.size(); ++r) rows.emplace(row_node[r], r);

    std::vector<Instruction> program;
    std::vector<std::uint32_t> child_rows;
    for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
        const NodeId n = *it;
        const Op op = arena_.op(n);
        if (is_nary(op)) {
            const auto offset = static_cast<std::uint32_t>(child_rows.size());
            const std::uint32_t count = arena_.num_children(n);
            for (std::uint32_t i = 0; i < count; ++i) child_rows.push_back(rows.at(arena_.child(n, i)));
            program.push_back({op, rows.at(n), offset, count});
        } else {
            const std::uint32_t b = arity(op) == 2 ? rows.at(arena_.child(n, 1)) : zero_row;
            program.push_back({op, rows.at(n), rows.at(arena_.child(n, 0)), b});
        }
    }
    row_node_.swap(row_node);
    program_.swap(program);
    child_rows_.swap(child_rows);
    zero_row_ = zero_row;
}

bool Tape::forward_batch(const double* x, std::size_t batch, double* out, ReplayError& error) {
    if (program_.empty()) compile();
    have_batch_forward_ = false;
    if (batch != batch_) {
        const std::size_t rows = std::size_t{zero_row_} + 1;
        if (batch > std::numeric_limits<std::size_t>::max() / sizeof(double) / rows) {
            throw std::length_error("arenagrad: the batch is too large for this graph");
        }
        // Allocate first, commit after: a failed allocation must not leave batch_ describing
        // buffers of another size.
        std::vector<double> values(rows * batch, 0.0);  // the zero row stays zero
        std::vector<double> grads(rows * batch, 0.0);
        values_.swap(values);
        grads_.swap(grads);
        batch_ = batch;
    }
    for (std::size_t s = 0; s < num_shared_; ++s) std::fill_n(row(values_, static_cast<std::uint32_t>(s)), batch, arena_.value(leaves_[s]));
    const std::size_t n_in = inputs_.size();
    for (std::size_t i = 0; i < n_in; ++i) {
        double* r = row(values_, static_cast<std::uint32_t>(num_shared_ + i));
        for (std::size_t s = 0; s < batch; ++s) r[s] = x[s * n_in + i];
    }

    for (const Instruction& ins : program_) {
        double* o = row(values_, ins.out);
        if (ins.op == Op::Sum || ins.op == Op::Dot) {
            std::fill_n(o, batch, 0.0);
            const std::uint32_t* c = child_rows_.data() + ins.a;
            if (ins.op == Op::Sum) {
                for (std::uint32_t k = 0; k < ins.b; ++k) {
                    const double* v = row(values_, c[k]);
                    for (std::size_t s = 0; s < batch; ++s) o[s] += v[s];
                }
            } else {
                const std::uint32_t n = ins.b / 2;
                for (std::uint32_t k = 0; k < n; ++k) {
                    const double* w = row(values_, c[k]);
                    const double* v = row(values_, c[n + k]);
                    for (std::size_t s = 0; s < batch; ++s) o[s] += w[s] * v[s];
                }
            }
            continue;
        }
        const double* a = row(values_, ins.a);
        const double* b = row(values_, ins.b);
        const bool ok = visit_elementary(ins.op, [&](auto rule) { return forward_rows<decltype(rule)>(o, a, b, batch); });
        if (!ok) {
            for (std::size_t s = 0; s < batch; ++s) {
                const Status st = visit_elementary(ins.op, [&](auto rule) { return decltype(rule)::forward(a[s], b[s]).status; });
                if (st != Status::Ok) {
                    error = {st, ins.op, a[s], b[s], s};
                    break;
                }
            }
            return false;
        }
    }
    const double* r = row(values_, root_row());
    std::copy_n(r, batch, out);
    have_batch_forward_ = true;
    return true;
}

void Tape::backward_batch(const double* seed, double* input_grads) {
    if (!have_batch_forward_) throw std::logic_error("backward_batch needs a successful forward_batch first");
    const std::size_t batch = batch_;
    std::fill(grads_.begin(), grads_.end(), 0.0);
    double* groot = row(grads_, root_row());
    for (std::size_t s = 0; s < batch; ++s) groot[s] = seed != nullptr ? seed[s] : 1.0;

    for (auto it = program_.rbegin(); it != program_.rend(); ++it) {
        const Instruction& ins = *it;
        const double* go = row(grads_, ins.out);
        if (ins.op == Op::Sum || ins.op == Op::Dot) {
            const std::uint32_t* c = child_rows_.data() + ins.a;
            if (ins.op == Op::Sum) {
                for (std::uint32_t k = 0; k < ins.b; ++k) {
                    double* g = row(grads_, c[k]);
                    for (std::size_t s = 0; s < batch; ++s) g[s] += go[s];
                }
            } else {
                const std::uint32_t n = ins.b / 2;
                for (std::uint32_t k = 0; k < n; ++k) {
                    const double* w = row(values_, c[k]);
                    const double* v = row(values_, c[n + k]);
                    double* gw = row(grads_, c[k]);
                    double* gv = row(grads_, c[n + k]);
                    for (std::size_t s = 0; s < batch; ++s) {
                        gw[s] += go[s] * v[s];
                        gv[s] += go[s] * w[s];
                    }
                }
            }
            continue;
        }
        visit_elementary(ins.op, [&](auto rule) {
            backward_rows<decltype(rule)>(row(values_, ins.out), go, row(values_, ins.a), row(values_, ins.b),
                                          row(grads_, ins.a), row(grads_, ins.b), batch);
        });
    }

    for (std::size_t k = 0; k < num_shared_; ++k) {
        const double total = batch_sum(row(grads_, static_cast<std::uint32_t>(k)), batch);
        arena_.set_grad(leaves_[k], arena_.grad(leaves_[k]) + total);
    }
    if (input_grads != nullptr) {
        const std::size_t n_in = inputs_.size();
        for (std::size_t i = 0; i < n_in; ++i) {
            const double* g = row(grads_, static_cast<std::uint32_t>(num_shared_ + i));
            for (std::size_t s = 0; s < batch; ++s) input_grads[s * n_in + i] = g[s];
        }
    }
}

const double* Tape::batch_values(NodeId id) const {
    if (!have_batch_forward_) return nullptr;
    const auto it = std::find(row_node_.begin(), row_node_.end(), id);
    if (it == row_node_.end()) return nullptr;
    return values_.data() + static_cast<std::size_t>(it - row_node_.begin()) * batch_;
}

}  // namespace arenagrad
