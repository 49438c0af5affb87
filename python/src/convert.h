// convert.h — Python array objects to fusedopt::TensorView without copying, ever. NumPy arrays (including
// ml_dtypes.bfloat16 ones) go through the NumPy C API; anything that would need a copy is an error
// naming the argument.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "fusedopt/tensor_view.h"

namespace fusedopt::python {

namespace py = pybind11;

/// A view plus the Python object that owns its memory, kept alive while the view is in use.
struct ArrayRef {
  TensorView view;
  py::object owner;
};

/// Converts `obj` (argument `name`) to a view. Raises TypeError for objects that are not arrays or have
/// an unsupported dtype. Read-only / strided arrays are converted faithfully (flags, strides) and
/// rejected by the C++ API where they are not allowed.
/// `op` and `name` (and `index` >= 0 for list arguments) label the argument in messages.
ArrayRef to_array_ref(py::handle obj, const char* op, const char* name, std::int64_t index = -1);

}  // namespace fusedopt::python
