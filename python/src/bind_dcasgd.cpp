// bind_dcasgd.cpp — Python bindings of DCASGD (MXNet's previous-weight form and the paper's backup
// form, constant or adaptive lambda): convert, release the GIL, call the C++ API.
#include <memory>
#include <optional>

#include "bind_common.h"
#include "fusedopt/dcasgd.h"

namespace fusedopt::python {

namespace {

/// Views of an optional list argument (None: empty).
void add_optional(ViewList& l, py::handle seq, const char* op, const char* name) {
  if (!seq.is_none()) l.add_all(seq, op, name);
  else l.start(0);
}

/// The scalars an aggregated DCASGD call shares (lrs / wds are read separately).
void set_shared(MultiDcasgdParams& p, Real momentum, Real lamda, Real rescale_grad,
                std::optional<Real> clip_gradient, Real ms_decay, Real eps) {
  p.momentum = momentum;
  p.lamda = lamda;
  p.rescale_grad = rescale_grad;
  p.clip_gradient = clip_gradient;
  p.ms_decay = ms_decay;
  p.eps = eps;
}

/// View lists and parameters of the aggregated DCASGD bindings (see ScratchLease).
struct DcasgdLists {
  ViewList w, g, m, prev, ms, w32;
  MultiDcasgdParams params;
  void release() {
    for (ViewList* l : {&w, &g, &m, &prev, &ms, &w32}) l->clear();
  }
  /// One aggregated call's arguments, for both forms (prev = the previous weights or the backups):
  /// the numbers first, so no view exists while a __float__ runs, then every list.
  void read(const char* op, py::handle lrs, py::handle wds, Real momentum, Real lamda,
            Real rescale_grad, std::optional<Real> clip_gradient, Real ms_decay, Real eps,
            py::handle weights, py::handle grads, py::handle moms, py::handle anchors,
            const char* anchor_name, py::handle mean_squares, py::handle weights32, bool master) {
    read_doubles(lrs, op, "lrs", params.lrs);
    read_doubles(wds, op, "wds", params.wds);
    set_shared(params, momentum, lamda, rescale_grad, clip_gradient, ms_decay, eps);
    w.add_all(weights, op, "weights");
    g.add_all(grads, op, "grads");
    add_optional(m, moms, op, "moms");
    prev.add_all(anchors, op, anchor_name);
    add_optional(ms, mean_squares, op, "mean_squares");
    if (master) w32.add_all(weights32, op, "weights32");
  }
};

std::optional<ArrayRef> optional_ref(py::handle obj, const char* op, const char* name) {
  if (obj.is_none()) return std::nullopt;
  return to_array_ref(obj, op, name);
}

const TensorView* view_or_null(const std::optional<ArrayRef>& r) { return r ? &r->view : nullptr; }

}  // namespace

void bind_dcasgd(py::module_& m) {
  for (const bool master : {false, true}) {
    m.def(
        master ? "multi_mp_dcasgd_update" : "multi_dcasgd_update",
        [master](py::handle weights, py::handle grads, py::handle moms, py::handle prevs,
                 py::handle weights32, py::handle mean_squares, py::handle lrs, py::handle wds,
                 Real momentum, Real lamda, Real rescale_grad,
                 std::optional<Real> clip_gradient, Real ms_decay, Real eps, py::handle grad_scale,
                 py::handle found_inf) {
          const char* op = master ? "multi_mp_dcasgd_update" : "multi_dcasgd_update";
          ScratchLease<DcasgdLists> scope;
          DcasgdLists& s = scope.get();
          s.read(op, lrs, wds, momentum, lamda, rescale_grad, clip_gradient, ms_decay, eps, weights,
                 grads, moms, prevs, master ? "prevs32" : "prevs", mean_squares, weights32, master);
          MultiDcasgdParams& p = s.params;
          const LossScaleArgs scale(grad_scale, found_inf, op);
          p.loss_scale = scale.get();
          const Stream stream = call_stream(op, s.w, s.g, s.m, s.prev, s.ms, s.w32, scale.grad_scale,
                                            scale.found_inf);
          py::gil_scoped_release release;
          if (master)
            fusedopt::multi_mp_dcasgd_update(s.w.views, s.g.views, s.m.views, s.prev.views,
                                             s.w32.views, s.ms.views, p, stream);
          else
            fusedopt::multi_dcasgd_update(s.w.views, s.g.views, s.m.views, s.prev.views, s.ms.views,
                                          p, stream);
        },
        "weights"_a, "grads"_a, "moms"_a.none(true), "prevs"_a, "weights32"_a.none(true),
        "mean_squares"_a.none(true) = py::none(), py::kw_only(), "lrs"_a, "wds"_a,
        "momentum"_a = 0.0, "lamda"_a = 0.04, "rescale_grad"_a = 1.0,
        "clip_gradient"_a = py::none(), "ms_decay"_a = 0.95, "eps"_a = 1e-7,
        "grad_scale"_a = py::none(), "found_inf"_a = py::none(),
        "Aggregated DCASGD over parallel lists (moms None: no momentum; mean_squares None: constant "
        "lamda); tensor k uses lrs[k], wds[k].");

    m.def(
        master ? "multi_mp_dcasgd_backup_update" : "multi_dcasgd_backup_update",
        [master](py::handle weights, py::handle grads, py::handle backups, py::handle weights32,
                 py::handle moms, py::handle mean_squares, py::handle lrs, py::handle wds,
                 Real momentum, Real lamda, Real rescale_grad,
                 std::optional<Real> clip_gradient, Real ms_decay, Real eps, py::handle grad_scale,
                 py::handle found_inf) {
          const char* op = master ? "multi_mp_dcasgd_backup_update" : "multi_dcasgd_backup_update";
          ScratchLease<DcasgdLists> scope;
          DcasgdLists& s = scope.get();
          s.read(op, lrs, wds, momentum, lamda, rescale_grad, clip_gradient, ms_decay, eps, weights,
                 grads, moms, backups, "backups", mean_squares, weights32, master);
          MultiDcasgdParams& p = s.params;
          const LossScaleArgs scale(grad_scale, found_inf, op);
          p.loss_scale = scale.get();
          const Stream stream = call_stream(op, s.w, s.g, s.m, s.prev, s.ms, s.w32, scale.grad_scale,
                                            scale.found_inf);
          py::gil_scoped_release release;
          if (master)
            fusedopt::multi_mp_dcasgd_backup_update(s.w.views, s.g.views, s.prev.views, s.w32.views,
                                                    s.m.views, s.ms.views, p, stream);
          else
            fusedopt::multi_dcasgd_backup_update(s.w.views, s.g.views, s.prev.views, s.m.views,
                                                 s.ms.views, p, stream);
        },
        "weights"_a, "grads"_a, "backups"_a, "weights32"_a.none(true), "moms"_a.none(true),
        "mean_squares"_a.none(true), py::kw_only(), "lrs"_a, "wds"_a, "momentum"_a = 0.0,
        "lamda"_a, "rescale_grad"_a = 1.0, "clip_gradient"_a = py::none(), "ms_decay"_a = 0.95,
        "eps"_a = 1e-7, "grad_scale"_a = py::none(), "found_inf"_a = py::none(),
        "Aggregated DCASGD with per-worker backups (only read) over parallel lists.");

    m.def(
        master ? "mp_dcasgd_backup_update" : "dcasgd_backup_update",
        [master](py::handle weight, py::handle grad, py::handle backup, py::handle weight32,
                 py::handle mom, py::handle mean_square, Real lr, Real lamda, Real momentum,
                 Real wd, Real rescale_grad, std::optional<Real> clip_gradient,
                 Real ms_decay, Real eps) {
          const char* op = master ? "mp_dcasgd_backup_update" : "dcasgd_backup_update";
          ArrayRef w = to_array_ref(weight, op, "weight"), g = to_array_ref(grad, op, "grad"),
                   b = to_array_ref(backup, op, "backup");
          std::optional<ArrayRef> w32;
          if (master) w32 = to_array_ref(weight32, op, "weight32");
          std::optional<ArrayRef> mm = optional_ref(mom, op, "mom");
          std::optional<ArrayRef> ms = optional_ref(mean_square, op, "mean_square");
          const DcasgdParams p{lr, wd, momentum, lamda, rescale_grad, clip_gradient, ms_decay, eps};
          const Stream stream = call_stream(op, w, g, b, w32, mm, ms);
          py::gil_scoped_release release;
          if (master)
            fusedopt::mp_dcasgd_backup_update(w.view, g.view, b.view, w32->view, view_or_null(mm),
                                              view_or_null(ms), p, stream);
          else
            fusedopt::dcasgd_backup_update(w.view, g.view, b.view, view_or_null(mm),
                                           view_or_null(ms), p, stream);
        },
        "weight"_a, "grad"_a, "backup"_a, "weight32"_a.none(true), "mom"_a.none(true),
        "mean_square"_a.none(true), py::kw_only(), "lr"_a, "lamda"_a, "momentum"_a = 0.0,
        "wd"_a = 0.0, "rescale_grad"_a = 1.0, "clip_gradient"_a = py::none(), "ms_decay"_a = 0.95,
        "eps"_a = 1e-7,
        "DCASGD with the pushing worker's backup (only read): d = r + lam_t*r*r*(w - backup).");
  }

  m.def(
      "check_dcasgd_backup_args",
      [](py::handle weight, py::handle grad, py::handle backup, py::handle weight32, py::handle mom,
         py::handle mean_square, Real lr, Real lamda, Real momentum, Real wd,
         Real rescale_grad, std::optional<Real> clip_gradient, Real ms_decay, Real eps) {
        const bool mp = !weight32.is_none();
        const char* op = mp ? "mp_dcasgd_backup_update" : "dcasgd_backup_update";
        ArrayRef w = to_array_ref(weight, op, "weight"), g = to_array_ref(grad, op, "grad"),
                 b = to_array_ref(backup, op, "backup");
        std::optional<ArrayRef> w32 = optional_ref(weight32, op, "weight32");
        std::optional<ArrayRef> mm = optional_ref(mom, op, "mom");
        std::optional<ArrayRef> ms = optional_ref(mean_square, op, "mean_square");
        const DcasgdParams p{lr, wd, momentum, lamda, rescale_grad, clip_gradient, ms_decay, eps};
        fusedopt::check_dcasgd_backup_args(w.view, g.view, b.view, view_or_null(w32),
                                           view_or_null(mm), view_or_null(ms), p);
      },
      "weight"_a, "grad"_a, "backup"_a, "weight32"_a.none(true), "mom"_a.none(true),
      "mean_square"_a.none(true), py::kw_only(), "lr"_a = 0.0, "lamda"_a = 0.0,
      "momentum"_a = 0.0, "wd"_a = 0.0, "rescale_grad"_a = 1.0, "clip_gradient"_a = py::none(),
      "ms_decay"_a = 0.95, "eps"_a = 1e-7,
      "Validate arguments as the dcasgd_backup operators do, without writing anything.");

  m.def(
      "dcasgd_update",
      [](py::handle weight, py::handle grad, py::handle mom, py::handle prev, py::handle mean_square,
         Real lr, Real momentum, Real lamda, Real wd, Real rescale_grad,
         std::optional<Real> clip_gradient, Real ms_decay, Real eps) {
        const char* op = "dcasgd_update";
        ArrayRef w = to_array_ref(weight, op, "weight"), g = to_array_ref(grad, op, "grad"),
                 pv = to_array_ref(prev, op, "prev");
        std::optional<ArrayRef> mm = optional_ref(mom, op, "mom");
        std::optional<ArrayRef> ms = optional_ref(mean_square, op, "mean_square");
        const DcasgdParams p{lr, wd, momentum, lamda, rescale_grad, clip_gradient, ms_decay, eps};
        const Stream stream = call_stream(op, w, g, mm, pv, ms);
        py::gil_scoped_release release;
        fusedopt::dcasgd_update(w.view, g.view, view_or_null(mm), pv.view, view_or_null(ms), p,
                                stream);
      },
      "weight"_a, "grad"_a, "mom"_a.none(true), "prev"_a, "mean_square"_a.none(true) = py::none(),
      py::kw_only(), "lr"_a, "momentum"_a = 0.0, "lamda"_a = 0.04, "wd"_a = 0.0,
      "rescale_grad"_a = 1.0, "clip_gradient"_a = py::none(), "ms_decay"_a = 0.95, "eps"_a = 1e-7,
      "DCASGD: d = r + lam_t*r*r*(w - prev); mom = momentum*mom - lr*d (or -lr*d); prev = w; "
      "w += step. lam_t = lamda, or lamda/sqrt(ms + eps) with a mean_square.");

  m.def(
      "check_dcasgd_args",
      [](py::handle weight, py::handle grad, py::handle mom, py::handle prev, py::handle weight32,
         py::handle mean_square, Real lr, Real momentum, Real lamda, Real wd,
         Real rescale_grad, std::optional<Real> clip_gradient, Real ms_decay, Real eps) {
        const bool mp = !weight32.is_none();
        const char* op = mp ? "mp_dcasgd_update" : "dcasgd_update";
        ArrayRef w = to_array_ref(weight, op, "weight"), g = to_array_ref(grad, op, "grad"),
                 pv = to_array_ref(prev, op, mp ? "prev32" : "prev");
        std::optional<ArrayRef> mm = optional_ref(mom, op, "mom");
        std::optional<ArrayRef> w32 = optional_ref(weight32, op, "weight32");
        std::optional<ArrayRef> ms = optional_ref(mean_square, op, "mean_square");
        const DcasgdParams p{lr, wd, momentum, lamda, rescale_grad, clip_gradient, ms_decay, eps};
        fusedopt::check_dcasgd_args(w.view, g.view, view_or_null(mm), pv.view, view_or_null(w32),
                                    view_or_null(ms), p);
      },
      "weight"_a, "grad"_a, "mom"_a.none(true), "prev"_a, "weight32"_a.none(true),
      "mean_square"_a.none(true) = py::none(), py::kw_only(), "lr"_a = 0.0, "momentum"_a = 0.0,
      "lamda"_a = 0.04, "wd"_a = 0.0, "rescale_grad"_a = 1.0, "clip_gradient"_a = py::none(),
      "ms_decay"_a = 0.95, "eps"_a = 1e-7,
      "Validate arguments as the dcasgd operators do, without writing anything.");

  m.def(
      "mp_dcasgd_update",
      [](py::handle weight, py::handle grad, py::handle mom, py::handle prev32, py::handle weight32,
         py::handle mean_square, Real lr, Real momentum, Real lamda, Real wd,
         Real rescale_grad, std::optional<Real> clip_gradient, Real ms_decay, Real eps) {
        const char* op = "mp_dcasgd_update";
        ArrayRef w = to_array_ref(weight, op, "weight"), g = to_array_ref(grad, op, "grad"),
                 pv = to_array_ref(prev32, op, "prev32"),
                 w32 = to_array_ref(weight32, op, "weight32");
        std::optional<ArrayRef> mm = optional_ref(mom, op, "mom");
        std::optional<ArrayRef> ms = optional_ref(mean_square, op, "mean_square");
        const DcasgdParams p{lr, wd, momentum, lamda, rescale_grad, clip_gradient, ms_decay, eps};
        const Stream stream = call_stream(op, w, g, mm, pv, w32, ms);
        py::gil_scoped_release release;
        fusedopt::mp_dcasgd_update(w.view, g.view, view_or_null(mm), pv.view, w32.view,
                                   view_or_null(ms), p, stream);
      },
      "weight"_a, "grad"_a, "mom"_a.none(true), "prev32"_a, "weight32"_a,
      "mean_square"_a.none(true) = py::none(), py::kw_only(), "lr"_a, "momentum"_a = 0.0,
      "lamda"_a = 0.04, "wd"_a = 0.0, "rescale_grad"_a = 1.0, "clip_gradient"_a = py::none(),
      "ms_decay"_a = 0.95, "eps"_a = 1e-7,
      "DCASGD on the float32 master weight32 (float32 prev32, mom, mean_square); weight = "
      "cast(weight32).");
}

}  // namespace fusedopt::python
