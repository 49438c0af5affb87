// bind_sgd.cpp — Python bindings of the SGD family: convert, release the GIL, call the C++ API.
#include <optional>
#include <string>

#include "bind_common.h"
#include "fusedopt/errors.h"
#include "fusedopt/sgd.h"

namespace fusedopt::python {
namespace {

SgdParams sgd_params(double lr, double momentum, double wd, double rescale_grad,
                     std::optional<double> clip_gradient, bool lazy_update) {
  SgdParams p;
  p.lr = lr;
  p.momentum = momentum;
  p.wd = wd;
  p.rescale_grad = rescale_grad;
  p.clip_gradient = clip_gradient;
  p.lazy_update = lazy_update;
  return p;
}

MultiSgdParams multi_params(std::vector<double> lrs, std::vector<double> wds, double momentum,
                            double rescale_grad, std::optional<double> clip_gradient) {
  MultiSgdParams p;
  p.lrs = std::move(lrs);
  p.wds = std::move(wds);
  p.momentum = momentum;
  p.rescale_grad = rescale_grad;
  p.clip_gradient = clip_gradient;
  return p;
}

/// Splits a flat [w, g, ...]*n list after checking its length is a multiple of `per`.
std::vector<py::handle> flat_list(const py::sequence& arrays, std::size_t per, const char* op,
                                  const char* layout) {
  const std::size_t n = py::len(arrays);
  if (n % per != 0)
    throw ValueError(std::string(op) + ": arrays must be a flat list " + layout +
                     " (a multiple of " + std::to_string(per) + " arrays), got " +
                     std::to_string(n) + " arrays");
  std::vector<py::handle> items;
  items.reserve(n);
  for (std::size_t i = 0; i < n; ++i) items.push_back(arrays[i].ptr());
  return items;
}

RowSparseView rsp_view(const ArrayRef& data, const py::array& indices, const std::vector<std::int64_t>& shape,
                       const char* op) {
  RowSparseView g;
  g.data = data.view;
  if (shape.size() > static_cast<std::size_t>(TensorView::kMaxDims))
    throw ValueError(std::string(op) + ": grad has too many dimensions");
  g.ndim = static_cast<std::int32_t>(shape.size());
  for (std::size_t i = 0; i < shape.size(); ++i) g.shape[i] = shape[i];
  g.indices = static_cast<const std::int64_t*>(indices.data());
  g.num_indices = static_cast<std::int64_t>(indices.size());
  return g;
}

}  // namespace

void bind_sgd(py::module_& m) {
  m.def(
      "sgd_update",
      [](py::handle weight, py::handle grad, double lr, double wd, double rescale_grad,
         std::optional<double> clip_gradient, bool lazy_update) {
        const char* op = "sgd_update";
        ArrayRef w = to_array_ref(weight, op, "weight"), g = to_array_ref(grad, op, "grad");
        SgdParams p = sgd_params(lr, 0.0, wd, rescale_grad, clip_gradient, lazy_update);
        const Stream stream = call_stream(op, w, g);
        py::gil_scoped_release release;
        fusedopt::sgd_update(w.view, g.view, p, stream);
      },
      "weight"_a, "grad"_a, py::kw_only(), "lr"_a, "wd"_a = 0.0, "rescale_grad"_a = 1.0,
      "clip_gradient"_a = py::none(), "lazy_update"_a = true,
      "w = w - lr * (clip(rescale_grad * grad, clip_gradient) + wd * w), in place.");

  m.def(
      "sgd_mom_update",
      [](py::handle weight, py::handle grad, py::handle mom, double lr, double momentum, double wd,
         double rescale_grad, std::optional<double> clip_gradient, bool lazy_update) {
        const char* op = "sgd_mom_update";
        ArrayRef w = to_array_ref(weight, op, "weight"), g = to_array_ref(grad, op, "grad"),
                 mm = to_array_ref(mom, op, "mom");
        SgdParams p = sgd_params(lr, momentum, wd, rescale_grad, clip_gradient, lazy_update);
        const Stream stream = call_stream(op, w, g, mm);
        py::gil_scoped_release release;
        fusedopt::sgd_mom_update(w.view, g.view, mm.view, p, stream);
      },
      "weight"_a, "grad"_a, "mom"_a, py::kw_only(), "lr"_a, "momentum"_a = 0.0, "wd"_a = 0.0,
      "rescale_grad"_a = 1.0, "clip_gradient"_a = py::none(), "lazy_update"_a = true,
      "mom = momentum * mom - lr * r; w = w + mom, with r = clip(rescale_grad * grad) + wd * w.");

  m.def(
      "mp_sgd_update",
      [](py::handle weight, py::handle grad, py::handle weight32, double lr, double wd,
         double rescale_grad, std::optional<double> clip_gradient, bool lazy_update) {
        const char* op = "mp_sgd_update";
        ArrayRef w = to_array_ref(weight, op, "weight"), g = to_array_ref(grad, op, "grad"),
                 w32 = to_array_ref(weight32, op, "weight32");
        SgdParams p = sgd_params(lr, 0.0, wd, rescale_grad, clip_gradient, lazy_update);
        const Stream stream = call_stream(op, w, g, w32);
        py::gil_scoped_release release;
        fusedopt::mp_sgd_update(w.view, g.view, w32.view, p, stream);
      },
      "weight"_a, "grad"_a, "weight32"_a, py::kw_only(), "lr"_a, "wd"_a = 0.0,
      "rescale_grad"_a = 1.0, "clip_gradient"_a = py::none(), "lazy_update"_a = true,
      "sgd_update on the float32 master weight32; weight = cast(weight32).");

  m.def(
      "mp_sgd_mom_update",
      [](py::handle weight, py::handle grad, py::handle mom, py::handle weight32, double lr,
         double momentum, double wd, double rescale_grad, std::optional<double> clip_gradient,
         bool lazy_update) {
        const char* op = "mp_sgd_mom_update";
        ArrayRef w = to_array_ref(weight, op, "weight"), g = to_array_ref(grad, op, "grad"),
                 mm = to_array_ref(mom, op, "mom"), w32 = to_array_ref(weight32, op, "weight32");
        SgdParams p = sgd_params(lr, momentum, wd, rescale_grad, clip_gradient, lazy_update);
        const Stream stream = call_stream(op, w, g, mm, w32);
        py::gil_scoped_release release;
        fusedopt::mp_sgd_mom_update(w.view, g.view, mm.view, w32.view, p, stream);
      },
      "weight"_a, "grad"_a, "mom"_a, "weight32"_a, py::kw_only(), "lr"_a, "momentum"_a = 0.0,
      "wd"_a = 0.0, "rescale_grad"_a = 1.0, "clip_gradient"_a = py::none(),
      "lazy_update"_a = true,
      "sgd_mom_update on the float32 master weight32 and float32 mom; weight = cast(weight32).");

  m.def(
      "sgd_update_rsp",
      [](py::handle weight, py::handle data, py::array indices, std::vector<std::int64_t> shape,
         double lr, double wd, double rescale_grad, std::optional<double> clip_gradient,
         bool lazy_update) {
        const char* op = "sgd_update";
        ArrayRef w = to_array_ref(weight, op, "weight"), d = to_array_ref(data, op, "grad.data");
        RowSparseView g = rsp_view(d, indices, shape, op);
        SgdParams p = sgd_params(lr, 0.0, wd, rescale_grad, clip_gradient, lazy_update);
        const Stream stream = call_stream(op, w, d);
        py::gil_scoped_release release;
        fusedopt::sgd_update(w.view, g, p, stream);
      },
      "weight"_a, "data"_a, "indices"_a.noconvert(), "shape"_a, py::kw_only(), "lr"_a, "wd"_a = 0.0,
      "rescale_grad"_a = 1.0, "clip_gradient"_a = py::none(), "lazy_update"_a = true,
      "sgd_update with a row-sparse gradient (data rows, int64 indices, dense shape).");

  m.def(
      "sgd_mom_update_rsp",
      [](py::handle weight, py::handle data, py::array indices, std::vector<std::int64_t> shape,
         py::handle mom, double lr, double momentum, double wd, double rescale_grad,
         std::optional<double> clip_gradient, bool lazy_update) {
        const char* op = "sgd_mom_update";
        ArrayRef w = to_array_ref(weight, op, "weight"), d = to_array_ref(data, op, "grad.data"),
                 mm = to_array_ref(mom, op, "mom");
        RowSparseView g = rsp_view(d, indices, shape, op);
        SgdParams p = sgd_params(lr, momentum, wd, rescale_grad, clip_gradient, lazy_update);
        const Stream stream = call_stream(op, w, d, mm);
        py::gil_scoped_release release;
        fusedopt::sgd_mom_update(w.view, g, mm.view, p, stream);
      },
      "weight"_a, "data"_a, "indices"_a.noconvert(), "shape"_a, "mom"_a, py::kw_only(), "lr"_a,
      "momentum"_a = 0.0, "wd"_a = 0.0, "rescale_grad"_a = 1.0, "clip_gradient"_a = py::none(),
      "lazy_update"_a = true, "sgd_mom_update with a row-sparse gradient.");

  m.def(
      "check_sgd_args",
      [](py::handle weight, py::handle grad, py::handle mom, py::handle weight32, double lr,
         double momentum, double wd, double rescale_grad, std::optional<double> clip_gradient) {
        const bool mp = !weight32.is_none();
        const char* op = mp ? (mom.is_none() ? "mp_sgd_update" : "mp_sgd_mom_update")
                            : (mom.is_none() ? "sgd_update" : "sgd_mom_update");
        ArrayRef w = to_array_ref(weight, op, "weight"), g = to_array_ref(grad, op, "grad");
        std::optional<ArrayRef> mm, w32;
        if (!mom.is_none()) mm = to_array_ref(mom, op, "mom");
        if (mp) w32 = to_array_ref(weight32, op, "weight32");
        SgdParams p = sgd_params(lr, momentum, wd, rescale_grad, clip_gradient, true);
        fusedopt::check_sgd_args(w.view, g.view, mm ? &mm->view : nullptr,
                                 w32 ? &w32->view : nullptr, p);
      },
      "weight"_a, "grad"_a, "mom"_a.none(true), "weight32"_a.none(true), py::kw_only(), "lr"_a,
      "momentum"_a = 0.0, "wd"_a = 0.0, "rescale_grad"_a = 1.0, "clip_gradient"_a = py::none(),
      "Validate arguments as the sgd operators do, without writing anything.");

  m.def(
      "check_sgd_args_rsp",
      [](py::handle weight, py::handle data, py::array indices, std::vector<std::int64_t> shape,
         py::handle mom, double lr, double momentum, double wd, double rescale_grad,
         std::optional<double> clip_gradient, bool lazy_update) {
        const char* op = mom.is_none() ? "sgd_update" : "sgd_mom_update";
        ArrayRef w = to_array_ref(weight, op, "weight"), d = to_array_ref(data, op, "grad.data");
        std::optional<ArrayRef> mm;
        if (!mom.is_none()) mm = to_array_ref(mom, op, "mom");
        RowSparseView g = rsp_view(d, indices, shape, op);
        SgdParams p = sgd_params(lr, momentum, wd, rescale_grad, clip_gradient, lazy_update);
        fusedopt::check_sgd_args(w.view, g, mm ? &mm->view : nullptr, p);
      },
      "weight"_a, "data"_a, "indices"_a.noconvert(), "shape"_a, "mom"_a.none(true), py::kw_only(),
      "lr"_a, "momentum"_a = 0.0, "wd"_a = 0.0, "rescale_grad"_a = 1.0,
      "clip_gradient"_a = py::none(), "lazy_update"_a = true,
      "Validate arguments as the row-sparse sgd operators do, without writing anything.");

  struct MultiSpec {
    const char* name;
    std::size_t per;
    const char* layout;
    bool mom;
    bool master;
  };
  static const MultiSpec specs[] = {
      {"multi_sgd_update", 2, "[weight, grad] * n", false, false},
      {"multi_sgd_mom_update", 3, "[weight, grad, mom] * n", true, false},
      {"multi_mp_sgd_update", 3, "[weight, grad, weight32] * n", false, true},
      {"multi_mp_sgd_mom_update", 4, "[weight, grad, mom, weight32] * n", true, true},
  };
  for (const MultiSpec& spec : specs) {
    const MultiSpec* sp = &spec;
    m.def(
        spec.name,
        [sp](const py::sequence& arrays, std::vector<double> lrs, std::vector<double> wds,
             double momentum, double rescale_grad, std::optional<double> clip_gradient) {
          const char* op = sp->name;
          auto items = flat_list(arrays, sp->per, op, sp->layout);
          auto w = list_refs(items, sp->per, 0, op, "weights");
          auto g = list_refs(items, sp->per, 1, op, "grads");
          std::vector<ArrayRef> mm, w32;
          if (sp->mom) mm = list_refs(items, sp->per, 2, op, "moms");
          if (sp->master) w32 = list_refs(items, sp->per, sp->per - 1, op, "weights32");
          MultiSgdParams p = multi_params(std::move(lrs), std::move(wds), momentum, rescale_grad,
                                          clip_gradient);
          auto wv = views(w), gv = views(g), mv = views(mm), w32v = views(w32);
          const Stream stream = call_stream(op, w, g, mm, w32);
          py::gil_scoped_release release;
          if (sp->mom && sp->master) fusedopt::multi_mp_sgd_mom_update(wv, gv, mv, w32v, p, stream);
          else if (sp->mom) fusedopt::multi_sgd_mom_update(wv, gv, mv, p, stream);
          else if (sp->master) fusedopt::multi_mp_sgd_update(wv, gv, w32v, p, stream);
          else fusedopt::multi_sgd_update(wv, gv, p, stream);
        },
        "arrays"_a, py::kw_only(), "lrs"_a, "wds"_a, "momentum"_a = 0.0, "rescale_grad"_a = 1.0,
        "clip_gradient"_a = py::none(),
        (std::string("Aggregated update of n tensors given as a flat list ") + spec.layout +
         "; tensor k uses lrs[k] and wds[k].")
            .c_str());
  }
}

}  // namespace fusedopt::python
