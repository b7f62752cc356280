#include "value_type.hpp"

#include <cmath>
#include <cstddef>
#include <exception>
#include <new>
#include <string>
#include <vector>

namespace arenagrad::binding {

namespace {

struct PyValue {
    PyObject_HEAD
    PyObject* weakrefs;
    NodeId id;
};

PyTypeObject ValueType{};  // filled in by add_value_type
PyObject* RealABC = nullptr;  // numbers.Real: accepts numpy and other registered real scalars

// handles[id] is the Python object of node id, or null. Keeping at most one handle per node
// makes identity work as in micrograd: `a in c._prev`, sets of Values and graph drawing by id().
// The pointers are borrowed: a handle clears its entry when it dies.
std::vector<PyObject*>& handles() {
    static auto* table = new std::vector<PyObject*>();  // never destroyed: handles may outlive statics
    return *table;
}

inline PyValue* as_value(PyObject* obj) { return reinterpret_cast<PyValue*>(obj); }
inline bool is_value(PyObject* obj) { return Py_TYPE(obj) == &ValueType; }

// Converts any C++ exception escaping the arena (only allocation failures can) into MemoryError.
void set_memory_error(const std::exception& e) { PyErr_SetString(PyExc_MemoryError, e.what()); }

// Wraps a node the caller owns one reference to; the new handle takes that reference over.
PyObject* wrap_new(NodeId id) {
    auto& table = handles();
    try {
        if (id >= table.size()) table.resize(static_cast<std::size_t>(id) + 1, nullptr);
    } catch (const std::exception& e) {
        arena().release(id);
        set_memory_error(e);
        return nullptr;
    }
    PyValue* self = PyObject_New(PyValue, &ValueType);
    if (self == nullptr) {
        arena().release(id);
        return nullptr;
    }
    self->weakrefs = nullptr;
    self->id = id;
    table[id] = reinterpret_cast<PyObject*>(self);
    return reinterpret_cast<PyObject*>(self);
}

}  // namespace

// type_name, to_double and repr are shared with the Dual type (see value_type.hpp).
std::string type_name(PyObject* obj) {
    PyObject* type = reinterpret_cast<PyObject*>(Py_TYPE(obj));
    std::string name = Py_TYPE(obj)->tp_name;
    PyObject* module = PyObject_GetAttrString(type, "__module__");
    PyObject* qualname = PyObject_GetAttrString(type, "__qualname__");
    if (module != nullptr && qualname != nullptr && PyUnicode_Check(module) && PyUnicode_Check(qualname)) {
        const char* m = PyUnicode_AsUTF8(module);
        const char* q = PyUnicode_AsUTF8(qualname);
        if (m != nullptr && q != nullptr) name = std::string(m) == "builtins" ? q : std::string(m) + "." + q;
    }
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    PyErr_Clear();  // a type without those attributes keeps its tp_name
    return name;
}

// --- numbers -------------------------------------------------------------------------------

Conversion to_double(PyObject* obj, double* out) {
    if (PyFloat_Check(obj)) {
        *out = PyFloat_AS_DOUBLE(obj);
        return Conversion::Number;
    }
    if (PyLong_Check(obj)) {
        *out = PyLong_AsDouble(obj);  // OverflowError for ints beyond float range, as float() does
        return (*out == -1.0 && PyErr_Occurred()) ? Conversion::Error : Conversion::Number;
    }
    if (is_value(obj)) return Conversion::NotANumber;
    const int real = PyObject_IsInstance(obj, RealABC);
    if (real < 0) return Conversion::Error;
    if (real == 0) return Conversion::NotANumber;
    *out = PyFloat_AsDouble(obj);
    return (*out == -1.0 && PyErr_Occurred()) ? Conversion::Error : Conversion::Number;
}

std::string repr(double x) {
    char* text = PyOS_double_to_string(x, 'r', 0, Py_DTSF_ADD_DOT_0, nullptr);
    if (text == nullptr) return "?";
    std::string s(text);
    PyMem_Free(text);
    return s;
}

namespace {

// The exponent as micrograd's f'**{other}' shows the usual int exponents: "**2", "**-1", "**0.5".
std::string exponent_text(double k) {
    std::string text = repr(k);
    if (text.size() > 2 && text.compare(text.size() - 2, 2, ".0") == 0) text.resize(text.size() - 2);
    return text;
}

// An operand of a binary op: an existing node, or a constant leaf made for a plain number.
struct Operand {
    NodeId id = 0;
    bool temporary = false;  // we made the constant and hold its only reference
    double number = 0.0;
};

// Makes the constant leaves once both operands are known to be valid, so a rejected op never
// touches the arena. Returns 1, 0 for NotImplemented, or -1 with an exception set.
int resolve(PyObject* x, PyObject* y, Operand& a, Operand& b) {
    Operand* ops[2] = {&a, &b};
    PyObject* objs[2] = {x, y};
    for (int i = 0; i < 2; ++i) {
        if (is_value(objs[i])) {
            ops[i]->id = as_value(objs[i])->id;
            continue;
        }
        const Conversion c = to_double(objs[i], &ops[i]->number);
        if (c == Conversion::Error) return -1;
        if (c == Conversion::NotANumber) return 0;
        ops[i]->temporary = true;
    }
    int made = 0;
    try {
        for (Operand* op : ops) {
            if (op->temporary) op->id = arena().leaf(op->number);
            ++made;
        }
    } catch (const std::exception& e) {
        if (made == 1 && a.temporary) arena().release(a.id);
        set_memory_error(e);
        return -1;
    }
    return 1;
}

void drop(const Operand& o) {
    if (o.temporary) arena().release(o.id);
}

PyObject* binary(Op op, PyObject* x, PyObject* y) {
    Operand a, b;
    const int r = resolve(x, y, a, b);
    if (r < 0) return nullptr;
    if (r == 0) {
        // Raise here rather than return NotImplemented: otherwise another engine's reflected
        // operator (micrograd's, say) would wrap this Value as if it were a number.
        PyObject* other = is_value(x) ? y : x;
        return PyErr_Format(PyExc_TypeError,
                            "unsupported operand for %s: %s; expected a real number or an arenagrad.Value "
                            "(Values of other engines do not mix)",
                            op == Op::PowConst ? "**" : op_name(op), type_name(other).c_str());
    }
    NodeId out = 0;
    Status status;
    try {
        status = arena().apply(op, a.id, b.id, &out);
    } catch (const std::exception& e) {
        drop(a);
        drop(b);
        set_memory_error(e);
        return nullptr;
    }
    const double va = arena().value(a.id);
    const double vb = arena().value(b.id);
    drop(a);  // the new node (if any) holds its own references now
    drop(b);
    if (status != Status::Ok) return set_op_error(status, op, va, vb);
    return wrap_new(out);
}

template <Op op>
PyObject* binary_slot(PyObject* x, PyObject* y) {
    return binary(op, x, y);
}

PyObject* power_slot(PyObject* x, PyObject* y, PyObject* modulo) {
    if (modulo != Py_None) {
        PyErr_SetString(PyExc_TypeError, "pow() with a modulus is not supported for Values");
        return nullptr;
    }
    // A number exponent is a constant of the op (no gradient flows to it); a Value exponent,
    // or a number base, makes the general Pow node.
    return binary(is_value(y) ? Op::Pow : Op::PowConst, x, y);
}

PyObject* unary(Op op, PyObject* self) {
    const NodeId a = as_value(self)->id;
    NodeId out = 0;
    Status status;
    try {
        status = arena().apply(op, a, a, &out);
    } catch (const std::exception& e) {
        set_memory_error(e);
        return nullptr;
    }
    if (status != Status::Ok) return set_op_error(status, op, arena().value(a), 0.0);
    return wrap_new(out);
}

template <Op op>
PyObject* unary_method(PyObject* self, PyObject* /*unused*/) {
    return unary(op, self);
}

PyObject* negative_slot(PyObject* self) { return unary(Op::Neg, self); }
PyObject* absolute_slot(PyObject* self) { return unary(Op::Abs, self); }

// --- n-ary ops -----------------------------------------------------------------------------

// Node ids of a tuple of Values and numbers; numbers become constant leaves owned by
// `temporaries`, which the caller releases once the n-ary node holds its own references. The
// tuple must be the caller's own: converting a number may run user code (__float__, an ABC
// check), which could otherwise mutate a list under us and free the Values we have read.
bool collect(PyObject* tuple, const char* what, std::vector<NodeId>& ids, std::vector<NodeId>& temporaries) {
    const Py_ssize_t n = PyTuple_GET_SIZE(tuple);
    ids.reserve(static_cast<std::size_t>(n));
    temporaries.reserve(temporaries.size() + static_cast<std::size_t>(n));  // push_back below cannot throw
    for (Py_ssize_t i = 0; i < n; ++i) {
        PyObject* item = PyTuple_GET_ITEM(tuple, i);
        if (is_value(item)) {
            ids.push_back(as_value(item)->id);
            continue;
        }
        double number = 0.0;
        const Conversion c = to_double(item, &number);
        if (c == Conversion::Error) return false;
        if (c == Conversion::NotANumber) {
            PyErr_Format(PyExc_TypeError, "%s: element %zd is %s, not an arenagrad.Value or a real number", what, i,
                         type_name(item).c_str());
            return false;
        }
        temporaries.push_back(arena().leaf(number));
        ids.push_back(temporaries.back());
    }
    return true;
}

// A tuple holding the items of any iterable (a new reference), or null with TypeError set.
PyObject* as_tuple(PyObject* values, const char* message) {
    PyObject* tuple = PySequence_Tuple(values);
    if (tuple == nullptr && PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyErr_Clear();
        PyErr_SetString(PyExc_TypeError, message);
    }
    return tuple;
}

void release_all(const std::vector<NodeId>& ids) {
    for (const NodeId id : ids) arena().release(id);
}

// One n-ary node (sum or logsumexp) over an iterable of Values and numbers.
PyObject* nary_function(Op op, PyObject* values, const char* message, const char* what) {
    PyObject* seq = as_tuple(values, message);
    if (seq == nullptr) return nullptr;
    std::vector<NodeId> ids;
    std::vector<NodeId> temporaries;
    PyObject* result = nullptr;
    try {
        if (collect(seq, what, ids, temporaries)) result = wrap_new(arena().nary(op, ids.data(), ids.size()));
    } catch (const std::exception& e) {
        set_memory_error(e);
    }
    release_all(temporaries);
    Py_DECREF(seq);
    return result;
}

PyObject* sum_function(PyObject* /*module*/, PyObject* values) {
    return nary_function(Op::Sum, values, "sum() expects an iterable of Values and numbers", "sum()");
}

PyObject* logsumexp_function(PyObject* /*module*/, PyObject* values) {
    return nary_function(Op::LogSumExp, values, "logsumexp() expects an iterable of Values and numbers",
                         "logsumexp()");
}

PyObject* dot_function(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "dot() takes 2 arguments (ws, xs), got %zd", nargs);
        return nullptr;
    }
    PyObject* ws = as_tuple(args[0], "dot() expects ws to be an iterable of Values and numbers");
    if (ws == nullptr) return nullptr;
    PyObject* xs = as_tuple(args[1], "dot() expects xs to be an iterable of Values and numbers");
    if (xs == nullptr) {
        Py_DECREF(ws);
        return nullptr;
    }
    PyObject* result = nullptr;
    const Py_ssize_t nw = PyTuple_GET_SIZE(ws);
    const Py_ssize_t nx = PyTuple_GET_SIZE(xs);
    std::vector<NodeId> wids;
    std::vector<NodeId> xids;
    std::vector<NodeId> temporaries;
    if (nw != nx) {
        PyErr_Format(PyExc_ValueError, "dot(): ws has %zd elements but xs has %zd; they must have the same length", nw,
                     nx);
    } else {
        try {
            if (collect(ws, "dot() ws", wids, temporaries) && collect(xs, "dot() xs", xids, temporaries)) {
                result = wrap_new(arena().dot(wids.data(), xids.data(), wids.size()));
            }
        } catch (const std::exception& e) {
            set_memory_error(e);
        }
    }
    release_all(temporaries);
    Py_DECREF(ws);
    Py_DECREF(xs);
    return result;
}

