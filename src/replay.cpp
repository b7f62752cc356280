// Bindings of the replay API (cpp/tape.hpp) and bulk parameter updates (cpp/optimizer.hpp).
// Called once per step, not once per op, so pybind11's conveniences cost nothing that matters.
#include "replay.hpp"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <limits>
#include <new>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "optimizer.hpp"
#include "tape.hpp"
#include "value_type.hpp"

namespace py = pybind11;

namespace arenagrad::binding {

namespace {

using Array = py::array_t<double, py::array::c_style | py::array::forcecast>;

NodeId node_arg(py::handle obj, const std::string& what) {
    NodeId id = 0;
    if (!node_of(obj.ptr(), &id)) {
        throw py::type_error(what + " must be an arenagrad.Value, not " + std::string(Py_TYPE(obj.ptr())->tp_name));
    }
    return id;
}

// The nodes of an iterable of Values. `keep` holds the Values themselves: an iterator may hand out
// the only reference to each one, and their nodes must stay alive until the caller retains them.
std::vector<NodeId> nodes_arg(const py::iterable& values, const std::string& what, std::vector<py::object>& keep) {
    std::vector<NodeId> ids;
    for (py::handle v : values) {
        NodeId id = 0;
        // The message is built only for an error: formatting it for every Value cost more than the rest.
        if (!node_of(v.ptr(), &id)) node_arg(v, what + "[" + std::to_string(ids.size()) + "]");
        ids.push_back(id);
        keep.push_back(py::reinterpret_borrow<py::object>(v));
    }
    return ids;
}

[[noreturn]] void raise_replay_error(const ReplayError& e, bool batched) {
    set_op_error(e.status, e.op, e.a, e.b);
    py::error_already_set err;  // fetches the exception just set
    std::string where = batched ? "while replaying sample " + std::to_string(e.sample) + ": " : "while replaying: ";
    // Keep the exception type, prefix the message with where it happened.
    PyErr_SetString(err.type().ptr(), (where + py::str(err.value()).cast<std::string>()).c_str());
    throw py::error_already_set();
}

// True when every element of an object array is a numbers.Real, as Value() accepts.
bool all_real(const py::array& objects) {
    static PyObject* real = py::object(py::module_::import("numbers").attr("Real")).release().ptr();
    for (py::handle item : objects.attr("ravel")()) {
        const int is_real = PyObject_IsInstance(item.ptr(), real);
        if (is_real < 0) throw py::error_already_set();
        if (is_real == 0) return false;
    }
    return true;
}

// obj as a C-contiguous float64 array. Only real numbers convert: numpy's forcecast would parse
// strings ("1.5") and drop imaginary parts, both silently. A float64 array, the usual argument,
// passes straight through: this runs on every replay call.
Array real_array(const py::object& obj, const char* who) {
    if (Array::check_(obj)) return py::reinterpret_borrow<Array>(obj);
    py::array raw;
    if (py::array::check_(obj)) {
        raw = py::reinterpret_borrow<py::array>(obj);
    } else {
        static PyObject* asarray = py::object(py::module_::import("numpy").attr("asarray")).release().ptr();
        raw = py::reinterpret_steal<py::array>(PyObject_CallOneArg(asarray, obj.ptr()));
        if (!raw) throw py::error_already_set();
    }
    const char kind = raw.dtype().kind();
    if (kind == 'O' && all_real(raw)) {  // Fraction, ints beyond 64 bits
        Array converted = Array::ensure(raw);
        if (!converted) {  // numpy cleared float()'s error: an int too large for a float64
            PyErr_SetString(PyExc_OverflowError, (std::string(who) + " got a number too large for a float64").c_str());
            throw py::error_already_set();
        }
        return converted;
    }
    if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b') {
        throw py::type_error(std::string(who) + " expects real numbers, got an array of dtype " +
                             py::str(raw.dtype()).cast<std::string>() +
                             (kind == 'c' ? " (complex numbers have no place in a real-valued graph)" : ""));
    }
    Array converted = Array::ensure(raw);
    if (!converted) throw std::bad_alloc();  // a numeric array fails to convert only for want of memory
    return converted;
}

// A Tape that remembers whether it was given a list of roots, so results keep that shape (a tape
// of one root given as a list returns arrays of one).
struct BoundTape : Tape {
    using Tape::Tape;
    bool several = false;
};

py::object value_handle(NodeId id) { return py::reinterpret_steal<py::object>(handle_for(id)); }

Array copy_row(const double* data, std::size_t n) {
    Array out(static_cast<py::ssize_t>(n));
    std::copy_n(data, n, out.mutable_data());
    return out;
}

// The seeds of a batched backward pass, batch rows of one per root; empty for the default (1 for
// every root and sample), which a tape of several roots does not have.
std::vector<double> batch_seeds(const BoundTape& tape, const py::object& seed, const std::string& who) {
    const std::size_t n_roots = tape.roots().size();
    std::vector<double> seeds;
    if (!seed.is_none()) {
        Array s = real_array(seed, who.c_str());
        const bool ok = tape.several ? (s && s.ndim() == 2 && static_cast<std::size_t>(s.shape(0)) == tape.batch() &&
                                        static_cast<std::size_t>(s.shape(1)) == n_roots)
                                     : (s && (s.ndim() == 0 || (s.ndim() == 1 && static_cast<std::size_t>(s.size()) == tape.batch())));
        if (!ok) {
            throw py::value_error(tape.several ? who + " expects seeds of shape (" + std::to_string(tape.batch()) +
                                                     ", " + std::to_string(n_roots) + "), one per sample and root"
                                               : who + " expects a number or an array of " +
                                                     std::to_string(tape.batch()) + " seeds");
        }
        seeds.assign(tape.batch() * n_roots, s.data()[0]);
        if (s.ndim() >= 1) std::copy_n(s.data(), tape.batch() * n_roots, seeds.begin());
    } else if (tape.several) {
        throw py::value_error(who + " of a tape of several roots needs seeds of shape (batch, roots)");
    }
    return seeds;
}

// One direction per sample, batch rows of one tangent per input.
Array batch_tangents(const BoundTape& tape, const py::object& tangents, const std::string& who) {
    Array t = real_array(tangents, who.c_str());
    const std::size_t n_in = tape.inputs().size();
    if (!t || t.ndim() != 2 || static_cast<std::size_t>(t.shape(0)) != tape.batch() ||
        static_cast<std::size_t>(t.shape(1)) != n_in) {
        throw py::value_error(who + " expects tangents of shape (" + std::to_string(tape.batch()) + ", " +
                              std::to_string(n_in) + "), one direction per sample");
    }
    return t;
}

}  // namespace

