// bind_common.h — helpers shared by the bind_*.cpp files.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "convert.h"
#include "fusedopt/params.h"

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

/// A hyper-parameter argument (lr, wd, momentum, ...): a float, an int or a NumPy number, as the
/// optimizer classes accept; never a bool, None or a string (pybind11's double would take True as 1.0).
struct Real {
  double value = 0.0;
  operator double() const { return value; }  // NOLINT: used exactly like the double it replaces
};

/// The optional GradScaler operands of an aggregated binding (keywords grad_scale=, found_inf=; None
/// = absent), converted like any array argument and kept alive until the call returns. The C++ API
/// validates them (float32, one element, the weights' device) before anything is written.
struct LossScaleArgs {
  std::optional<ArrayRef> grad_scale, found_inf;
  LossScaleArgs(py::handle gs, py::handle fi, const char* op) {
    if (!gs.is_none()) grad_scale = to_array_ref(gs, op, "grad_scale");
    if (!fi.is_none()) found_inf = to_array_ref(fi, op, "found_inf");
  }
  LossScale get() const {
    LossScale ls;
    if (grad_scale) ls.grad_scale = grad_scale->view;
    if (found_inf) ls.found_inf = found_inf->view;
    return ls;
  }
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

namespace pybind11::detail {
template <>
struct type_caster<fusedopt::python::Real> {
  PYBIND11_TYPE_CASTER(fusedopt::python::Real, const_name("float"));
  bool load(handle src, bool /*convert*/) {
    PyObject* o = src.ptr();
    if (PyFloat_Check(o)) {
      value.value = PyFloat_AS_DOUBLE(o);
      return true;
    }
    // Refused like anything else that is not a real number: pybind11 then raises TypeError naming
    // the call and its arguments.
    if (PyBool_Check(o) || o == Py_None || PyUnicode_Check(o) || PyBytes_Check(o) ||
        std::strcmp(Py_TYPE(o)->tp_name, "numpy.bool") == 0 ||
        std::strcmp(Py_TYPE(o)->tp_name, "numpy.bool_") == 0)
      return false;
    const double v = PyFloat_AsDouble(o);
    if (v == -1.0 && PyErr_Occurred() != nullptr) {
      PyErr_Clear();
      return false;
    }
    value.value = v;
    return true;
  }
  static handle cast(const fusedopt::python::Real& v, return_value_policy, handle) {
    return PyFloat_FromDouble(v.value);
  }
};
}  // namespace pybind11::detail
