// The Python Dual type: dual numbers real + dual*eps (eps**2 = 0), forward-mode derivatives with
// no graph at all.
//
// Like Value it is written against the CPython API, so the interpreter calls its number slots
// directly; unlike Value it records nothing, so an op is one forward rule and one tangent update
// on numbers the object holds itself. Both come from the op table (cpp/ops.hpp): the tangent is
// the rule's vector-Jacobian product applied to each input's tangent, which is the Jacobian-vector
// product because a vjp is linear in g.
#pragma once

#include <Python.h>

namespace arenagrad::binding {

// Readies the Dual type and adds it to the module. Call it after add_value_type, whose number
// conversion and error messages Dual shares. False with a Python exception set on failure.
bool add_dual_type(PyObject* module);

}  // namespace arenagrad::binding
