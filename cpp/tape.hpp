// Native replay of a recorded graph, in the spirit of CppAD's ADFun: record once, then re-run
// forward and backward with new leaf values and no per-node work outside this file.
//
// A Tape owns a reference to its root, which keeps the whole graph below it alive and unchanged
// (the arena never mutates a live node's children), so a recorded graph cannot be freed or
// rewired under the tape. What replays is exactly what was recorded: a Python-level branch on
// a value (`if x.data > 0`) was taken once, at recording, and is not re-decided.
//
// Two ways to replay:
// - scalar: inputs are written into their leaves and every node is recomputed in place in the
//   arena, in the recorded order, by the op table's rules. Values and grads equal those of
//   building the graph again eagerly, bit for bit.
// - batched: the graph is compiled once into a row program, and one call evaluates it for a
//   whole batch of samples. Each node owns a row of `batch` values stored contiguously
//   (batch-minor), so every op is a simple loop the compiler can vectorize. Leaves that are not
//   inputs (parameters, constants) are shared by all samples: each is one scalar, read in place
//   by the loops (never broadcast into a row), and its grad is summed over the batch.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "arena.hpp"

namespace arenagrad {

// Where a replay's forward pass failed.
struct ReplayError {
    Status status = Status::Ok;
    Op op = Op::Leaf;
    double a = 0.0;
    double b = 0.0;
    std::size_t sample = 0;  // batched replay only
};

class Tape {
  public:
    // Records the graph below root. `inputs` are leaves of that graph whose values each replay
    // supplies; every other leaf is read from the arena at replay time. Throws
    // std::invalid_argument (with a message for the user) for a leaf root, an input that is not
    // a leaf of the graph, or an input given twice.
    Tape(Arena& arena, NodeId root, std::vector<NodeId> inputs);
    // A tape of several roots (a gradient vector, a Jacobian's rows): one order for all of them,
    // so shared subexpressions are evaluated once. Roots may repeat and may be leaves (a
    // gradient entry that is a constant), and inputs may be unread by every root (where a
    // gradient is 0); at least one root is needed.
    Tape(Arena& arena, std::vector<NodeId> roots, std::vector<NodeId> inputs);
    ~Tape();
    Tape(const Tape&) = delete;
    Tape& operator=(const Tape&) = delete;

    NodeId root() const { return roots_.front(); }
    const std::vector<NodeId>& roots() const { return roots_; }
    const std::vector<NodeId>& inputs() const { return inputs_; }
    std::size_t num_nodes() const { return order_.size(); }  // non-leaf nodes
    std::size_t num_leaves() const { return leaves_.size(); }

    // --- scalar replay, in the arena ---
    // Writes the inputs (inputs().size() values) into their leaves and recomputes every node.
    // On failure, values are left partly updated and `error` says where; replay again to fix.
    bool forward(const double* input_values, ReplayError& error);
    // Exactly Arena::backward(root), along the recorded order (a tape of one non-leaf root).
    void backward() { arena_.backward_along(order_); }
    // Backward of sum_k seeds[k] * roots[k]: fresh grads for the graph's nodes, accumulated grads
    // for its leaves. With one root and seed 1 it is backward(), bit for bit.
    void backward(const double* seeds);
    // Forward mode: the directional derivative of the root along `tangents` (one per input) at the
    // graph's current values (those of the last forward(), or of recording). Every rule's vjp is
    // linear in g, so a node's tangent is the sum, in child order, of its rule applied to each
    // input's tangent. Only nodes that depend on an input with a nonzero tangent are active (JAX's
    // symbolic zeros): an infinite or NaN local derivative of anything else never reaches the
    // result, so d/dx (x * sqrt(y)) at y = 0 with only x seeded is sqrt(0) = 0, not NaN.
    // With several roots, out receives one directional derivative per root.
    double jvp(const double* tangents);
    void jvp(const double* tangents, double* out);