void bind_replay(py::module_& m) {
    py::class_<BoundTape>(m, "Tape", R"doc(
A recorded graph, replayed in native code.

Tape(root, inputs=()) records the graph below ``root``. ``inputs`` are leaves of that graph
whose values each replay supplies; every other leaf (parameters, constants) is read from its
Value at replay time, so parameter updates are seen. The tape owns its graph: it stays alive
and unchanged while the tape lives, even if every Python handle is dropped.

``root`` may be a list of Values (a gradient from ``arenagrad.grad(..., create_graph=True)``, a
Jacobian's rows): the tape then has several roots sharing one order, forward() and jvp() return
one value per root, and backward() takes one seed per root.

Only what was recorded replays: a Python-level branch on ``.data`` was decided once, when the
graph was built. Ops whose derivative depends on the data (relu, abs) are re-evaluated and
are exact on every replay.
)doc")
        .def(py::init([](py::handle root, const py::iterable& inputs) {
                 std::vector<py::object> keep;
                 std::vector<NodeId> ids = nodes_arg(inputs, "inputs", keep);
                 NodeId single = 0;
                 if (node_of(root.ptr(), &single)) {
                     return std::make_unique<BoundTape>(arena(), single, std::move(ids));
                 }
                 if (!py::isinstance<py::iterable>(root) || py::isinstance<py::str>(root)) {
                     throw py::type_error("root must be an arenagrad.Value or a sequence of them, not " +
                                          std::string(Py_TYPE(root.ptr())->tp_name));
                 }
                 std::vector<NodeId> roots = nodes_arg(py::reinterpret_borrow<py::iterable>(root), "root", keep);
                 if (roots.empty()) throw py::value_error("root is empty: give at least one Value");
                 auto tape = std::make_unique<BoundTape>(arena(), std::move(roots), std::move(ids));
                 tape->several = true;
                 return tape;
             }),
             py::arg("root"), py::arg("inputs") = py::tuple())
        .def(
            "forward",
            [](BoundTape& tape, const py::object& inputs) -> py::object {
                Array values = inputs.is_none() ? Array(0) : real_array(inputs, "forward()");
                if (!values || values.ndim() != 1) throw py::type_error("forward() expects a 1-d sequence of numbers");
                if (static_cast<std::size_t>(values.size()) != tape.inputs().size()) {
                    throw py::value_error("forward() expects " + std::to_string(tape.inputs().size()) +
                                          " input values, got " + std::to_string(values.size()));
                }
                ReplayError error;
                if (!tape.forward(values.data(), error)) raise_replay_error(error, false);
                if (!tape.several) return py::float_(arena().value(tape.root()));
                Array out(static_cast<py::ssize_t>(tape.roots().size()));
                for (std::size_t k = 0; k < tape.roots().size(); ++k) out.mutable_data()[k] = arena().value(tape.roots()[k]);
                return out;
            },
            py::arg("inputs") = py::none(),
            "Writes the inputs into their leaves, recomputes every node in place and returns the root's "
            "value (an array of the roots' values for a tape of several): equal, bit for bit, to building "
            "the graph again with those values.")
        .def(
            "jvp",
            [](BoundTape& tape, const py::object& tangents) -> py::object {
                Array t = real_array(tangents, "jvp()");
                if (t.ndim() != 1 || static_cast<std::size_t>(t.size()) != tape.inputs().size()) {
                    throw py::value_error("jvp() expects " + std::to_string(tape.inputs().size()) +
                                          " tangents, one per input");
                }
                Array out(static_cast<py::ssize_t>(tape.roots().size()));
                tape.jvp(t.data(), out.mutable_data());
                if (!tape.several) return py::float_(out.data()[0]);
                return out;
            },
            py::arg("tangents"),
            "Forward mode: the directional derivative of the root (of each root) along `tangents` (one per "
            "input) at the graph's current values (those of the last forward(), or of recording). Inputs "
            "whose tangent is 0 are inactive: their infinite or NaN partials do not reach the result (JAX's "
            "symbolic zeros). On a tape of a recorded gradient this is a Hessian-vector product.")
        .def(
            "backward",
            [](BoundTape& tape, const py::object& seeds) {
                if (seeds.is_none()) {
                    if (tape.several) throw py::value_error("backward() of a tape of several roots needs seeds, one per root");
                    tape.backward();
                    return;
                }
                Array s = real_array(seeds, "backward()");
                if (s.ndim() != 1 || static_cast<std::size_t>(s.size()) != tape.roots().size()) {
                    throw py::value_error("backward() expects " + std::to_string(tape.roots().size()) +
                                          " seeds, one per root");
                }
                tape.backward(s.data());
            },
            py::arg("seeds") = py::none(),
            "root.backward() along the recorded order: fresh grads for the graph's nodes, accumulated "
            "grads for its leaves. With seeds (one per root), the backward of sum(seeds[k] * roots[k]).")
        .def(
            "forward_batch",
            [](BoundTape& tape, const py::object& x, const std::string& errors) {
                if (errors != "raise" && errors != "nan") {
                    throw py::value_error("errors must be 'raise' or 'nan', not '" + errors + "'");
                }
                Array batch = real_array(x, "forward_batch()");
                const std::size_t n_in = tape.inputs().size();
                if (!batch || batch.ndim() != 2 || static_cast<std::size_t>(batch.shape(1)) != n_in ||
                    batch.shape(0) < 1) {
                    throw py::value_error("forward_batch() expects a 2-d array of shape (batch, " + std::to_string(n_in) +
                                          ") with batch >= 1");
                }
                const auto n = static_cast<std::size_t>(batch.shape(0));
                const auto n_roots = static_cast<py::ssize_t>(tape.roots().size());
                Array out = tape.several ? Array({static_cast<py::ssize_t>(n), n_roots})
                                         : Array(static_cast<py::ssize_t>(n));
                ReplayError error;
                bool ok = false;
                try {
                    ok = tape.forward_batch(batch.data(), n, out.mutable_data(), error,
                                            errors == "nan" ? Tape::OnError::Nan : Tape::OnError::Raise);
                } catch (const std::length_error& e) {  // too large to index is too large to allocate
                    PyErr_SetString(PyExc_MemoryError, e.what());
                    throw py::error_already_set();
                }
                if (!ok) raise_replay_error(error, true);
                return out;
            },
            py::arg("x"), py::kw_only(), py::arg("errors") = "raise",
            "Evaluates the graph for every row of x (one sample per row, one column per input) and returns "
            "the root's value for each sample (shape (batch, roots) for a tape of several). A sample an op "
            "fails on (log of a negative number, division by zero) raises, naming the sample; with "
            "errors='nan' its outputs are NaN instead, the rest of the batch goes on, `failed` lists it, "
            "and backward_batch leaves it out of the parameters' gradients.")
        .def_property_readonly(
            "failed",
            [](const BoundTape& tape) {
                const auto& f = tape.failed();
                py::array_t<std::int64_t> out(static_cast<py::ssize_t>(f.size()));
                std::copy(f.begin(), f.end(), out.mutable_data());
                return out;
            },
            "The samples (indexes, ascending) whose outputs the last forward_batch(errors='nan') set to NaN.")
        .def(
            "backward_batch",
            [](BoundTape& tape, const py::object& seed, const std::string& reduce, const py::object& params,
               bool input_grads) -> py::object {
                if (reduce != "sum" && reduce != "none") {
                    throw py::value_error("reduce must be 'sum' or 'none', not '" + reduce + "'");
                }
                std::vector<NodeId> wrt;
                std::vector<py::object> keep;
                if (reduce == "none") {
                    if (params.is_none()) {
                        throw py::value_error("backward_batch(reduce='none') needs params=[...]: the Values whose "
                                              "per-sample gradients to return, e.g. model.parameters()");
                    }
                    wrt = nodes_arg(py::reinterpret_borrow<py::iterable>(params), "params", keep);
                } else if (!params.is_none()) {
                    throw py::value_error("params is for reduce='none'; with reduce='sum' gradients go to .grad");
                }
                if (!input_grads && reduce == "none") {
                    throw py::value_error("input_grads=False is for reduce='sum'; with reduce='none' the result is "
                                          "the per-sample gradients of params");
                }
                if (tape.batch() == 0) throw py::value_error("backward_batch() needs forward_batch() first");
                const std::vector<double> seeds = batch_seeds(tape, seed, "backward_batch()");
                const double* seed_data = seeds.empty() ? nullptr : seeds.data();
                const auto batch = static_cast<py::ssize_t>(tape.batch());
                if (reduce == "none") {
                    Array per_sample({batch, static_cast<py::ssize_t>(wrt.size())});
                    try {
                        tape.backward_batch_per_sample(seed_data, wrt, per_sample.mutable_data());
                    } catch (const std::logic_error& e) {
                        throw py::value_error(e.what());
                    }
                    return per_sample;
                }
                std::optional<Array> grads;
                const auto n_in = static_cast<py::ssize_t>(tape.inputs().size());
                if (input_grads) grads.emplace(std::vector<py::ssize_t>{batch, n_in});
                try {
                    tape.backward_batch(seed_data, grads ? grads->mutable_data() : nullptr);
                } catch (const std::logic_error& e) {
                    throw py::value_error(e.what());
                }
                if (!grads) return py::none();
                return std::move(*grads);
            },
            py::arg("seed") = py::none(), py::kw_only(), py::arg("reduce") = "sum", py::arg("params") = py::none(),
            py::arg("input_grads").noconvert() = true,
            "Backpropagates every sample at once, seeding each sample's root grad with `seed` (1 by "
            "default; e.g. 1/batch for a mean; shape (batch, roots) for a tape of several). Adds the "
            "batch-summed grads of the shared leaves (parameters) into their .grad and returns "
            "d(root)/d(inputs), shape (batch, inputs). With reduce='none', .grad is left alone and the "
            "result is the per-sample gradients of `params` instead, shape (batch, len(params)): row s is "
            "what backward() of sample s alone gives each param (a leaf or a node of the graph; 0 for a Value "
            "the graph does not read). "
            "Samples that failed in forward_batch(errors='nan') add nothing to .grad; their rows are NaN. "
            "input_grads=False (reduce='sum' only) skips d(root)/d(inputs) and returns None: a training step "
            "needs only the parameters' .grad, and the inputs' gradients cost a pass over the first layer.")
        .def(
            "jvp_batch",
            [](BoundTape& tape, const py::object& tangents) {
                if (tape.batch() == 0) throw py::value_error("jvp_batch() needs forward_batch() first");
                Array t = batch_tangents(tape, tangents, "jvp_batch()");
                const auto n_roots = static_cast<py::ssize_t>(tape.roots().size());
                const auto batch = static_cast<py::ssize_t>(tape.batch());
                Array out = tape.several ? Array({batch, n_roots}) : Array(batch);
                try {
                    tape.jvp_batch(t.data(), out.mutable_data());
                } catch (const std::logic_error& e) {
                    throw py::value_error(e.what());
                }
                return out;
            },
            py::arg("tangents"),
            "Forward mode for every sample of the last forward_batch() at once: row s of `tangents` is the "
            "direction for sample s. With every sample at one point and the identity as tangents, a whole "
            "Jacobian (on a tape of a recorded gradient: a Hessian) in one call.")
        .def(
            "hvp_batch",
            [](BoundTape& tape, const py::object& tangents, const py::object& seed, const py::object& params,
               const py::object& param_tangents) -> py::object {
                if (tape.batch() == 0) throw py::value_error("hvp_batch() needs forward_batch() first");
                const std::size_t batch = tape.batch();
                const std::size_t n_in = tape.inputs().size();
                // Several directions (k of them) when param_tangents has rows or tangents has blocks.
                const bool have_v = !param_tangents.is_none();
                const bool have_t = !tangents.is_none();
                Array v;
                if (have_v) {
                    if (params.is_none()) {
                        throw py::value_error("hvp_batch(): param_tangents needs params=[...], the Values they belong to");
                    }
                    v = real_array(param_tangents, "hvp_batch()");
                }
                Array t;
                if (have_t) t = real_array(tangents, "hvp_batch()");
                const bool several = (have_v && v.ndim() == 2) || (have_t && t.ndim() == 3);
                std::size_t k = 1;
                if (several) k = static_cast<std::size_t>(have_v && v.ndim() == 2 ? v.shape(0) : t.shape(0));
                const std::string shape_k = several ? std::to_string(k) + ", " : "";
                if (have_t) {
                    const bool ok = several ? t.ndim() == 3 && static_cast<std::size_t>(t.shape(0)) == k &&
                                                  static_cast<std::size_t>(t.shape(1)) == batch &&
                                                  static_cast<std::size_t>(t.shape(2)) == n_in
                                            : t.ndim() == 2 && static_cast<std::size_t>(t.shape(0)) == batch &&
                                                  static_cast<std::size_t>(t.shape(1)) == n_in;
                    if (!ok) {
                        throw py::value_error("hvp_batch() expects tangents of shape (" + shape_k +
                                              std::to_string(batch) + ", " + std::to_string(n_in) + ")" +
                                              (several ? ": one block of rows per direction, a direction per sample"
                                                       : ", one direction per sample") + ", or None");
                    }
                }
                const std::vector<double> seeds = batch_seeds(tape, seed, "hvp_batch()");
                // Each param's shared leaf (or none: a Value the graph does not read, whose results are 0).
                std::vector<std::size_t> slot;
                const std::size_t n_shared = tape.num_shared_leaves();
                std::vector<double> shared_tangents;
                if (!params.is_none()) {
                    std::vector<py::object> keep;
                    const std::vector<NodeId> wrt =
                        nodes_arg(py::reinterpret_borrow<py::iterable>(params), "params", keep);
                    std::vector<char> taken(n_shared, 0);
                    for (const NodeId id : wrt) {
                        const std::size_t j = tape.shared_leaf_index(id);
                        if (j == n_shared && tape.is_input(id)) {
                            throw py::value_error("hvp_batch(): a Value in params is an input of the tape; its "
                                                  "tangents go in `tangents`, one per sample");
                        }
                        if (j < n_shared && taken[j]++ != 0) {
                            throw py::value_error("hvp_batch(): params holds the same Value twice");
                        }
                        slot.push_back(j);
                    }
                    shared_tangents.assign(k * n_shared, 0.0);
                    if (have_v) {
                        const bool ok = several ? v.ndim() == 2 && static_cast<std::size_t>(v.shape(0)) == k &&
                                                      static_cast<std::size_t>(v.shape(1)) == wrt.size()
                                                : v.ndim() == 1 && static_cast<std::size_t>(v.size()) == wrt.size();
                        if (!ok) {
                            throw py::value_error("hvp_batch() expects param_tangents of shape (" + shape_k +
                                                  std::to_string(wrt.size()) + (several ? ")" : ",)") +
                                                  ", one per Value of params" + (several ? " and direction" : ""));
                        }
                        for (std::size_t d = 0; d < k; ++d) {
                            for (std::size_t p = 0; p < slot.size(); ++p) {
                                if (slot[p] >= n_shared) continue;  // a Value the graph does not read
                                shared_tangents[d * n_shared + slot[p]] = v.data()[d * slot.size() + p];
                            }
                        }
                    }
                }
                std::vector<py::ssize_t> out_shape{static_cast<py::ssize_t>(batch), static_cast<py::ssize_t>(n_in)};
                if (several) out_shape.insert(out_shape.begin(), static_cast<py::ssize_t>(k));
                Array out(out_shape);
                std::vector<double> shared_out(k * n_shared, 0.0);
                const double* shared_in = shared_tangents.empty() ? nullptr : shared_tangents.data();
                const double* seed_data = seeds.empty() ? nullptr : seeds.data();
                try {
                    if (several) {
                        tape.hvp_directions(k, have_t ? t.data() : nullptr, seed_data, out.mutable_data(), shared_in,
                                            shared_out.data());
                    } else {
                        const std::vector<double> zeros(have_t ? 0 : batch * n_in, 0.0);
                        tape.hvp_batch(have_t ? t.data() : zeros.data(), seed_data, out.mutable_data(), shared_in,
                                       shared_out.data());
                    }
                } catch (const std::logic_error& e) {
                    throw py::value_error(e.what());
                }
                if (params.is_none()) return std::move(out);
                std::vector<py::ssize_t> summed_shape{static_cast<py::ssize_t>(slot.size())};
                if (several) summed_shape.insert(summed_shape.begin(), static_cast<py::ssize_t>(k));
                Array summed(summed_shape);
                for (std::size_t d = 0; d < k; ++d) {
                    for (std::size_t p = 0; p < slot.size(); ++p) {
                        summed.mutable_data()[d * slot.size() + p] =
                            slot[p] < n_shared ? shared_out[d * n_shared + slot[p]] : 0.0;
                    }
                }
                return py::make_tuple(out, summed);
            },
            py::arg("tangents") = py::none(), py::arg("seed") = py::none(), py::kw_only(),
            py::arg("params") = py::none(), py::arg("param_tangents") = py::none(),
            "Hessian-vector products for every sample of the last forward_batch() at once (forward over "
            "reverse): row s is H_s @ tangents[s], where H_s is the Hessian, w.r.t. the inputs, of sample "
            "s's root (of sum_k seed[s, k] * roots[k] for a tape of several; `seed` as for "
            "backward_batch). The backward pass runs in dual numbers from the op table; no gradient graph "
            "is recorded. Shape (batch, inputs); rows of failed samples are NaN. tangents=None: zero.\n\n"
            "Shared leaves (parameters) are constants unless given in `params`: then `param_tangents` (one "
            "each, 0 by default) is their part of the direction, the same for every sample, and the result "
            "is a pair (that array, the derivative of their gradients summed over the samples, as "
            "backward_batch sums gradients into .grad, failed samples left out). With the tangents on the "
            "parameters only, the second is the batch loss's Hessian-vector product.\n\n"
            "Several directions in one call: param_tangents of shape (k, len(params)) and/or tangents of "
            "shape (k, batch, inputs) give k products, the results stacked along a first axis of k; "
            "param_tangents=numpy.eye(len(params)) gives the batch loss's Hessian. The directions run side "
            "by side in the lanes of one sweep (much faster than k calls); each one's rows equal its own "
            "call's wherever the partials are finite, its sums agree to rounding.")
        .def(
            "batch_values",
            [](BoundTape& tape, py::handle value) {
                const NodeId id = node_arg(value, "value");
                if (tape.is_shared_leaf(id)) {
                    throw py::value_error("no batch values: this Value is a shared leaf of the graph (a parameter or "
                                          "a constant), not an input, so it has one value for every sample; read "
                                          "its .data");
                }
                if (tape.batch() == 0) throw py::value_error("no batch values: run forward_batch() first");
                const double* row = tape.batch_values(id);
                if (row == nullptr) {
                    throw py::value_error("no batch values: the Value is not part of the recorded graph, or the "
                                          "last forward_batch() failed");
                }
                Array values = copy_row(row, tape.batch());
                for (const std::size_t s : tape.failed()) {  // as forward_batch returns them
                    values.mutable_data()[s] = std::numeric_limits<double>::quiet_NaN();
                }
                return values;
            },
            py::arg("value"), "The values a node of the graph took for each sample of the last forward_batch().")
        .def_property_readonly("root", [](const BoundTape& tape) { return value_handle(tape.root()); },
                               "The root (the first root of a tape of several).")
        .def_property_readonly("roots",
                               [](const BoundTape& tape) {
                                   py::list out;
                                   for (const NodeId id : tape.roots()) out.append(value_handle(id));
                                   return out;
                               })
        .def_property_readonly("inputs",
                               [](const BoundTape& tape) {
                                   py::list out;
                                   for (const NodeId id : tape.inputs()) out.append(value_handle(id));
                                   return out;
                               })
        .def_property_readonly("num_nodes", &BoundTape::num_nodes, "Non-leaf nodes in the recorded graph.")
        .def_property_readonly(
            "batch_bytes_per_sample", [](const BoundTape& tape) { return 8 * tape.stored_rows(); },
            "Bytes per sample that batched replay keeps between forward_batch and backward_batch (0 before "
            "the first forward_batch): 8 for each node whose values something later reads (an input, a "
            "root, a value some derivative needs, a node asked of batch_values). Every other node's values, "
            "and every gradient, live only while its tile of 256 samples runs, in per-thread buffers.")
        .def_property_readonly("num_leaves", &BoundTape::num_leaves, "Leaves of the recorded graph, inputs included.");

    py::class_<ParamGroup>(m, "ParamGroup", R"doc(
Parameters updated in bulk in native code, with PyTorch's SGD and Adam formulas.

ParamGroup(params) keeps its parameters alive; .data and .grad read all of them as one array.
)doc")
        .def(py::init([](const py::iterable& params) {
                 std::vector<py::object> keep;
                 std::vector<NodeId> ids = nodes_arg(params, "params", keep);
                 return std::make_unique<ParamGroup>(arena(), std::move(ids));
             }),
             py::arg("params"))
        .def("__len__", &ParamGroup::size)
        .def("zero_grad", &ParamGroup::zero_grad)
        .def("sgd_step", &ParamGroup::sgd_step, py::arg("lr"), py::arg("momentum") = 0.0, py::arg("dampening") = 0.0,
             py::arg("weight_decay") = 0.0, py::arg("nesterov") = false)
        .def("adam_step", &ParamGroup::adam_step, py::arg("lr"), py::arg("beta1") = 0.9, py::arg("beta2") = 0.999,
             py::arg("eps") = 1e-8, py::arg("weight_decay") = 0.0)
        .def_property(
            "data",
            [](const ParamGroup& g) {
                Array out(static_cast<py::ssize_t>(g.size()));
                g.get_data(out.mutable_data());
                return out;
            },
            [](ParamGroup& g, const py::object& values) {
                Array v = real_array(values, "ParamGroup.data");
                if (!v || v.ndim() != 1 || static_cast<std::size_t>(v.size()) != g.size()) {
                    throw py::value_error("ParamGroup.data expects " + std::to_string(g.size()) + " values");
                }
                g.set_data(v.data());
            })
        .def_property_readonly("grad", [](const ParamGroup& g) {
            Array out(static_cast<py::ssize_t>(g.size()));
            g.get_grad(out.mutable_data());
            return out;
        });
}

}  // namespace arenagrad::binding
