// bind_sgd.cpp — Python bindings of the SGD family: convert, release the GIL, call the C++ API.
#include <memory>
#include <optional>
#include <string>

#include "bind_common.h"
#include "fusedopt/errors.h"
#include "fusedopt/sgd.h"

namespace fusedopt::python {
namespace {

/// The items of a flat [w, g, ...]*n sequence as a tuple (Note [callbacks during conversion]), after
/// checking the length is a multiple of `per`.
py::tuple flat_sequence(py::handle arrays, std::size_t per, const char* op, const char* layout) {
  py::tuple seq = snapshot_sequence(arrays, op, "arrays");
  const auto n = static_cast<std::size_t>(PyTuple_GET_SIZE(seq.ptr()));
  if (n % per != 0)
    throw ValueError(std::string(op) + ": arrays must be a flat list " + layout +
                     " (a multiple of " + std::to_string(per) + " arrays), got " +
                     std::to_string(n) + " arrays");
  return seq;
}

/// Fills `out` with views of operand `offset` of every tensor in a flat tuple.
void list_views(const py::tuple& seq, std::size_t per, std::size_t offset, const char* op,
                const char* name, ViewList& out) {
  const auto n = static_cast<std::size_t>(PyTuple_GET_SIZE(seq.ptr())) / per;
  out.start(n);
  for (std::size_t k = 0; k < n; ++k)
    out.add(PyTuple_GET_ITEM(seq.ptr(), static_cast<Py_ssize_t>(k * per + offset)), op, name,
            static_cast<std::int64_t>(k));
}

/// View lists and parameters of the multi_* bindings (see ScratchLease).
struct ListScratch {
  ViewList w, g, m, w32;
  MultiSgdParams params;
  void release() {
    for (ViewList* l : {&w, &g, &m, &w32}) l->clear();
  }
};
using ListScope = ScratchLease<ListScratch>;

/// Reads lrs and wds into the scratch parameters: before any array is converted, so a __float__
/// runs before views exist.
void read_rates(const char* op, ListScratch& s, py::handle lrs, py::handle wds) {
  read_doubles(lrs, op, "lrs", s.params.lrs);
  read_doubles(wds, op, "wds", s.params.wds);
}

/// Releases the GIL and runs the aggregated operator on the views and rates already in `s`.
void run_multi(const char* op, bool mom, bool master, ListScratch& s, Real momentum,
               Real rescale_grad, std::optional<Real> clip_gradient, py::handle grad_scale,
               py::handle found_inf) {
  MultiSgdParams& p = s.params;
  p.momentum = momentum;
  p.rescale_grad = rescale_grad;
  p.clip_gradient = clip_gradient;
  const LossScaleArgs scale(grad_scale, found_inf, op);
  p.loss_scale = scale.get();
  const Stream stream = call_stream(op, s.w, s.g, s.m, s.w32, scale.grad_scale, scale.found_inf);
  py::gil_scoped_release release;
  if (mom && master) fusedopt::multi_mp_sgd_mom_update(s.w.views, s.g.views, s.m.views, s.w32.views, p, stream);
  else if (mom) fusedopt::multi_sgd_mom_update(s.w.views, s.g.views, s.m.views, p, stream);
  else if (master) fusedopt::multi_mp_sgd_update(s.w.views, s.g.views, s.w32.views, p, stream);
  else fusedopt::multi_sgd_update(s.w.views, s.g.views, p, stream);
}

/// The row-sparse gradient of a binding. `indices` must be what the kernels read: a one-dimensional,
/// C-contiguous, aligned, native-endian int64 NumPy array (RowSparseArray makes one; an attribute
/// replaced afterwards is checked here, never reinterpreted).
RowSparseView rsp_view(const ArrayRef& data, py::handle indices_obj,
                       const std::vector<std::int64_t>& shape, const char* op) {
  if (!py::isinstance<py::array>(indices_obj))
    throw TypeError(std::string(op) + ": grad.indices must be a native-endian int64 NumPy array, got " +
                    type_name(indices_obj));
  const auto indices = py::reinterpret_borrow<py::array>(indices_obj);
  const py::dtype dt = indices.dtype();
  const bool int64 = dt.kind() == 'i' && dt.itemsize() == 8 &&
                     dt.byteorder() != (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? '>' : '<');
  if (!int64)
    throw TypeError(std::string(op) + ": grad.indices must be a native-endian int64 array, got " +
                    py::str(dt.attr("str")).cast<std::string>());
  if (indices.ndim() != 1)
    throw ValueError(std::string(op) + ": grad.indices must be one-dimensional, got " +
                     std::to_string(indices.ndim()) + " dimensions");
  constexpr int kFlags = py::array::c_style;
  if ((indices.flags() & kFlags) != kFlags ||
      reinterpret_cast<std::uintptr_t>(indices.data()) % alignof(std::int64_t) != 0)
    throw ValueError(std::string(op) + ": grad.indices must be a C-contiguous, aligned array "
                     "(fusedopt reads it in place), got strides (" +
                     std::to_string(indices.strides(0)) + ",)");
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
      [](py::handle weight, py::handle grad, Real lr, Real wd, Real rescale_grad,
         std::optional<Real> clip_gradient, bool lazy_update) {
        const char* op = "sgd_update";
        ArrayRef w = to_array_ref(weight, op, "weight"), g = to_array_ref(grad, op, "grad");
        const SgdParams p{lr, wd, 0.0, rescale_grad, clip_gradient, lazy_update};
        const Stream stream = call_stream(op, w, g);
        py::gil_scoped_release release;
        fusedopt::sgd_update(w.view, g.view, p, stream);
      },
      "weight"_a, "grad"_a, py::kw_only(), "lr"_a, "wd"_a = 0.0, "rescale_grad"_a = 1.0,
      "clip_gradient"_a = py::none(), "lazy_update"_a.noconvert() = true,
      "w = w - lr * (clip(rescale_grad * grad, clip_gradient) + wd * w), in place.");

