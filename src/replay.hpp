#pragma once

#include <pybind11/pybind11.h>

namespace arenagrad::binding {

// Adds Tape and ParamGroup to the module.
void bind_replay(pybind11::module_& m);

}  // namespace arenagrad::binding
