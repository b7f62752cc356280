// Derivatives that leave .grad alone: reverse mode (gradient) and forward mode (tangent), each
// written once over the scalar type S and run with S = double (numbers) or S = Node (the pass
// recorded as arena nodes, create_graph). Both follow the op table's vjp rules, so they give what
// backward() and Tape::jvp give, in the same summation order.
#include <algorithm>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "arena.hpp"
#include "node.hpp"

namespace arenagrad {

namespace {

template <class S>
constexpr bool kRecording = std::is_class_v<S>;

// A recorded rule's S{}: no contribution (a number's 0.0 is a contribution, added as the sweep does).
template <class S>
bool is_empty(const S& x) {
    if constexpr (kRecording<S>) {
        return !x;
    } else {
        return false;
    }
}

const char* status_text(Status s) {
    switch (s) {
        case Status::ZeroDivision:
            return "division by zero";
        case Status::Domain:
            return "math domain error";
        case Status::Overflow:
            return "overflow";
        default:
            return "ok";
    }
}

}  // namespace

RecordError::RecordError(Status s, Op o, double x, double y)
    : std::runtime_error(std::string("recording a derivative: ") + op_name(o) + " failed (" + status_text(s) + ")"),
      status(s),
      op(o),
      a(x),
      b(y) {}

Node Node::apply(Op op, const Node& a, const Node& b) {
    NodeId out = 0;
    const Status s = a.arena_->apply(op, a.id_, b.id_, &out);
    if (s != Status::Ok) throw RecordError(s, op, a.value(), arity(op) == 2 ? b.value() : 0.0);
    return adopt(*a.arena_, out);
}

// While a derivative is recorded, new nodes go above every node the pass reads, so they follow
// the recorded graph in creation order and a graph of one run stays in one run.
class FloorScope {
  public:
    FloorScope(Arena& arena, NodeId floor) : arena_(arena), saved_(arena.alloc_floor_) {
        arena_.alloc_floor_ = std::max(saved_, floor);
        arena_.floor_cursor_ = 0;
    }
    ~FloorScope() {
        // An outer recording keeps the floor risen past the nodes this one created.
        arena_.alloc_floor_ = saved_ == 0 ? 0 : std::max(saved_, arena_.alloc_floor_);
        arena_.floor_cursor_ = 0;
    }
    FloorScope(const FloorScope&) = delete;
    FloorScope& operator=(const FloorScope&) = delete;

