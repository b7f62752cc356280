#include "dual_type.hpp"

#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

#include "ops.hpp"
#include "value_type.hpp"

namespace arenagrad::binding {

namespace {

// ob_size is the number of partials of a multivariable dual, 0 for a single-variable one. The
// partials follow the header in the object's own block, so every Dual is one allocation and a
// single-variable one (the common case) needs no more than tangent[0].
struct PyDual {
    PyObject_VAR_HEAD
    double real;
    double tangent[1];
};

PyTypeObject DualType{};  // filled in by add_dual_type

inline PyDual* as_dual(PyObject* obj) { return reinterpret_cast<PyDual*>(obj); }
inline bool is_dual(PyObject* obj) { return Py_TYPE(obj) == &DualType; }

// Single-variable Duals that died, kept for reuse as CPython keeps floats: an op's result is
// usually dead by the next op, and malloc plus free were a fifth of an op's time. Guarded by the GIL.
constexpr int kFreeListSize = 64;
PyObject* free_list[kFreeListSize];
int free_count = 0;

// A new Dual with n partials (0: single-variable), its tangent left for the caller to fill in.
PyDual* new_dual(double real, Py_ssize_t n) {
    PyDual* d = nullptr;
    if (n == 0 && free_count > 0) {
        d = reinterpret_cast<PyDual*>(PyObject_InitVar(
            reinterpret_cast<PyVarObject*>(free_list[--free_count]), &DualType, 0));
    } else {
        d = PyObject_NewVar(PyDual, &DualType, n);
        if (d == nullptr) return nullptr;
    }
    d->real = real;
    return d;
}

void dual_dealloc(PyObject* self) {
    if (Py_SIZE(self) == 0 && free_count < kFreeListSize) {
        free_list[free_count++] = self;
    } else {
        PyObject_Free(self);
    }
}

// --- ops -----------------------------------------------------------------------------------

constexpr double kZeroTangent = 0.0;

// An operand: a Dual, or a real number, whose tangent is a zero that fits any number of partials.
struct Operand {
    double real = 0.0;
    const double* tangent = &kZeroTangent;
    Py_ssize_t n = 0;  // partials; 0 for a number or a single-variable Dual
};

Conversion read_operand(PyObject* obj, Operand* out) {
    if (is_dual(obj)) {
        PyDual* d = as_dual(obj);
        out->real = d->real;
        out->tangent = d->tangent;
        out->n = Py_SIZE(obj);
        return Conversion::Number;
    }
    return to_double(obj, &out->real);
}

// A single-variable Dual with a zero tangent is a constant, like a number, so it combines with a
// Dual of any number of partials. Otherwise the operands must have been seeded together.
Py_ssize_t result_partials(const Operand& a, const Operand& b) {
    if (a.n == b.n) return a.n;
    if (b.n == 0 && b.tangent[0] == 0.0) return a.n;
    if (a.n == 0 && a.tangent[0] == 0.0) return b.n;
    if (a.n == 0 || b.n == 0) {
        const Operand& single = a.n == 0 ? a : b;
        PyErr_Format(PyExc_ValueError,
                     "cannot combine a single-variable Dual (dual=%s) with a Dual of %zd partials: seed every "
                     "variable in one vector, e.g. with Dual.variables()",
                     repr(single.tangent[0]).c_str(), a.n == 0 ? b.n : a.n);
    } else {
        PyErr_Format(PyExc_ValueError,
                     "Duals with %zd and %zd partials do not combine: seed every variable in one vector of the same "
                     "length, e.g. with Dual.variables()",
                     a.n, b.n);
    }
    return -1;
}

// One partial of the output: each input's tangent t contributes the rule's vjp(t), which is linear in
// t. An exactly zero tangent contributes nothing (JAX's symbolic zeros) instead of 0 * partial, which
// is NaN where the partial is infinite: d/dx (x * sqrt(y)) at y = 0, with only x seeded, is
// sqrt(0) = 0. A single term is taken as it is, not added to 0.0, as Tape.jvp does.
template <class Rule>
double push_tangent(double ta, double tb, double a, double b, double out) {
    double t = 0.0;
    if (ta != 0.0) t = Rule::vjp(ta, a, b, out).a;
    if constexpr (differentiable_inputs<Rule>() == 2) {
        if (tb != 0.0) {
            const double term = Rule::vjp(tb, a, b, out).b;
            t = ta != 0.0 ? t + term : term;
        }
    }
    return t;
}

template <class Rule>
PyObject* apply(Op op, const Operand& a, const Operand& b, Py_ssize_t n) {
    const Eval e = Rule::forward(a.real, b.real);
    if (e.status != Status::Ok) return set_op_error(e.status, op, a.real, b.real);
    PyDual* out = new_dual(e.value, n);
    if (out == nullptr) return nullptr;
    // Stride 0 reads a constant's (or a single-variable Dual's) one tangent for every partial.
    const Py_ssize_t sa = a.n != 0;
    const Py_ssize_t sb = b.n != 0;
    const Py_ssize_t count = n == 0 ? 1 : n;
    for (Py_ssize_t i = 0; i < count; ++i) {
        out->tangent[i] = push_tangent<Rule>(a.tangent[i * sa], b.tangent[i * sb], a.real, b.real, e.value);
    }
    return reinterpret_cast<PyObject*>(out);
}

PyObject* apply_op(Op op, const Operand& a, const Operand& b, Py_ssize_t n) {
    return visit_elementary(op, [&](auto rule) { return apply<decltype(rule)>(op, a, b, n); });
}

PyObject* binary(Op op, PyObject* x, PyObject* y) {
    Operand a, b;
    const Conversion ca = read_operand(x, &a);
    if (ca == Conversion::Error) return nullptr;
    const Conversion cb = ca == Conversion::Number ? read_operand(y, &b) : Conversion::NotANumber;
    if (cb == Conversion::Error) return nullptr;
    if (cb == Conversion::NotANumber) {
        // Raise rather than return NotImplemented, as Value does: another type's reflected operator
        // (a Value's, micrograd's) would otherwise take the Dual for a number.
        return PyErr_Format(PyExc_TypeError, "unsupported operand for %s: %s; expected a real number or an arenagrad.Dual",
                            op_name(op), type_name(ca == Conversion::Number ? y : x).c_str());
    }
    const Py_ssize_t n = result_partials(a, b);
    if (n < 0) return nullptr;
    return apply_op(op, a, b, n);
}

template <Op op>
PyObject* binary_slot(PyObject* x, PyObject* y) {
    return binary(op, x, y);
}

PyObject* power_slot(PyObject* x, PyObject* y, PyObject* modulo) {
    if (modulo != Py_None) {
        PyErr_SetString(PyExc_TypeError, "pow() with a modulus is not supported for Duals");
        return nullptr;
    }
    // As for Value: a number exponent is a constant of the op; a Dual exponent, or a number base,
    // makes the general Pow.
    return binary(is_dual(y) ? Op::Pow : Op::PowConst, x, y);
}

PyObject* unary(Op op, PyObject* self) {
    Operand a;
    read_operand(self, &a);
    return apply_op(op, a, Operand{}, a.n);
}

template <Op op>
PyObject* unary_method(PyObject* self, PyObject* /*unused*/) {
    return unary(op, self);
}

PyObject* negative_slot(PyObject* self) { return unary(Op::Neg, self); }
PyObject* absolute_slot(PyObject* self) { return unary(Op::Abs, self); }

// --- construction --------------------------------------------------------------------------

// A tuple of the items of `values` (a new reference), or null with TypeError set. A tuple of our own,
// because converting an item may run user code that could change a list under us.
PyObject* items_of(PyObject* values, const char* message) {
    PyObject* tuple = PySequence_Tuple(values);
    if (tuple == nullptr && PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, message, type_name(values).c_str());
    }
    return tuple;
}

bool item_to_double(PyObject* tuple, Py_ssize_t i, const char* what, double* out) {
    PyObject* item = PyTuple_GET_ITEM(tuple, i);
    const Conversion c = to_double(item, out);
    if (c == Conversion::NotANumber) {
        PyErr_Format(PyExc_TypeError, "%s[%zd] is %s, not a real number", what, i, type_name(item).c_str());
    }
    return c == Conversion::Number;
}

// Dual(real, [d0, d1, ...]): a Dual with one partial per item.
PyObject* new_multivariable(double real, PyObject* partials) {
    const char* message = "Dual(): dual must be a real number or a 1-D sequence of real numbers, not %s";
    if (PyUnicode_Check(partials) || PyBytes_Check(partials)) {
        return PyErr_Format(PyExc_TypeError, message, type_name(partials).c_str());
    }
    PyObject* items = items_of(partials, message);
    if (items == nullptr) return nullptr;
    const Py_ssize_t n = PyTuple_GET_SIZE(items);
    PyDual* d = nullptr;
    if (n == 0) {
        PyErr_SetString(PyExc_ValueError, "Dual(): dual is an empty sequence; give at least one partial");
    } else {
        d = new_dual(real, n);
        for (Py_ssize_t i = 0; d != nullptr && i < n; ++i) {
            if (!item_to_double(items, i, "Dual(): dual", &d->tangent[i])) Py_CLEAR(d);
        }
    }
    Py_DECREF(items);
    return reinterpret_cast<PyObject*>(d);
}

PyObject* dual_new(PyTypeObject* /*type*/, PyObject* args, PyObject* kwargs) {
    static const char* keywords[] = {"real", "dual", nullptr};
    PyObject* real_obj = nullptr;
    PyObject* dual_obj = nullptr;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:Dual", const_cast<char**>(keywords), &real_obj, &dual_obj)) {
        return nullptr;
    }
    double real = 0.0;
    const Conversion c = to_double(real_obj, &real);
    if (c == Conversion::Error) return nullptr;
    if (c == Conversion::NotANumber) {
        return PyErr_Format(PyExc_TypeError, "Dual(): real must be a real number (int, float or numpy scalar), not %s",
                            type_name(real_obj).c_str());
    }
    double tangent = 0.0;
    if (dual_obj != nullptr) {
        const Conversion t = to_double(dual_obj, &tangent);
        if (t == Conversion::Error) return nullptr;
        if (t == Conversion::NotANumber) return new_multivariable(real, dual_obj);
    }
    PyDual* d = new_dual(real, 0);
    if (d != nullptr) d->tangent[0] = tangent;
    return reinterpret_cast<PyObject*>(d);
}