// --- the type ------------------------------------------------------------------------------

PyObject* value_new(PyTypeObject* /*type*/, PyObject* args, PyObject* kwargs) {
    // A third argument is accepted only to explain micrograd's internal Value(data, _children, _op).
    static const char* keywords[] = {"data", "label", "_op", nullptr};
    PyObject* data = nullptr;
    PyObject* label = nullptr;
    PyObject* op = nullptr;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OO:Value", const_cast<char**>(keywords), &data, &label, &op)) {
        return nullptr;
    }
    if (op != nullptr) {
        PyErr_SetString(PyExc_TypeError,
                        "Value() takes data and an optional label; micrograd's Value(data, _children, _op) form "
                        "is internal to micrograd: arenagrad records each op's children itself");
        return nullptr;
    }
    if (label != nullptr && !PyUnicode_Check(label)) {
        return PyErr_Format(PyExc_TypeError, "Value(data, label=''): label must be a str, not %s", type_name(label).c_str());
    }
    double number = 0.0;
    const Conversion c = to_double(data, &number);
    if (c == Conversion::Error) return nullptr;
    if (c == Conversion::NotANumber) {
        return PyErr_Format(PyExc_TypeError, "Value() data must be a real number (int, float or numpy scalar), not %s",
                            type_name(data).c_str());
    }
    std::string text;
    if (label != nullptr) {
        Py_ssize_t size = 0;
        const char* utf8 = PyUnicode_AsUTF8AndSize(label, &size);
        if (utf8 == nullptr) return nullptr;
        text.assign(utf8, static_cast<std::size_t>(size));
    }
    NodeId id = 0;
    try {
        id = arena().leaf(number);
    } catch (const std::exception& e) {
        set_memory_error(e);
        return nullptr;
    }
    try {
        if (!text.empty()) arena().set_label(id, std::move(text));
    } catch (const std::exception& e) {
        arena().release(id);
        set_memory_error(e);
        return nullptr;
    }
    return wrap_new(id);
}