  m.def(
      "sgd_mom_update",
      [](py::handle weight, py::handle grad, py::handle mom, Real lr, Real momentum, Real wd,
         Real rescale_grad, std::optional<Real> clip_gradient, bool lazy_update) {
        const char* op = "sgd_mom_update";
        ArrayRef w = to_array_ref(weight, op, "weight"), g = to_array_ref(grad, op, "grad"),
                 mm = to_array_ref(mom, op, "mom");
        const SgdParams p{lr, wd, momentum, rescale_grad, clip_gradient, lazy_update};
        const Stream stream = call_stream(op, w, g, mm);
        py::gil_scoped_release release;
        fusedopt::sgd_mom_update(w.view, g.view, mm.view, p, stream);
      },
      "weight"_a, "grad"_a, "mom"_a, py::kw_only(), "lr"_a, "momentum"_a = 0.0, "wd"_a = 0.0,
      "rescale_grad"_a = 1.0, "clip_gradient"_a = py::none(), "lazy_update"_a.noconvert() = true,
      "mom = momentum * mom - lr * r; w = w + mom, with r = clip(rescale_grad * grad) + wd * w.");

  m.def(
      "mp_sgd_update",
      [](py::handle weight, py::handle grad, py::handle weight32, Real lr, Real wd,
         Real rescale_grad, std::optional<Real> clip_gradient, bool lazy_update) {
        const char* op = "mp_sgd_update";
        ArrayRef w = to_array_ref(weight, op, "weight"), g = to_array_ref(grad, op, "grad"),
                 w32 = to_array_ref(weight32, op, "weight32");
        const SgdParams p{lr, wd, 0.0, rescale_grad, clip_gradient, lazy_update};
        const Stream stream = call_stream(op, w, g, w32);
        py::gil_scoped_release release;
        fusedopt::mp_sgd_update(w.view, g.view, w32.view, p, stream);
      },
      "weight"_a, "grad"_a, "weight32"_a, py::kw_only(), "lr"_a, "wd"_a = 0.0,
      "rescale_grad"_a = 1.0, "clip_gradient"_a = py::none(), "lazy_update"_a.noconvert() = true,
      "sgd_update on the float32 master weight32; weight = cast(weight32).");

  m.def(
      "mp_sgd_mom_update",
      [](py::handle weight, py::handle grad, py::handle mom, py::handle weight32, Real lr,
         Real momentum, Real wd, Real rescale_grad, std::optional<Real> clip_gradient,
         bool lazy_update) {
        const char* op = "mp_sgd_mom_update";
        ArrayRef w = to_array_ref(weight, op, "weight"), g = to_array_ref(grad, op, "grad"),
                 mm = to_array_ref(mom, op, "mom"), w32 = to_array_ref(weight32, op, "weight32");
        const SgdParams p{lr, wd, momentum, rescale_grad, clip_gradient, lazy_update};
        const Stream stream = call_stream(op, w, g, mm, w32);
        py::gil_scoped_release release;
        fusedopt::mp_sgd_mom_update(w.view, g.view, mm.view, w32.view, p, stream);
      },
      "weight"_a, "grad"_a, "mom"_a, "weight32"_a, py::kw_only(), "lr"_a, "momentum"_a = 0.0,
      "wd"_a = 0.0, "rescale_grad"_a = 1.0, "clip_gradient"_a = py::none(),
      "lazy_update"_a.noconvert() = true,
      "sgd_mom_update on the float32 master weight32 and float32 mom; weight = cast(weight32).");

