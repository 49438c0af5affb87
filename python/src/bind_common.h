// bind_common.h — helpers shared by the bind_*.cpp files.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <vector>

#include "convert.h"

namespace fusedopt::python {

namespace py = pybind11;
using namespace pybind11::literals;

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

}  // namespace fusedopt::python