void value_dealloc(PyObject* self) {
    PyValue* v = as_value(self);
    // Unregister first: a weakref callback may reach this node through a parent's _prev, and must
    // then get a new handle (with its own reference), never this dying object.
    auto& table = handles();
    table[v->id] = nullptr;
    if (v->weakrefs != nullptr) PyObject_ClearWeakRefs(self);
    arena().release(v->id);
    // The arena gives memory back after a large graph is freed; the table follows it down.
    if (table.size() > arena().slots()) {
        table.resize(arena().slots());
        table.shrink_to_fit();
    }
    PyObject_Free(self);
}

PyObject* value_repr(PyObject* self) {
    const NodeId id = as_value(self)->id;
    std::string text = "Value(data=" + repr(arena().value(id)) + ", grad=" + repr(arena().grad(id));
    const std::string& label = arena().label(id);
    if (!label.empty()) {
        PyObject* quoted = PyUnicode_FromStringAndSize(label.data(), static_cast<Py_ssize_t>(label.size()));
        if (quoted == nullptr) return nullptr;
        PyObject* r = PyObject_Repr(quoted);
        Py_DECREF(quoted);
        if (r == nullptr) return nullptr;
        text += ", label=";
        text += PyUnicode_AsUTF8(r);
        Py_DECREF(r);
    }
    text += ")";
    return PyUnicode_FromStringAndSize(text.data(), static_cast<Py_ssize_t>(text.size()));
}

