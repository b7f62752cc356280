// arenagrad._core: the only place where the C++ core meets Python.
//
// Value and Dual, whose operators are on the per-op path, live in value_type.cpp and dual_type.cpp
// (CPython API, for speed); everything called once per graph or per step is bound here with pybind11.
#include <pybind11/pybind11.h>

#include "custom_op.hpp"
#include "derivatives.hpp"
#include "dual_type.hpp"
#include "replay.hpp"
#include "row_kernels.hpp"
#include "value_type.hpp"

namespace py = pybind11;
using arenagrad::binding::arena;

PYBIND11_MODULE(_core, m) {
    m.doc() = "arenagrad's native engine: the node arena, the Value type and dual numbers.";
    if (!arenagrad::binding::add_value_type(m.ptr())) throw py::error_already_set();
    if (!arenagrad::binding::add_dual_type(m.ptr())) throw py::error_already_set();
    arenagrad::binding::bind_replay(m);
    arenagrad::binding::bind_derivatives(m);
    arenagrad::binding::bind_custom_op(m);
    // Errors that cross the core from a custom op: its own Python exception is already pending.
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const arenagrad::ForeignError&) {
            if (PyErr_Occurred() == nullptr) PyErr_SetString(PyExc_RuntimeError, "a custom op failed");
        } catch (const arenagrad::NotTwiceDifferentiable& e) {
            PyErr_SetString(PyExc_RuntimeError, e.what());
        }
    });

    m.def(
        "arena_stats",
        [] {
            const arenagrad::ArenaStats s = arena().stats();
            py::dict d;
            d["live"] = s.live;
            d["capacity"] = s.capacity;
            d["free"] = s.free;
            d["pool_used"] = s.pool_used;
            d["pool_capacity"] = s.pool_capacity;
            d["bytes"] = s.bytes;
            d["handle_table_bytes"] = arenagrad::binding::handle_table_bytes();
            d["sweeps_ordered"] = s.sweeps_ordered;
            d["sweeps_dfs"] = s.sweeps_dfs;
            return d;
        },
        "Counts of the process-wide node arena: live nodes, slots (capacity), free slots, child-pool "
        "entries in use and allocated, the heap bytes its arrays hold (and, separately, the binding's "
        "node-to-handle table), and how many backward passes took the "
        "one-pass id-ordered sweep or needed a depth-first search.");
    m.def(
        "simd_target", [] { return arenagrad::kernels::simd_target(); },
        "The instruction set batched replay's kernels run with here: 'avx2' where the CPU has it, else "
        "'baseline' (ARENAGRAD_SIMD=baseline in the environment forces it). Results are the same bits.");
}