    // --- batched replay, in the tape's own rows ---
    // x is batch rows of inputs().size() values (row-major), batch >= 1 (std::invalid_argument
    // otherwise). Writes each sample's root values to out (batch rows of roots().size()). On failure `error` names the op
    // and the first failing sample. A batch too large to index throws std::length_error, one too
    // large to allocate std::bad_alloc; either leaves the tape as it was.
    //
    // With on_error Nan, a failing sample does not stop the batch (NumPy's way): the failing op's
    // value is NaN for that sample, every root of that sample is NaN, the sample is listed in
    // failed(), and backward_batch leaves it out of the shared leaves' gradients.
    enum class OnError { Raise, Nan };
    bool forward_batch(const double* x, std::size_t batch, double* out, ReplayError& error,
                       OnError on_error = OnError::Raise);
    // The samples (ascending) that failed in the last forward_batch with OnError::Nan.
    const std::vector<std::size_t>& failed() const { return failed_; }
    // Seeds each root's grad with seed (batch rows of roots().size(); 1 for every root and sample
    // if seed is null), sweeps back, and adds each shared leaf's grad, summed over the batch, into
    // the arena's grads.
    // If input_grads is not null it receives d(root)/d(input), batch rows of inputs().size().
    // Needs a forward_batch first.
    // Samples listed in failed() add nothing to shared leaves; their input grads are NaN.
    void backward_batch(const double* seed, double* input_grads);
    // Per-sample gradients instead of their sum (DP-SGD, influence functions): out receives batch
    // rows of params.size(), d(sum_k seed[s,k] * roots[k] of sample s)/d(params[j]); the arena's
    // grads are left alone. A param may be a shared leaf, an input, a node of the graph (its grad,
    // as backward() leaves it), or absent from the graph (0).
    // Rows of failed samples are NaN.
    void backward_batch_per_sample(const double* seed, const std::vector<NodeId>& params, double* out);
    // Forward mode for every sample at once, after forward_batch: tangents holds one direction per
    // sample (batch rows of inputs().size()), out receives batch rows of roots().size(). With every
    // sample at the same point and the tangents the identity, that is the Jacobian in one call.
    // Rows of samples that failed in forward_batch are NaN. Symbolic zeros are per input column: an
    // input with zero tangents in every row is inactive; in a column with some nonzero tangents a
    // zero tangent is a number (0 * inf is NaN), so a row may differ from that sample's jvp().
    void jvp_batch(const double* tangents, double* out);
    // Forward over reverse for every sample at once, after forward_batch: out receives batch rows of
    // inputs().size(), row s the derivative of sample s's input gradients (those backward_batch
    // gives, seeded with seed, 1 for every root if null) along the direction tangents[s] on the inputs
    // and shared_tangents on the shared leaves (one each, for every sample, in shared_leaf_index order;
    // null: none): the Hessian of sum_k seed[s,k] * roots[k] times that direction. shared_out, if not
    // null, receives per shared leaf the derivative of its grad, each sample's summed in the sweep's
    // order and the samples in four interleaved lanes (add_lanes; samples that failed left out): with
    // the parameters as shared leaves and the tangents on them, the batch loss's Hessian-vector product.
    // The backward pass runs in dual numbers (cpp/tangent.hpp): the table's vjp rules over a Tangent,
    // no gradient graph recorded. Tangents are forward mode's (jvp_batch), symbolic zeros included (a
    // shared leaf's zero tangent too), and a gradient's tangent is likewise inactive until a term along
    // the direction reaches it. Rows of samples that failed in forward_batch are NaN.
    void hvp_batch(const double* tangents, const double* seed, double* out, const double* shared_tangents = nullptr,
                   double* shared_out = nullptr);
    // hvp_batch for k directions at once (a Hessian: the identity on the parameters), the directions in
    // lanes (cpp/hvp_directions.cpp): tangents holds k blocks of batch rows of inputs().size() (null:
    // none), shared_tangents k rows of num_shared_leaves() (null: none); out receives k blocks of
    // hvp_batch's rows, shared_out (if not null) k rows of its per-leaf sums. Symbolic zeros are decided
    // per block of kDirectionLanes consecutive directions (an input or shared leaf that some direction of
    // the block moves is active for all of them), so each direction's rows are hvp_batch's for that
    // direction bit for bit whenever that decides the same; otherwise a zero tangent that is a number may
    // meet an infinite or NaN partial (as in jvp_batch's columns) or turn a zero's sign. The sums over
    // samples run in sample order, each direction's on its own: they agree with hvp_batch's to rounding,
    // and the threads, which split the blocks between them, change no bit.
    static constexpr std::size_t kDirectionLanes = 16;
    void hvp_directions(std::size_t k, const double* tangents, const double* seed, double* out,
                        const double* shared_tangents = nullptr, double* shared_out = nullptr);
    // The index of a shared leaf among the shared leaves (0 .. num_shared_leaves() - 1), or
    // num_shared_leaves() for anything else.
    std::size_t shared_leaf_index(NodeId id) const;
    std::size_t num_shared_leaves() const { return num_shared_; }
    bool is_input(NodeId id) const;
    // The batch of values of a node of the graph after forward_batch (batch values), or null
    // when the node is not in the graph.
    // The first call for a node whose row is not stored (nothing after the forward pass needs it)
    // runs the forward pass again, storing that row from then on.
    const double* batch_values(NodeId id);
    // True for a leaf of the graph that is not an input (a parameter or constant): it has one value
    // shared by every sample, so no row.
    bool is_shared_leaf(NodeId id) const;
    std::size_t batch() const { return batch_; }
    // Rows of values stored for the whole batch (see value_base_): the tape's memory per sample is
    // 8 bytes each; tile workspaces are per thread, not per sample.
    std::size_t stored_rows() const { return batch_ == 0 ? 0 : values_.size() / batch_; }

