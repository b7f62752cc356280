// The Python Value type: a handle to one arena node.
//
// It is written against the CPython API rather than pybind11 because every arithmetic operator
// goes through it: the number slots are called by the interpreter directly, with no overload
// resolution and no argument casting, and the object is 32 bytes that the cyclic garbage
// collector never has to look at (handles own arena nodes, never other Python objects).
#pragma once

#include <Python.h>

#include <string>

#include "arena.hpp"

namespace arenagrad::binding {

// The one arena behind every Value of this process. The GIL serialises access to it.
Arena& arena();

// Readies the Value type and adds Value, sum and dot to the module. False with a Python
// exception set on failure.
bool add_value_type(PyObject* module);

// A new reference to the (unique) Python handle of a node, creating one if it has none.
PyObject* handle_for(NodeId id);

// Heap bytes of the node -> handle table (8 per slot), which lives here, outside the arena.
std::size_t handle_table_bytes();

// The node of a Value, or false if obj is not a Value.
bool node_of(PyObject* obj, NodeId* id);

// --- shared with the Dual type (dual_type.cpp), so both types read numbers and report errors alike ---

enum class Conversion { Number, NotANumber, Error };

// Python's rule for "a real number", without float()'s parsing of strings: float and int
// (bool included) directly, then anything registered as numbers.Real (numpy scalars, Fraction).
// Needs add_value_type to have run (it looks numbers.Real up).
Conversion to_double(PyObject* obj, double* out);

// "int", "str", or "arenagrad.reference.Value": enough to tell another engine's Value from ours.
std::string type_name(PyObject* obj);

// repr() of a float: "1.0", "inf", "1e-300".
std::string repr(double x);

// Whether an op of the table is a method (v.exp()): the unary ops, except neg, which is spelled -v.
constexpr bool is_method(Op op, int arity) { return arity == 1 && op != Op::Neg; }

// Sets the Python exception an op's forward Status stands for (ZeroDivisionError, ValueError,
// OverflowError) with a message naming the op and its operands; returns null.
PyObject* set_op_error(Status status, Op op, double a, double b);

}  // namespace arenagrad::binding
