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
  /// callback_epoch() right after the conversion: a later callback may have changed the memory.
  std::uint64_t epoch = 0;
  /// The argument, for messages: `op: name[index]`.
  const char* op = "";
  const char* name = "";
  std::int64_t index = -1;
};

/// Note [callbacks during conversion]: converting a call's arguments can run Python code — a
/// producer's __dlpack__, the __float__ of an lrs item, another thread that gets the GIL meanwhile —
/// and that code can mutate what was already converted: clear the caller's list (every list argument
/// is snapshotted into a tuple first, so items stay alive), or replace or resize a torch tensor's
/// storage (`w.set_(...)`, `resize_`), which frees the memory an earlier view points into. The epoch
/// counts such calls. When it moved after an array was converted, call_stream() re-derives that
/// array's view (NumPy and PyTorch arrays, without running Python code) and raises if its memory
/// changed, before anything is written. Producers converted through a capsule keep their memory
/// alive through the capsule's deleter.
std::uint64_t callback_epoch();
/// Records that Python code is about to run during a conversion.
void note_callback();

/// The items of a list argument as a tuple of strong references (a tuple is returned as it is):
/// callbacks run while converting cannot free them. TypeError naming the argument for a
/// non-sequence (and for str / bytes).
py::tuple snapshot_sequence(py::handle seq, const char* op, const char* name);

/// Raises ValueError (`op: name[index] ...` + `why`) unless `obj`, converted earlier to `view`, still
/// has that memory, dtype, shape and strides. NumPy arrays and arrays of producers with a DLPack C
/// exchange table (PyTorch) are re-read without calling Python code; others are trusted (their
/// capsule keeps the memory alive).
void check_unchanged(py::handle obj, const TensorView& view, const char* op, const char* name,
                     std::int64_t index, const char* why);

/// Converts `obj` (argument `name`) to a view. Raises TypeError for objects that are not arrays or have
/// an unsupported dtype. Read-only / strided arrays are converted faithfully (flags, strides) and
/// rejected by the C++ API where they are not allowed (dense layouts shared by every array of an
/// update are allowed: Note [dense layouts] in tensor_view.h).
/// `op` and `name` (and `index` >= 0 for list arguments) label the argument in messages. Arguments whose
/// name starts with "grad" or "backup" (grad_scale included) and found_inf are inputs; every other one is
/// written by the operator.
ArrayRef to_array_ref(py::handle obj, const char* op, const char* name, std::int64_t index = -1);

/// Whether argument `name` is written by the operator (the naming rule of to_array_ref).
bool is_output(const char* name);

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
    if (epochs_.size() != n) epochs_.resize(n);
    used_ = 0;
  }
  void clear() {
    owners.clear();
    refs.clear();
    used_ = 0;
  }
  /// Views of every item of `seq` (a list or tuple of arrays, argument `name`); returns their count.
  /// The items are snapshotted first (Note [callbacks during conversion]).
  std::size_t add_all(py::handle seq, const char* op, const char* name) {
    py::tuple items = snapshot_sequence(seq, op, name);
    const auto n = static_cast<std::size_t>(PyTuple_GET_SIZE(items.ptr()));
    start(n);
    for (std::size_t k = 0; k < n; ++k)
      add(PyTuple_GET_ITEM(items.ptr(), static_cast<Py_ssize_t>(k)), op, name,
          static_cast<std::int64_t>(k));
    return n;
  }
  void add(py::handle obj, const char* op, const char* name, std::int64_t index) {
    if (used_ == views.size()) views.emplace_back();  // add() without start(): grow as needed
    if (used_ >= epochs_.size()) epochs_.resize(used_ + 1);
    op_ = op;
    name_ = name;
    TensorView* v = &views[used_];
    owners.push_back(py::reinterpret_borrow<py::object>(obj));
    if (!numpy_view(obj, op, name, index, v)) {
      // PyTorch through its exchange table: the view in place, no ArrayRef (the owner above keeps
      // the tensor alive, and no capsule is held). `refs` are read only for their streams (and
      // hold capsules), so a CUDA tensor adds an ArrayRef with just its stream.
      std::optional<Stream> stream;
      if (exchange_view(obj, ArgLabel{op, name, index}, is_output(name), v, &stream)) {
        if (stream) {
          refs.emplace_back();
          refs.back().stream = stream;
        }
      } else {
        refs.push_back(to_array_ref(obj, op, name, index));
        *v = refs.back().view;
      }
    }
    epochs_[used_++] = callback_epoch();
  }
  /// Re-checks the views that a later callback may have invalidated (all of them with `all`, as a
  /// prepared update does before each step); `why` ends the message.
  void check_unchanged(bool all, const char* why) const {
    const std::uint64_t now = callback_epoch();
    for (std::size_t k = 0; k < used_; ++k)
      if (all || epochs_[k] != now)
        python::check_unchanged(owners[k], views[k], op_, name_, static_cast<std::int64_t>(k), why);
  }

 private:
  std::size_t used_ = 0;
  std::vector<std::uint64_t> epochs_;
  const char* op_ = "";
  const char* name_ = "";
};

/// Reads a sequence of numbers (argument `name` of `op`: lrs, wds) into `out`, reusing its storage.
/// Accepts float, int and NumPy floating / integer scalars (not bool); TypeError naming the argument
/// and the item otherwise, ValueError for an int too large for a float. Bindings read numbers before
/// arrays, so a __float__ runs before any view exists.
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
  void add(const ViewList& l) {
    l.check_unchanged(false, kChangedDuringCall);
    for (const auto& r : l.refs) add_stream(r);
  }
  static constexpr const char* kChangedDuringCall =
      " was changed while the call's arguments were converted (its memory was replaced, resized "
      "or freed by a callback); nothing was written";
  /// The common stream, or the default (null = legacy default) stream when no argument recorded one.
  Stream stream() const { return stream_.value_or(Stream{}); }

 private:
  void add_stream(const ArrayRef& r);
  const char* op_;
  std::optional<Stream> stream_;
};

/// The last step of converting a call's arguments, right before the GIL is released: re-checks every
/// view a callback may have invalidated (Note [callbacks during conversion]) and returns the stream
/// to launch on: `fusedopt::sgd_update(w.view, g.view, p, call_stream(op, w, g))`.
/// Accepts ArrayRef, std::optional<ArrayRef>, std::vector<ArrayRef> and ViewList arguments.
template <class... Refs>
Stream call_stream(const char* op, const Refs&... refs) {
  StreamPicker picker(op);
  (picker.add(refs), ...);
  return picker.stream();
}

}  // namespace fusedopt::python