  private:
    Tape(Arena& arena, std::vector<NodeId> roots, std::vector<NodeId> inputs, bool every_input_used);

    // One node of the row program. Operands are rows of values_ / grads_, or, with kShared set,
    // indexes of shared leaves: one value for every sample, never broadcast into a row.
    struct Instruction {
        Op op;
        std::uint32_t out;  // a row
        std::uint32_t a;    // elementary ops: first operand; n-ary: offset into operands_
        std::uint32_t b;    // elementary ops: second operand; n-ary: number of operands
    };
    static constexpr std::uint32_t kShared = 0x80000000u;

    void compile();
    // Every row's tangent along one direction per sample (tangent_, active_): jvp_batch's pass.
    // shared_tangents: one per shared leaf, or null for none.
    void tangent_rows(const double* tangents, const double* shared_tangents);
    // tangent_rows' pass over the samples s0 .. s0 + n - 1; finite_cache holds, per row, whether its
    // tangents there are all finite. mark_active: set active_ for each row as it is reached (one range).
    void tangent_range(std::size_t s0, std::size_t n, signed char* finite_cache, bool mark_active);
    // Forward mode's activity (after tangent_rows set the inputs' and shared leaves'): does an operand
    // carry a tangent, and does any term along the direction reach an instruction's output?
    bool tangent_active(std::uint32_t operand) const {
        return (operand & kShared) != 0 ? shared_active_[operand & ~kShared] != 0 : active_[operand] != 0;
    }
    bool tangent_reaches(const Instruction& ins) const;
    // hvp_batch's activity of the grads (grad_active_, shared_grad_active_), after forward mode's
    // (active_, shared_active_): which grads a term along the direction reaches.
    void reach_grads();
    // tangent_rows and hvp_batch run ranges of samples on the threads: their passes share nothing between
    // samples but what they read, and the ranges depend on the batch alone (a shared leaf's sums are
    // kept per range), so the threads change no result. f(range, s0, n); f must not throw.
    std::size_t sample_range_size() const;
    std::size_t sample_ranges() const;
    template <class F>
    void for_sample_ranges(std::size_t n_ranges, F&& f);
    // Values: a row is stored for the whole batch only if something after the forward pass reads it
    // (kept_value_: an input, a root, a value some vjp reads, or a row batch_values was asked for);
    // every other row lives in the thread's workspace while its tile runs, so that a large batch
    // does not stream every row through memory. value_base_[r] is a stored row's start, or null.
    double* stored_row(std::uint32_t r) const { return value_base_[r]; }
    // A stored row from sample s0 on, for the sweeps after the forward pass; a row that is not stored
    // reads as NaN (no rule reads it: vjp_reads_values).
    const double* after_forward(std::uint32_t r, std::size_t s0) const {
        return value_base_[r] != nullptr ? value_base_[r] + s0 : nan_row_.data();
    }
    double operand_value(std::uint32_t operand, std::size_t sample) const {
        return (operand & kShared) != 0 ? shared_values_[operand & ~kShared] : after_forward(operand, sample)[0];
    }
    const double* value_of(std::uint32_t operand) const {
        return (operand & kShared) != 0 ? &shared_values_[operand & ~kShared] : after_forward(operand, 0);
    }
    void layout_values(std::size_t batch);  // (re)allocates the stored rows for kept_value_
    // Batched replay runs the program over tiles of kTile samples, so that a tile's rows stay in
    // cache from one instruction to the next (a multiple of 16, the kernels' block), and the tiles
    // of a chunk one after the other; chunks run on the machine's cores (see run_chunks). A chunk
    // is 4 tiles, or more for batches above 64 such chunks (at most 64 chunks). A shared leaf's
    // gradient sums each chunk's samples in four lanes, then the chunks in order: one order for a
    // given batch, whatever the number of threads.
    static constexpr std::size_t kTile = 256;
    static std::size_t chunk_size(std::size_t batch) {
        const std::size_t tiles = (batch + kTile - 1) / kTile;
        return std::max<std::size_t>(4, (tiles + 63) / 64) * kTile;
    }
    // What one thread's loops need besides the tape's rows; sized before the threads start, so
    // that they allocate nothing.
    struct Workspace {
        std::vector<double> scratch;             // two rows of kTile: shared operands' gradients
        std::vector<double> grads;               // the tile's grads: every row, tile_stride() apart
        std::vector<double> values;              // the tile's values of rows not stored, likewise
        std::vector<double> dot_coef;            // scaled_rows(): each term's shared value
        std::vector<const double*> dot_rows;     // ... each term's row
        std::vector<double*> dot_coef_lanes;     // ... each term's shared grad's lanes
        std::vector<double*> dot_row_grads;      // ... each term's row of grads
        std::vector<double*> layer_out;          // forward_layer(): each dot's row of values
        std::vector<double> layer_bias;          // ... each dot's bias
        std::vector<double*> layer_biased;       // ... and its bias add's row (or null)
        std::vector<const double*> layer_go;     // back_layer(): each dot's row of output grads
        std::vector<double> layer_coef;          // ... each dot's weights, dot by dot
        std::vector<const double*> layer_rows;   // ... the rows the dots share
        std::vector<double*> layer_row_grads;    // ... and their grads
        std::vector<double*> layer_lanes;        // ... each weight's lanes, dot by dot
    };
    // Grads live only while their tile is swept, in the thread's workspace, where they stay in cache:
    // the backward pass reads the batch's values once and writes back only the rows someone asked for
    // (kept_rows_, and the inputs' into backward_batch's output). Sample s0 + j of the tile is at j.
    // Rows of a tile lie this far apart. Long ones a cache line more than a whole number of lines, so that
    // the rows a kernel reads side by side do not all fall into the same few sets of a 4 KiB-indexed L1
    // (256 doubles apart, every second row would); short ones (a small batch of a large graph) unpadded.
    std::size_t tile_stride() const {
        const std::size_t n = std::min(kTile, batch_);
        return n < 64 ? n : (n + 7) / 8 * 8 + 8;
    }
    double* tile_grad(Workspace& ws, std::uint32_t r) const { return ws.grads.data() + std::size_t{r} * tile_stride(); }
    // Where the forward pass reads and writes row r for the tile from s0: its stored row or the tile's.
    double* tile_value(Workspace& ws, std::uint32_t r, std::size_t s0) const {
        return value_base_[r] != nullptr ? value_base_[r] + s0 : ws.values.data() + std::size_t{r} * tile_stride();
    }
    // Runs forward_tile over the whole batch on the threads; false with error set at the earliest
    // failing chunk's first failure.
    // With x, each tile first copies its inputs from x; with out, it then copies its roots to out.
    bool forward_chunks(OnError on_error, std::vector<char>& failed, ReplayError& error, const double* x = nullptr,
                        double* out = nullptr);
    void copy_inputs(const double* x, std::size_t s0, std::size_t n);
    void copy_roots(double* out, std::size_t s0, std::size_t n) const;
    // A layer: dots (instruction indexes, ascending) whose terms are all a shared weight times one
    // of the same distinct rows, with no other instruction between the first and the last reading
    // those rows. Forward computes them all at the first one's turn: their rows are ready then, and
    // nothing reads a dot's value before its own turn. Backward runs them together at the first
    // one's turn (the last of theirs in the sweep), last dot first: the order in which each row's
    // grad gains their terms is the one the dots one by one would give. A per-sample sweep runs each
    // dot at its own turn instead: there a shared leaf's row of grads gains terms in the sweep's order.
    // A dot's bias add (an Add of its row and a shared leaf, anywhere after it) runs in the layer's
    // forward kernel too: its operands are ready at the layer's turn, and a + b is b + a bit for bit.
    struct Layer {
        std::vector<std::uint32_t> dots;
        std::vector<std::uint32_t> bias_adds;  // per dot: its bias add's instruction, or kNoLayer
    };
    static constexpr std::uint32_t kNoLayer = 0xFFFFFFFFu;
    void find_layers();
    void mark_kept_values();
    void forward_layer(Workspace& ws, const Layer& layer, std::size_t s0, std::size_t n);
    // The layer's backward in one kernel when no sample failed and every output grad is finite;
    // false (nothing done) otherwise.
    bool back_layer(Workspace& ws, double* lanes, const Layer& layer, std::size_t s0, std::size_t n);
    // Calls f(chunk, workspace) for chunks 0 .. n_chunks - 1, on up to num_threads() threads.
    template <class F>
    void run_chunks(std::size_t n_chunks, F&& f);
    bool forward_tile(Workspace& ws, std::size_t s0, std::size_t n, OnError on_error, std::vector<char>& failed,
                      ReplayError& error);
    void sweep_back(const double* seed);  // backward_batch's sweep, chunk by chunk
    void back_tile(Workspace& ws, double* lanes, const double* seed, std::size_t s0, std::size_t n);
    std::size_t num_slots() const { return operands_.size() + 2 * program_.size(); }
    // The lane slot of operand k (0 or 1) of elementary instruction i: after the n-ary operands' slots.
    std::size_t elementary_slot(std::size_t i, std::size_t k) const { return operands_.size() + 2 * i + k; }
    // A bias add (an Add of a row and a shared leaf, in either order): the row it reads.
    static std::uint32_t biased_row(const Instruction& add) { return (add.a & kShared) != 0 ? add.b : add.a; }
    // True when every term of the dot with operands c (n terms, their lane slots from first_slot)
    // is a shared leaf times a row; then ws's dot vectors hold, term by term, the leaf's value and
    // the row's values from sample s0 on, and, for a backward pass (lanes not null), the leaf's lanes
    // and the row's tile of grads. The forward pass (lanes null) reads its rows where forward_tile
    // writes them (tile_value).
    bool scaled_rows(Workspace& ws, double* lanes, const std::uint32_t* c, std::uint32_t n, std::size_t s0,
                     std::size_t first_slot);