PyObject* variables_method(PyObject* /*type*/, PyObject* values) {
    PyObject* items = items_of(values, "Dual.variables() expects a sequence of real numbers, not %s");
    if (items == nullptr) return nullptr;
    const Py_ssize_t n = PyTuple_GET_SIZE(items);
    PyObject* list = PyList_New(n);
    for (Py_ssize_t i = 0; list != nullptr && i < n; ++i) {
        double real = 0.0;
        PyDual* d = item_to_double(items, i, "Dual.variables(): values", &real) ? new_dual(real, n) : nullptr;
        if (d == nullptr) {
            Py_CLEAR(list);
            break;
        }
        std::memset(d->tangent, 0, sizeof(double) * static_cast<std::size_t>(n));
        d->tangent[i] = 1.0;
        PyList_SET_ITEM(list, i, reinterpret_cast<PyObject*>(d));
    }
    Py_DECREF(items);
    return list;
}

// --- reading -------------------------------------------------------------------------------

PyObject* dual_repr(PyObject* self) {
    const PyDual* d = as_dual(self);
    const Py_ssize_t n = Py_SIZE(self);
    std::string text = "Dual(real=" + repr(d->real) + ", dual=";
    if (n == 0) {
        text += repr(d->tangent[0]);
    } else {
        text += "[";
        for (Py_ssize_t i = 0; i < n; ++i) text += (i == 0 ? "" : ", ") + repr(d->tangent[i]);
        text += "]";
    }
    text += ")";
    return PyUnicode_FromStringAndSize(text.data(), static_cast<Py_ssize_t>(text.size()));
}

