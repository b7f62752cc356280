#pragma once

#include <pybind11/pybind11.h>

namespace arenagrad::binding {

// Adds the derivative passes of cpp/derivatives.cpp (_gradient, _tangent) to the module; the
// public API over them is python/arenagrad/autodiff.py.
void bind_derivatives(pybind11::module_& m);

}  // namespace arenagrad::binding
