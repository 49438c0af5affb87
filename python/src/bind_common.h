// bind_common.h — helpers shared by the bind_*.cpp files.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <vector>

#include "convert.h"

namespace fusedopt::python {

namespace py = pybind11;
using namespace pybind11::literals;

/// Per-thread scratch of type T (view lists and parameters of an aggregated binding), reused across
/// calls so a warm call allocates nothing. A call leases the thread's instance; a nested call on the
/// same thread (a producer's __dlpack__ calling back into fusedopt) gets a fresh one. On release the
/// lease calls T::release() (drops the references to the call's arrays).
template <class T>
class ScratchLease {
 public:
  ScratchLease() {
    if (!busy()) {
      busy() = true;
      s_ = &shared();
    } else {
      own_ = std::make_unique<T>();
      s_ = own_.get();
    }
  }
  ~ScratchLease() {
    s_->release();
    if (s_ == &shared()) busy() = false;
  }
  ScratchLease(const ScratchLease&) = delete;
  ScratchLease& operator=(const ScratchLease&) = delete;
  T& get() { return *s_; }

 private:
  static T& shared() {
    thread_local T instance;
    return instance;
  }
  static bool& busy() {
    thread_local bool in_use = false;
    return in_use;
  }
  T* s_;
  std::unique_ptr<T> own_;
};

inline std::vector<TensorView> views(const std::vector<ArrayRef>& refs) {
  std::vector<TensorView> out;
  out.reserve(refs.size());
  for (const auto& r : refs) out.push_back(r.view);
  return out;
}

void bind_sgd(py::module_& m);
void bind_dcasgd(py::module_& m);
void bind_optimizer(py::module_& m);
void bind_prepared(py::module_& m);
void bind_plan(py::module_& m);

}  // namespace fusedopt::python
