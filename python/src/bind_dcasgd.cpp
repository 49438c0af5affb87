// bind_dcasgd.cpp — Python bindings of DCASGD: convert, release the GIL, call the C++ API.
#include <optional>

#include "bind_common.h"
#include "fusedopt/dcasgd.h"

namespace fusedopt::python {

void bind_dcasgd(py::module_& m) {
  m.def(
      "dcasgd_update",
      [](py::handle weight, py::handle grad, py::handle mom, py::handle prev, double lr,
         double momentum, double lamda, double wd, double rescale_grad,
         std::optional<double> clip_gradient) {
        const char* op = "dcasgd_update";
        ArrayRef w = to_array_ref(weight, op, "weight"), g = to_array_ref(grad, op, "grad"),
                 pv = to_array_ref(prev, op, "prev");
        std::optional<ArrayRef> mm;
        if (!mom.is_none()) mm = to_array_ref(mom, op, "mom");
        const DcasgdParams p{lr, wd, momentum, lamda, rescale_grad, clip_gradient};
        const Stream stream = call_stream(op, w, g, mm, pv);
        py::gil_scoped_release release;
        fusedopt::dcasgd_update(w.view, g.view, mm ? &mm->view : nullptr, pv.view, p, stream);
      },
      "weight"_a, "grad"_a, "mom"_a.none(true), "prev"_a, py::kw_only(), "lr"_a,
      "momentum"_a = 0.0, "lamda"_a = 0.04, "wd"_a = 0.0, "rescale_grad"_a = 1.0,
      "clip_gradient"_a = py::none(),
      "DCASGD: d = r + lamda*r*r*(w - prev); mom = momentum*mom - lr*d (or -lr*d); prev = w; "
      "w += step.");

  m.def(
      "check_dcasgd_args",
      [](py::handle weight, py::handle grad, py::handle mom, py::handle prev, py::handle weight32,
         double lr, double momentum, double lamda, double wd, double rescale_grad,
         std::optional<double> clip_gradient) {
        const bool mp = !weight32.is_none();
        const char* op = mp ? "mp_dcasgd_update" : "dcasgd_update";
        ArrayRef w = to_array_ref(weight, op, "weight"), g = to_array_ref(grad, op, "grad"),
                 pv = to_array_ref(prev, op, mp ? "prev32" : "prev");
        std::optional<ArrayRef> mm, w32;
        if (!mom.is_none()) mm = to_array_ref(mom, op, "mom");
        if (mp) w32 = to_array_ref(weight32, op, "weight32");
        const DcasgdParams p{lr, wd, momentum, lamda, rescale_grad, clip_gradient};
        fusedopt::check_dcasgd_args(w.view, g.view, mm ? &mm->view : nullptr, pv.view,
                                    w32 ? &w32->view : nullptr, p);
      },
      "weight"_a, "grad"_a, "mom"_a.none(true), "prev"_a, "weight32"_a.none(true), py::kw_only(),
      "lr"_a, "momentum"_a = 0.0, "lamda"_a = 0.04, "wd"_a = 0.0, "rescale_grad"_a = 1.0,
      "clip_gradient"_a = py::none(),
      "Validate arguments as the dcasgd operators do, without writing anything.");

  m.def(
      "mp_dcasgd_update",
      [](py::handle weight, py::handle grad, py::handle mom, py::handle prev32, py::handle weight32,
         double lr, double momentum, double lamda, double wd, double rescale_grad,
         std::optional<double> clip_gradient) {
        const char* op = "mp_dcasgd_update";
        ArrayRef w = to_array_ref(weight, op, "weight"), g = to_array_ref(grad, op, "grad"),
                 pv = to_array_ref(prev32, op, "prev32"),
                 w32 = to_array_ref(weight32, op, "weight32");
        std::optional<ArrayRef> mm;
        if (!mom.is_none()) mm = to_array_ref(mom, op, "mom");
        const DcasgdParams p{lr, wd, momentum, lamda, rescale_grad, clip_gradient};
        const Stream stream = call_stream(op, w, g, mm, pv, w32);
        py::gil_scoped_release release;
        fusedopt::mp_dcasgd_update(w.view, g.view, mm ? &mm->view : nullptr, pv.view, w32.view, p, stream);
      },
      "weight"_a, "grad"_a, "mom"_a.none(true), "prev32"_a, "weight32"_a, py::kw_only(), "lr"_a,
      "momentum"_a = 0.0, "lamda"_a = 0.04, "wd"_a = 0.0, "rescale_grad"_a = 1.0,
      "clip_gradient"_a = py::none(),
      "DCASGD on the float32 master weight32 (float32 prev32, mom); weight = cast(weight32).");
}

}  // namespace fusedopt::python