  m.def(
      "sgd_update_rsp",
      [](py::handle weight, py::handle data, py::handle indices, std::vector<std::int64_t> shape,
         Real lr, Real wd, Real rescale_grad, std::optional<Real> clip_gradient,
         bool lazy_update) {
        const char* op = "sgd_update";
        ArrayRef w = to_array_ref(weight, op, "weight"), d = to_array_ref(data, op, "grad.data");
        RowSparseView g = rsp_view(d, indices, shape, op);
        const SgdParams p{lr, wd, 0.0, rescale_grad, clip_gradient, lazy_update};
        const Stream stream = call_stream(op, w, d);
        py::gil_scoped_release release;
        fusedopt::sgd_update(w.view, g, p, stream);
      },
      "weight"_a, "data"_a, "indices"_a.noconvert(), "shape"_a, py::kw_only(), "lr"_a, "wd"_a = 0.0,
      "rescale_grad"_a = 1.0, "clip_gradient"_a = py::none(), "lazy_update"_a.noconvert() = true,
      "sgd_update with a row-sparse gradient (data rows, int64 indices, dense shape).");

  m.def(
      "sgd_mom_update_rsp",
      [](py::handle weight, py::handle data, py::handle indices, std::vector<std::int64_t> shape,
         py::handle mom, Real lr, Real momentum, Real wd, Real rescale_grad,
         std::optional<Real> clip_gradient, bool lazy_update) {
        const char* op = "sgd_mom_update";
        ArrayRef w = to_array_ref(weight, op, "weight"), d = to_array_ref(data, op, "grad.data"),
                 mm = to_array_ref(mom, op, "mom");
        RowSparseView g = rsp_view(d, indices, shape, op);
        const SgdParams p{lr, wd, momentum, rescale_grad, clip_gradient, lazy_update};
        const Stream stream = call_stream(op, w, d, mm);
        py::gil_scoped_release release;
        fusedopt::sgd_mom_update(w.view, g, mm.view, p, stream);
      },
      "weight"_a, "data"_a, "indices"_a.noconvert(), "shape"_a, "mom"_a, py::kw_only(), "lr"_a,
      "momentum"_a = 0.0, "wd"_a = 0.0, "rescale_grad"_a = 1.0, "clip_gradient"_a = py::none(),
      "lazy_update"_a.noconvert() = true, "sgd_mom_update with a row-sparse gradient.");

  m.def(
      "check_sgd_args",
      [](py::handle weight, py::handle grad, py::handle mom, py::handle weight32, Real lr,
         Real momentum, Real wd, Real rescale_grad, std::optional<Real> clip_gradient) {
        const bool mp = !weight32.is_none();
        const char* op = mp ? (mom.is_none() ? "mp_sgd_update" : "mp_sgd_mom_update")
                            : (mom.is_none() ? "sgd_update" : "sgd_mom_update");
        ArrayRef w = to_array_ref(weight, op, "weight"), g = to_array_ref(grad, op, "grad");
        std::optional<ArrayRef> mm, w32;
        if (!mom.is_none()) mm = to_array_ref(mom, op, "mom");
        if (mp) w32 = to_array_ref(weight32, op, "weight32");
        const SgdParams p{lr, wd, momentum, rescale_grad, clip_gradient, true};
        fusedopt::check_sgd_args(w.view, g.view, mm ? &mm->view : nullptr,
                                 w32 ? &w32->view : nullptr, p);
      },
      "weight"_a, "grad"_a, "mom"_a.none(true), "weight32"_a.none(true), py::kw_only(), "lr"_a,
      "momentum"_a = 0.0, "wd"_a = 0.0, "rescale_grad"_a = 1.0, "clip_gradient"_a = py::none(),
      "Validate arguments as the sgd operators do, without writing anything.");

