// convert.cpp — see convert.h. The only place that knows how Python arrays are laid out.
#include "convert.h"

#include <cstring>
#include <string>

#include "fusedopt/errors.h"

namespace fusedopt::python {
namespace {

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

std::string type_name(py::handle obj) {
  return py::str(py::type::handle_of(obj).attr("__qualname__")).cast<std::string>();
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

ArrayRef to_array_ref(py::handle obj, const char* op, const char* arg, std::int64_t index) {
  ArrayRef ref;
  if (!numpy_view(obj, op, arg, index, &ref.view)) {
    // Not NumPy: a DLPack producer (PyTorch, CuPy, ...). Gradients and DCASGD backups are the only
    // inputs.
    const bool output = std::strncmp(arg, "grad", 4) != 0 && std::strncmp(arg, "backup", 6) != 0;
    if (std::optional<ArrayRef> r = import_dlpack(obj, ArgLabel{op, arg, index}, output))
      return std::move(*r);
    throw TypeError(arg_name(op, arg, index) +
                    " must be a NumPy array or a DLPack tensor (an object with __dlpack__), got " +
                    type_name(obj));
  }
  ref.owner = py::reinterpret_borrow<py::object>(obj);
  return ref;
}

void read_doubles(py::handle seq, const char* op, const char* name, std::vector<double>& out) {
  out.clear();
  if (PyUnicode_Check(seq.ptr()) || PyBytes_Check(seq.ptr()) ||
      !(PyList_Check(seq.ptr()) || PyTuple_Check(seq.ptr()) || PySequence_Check(seq.ptr())))
    throw TypeError(std::string(op) + ": " + name + " must be a sequence of numbers, got " +
                    type_name(seq));
  PyObject* fast = PySequence_Fast(seq.ptr(), "");
  if (fast == nullptr) throw py::error_already_set();
  auto hold = py::reinterpret_steal<py::object>(fast);
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
  PyObject** items = PySequence_Fast_ITEMS(fast);
  out.reserve(static_cast<std::size_t>(n));
  for (Py_ssize_t k = 0; k < n; ++k) {
    PyObject* item = items[k];
    if (PyFloat_CheckExact(item)) {
      out.push_back(PyFloat_AS_DOUBLE(item));
      continue;
    }
    const double v = PyUnicode_Check(item) || PyBytes_Check(item) ? -1.0 : PyFloat_AsDouble(item);
    if (v == -1.0 && (PyErr_Occurred() != nullptr || PyUnicode_Check(item) || PyBytes_Check(item))) {
      PyErr_Clear();
      throw TypeError(arg_name(op, name, k) + " must be a number, got " + type_name(item));
    }
    out.push_back(v);
  }
}

void StreamPicker::add(const ArrayRef& r) {
  if (!r.stream) return;
  if (stream_ && stream_->handle != r.stream->handle)
    throw ValueError(std::string(op_) +
                     ": CUDA arguments come from producers with different current streams; make "
                     "them current on one stream (fusedopt launches on the producers' stream)");
  stream_ = r.stream;
}

}  // namespace fusedopt::python
