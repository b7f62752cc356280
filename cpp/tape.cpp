#include "tape.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>

#include "row_kernels.hpp"
#include "static_flags.hpp"
#include "tangent.hpp"
#include "worker_pool.hpp"

namespace arenagrad {

namespace {

// Every node a node reads: for elementary ops both operands, PowConst's constant exponent
// included (it has a value but gets no gradient); for n-ary ops all children.
std::uint32_t num_operands(const Arena& arena, NodeId id) {
    const Op op = arena.op(id);
    return is_nary(op) ? arena.num_children(id) : static_cast<std::uint32_t>(arity(op));
}

// An operand of a row loop: a row of per-sample values, or (Shared) one value for every sample,
// which the compiler keeps in a register.
template <bool Shared>
struct In {
    const double* p;
    double operator[](std::size_t s) const { return Shared ? p[0] : p[s]; }
};

// The batch's sums over samples (a shared leaf's gradient) run in four interleaved lanes, sample s
// adding to lane s % 4 and the batch's last batch % 4 samples to lane 0, and end as
// (lane 0 + lane 1) + (lane 2 + lane 3): one sequential chain of adds would make every shared
// operand wait on the add latency of each sample in turn. The order is fixed by the batch alone, so
// results do not depend on how the batch is cut into tiles; no promise ties it to the order of eager
// evaluation. add_lanes adds the samples s0 .. s0 + n - 1 (s0 a multiple of 4), given in g; full is
// batch / 4 * 4.
void add_lanes(double* lane, const double* g, std::size_t s0, std::size_t n, std::size_t full) {
    const std::size_t body = full > s0 ? std::min(n, full - s0) / 4 * 4 : 0;
    // Locals, kept in registers: summing into lane[] itself would make every add wait on a store, as
    // the compiler cannot rule out that lane aliases g.
    double acc[4] = {lane[0], lane[1], lane[2], lane[3]};
    std::size_t j = 0;
    for (; j < body; j += 4) {
        for (std::size_t i = 0; i < 4; ++i) acc[i] += g[j + i];
    }
    for (; j < n; ++j) acc[kernels::lane_of(s0 + j, full)] += g[j];
    for (std::size_t i = 0; i < 4; ++i) lane[i] = acc[i];
}

double lane_total(const double* lane) { return (lane[0] + lane[1]) + (lane[2] + lane[3]); }

// Sets a variable for the length of a scope and puts its old value back on leaving, by an exception too.
template <class T>
class ScopedSet {
  public:
    ScopedSet(T& target, T value) : target_(target), old_(target) { target_ = value; }
    ~ScopedSet() { target_ = old_; }
    ScopedSet(const ScopedSet&) = delete;
    ScopedSet& operator=(const ScopedSet&) = delete;

