// dcasgd.h — delay-compensated asynchronous SGD (arXiv 1609.08326) update operators, in place.
#pragma once

#include "fusedopt/params.h"
#include "fusedopt/tensor_view.h"

namespace fusedopt {

/// DCASGD step on weight, prev (the previous weight) and, when `mom` is non-null, the momentum; all of
/// the weight's dtype. See DcasgdParams for the rule.
void dcasgd_update(TensorView weight, TensorView grad, const TensorView* mom, TensorView prev,
                   const DcasgdParams& p, Stream stream = {});
/// Multi-precision DCASGD: float16/bfloat16 weight and grad; float32 master weight32, prev32 and
/// (optional) mom. The master is updated and w = cast(master).
void mp_dcasgd_update(TensorView weight, TensorView grad, const TensorView* mom, TensorView prev32,
                      TensorView weight32, const DcasgdParams& p, Stream stream = {});

/// Validates arguments exactly as dcasgd_update (or mp_dcasgd_update when `weight32` is non-null)
/// would, without writing anything.
void check_dcasgd_args(TensorView weight, TensorView grad, const TensorView* mom, TensorView prev,
                       const TensorView* weight32, const DcasgdParams& p);

}  // namespace fusedopt
