// convert.h — Python array objects to fusedopt::TensorView without copying, ever. NumPy arrays (including
// ml_dtypes.bfloat16 ones) go through the NumPy C API; any other object with __dlpack__ (PyTorch, CuPy,
// ...) goes through the DLPack consumer in dlpack.h. Anything that would need a copy is an error naming
// the argument.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <optional>
#include <string>
#include <vector>

#include "dlpack.h"
#include "fusedopt/tensor_view.h"

namespace fusedopt::python {

namespace py = pybind11;

/// A view plus what keeps its memory alive while the view is in use: the Python object, and for DLPack
/// producers the managed tensor, whose deleter runs (once, GIL held) when the ArrayRef is destroyed —
/// i.e. after the kernel returned. Move-only. Bindings keep every ArrayRef of a call alive across the
/// GIL-released kernel call.
struct ArrayRef {
  TensorView view;
  py::object owner;
  /// Declared after `owner`, so it is destroyed first: the deleter runs while the producer object lives.
  DLPackHolder dlpack;
  /// For CUDA DLPack tensors: the producer's current stream, passed to __dlpack__ (the producer made
  /// it wait for pending work) and the stream the kernel must run on. Empty otherwise.
  std::optional<Stream> stream;
};

/// Converts `obj` (argument `name`) to a view. Raises TypeError for objects that are not arrays or have
/// an unsupported dtype. Read-only / strided arrays are converted faithfully (flags, strides) and
/// rejected by the C++ API where they are not allowed.
/// `op` and `name` (and `index` >= 0 for list arguments) label the argument in messages. Arguments whose
/// name starts with "grad" are inputs; every other one is written by the operator.
ArrayRef to_array_ref(py::handle obj, const char* op, const char* name, std::int64_t index = -1);

/// Collects the streams recorded by to_array_ref for the arguments of one call; every CUDA argument
/// must come with the same stream (else ValueError naming `op`).
class StreamPicker {
 public:
  explicit StreamPicker(const char* op) : op_(op) {}
  void add(const ArrayRef& r);
  void add(const std::optional<ArrayRef>& r) {
    if (r) add(*r);
  }
  void add(const std::vector<ArrayRef>& rs) {
    for (const auto& r : rs) add(r);
  }
  /// The common stream, or the default (null = legacy default) stream when no argument recorded one.
  Stream stream() const { return stream_.value_or(Stream{}); }

 private:
  const char* op_;
  std::optional<Stream> stream_;
};

/// The stream to launch an operator on: `fusedopt::sgd_update(w.view, g.view, p, call_stream(op, w, g))`.
/// Accepts ArrayRef, std::optional<ArrayRef> and std::vector<ArrayRef> arguments.
template <class... Refs>
Stream call_stream(const char* op, const Refs&... refs) {
  StreamPicker picker(op);
  (picker.add(refs), ...);
  return picker.stream();
}

}  // namespace fusedopt::python
