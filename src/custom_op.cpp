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

  private:
    py::object evaluate_;
    py::object graph_partials_;
    std::string name_;
};

}  // namespace

void bind_custom_op(py::module_& m) {
    py::class_<PyCustomFunction, std::shared_ptr<PyCustomFunction>>(m, "_CustomFunction")
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