PyObject* get_real(PyObject* self, void*) { return PyFloat_FromDouble(as_dual(self)->real); }

// The partials as a read-only float64 array over a bytes copy: a fresh array each time, which no
// one can mistake for a view that writes into the Dual.
PyObject* partials_array(const PyDual* d, Py_ssize_t n) {
    static PyObject* frombuffer = nullptr;  // numpy is imported on first use, not with the module
    if (frombuffer == nullptr) {
        PyObject* numpy = PyImport_ImportModule("numpy");
        if (numpy == nullptr) return nullptr;
        frombuffer = PyObject_GetAttrString(numpy, "frombuffer");
        Py_DECREF(numpy);
        if (frombuffer == nullptr) return nullptr;
    }
    PyObject* bytes = PyBytes_FromStringAndSize(reinterpret_cast<const char*>(d->tangent),
                                                n * static_cast<Py_ssize_t>(sizeof(double)));
    if (bytes == nullptr) return nullptr;
    PyObject* array = PyObject_CallOneArg(frombuffer, bytes);  // dtype float, i.e. float64
    Py_DECREF(bytes);
    return array;
}

PyObject* get_dual(PyObject* self, void*) {
    const Py_ssize_t n = Py_SIZE(self);
    if (n == 0) return PyFloat_FromDouble(as_dual(self)->tangent[0]);
    return partials_array(as_dual(self), n);
}