int reject_delete(PyObject* value, const char* name) {
    if (value != nullptr) return 0;
    PyErr_Format(PyExc_AttributeError, "cannot delete Value.%s", name);
    return -1;
}

int number_argument(PyObject* value, const char* name, double* out) {
    if (reject_delete(value, name) < 0) return -1;
    const Conversion c = to_double(value, out);
    if (c == Conversion::Error) return -1;
    if (c == Conversion::NotANumber) {
        PyErr_Format(PyExc_TypeError, "Value.%s must be a real number, not %s", name, type_name(value).c_str());
        return -1;
    }
    return 0;
}

PyObject* get_data(PyObject* self, void*) { return PyFloat_FromDouble(arena().value(as_value(self)->id)); }

int set_data(PyObject* self, PyObject* value, void*) {
    double number = 0.0;
    if (number_argument(value, "data", &number) < 0) return -1;
    arena().set_value(as_value(self)->id, number);
    return 0;
}

PyObject* get_grad(PyObject* self, void*) { return PyFloat_FromDouble(arena().grad(as_value(self)->id)); }

int set_grad(PyObject* self, PyObject* value, void*) {
    double number = 0.0;
    if (number_argument(value, "grad", &number) < 0) return -1;
    arena().set_grad(as_value(self)->id, number);
    return 0;
}

PyObject* get_label(PyObject* self, void*) {
    const std::string& label = arena().label(as_value(self)->id);
    return PyUnicode_FromStringAndSize(label.data(), static_cast<Py_ssize_t>(label.size()));
}