  private:
    Arena& arena_;
    NodeId saved_;
};

// The non-leaf nodes reachable from any root, in reverse creation order (what backward visits):
// one descending sweep when every root lies in one ordered run, else a search and a sort.
void Arena::collect_order(const std::vector<NodeId>& roots, std::vector<NodeId>& order, bool count) {
    order.clear();
    bool ordered = true;
    bool any = false;
    NodeId top = 0;
    NodeId low = 0;
    std::uint32_t run = 0;
    for (const NodeId r : roots) {
        if (is_leaf(r)) continue;
        if (!id_ordered(r) || (any && run_[r] != run)) ordered = false;
        top = any ? std::max(top, r) : r;
        low = any ? std::min(low, low_[r]) : low_[r];
        run = run_[r];
        any = true;
    }
    if (!any) return;
    const std::uint32_t epoch = next_epoch();
    if (ordered) {
        if (count) ++sweeps_ordered_;
        for (const NodeId r : roots) visit_mark_[r] = epoch;
        for (NodeId id = top;; --id) {
            if (visit_mark_[id] == epoch && !is_leaf(id)) {
                order.push_back(id);
                const std::uint32_t n = num_children(id);
                for (std::uint32_t i = 0; i < n; ++i) {
                    const NodeId c = child(id, i);
                    if (!is_leaf(c)) visit_mark_[c] = epoch;
                }
            }
            if (id == low) break;
        }
        return;
    }
    if (count) ++sweeps_dfs_;
    for (const NodeId r : roots) {
        if (is_leaf(r) || visit_mark_[r] == epoch) continue;
        visit_mark_[r] = epoch;
        dfs_stack_.clear();
        dfs_stack_.push_back({r, 0, num_children(r)});
        while (!dfs_stack_.empty()) {
            DfsFrame& frame = dfs_stack_.back();
            if (frame.next < frame.count) {
                const NodeId c = child(frame.node, frame.next++);
                if (!is_leaf(c) && visit_mark_[c] != epoch) {
                    visit_mark_[c] = epoch;
                    dfs_stack_.push_back({c, 0, num_children(c)});  // invalidates `frame`
                }
            } else {
                order.push_back(frame.node);
                dfs_stack_.pop_back();
            }
        }
    }
    std::sort(order.begin(), order.end(), [this](NodeId x, NodeId y) {
        return run_[x] != run_[y] ? run_[x] > run_[y] : x > y;
    });
}

// A custom node's partials: its hidden constants, or, recorded, the nodes its function builds
// (foreign code, which may itself create nodes: nothing of the arena is held across the call).
template <class S>
std::vector<S> Arena::custom_partials(NodeId id) {
    const std::uint32_t n = b_[id] / 2;
    std::vector<S> out;
    out.reserve(n);
    if constexpr (kRecording<S>) {
        CustomFunction& f = *custom_.at(id);
        if (!f.has_graph_partials()) throw NotTwiceDifferentiable(f.name());
        const std::vector<NodeId> x(pool_.begin() + a_[id], pool_.begin() + a_[id] + n);
        std::vector<NodeId> q(n);
        f.graph_partials(*this, x.data(), n, q.data());
        for (const NodeId p : q) out.push_back(Node::adopt(*this, p));
    } else {
        for (std::uint32_t i = 0; i < n; ++i) out.push_back(value_[pool_[a_[id] + n + i]]);
    }
    return out;
}

// Calls add(child, contribution) for each differentiable child of id, in child order, with the
// op table's rules over S. A recording S reads no pointer into the arena across node creation
// (creating nodes may move the arrays and the child pool), and masks add no node.
template <class S, class AddGrad>
void Arena::propagate_any(NodeId id, const S& g, AddGrad&& add) {
    const auto at = [this](NodeId c) -> S {
        if constexpr (kRecording<S>) {
            return Node::ref(*this, c);
        } else {
            return value_[c];
        }
    };
    const Op op = op_[id];
    if (op == Op::Leaf) return;
    if (op == Op::Custom) {
        const std::vector<NodeId> x(pool_.begin() + a_[id], pool_.begin() + a_[id] + b_[id] / 2);
        const std::vector<S> p = custom_partials<S>(id);
        for (std::size_t i = 0; i < x.size(); ++i) add(x[i], rules::scale<rules::AnyGrad>(g, p[i]));
        return;
    }
    if (is_nary(op)) {
        const std::vector<NodeId> c(pool_.begin() + a_[id], pool_.begin() + a_[id] + b_[id]);
        if (op == Op::Sum) {
            for (const NodeId x : c) add(x, rules::Sum::vjp(g));
        } else if (op == Op::Dot) {
            const std::size_t n = c.size() / 2;
            for (std::size_t i = 0; i < n; ++i) {
                Pair<S> d = rules::Dot::vjp<rules::AnyGrad>(g, at(c[i]), at(c[n + i]));
                add(c[i], std::move(d.a));
                add(c[n + i], std::move(d.b));
            }
        } else {
            const S out = at(id);
            for (const NodeId x : c) add(x, rules::LogSumExp::vjp<rules::AnyGrad>(g, at(x), out));
        }
        return;
    }
    visit_elementary(op, [&](auto rule) {
        using Rule = decltype(rule);
        if constexpr (kRecording<S> && has_zero_derivative<Rule>) {
            return;
        } else {
            const NodeId a = a_[id];
            const NodeId b = b_[id];
            const S vb = Rule::arity == 2 ? at(b) : S{};
            Pair<S> d = Rule::template vjp<rules::AnyGrad>(g, at(a), vb, at(id));
            add(a, std::move(d.a));
            if constexpr (differentiable_inputs<Rule>() == 2) {
                if (!is_empty(d.b)) add(b, std::move(d.b));  // Select's mask: no node
            }
        }
    });
}

// Child i's term of node id's tangent, given the child's tangent t: the rule's vjp applied to t,
// read at that child (every vjp is linear in g). False for a mask, whose tangent is zero. Not for a
// custom node: forward_pass asks for its partials once, not once per child.
template <class S>
bool Arena::tangent_term(NodeId id, std::uint32_t i, const S& t, S& out) {
    const auto at = [this](NodeId c) -> S {
        if constexpr (kRecording<S>) {
            return Node::ref(*this, c);
        } else {
            return value_[c];
        }
    };
    const Op op = op_[id];
    if (op == Op::Sum) {
        out = rules::Sum::vjp(t);
        return true;
    }
    if (op == Op::Dot) {
        const std::uint32_t n = b_[id] / 2;
        const std::uint32_t k = i < n ? i : i - n;
        const NodeId w = pool_[a_[id] + k];
        const NodeId x = pool_[a_[id] + n + k];
        Pair<S> d = rules::Dot::vjp<rules::AnyGrad>(t, at(w), at(x));
        out = i < n ? std::move(d.a) : std::move(d.b);
        return true;
    }
    if (op == Op::LogSumExp) {
        const NodeId c = pool_[a_[id] + i];
        out = rules::LogSumExp::vjp<rules::AnyGrad>(t, at(c), at(id));
        return true;
    }
    return visit_elementary(op, [&](auto rule) {
        using Rule = decltype(rule);
        if constexpr (has_zero_derivative<Rule>) {
            return false;
        } else {
            const NodeId a = a_[id];
            const NodeId b = b_[id];
            const S vb = Rule::arity == 2 ? at(b) : S{};
            Pair<S> d = Rule::template vjp<rules::AnyGrad>(t, at(a), vb, at(id));
            out = i == 0 ? std::move(d.a) : std::move(d.b);
            return !is_empty(out);
        }
    });
}

namespace {

// The nodes a pass works on: the order (non-leaf nodes, reverse creation order), then the leaves
// among `extra`, each once. position[id] indexes this list (a sparse set: an entry is valid only
// if the list holds id there, so the table is never cleared).
struct NodeList {
    std::vector<NodeId> nodes;
    std::vector<std::uint32_t>& position;