  m.def(
      "check_sgd_args_rsp",
      [](py::handle weight, py::handle data, py::handle indices, std::vector<std::int64_t> shape,
         py::handle mom, Real lr, Real momentum, Real wd, Real rescale_grad,
         std::optional<Real> clip_gradient, bool lazy_update) {
        const char* op = mom.is_none() ? "sgd_update" : "sgd_mom_update";
        ArrayRef w = to_array_ref(weight, op, "weight"), d = to_array_ref(data, op, "grad.data");
        std::optional<ArrayRef> mm;
        if (!mom.is_none()) mm = to_array_ref(mom, op, "mom");
        RowSparseView g = rsp_view(d, indices, shape, op);
        const SgdParams p{lr, wd, momentum, rescale_grad, clip_gradient, lazy_update};
        fusedopt::check_sgd_args(w.view, g, mm ? &mm->view : nullptr, p);
      },
      "weight"_a, "data"_a, "indices"_a.noconvert(), "shape"_a, "mom"_a.none(true), py::kw_only(),
      "lr"_a, "momentum"_a = 0.0, "wd"_a = 0.0, "rescale_grad"_a = 1.0,
      "clip_gradient"_a = py::none(), "lazy_update"_a.noconvert() = true,
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
        [sp](py::handle arrays, py::handle lrs, py::handle wds, Real momentum,
             Real rescale_grad, std::optional<Real> clip_gradient, py::handle grad_scale,
             py::handle found_inf) {
          const char* op = sp->name;
          py::tuple seq = flat_sequence(arrays, sp->per, op, sp->layout);
          ListScope scope;
          ListScratch& scratch = scope.get();
          read_rates(op, scratch, lrs, wds);
          list_views(seq, sp->per, 0, op, "weights", scratch.w);
          list_views(seq, sp->per, 1, op, "grads", scratch.g);
          if (sp->mom) list_views(seq, sp->per, 2, op, "moms", scratch.m);
          if (sp->master) list_views(seq, sp->per, sp->per - 1, op, "weights32", scratch.w32);
          run_multi(op, sp->mom, sp->master, scratch, momentum, rescale_grad, clip_gradient,
                    grad_scale, found_inf);
        },
        "arrays"_a, py::kw_only(), "lrs"_a, "wds"_a, "momentum"_a = 0.0, "rescale_grad"_a = 1.0,
        "clip_gradient"_a = py::none(), "grad_scale"_a = py::none(), "found_inf"_a = py::none(),
        (std::string("Aggregated update of n tensors given as a flat list ") + spec.layout +
         "; tensor k uses lrs[k] and wds[k].")
            .c_str());
  }
  m.def(
      "multi_sgd_update_states",
      [](py::handle weights, py::handle grads, py::handle states, py::handle lrs, py::handle wds,
         Real momentum, Real rescale_grad, std::optional<Real> clip_gradient, py::handle grad_scale,
         py::handle found_inf) {
        // The Optimizer's aggregated step without building a flat list: `states` are all None
        // (multi_sgd_update) or all arrays (multi_sgd_mom_update). Returns False, touching nothing,
        // when they are mixed (the caller then groups the tensors itself).
        py::tuple hold = snapshot_sequence(states, "multi_sgd_update_states", "states");
        const Py_ssize_t n = PyTuple_GET_SIZE(hold.ptr());
        Py_ssize_t nones = 0;
        for (Py_ssize_t k = 0; k < n; ++k) nones += PyTuple_GET_ITEM(hold.ptr(), k) == Py_None;
        if (nones != 0 && nones != n) return false;
        const bool mom = nones == 0;
        const char* op = mom ? "multi_sgd_mom_update" : "multi_sgd_update";
        ListScope scope;
        ListScratch& scratch = scope.get();
        read_rates(op, scratch, lrs, wds);
        const std::size_t nw = scratch.w.add_all(weights, op, "weights");
        const std::size_t ng = scratch.g.add_all(grads, op, "grads");
        if (mom) scratch.m.add_all(hold, op, "moms");
        if (ng != nw || static_cast<std::size_t>(n) != nw)
          throw ValueError(std::string(op) + ": weights, grads and states must have the same length, got " +
                           std::to_string(nw) + ", " + std::to_string(ng) + " and " + std::to_string(n));
        run_multi(op, mom, false, scratch, momentum, rescale_grad, clip_gradient, grad_scale,
                  found_inf);
        return true;
      },
      "weights"_a, "grads"_a, "states"_a, py::kw_only(), "lrs"_a, "wds"_a, "momentum"_a = 0.0,
      "rescale_grad"_a = 1.0, "clip_gradient"_a = py::none(), "grad_scale"_a = py::none(),
      "found_inf"_a = py::none(),
      "multi_sgd(_mom)_update of parallel lists; False (nothing done) when states mix None and arrays.");
}

}  // namespace fusedopt::python