int set_label(PyObject* self, PyObject* value, void*) {
    if (reject_delete(value, "label") < 0) return -1;
    if (!PyUnicode_Check(value)) {
        PyErr_Format(PyExc_TypeError, "Value.label must be a str, not %.200s", Py_TYPE(value)->tp_name);
        return -1;
    }
    Py_ssize_t size = 0;
    const char* utf8 = PyUnicode_AsUTF8AndSize(value, &size);
    if (utf8 == nullptr) return -1;
    try {
        arena().set_label(as_value(self)->id, std::string(utf8, static_cast<std::size_t>(size)));
    } catch (const std::exception& e) {
        set_memory_error(e);
        return -1;
    }
    return 0;
}

PyObject* get_op(PyObject* self, void*) {
    const NodeId id = as_value(self)->id;
    const Op op = arena().op(id);
    if (op == Op::PowConst) return PyUnicode_FromString(("**" + exponent_text(arena().exponent(id))).c_str());
    if (op == Op::Custom) return PyUnicode_FromString(arena().custom_function(id)->name().c_str());
    return PyUnicode_FromString(op_name(op));
}

PyObject* get_prev(PyObject* self, void*) {
    const NodeId id = as_value(self)->id;
    PyObject* children = PySet_New(nullptr);
    if (children == nullptr) return nullptr;
    const std::uint32_t n = arena().num_children(id);
    for (std::uint32_t i = 0; i < n; ++i) {
        PyObject* child = handle_for(arena().child(id, i));
        if (child == nullptr || PySet_Add(children, child) < 0) {
            Py_XDECREF(child);
            Py_DECREF(children);
            return nullptr;
        }
        Py_DECREF(child);
    }
    return children;
}

PyObject* backward_method(PyObject* self, PyObject* /*unused*/) {
    try {
        arena().backward(as_value(self)->id);
    } catch (const std::exception& e) {
        set_memory_error(e);
        return nullptr;
    }
    Py_RETURN_NONE;
}

PyObject* backward_step_method(PyObject* self, PyObject* /*unused*/) {
    arena().backward_step(as_value(self)->id);
    Py_RETURN_NONE;
}

