// The native side of ops written in Python (arenagrad.custom_op): a CustomFunction (cpp/custom.hpp)
// that calls back into Python. Checking what the user's function returns is done in Python
// (python/arenagrad/custom.py), which hands this file callables that return checked numbers.
#include "custom_op.hpp"

#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "arena.hpp"
#include "value_type.hpp"

namespace py = pybind11;

namespace arenagrad::binding {

namespace {

class PyCustomFunction : public CustomFunction {
  public:
    // evaluate(*floats) -> (float, list[float]); graph_partials(*Values) -> list[Value], or None.
    PyCustomFunction(py::object evaluate, py::object graph_partials, std::string name)
        : evaluate_(std::move(evaluate)), graph_partials_(std::move(graph_partials)), name_(std::move(name)) {}

    const std::string& name() const override { return name_; }

    double evaluate(const double* x, std::size_t n, double* partials) override {
        try {
            py::tuple args(n);
            for (std::size_t i = 0; i < n; ++i) args[i] = py::float_(x[i]);
            const auto result = evaluate_(*args).cast<std::pair<double, std::vector<double>>>();
            for (std::size_t i = 0; i < n; ++i) partials[i] = result.second.at(i);
            return result.first;
        } catch (py::error_already_set& e) {
            e.restore();  // pending in Python again; the caller re-raises it
            throw ForeignError();
        }
    }

    bool has_graph_partials() const override { return !graph_partials_.is_none(); }

    void graph_partials(Arena& arena, const NodeId* x, std::size_t n, NodeId* out) override {
        try {
            py::tuple args(n);
            for (std::size_t i = 0; i < n; ++i) {
                PyObject* h = handle_for(x[i]);
                if (h == nullptr) throw py::error_already_set();
                args[i] = py::reinterpret_steal<py::object>(h);
            }
            const py::list result = graph_partials_(*args);
            for (std::size_t i = 0; i < n; ++i) {
                NodeId id = 0;
                if (!node_of(py::object(result[i]).ptr(), &id)) throw py::type_error("graph_partials must return Values");
                arena.retain(id);
                out[i] = id;
            }
        } catch (py::error_already_set& e) {
            e.restore();
            throw ForeignError();
        } catch (py::builtin_exception& e) {
            e.set_error();
            throw ForeignError();
        }
    }

    // The Python objects it holds, for the cyclic collector (see bind_custom_op).
    int traverse(visitproc visit, void* arg) const {
        Py_VISIT(evaluate_.ptr());
        Py_VISIT(graph_partials_.ptr());
        return 0;
    }
    void clear() {
        evaluate_ = py::none();
        graph_partials_ = py::none();
    }

  private:
    py::object evaluate_;
    py::object graph_partials_;
    std::string name_;
};

// The function owned by this Python object alone (no node of the arena uses it), or null: only then are
// its references the object's to report. While a node uses it, it is reachable from outside any cycle the
// collector could see, so it is not garbage, and clearing it would break that node's replays.
// Read through the holder itself: nothing here may throw or touch Python objects (the collector calls it).
PyCustomFunction* owned_alone(PyObject* self) {
    if (!py::detail::is_holder_constructed(self)) return nullptr;
    auto v_h = reinterpret_cast<py::detail::instance*>(self)->get_value_and_holder();
    const auto& held = v_h.holder<std::shared_ptr<PyCustomFunction>>();
    return held.use_count() == 1 ? held.get() : nullptr;
}

}  // namespace

void bind_custom_op(py::module_& m) {
    // A CustomOp holds its _CustomFunction, which holds the user's function; when that function is a bound
    // method of an object that holds the CustomOp, the three make a cycle, which the collector frees only
    // if this type reports what it holds (Py_TPFLAGS_HAVE_GC, as pybind11's docs show).
    py::class_<PyCustomFunction, std::shared_ptr<PyCustomFunction>>(
        m, "_CustomFunction", py::custom_type_setup([](PyHeapTypeObject* heap_type) {
            PyTypeObject* type = &heap_type->ht_type;
            type->tp_flags |= Py_TPFLAGS_HAVE_GC;
            type->tp_traverse = [](PyObject* self, visitproc visit, void* arg) {
                Py_VISIT(Py_TYPE(self));
                const PyCustomFunction* f = owned_alone(self);
                return f != nullptr ? f->traverse(visit, arg) : 0;
            };
            type->tp_clear = [](PyObject* self) {
                if (PyCustomFunction* f = owned_alone(self)) f->clear();
                return 0;
            };
        }))
        .def(py::init<py::object, py::object, std::string>(), py::arg("evaluate"), py::arg("graph_partials"),
             py::arg("name"))
        .def(
            "apply",
            [](std::shared_ptr<PyCustomFunction> self, const py::list& inputs, double value,
               const std::vector<double>& partials) {
                std::vector<NodeId> xs;
                for (py::handle v : inputs) {
                    NodeId id = 0;
                    if (!node_of(v.ptr(), &id)) throw py::type_error("custom op inputs must be Values");
                    xs.push_back(id);
                }
                if (xs.empty() || partials.size() != xs.size()) {
                    throw py::value_error("a custom op needs one partial per input, and at least one input");
                }
                const NodeId id = arena().custom(self, xs.data(), partials.data(), xs.size(), value);
                PyObject* h = handle_for(id);
                arena().release(id);
                if (h == nullptr) throw py::error_already_set();
                return py::reinterpret_steal<py::object>(h);
            },
            py::arg("inputs"), py::arg("value"), py::arg("partials"),
            "A new node: the op applied to inputs, with its value and partials already computed.")
        .def_property_readonly("name", [](const PyCustomFunction& f) { return f.name(); });
}

}  // namespace arenagrad::binding
