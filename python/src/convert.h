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
/// rejected by the C++ API where they are not allowed (dense layouts shared by every array of an
/// update are allowed: Note [dense layouts] in tensor_view.h).
/// `op` and `name` (and `index` >= 0 for list arguments) label the argument in messages. Arguments whose
/// name starts with "grad" or "backup" are inputs; every other one is written by the operator.
ArrayRef to_array_ref(py::handle obj, const char* op, const char* name, std::int64_t index = -1);

/// The NumPy fast path of to_array_ref: fills `*view` and returns true for a NumPy array (raising the
/// same errors), returns false for anything else. The caller keeps `obj` alive.
bool numpy_view(py::handle obj, const char* op, const char* name, std::int64_t index,
                TensorView* view);

/// Views of list arguments (one operand of every tensor of an aggregated call), built in place: NumPy
/// arrays take the fast path; other producers go through to_array_ref and are kept in `refs`. `owners`
/// holds a reference to every object for the duration of the call. The views' storage is kept between
/// calls (clear() leaves it): numpy_view overwrites every field a check or kernel reads, so a list of
/// the same length costs no allocation and no 160-byte zero-fill per array.
struct ViewList {
  std::vector<TensorView> views;
  std::vector<py::object> owners;
  std::vector<ArrayRef> refs;
  /// Makes room for `n` views (views.size() == n afterwards; their fields are rewritten by add()).
  void start(std::size_t n) {
    owners.clear();
    refs.clear();
    owners.reserve(n);
    if (views.size() != n) views.resize(n);
    used_ = 0;
  }
  void clear() {
    owners.clear();
    refs.clear();
    used_ = 0;
  }
  /// Views of every item of `seq` (a list or tuple of arrays, argument `name`); returns their count.
  std::size_t add_all(py::handle seq, const char* op, const char* name) {
    PyObject* fast = PySequence_Fast(seq.ptr(), "expected a list or tuple of arrays");
    if (fast == nullptr) throw py::error_already_set();
    auto hold = py::reinterpret_steal<py::object>(fast);
    const auto n = static_cast<std::size_t>(PySequence_Fast_GET_SIZE(fast));
    PyObject** items = PySequence_Fast_ITEMS(fast);
    start(n);
    for (std::size_t k = 0; k < n; ++k) add(items[k], op, name, static_cast<std::int64_t>(k));
    return n;
  }
  void add(py::handle obj, const char* op, const char* name, std::int64_t index) {
    if (used_ == views.size()) views.emplace_back();  // add() without start(): grow as needed
    TensorView* v = &views[used_++];
    owners.push_back(py::reinterpret_borrow<py::object>(obj));
    if (!numpy_view(obj, op, name, index, v)) {
      refs.push_back(to_array_ref(obj, op, name, index));
      *v = refs.back().view;
    }
  }

 private:
  std::size_t used_ = 0;
};

/// Reads a sequence of numbers (argument `name` of `op`: lrs, wds) into `out`, reusing its storage.
/// Accepts what float() accepts per item (float, int, NumPy scalars); TypeError naming the argument
/// and the item otherwise.
void read_doubles(py::handle seq, const char* op, const char* name, std::vector<double>& out);

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
  void add(const ViewList& l) { add(l.refs); }
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
