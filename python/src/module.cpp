// module.cpp — PYBIND11_MODULE(_core): exception mapping, capability queries, and the bind_* calls.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bind_common.h"
#include "fusedopt/cpu_capability.h"
#include "fusedopt/cuda.h"
#include "fusedopt/errors.h"
#include "fusedopt/version.h"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "fusedopt native kernels (private; use the fusedopt package)";
  m.attr("__version__") = FUSEDOPT_VERSION_STRING;
  m.attr("built_with_cuda") = bool(FUSEDOPT_WITH_CUDA);

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const fusedopt::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const fusedopt::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const fusedopt::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });

  m.def("cpu_capability", &fusedopt::cpu_capability, "The CPU kernel variant in use.");
  m.def("supported_cpu_capabilities", &fusedopt::supported_cpu_capabilities,
        "CPU kernel variants compiled in and supported by this CPU, lowest first.");
  m.def("set_cpu_capability", &fusedopt::set_cpu_capability, py::arg("name"),
        "Force a CPU kernel variant (baseline, avx2, avx512).");
  m.def("cpu_num_threads", &fusedopt::cpu_num_threads, "Threads the CPU kernels use.");
  m.def("cuda_device_count", &fusedopt::cuda_device_count,
        "CUDA devices the kernels can use (0 without CUDA support, a GPU or a driver).");

  fusedopt::python::bind_sgd(m);
  fusedopt::python::bind_dcasgd(m);
  fusedopt::python::bind_optimizer(m);
  fusedopt::python::bind_prepared(m);
  fusedopt::python::bind_plan(m);
  fusedopt::python::bind_dlpack_testing(m);
}