    bool contains(NodeId id) const {
        return id < position.size() && position[id] < nodes.size() && nodes[position[id]] == id;
    }
    std::uint32_t add(NodeId id) {
        if (!contains(id)) {
            if (id >= position.size()) position.resize(std::size_t{id} + 1, 0);
            position[id] = static_cast<std::uint32_t>(nodes.size());
            nodes.push_back(id);
        }
        return position[id];
    }
};

// Marks a derivative pass as running, so that one started inside it (from foreign code) knows.
struct PassScope {
    explicit PassScope(bool& flag) : flag_(flag), outer(flag) { flag_ = true; }
    ~PassScope() { flag_ = outer; }
    PassScope(const PassScope&) = delete;
    PassScope& operator=(const PassScope&) = delete;
    bool& flag_;
    const bool outer;  // another pass was already running
};

template <class S>
void accumulate(S& total, char& has, S&& term) {
    if constexpr (kRecording<S>) {
        total = has ? total + term : std::move(term);
    } else {
        total = has ? total + term : 0.0 + term;  // as the sweep: 0.0 + v for the first term
    }
    has = 1;
}

NodeId top_id(std::initializer_list<const std::vector<NodeId>*> lists) {
    NodeId top = 0;
    for (const auto* list : lists) {
        for (const NodeId id : *list) top = std::max(top, id);
    }
    return top;
}

}  // namespace

template <class S>
void Arena::reverse_pass(const std::vector<NodeId>& roots, std::vector<S> seeds, const std::vector<NodeId>& inputs,
                         std::vector<S>& out) {
    std::vector<NodeId> order;
    collect_order(roots, order);
    // A pass inside a pass (a custom op's graph_partials taking a derivative) gets its own table.
    std::vector<std::uint32_t> nested;
    const PassScope running(pass_running_);
    NodeList list{{}, running.outer ? nested : position_};
    const std::size_t num_order = order.size();
    for (const NodeId id : order) list.add(id);
    for (const NodeId id : roots) list.add(id);
    for (const NodeId id : inputs) list.add(id);
    const std::size_t count = list.nodes.size();

    // needs[p]: node p is an input or leads to one; nothing else needs a gradient.
    std::vector<char> needs(count, 0);
    for (const NodeId id : inputs) needs[list.position[id]] = 1;
    for (std::size_t p = num_order; p-- > 0;) {  // children before parents
        const NodeId id = list.nodes[p];
        const std::uint32_t n = num_children(id);
        for (std::uint32_t i = 0; i < n && needs[p] == 0; ++i) {
            const NodeId c = child(id, i);
            if (list.contains(c) && needs[list.position[c]] != 0) needs[p] = 1;
        }
    }

    std::vector<S> grads(count);
    std::vector<char> has(count, 0);
    for (std::size_t k = 0; k < roots.size(); ++k) {
        const std::uint32_t p = list.position[roots[k]];
        accumulate(grads[p], has[p], S(seeds[k]));
    }
    for (std::size_t p = 0; p < num_order; ++p) {
        if (needs[p] == 0 || has[p] == 0) continue;
        const S g = grads[p];
        propagate_any<S>(list.nodes[p], g, [&](NodeId c, S v) {
            if (!list.contains(c)) return;
            const std::uint32_t q = list.position[c];
            if (needs[q] != 0) accumulate(grads[q], has[q], std::move(v));
        });
    }
    out.clear();
    out.reserve(inputs.size());
    for (const NodeId id : inputs) {
        const std::uint32_t p = list.position[id];
        if (has[p] != 0) {
            out.push_back(grads[p]);
        } else if constexpr (kRecording<S>) {
            out.push_back(Node::adopt(*this, leaf(0.0)));
        } else {
            out.push_back(0.0);
        }
    }
}

template <class S>
void Arena::forward_pass(const std::vector<NodeId>& inputs, std::vector<S> tangents, const std::vector<NodeId>& outputs,
                         std::vector<S>& out) {
    std::vector<NodeId> order;
    collect_order(outputs, order);
    // A pass inside a pass (a custom op's graph_partials taking a derivative) gets its own table.
    std::vector<std::uint32_t> nested;
    const PassScope running(pass_running_);
    NodeList list{{}, running.outer ? nested : position_};
    const std::size_t num_order = order.size();
    for (const NodeId id : order) list.add(id);
    for (const NodeId id : outputs) list.add(id);
    std::vector<char> seeded(list.nodes.size(), 0);
    for (const NodeId id : inputs) {
        const std::size_t before = list.nodes.size();
        const std::uint32_t p = list.add(id);
        if (list.nodes.size() != before) seeded.push_back(0);
        if (seeded[p] != 0) throw std::invalid_argument("an input is given twice");
        seeded[p] = 1;
    }
    const std::size_t count = list.nodes.size();
    std::vector<S> tangent(count);
    std::vector<char> active(count, 0);
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        const std::uint32_t p = list.position[inputs[i]];
        if constexpr (!kRecording<S>) {
            if (tangents[i] == 0.0) continue;  // a zero tangent is a symbolic zero
        }
        tangent[p] = std::move(tangents[i]);
        active[p] = 1;
    }
    // Creation order: every child's tangent is final before its parents read it.
    for (std::size_t p = num_order; p-- > 0;) {
        const NodeId id = list.nodes[p];
        if (seeded[p] != 0) continue;  // an input keeps its seed
        S t{};
        bool any = false;
        const auto term = [&](NodeId c) -> const S* {
            if (!list.contains(c)) return nullptr;
            const std::uint32_t q = list.position[c];
            return active[q] != 0 ? &tangent[q] : nullptr;
        };
        // Terms in the order the rule sums them: for dot w_0, x_0, w_1, x_1, ... (as Tape::jvp).
        const std::uint32_t n = num_children(id);
        const bool dot = op_[id] == Op::Dot;
        const bool custom = op_[id] == Op::Custom;
        std::vector<S> custom_partial;  // asked for once per node: the function may be Python
        for (std::uint32_t k = 0; k < n; ++k) {
            const std::uint32_t i = dot ? (k % 2 == 0 ? k / 2 : n / 2 + k / 2) : k;
            const NodeId c = child(id, i);
            const S* tc = term(c);
            if (tc == nullptr) continue;
            S piece{};
            if (custom) {
                if (custom_partial.empty()) custom_partial = custom_partials<S>(id);
                piece = rules::scale<rules::AnyGrad>(*tc, custom_partial[i]);
            } else if (!tangent_term(id, i, *tc, piece)) {
                continue;  // a mask: no tangent flows through it
            }
            if constexpr (kRecording<S>) {
                t = any ? t + piece : std::move(piece);
            } else {
                t = any ? t + piece : piece;
            }
            any = true;
        }
        if (any) {
            tangent[p] = std::move(t);
            active[p] = 1;
        }
    }
    out.clear();
    out.reserve(outputs.size());
    for (const NodeId id : outputs) {
        const std::uint32_t p = list.position[id];
        if (active[p] != 0) {
            out.push_back(tangent[p]);
        } else if constexpr (kRecording<S>) {
            out.push_back(Node::adopt(*this, leaf(0.0)));
        } else {
            out.push_back(0.0);
        }
    }
}