  private:
    T& target_;
    T old_;
};

// How a shared operand's per-sample gradients (a scratch row of one tile, clobbered) reach their
// target: in a per-sample sweep its row (added in the order eager backward adds them, so each row
// is that sample's gradient bit for bit); otherwise its four lanes, less the samples that failed.
struct SharedReduce {
    const std::size_t* failed = nullptr;  // samples left out of the sum, ascending
    std::size_t n_failed = 0;
    bool per_sample = false;
    std::size_t s0 = 0;    // the tile's first sample
    std::size_t full = 0;  // batch / 4 * 4
    void into(double* target, double* scratch, std::size_t n) const {
        if (per_sample) {
            for (std::size_t j = 0; j < n; ++j) target[j] += scratch[j];
            return;
        }
        // Only the tile's own failed samples: failed is sorted, and this runs once per shared operand.
        const std::size_t* end = failed + n_failed;
        for (const std::size_t* f = std::lower_bound(failed, end, s0); f != end && *f < s0 + n; ++f) {
            scratch[*f - s0] = 0.0;
        }
        add_lanes(target, scratch, s0, n, full);
    }
};

// Where a row loop sends an operand's gradient: into its row, or (Shared) into a scratch row that
// finish() hands to the SharedReduce. Both loops stay plain stores and loads, which the compiler
// vectorizes; the reduction is a separate pass.
template <bool Shared>
struct GradOut;

template <>
struct GradOut<false> {
    double* g;
    double* scratch;              // unused
    const SharedReduce* reduce;  // unused
    void add(std::size_t s, double v) { g[s] += v; }
    void finish(std::size_t) {}
};

template <>
struct GradOut<true> {
    double* g;
    double* scratch;  // one row
    const SharedReduce* reduce;
    void add(std::size_t s, double v) { scratch[s] = v; }
    void finish(std::size_t n) { reduce->into(g, scratch, n); }
};

template <class Rule, bool AS, bool BS>
bool forward_rows(double* out, In<AS> a, In<BS> b, std::size_t n) {
    bool ok = true;
    for (std::size_t s = 0; s < n; ++s) {
        const Eval e = Rule::forward(a[s], b[s]);
        out[s] = e.value;
        ok &= e.status == Status::Ok;
    }
    return ok;
}

template <class Rule, class G, bool AS, bool BS>
void backward_rows_with(const double* out, const double* go, In<AS> a, In<BS> b, GradOut<AS> ga, GradOut<BS> gb,
                        std::size_t n) {
    for (std::size_t s = 0; s < n; ++s) {
        const Grads d = Rule::template vjp<G>(go[s], a[s], b[s], out[s]);
        ga.add(s, d.a);
        if constexpr (differentiable_inputs<Rule>() == 2) gb.add(s, d.b);
    }
    ga.finish(n);
    if constexpr (differentiable_inputs<Rule>() == 2) gb.finish(n);
}

template <class Rule, bool AS, bool BS>
void backward_rows(const double* out, const double* go, In<AS> a, In<BS> b, GradOut<AS> ga, GradOut<BS> gb,
                   std::size_t n) {
    if (!scales_grad<Rule> || all_finite(go, n)) {
        backward_rows_with<Rule, rules::FiniteGrad>(out, go, a, b, ga, gb, n);
    } else {
        backward_rows_with<Rule, rules::AnyGrad>(out, go, a, b, ga, gb, n);
    }
}

// One term of rules::Dot for every sample, in the rule's order: the row starts at 0.0 and adds
// w_i * x_i for i = 0, 1, ... as the arena's evaluation does.
template <bool WS, bool XS>
void dot_forward(double* out, In<WS> w, In<XS> x, std::size_t n) {
    for (std::size_t s = 0; s < n; ++s) out[s] += w[s] * x[s];
}

template <class G, bool WS, bool XS>
void dot_backward_with(const double* go, In<WS> w, In<XS> x, GradOut<WS> gw, GradOut<XS> gx, std::size_t n) {
    for (std::size_t s = 0; s < n; ++s) {
        const Grads d = rules::Dot::vjp<G>(go[s], w[s], x[s]);
        gw.add(s, d.a);
        gx.add(s, d.b);
    }
    gw.finish(n);
    gx.finish(n);
}

template <bool WS, bool XS>
void dot_backward(const double* go, bool finite, In<WS> w, In<XS> x, GradOut<WS> gw, GradOut<XS> gx,
                  std::size_t n) {
    if (finite) {
        dot_backward_with<rules::FiniteGrad>(go, w, x, gw, gx, n);
    } else {
        dot_backward_with<rules::AnyGrad>(go, w, x, gw, gx, n);
    }
}

}  // namespace

Tape::Tape(Arena& arena, NodeId root, std::vector<NodeId> inputs)
    : Tape(arena, [&] {
          if (arena.is_leaf(root)) {
              throw std::invalid_argument("cannot record a leaf: the root must be the result of an op");
          }
          return std::vector<NodeId>{root};
      }(), std::move(inputs), true) {}

Tape::Tape(Arena& arena, std::vector<NodeId> roots, std::vector<NodeId> inputs)
    : Tape(arena, std::move(roots), std::move(inputs), false) {}

Tape::Tape(Arena& arena, std::vector<NodeId> roots, std::vector<NodeId> inputs, bool every_input_used)
    : arena_(arena), roots_(std::move(roots)), inputs_(std::move(inputs)) {
    if (roots_.empty()) throw std::invalid_argument("a tape needs at least one root");
    arena.topological_order(roots_, order_);

    std::vector<NodeId> graph_leaves;  // in order of discovery, so rows are deterministic
    std::unordered_set<NodeId> seen;
    for (const NodeId r : roots_) {
        if (arena.is_leaf(r) && seen.insert(r).second) graph_leaves.push_back(r);
    }
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
        // A tape of one root rejects an input its graph does not read (a mistake, usually); a
        // tape of several (a gradient) may have inputs that some or all roots ignore: a gradient
        // entry is 0 where the function does not depend on an input.
        if (seen.count(id) == 0 && every_input_used) {
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
    leaf_position_.reserve(leaves_.size());
    for (std::size_t j = 0; j < leaves_.size(); ++j) leaf_position_.emplace(leaves_[j], j);
    for (const NodeId r : roots_) arena.retain(r);  // keeps the whole graph alive and unchanged
}

Tape::~Tape() {
    for (const NodeId r : roots_) arena_.release(r);
}

void Tape::backward(const double* seeds) {
    if (seeds == nullptr) throw std::invalid_argument("backward needs one seed per root");
    arena_.backward_along(order_, roots_, seeds);
}

bool Tape::forward(const double* input_values, ReplayError& error) {
    if (input_values == nullptr && !inputs_.empty()) throw std::invalid_argument("forward needs input values");
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

// --- forward mode ----------------------------------------------------------------------------

// Runs on the row program (rows name nodes; values are read from the arena), so it shares the
// compiled operand lists with batched replay.
double Tape::jvp(const double* tangents) {
    double out = 0.0;
    if (roots_.size() != 1) throw std::invalid_argument("jvp of a tape of several roots gives one value per root");
    jvp(tangents, &out);
    return out;
}

void Tape::jvp(const double* tangents, double* root_tangents) {
    if (tangents == nullptr && !inputs_.empty()) throw std::invalid_argument("jvp needs one tangent per input");
    if (program_.empty()) compile();
    const std::size_t n_in = inputs_.size();
    tangent_.assign(std::size_t{zero_row_} + 1, 0.0);
    active_.assign(std::size_t{zero_row_} + 1, 0);
    for (std::size_t i = 0; i < n_in; ++i) {
        tangent_[i] = tangents[i];
        active_[i] = tangents[i] != 0.0;  // a zero tangent is a symbolic zero
    }
    const auto value = [&](std::uint32_t operand) {
        if ((operand & kShared) != 0) return arena_.value(leaves_[operand & ~kShared]);
        return operand == zero_row_ ? 0.0 : arena_.value(row_node_[operand]);
    };
    const auto active = [&](std::uint32_t operand) { return (operand & kShared) == 0 && active_[operand] != 0; };
    for (const Instruction& ins : program_) {
        double t = 0.0;
        bool any = false;
        const auto add = [&](double term) {
            t = any ? t + term : term;
            any = true;
        };
        const std::uint32_t* c = operands_.data() + ins.a;
        if (ins.op == Op::Sum) {
            for (std::uint32_t k = 0; k < ins.b; ++k) {
                if (active(c[k])) add(rules::Sum::vjp(tangent_[c[k]]));
            }
        } else if (ins.op == Op::Dot) {
            const std::uint32_t n = ins.b / 2;
            for (std::uint32_t k = 0; k < n; ++k) {
                const double w = value(c[k]);
                const double x = value(c[n + k]);
                if (active(c[k])) add(rules::Dot::vjp(tangent_[c[k]], w, x).a);
                if (active(c[n + k])) add(rules::Dot::vjp(tangent_[c[n + k]], w, x).b);
            }
        } else if (ins.op == Op::LogSumExp) {
            const double out = value(ins.out);
            for (std::uint32_t k = 0; k < ins.b; ++k) {
                if (active(c[k])) add(rules::LogSumExp::vjp(tangent_[c[k]], value(c[k]), out));
            }
        } else {
            visit_elementary(ins.op, [&](auto rule) {
                using Rule = decltype(rule);
                if constexpr (!has_zero_derivative<Rule>) {  // a mask's tangent is a symbolic zero
                    const double va = value(ins.a);
                    const double vb = value(ins.b);
                    const double out = value(ins.out);
                    if (active(ins.a)) add(Rule::vjp(tangent_[ins.a], va, vb, out).a);
                    if constexpr (differentiable_inputs<Rule>() == 2) {
                        if (active(ins.b)) add(Rule::vjp(tangent_[ins.b], va, vb, out).b);
                    }
                }
            });
        }
        tangent_[ins.out] = t;
        active_[ins.out] = any;
    }
    for (std::size_t k = 0; k < roots_.size(); ++k) {
        root_tangents[k] = active(root_operand_[k]) ? tangent_[root_operand_[k]] : 0.0;
    }
}

// --- batched replay --------------------------------------------------------------------------

// Builds into locals and swaps them in at the end, so a failed compile leaves no half program.
void Tape::compile() {
    for (const NodeId n : order_) {
        if (arena_.op(n) == Op::Custom) {
            throw std::invalid_argument("the graph holds a custom op ('" + arena_.custom_function(n)->name() +
                                        "'): batched replay and Tape.jvp run natively and cannot call it; "
                                        "use scalar replay (forward/backward)");
        }
    }
    const std::size_t n_in = inputs_.size();
    std::vector<NodeId> row_node(inputs_);
    for (auto it = order_.rbegin(); it != order_.rend(); ++it) row_node.push_back(*it);
    const auto zero_row = static_cast<std::uint32_t>(row_node.size());

    std::unordered_map<NodeId, std::uint32_t> operand;
    for (std::uint32_t k = 0; k < num_shared_; ++k) operand.emplace(leaves_[k], kShared | k);
    for (std::uint32_t r = 0; r < row_node.size(); ++r) operand.emplace(row_node[r], r);

    std::vector<Instruction> program;
    std::vector<std::uint32_t> operands;
    std::size_t max_dot_terms = 0;
    for (std::size_t r = n_in; r < row_node.size(); ++r) {
        const NodeId n = row_node[r];
        const Op op = arena_.op(n);
        if (is_nary(op)) {
            const auto offset = static_cast<std::uint32_t>(operands.size());
            const std::uint32_t count = arena_.num_children(n);
            for (std::uint32_t i = 0; i < count; ++i) operands.push_back(operand.at(arena_.child(n, i)));
            program.push_back({op, static_cast<std::uint32_t>(r), offset, count});
            if (op == Op::Dot) max_dot_terms = std::max<std::size_t>(max_dot_terms, count / 2);
        } else {
            const std::uint32_t b = arity(op) == 2 ? operand.at(arena_.child(n, 1)) : zero_row;
            program.push_back({op, static_cast<std::uint32_t>(r), operand.at(arena_.child(n, 0)), b});
        }
    }
    std::vector<std::uint32_t> root_operand;
    for (const NodeId r : roots_) root_operand.push_back(operand.at(r));
    row_node_.swap(row_node);
    program_.swap(program);
    operands_.swap(operands);
    root_operand_.swap(root_operand);
    zero_row_ = zero_row;
    max_dot_terms_ = max_dot_terms;
    find_layers();
    mark_kept_values();
}

void Tape::mark_kept_values() {
    std::vector<char> kept(std::size_t{zero_row_} + 1, 0);
    const auto keep = [&](std::uint32_t operand) {
        if ((operand & kShared) == 0) kept[operand] = 1;
    };
    for (std::uint32_t i = 0; i < inputs_.size(); ++i) keep(i);
    keep(zero_row_);
    for (const std::uint32_t r : root_operand_) keep(r);
    for (const Instruction& ins : program_) {
        const std::uint32_t* c = operands_.data() + ins.a;
        if (ins.op == Op::Dot) {  // each term's partials are the other factor; the output is not read
            for (std::uint32_t t = 0; t < ins.b; ++t) keep(c[t]);
        } else if (ins.op == Op::LogSumExp) {
            for (std::uint32_t t = 0; t < ins.b; ++t) keep(c[t]);
            keep(ins.out);
        } else if (!is_nary(ins.op)) {
            visit_elementary(ins.op, [&](auto rule) {
                if constexpr (vjp_reads_values<decltype(rule)>) {
                    keep(ins.a);
                    keep(ins.b);
                    keep(ins.out);
                }
            });
        }  // Sum: its vjp is g
    }
    kept_value_.swap(kept);
}

void Tape::layout_values(std::size_t batch) {
    const std::size_t rows = std::size_t{zero_row_} + 1;
    const auto n_kept = static_cast<std::size_t>(std::count(kept_value_.begin(), kept_value_.end(), 1));
    std::vector<double> values(n_kept * batch, 0.0);  // the zero row stays zero
    std::vector<double*> base(rows, nullptr);
    std::vector<double> nan_row(batch, std::numeric_limits<double>::quiet_NaN());
    const bool same_batch = batch == batch_ && value_base_.size() == rows;
    std::size_t k = 0;
    for (std::size_t r = 0; r < rows; ++r) {
        if (kept_value_[r] == 0) continue;
        base[r] = values.data() + k++ * batch;
        if (same_batch && value_base_[r] != nullptr) std::copy_n(value_base_[r], batch, base[r]);
    }
    values_.swap(values);
    value_base_.swap(base);
    nan_row_.swap(nan_row);
}

void Tape::find_layers() {
    std::vector<Layer> layers;
    std::vector<std::uint32_t> layer_of(program_.size(), kNoLayer);
    std::vector<std::uint32_t> current;  // the layer being gathered
    std::vector<std::uint32_t> key;      // its rows
    std::unordered_set<std::uint32_t> key_rows;
    std::size_t max_dots = 0;
    std::size_t max_rows = 0;
    const auto close = [&] {
        if (current.size() >= 2) {
            for (const std::uint32_t d : current) layer_of[d] = static_cast<std::uint32_t>(layers.size());
            max_dots = std::max(max_dots, current.size());
            max_rows = std::max(max_rows, key.size());
            layers.push_back({current, std::vector<std::uint32_t>(current.size(), kNoLayer)});
        }
        current.clear();
        key.clear();
        key_rows.clear();
    };
    for (std::uint32_t i = 0; i < program_.size(); ++i) {
        const Instruction& ins = program_[i];
        const std::uint32_t* c = operands_.data() + ins.a;
        if (ins.op == Op::Dot) {
            const std::uint32_t k = ins.b / 2;
            bool neuron = true;  // shared weights times rows, the rows distinct
            std::unordered_set<std::uint32_t> rows;
            for (std::uint32_t t = 0; t < k && neuron; ++t) {
                neuron = (c[t] & kShared) != 0 && (c[k + t] & kShared) == 0 && rows.insert(c[k + t]).second;
            }
            if (neuron) {
                if (!current.empty() && std::equal(key.begin(), key.end(), c + k, c + 2 * k)) {
                    current.push_back(i);
                    continue;
                }
                close();
                current.push_back(i);
                key.assign(c + k, c + 2 * k);
                key_rows = std::move(rows);
                continue;
            }
        }
        if (current.empty()) continue;
        const bool nary = is_nary(ins.op);
        const std::uint32_t count = nary ? ins.b : 2;
        for (std::uint32_t t = 0; t < count; ++t) {
            const std::uint32_t operand = nary ? c[t] : (t == 0 ? ins.a : ins.b);
            if (key_rows.count(operand) != 0) {
                close();
                break;
            }
        }
    }
    close();
    // Each layer dot's first bias add: Add(its row, a shared leaf), in either order.
    std::vector<char> fused(program_.size(), 0);
    std::unordered_map<std::uint32_t, std::pair<std::uint32_t, std::uint32_t>> dot_of_row;  // -> (layer, j)
    for (std::uint32_t l = 0; l < layers.size(); ++l) {
        for (std::uint32_t j = 0; j < layers[l].dots.size(); ++j) dot_of_row[program_[layers[l].dots[j]].out] = {l, j};
    }
    for (std::uint32_t i = 0; i < program_.size(); ++i) {
        const Instruction& ins = program_[i];
        if (ins.op != Op::Add || ((ins.a & kShared) != 0) == ((ins.b & kShared) != 0)) continue;
        const auto it = dot_of_row.find(biased_row(ins));
        if (it == dot_of_row.end()) continue;
        std::uint32_t& bias_add = layers[it->second.first].bias_adds[it->second.second];
        if (bias_add != kNoLayer) continue;
        bias_add = i;
        fused[i] = 1;
    }
    std::vector<std::uint32_t> readers(std::size_t{zero_row_} + 1, 0);
    for (const Instruction& ins : program_) {
        if (is_nary(ins.op)) {
            for (std::uint32_t t = 0; t < ins.b; ++t) {
                if ((operands_[ins.a + t] & kShared) == 0) ++readers[operands_[ins.a + t]];
            }
        } else {
            for (const std::uint32_t operand : {ins.a, ins.b}) {
                if ((operand & kShared) == 0) ++readers[operand];
            }
        }
    }
    for (const std::uint32_t r : root_operand_) {
        if ((r & kShared) == 0) ++readers[r];
    }
    std::vector<char> fused_back(program_.size(), 0);
    for (std::uint32_t i = 0; i < program_.size(); ++i) {
        if (fused[i] == 0) continue;
        fused_back[i] = readers[biased_row(program_[i])] == 1;
    }
    std::vector<char> borrowed(std::size_t{zero_row_} + 1, 0);
    for (const Layer& layer : layers) {
        for (std::size_t j = 0; j < layer.dots.size(); ++j) {
            const std::uint32_t add = layer.bias_adds[j];
            if (add != kNoLayer && fused_back[add] != 0) borrowed[program_[layer.dots[j]].out] = 1;
        }
    }
    in_layer_forward_.swap(fused);
    in_layer_backward_.swap(fused_back);
    grads_borrowed_.swap(borrowed);
    layers_.swap(layers);
    layer_of_.swap(layer_of);
    max_layer_dots_ = max_dots;
    max_layer_rows_ = max_rows;
}

void Tape::forward_layer(Workspace& ws, const Layer& layer, std::size_t s0, std::size_t n) {
    const std::size_t dots = layer.dots.size();
    const Instruction& first = program_[layer.dots.front()];
    const std::size_t k = first.b / 2;
    for (std::size_t j = 0; j < dots; ++j) {
        const Instruction& d = program_[layer.dots[j]];
        // A dot row that only its bias add reads, and nobody after the pass, is never written.
        ws.layer_out[j] = bias_only_reader(layer, j) && kept_value_[d.out] == 0 ? nullptr : tile_value(ws, d.out, s0);
        const std::uint32_t* c = operands_.data() + d.a;
        for (std::size_t t = 0; t < k; ++t) ws.layer_coef[j * k + t] = shared_values_[c[t] & ~kShared];
        ws.layer_biased[j] = nullptr;
        if (layer.bias_adds[j] == kNoLayer) continue;
        const Instruction& add = program_[layer.bias_adds[j]];
        const std::uint32_t bias = biased_row(add) == add.a ? add.b : add.a;
        ws.layer_bias[j] = shared_values_[bias & ~kShared];
        ws.layer_biased[j] = tile_value(ws, add.out, s0);
    }
    const std::uint32_t* x = operands_.data() + first.a + k;
    for (std::size_t t = 0; t < k; ++t) ws.layer_rows[t] = tile_value(ws, x[t], s0);
    kernels::layer_forward(ws.layer_out.data(), ws.layer_coef.data(), ws.layer_rows.data(), dots, k, n,
                           ws.layer_bias.data(), ws.layer_biased.data());
}

bool Tape::back_layer(Workspace& ws, double* lanes, const Layer& layer, std::size_t s0, std::size_t n) {
    if (per_sample_ || !failed_.empty()) return false;
    const std::size_t dots = layer.dots.size();
    const Instruction& first = program_[layer.dots.front()];
    const std::size_t k = first.b / 2;
    for (std::size_t j = 0; j < dots; ++j) {
        const Instruction& d = program_[layer.dots[j]];
        const std::uint32_t add = layer.bias_adds[j];
        // The dot's grads are 0.0 + the add's (its only reader): the same numbers, except that a -0.0
        // would be +0.0; the kernel only adds their products to sums that start at +0.0 and so can
        // never be -0.0, which makes the sign of a zero go unseen.
        const double* go = tile_grad(ws, bias_only_reader(layer, j) ? program_[add].out : d.out);
        if (!all_finite(go, n)) return false;
        ws.layer_go[j] = go;
        const std::uint32_t* c = operands_.data() + d.a;
        for (std::size_t t = 0; t < k; ++t) {
            ws.layer_coef[j * k + t] = shared_values_[c[t] & ~kShared];
            ws.layer_lanes[j * k + t] = lanes + 4 * (d.a + t);
        }
    }
    const std::uint32_t* x = operands_.data() + first.a + k;
    // The rows' grads are wanted unless every row is an input whose grads nobody asked for (a per-sample
    // sweep, which may keep an input's, never gets here).
    bool grads_wanted = input_grads_ != nullptr;
    for (std::size_t t = 0; t < k; ++t) {
        ws.layer_rows[t] = after_forward(x[t], s0);
        ws.layer_row_grads[t] = tile_grad(ws, x[t]);
        grads_wanted = grads_wanted || x[t] >= inputs_.size();
    }
    kernels::layer_backward(ws.layer_go.data(), ws.layer_coef.data(), ws.layer_rows.data(),
                            grads_wanted ? ws.layer_row_grads.data() : nullptr, ws.layer_lanes.data(), dots, k, n, s0,
                            batch_ / 4 * 4);
    for (std::size_t j = 0; j < dots; ++j) {  // each fused bias's lanes gain its add's output grads
        const std::uint32_t add = layer.bias_adds[j];
        if (!bias_only_reader(layer, j)) continue;
        const bool bias_first = biased_row(program_[add]) == program_[add].b;
        add_lanes(lanes + 4 * elementary_slot(add, bias_first ? 0 : 1), ws.layer_go[j], s0, n, batch_ / 4 * 4);
    }
    return true;
}

bool Tape::scaled_rows(Workspace& ws, double* lanes, const std::uint32_t* c, std::uint32_t n, std::size_t s0,
                       std::size_t first_slot) {
    ws.dot_coef.clear();
    ws.dot_rows.clear();
    ws.dot_coef_lanes.clear();
    ws.dot_row_grads.clear();
    for (std::uint32_t k = 0; k < n; ++k) {
        const bool w_shared = (c[k] & kShared) != 0;
        if (w_shared == ((c[n + k] & kShared) != 0)) return false;
        const std::uint32_t coef = w_shared ? c[k] : c[n + k];
        const std::uint32_t r = w_shared ? c[n + k] : c[k];
        ws.dot_coef.push_back(shared_values_[coef & ~kShared]);
        ws.dot_rows.push_back(lanes == nullptr ? tile_value(ws, r, s0) : after_forward(r, s0));
        ws.dot_coef_lanes.push_back(lanes == nullptr ? nullptr : lanes + 4 * (first_slot + (w_shared ? k : n + k)));
        ws.dot_row_grads.push_back(lanes == nullptr ? nullptr : tile_grad(ws, r));
    }
    return true;
}

template <class F>
void Tape::run_chunks(std::size_t n_chunks, F&& f) {
    const std::size_t threads = std::min(num_threads(), n_chunks);
    if (workspaces_.size() < threads) workspaces_.resize(threads);
    for (std::size_t t = 0; t < threads; ++t) {  // every allocation happens here, before any thread
        Workspace& ws = workspaces_[t];
        ws.scratch.resize(2 * kTile);
        ws.grads.resize((std::size_t{zero_row_} + 1) * tile_stride());
        ws.values.resize((std::size_t{zero_row_} + 1) * tile_stride());
        ws.dot_coef.reserve(max_dot_terms_);
        ws.dot_rows.reserve(max_dot_terms_);
        ws.dot_coef_lanes.reserve(max_dot_terms_);
        ws.dot_row_grads.reserve(max_dot_terms_);
        ws.layer_go.resize(max_layer_dots_);
        ws.layer_out.resize(max_layer_dots_);
        ws.layer_bias.resize(max_layer_dots_);
        ws.layer_biased.resize(max_layer_dots_);
        ws.layer_coef.resize(max_layer_dots_ * max_layer_rows_);
        ws.layer_rows.resize(max_layer_rows_);
        ws.layer_row_grads.resize(max_layer_rows_);
        ws.layer_lanes.resize(max_layer_dots_ * max_layer_rows_);
    }
    if (threads <= 1) {
        for (std::size_t c = 0; c < n_chunks; ++c) f(c, workspaces_[0]);
        return;
    }
    // Chunks go to whichever thread is free; each writes only its own samples' rows and its own
    // chunk's lanes, so the results do not depend on which thread ran which chunk.
    std::atomic<std::size_t> next{0};
    std::mutex failure_lock;
    std::exception_ptr failure;
    run_on_workers(threads, [&](std::size_t worker) {
        try {
            for (std::size_t c = next++; c < n_chunks; c = next++) f(c, workspaces_[worker]);
        } catch (...) {
            const std::lock_guard<std::mutex> hold(failure_lock);
            if (!failure) failure = std::current_exception();
        }
    });
    if (failure) std::rethrow_exception(failure);
}

std::size_t Tape::sample_range_size() const {
    // At least 256 samples (each range runs every instruction's dispatch again), at most 256 ranges.
    return std::max<std::size_t>(256, ((batch_ + 255) / 256 + 7) / 8 * 8);
}

std::size_t Tape::sample_ranges() const { return (batch_ + sample_range_size() - 1) / sample_range_size(); }

template <class F>
void Tape::for_sample_ranges(std::size_t n_ranges, F&& f) {
    const std::size_t per = sample_range_size();
    const auto range = [&](std::size_t r) {
        const std::size_t s0 = r * per;
        if (s0 < batch_) f(r, s0, std::min(per, batch_ - s0));
    };
    if (n_ranges <= 1 || num_threads() == 1) {
        for (std::size_t r = 0; r < n_ranges; ++r) range(r);
        return;
    }
    std::atomic<std::size_t> next{0};
    run_on_workers(std::min(num_threads(), n_ranges), [&](std::size_t) {
        for (std::size_t r = next++; r < n_ranges; r = next++) range(r);
    });
}

// Every instruction for the samples s0 .. s0 + n - 1: a tile small enough that its rows stay in
// cache from one instruction to the next.
bool Tape::forward_tile(Workspace& ws, std::size_t s0, std::size_t n, OnError on_error, std::vector<char>& failed,
                        ReplayError& error) {
    const auto value_at = [&](std::uint32_t operand) -> const double* {
        return (operand & kShared) != 0 ? &shared_values_[operand & ~kShared] : tile_value(ws, operand, s0);
    };
    for (std::size_t i = 0; i < program_.size(); ++i) {
        const Instruction& ins = program_[i];
        double* o = tile_value(ws, ins.out, s0);
        if (ins.op == Op::Dot && layer_of_[i] != kNoLayer) {
            const Layer& layer = layers_[layer_of_[i]];
            if (i == layer.dots.front()) forward_layer(ws, layer, s0, n);  // all its dots at the first one's turn
            continue;
        }
        if (in_layer_forward_[i] != 0) continue;
        if (ins.op == Op::Sum) {
            std::fill_n(o, n, 0.0);
            const std::uint32_t* c = operands_.data() + ins.a;
            for (std::uint32_t k = 0; k < ins.b; ++k) {
                const double* v = value_at(c[k]);
                if ((c[k] & kShared) != 0) {
                    for (std::size_t s = 0; s < n; ++s) o[s] += v[0];
                } else {
                    for (std::size_t s = 0; s < n; ++s) o[s] += v[s];
                }
            }
            continue;
        }
        if (ins.op == Op::LogSumExp) {
            const std::uint32_t* c = operands_.data() + ins.a;
            for (std::size_t s = 0; s < n; ++s) {
                o[s] = rules::LogSumExp::forward(ins.b, [&](std::uint32_t k) {
                    return (c[k] & kShared) != 0 ? *value_at(c[k]) : value_at(c[k])[s];
                });
            }
            continue;
        }
        if (ins.op == Op::Dot) {
            const std::uint32_t* c = operands_.data() + ins.a;
            const std::uint32_t k = ins.b / 2;
            if (scaled_rows(ws, nullptr, c, k, s0, ins.a)) {
                kernels::scaled_row_sum(o, ws.dot_coef.data(), ws.dot_rows.data(), k, n);
                continue;
            }
            std::fill_n(o, n, 0.0);
            for (std::uint32_t t = 0; t < k; ++t) {
                const double* w = value_at(c[t]);
                const double* v = value_at(c[k + t]);
                with_kinds((c[t] & kShared) != 0, (c[k + t] & kShared) != 0, [&](auto w_kind, auto v_kind) {
                    dot_forward<decltype(w_kind)::value, decltype(v_kind)::value>(o, {w}, {v}, n);
                });
            }
            continue;
        }
        const double* a = value_at(ins.a);
        const double* b = value_at(ins.b);
        bool ok = true;
        with_kinds((ins.a & kShared) != 0, (ins.b & kShared) != 0, [&](auto as, auto bs) {
            constexpr bool AS = decltype(as)::value;
            constexpr bool BS = decltype(bs)::value;
            ok = visit_elementary(ins.op, [&](auto rule) {
                return forward_rows<decltype(rule), AS, BS>(o, In<AS>{a}, In<BS>{b}, n);
            });
        });
        if (!ok) {
            const std::size_t sa = (ins.a & kShared) != 0 ? 0 : 1;
            const std::size_t sb = (ins.b & kShared) != 0 ? 0 : 1;
            for (std::size_t s = 0; s < n; ++s) {
                const Status st = visit_elementary(
                    ins.op, [&](auto rule) { return decltype(rule)::forward(a[s * sa], b[s * sb]).status; });
                if (st == Status::Ok) continue;
                if (on_error == OnError::Raise) {
                    error = {st, ins.op, a[s * sa], b[s * sb], s0 + s};
                    return false;
                }
                o[s] = std::numeric_limits<double>::quiet_NaN();
                failed[s0 + s] = 1;
            }
        }
    }
    return true;
}

// Inputs in and roots out tile by tile, on the tile's thread: the transposition of a large batch would
// otherwise be a serial pass through memory before and after the parallel one.
void Tape::copy_inputs(const double* x, std::size_t s0, std::size_t n) {
    const std::size_t n_in = inputs_.size();
    for (std::size_t i = 0; i < n_in; ++i) {
        double* r = stored_row(static_cast<std::uint32_t>(i)) + s0;
        for (std::size_t j = 0; j < n; ++j) r[j] = x[(s0 + j) * n_in + i];
    }
}

void Tape::copy_roots(double* out, std::size_t s0, std::size_t n) const {
    const std::size_t n_roots = roots_.size();
    for (std::size_t k = 0; k < n_roots; ++k) {
        for (std::size_t j = s0; j < s0 + n; ++j) out[j * n_roots + k] = operand_value(root_operand_[k], j);
    }
}

bool Tape::forward_chunks(OnError on_error, std::vector<char>& failed, ReplayError& error, const double* x,
                          double* out) {
    const std::size_t batch = batch_;
    const std::size_t chunk = chunk_size(batch);
    const std::size_t n_chunks = (batch + chunk - 1) / chunk;
    std::vector<ReplayError> chunk_error(n_chunks);  // each chunk's first failure (OnError::Raise)
    std::vector<char> chunk_failed(n_chunks, 0);
    run_chunks(n_chunks, [&](std::size_t c, Workspace& ws) {
        const std::size_t end = std::min(batch, (c + 1) * chunk);
        for (std::size_t s0 = c * chunk; s0 < end; s0 += kTile) {
            const std::size_t n = std::min(kTile, end - s0);
            if (x != nullptr) copy_inputs(x, s0, n);
            if (!forward_tile(ws, s0, n, on_error, failed, chunk_error[c])) {
                chunk_failed[c] = 1;
                return;
            }
            if (out != nullptr) copy_roots(out, s0, n);
        }
    });
    for (std::size_t c = 0; c < n_chunks; ++c) {
        if (chunk_failed[c] != 0) {  // the earliest chunk's: the same report however many threads ran
            error = chunk_error[c];
            return false;
        }
    }
    return true;
}

bool Tape::forward_batch(const double* x, std::size_t batch, double* out, ReplayError& error, OnError on_error) {
    // The core checks its own preconditions: a zero batch would leave every row pointer null.
    if (batch == 0) throw std::invalid_argument("forward_batch needs a batch of at least one sample");
    if (out == nullptr || (x == nullptr && !inputs_.empty())) {
        throw std::invalid_argument("forward_batch needs input and output buffers");
    }
    if (program_.empty()) compile();
    have_batch_forward_ = false;
    failed_.clear();
    if (batch != batch_) {
        const std::size_t rows = std::size_t{zero_row_} + 1;
        if (batch > std::numeric_limits<std::size_t>::max() / sizeof(double) / rows) {
            throw std::length_error("arenagrad: the batch is too large for this graph");
        }
        // Allocate first, commit after: a failed allocation must not leave batch_ describing
        // buffers of another size.
        std::vector<double> shared_values(num_shared_, 0.0);
        std::vector<double> shared_grads(num_shared_, 0.0);
        layout_values(batch);
        shared_values_.swap(shared_values);
        shared_grads_.swap(shared_grads);
        batch_ = batch;
    }
    for (std::size_t k = 0; k < num_shared_; ++k) shared_values_[k] = arena_.value(leaves_[k]);
    std::vector<char> failed(on_error == OnError::Nan ? batch : 0, 0);  // per sample
    last_on_error_ = on_error;
    if (!forward_chunks(on_error, failed, error, x, out)) return false;
    for (std::size_t s = 0; s < failed.size(); ++s) {
        if (failed[s] != 0) failed_.push_back(s);
    }
    const std::size_t n_roots = roots_.size();
    for (const std::size_t s : failed_) {
        std::fill_n(out + s * n_roots, n_roots, std::numeric_limits<double>::quiet_NaN());
    }
    have_batch_forward_ = true;
    return true;
}

void Tape::backward_batch(const double* seed, double* input_grads) {
    if (!have_batch_forward_) throw std::logic_error("backward_batch needs a successful forward_batch first");
    per_sample_ = false;
    const std::size_t n_in = inputs_.size();
    kept_rows_.clear();
    {
        const ScopedSet<double*> into(input_grads_, input_grads);  // back_tile writes each tile's rows there
        sweep_back(seed);
    }
    for (std::size_t k = 0; k < num_shared_; ++k) {
        arena_.set_grad(leaves_[k], arena_.grad(leaves_[k]) + shared_grads_[k]);
    }
    if (input_grads != nullptr) {
        for (const std::size_t s : failed_) {
            std::fill_n(input_grads + s * n_in, n_in, std::numeric_limits<double>::quiet_NaN());
        }
    }
}

void Tape::backward_batch_per_sample(const double* seed, const std::vector<NodeId>& params, double* out) {
    if (!have_batch_forward_) throw std::logic_error("backward_batch needs a successful forward_batch first");
    // Where each param's gradients will be: a shared leaf's row of per-sample grads, a row the sweep
    // keeps for an input or a node of the graph (kept_rows_: the sweep's own are per tile), or nowhere
    // (0).
    shared_rows_.assign(num_shared_ * batch_, 0.0);
    std::unordered_map<NodeId, std::uint32_t> row_of;
    for (std::uint32_t r = 0; r < row_node_.size(); ++r) row_of.emplace(row_node_[r], r);
    std::unordered_map<NodeId, std::size_t> kept;  // node -> its index in kept_rows_
    kept_rows_.clear();
    for (const NodeId p : params) {
        const auto it = row_of.find(p);
        if (it != row_of.end() && kept.emplace(p, kept_rows_.size()).second) kept_rows_.push_back(it->second);
    }
    kept_grads_.assign(kept_rows_.size() * batch_, 0.0);  // before the sweep: its data() is used below
    std::unordered_map<NodeId, const double*> where;
    for (std::size_t k = 0; k < num_shared_; ++k) where.emplace(leaves_[k], shared_rows_.data() + k * batch_);
    for (const auto& [node, k] : kept) where.emplace(node, kept_grads_.data() + k * batch_);
    std::vector<const double*> source(params.size(), nullptr);
    for (std::size_t j = 0; j < params.size(); ++j) {
        const auto it = where.find(params[j]);
        if (it != where.end()) source[j] = it->second;
    }
    {
        const ScopedSet<bool> per_sample(per_sample_, true);  // shared grads are rows only for this sweep
        sweep_back(seed);
    }
    const std::size_t n = params.size();
    for (std::size_t j = 0; j < n; ++j) {
        for (std::size_t s = 0; s < batch_; ++s) out[s * n + j] = source[j] != nullptr ? source[j][s] : 0.0;
    }
    for (const std::size_t s : failed_) std::fill_n(out + s * n, n, std::numeric_limits<double>::quiet_NaN());
}

void Tape::sweep_back(const double* seed) {
    const std::size_t batch = batch_;
    std::fill(shared_grads_.begin(), shared_grads_.end(), 0.0);
    const std::size_t chunk = chunk_size(batch);
    const std::size_t n_chunks = (batch + chunk - 1) / chunk;
    const std::size_t chunk_lanes = 4 * num_slots();
    if (!per_sample_) lanes_.assign(n_chunks * chunk_lanes, 0.0);
    const std::size_t n_roots = roots_.size();
    if (!per_sample_) {  // a shared root's grad is one scalar: its seeds first, as the sweep adds after
        for (std::size_t k = 0; k < n_roots; ++k) {
            if ((root_operand_[k] & kShared) == 0) continue;
            double& g = shared_grads_[root_operand_[k] & ~kShared];
            for (std::size_t s = 0; s < batch; ++s) {
                if (std::binary_search(failed_.begin(), failed_.end(), s)) continue;
                g += seed != nullptr ? seed[s * n_roots + k] : 1.0;
            }
        }
    }
    run_chunks(n_chunks, [&](std::size_t c, Workspace& ws) {
        double* lanes = per_sample_ ? nullptr : lanes_.data() + c * chunk_lanes;
        const std::size_t end = std::min(batch, (c + 1) * chunk);
        for (std::size_t s0 = c * chunk; s0 < end; s0 += kTile) {
            back_tile(ws, lanes, seed, s0, std::min(kTile, end - s0));
        }
    });
    if (per_sample_) return;
    // Each shared operand's lanes into its leaf's grad, in the order the untiled sweep added them:
    // instructions last to first, operands in the order their rule gives them.
    for (std::size_t i = program_.size(); i-- > 0;) {
        const Instruction& ins = program_[i];
        const std::uint32_t* c = operands_.data() + ins.a;
        const auto add = [&](std::uint32_t operand, std::size_t slot) {
            if ((operand & kShared) == 0) return;
            double total = lane_total(&lanes_[4 * slot]);
            for (std::size_t later = 1; later < n_chunks; ++later) {
                total += lane_total(&lanes_[later * chunk_lanes + 4 * slot]);
            }
            shared_grads_[operand & ~kShared] += total;
        };
        if (ins.op == Op::Dot) {
            const std::uint32_t k = ins.b / 2;
            for (std::uint32_t t = 0; t < k; ++t) {
                add(c[t], ins.a + t);
                add(c[k + t], ins.a + k + t);
            }
        } else if (is_nary(ins.op)) {
            for (std::uint32_t t = 0; t < ins.b; ++t) add(c[t], ins.a + t);
        } else {
            add(ins.a, elementary_slot(i, 0));
            const std::size_t reduced = visit_elementary(ins.op, [](auto rule) {
                return std::size_t{differentiable_inputs<decltype(rule)>()};
            });
            if (reduced == 2) add(ins.b, elementary_slot(i, 1));
        }
    }
}

// The sweep for the samples s0 .. s0 + n - 1: their slice of every row of grads, zeroed and seeded,
// then every instruction last to first. Shared operands' gradients go to their lanes (or rows).
void Tape::back_tile(Workspace& ws, double* lanes, const double* seed, std::size_t s0, std::size_t n) {
    const std::size_t batch = batch_;
    const std::size_t n_rows = std::size_t{zero_row_} + 1;
    const bool fuse_bias = !per_sample_ && failed_.empty();
    for (std::size_t r = 0; r < n_rows; ++r) {
        // A layer's dot whose grads are its bias add's (back_layer reads those) is zeroed only if the
        // layer falls back to the dots one by one.
        if (fuse_bias && grads_borrowed_[r] != 0) continue;
        std::fill_n(tile_grad(ws, static_cast<std::uint32_t>(r)), n, 0.0);
    }
    const std::size_t n_roots = roots_.size();
    for (std::size_t k = 0; k < n_roots; ++k) {
        const std::uint32_t r = root_operand_[k];
        if ((r & kShared) != 0 && !per_sample_) continue;  // seeded in sweep_back
        double* g = (r & kShared) != 0 ? shared_rows_.data() + (r & ~kShared) * batch + s0 : tile_grad(ws, r);
        for (std::size_t j = 0; j < n; ++j) g[j] += seed != nullptr ? seed[(s0 + j) * n_roots + k] : 1.0;
    }
    const SharedReduce reduce{failed_.data(), failed_.size(), per_sample_, s0, batch / 4 * 4};
    const auto value_at = [&](std::uint32_t operand) -> const double* {
        return (operand & kShared) != 0 ? &shared_values_[operand & ~kShared] : after_forward(operand, s0);
    };
    // Where an operand's gradient goes: its row of grads, or, shared, its row of per-sample grads or
    // the lanes of this operand slot.
    const auto grad_at = [&](std::uint32_t operand, std::size_t slot) -> double* {
        if ((operand & kShared) == 0) return tile_grad(ws, operand);
        if (per_sample_) return shared_rows_.data() + (operand & ~kShared) * batch + s0;
        return lanes + 4 * slot;
    };
    // Two scratch rows for shared operands' per-sample gradients (an op has at most two operands).
    double* scratch_a = ws.scratch.data();
    double* scratch_b = ws.scratch.data() + kTile;
    const auto back_dot = [&](const Instruction& ins) {
        const double* go = tile_grad(ws, ins.out);
        const std::uint32_t* c = operands_.data() + ins.a;
        const std::uint32_t k = ins.b / 2;
        const bool finite = all_finite(go, n);
        if (finite && !per_sample_ && failed_.empty() && scaled_rows(ws, lanes, c, k, s0, ins.a)) {
            kernels::scaled_row_sum_backward(go, ws.dot_coef.data(), ws.dot_rows.data(), ws.dot_row_grads.data(),
                                             ws.dot_coef_lanes.data(), k, n, s0, batch / 4 * 4);
            return;
        }
        for (std::uint32_t t = 0; t < k; ++t) {
            const std::uint32_t wt = c[t];
            const std::uint32_t xt = c[k + t];
            with_kinds((wt & kShared) != 0, (xt & kShared) != 0, [&](auto w_kind, auto x_kind) {
                constexpr bool WS = decltype(w_kind)::value;
                constexpr bool XS = decltype(x_kind)::value;
                dot_backward<WS, XS>(go, finite, In<WS>{value_at(wt)}, In<XS>{value_at(xt)},
                                     GradOut<WS>{grad_at(wt, ins.a + t), scratch_a, &reduce},
                                     GradOut<XS>{grad_at(xt, ins.a + k + t), scratch_b, &reduce}, n);
            });
        }
    };
    const auto back_elementary = [&](std::size_t i) {
        const Instruction& ins = program_[i];
        const double* a = value_at(ins.a);
        const double* b = value_at(ins.b);
        const double* o = after_forward(ins.out, s0);
        const double* go = tile_grad(ws, ins.out);
        double* ga = grad_at(ins.a, elementary_slot(i, 0));
        double* gb = grad_at(ins.b, elementary_slot(i, 1));
        with_kinds((ins.a & kShared) != 0, (ins.b & kShared) != 0, [&](auto as, auto bs) {
            constexpr bool AS = decltype(as)::value;
            constexpr bool BS = decltype(bs)::value;
            visit_elementary(ins.op, [&](auto rule) {
                backward_rows<decltype(rule), AS, BS>(o, go, In<AS>{a}, In<BS>{b},
                                                      GradOut<AS>{ga, scratch_a, &reduce},
                                                      GradOut<BS>{gb, scratch_b, &reduce}, n);
            });
        });
    };
    // A bias add that is its dot's only reader is left to the layer's kernel (back_layer), which reads
    // the add's output grads as the dot's: with shared grads summed in lanes, the order in which the
    // slots are filled does not matter. Per-sample sweeps add into one row per shared leaf, in the
    // sweep's order, so they take every instruction in turn.
    for (std::size_t i = program_.size(); i-- > 0;) {
        const Instruction& ins = program_[i];
        const double* go = tile_grad(ws, ins.out);
        const std::uint32_t* c = operands_.data() + ins.a;
        if (ins.op == Op::Sum) {
            for (std::uint32_t k = 0; k < ins.b; ++k) {
                double* g = grad_at(c[k], ins.a + k);
                if ((c[k] & kShared) != 0) {
                    std::copy_n(go, n, scratch_a);
                    reduce.into(g, scratch_a, n);
                } else {
                    for (std::size_t s = 0; s < n; ++s) g[s] += rules::Sum::vjp(go[s]);
                }
            }
            continue;
        }
        if (ins.op == Op::LogSumExp) {
            const double* o = after_forward(ins.out, s0);
            for (std::uint32_t k = 0; k < ins.b; ++k) {
                const double* x = value_at(c[k]);
                double* g = grad_at(c[k], ins.a + k);
                if ((c[k] & kShared) != 0) {
                    for (std::size_t s = 0; s < n; ++s) scratch_a[s] = rules::LogSumExp::vjp(go[s], x[0], o[s]);
                    reduce.into(g, scratch_a, n);
                } else {
                    for (std::size_t s = 0; s < n; ++s) g[s] += rules::LogSumExp::vjp(go[s], x[s], o[s]);
                }
            }
            continue;
        }
        if (ins.op == Op::Dot) {
            // A per-sample sweep adds a shared leaf's terms into its row in the sweep's order, so the dots
            // of a layer run each at its own turn there: a leaf read between two of them (a bias, say)
            // must gain its terms in between, as in eager backward.
            if (layer_of_[i] == kNoLayer || per_sample_) {
                back_dot(ins);
                continue;
            }
            const Layer& layer = layers_[layer_of_[i]];
            if (i != layer.dots.front()) continue;  // the layer runs at its first dot's turn
            if (!back_layer(ws, lanes, layer, s0, n)) {
                for (std::size_t j = layer.dots.size(); j-- > 0;) {  // the bias adds it would have done first
                    if (!fuse_bias || !bias_only_reader(layer, j)) continue;
                    std::fill_n(tile_grad(ws, program_[layer.dots[j]].out), n, 0.0);
                    back_elementary(layer.bias_adds[j]);
                }
                for (std::size_t j = layer.dots.size(); j-- > 0;) back_dot(program_[layer.dots[j]]);
            }
            continue;
        }
        if (fuse_bias && in_layer_backward_[i] != 0) continue;  // the layer does it
        back_elementary(i);
    }
    for (std::size_t k = 0; k < kept_rows_.size(); ++k) {
        std::copy_n(tile_grad(ws, kept_rows_[k]), n, kept_grads_.data() + k * batch + s0);
    }
    if (input_grads_ != nullptr) {
        const std::size_t n_in = inputs_.size();
        for (std::size_t i = 0; i < n_in; ++i) {
            const double* g = tile_grad(ws, static_cast<std::uint32_t>(i));
            for (std::size_t j = 0; j < n; ++j) input_grads_[(s0 + j) * n_in + i] = g[j];
        }
    }
}

// A dot term's tangent, both of its operands' contributions in one pass (First: the row's first
// term, stored rather than added).
template <class G, bool First, bool WA, bool XA, bool WS, bool XS>
void dot_tangent_rows(double* t, In<WS> tw, In<XS> tx, In<WS> w, In<XS> x, std::size_t n) {
    for (std::size_t s = 0; s < n; ++s) {
        double v = First ? 0.0 : t[s];
        if constexpr (WA) {
            const double d = rules::Dot::vjp<G>(tw[s], w[s], x[s]).a;
            v = First ? d : v + d;
        }
        if constexpr (XA) {
            const double d = rules::Dot::vjp<G>(tx[s], w[s], x[s]).b;
            v = First && !WA ? d : v + d;
        }
        t[s] = v;
    }
}

// Forward mode over rows: a row's tangent is the sum, in operand order, of each active operand's
// term (the rule's vjp applied to the operand's tangent), as in jvp(). Activity is per row (shared
// leaves are never active, nor is an input whose tangents are all zero: a symbolic zero, as in
// jvp()), so the loops over samples have no branches; as in backward_batch, operand kinds are
// compile-time and a finite tangent row takes the rules' plain-product form (the same bits).
void Tape::jvp_batch(const double* tangents, double* out) {
    if (!have_batch_forward_) throw std::logic_error("jvp_batch needs a successful forward_batch first");
    if (tangents == nullptr && !inputs_.empty()) throw std::invalid_argument("jvp_batch needs tangents");
    tangent_rows(tangents, nullptr);
    const std::size_t batch = batch_;
    const std::size_t n_roots = roots_.size();
    for (std::size_t k = 0; k < n_roots; ++k) {
        const std::uint32_t r = root_operand_[k];
        const bool active = (r & kShared) == 0 && active_[r] != 0;
        const double* t = tangent_.data() + std::size_t{r & ~kShared} * batch;
        for (std::size_t s = 0; s < batch; ++s) out[s * n_roots + k] = active ? t[s] : 0.0;
    }
    for (const std::size_t s : failed_) {
        std::fill_n(out + s * n_roots, n_roots, std::numeric_limits<double>::quiet_NaN());
    }
}

void Tape::tangent_rows(const double* tangents, const double* shared_tangents) {
    const std::size_t batch = batch_;
    const std::size_t rows = std::size_t{zero_row_} + 1;
    tangent_.resize(rows * batch);  // a row is read only once written (active)
    active_.assign(rows, 0);
    const std::size_t n_in = inputs_.size();
    for (std::size_t i = 0; i < n_in; ++i) {
        double* t = tangent_.data() + i * batch;
        bool nonzero = false;
        for (std::size_t s = 0; s < batch; ++s) {
            t[s] = tangents[s * n_in + i];
            nonzero |= t[s] != 0.0;
        }
        active_[i] = nonzero;
    }
    // A shared leaf's tangent is one number for every sample, as its value is; zero is a symbolic zero.
    shared_tangent_.assign(num_shared_, 0.0);
    if (shared_tangents != nullptr) std::copy_n(shared_tangents, num_shared_, shared_tangent_.begin());
    shared_active_.assign(num_shared_, 0);
    for (std::size_t k = 0; k < num_shared_; ++k) shared_active_[k] = shared_tangent_[k] != 0.0;
    // Which rows depend on the direction is the same for every sample: decided before the samples are
    // split between the threads, each of which then computes its own samples' tangents.
    // One range (a batch of up to 256) marks each row as its pass reaches it, as that pass decides anyway;
    // this pre-pass would cost a calling loop of one-hot directions (a Hessian's columns) a third more.
    const std::size_t n_ranges = sample_ranges();
    tangent_finite_.assign(n_ranges * rows, -1);
    if (n_ranges == 1) {
        tangent_range(0, batch, tangent_finite_.data(), true);
        return;
    }
    for (const Instruction& ins : program_) active_[ins.out] = tangent_reaches(ins);
    for_sample_ranges(n_ranges, [&](std::size_t r, std::size_t s0, std::size_t n) {
        tangent_range(s0, n, tangent_finite_.data() + r * rows, false);
    });
}

bool Tape::tangent_reaches(const Instruction& ins) const {
    if (is_nary(ins.op)) {
        for (std::uint32_t k = 0; k < ins.b; ++k) {
            if (tangent_active(operands_[ins.a + k])) return true;
        }
        return false;
    }
    return visit_elementary(ins.op, [&](auto rule) {
        using Rule = decltype(rule);
        return !has_zero_derivative<Rule> &&
               (tangent_active(ins.a) || (differentiable_inputs<Rule>() == 2 && tangent_active(ins.b)));
    });
}

// tangent_rows' pass over the samples s0 .. s0 + n - 1. finite_cache holds, per row, whether its
// tangents there are all finite (-1: not asked yet).
void Tape::tangent_range(std::size_t s0, std::size_t n, signed char* finite_cache, bool mark_active) {
    const std::size_t batch = batch_;
    const auto trow = [&](std::uint32_t r) { return tangent_.data() + std::size_t{r} * batch + s0; };
    const auto value_of = [&](std::uint32_t operand) -> const double* {
        return (operand & kShared) != 0 ? &shared_values_[operand & ~kShared] : after_forward(operand, s0);
    };
    // An operand's tangents: its row, or its shared leaf's one tangent (read through In<true>).
    const auto tan_of = [&](std::uint32_t operand) -> const double* {
        return (operand & kShared) != 0 ? &shared_tangent_[operand & ~kShared] : trow(operand);
    };
    // Whether an operand's tangents are all finite, asked once per row (a row is complete once written).
    const auto finite_row = [&](std::uint32_t operand) {
        if ((operand & kShared) != 0) return std::isfinite(shared_tangent_[operand & ~kShared]);
        if (finite_cache[operand] < 0) finite_cache[operand] = all_finite(trow(operand), n) ? 1 : 0;
        return finite_cache[operand] != 0;
    };
    for (const Instruction& ins : program_) {
        // Most instructions of a one-hot direction (a Hessian's column) have no operand with a tangent: skip
        // them before any dispatch (tangent_reaches' exact answer costs the Hessian's 337 calls 15% more).
        bool any_operand = false;
        if (is_nary(ins.op)) {
            for (std::uint32_t k = 0; k < ins.b && !any_operand; ++k) {
                any_operand = tangent_active(operands_[ins.a + k]);
            }
        } else {
            any_operand = tangent_active(ins.a) || tangent_active(ins.b);
        }
        if (!any_operand) {
            if (mark_active) active_[ins.out] = 0;
            continue;
        }
        double* t = trow(ins.out);
        bool any = false;
        // Adds term(s, G) for every sample: the first term is stored, later ones added. G is the
        // rules' plain-product form when the operand's tangent row is finite.
        const auto add = [&](std::uint32_t operand, bool scales, auto term) {
            const auto run = [&](auto g) {
                using G = decltype(g);
                if (any) {
                    for (std::size_t s = 0; s < n; ++s) t[s] += term(s, G{});
                } else {
                    for (std::size_t s = 0; s < n; ++s) t[s] = term(s, G{});
                }
            };
            rules::with_scale(!scales || finite_row(operand), run);
            any = true;
        };
        const std::uint32_t* c = operands_.data() + ins.a;
        if (ins.op == Op::Sum) {
            for (std::uint32_t k = 0; k < ins.b; ++k) {
                if (!tangent_active(c[k])) continue;
                with_kinds((c[k] & kShared) != 0, false, [&](auto cs, auto) {
                    add(c[k], false, [tc = In<decltype(cs)::value>{tan_of(c[k])}](std::size_t s, auto) {
                        return rules::Sum::vjp(tc[s]);
                    });
                });
            }
        } else if (ins.op == Op::Dot) {
            const std::uint32_t terms = ins.b / 2;
            for (std::uint32_t k = 0; k < terms; ++k) {
                const std::uint32_t wk = c[k];
                const std::uint32_t xk = c[terms + k];
                const bool wa = tangent_active(wk);
                const bool xa = tangent_active(xk);
                if (!wa && !xa) continue;
                // Both terms in one pass: the same additions, in the same order, as one pass each.
                const bool finite = (!wa || finite_row(wk)) && (!xa || finite_row(xk));
                with_kinds((wk & kShared) != 0, (xk & kShared) != 0, [&](auto ws, auto xs) {
                    constexpr bool WS = decltype(ws)::value;
                    constexpr bool XS = decltype(xs)::value;
                    const auto run = [&](auto g, auto first, auto w_active, auto x_active) {
                        if constexpr (decltype(w_active)::value || decltype(x_active)::value) {
                            dot_tangent_rows<decltype(g), decltype(first)::value, decltype(w_active)::value,
                                             decltype(x_active)::value>(t, In<WS>{tan_of(wk)}, In<XS>{tan_of(xk)},
                                                                        In<WS>{value_of(wk)}, In<XS>{value_of(xk)},
                                                                        n);
                        }
                    };
                    const auto with_g = [&](auto g) {
                        with_flags(!any, wa, xa, [&](auto first, auto w_active, auto x_active) {
                            run(g, first, w_active, x_active);
                        });
                    };
                    rules::with_scale(finite, with_g);
                });
                any = true;
            }
        } else if (ins.op == Op::LogSumExp) {
            const double* o = after_forward(ins.out, s0);
            for (std::uint32_t k = 0; k < ins.b; ++k) {
                if (!tangent_active(c[k])) continue;
                with_kinds((c[k] & kShared) != 0, false, [&](auto cs, auto) {
                    constexpr bool CS = decltype(cs)::value;
                    add(c[k], false, [tc = In<CS>{tan_of(c[k])}, x = In<CS>{value_of(c[k])}, o](std::size_t s, auto) {
                        return rules::LogSumExp::vjp(tc[s], x[s], o[s]);
                    });
                });
            }
        } else {
            const double* o = after_forward(ins.out, s0);
            with_kinds((ins.a & kShared) != 0, (ins.b & kShared) != 0, [&](auto as, auto bs) {
                const In<decltype(as)::value> a{value_of(ins.a)};
                const In<decltype(bs)::value> b{value_of(ins.b)};
                const In<decltype(as)::value> ta{tan_of(ins.a)};
                const In<decltype(bs)::value> tb{tan_of(ins.b)};
                visit_elementary(ins.op, [&](auto rule) {
                    using Rule = decltype(rule);
                    if constexpr (!has_zero_derivative<Rule>) {  // a mask's tangent is a symbolic zero
                        if (tangent_active(ins.a)) {
                            add(ins.a, scales_grad<Rule>, [a, b, o, ta](std::size_t s, auto g) {
                                return Rule::template vjp<decltype(g)>(ta[s], a[s], b[s], o[s]).a;
                            });
                        }
                        if constexpr (differentiable_inputs<Rule>() == 2) {
                            if (tangent_active(ins.b)) {
                                add(ins.b, scales_grad<Rule>,
                                    [a, b, o, tb](std::size_t s, auto g) {
                                        return Rule::template vjp<decltype(g)>(tb[s], a[s], b[s], o[s]).b;
                                    });
                            }
                        }
                    }
                });
            });
        }
        if (mark_active) active_[ins.out] = any;
    }
}

// --- hvp_batch's row loops ------------------------------------------------------------------------
// One loop per rule and pattern of activity: the flags are compile-time, so the compiler folds every
// test of a Tangent's activity, and flatten inlines the table's rules into the loop.

// An operand's values and, when active, its tangents: rows, or a shared leaf's one value and tangent
// (stride 0).
struct DualIn {
    const double* v;
    const double* t;
    std::size_t stride;
    template <bool Active>
    Tangent at(std::size_t s) const {
        return {v[s * stride], Active ? t[s * stride] : 0.0, Active};
    }
    // The same, with the kind known at compile time: plain loads the loops vectorize (a runtime stride
    // makes the compiler gather every element).
    template <class TG, bool Active, bool Shared>
    BasicTangent<TG> at_kind(std::size_t s) const {
        const std::size_t i = Shared ? 0 : s;
        return {v[i], Active ? t[i] : 0.0, Active};
    }
    // A shared leaf's value and tangent (zero: a symbolic zero).
    Tangent at_shared() const { return {v[0], t[0], t[0] != 0.0}; }
};

// A row of grads and of their tangents (for a shared leaf, a row of its per-sample terms and a sink for
// their values, which nothing reads), so that the loops have no branch.
struct DualOut {
    double* g;
    double* t;
    template <class T>
    void add(std::size_t s, const T& d) const {
        g[s] += d.v;
        if (d.active) t[s] += d.t;
    }
};

// G is FiniteGrad when every grad of the row is finite, as in backward_rows.
template <class Rule, class G, bool GA, bool AA, bool BA>
[[gnu::flatten]] void dual_elementary_rows(DualIn go, DualIn a, DualIn b, DualIn o, DualOut ga, DualOut gb,
                                           std::size_t n) {
    constexpr bool BD = BA && differentiable_inputs<Rule>() == 2;
    constexpr bool OA = !has_zero_derivative<Rule> && (AA || BD);
    const auto vjp = [&](std::size_t s) {
        return Rule::template vjp<G>(go.at<GA>(s), a.at<AA>(s), b.at<BD>(s), o.at<OA>(s));
    };
    // No sample's terms reach another sample's row, so the loop vectorizes without the runtime alias
    // checks of its ten pointers, which GCC gives up on. ga and gb are never one row (the sweep hands x * x
    // a scratch row for b): GCC may reorder their loads and stores under ivdep.
#pragma GCC ivdep
    for (std::size_t s = 0; s < n; ++s) {
        const auto d = vjp(s);
        ga.add(s, d.a);
        if constexpr (differentiable_inputs<Rule>() == 2) gb.add(s, d.b);
    }
}

// WS / XS: the operand is a shared leaf, whose terms' tangents are summed here, sample s in lane s % 4,
// and the lanes' total added to *w_sum / *x_sum (no row to write, and nothing else to read back).
// TG: FiniteGrad when every tangent read is finite (the same numbers, with plain products).
// Masked: samples s with counted[s] == 0 (failed in forward_batch) add nothing to those sums, as they add
// nothing to backward_batch's.
template <class G, class TG, bool GA, bool WA, bool XA, bool WS, bool XS, bool Masked = false>
[[gnu::flatten]] void dual_dot_rows(DualIn go, DualIn w, DualIn x, DualOut gw, DualOut gx, double* w_sum,
                                    double* x_sum, std::size_t n, const unsigned char* counted = nullptr) {
    const auto vjp = [&](std::size_t s) {
        return rules::Dot::vjp<G>(go.at_kind<TG, GA, false>(s), w.at_kind<TG, WA, WS>(s),
                                  x.at_kind<TG, XA, XS>(s));
    };
    double lw[4] = {0.0, 0.0, 0.0, 0.0};
    double lx[4] = {0.0, 0.0, 0.0, 0.0};
    const auto step = [&](std::size_t s, std::size_t lane) {
        const auto d = vjp(s);
        if constexpr (WS) {
            if (d.a.active) lw[lane] += Masked && counted[s] == 0 ? 0.0 : d.a.t;
        } else {
            gw.add(s, d.a);
        }
        if constexpr (XS) {
            if (d.b.active) lx[lane] += Masked && counted[s] == 0 ? 0.0 : d.b.t;
        } else {
            gx.add(s, d.b);
        }
    };
    std::size_t s = 0;
#pragma GCC ivdep  // as above
    for (; s + 4 <= n; s += 4) {
        for (std::size_t lane = 0; lane < 4; ++lane) step(s + lane, lane);
    }
    for (; s < n; ++s) step(s, s % 4);
    if constexpr (WS) *w_sum += (lw[0] + lw[1]) + (lw[2] + lw[3]);
    if constexpr (XS) *x_sum += (lx[0] + lx[1]) + (lx[2] + lx[3]);
}

// Which grads a term along the direction reaches does not depend on the sample: decided before any
// sample's sweep, by running each rule once on Tangents whose numbers do not matter.
void Tape::reach_grads() {
    const std::size_t rows = std::size_t{zero_row_} + 1;
    grad_active_.assign(rows, 0);
    shared_grad_active_.assign(num_shared_, 0);
    const auto reach = [&](std::uint32_t operand, const Tangent& d) {
        if (!d.active) return;
        if ((operand & kShared) != 0) {
            shared_grad_active_[operand & ~kShared] = 1;
        } else {
            grad_active_[operand] = 1;
        }
    };
    const auto probe = Tangent::probe;
    for (std::size_t i = program_.size(); i-- > 0;) {
        const Instruction& ins = program_[i];
        const std::uint32_t* c = operands_.data() + ins.a;
        const Tangent g = probe(grad_active_[ins.out] != 0);
        if (ins.op == Op::Sum) {
            for (std::uint32_t k = 0; k < ins.b; ++k) reach(c[k], rules::Sum::vjp(g));
        } else if (ins.op == Op::Dot) {
            const std::uint32_t n = ins.b / 2;
            for (std::uint32_t k = 0; k < n; ++k) {
                const Pair<Tangent> d =
                    rules::Dot::vjp(g, probe(tangent_active(c[k])), probe(tangent_active(c[n + k])));
                reach(c[k], d.a);
                reach(c[n + k], d.b);
            }
        } else if (ins.op == Op::LogSumExp) {
            for (std::uint32_t k = 0; k < ins.b; ++k) {
                reach(c[k], rules::LogSumExp::vjp(g, probe(tangent_active(c[k])), probe(active_[ins.out] != 0)));
            }
        } else {
            visit_elementary(ins.op, [&](auto rule) {
                using Rule = decltype(rule);
                constexpr bool two = differentiable_inputs<Rule>() == 2;
                const Pair<Tangent> d = Rule::vjp(g, probe(tangent_active(ins.a)), probe(two && tangent_active(ins.b)),
                                                  probe(active_[ins.out] != 0));
                reach(ins.a, d.a);
                if constexpr (two) reach(ins.b, d.b);
            });
        }
    }
}

// The backward pass of backward_batch, in dual numbers: each row of grads has a row of tangents, and
// every rule's vjp runs over Tangent (cpp/tangent.hpp), reading the values of the last forward_batch
// and the tangents of tangent_rows. In the sweep's order, so the grads' values are backward_batch's and
// each row's tangent is the sum a recorded gradient's jvp would form. Samples share nothing here but
// what they read, so ranges of them run on the threads; what reaches a shared leaf is kept per sample in
// the sweep's order and summed over the samples at the end.
void Tape::hvp_batch(const double* tangents, const double* seed, double* out, const double* shared_tangents,
                     double* shared_out) {
    if (!have_batch_forward_) throw std::logic_error("hvp_batch needs a successful forward_batch first");
    if (tangents == nullptr && !inputs_.empty()) throw std::invalid_argument("hvp_batch needs tangents");
    tangent_rows(tangents, shared_tangents);
    const std::size_t batch = batch_;
    const std::size_t rows = std::size_t{zero_row_} + 1;
    dual_grad_.assign(rows * batch, 0.0);
    dual_tangent_.assign(rows * batch, 0.0);
    // A shared leaf that an op other than a dot reads gets a row of its per-sample terms; a dot's terms
    // are summed in registers as they are made (dual_dot_rows).
    constexpr std::size_t kNoRow = ~std::size_t{0};
    shared_row_.assign(num_shared_, kNoRow);
    std::size_t n_shared_rows = 0;
    for (const Instruction& ins : program_) {
        if (ins.op == Op::Dot) continue;
        const auto need = [&](std::uint32_t operand) {
            if ((operand & kShared) != 0 && shared_row_[operand & ~kShared] == kNoRow) {
                shared_row_[operand & ~kShared] = n_shared_rows++;
            }
        };
        if (is_nary(ins.op)) {
            for (std::uint32_t k = 0; k < ins.b; ++k) need(operands_[ins.a + k]);
        } else {
            need(ins.a);
            need(ins.b);
        }
    }
    shared_dual_rows_.assign(n_shared_rows * batch, 0.0);
    shared_collapsed_.assign(num_shared_, 0.0);
    dual_sink_.resize(batch);
    const std::size_t n_roots = roots_.size();
    for (std::size_t k = 0; k < n_roots; ++k) {
        const std::uint32_t r = root_operand_[k];
        if ((r & kShared) != 0) continue;  // a constant root: its grad's tangent is 0
        double* g = dual_grad_.data() + std::size_t{r} * batch;
        for (std::size_t s = 0; s < batch; ++s) g[s] += seed != nullptr ? seed[s * n_roots + k] : 1.0;
    }
    const auto both_shared = [](std::uint32_t w, std::uint32_t x) { return (w & x & kShared) != 0; };

    reach_grads();
    const auto probe = Tangent::probe;

    // Per range of samples, per shared leaf: what the range's dot terms add to it (dual_dot_rows).
    const std::size_t n_ranges = sample_ranges();
    range_sums_.assign(n_ranges * num_shared_, 0.0);
    // The sweep over the samples s0 .. s0 + n - 1, range r.
    // Per sample, whether it counts in the shared leaves' sums (null: every sample does).
    std::vector<unsigned char> counted_all;
    if (!failed_.empty()) {
        counted_all.assign(batch, 1);
        for (const std::size_t f : failed_) counted_all[f] = 0;
    }
    const auto sweep = [&](std::size_t range, std::size_t s0, std::size_t n) {
        double* sums = range_sums_.data() + range * num_shared_;
        const unsigned char* counted = nullptr;  // this range's, if some sample of it failed
        if (!counted_all.empty() && std::find(counted_all.begin() + static_cast<std::ptrdiff_t>(s0),
                                              counted_all.begin() + static_cast<std::ptrdiff_t>(s0 + n),
                                              0) != counted_all.begin() + static_cast<std::ptrdiff_t>(s0 + n)) {
            counted = counted_all.data() + s0;
        }
        // Whether an operand's tangents here are all finite, asked once per row.
        signed char* finite_cache = tangent_finite_.data() + range * rows;
        const auto finite_tangent = [&](std::uint32_t operand) {
            if ((operand & kShared) != 0) return std::isfinite(shared_tangent_[operand & ~kShared]);
            if (active_[operand] == 0) return true;  // no tangents: zero
            if (finite_cache[operand] < 0) {
                finite_cache[operand] = all_finite(tangent_.data() + std::size_t{operand} * batch + s0, n) ? 1 : 0;
            }
            return finite_cache[operand] != 0;
        };
        const auto range_sum = [&](std::uint32_t operand) -> double* {
            return (operand & kShared) != 0 ? sums + (operand & ~kShared) : nullptr;
        };
        const auto value = [&](std::uint32_t operand) -> DualIn {
            if ((operand & kShared) != 0) {
                const std::uint32_t j = operand & ~kShared;
                return {&shared_values_[j], &shared_tangent_[j], 0};
            }
            return {after_forward(operand, s0), tangent_.data() + std::size_t{operand} * batch + s0, 1};
        };
        const auto grad_in = [&](std::uint32_t r) -> DualIn {
            const std::size_t i = std::size_t{r} * batch + s0;
            return {dual_grad_.data() + i, dual_tangent_.data() + i, 1};
        };
        const auto grad_out = [&](std::uint32_t operand) -> DualOut {
            if ((operand & kShared) != 0) {
                // A leaf without a row is only a dot's operand, whose terms dual_dot_rows sums itself.
                const std::size_t row = shared_row_[operand & ~kShared];
                double* sink = dual_sink_.data() + s0;
                return {sink, row == kNoRow ? sink : shared_dual_rows_.data() + row * batch + s0};
            }
            const std::size_t i = std::size_t{operand} * batch + s0;
            return {dual_grad_.data() + i, dual_tangent_.data() + i};
        };
        // An operand read twice by one op (x * x) has its second term go to scratch rows first, then
        // added to its row: the same additions in the same order, and no row written twice in one loop.
        // The scratch starts at -0.0, the one number x + -0.0 leaves alone, so it holds each term exactly;
        // a term's tangent reaches the row only if it is active, as DualOut::add decides.
        const auto alias_out = [&]() -> DualOut {
            double* scratch = dual_alias_.data() + 2 * s0;
            std::fill_n(scratch, 2 * n, -0.0);
            return {scratch, scratch + n};
        };
        const auto unalias = [&](const DualOut& row, const DualOut& scratch, bool active) {
            for (std::size_t s = 0; s < n; ++s) row.g[s] += scratch.g[s];
            if (!active) return;
            for (std::size_t s = 0; s < n; ++s) row.t[s] += scratch.t[s];
        };
        for (std::size_t i = program_.size(); i-- > 0;) {
            const Instruction& ins = program_[i];
            const std::uint32_t* c = operands_.data() + ins.a;
            const DualIn go = grad_in(ins.out);
            const bool g_active = grad_active_[ins.out] != 0;
            if (ins.op == Op::Sum) {
                for (std::uint32_t k = 0; k < ins.b; ++k) {
                    const DualOut to = grad_out(c[k]);
                    if (g_active) {
                        for (std::size_t s = 0; s < n; ++s) to.add(s, rules::Sum::vjp(go.at<true>(s)));
                    } else {
                        for (std::size_t s = 0; s < n; ++s) to.add(s, rules::Sum::vjp(go.at<false>(s)));
                    }
                }
            } else if (ins.op == Op::Dot) {
                const std::uint32_t terms = ins.b / 2;
                const bool g_finite = !g_active || all_finite(go.t, n);
                rules::with_scale(all_finite(go.v, n), [&](auto grad) {  // as backward_batch scales
                    for (std::uint32_t k = 0; k < terms; ++k) {
                        const std::uint32_t w = c[k];
                        const std::uint32_t x = c[terms + k];
                        if (both_shared(w, x)) continue;  // after the sweep
                        const bool alias = w == x && (w & kShared) == 0;  // x * x: one row of grads
                        const DualOut to_x = alias ? alias_out() : grad_out(x);
                        const auto run = [&](auto tg) {
                            with_flags(g_active, tangent_active(w), tangent_active(x), [&](auto G, auto W, auto X) {
                                with_kinds((w & kShared) != 0, (x & kShared) != 0, [&](auto ws, auto xs) {
                                    constexpr bool WS = decltype(ws)::value;
                                    constexpr bool XS = decltype(xs)::value;
                                    const auto call = [&](auto masked) {
                                        dual_dot_rows<decltype(grad), decltype(tg), G, W, X, WS, XS,
                                                      decltype(masked)::value>(go, value(w), value(x),
                                                                               grad_out(w), to_x, range_sum(w),
                                                                               range_sum(x), n, counted);
                                    };
                                    if constexpr (WS || XS) {
                                        if (counted != nullptr) {
                                            call(std::true_type{});
                                            return;
                                        }
                                    }
                                    call(std::false_type{});
                                });
                            });
                        };
                        rules::with_scale(g_finite && finite_tangent(w) && finite_tangent(x), run);
                        if (alias) {
                            const bool active = rules::Dot::vjp(probe(g_active), probe(tangent_active(w)),
                                                                probe(tangent_active(x))).b.active;
                            unalias(grad_out(x), to_x, active);
                        }
                    }
                });
            } else if (ins.op == Op::LogSumExp) {
                const DualIn o = value(ins.out);
                const bool o_active = active_[ins.out] != 0;
                for (std::uint32_t k = 0; k < ins.b; ++k) {
                    const DualIn x = value(c[k]);
                    const DualOut to = grad_out(c[k]);
                    const bool x_active = tangent_active(c[k]);
                    for (std::size_t s = 0; s < n; ++s) {
                        const Tangent gs{go.v[s], go.t[s], g_active};
                        const Tangent xs{x.v[s * x.stride], x_active ? x.t[s * x.stride] : 0.0, x_active};
                        const Tangent os{o.v[s], o_active ? o.t[s] : 0.0, o_active};
                        to.add(s, rules::LogSumExp::vjp(gs, xs, os));
                    }
                }
            } else {
                visit_elementary(ins.op, [&](auto rule) {
                    using Rule = decltype(rule);
                    const auto run = [&](auto grad) {
                        // Flags that cannot matter are fixed, for fewer instantiations: b of a unary rule.
                        const bool b_active = differentiable_inputs<Rule>() == 2 && tangent_active(ins.b);
                        const bool alias = differentiable_inputs<Rule>() == 2 && ins.a == ins.b &&
                                           (ins.a & kShared) == 0;  // x * x: one row of grads
                        const DualOut to_b = alias ? alias_out() : grad_out(ins.b);
                        with_flags(g_active, tangent_active(ins.a), b_active, [&](auto G, auto A, auto B) {
                            if constexpr (differentiable_inputs<Rule>() == 2 || !decltype(B)::value) {
                                dual_elementary_rows<Rule, decltype(grad), G, A, B>(
                                    go, value(ins.a), value(ins.b), value(ins.out), grad_out(ins.a), to_b, n);
                            }
                        });
                        if (alias) {
                            const bool active = Rule::vjp(probe(g_active), probe(tangent_active(ins.a)),
                                                          probe(b_active), probe(active_[ins.out] != 0))
                                                    .b.active;
                            unalias(grad_out(ins.b), to_b, active);
                        }
                    };
                    if constexpr (scales_grad<Rule>) {
                        rules::with_scale(all_finite(go.v, n), run);
                    } else {
                        run(rules::AnyGrad{});
                    }
                });
            }
        }
    };
    // tangent_finite_ keeps tangent_rows' answers: the same ranges, the same rows.
    dual_alias_.resize(2 * batch);
    for_sample_ranges(n_ranges, sweep);

    // Dot terms of two shared leaves (a penalty such as dot(params, params)) reach only shared leaves,
    // which nothing in the sweep reads, so they run now that every grad is complete. They read the same
    // numbers in every sample but g, and a vjp is linear in g: with finite grads and tangents their terms
    // summed over the samples are the vjp of g summed over the samples, one evaluation instead of one
    // per sample (the rounding differs; the per-leaf sums promise no order).
    const auto sum_over_samples = [&](const double* row) {  // less the samples that failed, in four lanes
        std::copy_n(row, batch, dual_sink_.data());
        for (const std::size_t f : failed_) dual_sink_[f] = 0.0;
        double lane[4] = {0.0, 0.0, 0.0, 0.0};
        add_lanes(lane, dual_sink_.data(), 0, batch, batch / 4 * 4);
        return lane_total(lane);
    };
    const auto shared_in = [&](std::uint32_t operand) -> DualIn {
        const std::uint32_t j = operand & ~kShared;
        return {&shared_values_[j], &shared_tangent_[j], 0};
    };
    for (std::size_t i = program_.size(); i-- > 0;) {
        const Instruction& ins = program_[i];
        if (ins.op != Op::Dot) continue;
        const std::uint32_t* c = operands_.data() + ins.a;
        const std::uint32_t terms = ins.b / 2;
        bool any = false;
        for (std::uint32_t k = 0; k < terms; ++k) any |= both_shared(c[k], c[terms + k]);
        if (!any) continue;
        const double* gv = dual_grad_.data() + std::size_t{ins.out} * batch;
        const double* gt = dual_tangent_.data() + std::size_t{ins.out} * batch;
        const bool g_active = grad_active_[ins.out] != 0;
        // Finite in the samples that count (a failed sample's grads are left out either way).
        const auto counted_finite = [&](const double* row) {
            if (counted_all.empty()) return all_finite(row, batch);
            std::copy_n(row, batch, dual_sink_.data());
            for (const std::size_t f : failed_) dual_sink_[f] = 0.0;
            return all_finite(dual_sink_.data(), batch);
        };
        const bool finite = counted_finite(gv) && (!g_active || counted_finite(gt));
        const Tangent g_total{finite ? sum_over_samples(gv) : 0.0, finite && g_active ? sum_over_samples(gt) : 0.0,
                              g_active};
        for (std::uint32_t k = 0; k < terms; ++k) {
            const std::uint32_t w = c[k];
            const std::uint32_t x = c[terms + k];
            if (!both_shared(w, x)) continue;
            if (finite) {
                const Pair<Tangent> d = rules::Dot::vjp<rules::FiniteGrad>(g_total, shared_in(w).at_shared(),
                                                                           shared_in(x).at_shared());
                if (d.a.active) shared_collapsed_[w & ~kShared] += d.a.t;
                if (d.b.active) shared_collapsed_[x & ~kShared] += d.b.t;
            } else {
                const DualIn go{gv, gt, 1};
                const DualOut none{nullptr, nullptr};  // both are shared: summed in lanes
                with_flags(g_active, tangent_active(w), tangent_active(x), [&](auto G, auto W, auto X) {
                    double* w_sum = &shared_collapsed_[w & ~kShared];
                    double* x_sum = &shared_collapsed_[x & ~kShared];
                    if (counted_all.empty()) {
                        dual_dot_rows<rules::AnyGrad, rules::AnyGrad, G, W, X, true, true>(
                            go, shared_in(w), shared_in(x), none, none, w_sum, x_sum, batch);
                    } else {
                        dual_dot_rows<rules::AnyGrad, rules::AnyGrad, G, W, X, true, true, true>(
                            go, shared_in(w), shared_in(x), none, none, w_sum, x_sum, batch, counted_all.data());
                    }
                });
            }
        }
    }

    const std::size_t n_in = inputs_.size();
    for (std::size_t i = 0; i < n_in; ++i) {
        const double* t = dual_tangent_.data() + i * batch;
        for (std::size_t s = 0; s < batch; ++s) out[s * n_in + i] = t[s];
    }
    for (const std::size_t s : failed_) std::fill_n(out + s * n_in, n_in, std::numeric_limits<double>::quiet_NaN());
    if (shared_out == nullptr) return;
    // Each shared leaf's row summed over the samples in four lanes, as backward_batch sums a chunk's
    // gradients, less the samples that failed; then its dot terms' sums, range by range; then the terms
    // summed after the sweep. The ranges depend on the batch alone, so the threads change no bit.
    for (std::size_t j = 0; j < num_shared_; ++j) {
        const std::size_t row = shared_row_[j];
        double total = row != kNoRow ? sum_over_samples(shared_dual_rows_.data() + row * batch) : 0.0;
        for (std::size_t r = 0; r < n_ranges; ++r) total += range_sums_[r * num_shared_ + j];
        shared_out[j] = total + shared_collapsed_[j];
    }
}

std::size_t Tape::shared_leaf_index(NodeId id) const {
    const auto it = leaf_position_.find(id);
    return it == leaf_position_.end() || it->second >= num_shared_ ? num_shared_ : it->second;
}

bool Tape::is_input(NodeId id) const {
    const auto it = leaf_position_.find(id);
    return it != leaf_position_.end() && it->second >= num_shared_;
}

bool Tape::is_shared_leaf(NodeId id) const { return shared_leaf_index(id) < num_shared_; }

const double* Tape::batch_values(NodeId id) {
    if (!have_batch_forward_) return nullptr;
    const auto it = std::find(row_node_.begin(), row_node_.end(), id);
    if (it == row_node_.end()) return nullptr;
    const auto r = static_cast<std::size_t>(it - row_node_.begin());
    if (value_base_[r] == nullptr) {
        kept_value_[r] = 1;
        try {
            layout_values(batch_);  // the rows stored so far keep their values, the inputs' included
        } catch (...) {
            kept_value_[r] = 0;
            throw;
        }
        // The same pass again, over the same inputs and shared values: it succeeded before, and it
        // gives the same bits, so only the new row changes.
        std::vector<char> failed(last_on_error_ == OnError::Nan ? batch_ : 0, 0);
        ReplayError error;
        forward_chunks(last_on_error_, failed, error);
    }
    return value_base_[r];
}

}  // namespace arenagrad
