// bind_common.h — helpers shared by the bind_*.cpp files.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <vector>

#include "convert.h"

namespace fusedopt::python {

namespace py = pybind11;
using namespace pybind11::literals;

/// Converts items stride*k + offset of a flat [w0, g0, (m0,) ..., w1, g1, ...] list.
inline std::vector<ArrayRef> list_refs(const std::vector<py::handle>& items, std::size_t stride,
                                       std::size_t offset, const char* op, const char* name) {
  std::vector<ArrayRef> out;
  out.reserve(items.size() / stride);
  for (std::size_t k = 0; offset + k * stride < items.size(); ++k)
    out.push_back(to_array_ref(items[offset + k * stride], op, name, static_cast<std::int64_t>(k)));
  return out;
}

inline std::vector<TensorView> views(const std::vector<ArrayRef>& refs) {
  std::vector<TensorView> out;
  out.reserve(refs.size());
  for (const auto& r : refs) out.push_back(r.view);
  return out;
}

void bind_sgd(py::module_& m);
void bind_dcasgd(py::module_& m);
void bind_optimizer(py::module_& m);

}  // namespace fusedopt::python