void Arena::gradient(const std::vector<NodeId>& roots, const std::vector<double>& seeds,
                     const std::vector<NodeId>& inputs, std::vector<double>& out) {
    std::vector<double> s = seeds.empty() ? std::vector<double>(roots.size(), 1.0) : seeds;
    if (s.size() != roots.size()) throw std::invalid_argument("one seed per root");
    reverse_pass<double>(roots, std::move(s), inputs, out);
}

void Arena::gradient_graph(const std::vector<NodeId>& roots, const std::vector<NodeId>& seeds,
                           const std::vector<NodeId>& inputs, std::vector<NodeId>& out) {
    if (!seeds.empty() && seeds.size() != roots.size()) throw std::invalid_argument("one seed per root");
    FloorScope floor(*this, top_id({&roots, &seeds, &inputs}) + 1);
    std::vector<Node> s;
    s.reserve(roots.size());
    for (std::size_t k = 0; k < roots.size(); ++k) {
        s.push_back(seeds.empty() ? Node::adopt(*this, leaf(1.0)) : Node::ref(*this, seeds[k]));
    }
    std::vector<Node> result;
    reverse_pass<Node>(roots, std::move(s), inputs, result);
    out.clear();
    out.reserve(result.size());  // before any release: no allocation may fail between them
    for (Node& n : result) out.push_back(n.release());
}

void Arena::tangent(const std::vector<NodeId>& inputs, const std::vector<double>& tangents,
                    const std::vector<NodeId>& outputs, std::vector<double>& out) {
    if (tangents.size() != inputs.size()) throw std::invalid_argument("one tangent per input");
    forward_pass<double>(inputs, tangents, outputs, out);
}

void Arena::tangent_graph(const std::vector<NodeId>& inputs, const std::vector<NodeId>& tangents,
                          const std::vector<NodeId>& outputs, std::vector<NodeId>& out) {
    if (tangents.size() != inputs.size()) throw std::invalid_argument("one tangent per input");
    FloorScope floor(*this, top_id({&inputs, &tangents, &outputs}) + 1);
    std::vector<Node> t;
    t.reserve(tangents.size());
    for (const NodeId id : tangents) t.push_back(Node::ref(*this, id));
    std::vector<Node> result;
    forward_pass<Node>(inputs, std::move(t), outputs, result);
    out.clear();
    out.reserve(result.size());  // before any release: no allocation may fail between them
    for (Node& n : result) out.push_back(n.release());
}

}  // namespace arenagrad
