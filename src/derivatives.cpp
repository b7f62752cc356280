// Bindings of the arena's derivative passes. Arguments arrive checked and normalised by
// python/arenagrad/autodiff.py: lists of Values, and seeds or tangents as floats (numbers out)
// or, with create_graph, as Values (Values out, with graphs).
#include "derivatives.hpp"

#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "node.hpp"
#include "value_type.hpp"

namespace py = pybind11;

namespace arenagrad::binding {

namespace {

std::vector<NodeId> nodes_of(const py::list& values, const char* what) {
    std::vector<NodeId> ids;
    ids.reserve(values.size());
    for (py::handle v : values) {
        NodeId id = 0;
        if (!node_of(v.ptr(), &id)) {
            throw py::type_error(std::string(what) + " must hold arenagrad.Values, not " + Py_TYPE(v.ptr())->tp_name);
        }
        ids.push_back(id);
    }
    return ids;
}

// Values for nodes the caller owns one reference to each: the handles take them over.
py::list wrap_owned(const std::vector<NodeId>& ids) {
    py::list out;
    std::size_t i = 0;
    try {
        for (; i < ids.size(); ++i) {
            PyObject* h = handle_for(ids[i]);
            arena().release(ids[i]);
            if (h == nullptr) throw py::error_already_set();
            out.append(py::reinterpret_steal<py::object>(h));
        }
    } catch (...) {
        for (++i; i < ids.size(); ++i) arena().release(ids[i]);
        throw;
    }
    return out;
}

// A recorded op failed: the same exception the op raises on Values.
[[noreturn]] void raise_record_error(const RecordError& e) {
    set_op_error(e.status, e.op, e.a, e.b);
    throw py::error_already_set();
}

}  // namespace

void bind_derivatives(py::module_& m) {
    m.def(
        "_gradient",
        [](const py::list& roots, const py::list& seeds, const py::list& inputs, bool create_graph) {
            const std::vector<NodeId> r = nodes_of(roots, "outputs");
            const std::vector<NodeId> x = nodes_of(inputs, "inputs");
            if (!create_graph) {
                std::vector<double> s = seeds.cast<std::vector<double>>();
                std::vector<double> out;
                arena().gradient(r, s, x, out);
                return py::list(py::cast(out));
            }
            std::vector<NodeId> out;
            try {
                arena().gradient_graph(r, nodes_of(seeds, "grad_outputs"), x, out);
            } catch (const RecordError& e) {
                raise_record_error(e);
            }
            return wrap_owned(out);
        },
        py::arg("roots"), py::arg("seeds"), py::arg("inputs"), py::arg("create_graph"),
        "Reverse mode without touching .grad: see arenagrad.grad.");
    m.def(
        "_tangent",
        [](const py::list& inputs, const py::list& tangents, const py::list& outputs, bool create_graph) {
            const std::vector<NodeId> x = nodes_of(inputs, "inputs");
            const std::vector<NodeId> y = nodes_of(outputs, "outputs");
            try {
                if (!create_graph) {
                    std::vector<double> out;
                    arena().tangent(x, tangents.cast<std::vector<double>>(), y, out);
                    return py::list(py::cast(out));
                }
                std::vector<NodeId> out;
                arena().tangent_graph(x, nodes_of(tangents, "tangents"), y, out);
                return wrap_owned(out);
            } catch (const RecordError& e) {
                raise_record_error(e);
            } catch (const std::invalid_argument& e) {
                throw py::value_error(e.what());
            }
        },
        py::arg("inputs"), py::arg("tangents"), py::arg("outputs"), py::arg("create_graph"),
        "Forward mode: the derivatives of outputs along tangents of inputs; see arenagrad.func.jvp.");
}

}  // namespace arenagrad::binding
