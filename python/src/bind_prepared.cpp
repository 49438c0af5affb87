// bind_prepared.cpp — fusedopt._core.PreparedUpdate: arrays converted and validated once; step() takes
// positional scalars only (the per-step cost of the many-small-tensors case).
#include <optional>

#include "bind_common.h"
#include "fusedopt/errors.h"
#include "fusedopt/prepared.h"

namespace fusedopt::python {
namespace {

/// Owns the converted arrays (and so the producers' memory) for the lifetime of the prepared update.
struct Prepared {
  ViewList w, g, m, prev, w32, ms;
  std::optional<PreparedUpdate> update;
  Stream stream;
};

void convert(py::handle seq, const char* op, const char* name, ViewList& out) {
  if (!seq.is_none()) out.add_all(seq, op, name);
}

}  // namespace

void bind_prepared(py::module_& m) {
  py::class_<Prepared>(m, "PreparedUpdate",
                       "Aggregated update over fixed arrays (see fusedopt/prepared.h).")
      .def(py::init([](const std::string& rule, py::handle weights, py::handle grads,
                       py::handle moms, py::handle prevs, py::handle weights32,
                       std::vector<double> lr_mult, std::vector<double> wd_mult,
                       py::handle mean_squares) {
             auto p = std::make_unique<Prepared>();
             const char* op = rule == "sgd" ? "prepare (sgd)" : "prepare (dcasgd)";
             convert(weights, op, "weights", p->w);
             convert(grads, op, "grads", p->g);
             convert(moms, op, "moms", p->m);
             convert(prevs, op, "prevs", p->prev);
             convert(weights32, op, "weights32", p->w32);
             convert(mean_squares, op, "mean_squares", p->ms);
             p->stream = call_stream(op, p->w, p->g, p->m, p->prev, p->w32, p->ms);
             if (!mean_squares.is_none() && rule != "dcasgd")
               throw ValueError("PreparedUpdate: mean_squares are for rule 'dcasgd' only");
             if (rule == "sgd")
               p->update = PreparedUpdate::sgd(p->w.views, p->g.views, p->m.views, p->w32.views,
                                               std::move(lr_mult), std::move(wd_mult));
             else if (rule == "dcasgd" && !mean_squares.is_none())
               p->update = PreparedUpdate::dcasgd_adaptive(
                   p->w.views, p->g.views, p->m.views, p->prev.views, p->ms.views, p->w32.views,
                   std::move(lr_mult), std::move(wd_mult));
             else if (rule == "dcasgd")
               p->update = PreparedUpdate::dcasgd(p->w.views, p->g.views, p->m.views,
                                                  p->prev.views, p->w32.views, std::move(lr_mult),
                                                  std::move(wd_mult));
             else
               throw ValueError("PreparedUpdate: rule must be 'sgd' or 'dcasgd'");
             return p;
           }),
           "rule"_a, "weights"_a, "grads"_a, "moms"_a.none(true), "prevs"_a.none(true),
           "weights32"_a.none(true), "lr_mult"_a, "wd_mult"_a,
           "mean_squares"_a.none(true) = py::none())
      .def(
          "step",
          [](Prepared& p, double lr, double wd, double momentum, double rescale_grad,
             std::optional<double> clip_gradient, double lamda, double ms_decay, double eps) {
            // Any Python code ran since the last step: every array must still be where it was
            // prepared (model.double() or p.data = ... replaces a parameter's storage and frees
            // the old one; resize_ can free it in place).
            static constexpr const char* kMoved =
                " no longer has the memory it was prepared with (replaced, resized or freed, e.g. "
                "by model.double(), p.data = ... or resize_); call prepare() again";
            for (const ViewList* l : {&p.w, &p.g, &p.m, &p.prev, &p.w32, &p.ms})
              l->check_unchanged(true, kMoved);
            py::gil_scoped_release release;
            p.update->step(lr, wd, momentum, rescale_grad, clip_gradient, lamda, ms_decay, eps,
                           p.stream);
          },
          "lr"_a, "wd"_a, "momentum"_a, "rescale_grad"_a, "clip_gradient"_a.none(true),
          "lamda"_a, "ms_decay"_a = 0.95, "eps"_a = 1e-7, "One step; positional scalars.")
      .def(
          "check",
          [](const Prepared& p, double lr, double wd, double momentum, double rescale_grad,
             std::optional<double> clip_gradient, double lamda, double ms_decay, double eps) {
            p.update->check(lr, wd, momentum, rescale_grad, clip_gradient, lamda, ms_decay, eps);
          },
          "lr"_a, "wd"_a, "momentum"_a, "rescale_grad"_a, "clip_gradient"_a.none(true),
          "lamda"_a, "ms_decay"_a = 0.95, "eps"_a = 1e-7,
          "The checks of step() for these scalars; writes nothing.")
      .def("__len__", [](const Prepared& p) { return p.update->size(); });

  // counts[k] = value for every k of `keys` (a list): the lock-step update-count bookkeeping of
  // fusedopt.prepared.PreparedStep, one C loop instead of building a dict per step.
  m.def(
      "_set_counts",
      [](py::dict counts, py::list key_list, py::int_ value) {
        // A key's __hash__ / __eq__ may mutate the list: iterate over a snapshot.
        py::tuple keys = snapshot_sequence(key_list, "_set_counts", "keys");
        const Py_ssize_t n = PyTuple_GET_SIZE(keys.ptr());
        for (Py_ssize_t i = 0; i < n; ++i)
          if (PyDict_SetItem(counts.ptr(), PyTuple_GET_ITEM(keys.ptr(), i), value.ptr()) != 0)
            throw py::error_already_set();
      },
      "counts"_a, "keys"_a, "value"_a);

  // Optimizer._update_count for a list of keys: counts[k] = counts.get(k, begin) + 1 for each k in
  // order (a key listed twice counts twice); returns (highest new count, previous values with None
  // for new keys) so a rejected call can restore them.
  m.def(
      "_bump_counts",
      [](py::dict counts, py::list key_list, py::int_ begin) {
        // A key's __hash__ / __eq__ may mutate the list: iterate over a snapshot.
        py::tuple keys = snapshot_sequence(key_list, "_bump_counts", "keys");
        const Py_ssize_t n = PyTuple_GET_SIZE(keys.ptr());
        py::list old(n);
        long long highest = 0;
        PyObject* one = PyLong_FromLong(1);
        if (one == nullptr) throw py::error_already_set();
        auto one_ref = py::reinterpret_steal<py::object>(one);
        PyObject* last_base = nullptr;  // borrowed; kept alive by `counts` or `old`
        py::object last_next;
        long long last_value = 0;
        for (Py_ssize_t i = 0; i < n; ++i) {
          PyObject* key = PyTuple_GET_ITEM(keys.ptr(), i);
          PyObject* cur = PyDict_GetItemWithError(counts.ptr(), key);  // borrowed
          if (cur == nullptr && PyErr_Occurred()) throw py::error_already_set();
          PyObject* base = cur != nullptr ? cur : begin.ptr();
          PyList_SET_ITEM(old.ptr(), i, py::none().inc_ref().ptr());
          if (cur != nullptr) {
            Py_INCREF(cur);
            PyObject* prev = PyList_GET_ITEM(old.ptr(), i);
            PyList_SET_ITEM(old.ptr(), i, cur);
            Py_DECREF(prev);
          }
          // In lock-step training every key holds the same count object: compute base + 1 once and
          // share the result (one int allocation per step instead of one per key).
          if (base != last_base) {
            last_next = py::reinterpret_steal<py::object>(PyNumber_Add(base, one));
            if (!last_next) throw py::error_already_set();
            last_value = PyLong_AsLongLong(last_next.ptr());
            if (last_value == -1 && PyErr_Occurred()) throw py::error_already_set();
            last_base = base;
          }
          if (PyDict_SetItem(counts.ptr(), key, last_next.ptr()) != 0) throw py::error_already_set();
          const long long v = last_value;
          if (i == 0 || v > highest) highest = v;
        }
        return py::make_tuple(highest, old);
      },
      "counts"_a, "keys"_a, "begin"_a);
}

}  // namespace fusedopt::python
