// dlpack.h — the DLPack consumer: any object with __dlpack__ (PyTorch, CuPy, NumPy >= 2.1 through a
// wrapper, ...) to a fusedopt::TensorView, zero-copy. A tensor that fusedopt would have to copy, or
// cannot describe exactly, is refused with an error naming the argument (PITFALLS.md (c)).
//
// Protocol, in order:
//  1. `fusedopt._arrays._dlpack_export(obj)` (the Python adapter) returns the object to export
//     (torch tensors that require grad are detached there, explicitly), the `stream` to pass for CUDA
//     tensors (the producer's current stream; never 0 or None) and how far a legacy capsule can be
//     trusted to be writable.
//  2. `__dlpack__(max_version=(1, 0)[, stream=s])`, or the plain call on TypeError (older producers).
//  3. The capsule name says which struct it holds; everything is validated while the capsule still
//     owns the tensor: on any error the capsule is left as it was and its own destructor calls the
//     producer's deleter (exactly once). The one exception is a versioned capsule of another major
//     version: per the DLPack ABI we call its deleter ourselves and mark the capsule used.
//  4. On success the capsule is renamed "used_dltensor[_versioned]" and a DLPackHolder owns the
//     managed tensor: it calls the deleter exactly once (NULL allowed), with the GIL held, when the
//     ArrayRef that carries it is destroyed — after the kernel has returned.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>
#include <string>

#include "fusedopt/tensor_view.h"

namespace fusedopt::python {

/// The qualified name of an object's type, for error messages.
std::string type_name(pybind11::handle obj);

namespace py = pybind11;

struct ArrayRef;

/// An argument's label for messages ("sgd_update: weights[3]"), built only when a message needs it.
struct ArgLabel {
  const char* op;
  const char* arg;
  std::int64_t index = -1;  ///< >= 0 for list arguments
  std::string str() const;
};

/// Owns a managed DLPack tensor taken from a capsule; calls its deleter exactly once. Move-only.
class DLPackHolder {
 public:
  DLPackHolder() = default;
  DLPackHolder(void* managed, bool versioned) : managed_(managed), versioned_(versioned) {}
  DLPackHolder(const DLPackHolder&) = delete;
  DLPackHolder& operator=(const DLPackHolder&) = delete;
  DLPackHolder(DLPackHolder&& o) noexcept : managed_(o.managed_), versioned_(o.versioned_) {
    o.managed_ = nullptr;
  }
  DLPackHolder& operator=(DLPackHolder&& o) noexcept {
    if (this != &o) {
      reset();
      managed_ = o.managed_;
      versioned_ = o.versioned_;
      o.managed_ = nullptr;
    }
    return *this;
  }
  ~DLPackHolder() { reset(); }

  /// Calls the producer's deleter now (acquiring the GIL if needed); idempotent.
  void reset() noexcept;
  bool owns() const { return managed_ != nullptr; }

 private:
  void* managed_ = nullptr;  ///< DLManagedTensor* or DLManagedTensorVersioned*
  bool versioned_ = false;
};

/// Converts a DLPack producer `obj` to a view: through its type's C exchange table when fusedopt uses
/// it (PyTorch) and the producer accepts, else by the protocol above; nullopt when `obj` has no
/// __dlpack__ at all. `label` names the argument in messages ("sgd_update: weight"); `output` is true
/// for arrays the operator writes (weights, states, masters): a copied (IS_COPIED) or untrusted legacy
/// tensor is refused for those, accepted for grads.
std::optional<ArrayRef> import_dlpack(py::handle obj, const ArgLabel& label, bool output);

/// The first step of import_dlpack, for callers that keep no ArrayRef: fills `*view` (and `*stream`
/// for a CUDA tensor, else resets it) through `obj`'s producer's C exchange table, with the same
/// checks, and returns true; returns false, with nothing pending, when that table is not used for
/// `obj` (then import_dlpack takes the protocol path). The caller keeps `obj` alive: nothing else
/// holds the memory.
bool exchange_view(py::handle obj, const ArgLabel& label, bool output, TensorView* view,
                   std::optional<Stream>* stream);

/// Whether `obj` still exports exactly `view` (memory, dtype, shape, strides, device), re-read through
/// its producer's C exchange table (PyTorch) without running Python code: 1 yes, 0 no, -1 when
/// `obj`'s type has no exchange table fusedopt uses.
int exchange_matches(py::handle obj, const TensorView& view);

/// Registers `_core._testing`: a hand-made DLPack producer for the consumer's tests
/// (`make_tensor(...)`) and `inspect(obj, name)`, which returns the view `to_array_ref` builds.
void bind_dlpack_testing(py::module_& m);

}  // namespace fusedopt::python
