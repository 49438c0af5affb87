// bind_plan.cpp — fusedopt._core._check_call_arrays: the checks of a whole multi-launch call that span
// its launches (overlap of any written array with any other array, one device), writing nothing.
#include <string>
#include <vector>

#include "bind_common.h"
#include "fusedopt/errors.h"
#include "fusedopt/plan.h"
#include "fusedopt/sgd.h"

namespace fusedopt::python {

void bind_plan(py::module_& m) {
  m.def(
      "_check_call_arrays",
      [](const std::string& op, const py::list& entries) {
        // entries: a list of (array, name, position, written). A tuple snapshot holds every item for
        // the whole call (a producer's callbacks run during conversion); checks run on owned views.
        const py::tuple items(entries);
        std::vector<std::string> names;
        std::vector<CallArray> arrays;
        ViewList views;
        names.reserve(items.size());
        views.start(items.size());
        for (py::handle item : items) {
          const auto t = py::reinterpret_borrow<py::object>(item).cast<py::tuple>();
          if (t.size() != 4) throw TypeError(op + ": internal plan entry must be a 4-tuple");
          names.push_back(t[1].cast<std::string>());
          CallArray& a = arrays.emplace_back();
          a.position = t[2].cast<std::int64_t>();
          a.written = t[3].cast<bool>();
          views.add(t[0], op.c_str(), names.back().c_str(), a.position);
        }
        for (std::size_t k = 0; k < arrays.size(); ++k) {
          arrays[k].view = views.views[k];
          arrays[k].name = names[k].c_str();
        }
        check_call_arrays(op.c_str(), arrays.data(), arrays.size());
      },
      "op"_a, "entries"_a,
      "Overlap and device checks across every launch of one call; raises ValueError, writes "
      "nothing. entries: (array, name, position, written) tuples.");

  m.def(
      "_check_sgd_call",
      [](const std::string& op, const py::list& weights, const py::list& grads,
         const py::list& moms, const py::list& weights32, const std::vector<double>& lrs,
         const std::vector<double>& wds, double momentum, double rescale_grad,
         std::optional<double> clip_gradient) {
        // The whole-call validation of SGD over dense tensors in one native pass: every tensor as
        // check_sgd_args checks it (with its own lr and wd), then check_call_arrays over all of
        // them. moms / weights32 hold None where a tensor has no momentum buffer / master.
        const std::size_t n = weights.size();
        if (grads.size() != n || moms.size() != n || weights32.size() != n || lrs.size() != n ||
            wds.size() != n)
          throw ValueError(op + ": internal plan lists must have the same length");
        const py::tuple w(weights), g(grads), mm(moms), w32(weights32);  // held for the call
        ViewList wv, gv, mv, w32v;
        wv.start(n);
        gv.start(n);
        std::vector<CallArray> arrays;
        arrays.reserve(4 * n);
        const char* o = op.c_str();
        for (std::size_t k = 0; k < n; ++k) {
          const auto pos = static_cast<std::int64_t>(k);
          wv.add(w[k], o, "weights", pos);
          gv.add(g[k], o, "grads", pos);
          const TensorView* mp = nullptr;
          const TensorView* w32p = nullptr;
          if (!mm[k].is_none()) {
            mv.add(mm[k], o, "moms", pos);
            mp = &mv.views[mv.owners.size() - 1];
          }
          if (!w32[k].is_none()) {
            w32v.add(w32[k], o, "weights32", pos);
            w32p = &w32v.views[w32v.owners.size() - 1];
          }
          const SgdParams p{lrs[k], wds[k], momentum, rescale_grad, clip_gradient, true};
          check_sgd_args(wv.views[k], gv.views[k], mp, w32p, p);
          arrays.push_back({wv.views[k], "weights", pos, true});
          arrays.push_back({gv.views[k], "grads", pos, false});
          if (mp != nullptr) arrays.push_back({*mp, "moms", pos, true});
          if (w32p != nullptr) arrays.push_back({*w32p, "weights32", pos, true});
        }
        check_call_arrays(o, arrays.data(), arrays.size());
      },
      "op"_a, "weights"_a, "grads"_a, "moms"_a, "weights32"_a, "lrs"_a, "wds"_a, "momentum"_a,
      "rescale_grad"_a, "clip_gradient"_a.none(true),
      "Whole-call validation of dense SGD tensors (check_sgd_args each, then check_call_arrays); "
      "writes nothing.");
}

}  // namespace fusedopt::python
