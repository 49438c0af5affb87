// plan.h — validation of a whole multi-launch call (several aggregated kernel calls, or a reference
// update of many tensors) before its first write: the arrays of every launch, checked together.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fusedopt/tensor_view.h"

namespace fusedopt {

/// One array of a call: its view, its argument name ("weights", "grads", ...) and position in the
/// caller's lists (labels of messages: "weights[3]"), and whether the call writes it.
struct CallArray {
  TensorView view;
  const char* name = "";
  std::int64_t position = -1;
  bool written = false;
};

/// Throws ValueError (naming `op` and both arrays) when an array the call writes shares memory with
/// any other array of the call, or when the arrays are not all on one device. Writes nothing. Each
/// launch of the call checks its own arrays again; this adds the checks that span launches.
void check_call_arrays(const char* op, const CallArray* arrays, std::size_t n);

}  // namespace fusedopt
