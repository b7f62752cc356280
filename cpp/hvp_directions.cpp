// Tape::hvp_directions: hvp_batch for many directions at once, the directions in lanes.
//
// A Hessian is one Hessian-vector product per column, and every product's dual sweep reads the same
// values and computes the same grads: only the tangents differ. Here a row holds, per sample, the
// tangents of kLanes directions side by side, so each rule's vjp runs over one Tangent per lane with the
// sample's value and grad shared by all of them; the loops over lanes vectorize, and each instruction's
// dispatch is paid once per tile of samples and block of directions instead of once per direction.
// The passes are hvp_batch's (tangent_range's, then the dual sweep), term for term in the same order, so
// each lane's numbers are that direction's hvp_batch numbers where both decide the same symbolic zeros
// (see Tape::hvp_directions). Two things are new: symbolic zeros per block of directions, so a block of a
// Hessian's one-hot columns skips every row its parameters do not reach; and rows uniform over the
// samples (a penalty's dot(params, params)), whose tangents are computed once per block.
#include <algorithm>
#include <atomic>
#include <limits>
#include <stdexcept>
#include <vector>

#include "static_flags.hpp"
#include "tangent.hpp"
#include "tape.hpp"
#include "worker_pool.hpp"

namespace arenagrad {

namespace {

constexpr std::size_t kLanes = Tape::kDirectionLanes;  // directions per block
// Samples per tile: at most kSamples, fewer where a tile's rows of tangents would not fit in about
// kTileBytes (half this machine's L2), so a large tape does not take a large buffer per thread. The tile
// size depends on the tape alone (it orders a shared leaf's terms), never on the threads.
constexpr std::size_t kSamples = 16;
constexpr std::size_t kTileBytes = std::size_t{512} << 10;

// An operand within a tile: per sample a value and kLanes tangents (a row), or one value and one block
// of tangents for every sample (a shared leaf: strides 0).
struct LaneIn {
    const double* v;
    const double* t;
    std::size_t v_stride;  // 1 or 0
    std::size_t t_stride;  // kLanes or 0
    double value(std::size_t s) const { return v[s * v_stride]; }
    const double* lanes(std::size_t s) const { return t + s * t_stride; }
};

// Where an operand's terms go: a row's grads and their tangents, or, for a shared leaf, only the
// tangents, summed over the samples that did not fail into its block (its grad's value is not asked).
struct LaneOut {
    double* g;                     // per sample; null for a shared leaf
    double* t;                     // kLanes per sample, or a shared leaf's block
    const unsigned char* counted;  // per sample of the tile: is it in the shared leaves' sums?
    void add_value(std::size_t s, double v) const {
        if (g != nullptr) g[s] += v;
    }
    // Sample s's lanes, or null when its terms go nowhere (a failed sample's, for a shared leaf).
    double* lanes(std::size_t s) const {
        if (g != nullptr) return t + s * kLanes;
        return counted[s] != 0 ? t : nullptr;
    }
};

// The loops over lanes say `unroll 1`: GCC would otherwise unroll them completely (16 iterations) before
// its loop vectorizer runs, which left more of them scalar (the moons Hessian took 12.3 ms instead of
// 11.4 ms on one thread, 2026-11-24).

// Adds each lane's term to the lanes of a and of b (either may be null: no term), which are distinct
// (so the loop vectorizes) or one operand's (x * x: its two terms in turn, as hvp_batch adds them).
template <class Term>
inline void add_lanes(double* a, double* b, Term term) {
    if (a != nullptr && a == b) {
        #pragma GCC unroll 1
        for (std::size_t l = 0; l < kLanes; ++l) {
            const auto d = term(l);
            a[l] += d.a.t;
            a[l] += d.b.t;
        }
        return;
    }
    double* __restrict ra = a;
    double* __restrict rb = b;
    if (ra != nullptr && rb != nullptr) {
        #pragma GCC unroll 1
        for (std::size_t l = 0; l < kLanes; ++l) {
            const auto d = term(l);
            ra[l] += d.a.t;
            rb[l] += d.b.t;
        }
    } else if (ra != nullptr) {
        #pragma GCC unroll 1
        for (std::size_t l = 0; l < kLanes; ++l) ra[l] += term(l).a.t;
    } else if (rb != nullptr) {
        #pragma GCC unroll 1
        for (std::size_t l = 0; l < kLanes; ++l) rb[l] += term(l).b.t;
    }
}

// Forward mode: an elementary op's tangents, its operands' terms in operand order (tangent_range's).
template <class Rule>
[[gnu::flatten]] void lane_tangents(double* t, LaneIn a, LaneIn b, const double* o, bool a_active, bool b_active,
                                    std::size_t n) {
    for (std::size_t s = 0; s < n; ++s) {
        const double av = a.value(s);
        const double bv = b.value(s);
        const double ov = o[s];
        const double* ta = a.lanes(s);
        const double* tb = b.lanes(s);
        double* out = t + s * kLanes;
        if (a_active) {
            #pragma GCC unroll 1
            for (std::size_t l = 0; l < kLanes; ++l) out[l] = Rule::template vjp<rules::AnyGrad>(ta[l], av, bv, ov).a;
        }
        if constexpr (differentiable_inputs<Rule>() == 2) {
            if (b_active) {
                #pragma GCC unroll 1
                for (std::size_t l = 0; l < kLanes; ++l) {
                    const double d = Rule::template vjp<rules::AnyGrad>(tb[l], av, bv, ov).b;
                    out[l] = a_active ? out[l] + d : d;
                }
            }
        }
    }
}

// Forward mode: one term of a dot, both operands' parts in one pass (First: the row's first term, stored).
template <bool First, bool WA, bool XA>
void lane_dot_tangents(double* t, LaneIn w, LaneIn x, std::size_t n) {
    for (std::size_t s = 0; s < n; ++s) {
        const double wv = w.value(s);
        const double xv = x.value(s);
        const double* tw = w.lanes(s);
        const double* tx = x.lanes(s);
        double* __restrict out = t + s * kLanes;
#pragma GCC unroll 1
        for (std::size_t l = 0; l < kLanes; ++l) {
            double v = First ? 0.0 : out[l];
            if constexpr (WA) {
                const double d = rules::Dot::vjp<rules::AnyGrad>(tw[l], wv, xv).a;
                v = First ? d : v + d;
            }
            if constexpr (XA) {
                const double d = rules::Dot::vjp<rules::AnyGrad>(tx[l], wv, xv).b;
                v = First && !WA ? d : v + d;
            }
            out[l] = v;
        }
    }
}

// The dual sweep: an elementary op's terms, one Tangent per lane; its grad's value once per sample.
// G: how the grad scales (FiniteGrad where the tile's grads of the row are finite, as in hvp_batch).
template <class Rule, class G>
[[gnu::flatten]] void lane_dual(const double* g, const double* gt, bool ga, LaneIn a, bool aa, LaneIn b, bool ba,
                                LaneIn o, bool oa, LaneOut to_a, bool a_term, LaneOut to_b, bool b_term,
                                std::size_t n) {
    constexpr bool two = differentiable_inputs<Rule>() == 2;
    for (std::size_t s = 0; s < n; ++s) {
        const double gv = g[s];
        const double av = a.value(s);
        const double bv = b.value(s);
        const double ov = o.value(s);
        const double* tg = gt + s * kLanes;
        const double* ta = a.lanes(s);
        const double* tb = b.lanes(s);
        const double* to = o.lanes(s);
        const Pair<Tangent> value = Rule::template vjp<G>(Tangent{gv, 0.0, false}, Tangent{av, 0.0, false},
                                                          Tangent{bv, 0.0, false}, Tangent{ov, 0.0, false});
        to_a.add_value(s, value.a.v);
        if constexpr (two) to_b.add_value(s, value.b.v);
        add_lanes(a_term ? to_a.lanes(s) : nullptr, two && b_term ? to_b.lanes(s) : nullptr, [&](std::size_t l) {
            return Rule::template vjp<G>(Tangent{gv, ga ? tg[l] : 0.0, ga}, Tangent{av, aa ? ta[l] : 0.0, aa},
                                         Tangent{bv, two && ba ? tb[l] : 0.0, two && ba},
                                         Tangent{ov, oa ? to[l] : 0.0, oa});
        });
    }
}

// The dual sweep: one term of a dot (w, x not both shared). TG: FiniteGrad where every tangent read is
// finite (plain products, the same numbers).
template <class G, class TG, bool GA, bool WA, bool XA>
[[gnu::flatten]] void lane_dual_dot(const double* g, const double* gt, LaneIn w, LaneIn x, LaneOut to_w, LaneOut to_x,
                                    std::size_t n) {
    using T = BasicTangent<TG>;
    constexpr bool w_term = GA || XA;  // d/dw = g * x
    constexpr bool x_term = GA || WA;
    for (std::size_t s = 0; s < n; ++s) {
        const double gv = g[s];
        const double wv = w.value(s);
        const double xv = x.value(s);
        const double* tg = gt + s * kLanes;
        const double* tw = w.lanes(s);
        const double* tx = x.lanes(s);
        const Pair<T> value = rules::Dot::vjp<G>(T{gv, 0.0, false}, T{wv, 0.0, false}, T{xv, 0.0, false});
        to_w.add_value(s, value.a.v);
        to_x.add_value(s, value.b.v);
        add_lanes(w_term ? to_w.lanes(s) : nullptr, x_term ? to_x.lanes(s) : nullptr, [&](std::size_t l) {
            return rules::Dot::vjp<G>(T{gv, GA ? tg[l] : 0.0, GA}, T{wv, WA ? tw[l] : 0.0, WA},
                                      T{xv, XA ? tx[l] : 0.0, XA});
        });
    }
}

// Which rows, shared leaves and grads a block's directions reach (Tape's active_, shared_active_ and
// grad_active_ for that block).
struct BlockActivity {
    std::vector<char> active;
    std::vector<char> shared_active;
    std::vector<char> grad_active;
};

// What one thread needs for a block of directions; sized before the threads start.
struct LaneWork {
    const BlockActivity* act = nullptr;  // the block's
    std::vector<double> tangents;       // rows x tile x kLanes: forward mode's
    std::vector<double> uniform_tangents;  // rows x kLanes: the same, for rows uniform over the samples
    std::vector<double> grads;          // rows x tile: the dual sweep's values ...
    std::vector<double> grad_tangents;  // ... and their tangents, rows x tile x kLanes
    std::vector<double> shared_tangents;  // per shared leaf, the block's tangents (kLanes)
    std::vector<double> shared_sums;      // per shared leaf, its grad's tangents summed over the samples
    std::vector<double> penalty_grads;    // per row: grads summed over the samples (penalty dots only) ...
    std::vector<double> penalty_tangents;  // ... and their tangents (kLanes)
    std::vector<unsigned char> counted;    // per sample of the tile: not failed
    std::vector<signed char> finite;         // per row: are its tangents in the tile finite? (-1: not asked)
    std::vector<signed char> shared_finite;  // per shared leaf: are the block's tangents finite?
};

}  // namespace

void Tape::hvp_directions(std::size_t k, const double* tangents, const double* seed, double* out,
                          const double* shared_tangents, double* shared_out) {
    if (!have_batch_forward_) throw std::logic_error("hvp_batch needs a successful forward_batch first");
    if (k == 0) return;
    const std::size_t batch = batch_;
    const std::size_t rows = std::size_t{zero_row_} + 1;
    const std::size_t n_in = inputs_.size();
    const std::size_t n_roots = roots_.size();
    const std::size_t n_shared = num_shared_;

    // Activity per block of directions (a block of a Hessian's one-hot columns moves few rows in forward
    // mode): an input or shared leaf is active if a direction of the block moves it, and forward mode's
    // and the grads' activity follow as in hvp_batch. Decided for every block before the threads start.
    const std::size_t n_blocks = (k + kLanes - 1) / kLanes;
    std::vector<BlockActivity> activity(n_blocks);
    for (std::size_t blk = 0; blk < n_blocks; ++blk) {
        const std::size_t d_end = std::min(k, (blk + 1) * kLanes);
        active_.assign(rows, 0);
        if (tangents != nullptr) {
            for (std::size_t i = 0; i < n_in; ++i) {
                bool nonzero = false;
                for (std::size_t d = blk * kLanes; d < d_end && !nonzero; ++d) {
                    for (std::size_t s = 0; s < batch && !nonzero; ++s) {
                        nonzero = tangents[(d * batch + s) * n_in + i] != 0.0;
                    }
                }
                active_[i] = nonzero;
            }
        }
        shared_active_.assign(n_shared, 0);
        if (shared_tangents != nullptr) {
            for (std::size_t d = blk * kLanes; d < d_end; ++d) {
                for (std::size_t j = 0; j < n_shared; ++j) {
                    shared_active_[j] |= shared_tangents[d * n_shared + j] != 0.0;
                }
            }
        }
        for (const Instruction& ins : program_) active_[ins.out] = tangent_reaches(ins);
        reach_grads();
        activity[blk] = {active_, shared_active_, grad_active_};
    }
    const auto probe = Tangent::probe;
    const auto active_in = [&](const LaneWork& w, std::uint32_t operand) {
        return ((operand & kShared) != 0 ? w.act->shared_active[operand & ~kShared] : w.act->active[operand]) != 0;
    };
    const auto both_shared = [](std::uint32_t w, std::uint32_t x) { return (w & x & kShared) != 0; };
    std::vector<unsigned char> failed(batch, 0);
    for (const std::size_t s : failed_) failed[s] = 1;

    const std::size_t threads = std::min(num_threads(), n_blocks);
    const std::size_t tile_size =
        std::clamp<std::size_t>(kTileBytes / (rows * kLanes * 2 * sizeof(double)), 1, kSamples);
    std::vector<LaneWork> work(threads);
    for (LaneWork& w : work) {
        w.tangents.assign(rows * tile_size * kLanes, 0.0);
        w.uniform_tangents.assign(rows * kLanes, 0.0);
        w.grads.assign(rows * tile_size, 0.0);
        w.grad_tangents.assign(rows * tile_size * kLanes, 0.0);
        w.shared_tangents.assign(n_shared * kLanes, 0.0);
        w.shared_sums.assign(n_shared * kLanes, 0.0);
        w.penalty_grads.assign(rows, 0.0);
        w.penalty_tangents.assign(rows * kLanes, 0.0);
        w.counted.assign(tile_size, 1);
        w.finite.assign(rows, -1);
        w.shared_finite.assign(n_shared, -1);
    }

    // A row whose instruction reads only shared leaves and such rows (a penalty's dot(params, params)) has
    // the same values and tangents in every sample: its tangents are computed once per block of directions
    // and read with stride 0, as a shared leaf's are. Its grads still differ from sample to sample.
    std::vector<char> uniform(rows, 0);
    uniform[zero_row_] = 1;  // a unary op's unused second operand, the same in every sample
    for (const Instruction& ins : program_) {
        const auto fixed = [&](std::uint32_t operand) { return (operand & kShared) != 0 || uniform[operand] != 0; };
        bool all = true;
        if (is_nary(ins.op)) {
            for (std::uint32_t m = 0; m < ins.b; ++m) all = all && fixed(operands_[ins.a + m]);
        } else {
            all = fixed(ins.a) && fixed(ins.b);
        }
        uniform[ins.out] = all;
    }
    const auto trow = [&](LaneWork& w, std::uint32_t r) {
        return uniform[r] != 0 ? w.uniform_tangents.data() + std::size_t{r} * kLanes
                               : w.tangents.data() + std::size_t{r} * tile_size * kLanes;
    };
    const auto in = [&](LaneWork& w, std::uint32_t operand, std::size_t s0) -> LaneIn {
        if ((operand & kShared) != 0) {
            const std::uint32_t j = operand & ~kShared;
            return {&shared_values_[j], w.shared_tangents.data() + std::size_t{j} * kLanes, 0, 0};
        }
        return {after_forward(operand, s0), trow(w, operand), 1, uniform[operand] != 0 ? 0 : kLanes};
    };
    // Forward mode for one instruction over the samples s0 .. s0 + n - 1 (tangent_range's terms and order).
    const auto forward = [&](LaneWork& w, const Instruction& ins, std::size_t s0, std::size_t n) {
        double* t = trow(w, ins.out);
        const std::uint32_t* c = operands_.data() + ins.a;
        // An n-ary op's terms, one per active operand in order: term(operand's tangent, its value, sample).
        const auto operand_terms = [&](auto term) {
            bool first = true;
            for (std::uint32_t m = 0; m < ins.b; ++m) {
                if (!active_in(w, c[m])) continue;
                const LaneIn x = in(w, c[m], s0);
                for (std::size_t s = 0; s < n; ++s) {
                    const double* tx = x.lanes(s);
                    for (std::size_t l = 0; l < kLanes; ++l) {
                        const double d = term(tx[l], x.value(s), s);
                        t[s * kLanes + l] = first ? d : t[s * kLanes + l] + d;
                    }
                }
                first = false;
            }
        };
        if (ins.op == Op::Sum) {
            operand_terms([](double tx, double, std::size_t) { return rules::Sum::vjp(tx); });
        } else if (ins.op == Op::Dot) {
            const std::uint32_t terms = ins.b / 2;
            bool first = true;
            for (std::uint32_t m = 0; m < terms; ++m) {
                const std::uint32_t wk = c[m];
                const std::uint32_t xk = c[terms + m];
                const bool wa = active_in(w, wk);
                const bool xa = active_in(w, xk);
                if (!wa && !xa) continue;
                with_flags(first, wa, xa, [&](auto f, auto w_active, auto x_active) {
                    constexpr bool WA = decltype(w_active)::value;
                    constexpr bool XA = decltype(x_active)::value;
                    if constexpr (WA || XA) {
                        lane_dot_tangents<decltype(f)::value, WA, XA>(t, in(w, wk, s0), in(w, xk, s0), n);
                    }
                });
                first = false;
            }
        } else if (ins.op == Op::LogSumExp) {
            const double* o = after_forward(ins.out, s0);
            operand_terms([o](double tx, double x, std::size_t s) { return rules::LogSumExp::vjp(tx, x, o[s]); });
        } else {
            visit_elementary(ins.op, [&](auto rule) {
                using Rule = decltype(rule);
                lane_tangents<Rule>(t, in(w, ins.a, s0), in(w, ins.b, s0), after_forward(ins.out, s0),
                                    active_in(w, ins.a), differentiable_inputs<Rule>() == 2 && active_in(w, ins.b),
                                    n);
            });
        }
    };

    // The samples s0 .. s0 + n - 1 for the directions d0 .. d0 + lanes - 1 (the block's other lanes are 0).
    const auto tile = [&](LaneWork& w, std::size_t s0, std::size_t n, std::size_t d0, std::size_t lanes) {
        const auto grow = [&](std::uint32_t r) { return w.grads.data() + std::size_t{r} * tile_size; };
        const auto gtrow = [&](std::uint32_t r) {
            return w.grad_tangents.data() + std::size_t{r} * tile_size * kLanes;
        };
        const auto to = [&](std::uint32_t operand) -> LaneOut {
            if ((operand & kShared) != 0) {
                return {nullptr, w.shared_sums.data() + std::size_t{operand & ~kShared} * kLanes, w.counted.data()};
            }
            return {grow(operand), gtrow(operand), nullptr};
        };
        for (std::size_t s = 0; s < n; ++s) w.counted[s] = failed[s0 + s] == 0;

        for (std::size_t i = 0; i < n_in; ++i) {
            if (w.act->active[i] == 0) continue;
            double* t = trow(w, static_cast<std::uint32_t>(i));
            for (std::size_t s = 0; s < n; ++s) {
                for (std::size_t l = 0; l < kLanes; ++l) {
                    t[s * kLanes + l] = l < lanes ? tangents[((d0 + l) * batch + s0 + s) * n_in + i] : 0.0;
                }
            }
        }
        for (const Instruction& ins : program_) {
            if (w.act->active[ins.out] != 0 && uniform[ins.out] == 0) forward(w, ins, s0, n);
        }

        // The dual sweep (hvp_batch's terms and order).
        std::fill(w.grads.begin(), w.grads.end(), 0.0);
        for (std::size_t r = 0; r < rows; ++r) {
            if (w.act->grad_active[r] != 0) std::fill_n(gtrow(static_cast<std::uint32_t>(r)), tile_size * kLanes, 0.0);
        }
        for (std::size_t m = 0; m < n_roots; ++m) {
            const std::uint32_t r = root_operand_[m];
            if ((r & kShared) != 0) continue;  // a constant root: its grad's tangent is 0
            double* g = grow(r);
            for (std::size_t s = 0; s < n; ++s) g[s] += seed != nullptr ? seed[(s0 + s) * n_roots + m] : 1.0;
        }
        // Whether an operand's tangents in this tile are all finite, asked once per row and tile (per block
        // for a shared leaf).
        std::fill(w.finite.begin(), w.finite.end(), -1);
        const auto finite_lanes = [&](std::uint32_t operand, const LaneIn& x) {
            signed char& known = (operand & kShared) != 0 ? w.shared_finite[operand & ~kShared] : w.finite[operand];
            if (known < 0) known = all_finite(x.t, (n - 1) * x.t_stride + kLanes) ? 1 : 0;
            return known != 0;
        };
        for (std::size_t i = program_.size(); i-- > 0;) {
            const Instruction& ins = program_[i];
            const std::uint32_t* c = operands_.data() + ins.a;
            const double* g = grow(ins.out);
            const double* gt = gtrow(ins.out);
            const bool g_active = w.act->grad_active[ins.out] != 0;
            if (ins.op == Op::Sum) {
                for (std::uint32_t m = 0; m < ins.b; ++m) {
                    const LaneOut dest = to(c[m]);
                    for (std::size_t s = 0; s < n; ++s) {
                        dest.add_value(s, g[s]);
                        const double* tg = gt + s * kLanes;
                        add_lanes(g_active ? dest.lanes(s) : nullptr, nullptr, [&](std::size_t l) {
                            return Pair<Tangent>{rules::Sum::vjp(Tangent{g[s], tg[l], true}), Tangent{}};
                        });
                    }
                }
            } else if (ins.op == Op::Dot) {
                const std::uint32_t terms = ins.b / 2;
                bool penalty = false;
                const bool g_finite = !g_active || all_finite(gt, n * kLanes);
                rules::with_scale(all_finite(g, n), [&](auto grad) {
                    using G = decltype(grad);
                    for (std::uint32_t m = 0; m < terms; ++m) {
                        const std::uint32_t wk = c[m];
                        const std::uint32_t xk = c[terms + m];
                        if (both_shared(wk, xk)) {  // summed over the samples first, below
                            penalty = true;
                            continue;
                        }
                        const LaneIn wi = in(w, wk, s0);
                        const LaneIn xi = in(w, xk, s0);
                        const bool wa = active_in(w, wk);
                        const bool xa = active_in(w, xk);
                        const bool finite = g_finite && (!wa || finite_lanes(wk, wi)) && (!xa || finite_lanes(xk, xi));
                        const auto run = [&](auto tg) {
                            with_flags(g_active, wa, xa, [&](auto ga, auto w_active, auto x_active) {
                                lane_dual_dot<G, decltype(tg), decltype(ga)::value, decltype(w_active)::value,
                                              decltype(x_active)::value>(g, gt, wi, xi, to(wk), to(xk), n);
                            });
                        };
                        rules::with_scale(finite, run);
                    }
                });
                if (penalty) {
                    double* pg = w.penalty_grads.data() + ins.out;
                    double* pt = w.penalty_tangents.data() + std::size_t{ins.out} * kLanes;
                    for (std::size_t s = 0; s < n; ++s) {
                        if (w.counted[s] == 0) continue;
                        *pg += g[s];
                        if (!g_active) continue;
                        for (std::size_t l = 0; l < kLanes; ++l) pt[l] += gt[s * kLanes + l];
                    }
                }
            } else if (ins.op == Op::LogSumExp) {
                const LaneIn o = in(w, ins.out, s0);
                const bool o_active = w.act->active[ins.out] != 0;
                for (std::uint32_t m = 0; m < ins.b; ++m) {
                    const LaneIn x = in(w, c[m], s0);
                    const bool x_active = active_in(w, c[m]);
                    const bool term = rules::LogSumExp::vjp(probe(g_active), probe(x_active), probe(o_active)).active;
                    const LaneOut dest = to(c[m]);
                    for (std::size_t s = 0; s < n; ++s) {
                        const double* tg = gt + s * kLanes;
                        const double* tx = x.lanes(s);
                        const double* tout = o.lanes(s);
                        const double gv = g[s];
                        const double xv = x.value(s);
                        const double ov = o.value(s);
                        dest.add_value(s, rules::LogSumExp::vjp(Tangent{gv, 0.0, false}, Tangent{xv, 0.0, false},
                                                                Tangent{ov, 0.0, false}).v);
                        add_lanes(term ? dest.lanes(s) : nullptr, nullptr, [&](std::size_t l) {
                            const Tangent d = rules::LogSumExp::vjp(Tangent{gv, g_active ? tg[l] : 0.0, g_active},
                                                                    Tangent{xv, x_active ? tx[l] : 0.0, x_active},
                                                                    Tangent{ov, o_active ? tout[l] : 0.0, o_active});
                            return Pair<Tangent>{d, Tangent{}};
                        });
                    }
                }
            } else {
                visit_elementary(ins.op, [&](auto rule) {
                    using Rule = decltype(rule);
                    constexpr bool two = differentiable_inputs<Rule>() == 2;
                    const bool aa = active_in(w, ins.a);
                    const bool ba = two && active_in(w, ins.b);
                    const bool oa = w.act->active[ins.out] != 0;
                    const Pair<Tangent> term = Rule::vjp(probe(g_active), probe(aa), probe(ba), probe(oa));
                    const auto run = [&](auto grad) {
                        lane_dual<Rule, decltype(grad)>(g, gt, g_active, in(w, ins.a, s0), aa, in(w, ins.b, s0), ba,
                                                        in(w, ins.out, s0), oa, to(ins.a), term.a.active, to(ins.b),
                                                        two && term.b.active, n);
                    };
                    if constexpr (scales_grad<Rule>) {
                        rules::with_scale(all_finite(g, n), run);
                    } else {
                        run(rules::AnyGrad{});
                    }
                });
            }
        }

        // The inputs' rows.
        for (std::size_t i = 0; i < n_in; ++i) {
            const double* gt = gtrow(static_cast<std::uint32_t>(i));
            const bool reached = w.act->grad_active[i] != 0;
            for (std::size_t s = 0; s < n; ++s) {
                for (std::size_t l = 0; l < lanes; ++l) {
                    double v = reached ? gt[s * kLanes + l] : 0.0;
                    if (w.counted[s] == 0) v = std::numeric_limits<double>::quiet_NaN();
                    out[((d0 + l) * batch + s0 + s) * n_in + i] = v;
                }
            }
        }
    };

    // Dot terms of two shared leaves (a penalty such as dot(params, params)) reach only shared leaves:
    // they run once, on the grad summed over the samples that count (in sample order). hvp_batch does
    // the same where those grads are finite and otherwise runs them sample by sample.
    const auto penalties = [&](LaneWork& w) {
        for (std::size_t i = program_.size(); i-- > 0;) {
            const Instruction& ins = program_[i];
            if (ins.op != Op::Dot) continue;
            const std::uint32_t* c = operands_.data() + ins.a;
            const std::uint32_t terms = ins.b / 2;
            const bool g_active = w.act->grad_active[ins.out] != 0;
            const double gv = w.penalty_grads[ins.out];
            const double* gt = w.penalty_tangents.data() + std::size_t{ins.out} * kLanes;
            const bool finite = all_finite(&gv, 1) && all_finite(gt, kLanes);
            for (std::uint32_t m = 0; m < terms; ++m) {
                const std::uint32_t wk = c[m];
                const std::uint32_t xk = c[terms + m];
                if (!both_shared(wk, xk)) continue;
                const std::uint32_t wj = wk & ~kShared;
                const std::uint32_t xj = xk & ~kShared;
                const bool wa = w.act->shared_active[wj] != 0;
                const bool xa = w.act->shared_active[xj] != 0;
                const Pair<Tangent> term = rules::Dot::vjp(probe(g_active), probe(wa), probe(xa));
                for (std::size_t l = 0; l < kLanes; ++l) {
                    const Tangent gl{gv, g_active ? gt[l] : 0.0, g_active};
                    const Tangent wl{shared_values_[wj], wa ? w.shared_tangents[wj * kLanes + l] : 0.0, wa};
                    const Tangent xl{shared_values_[xj], xa ? w.shared_tangents[xj * kLanes + l] : 0.0, xa};
                    const Pair<Tangent> d = finite ? rules::Dot::vjp<rules::FiniteGrad>(gl, wl, xl)
                                                   : rules::Dot::vjp<rules::AnyGrad>(gl, wl, xl);
                    if (term.a.active) w.shared_sums[wj * kLanes + l] += d.a.t;
                    if (term.b.active) w.shared_sums[xj * kLanes + l] += d.b.t;
                }
            }
        }
    };

    const auto block = [&](std::size_t b, LaneWork& w) {
        w.act = &activity[b];
        std::fill(w.shared_finite.begin(), w.shared_finite.end(), -1);
        const std::size_t d0 = b * kLanes;
        const std::size_t lanes = std::min(kLanes, k - d0);
        for (std::size_t j = 0; j < n_shared; ++j) {
            for (std::size_t l = 0; l < kLanes; ++l) {
                w.shared_tangents[j * kLanes + l] =
                    shared_tangents != nullptr && l < lanes ? shared_tangents[(d0 + l) * n_shared + j] : 0.0;
            }
        }
        std::fill(w.shared_sums.begin(), w.shared_sums.end(), 0.0);
        std::fill(w.penalty_grads.begin(), w.penalty_grads.end(), 0.0);
        std::fill(w.penalty_tangents.begin(), w.penalty_tangents.end(), 0.0);
        for (const Instruction& ins : program_) {
            if (w.act->active[ins.out] != 0 && uniform[ins.out] != 0) forward(w, ins, 0, 1);
        }
        for (std::size_t s0 = 0; s0 < batch; s0 += tile_size) tile(w, s0, std::min(tile_size, batch - s0), d0, lanes);
        penalties(w);
        if (shared_out == nullptr) return;
        for (std::size_t l = 0; l < lanes; ++l) {
            for (std::size_t j = 0; j < n_shared; ++j) {
                shared_out[(d0 + l) * n_shared + j] = w.shared_sums[j * kLanes + l];
            }
        }
    };
    // Blocks go to whichever thread is free; a block's numbers do not depend on which.
    std::atomic<std::size_t> next{0};
    run_on_workers(threads, [&](std::size_t worker) {
        for (std::size_t b = next++; b < n_blocks; b = next++) block(b, work[worker]);
    });
}

}  // namespace arenagrad
