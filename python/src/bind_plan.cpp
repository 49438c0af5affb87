// bind_plan.cpp — fusedopt._core._check_call_arrays: the checks of a whole multi-launch call that span
// its launches (overlap of any written array with any other array, one device), writing nothing.
#include <string>
#include <vector>

#include "bind_common.h"
#include "fusedopt/errors.h"
#include "fusedopt/plan.h"

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
}

}  // namespace fusedopt::python
