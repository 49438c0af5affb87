// plan.cpp — check_call_arrays: the overlap and device checks of one call, across all its launches.
#include "fusedopt/plan.h"

#include <string>

#include "check.h"
#include "validate.h"

namespace fusedopt {

void check_call_arrays(const char* op, const CallArray* arrays, std::size_t n) {
  using detail::Access;
  using detail::Label;
  detail::OverlapChecker overlap;
  overlap.reserve(n);
  for (std::size_t k = 0; k < n; ++k) {
    const CallArray& a = arrays[k];
    const Label label{a.name, a.position};
    FUSEDOPT_CHECK(a.view.device == arrays[0].view.device, ValueError, op, ": ",
                   detail::to_string(label), " is on a different device than ",
                   detail::to_string(Label{arrays[0].name, arrays[0].position}),
                   "; all arrays of one call must be on one device");
    overlap.add(a.view, label, a.written ? Access::kWrite : Access::kRead);
  }
  overlap.check(op);
}

}  // namespace fusedopt