PyGetSetDef getset[] = {
    {"data", get_data, set_data, "The node's value (a float).", nullptr},
    {"grad", get_grad, set_grad, "d(root)/d(this node) after root.backward() (a float).", nullptr},
    {"label", get_label, set_label, "A name shown in reprs and graph pictures.", nullptr},
    {"_op", get_op, nullptr, "The op that produced this node ('' for a leaf).", nullptr},
    {"_prev", get_prev, nullptr, "The set of child Values.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

// Methods: one per unary op of the op table (its Python name comes from the table), plus
// backward and _backward.
std::vector<PyMethodDef>& methods() {
    static std::vector<PyMethodDef> defs = [] {
        std::vector<PyMethodDef> d;
#define ARENAGRAD_METHOD(name, rule, method)                                                   \
    if (is_method(Op::name, rule::arity)) {                                                    \
        d.push_back({#method, unary_method<Op::name>, METH_NOARGS, "Applies " #method " (one node)."}); \
    }
        ARENAGRAD_ELEMENTARY_OPS(ARENAGRAD_METHOD)
#undef ARENAGRAD_METHOD
        d.push_back({"backward", backward_method, METH_NOARGS,
                     "Backpropagates from this node: grad := 1 here, fresh grads for the graph's non-leaf nodes, "
                     "accumulated grads for its leaves."});
        d.push_back({"_backward", backward_step_method, METH_NOARGS,
                     "One chain-rule step: adds this node's grad times each local derivative into its children."});
        d.push_back({nullptr, nullptr, 0, nullptr});
        return d;
    }();
    return defs;
}

PyNumberMethods number_methods = [] {
    PyNumberMethods m{};
    m.nb_add = binary_slot<Op::Add>;
    m.nb_subtract = binary_slot<Op::Sub>;
    m.nb_multiply = binary_slot<Op::Mul>;
    m.nb_true_divide = binary_slot<Op::Div>;
    m.nb_power = power_slot;
    m.nb_negative = negative_slot;
    m.nb_absolute = absolute_slot;
    return m;
}();

PyMethodDef module_functions[] = {
    {"sum", sum_function, METH_O, "sum(values) -> Value: one node summing an iterable of Values and numbers."},
    {"logsumexp", logsumexp_function, METH_O,
     "logsumexp(values) -> Value: one node for log(sum(exp(v))), stable for any inputs."},
    {"dot", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(dot_function)), METH_FASTCALL,
     "dot(ws, xs) -> Value: one node for sum(w_i * x_i)."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

PyObject* set_op_error(Status status, Op op, double a, double b) {
    const std::string sa = repr(a);
    const std::string sb = repr(b);
    switch (status) {
        case Status::ZeroDivision:
            if (op == Op::Div) return PyErr_Format(PyExc_ZeroDivisionError, "division by zero: %s / %s", sa.c_str(), sb.c_str());
            return PyErr_Format(PyExc_ZeroDivisionError, "0.0 cannot be raised to a negative power: %s ** %s", sa.c_str(),
                                sb.c_str());
        case Status::Domain:
            if (op == Op::Pow || op == Op::PowConst) {
                return PyErr_Format(PyExc_ValueError,
                                    "negative number cannot be raised to a fractional power: %s ** %s (the result "
                                    "would be complex)",
                                    sa.c_str(), sb.c_str());
            }
            if (op == Op::Log) return PyErr_Format(PyExc_ValueError, "math domain error: log(%s) needs a positive number", sa.c_str());
            if (op == Op::Sqrt) {
                return PyErr_Format(PyExc_ValueError, "math domain error: sqrt(%s) needs a non-negative number", sa.c_str());
            }
            return PyErr_Format(PyExc_ValueError, "math domain error: %s(%s)", op_name(op), sa.c_str());
        case Status::Overflow:
            if (op == Op::Pow || op == Op::PowConst) {
                return PyErr_Format(PyExc_OverflowError, "math range error: %s ** %s overflows a float", sa.c_str(), sb.c_str());
            }
            return PyErr_Format(PyExc_OverflowError, "math range error: %s(%s) overflows a float", op_name(op), sa.c_str());
        case Status::Ok:
            break;
    }
    return PyErr_Format(PyExc_SystemError, "arenagrad: unexpected status for op %s", op_name(op));
}

Arena& arena() {
    static Arena* instance = new Arena();  // never destroyed: Values may die during interpreter exit
    return *instance;
}

PyObject* handle_for(NodeId id) {
    auto& table = handles();
    if (id < table.size() && table[id] != nullptr) {
        Py_INCREF(table[id]);
        return table[id];
    }
    arena().retain(id);
    return wrap_new(id);
}

std::size_t handle_table_bytes() { return handles().capacity() * sizeof(PyObject*); }

bool node_of(PyObject* obj, NodeId* id) {
    if (!is_value(obj)) return false;
    *id = as_value(obj)->id;
    return true;
}

bool add_value_type(PyObject* module) {
    PyObject* numbers = PyImport_ImportModule("numbers");
    if (numbers == nullptr) return false;
    RealABC = PyObject_GetAttrString(numbers, "Real");
    Py_DECREF(numbers);
    if (RealABC == nullptr) return false;

    ValueType.ob_base.ob_base.ob_refcnt = 1;  // what PyVarObject_HEAD_INIT does for a static type
    ValueType.tp_name = "arenagrad.Value";
    ValueType.tp_basicsize = sizeof(PyValue);
    ValueType.tp_flags = Py_TPFLAGS_DEFAULT;
    ValueType.tp_doc =
        "Value(data, label='')\n\nA scalar in the autograd graph: a handle to one node of the native arena.";
    ValueType.tp_new = value_new;
    ValueType.tp_dealloc = value_dealloc;
    ValueType.tp_repr = value_repr;
    ValueType.tp_as_number = &number_methods;
    ValueType.tp_getset = getset;
    ValueType.tp_methods = methods().data();
    ValueType.tp_weaklistoffset = offsetof(PyValue, weakrefs);
    if (PyType_Ready(&ValueType) < 0) return false;
    // numpy defers binary ops to us (np.float64(2) * v -> Value.__rmul__) instead of making an
    // object array.
    if (PyDict_SetItemString(ValueType.tp_dict, "__array_ufunc__", Py_None) < 0) return false;
    PyType_Modified(&ValueType);

    Py_INCREF(&ValueType);
    if (PyModule_AddObject(module, "Value", reinterpret_cast<PyObject*>(&ValueType)) < 0) {
        Py_DECREF(&ValueType);
        return false;
    }
    return PyModule_AddFunctions(module, module_functions) == 0;
}

}  // namespace arenagrad::binding
