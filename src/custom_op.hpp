#pragma once

#include <pybind11/pybind11.h>

namespace arenagrad::binding {

// Adds _CustomFunction, the native side of arenagrad.custom_op (python/arenagrad/custom.py).
void bind_custom_op(pybind11::module_& m);

}  // namespace arenagrad::binding