    Arena& arena_;
    std::vector<NodeId> roots_;
    std::vector<NodeId> order_;   // non-leaf nodes, reverse creation order (Arena::topological_order)
    std::vector<NodeId> inputs_;
    std::vector<NodeId> leaves_;  // every leaf of the graph: shared ones first, then the inputs
    std::unordered_map<NodeId, std::size_t> leaf_position_;  // each leaf's index in leaves_

    // The row program (built on the first batched call). Rows: [inputs][nodes in forward order]
    // [one row of zeros, the unused second operand of unary ops]; shared leaves have no row.
    std::vector<Instruction> program_;
    std::vector<std::uint32_t> operands_;  // operands of n-ary instructions
    std::vector<NodeId> row_node_;         // node of each row, for batch_values
    std::vector<std::uint32_t> root_operand_;  // each root's row, or its shared leaf
    std::size_t num_shared_ = 0;
    std::uint32_t zero_row_ = 0;
    std::size_t batch_ = 0;
    std::vector<double> values_;           // the stored rows, one batch-long row each
    std::vector<double*> value_base_;      // per row: its stored row, or null
    std::vector<char> kept_value_;         // per row: is it stored?
    std::vector<double> nan_row_;          // batch NaNs: what after_forward() gives for a row not stored
    OnError last_on_error_ = OnError::Raise;
    std::vector<std::uint32_t> kept_rows_;  // rows whose grads the sweep keeps for the whole batch ...
    std::vector<double> kept_grads_;        // ... one batch-long row each, in kept_rows_' order
    double* input_grads_ = nullptr;         // backward_batch's input grads (batch rows), while it sweeps
    std::vector<double> shared_values_;
    std::vector<double> shared_grads_;
    std::vector<double> tangent_;  // per row: forward-mode tangents (jvp; batch of them for jvp_batch)
    std::vector<char> active_;     // per row: does it depend on a seeded input?
    std::vector<signed char> tangent_finite_;  // per range and row: are its tangents finite? (-1: not asked)
    std::vector<double> dual_grad_;     // hvp_batch: per row, the batch's grads ...
    std::vector<double> dual_tangent_;  // ... and their tangents
    std::vector<char> grad_active_;     // ... and whether a term along the direction reached them
    std::vector<double> shared_dual_rows_;  // ... rows of some shared leaves' grads' tangents per sample
    std::vector<std::size_t> shared_row_;   // ... which row each shared leaf has (or none)
    std::vector<double> dual_sink_;         // ... and a row for their values, which nothing reads
    std::vector<char> shared_grad_active_;  // ... and whether a term along the direction reached them
    std::vector<double> shared_collapsed_;  // ... and their terms summed over the samples at once
    std::vector<double> range_sums_;        // ... and per range of samples, their dot terms' sums
    std::vector<double> dual_alias_;        // ... and scratch rows for an operand read twice (x * x)
    std::vector<double> shared_tangent_;  // per shared leaf: its tangent (tangent_rows)
    std::vector<char> shared_active_;     // ... and whether it is nonzero
    std::vector<Workspace> workspaces_;  // one per thread
    std::size_t max_dot_terms_ = 0;
    std::vector<Layer> layers_;
    std::vector<std::uint32_t> layer_of_;  // per instruction: its layer, or kNoLayer
    std::vector<char> in_layer_forward_;   // per instruction: a bias add the layer's forward kernel runs
    std::vector<char> in_layer_backward_;  // ... and whose backward back_layer() runs (its dot's only reader)
    std::vector<char> grads_borrowed_;     // per row: a layer dot's, whose grads back_layer() reads from its add
    // Is dot j of the layer read by its bias add alone (so the layer's kernels do the add's work)?
    bool bias_only_reader(const Layer& layer, std::size_t j) const {
        return layer.bias_adds[j] != kNoLayer && in_layer_backward_[layer.bias_adds[j]] != 0;
    }
    std::size_t max_layer_dots_ = 0;
    std::size_t max_layer_rows_ = 0;
    // Per chunk, four lanes per operand slot (each n-ary operand, two per elementary instruction):
    // a shared operand's gradient summed over the chunk's samples, tile after tile.
    std::vector<double> lanes_;
    std::vector<double> shared_rows_;     // per-sample sweep: a row of gradients per shared leaf
    std::vector<std::size_t> failed_;     // samples that failed in the last forward_batch
    bool per_sample_ = false;             // is the running backward sweep per sample?
    bool have_batch_forward_ = false;
};

}  // namespace arenagrad
