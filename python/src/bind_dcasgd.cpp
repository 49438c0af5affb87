// bind_dcasgd.cpp — Python bindings of DCASGD: convert, release the GIL, call the C++ API.
#include <memory>
#include <optional>

#include "bind_common.h"
#include "fusedopt/dcasgd.h"

namespace fusedopt::python {

namespace {

/// View lists and parameters of the aggregated DCASGD bindings (see ScratchLease).
struct DcasgdLists {
  ViewList w, g, m, prev, w32;
  MultiDcasgdParams params;
  void release() {
    for (ViewList* l : {&w, &g, &m, &prev, &w32}) l->clear();
  }
};

}  // namespace

void bind_dcasgd(py::module_& m) {
  for (const bool master : {false, true}) {
    m.def(
        master ? "multi_mp_dcasgd_update" : "multi_dcasgd_update",
        [master](py::handle weights, py::handle grads, py::handle moms, py::handle prevs,
                 py::handle weights32, py::handle lrs, py::handle wds, Real momentum,
                 Real lamda, Real rescale_grad, std::optional<Real> clip_gradient) {
          const char* op = master ? "multi_mp_dcasgd_update" : "multi_dcasgd_update";
          ScratchLease<DcasgdLists> scope;
          DcasgdLists& s = scope.get();
          MultiDcasgdParams& p = s.params;
          read_doubles(lrs, op, "lrs", p.lrs);  // numbers first: no view exists during __float__
          read_doubles(wds, op, "wds", p.wds);
          s.w.add_all(weights, op, "weights");
          s.g.add_all(grads, op, "grads");
          if (!moms.is_none()) s.m.add_all(moms, op, "moms");
          else s.m.start(0);
          s.prev.add_all(prevs, op, master ? "prevs32" : "prevs");
          if (master) s.w32.add_all(weights32, op, "weights32");
          p.momentum = momentum;
          p.lamda = lamda;
          p.rescale_grad = rescale_grad;
          p.clip_gradient = clip_gradient;
          const Stream stream = call_stream(op, s.w, s.g, s.m, s.prev, s.w32);
          py::gil_scoped_release release;
          if (master)
            fusedopt::multi_mp_dcasgd_update(s.w.views, s.g.views, s.m.views, s.prev.views,
                                             s.w32.views, p, stream);
          else
            fusedopt::multi_dcasgd_update(s.w.views, s.g.views, s.m.views, s.prev.views, p, stream);
        },
        "weights"_a, "grads"_a, "moms"_a.none(true), "prevs"_a, "weights32"_a.none(true),
        py::kw_only(), "lrs"_a, "wds"_a, "momentum"_a = 0.0, "lamda"_a = 0.04,
        "rescale_grad"_a = 1.0, "clip_gradient"_a = py::none(),
        "Aggregated DCASGD over parallel lists (moms None: no momentum); tensor k uses lrs[k], wds[k].");
  }

  m.def(
      "dcasgd_update",
      [](py::handle weight, py::handle grad, py::handle mom, py::handle prev, Real lr,
         Real momentum, Real lamda, Real wd, Real rescale_grad,
         std::optional<Real> clip_gradient) {
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
         Real lr, Real momentum, Real lamda, Real wd, Real rescale_grad,
         std::optional<Real> clip_gradient) {
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
         Real lr, Real momentum, Real lamda, Real wd, Real rescale_grad,
         std::optional<Real> clip_gradient) {
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
