// convert.cpp — see convert.h. The only place that knows how Python arrays are laid out.
#include "convert.h"

#include <pybind11/gil_safe_call_once.h>

#include <array>
#include <cstring>
#include <string>
#include <utility>

#include "fusedopt/errors.h"

namespace fusedopt::python {
namespace {

constexpr bool kLittleEndian = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;

/// NumPy's type number of ml_dtypes.bfloat16 (registered at run time), or -1 until first seen.
int g_bfloat16_num = -1;

bool dtype_of(const py::dtype& dt, DType* out) {
  const char kind = dt.kind();
  const auto size = dt.itemsize();
  if (kind == 'f') {
    if (size == 2) *out = DType::kFloat16;
    else if (size == 4) *out = DType::kFloat32;
    else if (size == 8) *out = DType::kFloat64;
    else return false;
    return true;
  }
  if (size == 2 && dt.num() == g_bfloat16_num && g_bfloat16_num >= 0) {
    *out = DType::kBFloat16;
    return true;
  }
  if (size == 2 && kind == 'V' && py::str(dt.attr("name")).cast<std::string>() == "bfloat16") {
    g_bfloat16_num = dt.num();
    *out = DType::kBFloat16;
    return true;
  }
  return false;
}

/// numpy.bool_ (a bool in all but type: refused as a number like bool).
bool is_numpy_bool(PyObject* item) {
  PYBIND11_CONSTINIT static py::gil_safe_call_once_and_store<py::object> type;
  const py::object& t = type.call_once_and_store_result([] {
                              return py::module_::import("numpy").attr("bool_");
                            }).get_stored();
  return Py_TYPE(item) == reinterpret_cast<PyTypeObject*>(t.ptr());
}

}  // namespace

std::string arg_name(const char* op, const char* arg, std::int64_t index) {
  return std::string(op) + ": " + arg +
         (index >= 0 ? "[" + std::to_string(index) + "]" : std::string());
}

std::string ArgLabel::str() const { return arg_name(op, arg, index); }

bool numpy_view(py::handle obj, const char* op, const char* arg, std::int64_t index,
                TensorView* view) {
  if (!py::isinstance<py::array>(obj)) return false;
  auto arr = py::reinterpret_borrow<py::array>(obj);
  py::dtype dt = arr.dtype();
  if (!dtype_of(dt, &view->dtype)) {
    throw TypeError(arg_name(op, arg, index) +
                    " must have dtype float16, bfloat16, float32 or float64, got " +
                    py::str(dt).cast<std::string>());
  }
  // The kernels read native-endian values; a byte-swapped array would be read as other numbers.
  if (dt.byteorder() == (kLittleEndian ? '>' : '<')) {
    throw TypeError(arg_name(op, arg, index) + " must be in native byte order, got " +
                    py::str(dt.attr("str")).cast<std::string>() +
                    " (non-native); convert it with a.astype(a.dtype.newbyteorder('='))");
  }
  const auto ndim = static_cast<std::int32_t>(arr.ndim());
  if (ndim > TensorView::kMaxDims) {
    throw ValueError(arg_name(op, arg, index) + " has " + std::to_string(ndim) +
                     " dimensions; fusedopt supports at most " +
                     std::to_string(TensorView::kMaxDims));
  }
  view->data = const_cast<void*>(arr.data());
  view->ndim = ndim;
  const bool contiguous = (arr.flags() & py::array::c_style) != 0;
  const py::ssize_t* shape = arr.shape();
  for (std::int32_t i = 0; i < ndim; ++i) view->shape[static_cast<std::size_t>(i)] = shape[i];
  if (!contiguous) {
    const auto itemsize = static_cast<std::int64_t>(dt.itemsize());
    const py::ssize_t* strides = arr.strides();
    for (std::int32_t i = 0; i < ndim; ++i) {
      const auto stride = static_cast<std::int64_t>(strides[i]);
      // A byte stride that is not a whole number of elements cannot be described in elements; record
      // a stride that fails the contiguity check (never a copy).
      view->strides[static_cast<std::size_t>(i)] = stride % itemsize == 0 ? stride / itemsize : 0;
    }
  }
  view->has_strides = !contiguous;
  view->read_only = !arr.writeable();
  view->device = Device{DeviceType::kCPU, 0};
  return true;
}

bool is_output(const char* name) {
  return std::strncmp(name, "grad", 4) != 0 && std::strncmp(name, "backup", 6) != 0 &&
         std::strcmp(name, "found_inf") != 0;
}

ArrayRef to_array_ref(py::handle obj, const char* op, const char* arg, std::int64_t index) {
  ArrayRef ref;
  if (!numpy_view(obj, op, arg, index, &ref.view)) {
    // Not NumPy: a DLPack producer (PyTorch, CuPy, ...). Gradients (grad_scale included), DCASGD
    // backups and found_inf are the only inputs.
    std::optional<ArrayRef> r = import_dlpack(obj, ArgLabel{op, arg, index}, is_output(arg));
    if (!r)
      throw TypeError(arg_name(op, arg, index) +
                      " must be a NumPy array or a DLPack tensor (an object with __dlpack__), got " +
                      type_name(obj));
    ref = std::move(*r);
  } else {
    ref.owner = py::reinterpret_borrow<py::object>(obj);
  }
  ref.epoch = callback_epoch();
  ref.op = op;
  ref.name = arg;
  ref.index = index;
  return ref;
}

namespace {
std::uint64_t g_callback_epoch = 0;  // read and written with the GIL held

/// NumPy's shared descriptor of each dtype (ml_dtypes' for bfloat16, null without ml_dtypes), held
/// for the life of the process and only compared for identity.
PyObject* descr_of(DType d) {
  PYBIND11_CONSTINIT static py::gil_safe_call_once_and_store<std::array<py::object, 4>> store;
  const auto& descrs = store.call_once_and_store_result([] {
    std::array<py::object, 4> out;
    out[static_cast<int>(DType::kFloat16)] = py::dtype(23);  // NPY_HALF
    out[static_cast<int>(DType::kFloat32)] = py::dtype::of<float>();
    out[static_cast<int>(DType::kFloat64)] = py::dtype::of<double>();
    try {
      out[static_cast<int>(DType::kBFloat16)] =
          py::module_::import("numpy").attr("dtype")(py::module_::import("ml_dtypes").attr("bfloat16"));
    } catch (py::error_already_set&) {
      out[static_cast<int>(DType::kBFloat16)] = py::none();
    }
    return out;
  }).get_stored();
  return descrs[static_cast<std::size_t>(d)].ptr();
}

/// Whether NumPy array `obj` still has `view`'s memory, dtype, shape, strides and writability; read
/// from the array's fields (no Python code, no allocation: a prepared step checks every array).
bool numpy_matches(py::handle obj, const TensorView& view) {
  auto* a = py::detail::array_proxy(obj.ptr());
  if (a->data != view.data || a->nd != view.ndim) return false;
  // The descriptors fusedopt accepts are NumPy's (and ml_dtypes') shared instances: when the array
  // still has the one of the view's dtype, its dtype is unchanged (the common, cheap case).
  const auto itemsize = static_cast<std::int64_t>(dtype_size(view.dtype));
  if (a->descr != descr_of(view.dtype)) {
    const auto dt = py::reinterpret_borrow<py::dtype>(a->descr);
    DType now;
    if (!dtype_of(dt, &now) || now != view.dtype || dt.byteorder() == (kLittleEndian ? '>' : '<'))
      return false;
  }
  for (std::int32_t i = 0; i < view.ndim; ++i)
    if (a->dimensions[i] != view.shape[static_cast<std::size_t>(i)]) return false;
  if (view.has_strides) {
    for (std::int32_t i = 0; i < view.ndim; ++i)
      if (a->strides[i] != view.strides[static_cast<std::size_t>(i)] * itemsize) return false;
  } else if ((a->flags & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_) == 0) {
    return false;
  }
  return view.read_only || (a->flags & py::detail::npy_api::NPY_ARRAY_WRITEABLE_) != 0;
}
}  // namespace

std::uint64_t callback_epoch() { return g_callback_epoch; }
void note_callback() { ++g_callback_epoch; }

py::tuple snapshot_sequence(py::handle seq, const char* op, const char* name) {
  PyObject* o = seq.ptr();
  if (PyTuple_Check(o)) return py::reinterpret_borrow<py::tuple>(o);
  if (PyList_Check(o)) return py::reinterpret_steal<py::tuple>(PyList_AsTuple(o));
  if (PyUnicode_Check(o) || PyBytes_Check(o) || !PySequence_Check(o))
    throw TypeError(std::string(op) + ": " + name + " must be a list or tuple, got " +
                    type_name(seq));
  note_callback();  // a custom sequence runs Python code to produce its items
  PyObject* t = PySequence_Tuple(o);
  if (t == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::tuple>(t);
}

void check_unchanged(py::handle obj, const TensorView& view, const char* op, const char* name,
                     std::int64_t index, const char* why) {
  const bool same = py::isinstance<py::array>(obj) ? numpy_matches(obj, view)
                                                   : exchange_matches(obj, view) != 0;
  if (!same) throw ValueError(arg_name(op, name, index) + why);
}

void read_doubles(py::handle seq, const char* op, const char* name, std::vector<double>& out) {
  out.clear();
  if (PyUnicode_Check(seq.ptr()) || PyBytes_Check(seq.ptr()) ||
      !(PyList_Check(seq.ptr()) || PyTuple_Check(seq.ptr()) || PySequence_Check(seq.ptr())))
    throw TypeError(std::string(op) + ": " + name + " must be a sequence of numbers, got " +
                    type_name(seq));
  py::tuple items = snapshot_sequence(seq, op, name);
  const Py_ssize_t n = PyTuple_GET_SIZE(items.ptr());
  out.reserve(static_cast<std::size_t>(n));
  for (Py_ssize_t k = 0; k < n; ++k) {
    PyObject* item = PyTuple_GET_ITEM(items.ptr(), k);
    if (PyFloat_CheckExact(item)) {
      out.push_back(PyFloat_AS_DOUBLE(item));
      continue;
    }
    // What float() accepts, except bools (not a hyper-parameter here, as in the optimizer classes)
    // and strings. Anything but an int runs Python code (__float__ / __index__).
    if (PyBool_Check(item) || PyUnicode_Check(item) || PyBytes_Check(item) || is_numpy_bool(item))
      throw TypeError(arg_name(op, name, k) + " must be a real number (float or int), got " +
                      type_name(item));
    if (!PyLong_CheckExact(item)) note_callback();
    const double v = PyFloat_AsDouble(item);
    if (v == -1.0 && PyErr_Occurred() != nullptr) {
      if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
        PyErr_Clear();
        throw ValueError(arg_name(op, name, k) +
                         " is an int too large to convert to a float; it must be a finite number");
      }
      if (PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyErr_Clear();
        throw TypeError(arg_name(op, name, k) + " must be a real number (float or int), got " +
                        type_name(item));
      }
      throw py::error_already_set();
    }
    out.push_back(v);
  }
}

void StreamPicker::add(const ArrayRef& r) {
  if (r.epoch != callback_epoch())
    check_unchanged(r.owner, r.view, r.op, r.name, r.index, kChangedDuringCall);
  add_stream(r);
}

void StreamPicker::add_stream(const ArrayRef& r) {
  if (!r.stream) return;
  if (stream_ && stream_->handle != r.stream->handle)
    throw ValueError(std::string(op_) +
                     ": CUDA arguments come from producers with different current streams; make "
                     "them current on one stream (fusedopt launches on the producers' stream)");
  stream_ = r.stream;
}

}  // namespace fusedopt::python