PyGetSetDef getset[] = {
    {"real", get_real, nullptr, "The real part: the function's value (a float).", nullptr},
    {"dual", get_dual, nullptr,
     "The dual part: the derivative along the seeded direction (a float), or for a multivariable Dual "
     "a read-only 1-D float64 numpy array with one partial per seeded variable.",
     nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

// One method per unary op of the op table, chosen as Value's are, plus Dual.variables.
std::vector<PyMethodDef>& methods() {
    static std::vector<PyMethodDef> defs = [] {
        std::vector<PyMethodDef> d;
#define ARENAGRAD_DUAL_METHOD(name, rule, method)                                                              \
    if (is_method(Op::name, rule::arity)) {                                                                    \
        d.push_back({#method, unary_method<Op::name>, METH_NOARGS,                                             \
                     #method "($self, /)\n--\n\nApplies " #method " to the real part and its derivative to the " \
                             "dual part."});                                                                   \
    }
        ARENAGRAD_ELEMENTARY_OPS(ARENAGRAD_DUAL_METHOD)
#undef ARENAGRAD_DUAL_METHOD
        d.push_back({"variables", variables_method, METH_O | METH_CLASS,
                     "variables($type, values, /)\n--\n\n"
                     "One Dual per value, seeded with the unit vectors: the i-th has dual e_i (n partials for n "
                     "values), so f(*Dual.variables(x)).dual is the whole gradient of f at x in one pass."});
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

}  // namespace

bool add_dual_type(PyObject* module) {
    DualType.ob_base.ob_base.ob_refcnt = 1;  // what PyVarObject_HEAD_INIT does for a static type
    DualType.tp_name = "arenagrad.Dual";
    DualType.tp_basicsize = sizeof(PyDual);
    DualType.tp_itemsize = sizeof(double);
    DualType.tp_flags = Py_TPFLAGS_DEFAULT;
    DualType.tp_doc =
        "Dual(real, dual=0.0)\n--\n\n"
        "A dual number real + dual*eps with eps**2 = 0: each op carries the derivative along, so "
        "f(Dual(x, 1.0)).dual is f'(x), and no graph is recorded. The ops, methods and errors are "
        "Value's, from the same op table.\n\n"
        "dual may be a sequence of partials, one per variable (see Dual.variables): then .dual is a "
        "numpy array and one pass gives a whole gradient. A number, or a single-variable Dual with "
        "dual 0.0, is a constant and combines with any Dual; two multivariable Duals must have the "
        "same number of partials. A zero partial contributes nothing to an op's result, even where "
        "the op's derivative is infinite.";
    DualType.tp_new = dual_new;
    DualType.tp_dealloc = dual_dealloc;
    DualType.tp_repr = dual_repr;
    DualType.tp_as_number = &number_methods;
    DualType.tp_getset = getset;
    DualType.tp_methods = methods().data();
    if (PyType_Ready(&DualType) < 0) return false;
    // numpy defers binary ops to us (np.float64(2) * d -> Dual.__rmul__) instead of making an
    // object array, as for Value.
    if (PyDict_SetItemString(DualType.tp_dict, "__array_ufunc__", Py_None) < 0) return false;
    PyType_Modified(&DualType);

    Py_INCREF(&DualType);
    if (PyModule_AddObject(module, "Dual", reinterpret_cast<PyObject*>(&DualType)) < 0) {
        Py_DECREF(&DualType);
        return false;
    }
    return true;
}

}  // namespace arenagrad::binding
